//! Invariants that relate the two sides of the translation: what the guest
//! sent and was acknowledged against what the host sockets accepted, and what
//! the host wrote against what reached the guest.

use crate::frame::{flags, parse_tcp, tcp_ends, TcpSeg};
use crate::kernel::{ConnView, Kernel};
use passt_core::SockId;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// One TCP flow as seen on the guest link.
#[derive(Debug, Default, Clone)]
struct Flow {
    guest_isn: Option<u32>,
    core_isn: Option<u32>,
    /// In-order bytes the guest sent (from sequence 1).
    guest_data: Vec<u8>,
    /// Out-of-order guest segments waiting for the gap to fill.
    pending: BTreeMap<u32, Vec<u8>>,
    /// Where the guest's FINs stand (relative; the first few distinct
    /// ones): with scripted or reordered segments a guest may send more than
    /// one, and the core takes the one that arrives in order.
    guest_fins: Vec<u32>,
    /// The FIN the core took: the one its acknowledgement covers.
    guest_fin_at: Option<u32>,
    guest_rst: bool,
    /// Highest acknowledgement (relative, in bytes) the core sent.
    core_acked: u32,
    core_fin: bool,
    core_rst: bool,
    /// Highest acknowledgement the guest sent for the core's data.
    guest_acked: u32,
    sock: Option<SockId>,
    conn: Option<u64>,
    /// The guest sent different bytes for the same sequence numbers.
    tainted: bool,
    /// Bytes of the host's stream already found equal to the guest's (each
    /// check compares only what is new: bulk runs stay linear).
    verified: usize,
    core_initiated: bool,
    /// The guest's SYN offered window scaling.
    guest_ws: bool,
    /// Window scale of the core's SYN, if it offered one.
    core_ws: Option<u8>,
    /// MSS the core offered the guest.
    core_mss: Option<u32>,
    /// Largest segment the guest sent.
    guest_seg: u32,
    /// End (relative) of the highest guest data seen.
    guest_nxt: u32,
    /// Right edge (relative) of the window the core last offered.
    wnd_edge: Option<u32>,
    /// Since when (virtual ns) the guest has been waiting on a closed window
    /// while the socket had room.
    closed_since: Option<u64>,
    /// A window stall was reported already.
    stall_reported: bool,
    /// Sequence numbers of the guest's SYNs on this 4-tuple (the first few):
    /// the link may reorder them, so the core may open the connection from
    /// a later one than the checker took.
    guest_syns: Vec<u32>,
}

/// Most guest SYN (and FIN) sequence numbers kept per flow.
const GUEST_SYNS_MAX: usize = 8;

fn opt_num(opts: &str, name: &str) -> Option<u32> {
    opts.trim_matches(|c| c == '<' || c == '>')
        .split(',')
        .find_map(|o| o.trim().strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

/// The flow-level checker.
#[derive(Debug, Default, Clone)]
pub struct Checker {
    flows: BTreeMap<(SocketAddr, SocketAddr), Flow>,
    /// A guest frame was corrupted on the link: headers may have been
    /// damaged too, so flow-level checks are off for the rest of the run.
    pub corrupted: bool,
    accepted: Vec<SockId>,
}

fn rel(seq: u32, isn: Option<u32>) -> Option<u32> {
    isn.map(|i| seq.wrapping_sub(i).wrapping_sub(1))
}

impl Checker {
    /// A frame the guest put on the link (what it meant to send).
    pub fn on_guest_frame(&mut self, frame: &[u8]) {
        let Some(t) = parse_tcp(frame) else { return };
        let f = self.flows.entry((t.src, t.dst)).or_default();
        // A SYN starts a stream, unless one is open and not reset or
        // closed both ways: a SYN inside an open connection is answered
        // with a challenge ACK and changes nothing (RFC 5961).
        let open = f.guest_isn.is_some()
            && !f.guest_rst
            && !f.core_rst
            && (!f.core_fin || f.guest_fins.is_empty());
        if t.flags & flags::SYN != 0
            && f.guest_syns.len() < GUEST_SYNS_MAX
            && !f.guest_syns.contains(&t.seq)
        {
            f.guest_syns.push(t.seq);
        }
        if t.flags & flags::SYN != 0 && !open {
            f.guest_isn = Some(t.seq);
            f.guest_ws = opt_num(&t.opts, "wscale ").is_some();
        }
        f.guest_seg = f.guest_seg.max(t.payload.len() as u32);
        if t.flags & flags::RST != 0 {
            f.guest_rst = true;
        }
        if t.flags & flags::ACK != 0 {
            if let Some(a) = rel(t.ack, f.core_isn) {
                if a < 0x8000_0000 {
                    f.guest_acked = f.guest_acked.max(a);
                }
            }
        }
        let Some(start) = rel(t.seq, f.guest_isn) else {
            return;
        };
        let start = if t.flags & flags::SYN != 0 {
            start.wrapping_add(1)
        } else {
            start
        };
        if start >= 0x8000_0000 {
            return;
        }
        if !t.payload.is_empty() {
            f.pending.entry(start).or_insert_with(|| t.payload.clone());
            // Check overlaps against what is known, then merge in order.
            let have = f.guest_data.len() as u32;
            if start < have {
                let s = start as usize;
                let overlap = &f.guest_data[s..f.guest_data.len().min(s + t.payload.len())];
                if overlap != &t.payload[..overlap.len()] {
                    f.tainted = true;
                }
            }
            loop {
                let have = f.guest_data.len() as u32;
                let Some((&s, _)) = f.pending.range(..=have).next_back() else {
                    break;
                };
                let Some(p) = f.pending.remove(&s) else { break };
                let skip = (have - s) as usize;
                if let Some(tail) = p.get(skip..) {
                    f.guest_data.extend_from_slice(tail);
                }
                if f.pending
                    .range(..=f.guest_data.len() as u32)
                    .next()
                    .is_none()
                {
                    break;
                }
            }
        }
        let end = start.wrapping_add(t.payload.len() as u32);
        if end > f.guest_nxt && end < 0x8000_0000 {
            f.guest_nxt = end;
        }
        if t.flags & flags::FIN != 0 {
            // The stream ends at the first FIN: a later FIN further on (data
            // after the end) is one the core ignores, not a new end.
            let at = start.wrapping_add(t.payload.len() as u32);
            if f.guest_fins.len() < GUEST_SYNS_MAX && !f.guest_fins.contains(&at) {
                f.guest_fins.push(at);
            }
        }
    }

    /// A guest frame was corrupted on the link: the core does not verify
    /// guest checksums (as upstream passt), so its flow's content is not checked.
    pub fn on_corrupted(&mut self, _frame: &[u8]) {
        self.corrupted = true;
    }

    /// The core connected `sock` to `addr`: map it to the oldest unmapped
    /// guest flow towards that port.
    pub fn on_connect(&mut self, sock: SockId, addr: SocketAddr, kernel: &Kernel) {
        // Only flows the guest opened (SYN seen), of the same family and port
        // (the address may be translated, e.g. the gateway to loopback).
        let fits = |k: &(SocketAddr, SocketAddr), f: &Flow| {
            !f.core_initiated
                && f.guest_isn.is_some()
                && k.1.port() == addr.port()
                && k.1.is_ipv4() == addr.is_ipv4()
        };
        if let Some(f) = self
            .flows
            .iter_mut()
            .find(|(k, f)| f.sock.is_none() && fits(k, f))
        {
            f.1.sock = Some(sock);
            return;
        }
        // A new connection on a 4-tuple whose previous one is gone (a SYN
        // again, e.g. duplicated, after a reset): a new incarnation.
        let open: Vec<SockId> = kernel.core_ids();
        if let Some(f) = self
            .flows
            .iter_mut()
            .find(|(k, f)| fits(k, f) && f.sock.is_some_and(|s| !open.contains(&s) || s == sock))
        {
            let f = f.1;
            f.sock = Some(sock);
            f.conn = None;
            f.verified = 0;
            f.core_isn = None;
            f.core_acked = 0;
            f.core_fin = false;
            f.core_rst = false;
            f.guest_rst = false;
        }
    }

    /// The core accepted `sock`: it will be mapped to the next flow the core
    /// opens towards the guest.
    pub fn on_accepted(&mut self, sock: SockId) {
        self.accepted.push(sock);
    }

    fn view<'k>(f: &mut Flow, views: &[(Option<SockId>, ConnView<'k>)]) -> Option<ConnView<'k>> {
        if let Some(id) = f.conn {
            return views.iter().find(|v| v.1.id == id).map(|v| v.1);
        }
        let sock = f.sock?;
        let v = views.iter().find(|v| v.0 == Some(sock))?;
        f.conn = Some(v.1.id);
        Some(v.1)
    }

    /// A frame the core emitted towards the guest. Returns violations.
    // Long by design: one pass over a TCP frame that checks each invariant in turn against
    // the same flow state; the checks read best in the order the segment's fields are met.
    pub fn on_core_frame(&mut self, frame: &[u8], kernel: &Kernel) -> Vec<String> {
        if self.corrupted {
            return Vec::new();
        }
        let Some(t) = parse_tcp(frame) else {
            return Vec::new();
        };
        let views = kernel.conn_views();
        let mut bad = Vec::new();
        let key = (t.dst, t.src);
        let f = match self.flows.get_mut(&key) {
            Some(f) => f,
            None => {
                if t.flags & (flags::SYN | flags::ACK) != flags::SYN {
                    bad.push(format!(
                        "core sent {} on a flow the guest never opened",
                        seg_str(&t)
                    ));
                    return bad;
                }
                let f = self.flows.entry(key).or_default();
                f.core_initiated = true;
                if !self.accepted.is_empty() {
                    f.sock = Some(self.accepted.remove(0));
                }
                f
            }
        };
        if t.flags & flags::SYN != 0 && t.flags & flags::ACK != 0 && !f.core_initiated {
            // The core answers the SYN it got first: with the guest's SYNs
            // reordered on the link, that may be a later one than the
            // checker took. The stream then counts from that SYN; what was
            // reassembled against the other is not comparable any more.
            let isn = t.ack.wrapping_sub(1);
            if f.guest_isn != Some(isn) && f.guest_syns.contains(&isn) {
                f.guest_isn = Some(isn);
                f.tainted |= !f.guest_data.is_empty() || !f.pending.is_empty();
                f.guest_data.clear();
                f.pending.clear();
                f.guest_fins.clear();
                f.guest_fin_at = None;
                f.guest_nxt = 0;
                f.verified = 0;
            }
        }
        if t.flags & flags::SYN != 0 {
            f.core_isn = Some(t.seq);
            f.core_ws = opt_num(&t.opts, "wscale ").map(|w| w.min(14) as u8);
            f.core_mss = opt_num(&t.opts, "mss ");
        }
        // A reset before the core had a socket for the flow answers a
        // segment of no connection (the guest's ACK overtook its SYN): it
        // ends nothing.
        if t.flags & flags::RST != 0 && (f.sock.is_some() || f.core_isn.is_some()) {
            f.core_rst = true;
        }
        if t.flags & flags::ACK != 0 && t.flags & flags::RST == 0 {
            if let Some(a) = rel(t.ack, f.guest_isn) {
                let ws = match (t.flags & flags::SYN != 0, f.guest_ws, f.core_ws) {
                    (false, true, Some(w)) => u32::from(w),
                    _ => 0,
                };
                // The SYN-ACK acknowledges the SYN (relative -1).
                let a = if t.flags & flags::SYN != 0 { 0 } else { a };
                f.wnd_edge = Some(a.wrapping_add(u32::from(t.win) << ws));
            }
        }
        let view = Self::view(f, &views);
        if t.flags & flags::ACK != 0 && t.flags & flags::RST == 0 {
            if let Some(a) = rel(t.ack, f.guest_isn) {
                if a < 0x8000_0000 {
                    let accepted = view.map_or(0, |v| v.from_core.len() as u32);
                    // The FIN may be acknowledged once all data before it was
                    // accepted (the shutdown may follow in the same drain; the
                    // final checks make sure it happened).
                    let fin_before = f
                        .guest_fins
                        .iter()
                        .copied()
                        .filter(|&e| e <= accepted)
                        .max();
                    let fin = u32::from(fin_before.is_some());
                    if a == accepted + 1 && f.guest_fin_at.is_none() {
                        // The acknowledgement covers a FIN: the one at the
                        // end of what the socket took (or, if none stands
                        // there, the last before it: the final checks then
                        // find the data the core took past it).
                        f.guest_fin_at = f
                            .guest_fins
                            .iter()
                            .copied()
                            .find(|&e| e == accepted)
                            .or(fin_before);
                    }
                    if a > accepted + fin {
                        bad.push(format!(
                            "ACK honesty: core acked {a} bytes of {} > {} but its socket accepted {accepted}",
                            key.0, key.1
                        ));
                    }
                    f.core_acked = f.core_acked.max(a);
                }
            }
        }
        if !t.payload.is_empty() {
            match (rel(t.seq, f.core_isn), view) {
                (Some(off), Some(v)) if off < 0x8000_0000 => {
                    let off = off as usize;
                    match v.to_core.get(off..off + t.payload.len()) {
                        Some(host) if host == t.payload.as_slice() => {}
                        Some(_) => bad.push(format!(
                            "byte stream: core sent bytes {off}..{} of {} > {} that differ from what the host wrote",
                            off + t.payload.len(),
                            key.1,
                            key.0
                        )),
                        None => bad.push(format!(
                            "byte stream: core sent bytes {off}..{} but the host wrote only {}",
                            off + t.payload.len(),
                            v.to_core.len()
                        )),
                    }
                }
                _ => bad.push(format!(
                    "core sent data on an unmapped flow: {}",
                    seg_str(&t)
                )),
            }
        }
        if t.flags & flags::FIN != 0 {
            f.core_fin = true;
            if let (Some(off), Some(v)) = (rel(t.seq, f.core_isn), view) {
                let end = off as usize + t.payload.len();
                if !v.host_fin && !v.reset {
                    bad.push("close mapping: core sent FIN but the host did not shut down".into());
                } else if end != v.to_core.len() && !v.reset {
                    bad.push(format!(
                        "close mapping: FIN at {end}, but the host wrote {}",
                        v.to_core.len()
                    ));
                }
            }
        }
        bad
    }

    /// The kernel's connections, unless a corrupted frame made the
    /// stream checks moot.
    fn views<'k>(&self, kernel: &'k Kernel) -> Option<Vec<(Option<SockId>, ConnView<'k>)>> {
        (!self.corrupted).then(|| kernel.conn_views())
    }

    /// At the end of a turn (everything due at `now` done): the guest must
    /// not wait on a window closed by the core while the socket has room.
    /// The window counts as closed when it has no room for one of the
    /// guest's segments beyond what the guest sent; the socket has room
    /// when it is writable (epoll's notion: a third of the buffer free) and
    /// has room for two segments beyond the guest data still on its way.
    /// Allowed for one turn (the core learns of the room through an event),
    /// not across a later one. A turn that ends with frames of the flow on
    /// either link (`on_links`) counts for neither: the guest is not waiting
    /// yet while its data or the core's answers are on their way.
    pub fn on_turn_end<'f>(
        &mut self,
        now: u64,
        kernel: &Kernel,
        on_links: impl Iterator<Item = &'f [u8]>,
    ) -> Vec<String> {
        let Some(views) = self.views(kernel) else {
            return Vec::new();
        };
        // Both ends of every TCP frame on the links, either way round.
        let busy: Vec<(SocketAddr, SocketAddr)> = on_links
            .filter_map(tcp_ends)
            .flat_map(|(a, b)| [(a, b), (b, a)])
            .collect();
        let mut bad = Vec::new();
        for (k, f) in self.flows.iter_mut() {
            let (Some(sock), Some(edge), Some(mss)) = (f.sock, f.wnd_edge, f.core_mss) else {
                continue;
            };
            let open = views.iter().any(|v| v.0 == Some(sock));
            let finished = !f.guest_fins.is_empty() || f.guest_rst || f.core_rst;
            let Ok(sp) = kernel.send_space(sock) else {
                f.closed_since = None;
                continue;
            };
            if !open || finished {
                f.closed_since = None;
                continue;
            }
            if busy.contains(k) {
                continue;
            }
            let seg = if f.guest_seg > 0 {
                f.guest_seg.min(mss)
            } else {
                mss
            };
            let usable = edge.wrapping_sub(f.guest_nxt);
            let closed = usable >= 0x8000_0000 || usable < seg;
            let accepted = Self::view(f, &views).map_or(0, |v| v.from_core.len() as u32);
            let on_the_way = f.guest_nxt.saturating_sub(accepted);
            let free = sp
                .sndbuf
                .saturating_sub(sp.queued)
                .saturating_sub(on_the_way);
            let room = sp.writable() && free >= 2 * seg;
            if !(closed && room) {
                f.closed_since = None;
                continue;
            }
            match f.closed_since {
                None => f.closed_since = Some(now),
                Some(t) if now > t && !f.stall_reported => {
                    f.stall_reported = true;
                    bad.push(format!(
                        "window stall: {} > {} waits on a closed window since {:.3} s while its socket has {free} of {} bytes free",
                        k.0,
                        k.1,
                        t as f64 / 1e9,
                        sp.sndbuf
                    ));
                }
                Some(_) => {}
            }
        }
        bad
    }

    /// After the core wrote to a socket: the host-side stream must be a prefix
    /// of what the guest sent.
    pub fn on_sent(&mut self, sock: SockId, kernel: &Kernel) -> Vec<String> {
        let Some(views) = self.views(kernel) else {
            return Vec::new();
        };
        let mut bad = Vec::new();
        for (k, f) in self.flows.iter_mut().filter(|(_, f)| f.sock == Some(sock)) {
            let Some(v) = Self::view(f, &views) else {
                continue;
            };
            if f.tainted {
                continue;
            }
            let n = v.from_core.len().min(f.guest_data.len());
            let from = f.verified.min(n);
            if v.from_core[from..n] != f.guest_data[from..n] {
                bad.push(format!(
                    "byte stream: host received bytes from {} > {} that differ from the guest's",
                    k.0, k.1
                ));
            } else {
                f.verified = n;
            }
            if v.from_core.len() > f.guest_data.len() {
                bad.push(format!(
                    "byte stream: host received {} bytes, the guest sent {} in order",
                    v.from_core.len(),
                    f.guest_data.len()
                ));
            }
        }
        bad
    }

    /// End-of-run checks, after the heal phase.
    pub fn finish(&mut self, kernel: &Kernel) -> Vec<String> {
        let Some(views) = self.views(kernel) else {
            return Vec::new();
        };
        let mut bad = Vec::new();
        for (k, f) in &mut self.flows {
            let Some(v) = Self::view(f, &views) else {
                continue;
            };
            let name = format!("{} > {}", k.0, k.1);
            if f.guest_fin_at.is_some()
                && f.core_acked > f.guest_fin_at.unwrap_or(0)
                && !v.core_fin
                && !v.reset
            {
                bad.push(format!(
                    "close mapping: {name}: guest FIN acked but the host socket was not shut down"
                ));
            }
            if v.host_fin
                && !v.reset
                && !f.guest_rst
                && !f.core_rst
                && f.guest_acked as usize >= v.to_core.len()
                && !f.core_fin
            {
                bad.push(format!(
                    "close mapping: {name}: host shut down but the guest got no FIN"
                ));
            }
            if let Some(fin) = f.guest_fin_at {
                // The stream is what came before the FIN: bytes the guest
                // sent after it are not part of it.
                let sent = f.guest_data.len().min(fin as usize);
                if !f.tainted && f.core_acked > fin && v.from_core.len() != sent {
                    bad.push(format!(
                        "byte stream: {name}: guest FIN acknowledged but the host got {} of {sent} bytes",
                        v.from_core.len(),
                    ));
                }
            }
            if v.reset && !f.core_rst && !f.guest_rst {
                bad.push(format!(
                    "close mapping: {name}: host reset but the guest got no RST"
                ));
            }
            if (f.guest_rst || f.core_rst) && !v.core_closed {
                bad.push(format!(
                    "resources: {name}: reset but the core's socket is still open"
                ));
            }
            let fin = usize::from(f.guest_fin_at.is_some() && v.core_fin);
            if !f.tainted && f.core_acked as usize > v.from_core.len() + fin {
                bad.push(format!(
                    "ACK honesty: {name}: final ack beyond the host's bytes"
                ));
            }
        }
        bad
    }

    /// Number of TCP flows seen.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }
}

fn seg_str(t: &TcpSeg) -> String {
    format!(
        "{} > {} flags {:#x} seq {} ack {}",
        t.src, t.dst, t.flags, t.seq, t.ack
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{tcp_frame, BROADCAST, GUEST_MAC};
    use crate::kernel::PeerModel;
    use passt_core::{Family, Netns, SockKind};

    use crate::kernel::tests::kernel_with;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The guest's end and the host peer's of the connection under test.
    fn ends() -> (SocketAddr, SocketAddr) {
        (sa("10.77.0.2:40000"), sa("192.0.2.1:80"))
    }

    /// The core's socket 1 connects to `r`, as the checker is told.
    fn connect_core(k: &mut Kernel, c: &mut Checker, r: SocketAddr) -> SockId {
        let s = SockId(1);
        k.open(s, SockKind::TcpStream, Family::V4, Netns::Host)
            .unwrap();
        k.connect(s, r, 0).unwrap();
        c.on_connect(s, r, k);
        s
    }

    /// Plays the core by hand: a handshake, guest data written to the host
    /// socket, then ACKs honest and dishonest.
    #[test]
    fn ack_honesty_and_byte_stream() {
        let (g, r) = ends();
        let mut k = kernel_with(PeerModel::Sink);
        let mut c = Checker::default();
        let gf = |seq, ack, fl, p: &[u8]| {
            tcp_frame(GUEST_MAC, BROADCAST, g, r, seq, ack, fl, 65535, &[], p)
        };
        let cf = |seq, ack, fl, p: &[u8]| {
            tcp_frame(BROADCAST, GUEST_MAC, r, g, seq, ack, fl, 65535, &[], p)
        };
        c.on_guest_frame(&gf(100, 0, flags::SYN, b""));
        let s = connect_core(&mut k, &mut c, r);
        k.advance(0);
        assert!(c
            .on_core_frame(&cf(5000, 101, flags::SYN | flags::ACK, b""), &k)
            .is_empty());
        c.on_guest_frame(&gf(101, 5001, flags::ACK, b"hello world"));
        k.send(s, b"hello").unwrap();
        assert!(c.on_sent(s, &k).is_empty());
        // Honest: ack 5 bytes.
        assert!(c
            .on_core_frame(&cf(5001, 106, flags::ACK, b""), &k)
            .is_empty());
        // One byte too many.
        let v = c.on_core_frame(&cf(5001, 107, flags::ACK, b""), &k);
        assert!(v.iter().any(|s| s.starts_with("ACK honesty")), "{v:?}");
        // The host receiving bytes the guest never sent.
        k.send(s, b"XXXXXXXXXXXXXXXX").unwrap();
        let v = c.on_sent(s, &k);
        assert_eq!(v.len(), 2, "{v:?}");
        // Data from the core that the host never wrote.
        let v = c.on_core_frame(&cf(5001, 106, flags::ACK, b"zz"), &k);
        assert!(v.iter().any(|s| s.contains("wrote only 0")), "{v:?}");
        // A segment on a flow nobody opened.
        let v = c.on_core_frame(
            &tcp_frame(
                BROADCAST,
                GUEST_MAC,
                sa("192.0.2.9:1"),
                g,
                1,
                1,
                flags::ACK,
                1,
                &[],
                b"",
            ),
            &k,
        );
        assert_eq!(v.len(), 1);
        assert_eq!(c.flows(), 1);
    }

    #[test]
    fn reassembly_out_of_order_and_taint() {
        let (g, r) = ends();
        let mut c = Checker::default();
        let gf =
            |seq, fl, p: &[u8]| tcp_frame(GUEST_MAC, BROADCAST, g, r, seq, 0, fl, 65535, &[], p);
        c.on_guest_frame(&gf(0, flags::SYN, b""));
        c.on_guest_frame(&gf(4, flags::ACK, b"def"));
        c.on_guest_frame(&gf(1, flags::ACK, b"abc"));
        c.on_guest_frame(&gf(7, flags::ACK | flags::FIN, b"g"));
        let f = c.flows.values().next().unwrap();
        assert_eq!(f.guest_data, b"abcdefg");
        assert_eq!(f.guest_fins, [7]);
        assert!(!f.tainted);
        c.on_guest_frame(&gf(2, flags::ACK, b"Z"));
        assert!(c.flows.values().next().unwrap().tainted);
    }

    /// A reset the core sends before it has a socket for the flow answers
    /// a segment that overtook the guest's SYN: the connection that follows
    /// is not reset by it. One sent once the socket exists is.
    #[test]
    fn reset_before_the_socket_ends_nothing() {
        let (g, r) = ends();
        let mut k = kernel_with(PeerModel::Sink);
        let mut c = Checker::default();
        let gf =
            |seq, ack, fl| tcp_frame(GUEST_MAC, BROADCAST, g, r, seq, ack, fl, 65535, &[], b"");
        let cf = |seq, ack, fl| tcp_frame(BROADCAST, GUEST_MAC, r, g, seq, ack, fl, 0, &[], b"");
        let reset_open = |v: Vec<String>| v.iter().any(|s| s.contains("socket is still open"));
        c.on_guest_frame(&gf(100, 0, flags::SYN));
        assert!(c.on_core_frame(&cf(7, 0, flags::RST), &k).is_empty());
        connect_core(&mut k, &mut c, r);
        k.advance(0);
        assert!(c
            .on_core_frame(&cf(5000, 101, flags::SYN | flags::ACK), &k)
            .is_empty());
        assert!(!reset_open(c.finish(&k)));
        c.on_core_frame(&cf(5001, 101, flags::RST), &k);
        assert!(reset_open(c.finish(&k)));
    }

    /// A window the core keeps closed while the socket has room is a stall
    /// from the second turn on; turns that end with frames of the flow still
    /// on a link (the guest's data, the core's answers) count for neither.
    #[test]
    fn window_stall_waits_for_quiet_links() {
        let (g, r) = ends();
        let mut k = kernel_with(PeerModel::Sink);
        let mut c = Checker::default();
        let data = [7u8; 1000];
        let gf =
            |seq, fl, p: &[u8]| tcp_frame(GUEST_MAC, BROADCAST, g, r, seq, 5001, fl, 65535, &[], p);
        let cf = |ack, fl, win, opts: &[u8]| {
            tcp_frame(BROADCAST, GUEST_MAC, r, g, 5000, ack, fl, win, opts, b"")
        };
        c.on_guest_frame(&gf(100, flags::SYN, b""));
        let s = connect_core(&mut k, &mut c, r);
        k.advance(0);
        let mss = crate::frame::tcp_options("mss 1000").unwrap();
        c.on_core_frame(&cf(101, flags::SYN | flags::ACK, 65535, &mss), &k);
        // Four segments; the core took the first and offers less than a
        // segment beyond it, while its socket has room.
        for i in 0..4 {
            c.on_guest_frame(&gf(101 + i * 1000, flags::ACK, &data));
        }
        k.send(s, &data).unwrap();
        k.run_peers(0);
        let ack = cf(1101, flags::ACK, 500, &[]);
        let v = c.on_core_frame(&ack, &k);
        assert!(v.is_empty(), "{v:?}");
        let on_link = || std::iter::once(ack.as_slice());
        let quiet = std::iter::empty;
        for t in 1..4 {
            let v = c.on_turn_end(t, &k, on_link());
            assert!(v.is_empty(), "the ACK is still on its way: {v:?}");
        }
        assert!(c.on_turn_end(4, &k, quiet()).is_empty(), "one turn allowed");
        assert!(c.on_turn_end(5, &k, on_link()).is_empty());
        let v = c.on_turn_end(6, &k, quiet());
        assert!(v.iter().any(|s| s.starts_with("window stall")), "{v:?}");
    }

    #[test]
    fn close_mapping_at_the_end() {
        let (g, r) = ends();
        let mut k = kernel_with(PeerModel::ResetAfter(1));
        let mut c = Checker::default();
        c.on_guest_frame(&tcp_frame(
            GUEST_MAC,
            BROADCAST,
            g,
            r,
            0,
            0,
            flags::SYN,
            1,
            &[],
            b"",
        ));
        let s = connect_core(&mut k, &mut c, r);
        k.advance(0);
        k.send(s, b"ab").unwrap();
        k.run_peers(0);
        let v = c.finish(&k);
        assert!(
            v.iter()
                .any(|s| s.contains("host reset but the guest got no RST")),
            "{v:?}"
        );
    }
}
