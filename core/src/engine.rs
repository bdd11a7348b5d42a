//! The [`Core`] state machine: inputs, outputs, and dispatch of guest frames.

use crate::action::{
    Action, Errno, PeekRequest, RecvRequest, RxDatagram, SockEvent, SockId, Span, SpanList, TxSlot,
};
use crate::config::Config;
use crate::counters::{Counters, DropReason};
use crate::flow::FlowTable;
use crate::fwd::{Forward, ListenFailure, ListenStats, Listened, Listeners, Proto};
use crate::guest::GuestInfo;
use crate::link::{self, ndp::Ndp};
use crate::neigh::{NeighStats, NeighTable};
use crate::queue::{ActionQueue, FrameQueue};
use crate::rng::Rng;
use crate::splice::{self, SpliceState, SpliceStats};
use crate::tap::{self, EthHdr, FlowKey, FrameBatch, Grouper, IpHdr, L4Packet, Parsed};
use crate::tcp::{TcpState, TcpStats};
use crate::time::{earliest, Instant};
use crate::txring::{Outcome, Transmit, TxCore, TxRing, TxState};
use crate::udp::splice::{UdpSpliceState, UdpSpliceStats};
use crate::udp::{self, UdpState, UdpStats};
use crate::wire::headers::{PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, UDP_HLEN};
use crate::wire::{be16, Mac};
use crate::work;
use core::net::{IpAddr, SocketAddr};
use std::io::IoSliceMut;

/// Most actions one flow's sequence of guest segments queues (a new
/// datagram flow's socket and its send; a TCP connection's set-up, or its
/// send, shutdown, peek, consume, window query and interest).
const SEQUENCE_ACTIONS: usize = 16;
/// Most actions an event on a listener queues (`Accept`, `Recv`).
const ACCEPT_ACTIONS: usize = 1;

/// A context lent to a protocol: a struct of disjoint borrows of the
/// core's fields (a method could not borrow them apart from the protocol's
/// own state), the fields before `;` shared, those after it mutable, and
/// after a second `;` any fields given by value (`now: expr`).
macro_rules! lend {
    ($core:ident => $($ctx:ident)::+ { $($r:ident),* ; $($m:ident),* $(; $($v:ident: $e:expr),*)? }) => {
        $($ctx)::+ {
            $($r: &$core.$r,)*
            $($m: &mut $core.$m,)*
            $($($v: $e,)*)?
        }
    };
}

/// The context lent to a link service.
macro_rules! link_cx {
    ($core:ident) => {
        lend!($core => link::Ctx { cfg, neigh; guest, out, counters, rng })
    };
}

/// The context lent to UDP and ICMP echo, for a call at `now`.
macro_rules! udp_cx {
    ($core:ident, $now:expr) => {
        lend!($core => udp::Ctx {
            cfg, guest, neigh;
            counters, actions, spans, flows, listeners, out;
            now: $now
        })
    };
}

/// The context lent to splicing, TCP and UDP.
macro_rules! splice_cx {
    ($core:ident) => {
        lend!($core => splice::Ctx { cfg, guest, listeners; counters, actions, flows })
    };
}

/// The context lent to TCP: the same as UDP's.
macro_rules! tcp_cx {
    ($core:ident, $now:expr) => {
        udp_cx!($core, $now)
    };
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
    pub(crate) actions: ActionQueue,
    pub(crate) spans: Vec<Span>,
    grouper: Grouper,
    /// Neighbour discovery (router advertisement timer).
    ndp: Ndp,
    /// Translated flows (TCP connections, UDP and echo flows).
    pub(crate) flows: FlowTable,
    /// The listeners of forwarded ports, TCP and UDP.
    pub(crate) listeners: Listeners,
    /// TCP state outside the flow table (timers, transmit log).
    pub(crate) tcp: TcpState,
    /// UDP and ICMP echo state outside the flow table.
    pub(crate) udp: UdpState,
    /// Spliced connections' state outside the flow table.
    pub(crate) splice: SpliceState,
    /// Spliced UDP flows' state outside the flow table.
    pub(crate) udp_splice: UdpSpliceState,
    /// The transmit path's state (`txring.rs`).
    tx_state: TxState,
    /// The host's LAN neighbours and their MACs (`neigh.rs`).
    pub(crate) neigh: NeighTable,
}

impl Core {
    /// Builds a core. All tables and queues are allocated here, once.
    pub fn new(cfg: Config) -> Self {
        let limits = cfg.limits;
        Core {
            guest: GuestInfo::new(cfg.guest_mac.unwrap_or(Mac::BROADCAST)),
            counters: Counters::default(),
            rng: Rng::new(cfg.seed),
            out: FrameQueue::new(limits.out_queue_bytes, limits.out_queue_frames),
            actions: ActionQueue::new(limits.actions),
            // A span per frame of a batch, and as many again for TCP to
            // extend a queued `Send` (see `tcp_requeue_send`).
            spans: Vec::with_capacity(limits.batch_frames.saturating_mul(2)),
            grouper: Grouper::new(limits.batch_frames),
            ndp: Ndp::default(),
            flows: {
                let mut t = FlowTable::new(limits.flows, &cfg.secret);
                t.set_quotas(limits.tcp_flows, limits.udp_flows, limits.ping_flows);
                t
            },
            listeners: Listeners::default(),
            tcp: TcpState::new(&cfg),
            udp: UdpState::new(limits.flows),
            splice: SpliceState::default(),
            udp_splice: UdpSpliceState::new(limits.flows),
            tx_state: TxState::default(),
            neigh: NeighTable::default(),
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
        self.tcp.open_socks
            + self.udp.open_socks
            + self.splice.open_socks
            + self.udp_splice.open_socks
            + self.listeners.open_count()
    }

    /// What UDP and ICMP echo translation did.
    pub fn udp_stats(&self) -> &UdpStats {
        &self.udp.stats
    }

    /// What TCP translation did.
    pub fn tcp_stats(&self) -> &TcpStats {
        &self.tcp.stats
    }

    /// What splicing did.
    pub fn splice_stats(&self) -> &SpliceStats {
        &self.splice.stats
    }

    /// What spliced UDP did.
    pub fn udp_splice_stats(&self) -> &UdpSpliceStats {
        &self.udp_splice.stats
    }

    /// What the listeners of forwarded ports did.
    pub fn listen_stats(&self) -> &ListenStats {
        self.listeners.stats()
    }

    /// What the table of the host's LAN neighbours did.
    pub fn neigh_stats(&self) -> &NeighStats {
        &self.neigh.stats
    }

    /// The MAC the guest is given for `addr` (ARP, NDP, the source of
    /// frames from it): a LAN neighbour's own, else ours.
    pub fn neighbour_mac(&self, addr: IpAddr) -> Mac {
        self.neigh.mac_of(&self.cfg, addr)
    }

    /// Queues the start-up actions: the listeners of the configured
    /// forwards ([`Config::forwards`]). Drivers call it once, right after
    /// [`Self::new`], and drain the outputs as after any input; no input
    /// opens them instead. Calling it again, or after [`Self::set_forwards`]
    /// (whose list replaces the configured forwards), does nothing.
    pub fn start(&mut self, now: Instant) {
        let _ = now;
        self.listeners.start(&self.cfg, &mut self.actions);
    }

    /// Replaces the forwarded ports, TCP and UDP, with `forwards`, e.g. after
    /// a rescan of `auto` forwarding. Listeners are matched by protocol,
    /// address, interface and port (the first listing of a port wins):
    /// those no longer listed are closed, new ones are opened (`Open`,
    /// `Bind`, `Listen` for TCP, `SetInterest`), a changed target applies to
    /// new connections and flows. Established connections and flows stay.
    /// The list is the complete set: it replaces the configured forwards as
    /// well. Drain the outputs afterwards, like after any input; a listener
    /// that fails then shows in [`Self::failed_forwards`].
    pub fn set_forwards(&mut self, now: Instant, forwards: &[Forward]) {
        let _ = now;
        self.listeners.set(&self.cfg, &mut self.actions, forwards);
    }

    /// The forwarded ports whose listener could not be opened (`Open`,
    /// `Bind` or `Listen` failed, or the address family is disabled) or
    /// failed later, among the current ones, for TCP and UDP alike. Read
    /// after the outputs are drained; a driver can treat an explicit port
    /// listed here at start-up as a fatal error.
    pub fn failed_forwards(&self) -> impl Iterator<Item = ListenFailure> + '_ {
        self.listeners.failures()
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
        self.tcp.batch_begin(now);
        self.spans.clear();
        for i in 0..batch.len() {
            work::tick(1);
            self.counters.frames_in += 1;
            if i >= self.cfg.limits.batch_frames {
                self.counters.drop(DropReason::BatchFull);
                continue;
            }
            let Some(frame) = batch.frame(i) else {
                self.counters.drop(DropReason::BadDescriptor);
                continue;
            };
            if batch.virtio_hdr_len() > 0 {
                match batch.meta(i) {
                    Some(Ok(m)) if m.gso.is_some() => self.counters.gso_frames_in += 1,
                    Some(Ok(_)) => {}
                    Some(Err(reason)) => {
                        self.counters.drop(reason);
                        continue;
                    }
                    None => {
                        self.counters.drop(DropReason::BadDescriptor);
                        continue;
                    }
                }
            }
            let base = frame.as_ptr() as usize - batch.buffer().as_ptr() as usize;
            match tap::parse(frame) {
                Err(reason) => self.counters.drop(reason),
                Ok(parsed) => self.dispatch(now, batch, base, parsed),
            }
        }
        self.flush_sequences(now, batch);
    }

    /// Handles readiness of, or a result from, socket `sock`.
    pub fn handle_sock_event(&mut self, now: Instant, sock: SockId, event: SockEvent) {
        match self.listeners.event(sock, event) {
            Listened::Done => return,
            // No room for new work: the listener (level-triggered) is
            // reported readable again at the next wait.
            Listened::Open(..)
                if event == SockEvent::Readable && !self.actions.admits(ACCEPT_ACTIONS) =>
            {
                return
            }
            Listened::Open(Proto::Udp, slot) => {
                if self
                    .udp_splice
                    .listener_event(&mut splice_cx!(self), now, slot, event)
                {
                    return;
                }
                return self
                    .udp
                    .listener_event(&mut udp_cx!(self, now), slot, event);
            }
            Listened::Open(Proto::Tcp, _) | Listened::NotListener => {}
        }
        if !self
            .udp_splice
            .sock_event(&mut splice_cx!(self), now, sock, event)
            && !self.splice.sock_event(&mut splice_cx!(self), sock, event)
            && !self.udp.sock_event(&mut udp_cx!(self, now), sock, event)
            && !self.tcp_sock_event(now, sock, event)
        {
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
        self.tcp
            .peeked(&mut tcp_cx!(self, now), sock, result, slots)
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
        self.udp.received(&mut udp_cx!(self, now), sock, dgrams)
    }

    /// Reports that of the frames handed out since the previous call (from
    /// [`Self::poll_frame`], [`Self::handle_peeked`] and
    /// [`Self::handle_datagrams`], in order) the first
    /// `accepted` reached the guest link; the core rewinds the flows of the rest
    /// so their data is sent again.
    pub fn handle_tap_sent(&mut self, now: Instant, accepted: usize) {
        self.tcp.tap_sent(&mut tcp_cx!(self, now), accepted);
    }

    /// Runs timers that are due. Calling it early or twice is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.ndp.timer(&mut link_cx!(self), now);
        self.tcp.timeout(&mut tcp_cx!(self, now));
        self.udp.timeout(&mut udp_cx!(self, now));
        self.udp_splice.timeout(&mut splice_cx!(self), now);
        self.listeners.timeout(&mut self.actions, now);
    }

    /// The guest link went away (passt: qemu disconnected). Forgets the guest's
    /// MAC, stops unsolicited router advertisements and discards queued frames,
    /// until the next guest frame arrives.
    pub fn handle_tap_reset(&mut self, now: Instant) {
        self.guest.mac = self.cfg.guest_mac.unwrap_or(Mac::BROADCAST);
        self.guest.seen = false;
        self.ndp.reset();
        let mut sink = [0u8; 0];
        while self.out.pop_into(&mut sink).is_some() {}
        self.tx_state.refused = false;
        self.tcp.tap_reset(&mut tcp_cx!(self, now));
    }

    /// The guest link is up: at start for a tap device or a descriptor
    /// given at start (`--fd`), when a qemu or vhost-user client connects
    /// (again). Asks for the guest's MAC at its assigned addresses (an ARP
    /// request, a neighbour solicitation unless NDP is off), so that a
    /// guest that does not speak first is reachable, e.g. after a restart
    /// of passt under a running guest. Drain the outputs afterwards.
    pub fn handle_tap_connected(&mut self, now: Instant) {
        let _ = now;
        if self.cfg.ip4.is_some() {
            link::arp::probe(&mut link_cx!(self));
        }
        link::ndp::probe(&mut link_cx!(self));
    }

    /// The host's neighbour table changed (pasta and passt follow it on the
    /// template interface, as upstream does): `addr`, as the host sees it,
    /// now has a valid entry with `mac`, or (`None`) none any more (deleted,
    /// incomplete or failed). Also the way to load the table at start, one
    /// call per entry of a dump. The guest is then given that MAC for
    /// `addr` (ARP replies, neighbour advertisements, the source of frames
    /// from it); an address that enters the table is announced to a guest
    /// that has spoken already. Addresses that do not qualify (the guest's,
    /// the mapped ones, see `neigh.rs`) are ignored and counted, as is a new
    /// address when the table ([`crate::NEIGH_CAPACITY`]) is full. Drain the
    /// outputs afterwards.
    pub fn handle_neighbour(&mut self, now: Instant, addr: IpAddr, mac: Option<Mac>) {
        let _ = now;
        let Some(a) = self.neigh.update(&self.cfg, &self.guest, addr, mac) else {
            return;
        };
        if !self.guest.seen {
            return;
        }
        let queued = match a.addr {
            IpAddr::V4(ip) => link::arp::announce(&mut link_cx!(self), ip, a.mac),
            IpAddr::V6(ip) => link::ndp::announce(&mut link_cx!(self), ip),
        };
        if queued {
            self.neigh.stats.announced += 1;
        }
    }

    /// The guest link has room again (a tap or socket writable, receive
    /// buffers added): the queued frames go out and the flows that waited
    /// for room ask for their data again. Calling it when nothing waits is
    /// harmless. Counts as an input: drain the outputs afterwards.
    pub fn handle_tap_writable(&mut self, now: Instant) {
        self.tx_state.refused = false;
        self.tcp_link_ready(now);
    }

    // --- the guest link's transmit ring (see `txring.rs`) -------------------

    /// Sends what `ring` holds and reports it with
    /// [`Core::handle_tap_sent`]. Returns the frames the link took.
    pub fn flush_ring<R: TxRing + ?Sized>(&mut self, now: Instant, ring: &mut R) -> usize {
        self.transmit(now, ring).flush()
    }

    /// Moves the frames the core queued ([`Core::poll_frame`]) into `ring`,
    /// flushing it when it is full. Frames the link has no room for stay
    /// queued, and [`Core::tap_blocked`] says so until
    /// [`Core::handle_tap_writable`]. Returns whether any frame moved.
    pub fn transmit_queued<R: TxRing + ?Sized>(&mut self, now: Instant, ring: &mut R) -> bool {
        self.transmit(now, ring).queued()
    }

    /// Carries out an [`Action::Peek`] through `ring`: the queued frames go
    /// in first; then slots are reserved for the payload, `read` peeks into
    /// their payload areas (one area per slot, `read(skip, areas)`), the
    /// core writes the frames around it ([`Core::handle_peeked`]) and they
    /// are committed. A link with no room leaves the data in the socket
    /// until [`Core::handle_tap_writable`].
    pub fn peek_into<R, F>(
        &mut self,
        now: Instant,
        ring: &mut R,
        sock: SockId,
        p: PeekRequest,
        read: F,
    ) where
        R: TxRing + ?Sized,
        F: FnOnce(u32, &mut [IoSliceMut<'_>]) -> Result<usize, Errno>,
    {
        self.transmit(now, ring).peek(sock, p, read);
    }

    /// Carries out an [`Action::Recv`] through `ring`: the queued frames go
    /// in first; then up to `r.max` slots are reserved, `read` receives
    /// datagrams into them (payload at `buf[r.room..]`, one `(length, peer)`
    /// pushed to `got` per datagram, in slot order), the core writes the
    /// frames ([`Core::handle_datagrams`]), a frame that starts past its
    /// slot's front is moved there, and they are committed. An error of
    /// `read` other than `EAGAIN`/`EINTR` is reported as
    /// [`SockEvent::Error`] afterwards. With no room on the link, the
    /// datagrams are read into empty buffers and counted in
    /// [`Counters::link_full_dropped`], so that the socket does not stay
    /// readable while the link is full ([`Core::tap_blocked`]).
    pub fn recv_into<R, F>(
        &mut self,
        now: Instant,
        ring: &mut R,
        sock: SockId,
        r: RecvRequest,
        got: &mut Vec<(usize, SocketAddr)>,
        read: F,
    ) where
        R: TxRing + ?Sized,
        F: FnOnce(&mut [&mut [u8]], usize, &mut Vec<(usize, SocketAddr)>) -> Result<(), Errno>,
    {
        self.transmit(now, ring).recv(sock, r, got, read);
    }

    /// Whether the link refused frames or had no room since the last
    /// [`Core::handle_tap_writable`]: the driver should call it when the
    /// link has room again.
    pub fn tap_blocked(&self) -> bool {
        self.tx_state.refused || self.tcp_waiting_for_link()
    }

    fn transmit<'a, R: TxRing + ?Sized>(
        &'a mut self,
        now: Instant,
        ring: &'a mut R,
    ) -> Transmit<'a, Self, R> {
        Transmit {
            core: self,
            ring,
            now,
        }
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
                    return Some(crate::wire::headers::pad_frame(buf, n));
                }
                Err(_) => self.counters.drop(DropReason::OutFrameTooLarge),
            }
        }
    }

    /// The next socket action for the driver.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.listeners.waiting() {
            self.listeners.pump(&mut self.actions);
        }
        self.actions.pop()
    }

    /// When [`Self::handle_timeout`] should be called next, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        earliest(
            earliest(self.ndp.poll_timeout(), self.tcp.poll_timeout()),
            earliest(
                earliest(self.udp.poll_timeout(), self.listeners.poll_timeout()),
                self.udp_splice.poll_timeout(),
            ),
        )
    }

    /// The spans of a `Send`/`SendDatagrams` action, valid until the next input.
    pub fn spans(&self, list: SpanList) -> &[Span] {
        let start = list.start as usize;
        let end = start.saturating_add(list.count as usize);
        self.spans.get(start..end).unwrap_or(&[])
    }

    // --- internals ----------------------------------------------------------

    fn dispatch(&mut self, now: Instant, batch: &FrameBatch<'_>, base: usize, p: Parsed<'_>) {
        let eth = match &p {
            Parsed::Arp(e, _) | Parsed::Ip(e, ..) => *e,
        };
        self.learn_mac(now, &eth);
        match p {
            Parsed::Arp(_, arp) => {
                if self.cfg.ip4.is_none() {
                    return self.counters.drop(DropReason::Ipv4Disabled);
                }
                link::arp::input(&mut link_cx!(self), arp);
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
                self.guest.learn_addr(ip.src);
                if tap::is_icmp(&ip) {
                    return self.icmp_input(now, &ip, l4, base + l4_off);
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
                            return link::dhcp::input(&mut link_cx!(self), payload)
                        }
                        (IpAddr::V6(d), 547) if d.is_multicast() => {
                            return link::dhcpv6::input(&mut link_cx!(self), &eth, &ip, payload)
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
                    hop_limit: ip.hop_limit,
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
        if self.guest.learn_mac(eth.src) {
            self.ndp.guest_seen(&mut link_cx!(self), now);
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
        if !self.actions.admits(SEQUENCE_ACTIONS) {
            // The guest sends TCP segments again; datagrams are lost.
            for _ in seq {
                self.counters.drop(DropReason::ActionQueueFull);
            }
            return;
        }
        if seq.first().is_some_and(|p| p.key.proto == PROTO_TCP) {
            return self.tcp.sequence(&mut tcp_cx!(self, now), batch, seq);
        }
        self.udp.sequence(&mut udp_cx!(self, now), batch, seq);
    }

    fn icmp_input(&mut self, now: Instant, ip: &IpHdr, l4: &[u8], l4_off: usize) {
        if !self.cfg.features.icmp {
            return self.counters.drop(DropReason::ProtocolDisabled);
        }
        if ip.proto == PROTO_ICMPV6 {
            if let Some(&t) = l4.first() {
                if (133..=137).contains(&t) {
                    if !self.cfg.features.ndp {
                        return self.counters.drop(DropReason::ServiceIgnored);
                    }
                    return self.ndp.input(&mut link_cx!(self), ip, l4);
                }
            }
        }
        self.udp.echo_input(&mut udp_cx!(self, now), ip, l4, l4_off);
    }

    /// The header room of datagrams received on `sock` (see
    /// [`udp::recv_room`]).
    #[cfg(test)]
    pub(crate) fn recv_room(&mut self, sock: SockId) -> usize {
        udp::datagram_room(&self.listeners, &self.flows, sock)
    }

    /// A connection accepted on TCP listener `listener` (flow `id`, socket
    /// `sock`): `false` if it takes the guest link, otherwise splicing took
    /// it (see [`SpliceState::accepted`]).
    pub(crate) fn splice_accepted(
        &mut self,
        id: crate::flow::FlowId,
        sock: SockId,
        listener: u32,
        target_port: u16,
        peer: core::net::SocketAddr,
        local: core::net::SocketAddr,
    ) -> bool {
        self.splice.accepted(
            &mut splice_cx!(self),
            (id, sock),
            listener,
            target_port,
            (peer, local),
        )
    }

    // --- TCP dispatch -----------------------------------------------------------

    /// A socket event for TCP: an accepted connection goes to splicing
    /// first, which may take it off the guest link; everything else to TCP.
    fn tcp_sock_event(&mut self, now: Instant, sock: SockId, event: SockEvent) -> bool {
        if let SockEvent::Accepted(Ok((peer, local))) = event {
            if let Some((id, listener, target_port)) = self.tcp.accepting(&self.flows, sock) {
                if self.splice_accepted(id, sock, listener, target_port, peer, local) {
                    self.tcp.handed_over(&self.flows, id);
                    return true;
                }
            }
        }
        self.tcp.sock_event(&mut tcp_cx!(self, now), sock, event)
    }

    /// The guest link had no room for the frames of `sock`'s pending peek.
    pub(crate) fn tcp_link_full(&mut self, now: Instant, sock: SockId) {
        self.tcp.link_full(&mut tcp_cx!(self, now), sock);
    }

    /// The guest link has room again: connections waiting for it peek.
    pub(crate) fn tcp_link_ready(&mut self, now: Instant) {
        self.tcp.link_ready(&mut tcp_cx!(self, now));
    }

    /// Whether a connection waits for room on the guest link.
    pub(crate) fn tcp_waiting_for_link(&self) -> bool {
        self.tcp.waiting_for_link()
    }
}

/// The UDP payload of a length-checked datagram (see `tap::l4_ports`).
fn udp_payload(l4: &[u8]) -> &[u8] {
    let len = be16(l4, 4).map_or(0, usize::from);
    l4.get(UDP_HLEN..len).unwrap_or(&[])
}

/// The transmit path's view of the core (see `txring.rs`).
impl TxCore for Core {
    fn tx_state(&mut self) -> &mut TxState {
        &mut self.tx_state
    }

    fn queued_len(&self) -> Option<usize> {
        self.out.front_len()
    }

    fn poll_frame(&mut self, buf: &mut [u8]) -> Option<usize> {
        Core::poll_frame(self, buf)
    }

    fn tap_sent(&mut self, now: Instant, accepted: usize) {
        self.handle_tap_sent(now, accepted);
    }

    fn outcome(&mut self, now: Instant, sock: SockId, what: Outcome<'_, '_>) {
        match what {
            Outcome::Peeked(result, slots) => {
                self.handle_peeked(now, sock, result, slots);
            }
            Outcome::Datagrams(dgrams) => {
                self.handle_datagrams(now, sock, dgrams);
            }
            Outcome::Error(e) => self.handle_sock_event(now, sock, SockEvent::Error(e)),
            Outcome::LinkFull => self.tcp_link_full(now, sock),
        }
    }

    fn dropped_for_room(&mut self, n: usize) {
        self.counters.link_full_dropped += n as u64;
    }
}
