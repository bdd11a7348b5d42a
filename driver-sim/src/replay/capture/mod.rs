//! From a capture of the guest side (a `--pcap` of pasta or passt, or
//! tcpdump on the namespace's interface) to a [`Plan`]: every TCP
//! connection as the application steps of both ends (after tmix's
//! connection vectors), UDP and ping exchanges as the guest's datagrams,
//! and the figures of the original run to compare a replay with.
//!
//! How steps are cut out of a connection (see `docs/research.md`):
//!
//! * A side's bytes form one step (one application write, an "ADU") until
//!   it had received something new from the other side (a request and its
//!   answer), or it paused with nothing in flight for more than
//!   [`IDLE_SPLIT_NS`] (a pause of the application, not of TCP).
//! * A step waits for what its side had received when it began (bytes, and
//!   the other side's FIN if that came after the connection was
//!   established), then thinks for as long as it did in the capture: from
//!   the latest of that dependency, its previous step and the connection
//!   being established, to its first byte. Time spent waiting for the
//!   translator (windows, retransmissions) is not thinking: a step's
//!   bytes go out as TCP lets them.
//! * Only bytes the other side acknowledged are replayed (what the
//!   original delivered); a side that never sent a FIN closes after the
//!   rest was exchanged, so that every replay can finish.
//! * The host application reads as fast as data comes, unless it received
//!   more than [`RATE_MIN_BYTES`]: then it reads at most at the highest
//!   rate the original translator delivered over [`RATE_WINDOW_NS`].

use super::plan::{Act, DgramKind, DgramPlan, Plan, Side, Step, TcpPlan};
use super::wire::{self, flags, Pkt, TcpHdr, L4};
use crate::frame::MacAddr;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;
mod analyze;
mod derive;
#[cfg(test)]
mod tests;

use analyze::*;
pub use derive::derive;

/// A pause with nothing in flight longer than this starts a new step.
pub const IDLE_SPLIT_NS: u64 = 10_000_000;
/// Transfers larger than this get a host reading at the observed rate.
pub const RATE_MIN_BYTES: u64 = 1 << 20;
/// Window over which the observed reading rate is measured.
pub const RATE_WINDOW_NS: u64 = 10_000_000;

/// A capture, headers only, with the guest's frames told apart.
#[derive(Clone, Debug)]
pub struct Capture {
    /// File name, for reports.
    pub name: String,
    /// Frames in capture order, times relative to the first.
    pub pkts: Vec<Pkt>,
    /// The guest's MAC address.
    pub guest_mac: MacAddr,
}

/// One TCP segment of a connection, with who sent it.
#[derive(Clone, Copy, Debug)]
pub struct Seg {
    /// Time (ns since the capture's start).
    pub t: u64,
    /// The guest sent it (else the translator).
    pub from_guest: bool,
    /// Its header.
    pub h: TcpHdr,
}

/// The segments of one TCP connection.
#[derive(Clone, Debug)]
pub struct Trace {
    /// The guest's address.
    pub guest: SocketAddr,
    /// The remote address, as the guest sees it.
    pub remote: SocketAddr,
    /// Segments in capture order.
    pub segs: Vec<Seg>,
}

impl Capture {
    /// Reads a pcap or pcapng file. The guest is `guest_mac`, else the
    /// sender of the first broadcast or multicast frame, else the sender of
    /// frames from one of `guest_ips`.
    pub fn load(
        path: &Path,
        guest_mac: Option<MacAddr>,
        guest_ips: &[IpAddr],
    ) -> Result<Capture, String> {
        let raw = crate::scenario::read_pcap(path)?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        Capture::from_frames(&name, &raw, guest_mac, guest_ips)
    }

    /// A capture from frames with their timestamps.
    pub fn from_frames(
        name: &str,
        raw: &[(Duration, Vec<u8>)],
        guest_mac: Option<MacAddr>,
        guest_ips: &[IpAddr],
    ) -> Result<Capture, String> {
        let t0 = raw.first().map_or(Duration::ZERO, |f| f.0);
        let pkts: Vec<Pkt> = raw
            .iter()
            .filter_map(|(t, f)| {
                let ns = u64::try_from(t.saturating_sub(t0).as_nanos()).unwrap_or(u64::MAX);
                wire::parse(ns, f)
            })
            .collect();
        let mac = guest_mac
            .or_else(|| crate::scenario::guess_guest_mac(raw))
            .or_else(|| {
                pkts.iter()
                    .find(|p| guest_ips.contains(&p.src.ip()))
                    .map(|p| p.src_mac)
            })
            .ok_or_else(|| format!("{name}: cannot tell the guest's MAC address; give it"))?;
        Ok(Capture {
            name: name.to_string(),
            pkts,
            guest_mac: mac,
        })
    }

    /// Whether the guest sent `p`.
    pub fn from_guest(&self, p: &Pkt) -> bool {
        p.src_mac == self.guest_mac
    }

    /// Time from the first frame to the last (ns).
    pub fn duration_ns(&self) -> u64 {
        self.pkts.last().map_or(0, |p| p.t)
    }

    /// The TCP connections, in the order their first segment appears. A
    /// SYN with a new sequence number on a 4-tuple starts a new one.
    pub fn traces(&self) -> Vec<Trace> {
        let mut out: Vec<Trace> = Vec::new();
        let mut open: BTreeMap<(SocketAddr, SocketAddr), usize> = BTreeMap::new();
        for p in &self.pkts {
            let L4::Tcp(h) = p.l4 else { continue };
            let g = self.from_guest(p);
            let key = if g { (p.src, p.dst) } else { (p.dst, p.src) };
            let pure_syn = h.has(flags::SYN) && !h.has(flags::ACK);
            let idx = match open.get(&key) {
                Some(&i)
                    if !(pure_syn
                        && out[i].segs.iter().any(|s| {
                            s.from_guest == g && s.h.has(flags::SYN) && s.h.seq != h.seq
                        })) =>
                {
                    i
                }
                _ => {
                    out.push(Trace {
                        guest: key.0,
                        remote: key.1,
                        segs: Vec::new(),
                    });
                    open.insert(key, out.len() - 1);
                    out.len() - 1
                }
            };
            out[idx].segs.push(Seg {
                t: p.t,
                from_guest: g,
                h,
            });
        }
        out
    }
}

/// The guest's addresses in a core configuration (to tell its frames in
/// captures without a broadcast).
pub fn guest_ips(cfg: &passt_core::Config) -> Vec<IpAddr> {
    cfg.ip4
        .iter()
        .map(|c| IpAddr::V4(c.addr))
        .chain(cfg.ip6.iter().map(|c| IpAddr::V6(c.addr)))
        .collect()
}

/// A 32-bit sequence offset unwrapped next to `near`.
fn unwrap(rel: u32, near: u64) -> u64 {
    let d = rel.wrapping_sub(near as u32) as i32;
    near.saturating_add_signed(i64::from(d))
}

/// How the original connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Both FINs went through.
    Closed,
    /// A reset, by this side.
    Reset(Side),
    /// Still open when the capture ends.
    Open,
}

/// What the original translation did with a TCP connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Original {
    /// Bytes delivered, by sender (`[guest to host, host to guest]`):
    /// acknowledged by the other side.
    pub bytes: [u64; 2],
    /// Bytes sent beyond that (never acknowledged), by sender.
    pub undelivered: [u64; 2],
    /// Time from the first segment to the last (ns).
    pub duration_ns: u64,
    /// Intervals with data in flight and no acknowledgement moving, longer
    /// than the stall threshold: (start, length) in ns since the
    /// connection's first segment.
    pub stalls: Vec<(u64, u64)>,
    /// Segments with data sent again, by sender.
    pub retransmits: [u64; 2],
    /// How it ended.
    pub end: End,
}

/// A datagram exchange of the original.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginalDgram {
    /// Datagrams or requests the guest sent.
    pub sent: u64,
    /// Replies it got.
    pub replies: u64,
}

/// The result of deriving a plan from a capture.
#[derive(Clone, Debug)]
pub struct Derived {
    /// The capture's file name.
    pub capture: String,
    /// The plan.
    pub plan: Plan,
    /// The original's figures, by TCP connection id.
    pub original: BTreeMap<u32, Original>,
    /// The original's datagram figures, by flow id.
    pub original_dgram: BTreeMap<u32, OriginalDgram>,
    /// MTU the guest's MSS implies (above 1500 only).
    pub mtu: Option<u16>,
    /// Guest ports the host connects to (forwarded ports of the core).
    pub forwards: Vec<u16>,
    /// Remote UDP ports answered by an echo peer.
    pub echo_ports: Vec<u16>,
    /// Length of the capture (ns).
    pub duration_ns: u64,
    /// What could not be replayed, and why.
    pub skipped: Vec<String>,
}

struct Analysis {
    opener: Side,
    established: [u64; 2],
    steps: Vec<Step>,
    original: Original,
    guest_mss: Option<u16>,
    guest_ws: Option<u8>,
    guest_sack: bool,
    max_guest_win: u64,
    read_rate: Option<u64>,
    start: u64,
    /// Guest reaction times (translator data to the guest's next ACK).
    reactions: Vec<u64>,
}

/// Per-direction state of the walk over a connection.
#[derive(Default, Clone)]
struct Dir {
    /// Highest data offset sent (exclusive).
    max_sent: u64,
    /// Highest offset the other side acknowledged (exclusive; the FIN may
    /// make it one more than the data).
    acked: u64,
    /// Offset of the FIN, once sent.
    fin_at: Option<u64>,
    fin_sent_t: Option<u64>,
    /// When the other side received the FIN.
    fin_rcvd_t: Option<u64>,
    /// Data received in order by the other side (for the host's data: what
    /// reached the guest; for the guest's: what the translator acked).
    rcvd: u64,
    /// When `rcvd` last grew.
    rcvd_t: u64,
    /// Out-of-order ranges of the host's data seen at the guest.
    ooo: BTreeMap<u64, u64>,
    retrans: u64,
    /// Acked offsets over time (rate).
    acks: Vec<(u64, u64)>,
}
