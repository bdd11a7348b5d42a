//! The [`Core`] state machine: inputs, outputs, and dispatch of guest frames.

use crate::action::{Action, Errno, RxDatagram, SockEvent, SockId, Span, SpanList, TxSlot};
use crate::config::{Config, TcpForward};
use crate::counters::{Counters, DropReason};
use crate::flow::FlowTable;
use crate::queue::FrameQueue;
use crate::rng::Rng;
use crate::tap::{self, EthHdr, FlowKey, FrameBatch, Grouper, IpHdr, L4Packet, Parsed};
use crate::tcp::{TcpState, TcpStats};
use crate::time::{earliest, Instant};
use crate::udp::UdpForward;
use crate::udp::{UdpState, UdpStats};
use crate::wire::headers::{
    finish_ip_frame, finish_udp_frame, l4_offset, ETH_HLEN, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
    UDP_HLEN,
};
use crate::wire::{be16, Mac};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::collections::VecDeque;

/// What the core has learnt about the guest from its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestInfo {
    /// Destination MAC of frames to the guest: the source MAC of its last frame
    /// (broadcast until it sent one, unless configured).
    pub mac: Mac,
    /// Last non-zero IPv4 source address seen.
    pub ip4_seen: Option<Ipv4Addr>,
    /// Last global IPv6 source address seen (or link-local, if nothing else yet).
    pub ip6_seen: Option<Ipv6Addr>,
    /// Last link-local IPv6 source address seen.
    pub ip6_ll_seen: Option<Ipv6Addr>,
    /// Whether any frame from the guest arrived since start or the last reset.
    pub seen: bool,
}

/// The protocol core of passt and pasta. See the [crate documentation](crate)
/// for the order in which drivers call it.
#[derive(Debug)]
pub struct Core {
    pub(crate) cfg: Config,
    pub(crate) guest: GuestInfo,
    pub(crate) counters: Counters,
    pub(crate) rng: Rng,
    pub(crate) out: FrameQueue,
    pub(crate) actions: VecDeque<Action>,
    pub(crate) spans: Vec<Span>,
    grouper: Grouper,
    /// Next unsolicited router advertisement.
    pub(crate) ra_next: Option<Instant>,
    /// Translated flows (TCP connections).
    pub(crate) flows: FlowTable,
    /// TCP state outside the flow table (listeners, timers, transmit log).
    pub(crate) tcp: TcpState,
    /// UDP and ICMP echo state outside the flow table.
    pub(crate) udp: UdpState,
    /// The guest link refused frames, or had no room for queued ones, since
    /// the last `handle_tap_writable`.
    pub(crate) link_refused: bool,
}

/// Largest control frame the core builds (DHCPv6 replies with long search lists
/// are the biggest, well under this).
pub(crate) const CONTROL_FRAME_MAX: usize = 2048;

impl Core {
    /// Builds a core. All tables and queues are allocated here, once.
    pub fn new(cfg: Config) -> Self {
        let limits = cfg.limits;
        Core {
            guest: GuestInfo {
                mac: cfg.guest_mac.unwrap_or(Mac::BROADCAST),
                ip4_seen: None,
                ip6_seen: None,
                ip6_ll_seen: None,
                seen: false,
            },
            counters: Counters::default(),
            rng: Rng::new(cfg.seed),
            out: FrameQueue::new(limits.out_queue_bytes, limits.out_queue_frames),
            actions: VecDeque::with_capacity(limits.actions),
            spans: Vec::with_capacity(limits.batch_frames),
            grouper: Grouper::new(limits.batch_frames),
            ra_next: None,
            flows: FlowTable::new(limits.flows, &cfg.secret),
            tcp: TcpState::new(&cfg),
            udp: UdpState::new(),
            link_refused: false,
            cfg,
        }
    }

    /// The configuration the core was built with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters of frames handled, replies generated and drops by reason.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// What the core learnt about the guest.
    pub fn guest(&self) -> &GuestInfo {
        &self.guest
    }

    /// Flows in the flow table.
    pub fn flow_count(&self) -> usize {
        self.flows.count()
    }

    /// Sockets the core believes the driver holds for it (connections and
    /// listeners): opened or accepted, and neither closed nor failed.
    pub fn socket_count(&self) -> usize {
        self.tcp.open_socks + self.udp.open_socks
    }

    /// What UDP and ICMP echo translation did.
    pub fn udp_stats(&self) -> &UdpStats {
        &self.udp.stats
    }

    /// What TCP translation did.
    pub fn tcp_stats(&self) -> &TcpStats {
        &self.tcp.stats
    }

    /// Queues the start-up actions (opening the configured TCP listeners).
    /// Call it once before the first `poll_action`; otherwise it happens on
    /// the first input. Calling it again does nothing.
    pub fn start(&mut self, now: Instant) {
        self.tcp_start(now);
        self.udp_start(now);
    }

    /// Replaces the set of TCP listeners (host ports forwarded to the guest)
    /// with `forwards`, e.g. after a rescan of `auto` forwarding. Listeners
    /// are matched by address and port: those no longer listed are closed,
    /// new ones are opened (`Open`, `Bind`, `Listen`, `SetInterest`), a
    /// changed target port applies to new connections. Established
    /// connections stay. The list is the complete set: it replaces the
    /// configured listeners as well. Drain the outputs afterwards, like after
    /// any input; a listener that fails reports `SockEvent::OpenFailed`, and
    /// then shows in [`Self::failed_tcp_forwards`].
    pub fn set_tcp_forwards(&mut self, now: Instant, forwards: &[TcpForward]) {
        self.tcp_set_forwards(now, forwards);
    }

    /// Replaces the forwarded UDP ports (`-u`) with `forwards`, e.g. after
    /// a rescan of `auto` forwarding: listeners not listed close, new ones
    /// open, kept ones take the listed target port. Flows, which have
    /// sockets of their own, stay. The list is the complete set: it
    /// replaces the configured listeners as well. Drain the outputs
    /// afterwards, like after any input.
    pub fn set_udp_forwards(&mut self, now: Instant, forwards: &[UdpForward]) {
        self.udp_set_forwards(now, forwards);
    }

    /// Forwards whose listener could not be opened (`Open`, `Bind` or
    /// `Listen` failed, or the address family is disabled), among the
    /// current ones. A driver can treat an explicit port listed here as a
    /// fatal start-up error. `tcp_stats().listen_failures` counts them all.
    pub fn failed_tcp_forwards(&self) -> impl Iterator<Item = TcpForward> + '_ {
        self.tcp_failed_forwards()
    }

    // --- inputs -------------------------------------------------------------

    /// Handles a batch of frames from the guest.
    ///
    /// Link services (ARP, NDP, DHCP, DHCPv6) are answered at once; transport
    /// segments are grouped per flow and handed to the protocol handlers group by
    /// group. Malformed frames are dropped and counted. Afterwards drain
    /// [`Self::poll_action`] and [`Self::poll_frame`] before reusing the batch
    /// buffer.
    pub fn handle_tap_batch(&mut self, now: Instant, batch: &FrameBatch<'_>) {
        self.tcp_batch_begin(now);
        self.udp_start(now);
        self.spans.clear();
        for i in 0..batch.len() {
            self.counters.frames_in += 1;
            if i >= self.cfg.limits.batch_frames {
                self.counters.drop(DropReason::BatchFull);
                continue;
            }
            let Some(frame) = batch.frame(i) else {
                self.counters.drop(DropReason::BadDescriptor);
                continue;
            };
            let base = frame.as_ptr() as usize - batch.buffer().as_ptr() as usize;
            match tap::parse(frame) {
                Err(reason) => self.counters.drop(reason),
                Ok(parsed) => self.dispatch(now, batch, i as u32, base, parsed),
            }
        }
        self.flush_sequences(now, batch);
    }

    /// Handles readiness of, or a result from, socket `sock`.
    pub fn handle_sock_event(&mut self, now: Instant, sock: SockId, event: SockEvent) {
        self.tcp_start(now);
        self.udp_start(now);
        if !self.udp_sock_event(now, sock, event) && !self.tcp_sock_event(now, sock, event) {
            log::debug!("event {event:?} for unknown {sock:?}");
        }
    }

    /// Completes an [`Action::Peek`]: `result` is the number of bytes peeked
    /// into `slots` (`Ok(0)`: end of stream) or the error. The core writes
    /// Ethernet, IP and TCP headers and checksums in front of each slot's
    /// payload and sets its `frame_len`; the driver then sends the slots whose
    /// `frame_len` is non-zero, in order, interleaved correctly with frames from
    /// [`Self::poll_frame`] polled before and after this call. Returns the number
    /// of frames made ready.
    pub fn handle_peeked(
        &mut self,
        now: Instant,
        sock: SockId,
        result: Result<usize, Errno>,
        slots: &mut [TxSlot<'_>],
    ) -> usize {
        self.tcp_peeked(now, sock, result, slots)
    }

    /// Completes an [`Action::Recv`]: `dgrams` are the datagrams received
    /// (none on `EAGAIN`), each with its payload at `buf[room..]` (`room` of the action)
    /// and its peer. The core writes Ethernet, IP and UDP (or ICMP) headers
    /// in front of each payload and sets `frame_start` and `frame_len`
    /// (0: dropped); the driver then sends those frames in order, like the
    /// slots of [`Self::handle_peeked`]. Returns the number of frames made
    /// ready.
    pub fn handle_datagrams(
        &mut self,
        now: Instant,
        sock: SockId,
        dgrams: &mut [RxDatagram<'_>],
    ) -> usize {
        self.dgram_received(now, sock, dgrams)
    }

    /// Reports that of the frames handed out since the previous call (from
    /// [`Self::poll_frame`], [`Self::handle_peeked`] and
    /// [`Self::handle_datagrams`], in order) the first
    /// `accepted` reached the guest link; the core rewinds the flows of the rest
    /// so their data is sent again.
    pub fn handle_tap_sent(&mut self, now: Instant, accepted: usize) {
        self.tcp_tap_sent(now, accepted);
    }

    /// Runs timers that are due. Calling it early or twice is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tcp_start(now);
        self.udp_start(now);
        self.ndp_timer(now);
        self.tcp_timeout(now);
        self.udp_timeout(now);
    }

    /// The guest link went away (passt: qemu disconnected). Forgets the guest's
    /// MAC, stops unsolicited router advertisements and discards queued frames,
    /// until the next guest frame arrives.
    pub fn handle_tap_reset(&mut self, now: Instant) {
        let _ = now;
        self.guest.mac = self.cfg.guest_mac.unwrap_or(Mac::BROADCAST);
        self.guest.seen = false;
        self.ra_next = None;
        let mut sink = [0u8; 0];
        while self.out.pop_into(&mut sink).is_some() {}
        self.link_refused = false;
        self.tcp_tap_reset();
    }

    // --- outputs ------------------------------------------------------------

    /// The next frame for the guest, written into `buf`; returns its length.
    /// `buf` should hold 65535 + 14 bytes; a frame that does not fit is dropped
    /// and counted.
    #[must_use]
    pub fn poll_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        loop {
            match self.out.pop_into(buf)? {
                Ok(n) => {
                    self.counters.frames_out += 1;
                    return Some(n);
                }
                Err(_) => self.counters.drop(DropReason::OutFrameTooLarge),
            }
        }
    }

    /// The next socket action for the driver.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Self::handle_timeout`] should be called next, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(
            earliest(self.ra_next, self.tcp_poll_timeout()),
            self.udp_poll_timeout(),
        )
    }

    /// The spans of a `Send`/`SendDatagrams` action, valid until the next input.
    pub fn spans(&self, list: SpanList) -> &[Span] {
        let start = list.start as usize;
        let end = start.saturating_add(list.count as usize);
        self.spans.get(start..end).unwrap_or(&[])
    }

    // --- internals ----------------------------------------------------------

    fn dispatch(
        &mut self,
        now: Instant,
        batch: &FrameBatch<'_>,
        idx: u32,
        base: usize,
        p: Parsed<'_>,
    ) {
        let eth = match &p {
            Parsed::Arp(e, _) | Parsed::Ip(e, ..) => *e,
        };
        self.learn_mac(now, &eth);
        match p {
            Parsed::Arp(eth, arp) => {
                if self.cfg.ip4.is_none() {
                    return self.counters.drop(DropReason::Ipv4Disabled);
                }
                self.arp_input(now, &eth, arp);
            }
            Parsed::Ip(eth, ip, l4, l4_off) => {
                match ip.src {
                    IpAddr::V4(_) if self.cfg.ip4.is_none() => {
                        return self.counters.drop(DropReason::Ipv4Disabled)
                    }
                    IpAddr::V6(_) if self.cfg.ip6.is_none() => {
                        return self.counters.drop(DropReason::Ipv6Disabled)
                    }
                    _ => {}
                }
                self.learn_addr(&ip);
                if tap::is_icmp(&ip) {
                    return self.icmp_input(now, &eth, &ip, l4, base + l4_off);
                }
                match ip.proto {
                    PROTO_TCP | PROTO_UDP => {}
                    _ => return self.counters.drop(DropReason::UnsupportedProtocol),
                }
                let (sport, dport) = match tap::l4_ports(ip.proto, l4) {
                    Ok(p) => p,
                    Err(r) => return self.counters.drop(r),
                };
                if ip.proto == PROTO_UDP {
                    let payload = udp_payload(l4);
                    match (ip.dst, dport) {
                        (IpAddr::V4(_), 67) => {
                            return self.dhcp_input(now, &eth, &ip, sport, payload)
                        }
                        (IpAddr::V6(d), 547) if d.is_multicast() => {
                            return self.dhcpv6_input(now, &eth, &ip, sport, payload)
                        }
                        _ => {}
                    }
                }
                let enabled = if ip.proto == PROTO_TCP {
                    self.cfg.features.tcp
                } else {
                    self.cfg.features.udp
                };
                if !enabled {
                    return self.counters.drop(DropReason::ProtocolDisabled);
                }
                let pkt = L4Packet {
                    key: FlowKey {
                        proto: ip.proto,
                        src: ip.src,
                        dst: ip.dst,
                        sport,
                        dport,
                    },
                    l4_off: (base + l4_off) as u32,
                    l4_len: l4.len() as u32,
                    frame: idx,
                    src_mac: eth.src,
                };
                if !self.grouper.has_room(&pkt.key) {
                    self.flush_sequences(now, batch);
                }
                self.counters.l4_segments += 1;
                self.grouper.push(pkt);
            }
        }
    }

    fn learn_mac(&mut self, now: Instant, eth: &EthHdr) {
        if !eth.src.is_multicast() && eth.src != Mac::default() {
            self.guest.mac = eth.src;
        }
        if !self.guest.seen {
            self.guest.seen = true;
            self.ndp_guest_seen(now);
        }
    }

    fn learn_addr(&mut self, ip: &IpHdr) {
        match ip.src {
            IpAddr::V4(a) if !a.is_unspecified() => self.guest.ip4_seen = Some(a),
            IpAddr::V6(a) if a.is_unicast_link_local() => {
                self.guest.ip6_ll_seen = Some(a);
                if self.guest.ip6_seen.is_none() {
                    self.guest.ip6_seen = Some(a);
                }
            }
            IpAddr::V6(a) if !a.is_unspecified() && !a.is_multicast() => {
                self.guest.ip6_seen = Some(a)
            }
            _ => {}
        }
    }

    fn flush_sequences(&mut self, now: Instant, batch: &FrameBatch<'_>) {
        if self.grouper.is_empty() {
            return;
        }
        let mut g = core::mem::replace(&mut self.grouper, Grouper::new(0));
        g.drain(|seq| self.l4_sequence(now, batch, seq));
        self.grouper = g;
    }

    /// One flow's segments from a batch, in order.
    fn l4_sequence(&mut self, now: Instant, batch: &FrameBatch<'_>, seq: &[L4Packet]) {
        self.counters.l4_sequences += 1;
        if seq.first().is_some_and(|p| p.key.proto == PROTO_TCP) {
            return self.tcp_sequence(now, batch, seq);
        }
        self.udp_sequence(now, batch, seq);
    }

    fn icmp_input(&mut self, now: Instant, eth: &EthHdr, ip: &IpHdr, l4: &[u8], l4_off: usize) {
        if !self.cfg.features.icmp {
            return self.counters.drop(DropReason::ProtocolDisabled);
        }
        if ip.proto == PROTO_ICMPV6 {
            if let Some(&t) = l4.first() {
                if (133..=137).contains(&t) {
                    if !self.cfg.features.ndp {
                        return self.counters.drop(DropReason::ServiceIgnored);
                    }
                    return self.ndp_input(now, eth, ip, l4);
                }
            }
        }
        self.icmp_echo_input(now, ip, l4, l4_off);
    }

    // --- frame building for services ---------------------------------------

    /// Queues a frame of at most `max_len` bytes written by `fill`. Counts a
    /// drop if the queue is full. Returns whether a frame was queued.
    pub(crate) fn queue_frame(
        &mut self,
        max_len: usize,
        fill: impl FnOnce(&mut [u8], &Config) -> Option<usize>,
    ) -> bool {
        let cfg = &self.cfg;
        match self.out.push_with(max_len, |b| fill(b, cfg)) {
            Ok(queued) => queued,
            Err(_) => {
                self.counters.drop(DropReason::OutQueueFull);
                false
            }
        }
    }

    /// Queues a UDP datagram to the guest whose payload (at most `max_payload`
    /// bytes) is written by `fill`, which returns its length.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn queue_udp(
        &mut self,
        dst_mac: Mac,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
        max_payload: usize,
        fill: impl FnOnce(&mut [u8], &Config) -> Option<usize>,
    ) -> bool {
        let off = l4_offset(src.is_ipv6()) + UDP_HLEN;
        let our_mac = self.cfg.our_mac;
        self.queue_frame(off + max_payload, |b, cfg| {
            let n = fill(b.get_mut(off..)?, cfg)?;
            finish_udp_frame(b, dst_mac, our_mac, src, dst, sport, dport, n)
        })
    }

    /// Queues an IP packet to the guest whose L4 header and payload (at most
    /// `max_l4` bytes) `fill` writes; the L4 checksum is filled in afterwards
    /// (TCP, UDP, ICMP, ICMPv6).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn queue_ip(
        &mut self,
        dst_mac: Mac,
        src: IpAddr,
        dst: IpAddr,
        proto: u8,
        max_l4: usize,
        fill: impl FnOnce(&mut [u8], &Config) -> Option<usize>,
    ) -> bool {
        let off = l4_offset(src.is_ipv6());
        let our_mac = self.cfg.our_mac;
        self.queue_frame(off + max_l4, |b, cfg| {
            let n = fill(b.get_mut(off..)?, cfg)?;
            finish_ip_frame(b, dst_mac, our_mac, src, dst, proto, n)
        })
    }

    /// Queues a raw Ethernet frame (ARP) whose payload after the 14-byte header
    /// `fill` writes.
    pub(crate) fn queue_eth(
        &mut self,
        dst_mac: Mac,
        ethertype: u16,
        max_payload: usize,
        fill: impl FnOnce(&mut [u8], &Config) -> Option<usize>,
    ) -> bool {
        let our_mac = self.cfg.our_mac;
        self.queue_frame(ETH_HLEN + max_payload, |b, cfg| {
            let n = fill(b.get_mut(ETH_HLEN..)?, cfg)?;
            crate::wire::headers::write_eth(b, dst_mac, our_mac, ethertype)?;
            Some(ETH_HLEN + n)
        })
    }
}

/// The UDP payload of a length-checked datagram (see `tap::l4_ports`).
fn udp_payload(l4: &[u8]) -> &[u8] {
    let len = be16(l4, 4).map_or(0, usize::from);
    l4.get(UDP_HLEN..len).unwrap_or(&[])
}
