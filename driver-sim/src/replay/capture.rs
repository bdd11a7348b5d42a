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

fn analyze(tr: &Trace, stall_ns: u64) -> Result<Analysis, String> {
    let syn = tr
        .segs
        .iter()
        .find(|s| s.h.has(flags::SYN) && !s.h.has(flags::ACK))
        .ok_or("no SYN in the capture (the connection started before it)")?;
    let opener = if syn.from_guest {
        Side::Guest
    } else {
        Side::Host
    };
    let syn_of = |g: bool| {
        tr.segs
            .iter()
            .find(|s| s.from_guest == g && s.h.has(flags::SYN))
    };
    let gsyn = syn_of(true).ok_or("the guest never sent its SYN or SYN-ACK")?;
    let hsyn = syn_of(false).ok_or("the translator never sent its SYN or SYN-ACK")?;
    let isn = [gsyn.h.seq, hsyn.h.seq];
    let ws_ok = gsyn.h.wscale.is_some() && hsyn.h.wscale.is_some();
    let g_scale = if ws_ok { gsyn.h.wscale.unwrap_or(0) } else { 0 };
    // Established, per side.
    let est_guest = match opener {
        Side::Guest => hsyn.t,
        Side::Host => tr
            .segs
            .iter()
            .find(|s| {
                !s.from_guest
                    && s.t >= gsyn.t
                    && !s.h.has(flags::SYN)
                    && s.h.has(flags::ACK)
                    && s.h.ack == isn[0].wrapping_add(1)
            })
            .map_or(gsyn.t, |s| s.t),
    };
    let established = [est_guest, hsyn.t];
    let start = tr.segs.first().map_or(0, |s| s.t);
    let end_t = tr.segs.last().map_or(0, |s| s.t);

    // First pass: what each side delivered.
    let mut d = [Dir::default(), Dir::default()];
    let mut pending_since: Option<u64> = None;
    let mut last_progress = start;
    let mut stalls = Vec::new();
    let mut rst = None;
    let mut max_guest_win = 0u64;
    let mut reactions: Vec<u64> = Vec::new();
    let mut last_host_data: Option<u64> = None;
    for s in &tr.segs {
        let me = if s.from_guest { 0 } else { 1 };
        let other = 1 - me;
        let h = &s.h;
        let mut progress = false;
        if h.has(flags::RST) {
            rst.get_or_insert((
                if s.from_guest {
                    Side::Guest
                } else {
                    Side::Host
                },
                s.t,
            ));
            continue;
        }
        if h.has(flags::ACK) {
            let a = unwrap(
                h.ack.wrapping_sub(isn[other]).wrapping_sub(1),
                d[other].acked,
            );
            let limit = d[other].max_sent + u64::from(d[other].fin_at.is_some());
            let a = a.min(limit);
            if a > d[other].acked {
                d[other].acked = a;
                d[other].acks.push((s.t, a.min(d[other].max_sent)));
                progress = true;
                if d[other].fin_at.is_some_and(|f| a > f)
                    && d[other].fin_rcvd_t.is_none()
                    && other == 0
                {
                    // The translator acknowledged the guest's FIN: the host
                    // saw the end of the stream.
                    d[0].fin_rcvd_t = Some(s.t);
                }
                if other == 0 {
                    let r = a.min(d[0].max_sent);
                    if r > d[0].rcvd {
                        d[0].rcvd = r;
                        d[0].rcvd_t = s.t;
                    }
                }
            }
            if s.from_guest && !h.has(flags::SYN) {
                max_guest_win = max_guest_win.max(u64::from(h.win) << g_scale);
                if let Some(t) = last_host_data.take() {
                    reactions.push(s.t - t);
                }
            }
        }
        if h.len > 0 {
            let off = unwrap(h.seq.wrapping_sub(isn[me]).wrapping_sub(1), d[me].max_sent);
            let end = off + u64::from(h.len);
            if off < d[me].max_sent {
                d[me].retrans += 1;
            }
            if end > d[me].max_sent {
                if d[me].max_sent <= d[me].acked && pending_since.is_none() {
                    pending_since = Some(s.t);
                }
                d[me].max_sent = end;
            }
            if me == 1 {
                // The guest holds the translator's data now.
                last_host_data = Some(s.t);
                let dir = &mut d[1];
                if off <= dir.rcvd {
                    dir.rcvd = dir.rcvd.max(end);
                    while let Some((&a, &b)) = dir.ooo.iter().next() {
                        if a > dir.rcvd {
                            break;
                        }
                        dir.rcvd = dir.rcvd.max(b);
                        dir.ooo.remove(&a);
                    }
                    dir.rcvd_t = s.t;
                } else {
                    let e = dir.ooo.entry(off).or_insert(end);
                    *e = (*e).max(end);
                }
            }
        }
        if h.has(flags::FIN) && d[me].fin_at.is_none() {
            let at = unwrap(
                h.seq
                    .wrapping_sub(isn[me])
                    .wrapping_sub(1)
                    .wrapping_add(h.len),
                d[me].max_sent,
            );
            d[me].fin_at = Some(at);
            d[me].fin_sent_t = Some(s.t);
            if me == 1 {
                d[1].fin_rcvd_t = Some(s.t);
            }
            if pending_since.is_none() {
                pending_since = Some(s.t);
            }
        }
        if progress {
            if let Some(p) = pending_since {
                let gap = s.t - p.max(last_progress);
                if gap > stall_ns {
                    stalls.push((p.max(last_progress) - start, gap));
                }
            }
            last_progress = s.t;
            let outstanding =
                (0..2).any(|k| d[k].max_sent + u64::from(d[k].fin_at.is_some()) > d[k].acked);
            pending_since = outstanding.then_some(s.t);
        }
    }
    if let Some(p) = pending_since {
        let gap = end_t - p.max(last_progress);
        if gap > stall_ns {
            stalls.push((p.max(last_progress) - start, gap));
        }
    }
    let delivered = [d[0].acked.min(d[0].max_sent), d[1].acked.min(d[1].max_sent)];
    let end = match rst {
        Some((side, _)) => End::Reset(side),
        None if (0..2).all(|k| d[k].fin_at.is_some_and(|f| d[k].acked > f)) => End::Closed,
        None => End::Open,
    };
    let original = Original {
        bytes: delivered,
        undelivered: [d[0].max_sent - delivered[0], d[1].max_sent - delivered[1]],
        duration_ns: end_t - start,
        stalls,
        retransmits: [d[0].retrans, d[1].retrans],
        end,
    };

    // Observed reading rate of the host.
    let read_rate = (delivered[0] >= RATE_MIN_BYTES).then(|| {
        let acks = &d[0].acks;
        let first = acks.first().map_or(0, |a| a.0);
        let last = acks.last().map_or(0, |a| a.0);
        let w = RATE_WINDOW_NS.min(last - first).max(1);
        let mut best = 0u64;
        let mut j = 0;
        let base = |i: usize| if i == 0 { 0 } else { acks[i - 1].1 };
        for i in 0..acks.len() {
            while j + 1 < acks.len() && acks[j + 1].0 <= acks[i].0 + w {
                j += 1;
            }
            j = j.max(i);
            best = best.max(acks[j].1 - base(i));
        }
        // Bytes per millisecond, rounded up.
        (u128::from(best) * 1_000_000).div_ceil(u128::from(w)) as u64
    });

    // Second pass: the steps.
    let steps = cut_steps(tr, isn, established, delivered);
    Ok(Analysis {
        opener,
        established,
        steps,
        original,
        guest_mss: gsyn.h.mss,
        guest_ws: gsyn.h.wscale,
        guest_sack: gsyn.h.sack_ok,
        max_guest_win,
        read_rate,
        start,
        reactions,
    })
}

/// Cuts a connection into application steps (see the module's notes).
fn cut_steps(tr: &Trace, isn: [u32; 2], established: [u64; 2], delivered: [u64; 2]) -> Vec<Step> {
    #[derive(Default, Clone)]
    struct St {
        max_sent: u64,
        acked: u64,
        fin: bool,
        /// Bytes received from the other side, and since when.
        rcvd: u64,
        rcvd_t: u64,
        /// The other side's FIN received, when.
        fin_rcvd: Option<u64>,
        /// Open step (index into `steps`) and what it saw when last extended.
        open: Option<usize>,
        last_tx: u64,
        /// When the other side last acknowledged everything sent.
        all_acked_t: u64,
        rcvd_at_last: u64,
        fin_at_last: bool,
        prev_end: u64,
        closed: bool,
        ooo: BTreeMap<u64, u64>,
    }
    let mut st = [St::default(), St::default()];
    let mut steps: Vec<Step> = Vec::new();
    let sides = [Side::Guest, Side::Host];
    for s in &tr.segs {
        let me = if s.from_guest { 0 } else { 1 };
        let other = 1 - me;
        let h = &s.h;
        if h.has(flags::RST) {
            continue;
        }
        if h.has(flags::ACK) {
            let a = unwrap(
                h.ack.wrapping_sub(isn[other]).wrapping_sub(1),
                st[other].acked,
            );
            let a = a.min(st[other].max_sent + u64::from(st[other].fin));
            if a > st[other].acked {
                st[other].acked = a;
                if a >= st[other].max_sent {
                    st[other].all_acked_t = s.t;
                }
                if me == 1 {
                    // The translator took the guest's bytes: the host has them.
                    let r = a.min(st[0].max_sent).min(delivered[0]);
                    if r > st[1].rcvd {
                        st[1].rcvd = r;
                        st[1].rcvd_t = s.t;
                    }
                    if st[0].fin && a > st[0].max_sent && st[1].fin_rcvd.is_none() {
                        st[1].fin_rcvd = Some(s.t);
                    }
                }
            }
        }
        if h.len > 0 {
            let off = unwrap(h.seq.wrapping_sub(isn[me]).wrapping_sub(1), st[me].max_sent);
            let end = off + u64::from(h.len);
            if me == 1 {
                // The guest receives the translator's bytes now.
                let g = &mut st[0];
                if off <= g.rcvd {
                    let before = g.rcvd;
                    g.rcvd = g.rcvd.max(end.min(delivered[1]));
                    while let Some((&a, &b)) = g.ooo.iter().next() {
                        if a > g.rcvd {
                            break;
                        }
                        g.rcvd = g.rcvd.max(b.min(delivered[1]));
                        g.ooo.remove(&a);
                    }
                    if g.rcvd > before {
                        g.rcvd_t = s.t;
                    }
                } else {
                    let e = g.ooo.entry(off).or_insert(end);
                    *e = (*e).max(end);
                }
            }
            let lo = off.max(st[me].max_sent);
            let hi = end.min(delivered[me]);
            let outstanding = st[me].max_sent > st[me].acked;
            st[me].max_sent = st[me].max_sent.max(end);
            if hi > lo && !st[me].closed {
                let x = &st[me];
                let fin_dep = x.fin_rcvd.is_some_and(|t| t > established[me] && t <= s.t);
                // Idle: nothing in flight, and quiet since the last byte
                // went or was acknowledged, whichever is later.
                let idle = !outstanding
                    && s.t.saturating_sub(x.last_tx.max(x.all_acked_t)) > IDLE_SPLIT_NS;
                let boundary = x.open.is_none()
                    || x.rcvd > x.rcvd_at_last
                    || (fin_dep && !x.fin_at_last)
                    || idle;
                if boundary {
                    let mut dep_t = if x.rcvd > 0 { x.rcvd_t } else { 0 };
                    if fin_dep {
                        dep_t = dep_t.max(x.fin_rcvd.unwrap_or(0));
                    }
                    // Time spent waiting for the translator (its ACKs,
                    // retransmissions) is not the application's.
                    let base = dep_t
                        .max(x.prev_end)
                        .max(x.all_acked_t)
                        .max(established[me]);
                    steps.push(Step {
                        side: sides[me],
                        act: Act::Send(hi - lo),
                        after: x.rcvd,
                        after_fin: fin_dep,
                        think_ns: s.t.saturating_sub(base),
                        seq: None,
                    });
                    st[me].open = Some(steps.len() - 1);
                } else if let Some(Step {
                    act: Act::Send(n), ..
                }) = x.open.and_then(|i| steps.get_mut(i))
                {
                    *n += hi - lo;
                }
                let x = &mut st[me];
                x.last_tx = s.t;
                x.rcvd_at_last = x.rcvd;
                x.fin_at_last = fin_dep;
                x.prev_end = s.t;
            }
        }
        if h.has(flags::FIN) && !st[me].fin {
            st[me].fin = true;
            if me == 1 {
                st[0].fin_rcvd = Some(s.t);
            }
            let x = &st[me];
            let fin_dep = x.fin_rcvd.is_some_and(|t| t > established[me] && t <= s.t);
            let mut dep_t = if x.rcvd > 0 { x.rcvd_t } else { 0 };
            if fin_dep {
                dep_t = dep_t.max(x.fin_rcvd.unwrap_or(0));
            }
            let base = dep_t
                .max(x.prev_end)
                .max(x.all_acked_t)
                .max(established[me]);
            steps.push(Step {
                side: sides[me],
                act: Act::Close,
                after: x.rcvd,
                after_fin: fin_dep,
                think_ns: s.t.saturating_sub(base),
                seq: None,
            });
            let x = &mut st[me];
            x.closed = true;
            x.open = None;
            x.prev_end = s.t;
        }
    }
    // Sides that never closed close once everything was exchanged: the
    // guest first if neither did.
    let closed = [st[0].closed, st[1].closed];
    for (k, side) in sides.iter().enumerate() {
        if !closed[k] {
            let wait_fin = closed[1 - k] || k == 1;
            steps.push(Step {
                side: *side,
                act: Act::Close,
                after: delivered[1 - k],
                after_fin: wait_fin,
                think_ns: 0,
                seq: None,
            });
        }
    }
    steps
}

fn is_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_broadcast() && !a.is_multicast() && !a.is_unspecified(),
        IpAddr::V6(a) => !a.is_multicast() && !a.is_unspecified(),
    }
}

/// Derives a replay plan from a capture; connections that cannot be
/// replayed are listed in `skipped`.
pub fn derive(cap: &Capture, stall_ns: u64) -> Derived {
    let mut plan = Plan {
        stall_ns,
        ..Plan::default()
    };
    let mut original = BTreeMap::new();
    let mut original_dgram = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut forwards = Vec::new();
    let mut echo_ports = Vec::new();
    let mut mtu: Option<u16> = None;
    let mut reactions: Vec<u64> = Vec::new();
    // Everything to replay, with its start time, numbered by start.
    enum Item {
        Tcp(Box<TcpPlan>, Original),
        Dgram(DgramPlan, OriginalDgram),
    }
    let mut items: Vec<(u64, Item)> = Vec::new();
    for tr in cap.traces() {
        match analyze(&tr, stall_ns) {
            Ok(a) => {
                reactions.extend(&a.reactions);
                let mss = a.guest_mss.unwrap_or(536);
                let overhead = if tr.guest.is_ipv4() { 40 } else { 60 };
                let m = mss.saturating_add(overhead);
                if m > 1500 {
                    mtu = Some(mtu.map_or(m, |x| x.max(m)));
                }
                if a.opener == Side::Host && !forwards.contains(&tr.guest.port()) {
                    forwards.push(tr.guest.port());
                }
                let at = match a.opener {
                    Side::Guest => a.start,
                    Side::Host => a.established[1],
                };
                items.push((
                    at,
                    Item::Tcp(
                        Box::new(TcpPlan {
                            id: 0,
                            guest: tr.guest,
                            remote: tr.remote,
                            opener: a.opener,
                            at_ns: at,
                            mss,
                            wscale: a.guest_ws,
                            sack: a.guest_sack,
                            rcvbuf: a.max_guest_win.max(65536).min(u64::from(u32::MAX)) as u32,
                            read_rate: a.read_rate,
                            steps: a.steps,
                        }),
                        a.original,
                    ),
                ));
            }
            Err(why) => skipped.push(format!("TCP {} > {}: {why}", tr.guest, tr.remote)),
        }
    }
    // UDP: the guest's datagrams to unicast destinations other than the
    // core's own services (DHCP, DHCPv6), with the replies they waited for.
    let mut udp: BTreeMap<(SocketAddr, SocketAddr), (DgramPlan, OriginalDgram, u64, u64)> =
        BTreeMap::new();
    let mut pings: BTreeMap<(IpAddr, IpAddr, u16), (DgramPlan, OriginalDgram, u64)> =
        BTreeMap::new();
    // The guest's own addresses: a reply sent elsewhere never reached it.
    let mine: Vec<IpAddr> = cap
        .pkts
        .iter()
        .filter(|p| cap.from_guest(p) && !p.src.ip().is_unspecified())
        .map(|p| p.src.ip())
        .collect();
    for p in &cap.pkts {
        let g = cap.from_guest(p);
        match p.l4 {
            L4::Udp { len } if g => {
                if !is_unicast(p.dst.ip())
                    || [67, 547].contains(&p.dst.port())
                    || [68, 546].contains(&p.src.port())
                {
                    continue;
                }
                let e = udp.entry((p.src, p.dst)).or_insert_with(|| {
                    (
                        DgramPlan {
                            id: 0,
                            kind: DgramKind::Udp,
                            guest: p.src,
                            remote: p.dst,
                            at_ns: p.t,
                            steps: Vec::new(),
                        },
                        OriginalDgram {
                            sent: 0,
                            replies: 0,
                        },
                        p.t,
                        p.t,
                    )
                });
                let (plan, orig, prev, reply_t) = e;
                let base = (*prev).max(if orig.replies > 0 { *reply_t } else { 0 });
                plan.steps.push(Step {
                    side: Side::Guest,
                    act: Act::Send(u64::from(len)),
                    after: orig.replies,
                    after_fin: false,
                    think_ns: p.t.saturating_sub(base),
                    seq: None,
                });
                orig.sent += 1;
                *prev = p.t;
            }
            L4::Udp { .. } if mine.contains(&p.dst.ip()) => {
                // A reply: to the guest's port, from the remote's port (the
                // source address may differ, as link-local answers do).
                if let Some((_, orig, _, reply_t)) = udp
                    .iter_mut()
                    .find(|(k, _)| {
                        k.0.port() == p.dst.port()
                            && k.1.port() == p.src.port()
                            && k.0.is_ipv4() == p.dst.is_ipv4()
                    })
                    .map(|(_, v)| v)
                {
                    orig.replies += 1;
                    *reply_t = p.t;
                }
            }
            L4::Echo {
                request: true,
                id,
                seq,
                len,
            } if g && is_unicast(p.dst.ip()) => {
                let e = pings
                    .entry((p.src.ip(), p.dst.ip(), id))
                    .or_insert_with(|| {
                        (
                            DgramPlan {
                                id: 0,
                                kind: DgramKind::Ping(id),
                                guest: SocketAddr::new(p.src.ip(), 0),
                                remote: SocketAddr::new(p.dst.ip(), 0),
                                at_ns: p.t,
                                steps: Vec::new(),
                            },
                            OriginalDgram {
                                sent: 0,
                                replies: 0,
                            },
                            p.t,
                        )
                    });
                // Ping sends by its own clock: no wait for replies.
                e.0.steps.push(Step {
                    side: Side::Guest,
                    act: Act::Send(u64::from(len)),
                    after: 0,
                    after_fin: false,
                    think_ns: p.t - e.2,
                    seq: Some(seq),
                });
                e.1.sent += 1;
                e.2 = p.t;
            }
            L4::Echo {
                request: false, id, ..
            } if !g => {
                if let Some(e) = pings
                    .iter_mut()
                    .find(|(k, _)| k.0 == p.dst.ip() && k.2 == id)
                    .map(|(_, v)| v)
                {
                    e.1.replies += 1;
                }
            }
            _ => {}
        }
    }
    for (_, (plan, orig, ..)) in udp {
        if !echo_ports.contains(&plan.remote.port()) {
            echo_ports.push(plan.remote.port());
        }
        items.push((plan.at_ns, Item::Dgram(plan, orig)));
    }
    for (_, (plan, orig, _)) in pings {
        items.push((plan.at_ns, Item::Dgram(plan, orig)));
    }
    items.sort_by_key(|i| i.0);
    let t0 = items.first().map_or(0, |i| i.0);
    for (n, (at, item)) in items.into_iter().enumerate() {
        let id = n as u32 + 1;
        match item {
            Item::Tcp(mut c, o) => {
                c.id = id;
                c.at_ns = at - t0;
                plan.tcp.push(*c);
                original.insert(id, o);
            }
            Item::Dgram(mut d, o) => {
                d.id = id;
                d.at_ns = at - t0;
                plan.dgram.push(d);
                original_dgram.insert(id, o);
            }
        }
    }
    reactions.sort_unstable();
    if let Some(m) = reactions.get(reactions.len() / 2) {
        plan.delay_ns = (*m).clamp(1_000, 1_000_000);
    }
    forwards.sort_unstable();
    echo_ports.sort_unstable();
    Derived {
        capture: cap.name.clone(),
        plan,
        original,
        original_dgram,
        mtu,
        forwards,
        echo_ports,
        duration_ns: cap.duration_ns(),
        skipped,
    }
}

impl Derived {
    /// Whether there is nothing to replay.
    pub fn is_empty(&self) -> bool {
        self.plan.tcp.is_empty() && self.plan.dgram.is_empty()
    }

    /// The replay as a scenario file; `capture_path` is how the scenario
    /// names the capture (relative to its folder).
    pub fn scenario_text(&self, capture_path: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Closed-loop replay of `{capture_path}`: each connection's application steps, derived from the capture (`passt-sim derive`), against our core."
        );
        let mut cfg = String::from("sim config capture");
        if let Some(m) = self.mtu {
            let _ = write!(cfg, " mtu={m}");
        }
        for p in &self.forwards {
            let _ = write!(cfg, " forward={p}");
        }
        let _ = writeln!(s, "`{cfg}`");
        for p in &self.echo_ports {
            let _ = writeln!(s, "`sim peer *:{p} echo`");
        }
        // Long enough for every step's thinking and a slow transfer; idle
        // virtual time costs nothing.
        let settle = (self.duration_ns / 1_000_000)
            .saturating_mul(3)
            .saturating_add(10_000);
        let _ = writeln!(s, "`sim settle {settle}`");
        let _ = writeln!(s, "`sim drain-at-end`");
        for w in &self.skipped {
            let _ = writeln!(s, "// not replayed: {w}");
        }
        for c in &self.plan.tcp {
            if let Some(o) = self.original.get(&c.id) {
                let _ = writeln!(s, "// {}: original {}", c.id, o.summary());
            }
        }
        for d in &self.plan.dgram {
            if let Some(o) = self.original_dgram.get(&d.id) {
                let _ = writeln!(
                    s,
                    "// {}: original sent {} replies {}",
                    d.id, o.sent, o.replies
                );
            }
        }
        for l in self.plan.lines() {
            let _ = writeln!(s, "`{l}`");
        }
        let _ = writeln!(s, "`sim replay start`");
        s
    }
}

impl Original {
    /// One line: bytes each way, time, stalls, retransmissions, end.
    pub fn summary(&self) -> String {
        let longest = self.stalls.iter().map(|s| s.1).max().unwrap_or(0);
        format!(
            "guest>host {} host>guest {} in {} ms, {} stalls (longest {} ms), retransmits guest {} host {}, {}",
            self.bytes[0],
            self.bytes[1],
            super::plan::ms(self.duration_ns),
            self.stalls.len(),
            super::plan::ms(longest),
            self.retransmits[0],
            self.retransmits[1],
            match self.end {
                End::Closed => "closed".to_string(),
                End::Reset(s) => format!("reset by {s}"),
                End::Open => "open at the end of the capture".to_string(),
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{tcp_frame, tcp_options, GUEST_MAC};

    const HOST_MAC: MacAddr = [0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55];

    /// A request-response exchange with a pause: steps, dependencies and
    /// think times come out as written.
    #[test]
    fn request_response_steps() {
        let g: SocketAddr = "10.77.0.2:40000".parse().unwrap();
        let r: SocketAddr = "10.77.0.1:80".parse().unwrap();
        let (gi, hi) = (1000u32, 5000u32);
        let seg = |t: u64, from_g: bool, seq: u32, ack: u32, fl, len: usize, o: &str| {
            let opts = tcp_options(o).unwrap();
            let f = if from_g {
                tcp_frame(
                    GUEST_MAC,
                    HOST_MAC,
                    g,
                    r,
                    gi + seq,
                    hi + ack,
                    fl,
                    512,
                    &opts,
                    &vec![0; len],
                )
            } else {
                tcp_frame(
                    HOST_MAC,
                    GUEST_MAC,
                    r,
                    g,
                    hi + seq,
                    gi + ack,
                    fl,
                    512,
                    &opts,
                    &vec![0; len],
                )
            };
            (Duration::from_millis(t), f)
        };
        let a = flags::ACK;
        let all = vec![
            seg(0, true, 0, 0, flags::SYN, 0, "mss 1460,sackOK,nop,wscale 7"),
            seg(1, false, 0, 1, flags::SYN | a, 0, "mss 1460,nop,wscale 8"),
            seg(2, true, 1, 1, a, 100, ""), // the request, 1 ms after the handshake
            seg(3, false, 1, 101, a, 0, ""),
            seg(5, false, 1, 101, a, 300, ""), // the answer, 2 ms after the request
            seg(5, false, 301, 101, a, 200, ""),
            seg(6, true, 101, 501, a, 0, ""),
            seg(56, true, 101, 501, a, 50, ""), // 51 ms after the answer
            seg(57, false, 501, 151, a, 0, ""),
            seg(58, true, 151, 501, a | flags::FIN, 0, ""),
            seg(59, false, 501, 152, a | flags::FIN, 0, ""),
            seg(60, true, 152, 502, a, 0, ""),
        ];
        let cap = Capture::from_frames("t", &all, Some(GUEST_MAC), &[]).unwrap();
        let d = derive(&cap, 200_000_000);
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        let c = &d.plan.tcp[0];
        assert_eq!(
            (c.opener, c.mss, c.wscale, c.sack),
            (Side::Guest, 1460, Some(7), true)
        );
        let st: Vec<(Side, Act, u64, bool, u64)> = c
            .steps
            .iter()
            .map(|s| (s.side, s.act, s.after, s.after_fin, s.think_ns / 1_000_000))
            .collect();
        assert_eq!(
            st,
            vec![
                (Side::Guest, Act::Send(100), 0, false, 1),
                (Side::Host, Act::Send(500), 100, false, 2),
                (Side::Guest, Act::Send(50), 500, false, 51),
                // From the ACK of its last bytes, not from sending them.
                (Side::Guest, Act::Close, 500, false, 1),
                (Side::Host, Act::Close, 150, true, 0),
            ]
        );
        let o = &d.original[&1];
        assert_eq!(o.bytes, [150, 500]);
        assert_eq!(o.end, End::Closed);
        assert!(o.stalls.is_empty());
        assert_eq!(o.retransmits, [0, 0]);
        assert_eq!(d.mtu, None);
    }

    /// Data sent again after a long silence: a retransmission and a stall in
    /// the original; only acknowledged bytes are replayed, and the side
    /// that never closed closes in the replay.
    #[test]
    fn stalls_retransmissions_and_undelivered_tails() {
        let g: SocketAddr = "10.77.0.2:40000".parse().unwrap();
        let r: SocketAddr = "10.77.0.1:5201".parse().unwrap();
        let ms = |x: u64| Duration::from_micros(x * 1000);
        let seg = |t, from_g: bool, seq: u32, ack: u32, fl, len: usize| {
            let (a, b, sm, dm, s0, a0) = if from_g {
                (g, r, GUEST_MAC, HOST_MAC, 0u32, 0u32)
            } else {
                (r, g, HOST_MAC, GUEST_MAC, 0, 0)
            };
            (
                ms(t),
                tcp_frame(sm, dm, a, b, s0 + seq, a0 + ack, fl, 64, &[], &vec![0; len]),
            )
        };
        let all = vec![
            seg(0, true, 0, 0, flags::SYN, 0),
            seg(0, false, 0, 1, flags::SYN | flags::ACK, 0),
            seg(0, true, 1, 1, flags::ACK, 1000),
            seg(0, true, 1001, 1, flags::ACK, 1000),
            seg(1, false, 1, 1001, flags::ACK, 0),
            seg(300, true, 1001, 1, flags::ACK, 1000), // retransmission after 299 ms
            seg(301, false, 1, 2001, flags::ACK, 0),
            seg(302, true, 2001, 1, flags::ACK, 1000), // never acknowledged
            seg(303, false, 1, 2001, flags::RST, 0),
        ];
        let cap = Capture::from_frames("t", &all, Some(GUEST_MAC), &[]).unwrap();
        let d = derive(&cap, 200_000_000);
        let o = &d.original[&1];
        assert_eq!(o.bytes, [2000, 0]);
        assert_eq!(o.undelivered, [1000, 0]);
        assert_eq!(o.retransmits, [1, 0]);
        assert_eq!(o.end, End::Reset(Side::Host));
        assert_eq!(o.stalls.len(), 1, "{:?}", o.stalls);
        assert_eq!(o.stalls[0].1 / 1_000_000, 300);
        let c = &d.plan.tcp[0];
        assert_eq!(c.bytes(Side::Guest), 2000);
        let closes: Vec<&Step> = c.steps.iter().filter(|s| s.act == Act::Close).collect();
        assert_eq!(closes.len(), 2);
        assert_eq!((closes[0].side, closes[0].after_fin), (Side::Guest, false));
        assert_eq!(
            (closes[1].side, closes[1].after, closes[1].after_fin),
            (Side::Host, 2000, true)
        );
        assert!(d.scenario_text("x.pcap").contains("`sim replay start`"));
    }
}
