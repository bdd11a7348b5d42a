//! Scenario files: a packetdrill-style dialect run by the simulator.
//!
//! See `docs/simulator.md` for the reference. In short, every line is
//! `TIME EVENT`, where `TIME` is absolute seconds (`0.100`), relative to the
//! previous event (`+0.01`) or `*` (any time, for `>` lines), and `EVENT` is
//! `< FRAME` (the guest sends), `> PATTERN` (the guest must receive), a host
//! application syscall (`write(4, ..., 1000) = 1000`) or a simulator
//! directive in backticks (`` `sim peer *:80 echo` ``), which may also stand
//! alone without a time.

use crate::frame::{self, flags, MacAddr, SeqTracker, GUEST_MAC};
use crate::kernel::{PeerModel, PeerRule, PeerSpec};
use crate::link::LinkProfile;
use crate::sim::{PlantedBug, Sim, SimConfig};
use passt_core::{Config, Errno, Family, Instant, Ip4Config, Ip6Config, Mac, Netns, Proto};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod frames;
mod host;
mod pcap;
mod runner;
mod setup;
mod words;

pub use pcap::{guess_guest_mac, read_pcap};
pub use runner::{run, shrink};
pub use setup::apply_link;
use setup::*;
use words::*;

/// The guest's initial sequence number in scripted TCP flows.
pub const GUEST_ISN: u32 = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Time {
    Abs(u64),
    Rel(u64),
    Any,
    Now,
}

#[derive(Clone, Debug, PartialEq)]
enum Ev {
    Inject(String),
    Expect(String),
    Sys(String),
    Directive(Vec<String>),
}

#[derive(Clone, Debug, PartialEq)]
struct Line {
    no: usize,
    time: Time,
    ev: Ev,
    text: String,
}

/// A parsed scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name (the folder's name).
    pub name: String,
    /// Folder of the scenario (relative paths resolve against it).
    pub dir: PathBuf,
    /// The first comment line.
    pub description: String,
    lines: Vec<Line>,
}

fn parse_secs(s: &str) -> Result<u64, String> {
    let v: f64 = s.parse().map_err(|_| format!("bad time `{s}`"))?;
    if !(0.0..1e7).contains(&v) {
        return Err(format!("time out of range `{s}`"));
    }
    Ok((v * 1e9).round() as u64)
}

impl Scenario {
    /// Parses scenario text.
    pub fn parse(name: &str, dir: &Path, text: &str) -> Result<Scenario, String> {
        let mut lines = Vec::new();
        let mut description = String::new();
        for (i, raw) in text.lines().enumerate() {
            let no = i + 1;
            let t = raw.trim();
            if let Some(c) = t.strip_prefix('#') {
                if description.is_empty() {
                    description = c.trim().to_string();
                }
                continue;
            }
            let t = match t.find("//") {
                Some(p) => t[..p].trim(),
                None => t,
            };
            if t.is_empty() {
                continue;
            }
            let err = |m: String| format!("line {no}: {m}");
            let (time, rest) = if t.starts_with('`') {
                (Time::Now, t)
            } else {
                let (tok, rest) = t
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| err(format!("no event in `{t}`")))?;
                let time = if tok == "*" {
                    Time::Any
                } else if let Some(r) = tok.strip_prefix('+') {
                    Time::Rel(parse_secs(r).map_err(err)?)
                } else {
                    Time::Abs(parse_secs(tok).map_err(err)?)
                };
                (time, rest.trim())
            };
            let ev = if let Some(p) = rest.strip_prefix('<') {
                Ev::Inject(p.trim().to_string())
            } else if let Some(p) = rest.strip_prefix('>') {
                Ev::Expect(p.trim().to_string())
            } else if let Some(p) = rest.strip_prefix('`') {
                let inner = p
                    .strip_suffix('`')
                    .ok_or_else(|| err("unterminated backtick".into()))?;
                let words: Vec<String> = inner.split_whitespace().map(str::to_string).collect();
                if words.first().map(String::as_str) != Some("sim") {
                    return Err(err(format!(
                        "only `sim` directives are supported: `{inner}`"
                    )));
                }
                Ev::Directive(words[1..].to_vec())
            } else if rest.contains('(') {
                Ev::Sys(rest.to_string())
            } else {
                return Err(err(format!("cannot read `{rest}`")));
            };
            if time == Time::Any && !matches!(ev, Ev::Expect(_)) {
                return Err(err("`*` is only for `>` lines".into()));
            }
            lines.push(Line {
                no,
                time,
                ev,
                text: t.to_string(),
            });
        }
        Ok(Scenario {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            description,
            lines,
        })
    }

    /// Loads `scenario.pkt` from a folder (or the file itself).
    pub fn load(path: &Path) -> Result<Scenario, String> {
        let file = if path.is_dir() {
            path.join("scenario.pkt")
        } else {
            path.to_path_buf()
        };
        let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let name = dir
            .file_name()
            .map_or("scenario".to_string(), |n| n.to_string_lossy().into_owned());
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        Scenario::parse(&name, &dir, &text)
    }

    /// Whether the scenario pins violations known to happen (a bug found and
    /// not fixed yet); sweeps skip such cases.
    pub fn has_known_violations(&self) -> bool {
        self.lines.iter().any(|l| matches!(&l.ev, Ev::Directive(w) if w.first().map(String::as_str) == Some("known-violation")))
    }

    /// Number of event lines (what shrinking works on).
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether the scenario has no lines.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The scenario as text.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if !self.description.is_empty() {
            s.push_str(&format!("# {}\n", self.description));
        }
        for l in &self.lines {
            s.push_str(&l.text);
            s.push('\n');
        }
        s
    }

    /// The scenario without the lines at `drop` (indices into the lines).
    fn without(&self, keep: &[bool]) -> Scenario {
        let mut s = self.clone();
        s.lines = self
            .lines
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(l, _)| l.clone())
            .collect();
        s
    }
}

/// How to run a scenario.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Override of the seed.
    pub seed: Option<u64>,
    /// Skip `>` expectations and syscall results (sweeps: the link changes
    /// what arrives).
    pub lenient: bool,
    /// Fault profile name (see [`crate::sweep::profile`]); overrides the file's.
    pub faults: Option<String>,
    /// A bug to plant.
    pub planted: Option<PlantedBug>,
    /// A TCP policy of the core by name ([`passt_core::TcpPolicy::named`]);
    /// overrides the file's.
    pub policy: Option<String>,
}

impl RunOptions {
    /// A lenient run (invariants only) of `seed` under fault profile
    /// `faults`, as the sweeps make them.
    pub fn lenient(seed: u64, faults: &str) -> Self {
        RunOptions {
            seed: Some(seed),
            faults: Some(faults.to_string()),
            lenient: true,
            ..RunOptions::default()
        }
    }
}

/// The outcome of a run.
#[derive(Debug)]
pub struct RunResult {
    /// The timeline, as snapshotted.
    pub timeline: String,
    /// Invariant violations.
    pub violations: Vec<String>,
    /// Expectation mismatches and script errors.
    pub failures: Vec<String>,
    /// Frames at the core's end of the link, for pcap.
    pub wire: Vec<(Instant, Vec<u8>)>,
    /// The run as a fault-free scenario: guest frames as delivered, host
    /// operations as done (for shrinking).
    pub realized: Scenario,
    /// Figures for research tables.
    pub metrics: Metrics,
    /// The outcome of a closed-loop replay, if the scenario has one.
    pub replay: Option<crate::replay::Report>,
}

/// Figures of a run, for research tables.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Virtual time until every model endpoint finished, if they all did.
    pub completion: Option<Duration>,
    /// Retransmissions by model endpoints.
    pub guest_retransmits: u64,
    /// Bytes model endpoints received in order.
    pub guest_received: u64,
    /// Frames the core received and sent.
    pub frames_to_core: u64,
    /// Frames the core emitted.
    pub frames_from_core: u64,
    /// Of those, frames the transmit ring refused.
    pub frames_refused: u64,
    /// Frames the core built (`Counters::frames_out`): with TCP
    /// segmentation offload one stands for many on the wire.
    pub core_frames_out: u64,
    /// Frames the link took with TCP segmentation metadata (`tap-offload`).
    pub gso_frames: u64,
    /// Readiness events without effect.
    pub idle_wakeups: u64,
    /// Stalls of replayed connections.
    pub stalls: u64,
    /// The longest of them.
    pub longest_stall: Duration,
    /// Bytes the model endpoints (and replayed host applications) got
    /// delivered, both ways.
    pub bytes: u64,
}

impl RunResult {
    /// Whether nothing failed.
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.failures.is_empty()
    }
}

/// The configuration of the reference captures: guest 10.77.0.2/24 and
/// fd77::2, gateway 10.77.0.1 and fd77::1, resolvers on the gateway.
pub fn capture_config() -> Config {
    let gw4 = Ipv4Addr::new(10, 77, 0, 1);
    let mut ip4 = Ip4Config::new(Ipv4Addr::new(10, 77, 0, 2), 24, Some(gw4));
    let _ = ip4.dns.push(gw4);
    let gw6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
    let mut ip6 = Ip6Config::new(
        Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2),
        Some(gw6),
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0xf0d8, 0xfdff, 0xfe4c, 0xe225),
    );
    let _ = ip6.dns.push(gw6);
    Config {
        ip4: Some(ip4),
        ip6: Some(ip6),
        search: vec!["example.org".into()],
        seed: 1,
        secret: [7; 16],
        duid_time: 0x3039_0000,
        ..Config::default()
    }
}

/// The part of a run's set-up that directives change.
struct Setup {
    cfg: SimConfig,
    known: Vec<String>,
    sweep_known: Vec<String>,
    settle: Duration,
    heal: Duration,
    faults: Option<String>,
}

/// A scripted TCP flow: the guest's and the remote end's addresses.
#[derive(Clone, Copy, Debug)]
struct FlowCtx {
    guest: SocketAddr,
    remote: Option<SocketAddr>,
}

struct Runner<'a> {
    sc: &'a Scenario,
    sim: Sim,
    opts: &'a RunOptions,
    flow: Option<FlowCtx>,
    guest_mac: MacAddr,
    our_mac: MacAddr,
    failures: Vec<String>,
    tolerance_ns: u64,
    expect_seqs: SeqTracker,
    /// Host-side operations: time, frames delivered before, the line.
    realized_sys: Vec<(Instant, usize, String)>,
    drain_at_end: bool,
    pending_inject: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_are_clear() {
        let d = Path::new(".");
        assert!(Scenario::parse("x", d, "0 < arp who-has 10.77.0.1").is_ok());
        assert!(Scenario::parse("x", d, "zz < x")
            .unwrap_err()
            .contains("line 1"));
        assert!(Scenario::parse("x", d, "* < arp")
            .unwrap_err()
            .contains("`*`"));
        assert!(Scenario::parse("x", d, "`bogus`")
            .unwrap_err()
            .contains("sim"));
        assert!(Scenario::parse("x", d, "0 hello").is_err());
        assert!(Scenario::parse("x", d, "`sim flow").is_err());
        let sc = Scenario::parse("x", d, "`sim config bogus`\n").unwrap();
        assert!(run(&sc, &RunOptions::default())
            .unwrap_err()
            .contains("bogus"));
    }

    #[test]
    fn seq_and_flags() {
        assert_eq!(parse_seq("1:1001(1000)"), Ok((1, 1001, 1000)));
        assert!(parse_seq("1:10(3)").is_err());
        assert!(parse_seq("x").is_err());
        assert_eq!(parse_flags("S."), Ok(flags::SYN | flags::ACK));
        assert!(parse_flags("Q").is_err());
        assert!(match_words(
            &["arp", "reply", "10.77.0.1"],
            "ARP reply 10.77.0.1 is-at x"
        )
        .is_ok());
        assert!(match_words(&["reply", "arp"], "ARP reply").is_err());
        assert_eq!(split_args("3, [1], 4"), vec!["3", " [1]", " 4"]);
    }

    #[test]
    fn scripted_host_ops_and_frames() {
        let sc = Scenario::parse(
            "t",
            Path::new("."),
            "# host-side operations without the core's help\n\
             `sim peer *:80 echo`\n\
             0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n\
             +0 bind(3, 0.0.0.0:8080, ...) = 0\n\
             +0 listen(3, 1) = 0\n\
             +0 accept(3, ..., ...) = -1 EAGAIN\n\
             +0 connect(3, 10.77.0.2:22, ...) = -1 ECONNREFUSED\n\
             +0.5 < arp who-has 10.77.0.1 truncate 20\n\
             +0 `sim check dropped eth_truncated 0`\n\
             +0 close(3) = 0\n",
        )
        .unwrap();
        let r = run(&sc, &RunOptions::default()).unwrap();
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert!(
            r.timeline.contains("app    listen(3, 1) = 0"),
            "{}",
            r.timeline
        );
        assert_eq!(r.realized.len(), 8, "{}", r.realized.to_text());
    }

    #[test]
    fn shrinking_keeps_the_failure() {
        let text = (0..20)
            .map(|i| format!("{i} < arp who-has 10.77.0.{i}\n"))
            .collect::<String>();
        let sc = Scenario::parse("s", Path::new("."), &text).unwrap();
        // "Fails" while lines 3 and 11 are both present.
        let fails = |s: &Scenario| {
            let t = s.to_text();
            t.contains("10.77.0.3\n") && t.contains("10.77.0.11\n")
        };
        let small = shrink(&sc, &fails);
        assert_eq!(small.len(), 2, "{}", small.to_text());
    }
}
#[cfg(test)]
mod shrink_flush_tests {
    use super::*;
    #[test]
    fn flush_lines_go() {
        let text =
            "`sim config capture`\n0.1 `sim flush`\n0.1 `sim flush`\n0.1 < raw 00\n0.1 < raw 01\n";
        let sc = Scenario::parse("s", Path::new("."), text).unwrap();
        let fails = |s: &Scenario| s.to_text().matches("raw").count() == 2;
        let small = shrink(&sc, &fails);
        assert_eq!(small.len(), 3, "{}", small.to_text());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Any text is either rejected with an error or run; nothing panics.
        #[test]
        fn arbitrary_scenarios_do_not_panic(lines in proptest::collection::vec(
            prop_oneof![
                ".{0,40}",
                "(0|\\+0|\\+0\\.1) < (arp who-has 10\\.77\\.0\\.1|rs|raw [0-9a-fé]{0,30}|dhcp discover|ns fd77::1|S 0:0\\(0\\)|\\. 1:11\\(10\\) ack 1)( truncate [0-9]{1,2})?",
                "(0|\\+0) > .{0,20}",
                "`sim (flow 10\\.77\\.0\\.2:1 > 192\\.0\\.2\\.1:80|drain|check dropped eth_truncated [0-9]|guest-tcp connect 192\\.0\\.2\\.1:80 send [0-9]{1,4}|peer \\*:80 (echo|sink|reset 5))`",
                "(0|\\+0) (socket\\(\\.\\.\\., SOCK_STREAM, IPPROTO_TCP\\)|close\\([0-9]\\)|write\\([0-9], \\.\\.\\., [0-9]{1,3}\\)) = [0-9]",
            ],
            0..12,
        )) {
            let text = lines.join("\n");
            if let Ok(sc) = Scenario::parse("p", Path::new("."), &text) {
                let _ = run(&sc, &RunOptions { lenient: true, ..Default::default() });
                let _ = run(&sc, &RunOptions::default());
            }
        }
    }
}
