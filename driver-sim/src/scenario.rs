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
    /// Fault profile name (see [`crate::sweep::profile`]); overrides the file's.
    pub faults: Option<String>,
    /// Skip `>` expectations and syscall results (sweeps: the link changes
    /// what arrives).
    pub lenient: bool,
    /// A bug to plant.
    pub planted: Option<PlantedBug>,
    /// A TCP policy of the core by name ([`passt_core::TcpPolicy::named`]);
    /// overrides the file's.
    pub policy: Option<String>,
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

fn parse_mac(s: &str) -> Result<MacAddr, String> {
    Mac::parse(s)
        .map(|m| m.0)
        .ok_or_else(|| format!("bad MAC `{s}`"))
}

fn parse_sa(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("bad address `{s}` (want ip:port or [ip6]:port)"))
}

fn num<T: std::str::FromStr>(s: Option<&String>, what: &str) -> Result<T, String> {
    let s = s.ok_or_else(|| format!("{what}: value missing"))?;
    let s = s.trim_start_matches("0x");
    s.parse().map_err(|_| format!("{what}: bad value `{s}`"))
}

fn parse_prob(s: Option<&String>, what: &str) -> Result<f64, String> {
    let v: f64 = num(s, what)?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{what}: probability out of range"));
    }
    Ok(v)
}

/// Applies link settings `words` (`loss P dup P reorder P window MS delay MS
/// jitter MS corrupt P mtu N`) to `p`.
pub fn apply_link(p: &mut LinkProfile, words: &[String]) -> Result<(), String> {
    let mut i = 0;
    while i < words.len() {
        let k = words[i].as_str();
        let v = words.get(i + 1);
        let ms = |v| -> Result<u64, String> { Ok((num::<f64>(v, k)? * 1e6) as u64) };
        match k {
            "loss" => p.loss = parse_prob(v, k)?,
            "dup" => p.dup = parse_prob(v, k)?,
            "reorder" => p.reorder = parse_prob(v, k)?,
            "corrupt" => p.corrupt = parse_prob(v, k)?,
            "window" => p.reorder_ns = ms(v)?,
            "delay" => p.delay_ns = ms(v)?,
            "jitter" => p.jitter_ns = ms(v)?,
            "mtu" => p.mtu = Some(num(v, k)?),
            _ => return Err(format!("unknown link setting `{k}`")),
        }
        i += 2;
    }
    Ok(())
}

fn parse_peer(words: &[String]) -> Result<PeerRule, String> {
    let target = words.first().ok_or("peer: address missing")?;
    let (addr, port) = match target.rsplit_once(':') {
        Some((a, p)) => (a.trim_start_matches('[').trim_end_matches(']'), p),
        None if target == "*" => ("*", "*"),
        None => return Err(format!("peer: bad target `{target}`")),
    };
    let addr = if addr == "*" {
        None
    } else {
        Some(
            addr.parse::<IpAddr>()
                .map_err(|_| format!("peer: bad address `{addr}`"))?,
        )
    };
    let port = if port == "*" {
        None
    } else {
        Some(
            port.parse::<u16>()
                .map_err(|_| format!("peer: bad port `{port}`"))?,
        )
    };
    let rest: Vec<&str> = words[1..].iter().map(String::as_str).collect();
    // The model's words, then options with a value in milliseconds.
    let keys = ["delay", "rtt", "fast-at"];
    let split = rest
        .iter()
        .position(|w| keys.contains(w))
        .unwrap_or(rest.len());
    let model = PeerModel::parse(&rest[..split])?;
    let mut spec = PeerSpec::new(model);
    let mut opts = rest[split..].iter();
    while let Some(&k) = opts.next() {
        let v = opts
            .next()
            .ok_or_else(|| format!("peer: {k} value missing"))?;
        let ns = (v
            .parse::<f64>()
            .map_err(|_| format!("peer: bad {k} `{v}`"))?
            * 1e6) as u64;
        match k {
            "delay" => spec.connect_delay_ns = ns,
            "rtt" => spec.rtt_ns = ns,
            "fast-at" => spec.fast_at_ns = Some(ns),
            _ => return Err(format!("peer: unknown option `{k}`")),
        }
    }
    Ok(PeerRule { addr, port, spec })
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

fn setup_directive(s: &mut Setup, w: &[String]) -> Result<bool, String> {
    let c = &mut s.cfg;
    match w.first().map(String::as_str) {
        Some("config") => {
            for item in &w[1..] {
                match item.as_str() {
                    "capture" => c.core = capture_config(),
                    "default" => c.core = Config::default(),
                    "no-dhcp" => c.core.features.dhcp = false,
                    "no-ndp" => c.core.features.ndp = false,
                    "no-dhcpv6" => c.core.features.dhcpv6 = false,
                    "no-ra" => c.core.features.ra = false,
                    "no-tcp" => c.core.features.tcp = false,
                    "no-udp" => c.core.features.udp = false,
                    "no-icmp" => c.core.features.icmp = false,
                    "no-ipv4" => c.core.ip4 = None,
                    "no-ipv6" => c.core.ip6 = None,
                    "peek-offset" => c.core.peek_offset = true,
                    // A guest link with virtio-net headers (pasta's tap):
                    // partial checksums and TCP segmentation offload.
                    "tap-offload" => c.core.link_offload = passt_core::LinkOffload::ALL,
                    other if other.starts_with("tcp-policy=") => {
                        let v = &other["tcp-policy=".len()..];
                        c.core.tcp = passt_core::TcpPolicy::named(v).ok_or_else(|| {
                            format!(
                                "unknown TCP policy `{v}` (known: {})",
                                passt_core::TcpPolicy::NAMES.join(", ")
                            )
                        })?;
                    }
                    other => {
                        if let Some(v) = other.strip_prefix("mtu=") {
                            c.core.mtu = Some(v.parse().map_err(|_| format!("bad mtu `{v}`"))?);
                        } else if let Some((proto, v)) = other
                            .strip_prefix("forward=")
                            .map(|v| (Proto::Tcp, v))
                            .or_else(|| other.strip_prefix("udp-forward=").map(|v| (Proto::Udp, v)))
                        {
                            // forward=PORT[:TARGET] (TCP), udp-forward=PORT[:TARGET]
                            let (p, t) = v.split_once(':').unwrap_or((v, v));
                            let port = p.parse().map_err(|_| format!("bad port `{p}`"))?;
                            let target_port = t.parse().map_err(|_| format!("bad port `{t}`"))?;
                            c.core.forwards.push(passt_core::Forward::new(
                                proto,
                                port,
                                target_port,
                            ));
                        } else if let Some(v) = other.strip_prefix("guest-mac=") {
                            c.core.guest_mac = Some(Mac(parse_mac(v)?));
                        } else {
                            return Err(format!("unknown config item `{other}`"));
                        }
                    }
                }
            }
        }
        Some("seed") => c.seed = num(w.get(1), "seed")?,
        Some("faults") => s.faults = Some(w.get(1).ok_or("faults: profile missing")?.clone()),
        Some("link") => {
            let dir = w.get(1).map(String::as_str);
            let rest = &w[2.min(w.len())..];
            match dir {
                Some("to-core") => apply_link(&mut c.to_core, rest)?,
                Some("to-guest") => apply_link(&mut c.to_guest, rest)?,
                Some("both") => {
                    apply_link(&mut c.to_core, rest)?;
                    apply_link(&mut c.to_guest, rest)?;
                }
                _ => return Err("link: say to-core, to-guest or both".into()),
            }
        }
        Some("host") => {
            let mut i = 1;
            while i < w.len() {
                let v = w.get(i + 1);
                match w[i].as_str() {
                    "sndbuf" => c.kernel.sndbuf = num(v, "sndbuf")?,
                    "rcvbuf" => c.kernel.rcvbuf = num(v, "rcvbuf")?,
                    "fd-limit" => c.kernel.fd_limit = num(v, "fd-limit")?,
                    "connect-timeout" => {
                        c.kernel.connect_timeout_ns =
                            (num::<f64>(v, "connect-timeout")? * 1e6) as u64
                    }
                    k => return Err(format!("unknown host setting `{k}`")),
                }
                i += 2;
            }
        }
        Some("peer") => c.kernel.peers.push(parse_peer(&w[1..])?),
        Some("default-peer") => {
            c.kernel.default_peer = parse_peer(&[&["*".to_string()], &w[1..]].concat())?.spec
        }
        Some("known-violation") => s.known.push(w[1..].join(" ")),
        Some("sweep-known") => s.sweep_known.push(w[1..].join(" ")),
        Some("settle") => {
            s.settle = Duration::from_nanos((num::<f64>(w.get(1), "settle")? * 1e6) as u64)
        }
        Some("heal") => s.heal = Duration::from_nanos((num::<f64>(w.get(1), "heal")? * 1e6) as u64),
        _ => return Ok(false),
    }
    Ok(true)
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

impl Runner<'_> {
    fn fail(&mut self, no: usize, m: String) {
        let m = format!("line {no}: {m}");
        self.sim.note("FAIL", &m);
        self.failures.push(m);
    }

    fn guest_ip4(&self) -> Ipv4Addr {
        self.sim
            .core
            .config()
            .ip4
            .as_ref()
            .map_or(Ipv4Addr::new(10, 0, 2, 15), |c| c.addr)
    }

    fn build_frame(&mut self, spec: &str) -> Result<Vec<u8>, String> {
        let mut words: Vec<&str> = spec.split_whitespace().collect();
        // Modifiers at the end.
        let mut truncate = None;
        let mut badsum = false;
        let mut pad = None;
        loop {
            match words.as_slice() {
                [rest @ .., "truncate", n] => {
                    truncate = Some(
                        n.parse::<usize>()
                            .map_err(|_| format!("bad truncate `{n}`"))?,
                    );
                    words = rest.to_vec();
                }
                [rest @ .., "pad", n] => {
                    pad = Some(n.parse::<usize>().map_err(|_| format!("bad pad `{n}`"))?);
                    words = rest.to_vec();
                }
                [rest @ .., "badsum"] => {
                    badsum = true;
                    words = rest.to_vec();
                }
                _ => break,
            }
        }
        let gm = self.guest_mac;
        let om = self.our_mac;
        let kv = |key: &str| -> Option<&str> {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|p| words.get(p + 1))
                .copied()
        };
        let first = *words.first().ok_or("empty frame")?;
        let mut f = match first {
            "raw" => {
                let hex: String = words[1..].concat();
                if !hex.is_ascii() || !hex.len().is_multiple_of(2) {
                    return Err("raw: want an even number of hex digits".into());
                }
                (0..hex.len())
                    .step_by(2)
                    .map(|i| {
                        u8::from_str_radix(&hex[i..i + 2], 16)
                            .map_err(|_| "raw: bad hex".to_string())
                    })
                    .collect::<Result<Vec<u8>, String>>()?
            }
            "arp" => {
                let target: Ipv4Addr = kv("who-has")
                    .ok_or("arp: who-has missing")?
                    .parse()
                    .map_err(|_| "arp: bad address")?;
                let tell = match kv("tell") {
                    Some(t) => t.parse().map_err(|_| "arp: bad tell address")?,
                    None => self.guest_ip4(),
                };
                frame::arp_request(gm, tell, target)
            }
            "dhcp" => {
                let kind = words
                    .get(1)
                    .and_then(|k| frame::dhcp_type(k))
                    .ok_or("dhcp: message type missing")?;
                let xid = kv("xid")
                    .map_or(Ok(0x1234_5678), |x| {
                        u32::from_str_radix(x.trim_start_matches("0x"), 16)
                    })
                    .map_err(|_| "dhcp: bad xid")?;
                let req = kv("requested")
                    .map(|a| a.parse::<Ipv4Addr>())
                    .transpose()
                    .map_err(|_| "dhcp: bad address")?;
                frame::dhcp_client(gm, kind, xid, req)
            }
            "dhcpv6" => {
                let kind = words
                    .get(1)
                    .and_then(|k| frame::dhcpv6_type(k))
                    .ok_or("dhcpv6: message type missing")?;
                let xid = kv("xid")
                    .map_or(Ok(0xabcdef), |x| {
                        u32::from_str_radix(x.trim_start_matches("0x"), 16)
                    })
                    .map_err(|_| "dhcpv6: bad xid")?;
                let sid = kv("server-id")
                    .map(|h| {
                        (0..h.len() / 2)
                            .map(|i| {
                                u8::from_str_radix(h.get(2 * i..2 * i + 2).unwrap_or("zz"), 16)
                            })
                            .collect::<Result<Vec<u8>, _>>()
                    })
                    .transpose()
                    .map_err(|_| "dhcpv6: bad server-id")?;
                frame::dhcpv6_client(gm, kind, xid, sid.as_deref())
            }
            "ns" => {
                let target: Ipv6Addr = words
                    .get(1)
                    .ok_or("ns: target missing")?
                    .parse()
                    .map_err(|_| "ns: bad target")?;
                let from = match kv("from") {
                    Some(a) => a.parse().map_err(|_| "ns: bad source")?,
                    None => frame::link_local(gm),
                };
                frame::ndp_ns(gm, from, target)
            }
            "rs" => frame::ndp_rs(gm),
            "ping" => {
                let dst: IpAddr = words
                    .get(1)
                    .ok_or("ping: destination missing")?
                    .parse()
                    .map_err(|_| "ping: bad destination")?;
                let src: IpAddr = match kv("from") {
                    Some(a) => a.parse().map_err(|_| "ping: bad source")?,
                    None if dst.is_ipv4() => self.guest_ip4().into(),
                    None => self
                        .sim
                        .core
                        .config()
                        .ip6
                        .as_ref()
                        .map_or(frame::link_local(gm), |c| c.addr)
                        .into(),
                };
                let id = kv("id")
                    .map_or(Ok(1), str::parse)
                    .map_err(|_| "ping: bad id")?;
                let seq = kv("seq")
                    .map_or(Ok(1), str::parse)
                    .map_err(|_| "ping: bad seq")?;
                let len = kv("len")
                    .map_or(Ok(56), str::parse)
                    .map_err(|_| "ping: bad len")?;
                frame::echo_request(gm, om, src, dst, id, seq, len)
            }
            "udp" => {
                // udp SRC > DST (LEN)
                let src = parse_sa(words.get(1).ok_or("udp: source missing")?)?;
                let dst = parse_sa(words.get(3).ok_or("udp: destination missing")?)?;
                let len: usize = words
                    .get(4)
                    .map(|l| l.trim_start_matches('(').trim_end_matches(')'))
                    .map_or(Ok(0), str::parse)
                    .map_err(|_| "udp: bad length")?;
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                frame::udp_frame(gm, om, src, dst, &payload)
            }
            _ => self.tcp_frame(&words)?,
        };
        if badsum {
            if let Some(b) = f.last_mut() {
                *b ^= 0x5a;
            }
        }
        if let Some(n) = truncate {
            f.truncate(n);
        }
        if let Some(n) = pad {
            f.resize(f.len() + n, 0);
        }
        Ok(f)
    }

    fn tcp_frame(&mut self, w: &[&str]) -> Result<Vec<u8>, String> {
        let flow = self.flow.ok_or("TCP line before `sim flow`")?;
        let remote = flow
            .remote
            .ok_or("TCP line before the remote end of `sim flow ... auto` is known")?;
        let fl = parse_flags(w.first().ok_or("TCP: flags missing")?)?;
        let (start, _end, len) = parse_seq(w.get(1).ok_or("TCP: seq missing")?)?;
        let ack = match w.iter().position(|x| *x == "ack") {
            Some(p) => {
                let a: u32 = w
                    .get(p + 1)
                    .ok_or("TCP: ack value missing")?
                    .parse()
                    .map_err(|_| "TCP: bad ack")?;
                let isn = self.expect_seqs_isn(flow);
                a.wrapping_add(isn)
            }
            None => 0,
        };
        let win = match w.iter().position(|x| *x == "win") {
            Some(p) => w
                .get(p + 1)
                .ok_or("TCP: win value missing")?
                .parse()
                .map_err(|_| "TCP: bad win")?,
            None => 65535,
        };
        let opts = match w.iter().position(|x| x.starts_with('<')) {
            Some(p) => {
                let joined = w[p..].join(" ");
                let inner = joined
                    .trim_start_matches('<')
                    .split('>')
                    .next()
                    .unwrap_or("");
                frame::tcp_options(inner)?
            }
            None => Vec::new(),
        };
        let payload: Vec<u8> = (0..len)
            .map(|k| crate::kernel::pattern(0, 9, u64::from(start) + u64::from(k)))
            .collect();
        Ok(frame::tcp_frame(
            self.guest_mac,
            self.our_mac,
            flow.guest,
            remote,
            GUEST_ISN.wrapping_add(start),
            ack,
            fl,
            win,
            &opts,
            &payload,
        ))
    }

    /// The core's ISN on the current flow (from its SYN seen by the guest).
    fn expect_seqs_isn(&mut self, flow: FlowCtx) -> u32 {
        // rel_ack with the core's direction known gives ack - isn; recover isn.
        // The core's ISN as seen on the wire (whether or not a `>` line
        // matched its SYN).
        match flow.remote {
            Some(r) => self
                .sim
                .core_isn(r, flow.guest)
                .unwrap_or_else(|| self.expect_seqs.rel_ack(flow.guest, r, 0).wrapping_neg()),
            None => 0,
        }
    }

    fn expect(&mut self, no: usize, at: Time, pattern: &str) {
        if self.opts.lenient {
            return;
        }
        if self.sim.guest_inbox.is_empty() {
            self.fail(no, format!("expected `> {pattern}` but no frame arrived"));
            return;
        }
        let (t, f) = self.sim.guest_inbox.remove(0);
        let summary = frame::summarize(&f, &mut self.expect_seqs);
        if let Time::Any = at {
        } else if self.sim.now().as_nanos().abs_diff(t.as_nanos()) > self.tolerance_ns {
            self.fail(
                no,
                format!(
                    "`> {pattern}` arrived at {t:?}, expected at {:?}",
                    self.sim.now()
                ),
            );
        }
        let words: Vec<&str> = pattern.split_whitespace().collect();
        let res = if words.first().is_some_and(|w| parse_flags(w).is_ok())
            && words.get(1).is_some_and(|w| parse_seq(w).is_ok())
        {
            self.match_tcp(&words, &f)
        } else {
            match_words(&words, &summary)
        };
        if let Err(e) = res {
            self.fail(no, format!("expected `> {pattern}`, got `{summary}`: {e}"));
        }
    }

    fn match_tcp(&mut self, w: &[&str], f: &[u8]) -> Result<(), String> {
        let mut flow = self.flow.ok_or("TCP line before `sim flow`")?;
        let t = frame::parse_tcp(f).ok_or("not a TCP segment")?;
        if flow.remote.is_none() && t.dst == flow.guest {
            flow.remote = Some(t.src);
            self.flow = Some(flow);
        }
        if Some(t.src) != flow.remote || t.dst != flow.guest {
            return Err(format!("segment of {} > {}", t.src, t.dst));
        }
        let exact = w.contains(&"exact");
        let want = parse_flags(w[0])?;
        let mask = if exact { 0xff } else { !flags::PSH };
        if t.flags & mask != want & mask {
            return Err(format!(
                "flags {} instead of {}",
                frame::flag_str(t.flags),
                w[0]
            ));
        }
        let (start, end, len) = parse_seq(w[1])?;
        let mut tr = self.expect_seqs.clone();
        let rel = tr.rel_seq(t.src, t.dst, t.seq, false);
        if rel != start || t.payload.len() as u32 != len || rel.wrapping_add(len) != end {
            return Err(format!(
                "seq {}:{}({})",
                rel,
                rel.wrapping_add(t.payload.len() as u32),
                t.payload.len()
            ));
        }
        if let Some(p) = w.iter().position(|x| *x == "ack") {
            let a: u32 = w.get(p + 1).and_then(|v| v.parse().ok()).ok_or("bad ack")?;
            let got = t.ack.wrapping_sub(GUEST_ISN);
            if got != a || t.flags & flags::ACK == 0 {
                return Err(format!("ack {got}"));
            }
        }
        if let Some(p) = w.iter().position(|x| *x == "win") {
            let v: u16 = w.get(p + 1).and_then(|v| v.parse().ok()).ok_or("bad win")?;
            if t.win != v {
                return Err(format!("win {}", t.win));
            }
        }
        if let Some(p) = w.iter().position(|x| x.starts_with('<')) {
            let joined = w[p..].join(" ");
            let inner = joined
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or("");
            if inner != "..." {
                let want = frame::tcp_options(inner)?;
                let fake = frame::tcp_frame(
                    GUEST_MAC,
                    GUEST_MAC,
                    flow.guest,
                    t.src,
                    0,
                    0,
                    0,
                    0,
                    &want,
                    &[],
                );
                let want_s = frame::parse_tcp(&fake).map(|s| s.opts).unwrap_or_default();
                if want_s != t.opts {
                    return Err(format!("options <{}>", t.opts));
                }
            }
        }
        Ok(())
    }

    fn directive(&mut self, no: usize, w: &[String]) {
        // Host-side directives belong to a realized run too; guest-side ones
        // (model endpoints, captures) are replayed as the frames they sent.
        if matches!(w.first().map(String::as_str), Some("flow" | "host-connect")) {
            let now = self.sim.now();
            let k = self.sim.delivered.len();
            self.realized_sys
                .push((now, k, format!("`sim {}`", w.join(" "))));
        }
        let r: Result<(), String> = (|| {
            match w.first().map(String::as_str) {
                Some("flow") => {
                    let g = parse_sa(w.get(1).ok_or("flow: guest address missing")?)?;
                    let rw = w.get(3).ok_or("flow: remote address missing")?;
                    // `auto`: learnt from the first segment the core sends to
                    // the guest's port (connections from the host side).
                    let r = if rw == "auto" {
                        None
                    } else {
                        Some(parse_sa(rw)?)
                    };
                    self.flow = Some(FlowCtx {
                        guest: g,
                        remote: r,
                    });
                }
                Some("drain") => {
                    let n = self.sim.guest_inbox.len();
                    self.sim.guest_inbox.clear();
                    self.sim
                        .note("sim", format!("drain: {n} frames not checked"));
                }
                Some("drain-at-end") => self.drain_at_end = true,
                Some("host-connect") => {
                    // host-connect ADDR:PORT MODEL...: a host peer connects to a
                    // listener of the core.
                    let addr = parse_sa(w.get(1).ok_or("host-connect: address missing")?)?;
                    let words: Vec<&str> = w[2..].iter().map(String::as_str).collect();
                    let model = PeerModel::parse(&words)?;
                    let r = self.sim.kernel.peer_connect(addr, model, Netns::Host);
                    self.sim
                        .app_did(format!("peer ({model}) connect({addr}) = {r:?}"));
                    r.map_err(|e| format!("host-connect: {}", errno_name(e)))?;
                }
                Some("guest-tcp") => {
                    // guest-tcp connect REMOTE send N [from PORT] [mss N]
                    // guest-tcp listen PORT send N
                    let n: u32 = w
                        .iter()
                        .position(|x| x == "send")
                        .map_or(Ok(0), |p| num(w.get(p + 1), "send"))?;
                    let ip = IpAddr::V4(self.guest_ip4());
                    let g = match w.get(1).map(String::as_str) {
                        Some("connect") => {
                            let remote = parse_sa(w.get(2).ok_or("guest-tcp: remote missing")?)?;
                            let port: u16 = w
                                .iter()
                                .position(|x| x == "from")
                                .map_or(Ok(40000 + self.sim.guests.len() as u16), |p| {
                                    num(w.get(p + 1), "from")
                                })?;
                            let local_ip = if remote.is_ipv4() {
                                ip
                            } else {
                                self.sim
                                    .core
                                    .config()
                                    .ip6
                                    .as_ref()
                                    .map_or(ip, |c| c.addr.into())
                            };
                            crate::guest::GuestTcp::connect(
                                SocketAddr::new(local_ip, port),
                                remote,
                                n,
                                self.guest_mac,
                                self.our_mac,
                            )
                        }
                        Some("listen") => {
                            let port: u16 = num(w.get(2), "listen port")?;
                            crate::guest::GuestTcp::listen(
                                SocketAddr::new(ip, port),
                                n,
                                self.guest_mac,
                                self.our_mac,
                            )
                        }
                        _ => return Err("guest-tcp: say connect or listen".into()),
                    };
                    let mut g = g;
                    g.fin_after_peer = w.iter().any(|x| x == "fin-after-peer");
                    if let Some(p) = w.iter().position(|x| x == "mss") {
                        g.mss = num(w.get(p + 1), "mss")?;
                    }
                    self.sim.guests.push(g);
                    let mut out = Vec::new();
                    let now = self.sim.now().as_nanos();
                    if let Some(g) = self.sim.guests.last_mut() {
                        g.on_timer(now, &mut out);
                        if g.state == crate::guest::GuestState::SynSent {
                            g.start(now, &mut out);
                        }
                    }
                    for f in out {
                        self.sim.guest_send(&f);
                    }
                }
                Some("flush") => {}
                Some("guest-pause") => {
                    // guest-pause SECONDS: the model endpoints stop.
                    let secs: f64 = num(w.get(1), "guest-pause")?;
                    let until = self
                        .sim
                        .now()
                        .saturating_add(Duration::from_nanos((secs * 1e9) as u64));
                    self.sim.guest_paused_until = Some(until);
                    self.sim.note("sim", format!("guest paused for {secs} s"));
                }
                Some("tolerance") => {
                    self.tolerance_ns = (num::<f64>(w.get(1), "tolerance")? * 1e3) as u64
                }
                Some("check") => self.check(w)?,
                Some("pcap") => self.pcap(w)?,
                Some("replay") => {
                    crate::replay::directive(&mut self.sim, &w[1..], self.guest_mac, self.our_mac)?
                }
                Some(d) => {
                    if matches!(
                        d,
                        "config"
                            | "seed"
                            | "faults"
                            | "link"
                            | "host"
                            | "peer"
                            | "default-peer"
                            | "settle"
                            | "heal"
                            | "known-violation"
                            | "sweep-known"
                    ) {
                        return Err(format!("`{d}` belongs before the first event"));
                    }
                    return Err(format!("unknown directive `{d}`"));
                }
                None => return Err("empty directive".into()),
            }
            Ok(())
        })();
        if let Err(e) = r {
            self.fail(no, e);
        }
    }

    fn check(&mut self, w: &[String]) -> Result<(), String> {
        match w.get(1).map(String::as_str) {
            Some("dropped") => {
                let reason = w.get(2).ok_or("check dropped: reason missing")?;
                let want: u64 = num(w.get(3), "check dropped")?;
                let r = passt_core::DropReason::ALL
                    .iter()
                    .find(|r| r.name() == reason.as_str())
                    .ok_or_else(|| format!("unknown drop reason `{reason}`"))?;
                let got = self.sim.core.counters().dropped(*r);
                if got != want && !self.opts.lenient {
                    return Err(format!("dropped {reason}: {got}, expected {want}"));
                }
                self.sim.note("check", format!("dropped {reason} = {got}"));
            }
            Some("replies") => {
                let kind = w.get(2).ok_or("check replies: kind missing")?;
                let want: u64 = num(w.get(3), "check replies")?;
                let k = passt_core::ReplyKind::ALL
                    .iter()
                    .find(|r| r.name() == kind.as_str())
                    .ok_or_else(|| format!("unknown reply kind `{kind}`"))?;
                let got = self.sim.core.counters().replies(*k);
                if got != want && !self.opts.lenient {
                    return Err(format!("replies {kind}: {got}, expected {want}"));
                }
                self.sim.note("check", format!("replies {kind} = {got}"));
            }
            Some(what @ ("flows" | "sockets")) => {
                let want: usize = num(w.get(2), "check flows/sockets")?;
                let got = if what == "flows" {
                    self.sim.core.flow_count()
                } else {
                    self.sim.core.socket_count()
                };
                if got != want {
                    return Err(format!("{what}: {got}, expected {want}"));
                }
                self.sim.note("check", format!("{what} = {got}"));
            }
            _ => {
                return Err(
                    "check: say `dropped REASON N`, `replies KIND N`, `flows N` or `sockets N`"
                        .into(),
                )
            }
        }
        Ok(())
    }

    fn pcap(&mut self, w: &[String]) -> Result<(), String> {
        let file = self.sc.dir.join(w.get(1).ok_or("pcap: file missing")?);
        let mut guest_mac = None;
        let mut limit = usize::MAX;
        let mut i = 2;
        while i < w.len() {
            match w[i].as_str() {
                "guest-mac" => {
                    guest_mac = Some(parse_mac(w.get(i + 1).ok_or("pcap: MAC missing")?)?)
                }
                "limit" => limit = num(w.get(i + 1), "limit")?,
                k => return Err(format!("pcap: unknown option `{k}`")),
            }
            i += 2;
        }
        let frames = read_pcap(&file)?;
        let mac = guest_mac
            .or_else(|| guess_guest_mac(&frames))
            .ok_or("pcap: cannot tell the guest's MAC; say guest-mac")?;
        let t0 = frames.first().map_or(Duration::ZERO, |f| f.0);
        let base = self.sim.now();
        // The recorded translator's initial sequence numbers, per flow (from
        // its SYN or SYN-ACK to the guest): the guest's acknowledgements are
        // mapped onto the numbers our core chose.
        let mut recorded_isn = std::collections::BTreeMap::new();
        for (_, f) in frames.iter().filter(|f| f.1.get(6..12) != Some(&mac[..])) {
            if let Some(t) = frame::parse_tcp(f) {
                if t.flags & flags::SYN != 0 {
                    recorded_isn.insert((t.src, t.dst), t.seq);
                }
            }
        }
        let mut n = 0;
        let mut mapped = 0;
        for (t, f) in frames
            .iter()
            .filter(|f| f.1.get(6..12) == Some(&mac[..]))
            .take(limit)
        {
            let at = base.saturating_add(t.saturating_sub(t0));
            self.sim.run_until(at);
            let mut f = f.clone();
            if let Some(seg) = frame::parse_tcp(&f) {
                let key = (seg.dst, seg.src);
                if let (Some(rec), Some(ours)) =
                    (recorded_isn.get(&key), self.sim.core_isn(key.0, key.1))
                {
                    if seg.flags & flags::ACK != 0
                        && frame::set_tcp_ack(&mut f, seg.ack.wrapping_sub(*rec).wrapping_add(ours))
                    {
                        mapped += 1;
                    }
                }
            }
            self.sim.guest_send(&f);
            n += 1;
        }
        if mapped > 0 {
            self.sim.note(
                "sim",
                format!("pcap: {mapped} acknowledgement numbers mapped to the core's"),
            );
        }
        self.sim.note(
            "sim",
            format!("pcap: {n} guest frames of {} replayed", frames.len()),
        );
        Ok(())
    }

    fn syscall(&mut self, no: usize, text: &str) {
        let r = self.syscall_inner(text);
        let now = self.sim.now();
        // Realized form: the same call, any result.
        let call = text.split(" = ").next().unwrap_or(text).trim().to_string();
        let k = self.sim.delivered.len();
        self.realized_sys.push((now, k, format!("{call} = ...")));
        match r {
            Ok((got, want)) => {
                self.sim.app_did(format!("{call} = {got}"));
                if let Some(want) = want {
                    if want != got && !self.opts.lenient {
                        self.fail(no, format!("`{call}` returned {got}, expected {want}"));
                    }
                }
            }
            Err(e) => self.fail(no, e),
        }
    }

    /// Runs a syscall; returns (what it returned, what the script expects).
    fn syscall_inner(&mut self, text: &str) -> Result<(String, Option<String>), String> {
        let (call, want) = match text.split_once(" = ") {
            Some((c, w)) => (c.trim(), Some(w.trim())),
            None => (text.trim(), None),
        };
        let want = want
            .filter(|w| *w != "...")
            .map(|w| w.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
        let open = call.find('(').ok_or("syscall: `(` missing")?;
        let name = &call[..open];
        let args_s = call[open + 1..].trim_end_matches(')');
        let args: Vec<&str> = split_args(args_s);
        let fd = |i: usize| -> Result<i32, String> {
            args.get(i)
                .ok_or("syscall: argument missing")?
                .trim()
                .parse()
                .map_err(|_| "syscall: bad fd".to_string())
        };
        let flow = self.flow;
        let k = &mut self.sim.kernel;
        let ret = |r: Result<usize, Errno>| match r {
            Ok(n) => n.to_string(),
            Err(e) => format!("-1 {}", errno_name(e)),
        };
        let got = match name {
            "socket" => {
                let stream = !args_s.contains("SOCK_DGRAM");
                let v6 = args_s.contains("AF_INET6");
                k.app_socket(stream, if v6 { Family::V6 } else { Family::V4 })
                    .to_string()
            }
            "bind" => {
                let a = args
                    .get(1)
                    .map(|s| s.trim())
                    .ok_or("bind: address missing")?;
                let addr = if a == "..." {
                    let f = flow
                        .and_then(|f| f.remote)
                        .ok_or("bind(..., ...) needs `sim flow` with a remote address")?;
                    SocketAddr::new(
                        if f.is_ipv4() {
                            Ipv4Addr::UNSPECIFIED.into()
                        } else {
                            Ipv6Addr::UNSPECIFIED.into()
                        },
                        f.port(),
                    )
                } else {
                    parse_sa(a)?
                };
                ret(k.app_bind(fd(0)?, addr).map(|_| 0))
            }
            "listen" => {
                let b = args
                    .get(1)
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(128);
                ret(k.app_listen(fd(0)?, b).map(|_| 0))
            }
            "accept" => ret(k.app_accept(fd(0)?).map(|f| f as usize)),
            "connect" => {
                let a = args
                    .get(1)
                    .map(|s| s.trim())
                    .ok_or("connect: address missing")?;
                let (addr, netns) = if a == "..." {
                    let f = flow.ok_or("connect(..., ...) needs `sim flow`")?;
                    (f.guest, Netns::Host)
                } else {
                    (parse_sa(a)?, Netns::Host)
                };
                ret(k.app_connect(fd(0)?, addr, netns).map(|_| 0))
            }
            "write" | "send" => {
                let n = args
                    .get(2)
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or("write: length missing")?;
                ret(k.app_write(fd(0)?, n))
            }
            "read" | "recv" => {
                let n = args
                    .get(2)
                    .and_then(|s| s.trim().parse().ok())
                    .ok_or("read: length missing")?;
                ret(k.app_read(fd(0)?, n))
            }
            "shutdown" => ret(k.app_shutdown(fd(0)?).map(|_| 0)),
            "close" => ret(k.app_close(fd(0)?).map(|_| 0)),
            "setsockopt" => {
                let v: u32 = args
                    .get(3)
                    .map(|s| s.trim().trim_start_matches('[').trim_end_matches(']'))
                    .and_then(|s| s.parse().ok())
                    .ok_or("setsockopt: value missing")?;
                let which = args.get(2).map(|s| s.trim()).unwrap_or("");
                let r = match which {
                    "SO_RCVBUF" => k.app_setbuf(fd(0)?, None, Some(v)),
                    "SO_SNDBUF" => k.app_setbuf(fd(0)?, Some(v), None),
                    _ => Ok(()),
                };
                ret(r.map(|_| 0))
            }
            _ => return Err(format!("unsupported syscall `{name}`")),
        };
        Ok((got, want))
    }
}

fn split_args(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn errno_name(e: Errno) -> String {
    match e {
        Errno::EAGAIN => "EAGAIN".into(),
        Errno::EBADF => "EBADF".into(),
        Errno::EPIPE => "EPIPE".into(),
        Errno::ECONNRESET => "ECONNRESET".into(),
        Errno::ECONNREFUSED => "ECONNREFUSED".into(),
        Errno::EADDRINUSE => "EADDRINUSE".into(),
        Errno::EINPROGRESS => "EINPROGRESS".into(),
        Errno::EMFILE => "EMFILE".into(),
        Errno::EPERM => "EPERM".into(),
        e => format!("E{}", e.0),
    }
}

fn match_words(words: &[&str], summary: &str) -> Result<(), String> {
    if words == ["*"] {
        return Ok(());
    }
    let lower = summary.to_ascii_lowercase();
    let have: Vec<&str> = lower.split_whitespace().collect();
    let mut i = 0;
    for w in words {
        let w = w.to_ascii_lowercase();
        match have[i..].iter().position(|h| *h == w) {
            Some(p) => i += p + 1,
            None => return Err(format!("`{w}` not found in order")),
        }
    }
    Ok(())
}

/// Parses packetdrill flags (`S`, `S.`, `.`, `F.`, `R`, `P.`).
fn parse_flags(s: &str) -> Result<u8, String> {
    let mut f = 0;
    for c in s.chars() {
        f |= match c {
            'S' => flags::SYN,
            'F' => flags::FIN,
            'R' => flags::RST,
            'P' => flags::PSH,
            'U' => flags::URG,
            '.' => flags::ACK,
            _ => return Err(format!("bad flags `{s}`")),
        };
    }
    if s.is_empty() {
        return Err("no flags".into());
    }
    Ok(f)
}

/// Parses `start:end(len)`.
fn parse_seq(s: &str) -> Result<(u32, u32, u32), String> {
    let (a, rest) = s.split_once(':').ok_or_else(|| format!("bad seq `{s}`"))?;
    let (b, rest) = rest
        .split_once('(')
        .ok_or_else(|| format!("bad seq `{s}`"))?;
    let l = rest
        .strip_suffix(')')
        .ok_or_else(|| format!("bad seq `{s}`"))?;
    let p = |x: &str| x.parse::<u32>().map_err(|_| format!("bad seq `{s}`"));
    let (a, b, l) = (p(a)?, p(b)?, p(l)?);
    if b.wrapping_sub(a) != l {
        return Err(format!("seq `{s}`: end - start != len"));
    }
    Ok((a, b, l))
}

/// Reads a classic pcap file's frames with their timestamps. Records are
/// taken as stored (captures of offloaded traffic have records whose wire
/// length exceeds the snapshot length).
pub fn read_pcap(path: &Path) -> Result<Vec<(Duration, Vec<u8>)>, String> {
    use pcap_file::TsResolution;
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if data.get(0..4) == Some(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        return read_pcapng(path, &data);
    }
    let (mut rest, parser) =
        pcap_file::pcap::PcapParser::new(&data).map_err(|e| format!("{}: {e}", path.display()))?;
    let nanos = parser.header().ts_resolution == TsResolution::NanoSecond;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (r, p) = parser
            .next_raw_packet(rest)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let frac = if nanos {
            u64::from(p.ts_frac)
        } else {
            u64::from(p.ts_frac) * 1000
        };
        let ts =
            Duration::from_secs(u64::from(p.ts_sec)) + Duration::from_nanos(frac.min(999_999_999));
        out.push((ts, p.data.into_owned()));
        rest = r;
    }
    Ok(out)
}

/// The Ethernet frames of a pcapng file (enhanced and simple packet blocks).
fn read_pcapng(path: &Path, data: &[u8]) -> Result<Vec<(Duration, Vec<u8>)>, String> {
    use pcap_file::pcapng::{Block, PcapNgParser};
    let err = |e: pcap_file::PcapError| format!("{}: {e}", path.display());
    let (mut rest, mut parser) = PcapNgParser::new(data).map_err(err)?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (r, block) = parser.next_block(rest).map_err(err)?;
        match block {
            Block::EnhancedPacket(p) => {
                // The raw count is in units of the interface's resolution
                // (microseconds unless it says otherwise).
                let units = p.timestamp.as_nanos();
                let resol = parser
                    .packet_interface(&p)
                    .and_then(|i| {
                        i.options.iter().find_map(|o| match o {
                            pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                            _ => None,
                        })
                    })
                    .unwrap_or(6);
                let nanos = match resol {
                    r if r & 0x80 == 0 && r <= 9 => {
                        units.saturating_mul(10u128.pow(9 - u32::from(r)))
                    }
                    r if r & 0x80 == 0 => units / 10u128.pow(u32::from(r.min(38)) - 9),
                    _ => units, // powers of two: rare, taken as nanoseconds
                };
                let ts = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
                out.push((ts, p.data.into_owned()));
            }
            Block::SimplePacket(p) => out.push((
                out.last()
                    .map_or(Duration::ZERO, |l: &(Duration, Vec<u8>)| l.0),
                p.data.into_owned(),
            )),
            _ => {}
        }
        rest = r;
    }
    Ok(out)
}

/// The guest's MAC in a capture: the source of the first frame sent to a
/// broadcast or multicast address.
pub fn guess_guest_mac(frames: &[(Duration, Vec<u8>)]) -> Option<MacAddr> {
    frames
        .iter()
        .find(|f| f.1.first().is_some_and(|b| b & 1 == 1))
        .and_then(|f| f.1.get(6..12))
        .and_then(|m| <[u8; 6]>::try_from(m).ok())
}

/// Runs a scenario.
pub fn run(sc: &Scenario, opts: &RunOptions) -> Result<RunResult, String> {
    let mut setup = Setup {
        cfg: SimConfig::new(capture_config()),
        known: Vec::new(),
        sweep_known: Vec::new(),
        settle: Duration::from_secs(1),
        heal: Duration::from_secs(20),
        faults: None,
    };
    let mut body = Vec::new();
    let mut started = false;
    for l in &sc.lines {
        if let (Ev::Directive(w), false) = (&l.ev, started) {
            if setup_directive(&mut setup, w).map_err(|e| format!("line {}: {e}", l.no))? {
                continue;
            }
        }
        started = true;
        body.push(l.clone());
    }
    if let Some(s) = opts.seed {
        setup.cfg.seed = s;
    }
    let faults = opts.faults.clone().or(setup.faults.clone());
    let mut host_note = String::new();
    if let Some(p) = &opts.policy {
        setup.cfg.core.tcp = passt_core::TcpPolicy::named(p).ok_or_else(|| {
            format!(
                "unknown TCP policy `{p}` (known: {})",
                passt_core::TcpPolicy::NAMES.join(", ")
            )
        })?;
        host_note.push_str(&format!(" policy {p}"));
    }
    if let Some(name) = &faults {
        let f = crate::sweep::profile(name, setup.cfg.seed)?;
        setup.cfg.to_core = f.to_core;
        setup.cfg.to_guest = f.to_guest;
        setup.cfg.tx = f.tx;
        if let Some(b) = f.sndbuf {
            setup.cfg.kernel.sndbuf = b;
        }
        if let Some(b) = f.rcvbuf {
            setup.cfg.kernel.rcvbuf = b;
        }
        host_note.push_str(&format!(
            " host sndbuf {} rcvbuf {}",
            setup.cfg.kernel.sndbuf, setup.cfg.kernel.rcvbuf
        ));
    }
    setup.cfg.planted = opts.planted;
    let guest_mac = setup.cfg.core.guest_mac.map_or(GUEST_MAC, |m| m.0);
    let our_mac = setup.cfg.core.our_mac.0;
    let faulty =
        !setup.cfg.to_core.is_clean() || !setup.cfg.to_guest.is_clean() || !setup.cfg.tx.is_clean();
    let mut header = format!(
        "scenario {} seed {} faults {}{}\nlink to-core: {}\nlink to-guest: {}",
        sc.name,
        setup.cfg.seed,
        faults.as_deref().unwrap_or("none"),
        host_note,
        setup.cfg.to_core,
        setup.cfg.to_guest
    );
    if !setup.cfg.tx.is_clean() {
        header.push_str(&format!("\nlink tx: {}", setup.cfg.tx));
    }
    let mut r = Runner {
        sc,
        sim: Sim::new(setup.cfg.clone()),
        opts,
        flow: None,
        guest_mac,
        our_mac,
        failures: Vec::new(),
        tolerance_ns: 0,
        expect_seqs: SeqTracker::default(),
        realized_sys: Vec::new(),
        drain_at_end: false,
        pending_inject: false,
    };
    r.sim.start();
    let mut t = 0u64;
    for l in &body {
        let at = match l.time {
            Time::Abs(x) => x,
            Time::Rel(d) => t.saturating_add(d),
            Time::Any | Time::Now => t,
        };
        if at < t {
            r.fail(l.no, "time goes backwards".into());
            continue;
        }
        // Frames the guest sends at one instant reach the core as one batch:
        // the clock runs only when something else comes.
        let batching = matches!(l.ev, Ev::Inject(_)) && at == t && r.pending_inject;
        t = at;
        if !batching {
            r.sim.run_until(Instant::from_nanos(at));
        }
        r.pending_inject = matches!(l.ev, Ev::Inject(_));
        match &l.ev {
            Ev::Inject(spec) => match r.build_frame(spec) {
                Ok(f) => {
                    // Keep relative numbering for `>` lines in step.
                    if let Some(seg) = frame::parse_tcp(&f) {
                        r.expect_seqs.rel_seq(
                            seg.src,
                            seg.dst,
                            seg.seq,
                            seg.flags & flags::SYN != 0,
                        );
                    }
                    // Delivered when the clock next runs: guest frames sent at
                    // the same instant reach the core as one batch.
                    r.sim.guest_send(&f);
                }
                Err(e) => r.fail(l.no, e),
            },
            Ev::Expect(p) => {
                if l.time == Time::Any {
                    // Wait until something arrives (bounded).
                    for _ in 0..10_000 {
                        if !r.sim.guest_inbox.is_empty() {
                            break;
                        }
                        match r.sim.next_event() {
                            Some(n) => r.sim.run_until(n),
                            None => break,
                        }
                    }
                    t = r.sim.now().as_nanos();
                }
                r.expect(l.no, l.time, p)
            }
            Ev::Sys(s) => r.syscall(l.no, s),
            Ev::Directive(w) => r.directive(l.no, w),
        }
    }
    r.sim.run_for(setup.settle);
    if faulty {
        r.sim.note("sim", "heal: faults off");
        r.sim
            .set_links(LinkProfile::default(), LinkProfile::default());
        r.sim.set_tx(crate::tx::TxProfile::default());
        r.sim.run_for(setup.heal);
    }
    let leftover = r.sim.guest_inbox.len();
    if leftover > 0 && !opts.lenient && !r.drain_at_end {
        let first = frame::summarize(&r.sim.guest_inbox[0].1, &mut r.expect_seqs.clone());
        r.failures.push(format!(
            "{leftover} frames reached the guest unchecked, first: {first}"
        ));
    }
    let mut violations = r.sim.finish();
    // Known violations (a bug found and not fixed yet) are reported but do not
    // fail the run; a known violation that no longer happens does. They match
    // invariant violations and expectation failures alike.
    for k in &setup.known {
        let before = violations.len() + r.failures.len();
        violations.retain(|v| !v.contains(k.as_str()));
        r.failures.retain(|v| !v.contains(k.as_str()));
        let after = violations.len() + r.failures.len();
        if before == after && !opts.lenient {
            r.failures.push(format!(
                "known violation `{k}` did not happen: remove it from the scenario"
            ));
        } else if before != after {
            r.sim.note(
                "sim",
                format!("known violation `{k}` happened {} times", before - after),
            );
        }
    }
    // Known to happen under faults only (a bug pinned by another case).
    if opts.lenient {
        violations.retain(|v| !setup.sweep_known.iter().any(|k| v.contains(k.as_str())));
    }
    let mut out = vec![header];
    out.extend(r.sim.timeline.iter().cloned());
    out.push("--- end".into());
    out.extend(r.sim.summary());
    if violations.is_empty() {
        out.push("invariants: ok".into());
    } else {
        out.push(format!("invariants: {} violated", violations.len()));
    }
    let replay = r
        .sim
        .replay
        .as_ref()
        .map(|x| x.report(r.sim.now().as_nanos()));
    let mut metrics = Metrics {
        completion: if r.sim.guests.iter().all(|g| g.done_at.is_some()) && !r.sim.guests.is_empty()
        {
            r.sim
                .guests
                .iter()
                .filter_map(|g| g.done_at)
                .max()
                .map(Duration::from_nanos)
        } else {
            None
        },
        guest_retransmits: r.sim.guests.iter().map(|g| g.retransmits).sum(),
        guest_received: r.sim.guests.iter().map(|g| g.received).sum(),
        frames_to_core: r.sim.stats.frames_to_core,
        frames_from_core: r.sim.stats.frames_from_core,
        frames_refused: r.sim.stats.frames_refused,
        core_frames_out: r.sim.core.counters().frames_out,
        gso_frames: r.sim.gso_frames(),
        idle_wakeups: r.sim.stats.idle_wakeups,
        stalls: 0,
        longest_stall: Duration::ZERO,
        bytes: r
            .sim
            .guests
            .iter()
            .map(|g| {
                g.received
                    + if g.done_at.is_some() {
                        u64::from(g.total)
                    } else {
                        0
                    }
            })
            .sum(),
    };
    if let Some(rep) = &replay {
        // A replay's figures: its connections' completion (from the
        // replay's start), retransmissions and stalls.
        metrics.completion = if r.sim.guests.is_empty() || metrics.completion.is_some() {
            rep.completion_ns()
                .filter(|_| rep.complete())
                .map(Duration::from_nanos)
                .map(|d| metrics.completion.map_or(d, |c| c.max(d)))
        } else {
            None
        };
        metrics.guest_retransmits += rep.conns.iter().map(|c| c.retransmits).sum::<u64>();
        metrics.guest_received += rep.conns.iter().map(|c| c.bytes[1]).sum::<u64>();
        metrics.stalls = rep.conns.iter().map(|c| c.stalls.len() as u64).sum();
        metrics.bytes += rep
            .conns
            .iter()
            .map(|c| c.bytes[0] + c.bytes[1])
            .sum::<u64>();
        metrics.longest_stall = Duration::from_nanos(
            rep.conns
                .iter()
                .map(crate::replay::ConnReport::longest_stall)
                .max()
                .unwrap_or(0),
        );
    }
    let realized = realize(sc, &r.sim.delivered, &r.realized_sys, &setup_lines(sc));
    Ok(RunResult {
        timeline: out.join("\n") + "\n",
        violations,
        failures: r.failures,
        wire: std::mem::take(&mut r.sim.wire),
        realized,
        metrics,
        replay,
    })
}

fn setup_lines(sc: &Scenario) -> Vec<Line> {
    let mut out = Vec::new();
    for l in &sc.lines {
        match &l.ev {
            Ev::Directive(w)
                if matches!(
                    w.first().map(String::as_str),
                    Some(
                        "config" | "host" | "peer" | "default-peer" | "settle" | "known-violation"
                    )
                ) =>
            {
                out.push(l.clone())
            }
            Ev::Directive(w)
                if matches!(
                    w.first().map(String::as_str),
                    Some("seed" | "faults" | "link" | "heal")
                ) => {}
            Ev::Directive(_) => {}
            _ => break,
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fault-free scenario that replays what a run delivered, batch by batch.
fn realize(
    sc: &Scenario,
    delivered: &[(Instant, u64, Vec<u8>)],
    sys: &[(Instant, usize, String)],
    setup: &[Line],
) -> Scenario {
    let mut lines: Vec<Line> = setup.to_vec();
    // Order of occurrence: a host operation done after k frames were
    // delivered comes right before frame k.
    let mut events: Vec<(Instant, usize, String)> = Vec::new();
    let mut last_batch = None;
    for (i, (t, b, f)) in delivered.iter().enumerate() {
        if last_batch.is_some_and(|l| l != *b) {
            events.push((*t, 2 * i, "`sim flush`".into()));
        }
        last_batch = Some(*b);
        events.push((*t, 2 * i + 1, format!("< raw {}", hex(f))));
    }
    for (t, k, s) in sys {
        events.push((*t, 2 * k, s.clone()));
    }
    events.sort_by_key(|e| (e.1, e.0));
    for (t, _, s) in events {
        // Nanoseconds: frames a few hundred ns apart must not merge into
        // one batch when the file is read back.
        let ns = t.as_nanos();
        let text = format!("{}.{:09} {s}", ns / 1_000_000_000, ns % 1_000_000_000);
        let ev = if let Some(p) = s.strip_prefix("< ") {
            Ev::Inject(p.to_string())
        } else if let Some(d) = s.strip_prefix("`sim ").and_then(|d| d.strip_suffix('`')) {
            Ev::Directive(d.split_whitespace().map(str::to_string).collect())
        } else {
            Ev::Sys(s.clone())
        };
        lines.push(Line {
            no: 0,
            time: Time::Abs(t.as_nanos()),
            ev,
            text,
        });
    }
    Scenario {
        name: format!("{}-realized", sc.name),
        dir: sc.dir.clone(),
        description: sc.description.clone(),
        lines,
    }
}

/// Shrinks a failing fault-free scenario: removes event lines (delta
/// debugging) while `fails` still holds. Set-up directives are kept.
pub fn shrink(sc: &Scenario, fails: &dyn Fn(&Scenario) -> bool) -> Scenario {
    let fixed: Vec<bool> = sc
        .lines
        .iter()
        .map(
            |l| matches!(&l.ev, Ev::Directive(w) if w.first().map(String::as_str) != Some("flush")),
        )
        .collect();
    let mut keep = vec![true; sc.lines.len()];
    let mut chunk = sc.lines.len().div_ceil(2).max(1);
    let mut budget = 2000;
    loop {
        let mut progress = false;
        let mut start = 0;
        while start < keep.len() && budget > 0 {
            let idx: Vec<usize> = (start..keep.len())
                .filter(|&i| keep[i] && !fixed[i])
                .take(chunk)
                .collect();
            if idx.is_empty() {
                break;
            }
            let mut trial = keep.clone();
            for &i in &idx {
                trial[i] = false;
            }
            budget -= 1;
            if fails(&sc.without(&trial)) {
                keep = trial;
                progress = true;
            } else {
                start = idx.last().map_or(keep.len(), |l| l + 1);
            }
        }
        if budget == 0 || (chunk == 1 && !progress) {
            break;
        }
        if !progress {
            chunk = chunk.div_ceil(2);
        }
    }
    sc.without(&keep)
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
