//! A replay plan: what each connection of a capture did at the application
//! level, as steps that wait for what the other side sent. Its text form is
//! a list of `sim replay` directives, so a derived plan is an ordinary
//! scenario file that can be read, edited and checked in.
//!
//! ```text
//! `sim replay options delay 0.012 stall 200`
//! `sim replay tcp 1 10.77.0.2:34024 10.77.0.1:5201 open guest at 0 mss 65480 wscale 10 sack rcvbuf 65536`
//! `sim replay step 1 guest send 37 think 0.037`
//! `sim replay step 1 host send 1 after 37 think 0.04`
//! `sim replay step 1 guest close after 5 think 4001.2`
//! `sim replay step 1 host close after 456 fin think 0.3`
//! `sim replay udp 3 10.77.0.2:58029 10.77.0.1:6000 at 96.4`
//! `sim replay step 3 guest send 100 after 0 think 0`
//! `sim replay ping 4 10.77.0.2 10.77.0.1 id 675 at 0`
//! `sim replay step 4 guest send 56 seq 1 think 0`
//! `sim replay start`
//! ```
//!
//! Times are in milliseconds (fractions allowed), as in other directives.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Which end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// The guest (the model TCP endpoint).
    Guest,
    /// The host application (through the simulated kernel).
    Host,
}

impl Side {
    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::Guest => Side::Host,
            Side::Host => Side::Guest,
        }
    }

    fn parse(s: &str) -> Result<Side, String> {
        match s {
            "guest" => Ok(Side::Guest),
            "host" => Ok(Side::Host),
            _ => Err(format!("replay: `{s}`: say guest or host")),
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Guest => "guest",
            Side::Host => "host",
        })
    }
}

/// What a step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// Writes this many bytes (TCP), or sends one datagram or echo request
    /// of this many payload bytes.
    Send(u64),
    /// Shuts down the sending direction (a FIN).
    Close,
}

/// One application step of one side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Who acts.
    pub side: Side,
    /// What it does.
    pub act: Act,
    /// Bytes (TCP) or replies (datagrams) it must have received first.
    pub after: u64,
    /// It must have received the other side's FIN first.
    pub after_fin: bool,
    /// Time (ns) it then waits before acting: from the latest of its
    /// dependency being met, its previous step being done and its end of
    /// the connection being established.
    pub think_ns: u64,
    /// Echo sequence number (ping steps).
    pub seq: Option<u16>,
}

/// A TCP connection to replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpPlan {
    /// The guest's address and port.
    pub(crate) guest: SocketAddr,
    /// The remote address and port, as the guest sees it.
    pub(crate) remote: SocketAddr,
    /// Who opens the connection.
    pub(crate) opener: Side,
    /// When (ns after the replay starts).
    pub(crate) at_ns: u64,
    /// Number, unique in the plan.
    pub id: u32,
    /// MSS the guest announces.
    pub(crate) mss: u16,
    /// Window scale the guest announces.
    pub(crate) wscale: Option<u8>,
    /// The guest offers SACK.
    pub(crate) sack: bool,
    /// The guest's receive buffer (bytes).
    pub(crate) rcvbuf: u32,
    /// Bytes per millisecond the host application reads at most (`None`:
    /// as fast as data comes).
    pub(crate) read_rate: Option<u64>,
    /// Steps of both sides, in the order they happened.
    pub(crate) steps: Vec<Step>,
}

impl TcpPlan {
    /// Bytes `side` writes in all.
    pub fn bytes(&self, side: Side) -> u64 {
        self.steps
            .iter()
            .filter(|s| s.side == side)
            .map(|s| match s.act {
                Act::Send(n) => n,
                Act::Close => 0,
            })
            .sum()
    }
}

/// What a datagram flow carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DgramKind {
    /// UDP from `guest` to `remote`; the host side answers (an echo peer).
    Udp,
    /// ICMP or ICMPv6 echo requests with this identifier.
    Ping(u16),
}

/// A UDP or ping exchange to replay: the guest's datagrams, each after the
/// replies it had when it sent it in the capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DgramPlan {
    /// Number, unique in the plan.
    pub id: u32,
    /// UDP or ping.
    pub kind: DgramKind,
    /// The guest's address (and port, for UDP).
    pub guest: SocketAddr,
    /// The destination (port 0 for ping).
    pub remote: SocketAddr,
    /// When the first datagram goes (ns after the replay starts).
    pub at_ns: u64,
    /// The guest's datagrams (all `Side::Guest`, `Act::Send`).
    pub steps: Vec<Step>,
}

/// A whole plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// TCP connections.
    pub tcp: Vec<TcpPlan>,
    /// UDP and ping exchanges.
    pub dgram: Vec<DgramPlan>,
    /// One-way latency of the guest's stack (ns): its frames leave this long
    /// after what caused them.
    pub delay_ns: u64,
    /// Intervals without progress longer than this count as stalls (ns).
    pub stall_ns: u64,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            tcp: Vec::new(),
            dgram: Vec::new(),
            delay_ns: 10_000,
            stall_ns: 200_000_000,
        }
    }
}

/// Milliseconds with up to six decimals, trailing zeros cut.
pub fn ms(ns: u64) -> String {
    let s = format!("{}.{:06}", ns / 1_000_000, ns % 1_000_000);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

fn parse_ms(s: Option<&String>, what: &str) -> Result<u64, String> {
    let s = s.ok_or_else(|| format!("replay: {what}: value missing"))?;
    let v: f64 = s
        .parse()
        .map_err(|_| format!("replay: {what}: bad time `{s}`"))?;
    if !(0.0..1e10).contains(&v) {
        return Err(format!("replay: {what}: time out of range `{s}`"));
    }
    Ok((v * 1e6).round() as u64)
}

fn parse_num<T: std::str::FromStr>(s: Option<&String>, what: &str) -> Result<T, String> {
    let s = s.ok_or_else(|| format!("replay: {what}: value missing"))?;
    s.parse()
        .map_err(|_| format!("replay: {what}: bad value `{s}`"))
}

fn parse_sa(s: Option<&String>) -> Result<SocketAddr, String> {
    let s = s.ok_or("replay: address missing")?;
    s.parse()
        .map_err(|_| format!("replay: bad address `{s}` (want ip:port or [ip6]:port)"))
}

fn parse_ip(s: Option<&String>) -> Result<IpAddr, String> {
    let s = s.ok_or("replay: address missing")?;
    s.parse().map_err(|_| format!("replay: bad address `{s}`"))
}

impl Step {
    fn text(&self, id: u32) -> String {
        let mut s = format!("sim replay step {id} {}", self.side);
        match self.act {
            Act::Send(n) => s.push_str(&format!(" send {n}")),
            Act::Close => s.push_str(" close"),
        }
        if let Some(q) = self.seq {
            s.push_str(&format!(" seq {q}"));
        }
        if self.after > 0 {
            s.push_str(&format!(" after {}", self.after));
        }
        if self.after_fin {
            s.push_str(" fin");
        }
        if self.think_ns > 0 {
            s.push_str(&format!(" think {}", ms(self.think_ns)));
        }
        s
    }
}

impl Plan {
    /// The plan as directive lines (without backticks).
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "sim replay options delay {} stall {}",
            ms(self.delay_ns),
            ms(self.stall_ns)
        )];
        for c in &self.tcp {
            let mut l = format!(
                "sim replay tcp {} {} {} open {} at {} mss {}",
                c.id,
                c.guest,
                c.remote,
                c.opener,
                ms(c.at_ns),
                c.mss
            );
            if let Some(w) = c.wscale {
                l.push_str(&format!(" wscale {w}"));
            }
            if c.sack {
                l.push_str(" sack");
            }
            l.push_str(&format!(" rcvbuf {}", c.rcvbuf));
            if let Some(r) = c.read_rate {
                l.push_str(&format!(" read-rate {r}"));
            }
            out.push(l);
            out.extend(c.steps.iter().map(|s| s.text(c.id)));
        }
        for d in &self.dgram {
            out.push(match d.kind {
                DgramKind::Udp => format!(
                    "sim replay udp {} {} {} at {}",
                    d.id,
                    d.guest,
                    d.remote,
                    ms(d.at_ns)
                ),
                DgramKind::Ping(id) => format!(
                    "sim replay ping {} {} {} id {id} at {}",
                    d.id,
                    d.guest.ip(),
                    d.remote.ip(),
                    ms(d.at_ns)
                ),
            });
            out.extend(d.steps.iter().map(|s| s.text(d.id)));
        }
        out
    }

    /// Applies one `sim replay` directive (`words` after `replay`).
    pub fn apply(&mut self, w: &[String]) -> Result<(), String> {
        let kv = |key: &str| -> Option<&String> {
            w.iter().position(|x| x == key).and_then(|p| w.get(p + 1))
        };
        let has = |key: &str| w.iter().any(|x| x == key);
        let id = |i: usize| -> Result<u32, String> { parse_num(w.get(i), "id") };
        match w.first().map(String::as_str) {
            Some("options") => {
                if let Some(v) = kv("delay") {
                    self.delay_ns = parse_ms(Some(v), "delay")?;
                }
                if let Some(v) = kv("stall") {
                    self.stall_ns = parse_ms(Some(v), "stall")?;
                }
            }
            Some("tcp") => {
                let id = id(1)?;
                self.check_new(id)?;
                let opener = Side::parse(kv("open").ok_or("replay tcp: say `open guest|host`")?)?;
                let wscale = kv("wscale")
                    .map(|v| parse_num(Some(v), "wscale"))
                    .transpose()?;
                if wscale.is_some_and(|w: u8| w > 14) {
                    return Err("replay tcp: wscale above 14".into());
                }
                self.tcp.push(TcpPlan {
                    id,
                    guest: parse_sa(w.get(2))?,
                    remote: parse_sa(w.get(3))?,
                    opener,
                    at_ns: parse_ms(kv("at"), "at")?,
                    mss: kv("mss").map_or(Ok(1460), |v| parse_num(Some(v), "mss"))?,
                    wscale,
                    sack: has("sack"),
                    rcvbuf: kv("rcvbuf").map_or(Ok(65536), |v| parse_num(Some(v), "rcvbuf"))?,
                    read_rate: kv("read-rate")
                        .map(|v| parse_num(Some(v), "read-rate"))
                        .transpose()?,
                    steps: Vec::new(),
                });
            }
            Some(k @ ("udp" | "ping")) => {
                let id = id(1)?;
                self.check_new(id)?;
                let (kind, guest, remote) = if k == "udp" {
                    (DgramKind::Udp, parse_sa(w.get(2))?, parse_sa(w.get(3))?)
                } else {
                    (
                        DgramKind::Ping(parse_num(kv("id"), "ping id")?),
                        SocketAddr::new(parse_ip(w.get(2))?, 0),
                        SocketAddr::new(parse_ip(w.get(3))?, 0),
                    )
                };
                if guest.is_ipv4() != remote.is_ipv4() {
                    return Err(format!("replay {k}: addresses of two families"));
                }
                self.dgram.push(DgramPlan {
                    id,
                    kind,
                    guest,
                    remote,
                    at_ns: parse_ms(kv("at"), "at")?,
                    steps: Vec::new(),
                });
            }
            Some("step") => {
                let id = id(1)?;
                let side = Side::parse(w.get(2).map_or("", String::as_str))?;
                let act = match w.get(3).map(String::as_str) {
                    Some("send") => Act::Send(parse_num(w.get(4), "send")?),
                    Some("close") => Act::Close,
                    _ => return Err("replay step: say `send N` or `close`".into()),
                };
                let step = Step {
                    side,
                    act,
                    after: kv("after").map_or(Ok(0), |v| parse_num(Some(v), "after"))?,
                    after_fin: has("fin"),
                    think_ns: kv("think").map_or(Ok(0), |v| parse_ms(Some(v), "think"))?,
                    seq: kv("seq").map(|v| parse_num(Some(v), "seq")).transpose()?,
                };
                if let Some(c) = self.tcp.iter_mut().find(|c| c.id == id) {
                    c.steps.push(step);
                } else if let Some(d) = self.dgram.iter_mut().find(|d| d.id == id) {
                    if side != Side::Guest || act == Act::Close {
                        return Err("replay step: datagram flows have guest sends only".into());
                    }
                    d.steps.push(step);
                } else {
                    return Err(format!("replay step: no connection {id} declared before"));
                }
            }
            Some(other) => return Err(format!("replay: unknown `{other}`")),
            None => return Err("replay: what?".into()),
        }
        Ok(())
    }

    fn check_new(&self, id: u32) -> Result<(), String> {
        if self.tcp.iter().any(|c| c.id == id) || self.dgram.iter().any(|d| d.id == id) {
            return Err(format!("replay: connection {id} declared twice"));
        }
        Ok(())
    }

    /// Reads a plan back from its lines.
    pub fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Plan, String> {
        let mut p = Plan::default();
        for l in lines {
            let words: Vec<String> = l.split_whitespace().map(str::to_string).collect();
            match words.as_slice() {
                [sim, replay, rest @ ..] if sim == "sim" && replay == "replay" => {
                    if rest.first().map(String::as_str) != Some("start") {
                        p.apply(rest)?;
                    }
                }
                _ => return Err(format!("not a replay directive: `{l}`")),
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let mut p = Plan {
            delay_ns: 12_500,
            ..Plan::default()
        };
        p.tcp.push(TcpPlan {
            id: 1,
            guest: "10.77.0.2:34024".parse().unwrap(),
            remote: "10.77.0.1:5201".parse().unwrap(),
            opener: Side::Guest,
            at_ns: 0,
            mss: 65480,
            wscale: Some(10),
            sack: true,
            rcvbuf: 65536,
            read_rate: Some(90_000),
            steps: vec![
                Step {
                    side: Side::Guest,
                    act: Act::Send(37),
                    after: 0,
                    after_fin: false,
                    think_ns: 37_000,
                    seq: None,
                },
                Step {
                    side: Side::Host,
                    act: Act::Close,
                    after: 37,
                    after_fin: true,
                    think_ns: 1_500_000_001,
                    seq: None,
                },
            ],
        });
        p.dgram.push(DgramPlan {
            id: 2,
            kind: DgramKind::Ping(675),
            guest: "[fd77::2]:0".parse().unwrap(),
            remote: "[fd77::1]:0".parse().unwrap(),
            at_ns: 5,
            steps: vec![Step {
                side: Side::Guest,
                act: Act::Send(56),
                after: 0,
                after_fin: false,
                think_ns: 0,
                seq: Some(1),
            }],
        });
        let lines = p.lines();
        assert_eq!(lines[0], "sim replay options delay 0.0125 stall 200");
        assert_eq!(
            lines[2], "sim replay step 1 guest send 37 think 0.037",
            "{lines:?}"
        );
        assert!(lines[3].ends_with("close after 37 fin think 1500.000001"));
        let back = Plan::from_lines(lines.iter().map(String::as_str)).unwrap();
        assert_eq!(back, p);
        assert_eq!(p.tcp[0].bytes(Side::Guest), 37);
    }

    #[test]
    fn bad_lines_are_named() {
        let mut p = Plan::default();
        let w = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert!(p
            .apply(&w("step 1 guest send 5"))
            .unwrap_err()
            .contains("no connection 1"));
        assert!(p
            .apply(&w("tcp 1 10.77.0.2:1 10.77.0.1:2 at 0"))
            .unwrap_err()
            .contains("open"));
        p.apply(&w("tcp 1 10.77.0.2:1 10.77.0.1:2 open host at 0"))
            .unwrap();
        assert!(p
            .apply(&w("tcp 1 10.77.0.2:1 10.77.0.1:2 open host at 0"))
            .unwrap_err()
            .contains("twice"));
        assert!(p.apply(&w("step 1 nobody send 5")).is_err());
        assert!(p.apply(&w("step 1 guest send x")).is_err());
        assert!(p
            .apply(&w("udp 2 10.77.0.2:1 [fd77::1]:2 at 0"))
            .unwrap_err()
            .contains("families"));
        assert!(p.apply(&w("frobnicate")).is_err());
    }
}
