//! UDP translation, and what it shares with ICMP echo: datagram flows.
//!
//! A UDP flow is a pseudo-connection keyed by the guest-side 4-tuple in the
//! shared flow table. Each flow has its own host socket, bound to the guest's
//! source port (the port is kept) and connected to the mapped destination:
//!
//! * guest → host: a flow's datagrams of one batch leave with one
//!   `Action::SendDatagrams` over spans of the batch buffer (`sendmmsg`, no
//!   copy);
//! * host → guest: a readable socket gets an `Action::Recv`; the driver
//!   receives a batch of datagrams (`recvmmsg`) straight into transmit slots
//!   and hands them to [`Core::handle_datagrams`], which writes Ethernet, IP
//!   and UDP headers in front of each payload (one copy, kernel → slot).
//!
//! Forwarded ports (`-u`) have listening sockets; a datagram from a new host
//! peer creates a flow whose own socket is bound to the listener's address
//! and port (`SO_REUSEADDR`) and connected to the peer, so replies keep
//! working when the listener goes away. Flows expire after 180 s without
//! traffic either way ([`UDP_TIMEOUT`]), echo flows after 60 s without a
//! request from the guest (see `icmp.rs`).

#[cfg(test)]
mod tests;

use crate::action::{
    Action, BindOpts, Errno, Family, Interest, Netns, RxDatagram, SockEvent, SockId, SockKind,
    SockOpt, Span, SpanList, DATAGRAM_ROOM,
};
use crate::counters::DropReason;
use crate::engine::Core;
use crate::flow::{self, FlowData, FlowId, SockRef, LISTENER_BIT};
use crate::fwd::FwdMode;
use crate::nat;
use crate::tap::{FlowKey, FrameBatch, L4Packet};
use crate::time::{earliest, Instant};
use crate::wire::be16;
use crate::wire::headers::{finish_udp_frame, l4_offset, PROTO_UDP, UDP_HLEN};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;
use std::collections::BTreeMap;

/// Idle time after which a UDP flow ends (upstream's `UDP_CONN_TIMEOUT`).
pub(crate) const UDP_TIMEOUT: Duration = Duration::from_secs(180);
/// Most datagrams asked for with one `Action::Recv` (upstream's
/// `UDP_MAX_FRAMES`).
pub(crate) const RECV_BATCH: u16 = 32;
/// Bit of a listener index (with [`LISTENER_BIT`]) marking UDP listeners.
/// TCP listeners use small indices, and `0x7fffffff` (which has this bit)
/// is TCP's id for refused connections.
pub(crate) const UDP_LISTENER_BIT: u32 = 1 << 30;
const UDP_LISTENER_MAX: u32 = UDP_LISTENER_BIT - 2;

/// State of one datagram flow (UDP or echo).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DgramFlow {
    /// The flow's socket.
    pub(crate) sock: SockId,
    /// Whether the driver holds a socket under `sock`.
    pub(crate) sock_open: bool,
    /// The host-side peer: datagrams go there, replies come from there.
    pub(crate) host: SocketAddr,
    /// Last traffic that keeps the flow alive.
    pub(crate) t_active: Instant,
    /// Datagrams in the last `SendDatagrams`.
    pub(crate) last_send: u32,
    /// The destination is a multicast or broadcast group: the socket is not
    /// connected, and answers from each unicast peer get flows of their own.
    pub(crate) group: bool,
}

/// A UDP port forwarded from the host to the guest (`-u`): a listener
/// (see [`Core::set_udp_forwards`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpForward {
    /// Address to bind; `None` listens on every address of both families
    /// (one dual-stack socket, or IPv4 only if IPv6 is disabled).
    pub addr: Option<IpAddr>,
    /// Port to listen on.
    pub port: u16,
    /// Port the guest receives datagrams on.
    pub target_port: u16,
}

/// A listening socket of a forwarded port (`-u`).
#[derive(Clone, Copy, Debug)]
struct UdpListener {
    /// The slot holds a forward (a free slot is reused by the next one).
    used: bool,
    /// Address as forwarded (`None`: every address).
    spec: Option<IpAddr>,
    /// Bound address and port.
    addr: SocketAddr,
    family: Family,
    v6_only: bool,
    /// Port the guest receives datagrams on.
    target_port: u16,
    /// Interface index to bind to (`%IFNAME`), for the listener and the
    /// per-peer sockets bound like it.
    device: Option<u32>,
    open: bool,
}

/// What UDP and ICMP echo translation did, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// UDP flows created (both directions).
    pub udp_opened: u64,
    /// Echo flows created.
    pub ping_opened: u64,
    /// Datagram flows ended, for any reason.
    pub closed: u64,
    /// Datagram flows ended by their timer.
    pub timeouts: u64,
    /// Datagrams (and echo requests) handed to sockets.
    pub to_host: u64,
    /// Datagrams (and echo replies) framed for the guest.
    pub to_guest: u64,
    /// Errors reported on datagram sockets (error queue, failed sends).
    pub sock_errors: u64,
}

/// UDP and echo state outside the flow table.
#[derive(Debug)]
pub(crate) struct UdpState {
    started: bool,
    listeners: Vec<UdpListener>,
    /// Lower bound of every datagram flow's deadline.
    next_timer: Option<Instant>,
    /// Datagram sockets the driver holds for us (flows and listeners).
    pub(crate) open_socks: usize,
    /// The warning about refused ping sockets was logged.
    pub(crate) ping_warned: bool,
    pub(crate) stats: UdpStats,
}

impl UdpState {
    pub(crate) fn new() -> Self {
        UdpState {
            started: false,
            listeners: Vec::new(),
            next_timer: None,
            open_socks: 0,
            ping_warned: false,
            stats: UdpStats::default(),
        }
    }
}

pub(crate) fn family(a: IpAddr) -> Family {
    if a.is_ipv6() {
        Family::V6
    } else {
        Family::V4
    }
}

/// The unspecified address of `f`.
pub(crate) fn any_addr(f: Family) -> IpAddr {
    match f {
        Family::V4 => Ipv4Addr::UNSPECIFIED.into(),
        Family::V6 => Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// Whether two socket addresses name the same peer (IPv4-mapped IPv6
/// addresses equal their IPv4 form).
pub(crate) fn same_peer(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// Errors on a datagram socket that end its flow: anything but the
/// transient or ICMP-reported ones.
pub(crate) fn fatal(e: Errno) -> bool {
    ![
        Errno::EAGAIN,
        Errno::EINTR,
        Errno::ENOBUFS,
        Errno::EMSGSIZE,
        Errno::ECONNREFUSED,
        Errno::EHOSTUNREACH,
        Errno::ENETUNREACH,
        Errno::ETIMEDOUT,
        Errno::EPROTO,
        Errno::EACCES,
        Errno::EPERM,
    ]
    .contains(&e)
}

const READABLE: Interest = Interest {
    readable: true,
    writable: false,
    read_hangup: false,
    edge: false,
};

impl Core {
    // --- flows (shared with ICMP echo) ---------------------------------------

    pub(crate) fn dgram(&mut self, id: FlowId) -> Option<&mut DgramFlow> {
        match &mut self.flows.get_mut(id)?.data {
            FlowData::Udp(d) | FlowData::Ping(d) => Some(d),
            _ => None,
        }
    }

    /// The live datagram flow of socket `sock`.
    pub(crate) fn dgram_flow_of(&self, sock: SockId) -> Option<FlowId> {
        let SockRef::Flow { id, gen, side: 0 } = flow::decode(sock) else {
            return None;
        };
        let f = self.flows.get(id)?;
        match &f.data {
            FlowData::Udp(d) | FlowData::Ping(d) if f.gen == gen && d.sock == sock => Some(id),
            _ => None,
        }
    }

    /// Deadline of a datagram flow.
    fn dgram_deadline(&self, id: FlowId) -> Option<Instant> {
        match &self.flows.get(id)?.data {
            FlowData::Udp(d) => Some(d.t_active.saturating_add(UDP_TIMEOUT)),
            FlowData::Ping(d) => Some(d.t_active.saturating_add(crate::icmp::ECHO_TIMEOUT)),
            _ => None,
        }
    }

    /// Notes that the deadline of `id` may have moved earlier.
    pub(crate) fn dgram_note_timer(&mut self, id: FlowId) {
        let d = self.dgram_deadline(id);
        self.udp.next_timer = earliest(self.udp.next_timer, d);
    }

    /// Takes a flow entry for `key` with a socket id, or says why not (the
    /// caller counts the drop).
    pub(crate) fn dgram_alloc(
        &mut self,
        now: Instant,
        key: FlowKey,
        host: SocketAddr,
        ping: bool,
    ) -> Result<(FlowId, SockId), DropReason> {
        let d = DgramFlow {
            sock: SockId(0),
            sock_open: true,
            host,
            t_active: now,
            last_send: 0,
            group: false,
        };
        let data = if ping {
            FlowData::Ping(d)
        } else {
            FlowData::Udp(d)
        };
        let Some(id) = self.flows.alloc(data) else {
            return Err(DropReason::FlowTableFull);
        };
        if !self.flows.insert_key(id, key) {
            self.flows.free(id);
            return Err(DropReason::DgramBadEndpoint);
        }
        let gen = self.flows.get(id).map_or(0, |f| f.gen);
        let sock = flow::sock_id(id, gen, 0);
        if let Some(d) = self.dgram(id) {
            d.sock = sock;
        }
        self.udp.open_socks += 1;
        self.dgram_note_timer(id);
        Ok((id, sock))
    }

    /// Ends datagram flow `id`: closes its socket and frees the entry.
    pub(crate) fn dgram_close(&mut self, id: FlowId) {
        let Some(d) = self.dgram(id).copied() else {
            return;
        };
        if d.sock_open {
            self.actions.push_back(Action::Close { sock: d.sock });
            self.udp.open_socks = self.udp.open_socks.saturating_sub(1);
        }
        log::debug!("datagram flow {}: closed", id.0);
        self.flows.free(id);
        self.udp.stats.closed += 1;
    }

    /// Queues one `SendDatagrams` for the spans from `start` on.
    fn dgram_send(&mut self, now: Instant, id: FlowId, start: usize, refresh: bool) {
        let count = self.spans.len().saturating_sub(start) as u32;
        let Some(d) = self.dgram(id) else { return };
        if count == 0 {
            return;
        }
        d.last_send = count;
        if refresh {
            d.t_active = now;
        }
        let (sock, to) = (d.sock, d.group.then_some(d.host));
        self.udp.stats.to_host += u64::from(count);
        self.actions.push_back(Action::SendDatagrams {
            sock,
            spans: SpanList {
                start: start as u32,
                count,
            },
            to,
        });
    }

    // --- start ------------------------------------------------------------------

    /// Opens the listeners of `Config::fwd.udp_in` (explicit lists and
    /// `all`), once.
    pub(crate) fn udp_start(&mut self, _now: Instant) {
        if self.udp.started {
            return;
        }
        self.udp.started = true;
        if !self.cfg.features.udp {
            return;
        }
        let table = &self.cfg.fwd.udp_in;
        if !matches!(table.mode(), FwdMode::Spec | FwdMode::All) {
            return;
        }
        let mut all = Vec::new();
        for r in table.rules() {
            if let (Some(name), None) = (&r.ifname, r.ifindex) {
                log::warn!("UDP forwarding: interface {name} not resolved, not bound to it");
            }
            for port in r.first..=r.last {
                if let (true, Some(target)) = (table.is_forwarded(port), table.target(port)) {
                    all.push((r.addr, port, target, r.ifindex));
                }
            }
        }
        self.udp.listeners.reserve_exact(all.len());
        for (addr, port, target_port, device) in all {
            let f = UdpForward {
                addr,
                port,
                target_port,
            };
            if !self.udp_listener_add(f, device, None) {
                break;
            }
        }
    }

    /// Replaces the forwarded ports with `forwards` (first listing of an
    /// address and port wins): listeners not listed are closed, new ones
    /// opened, kept ones take the listed target port. Flows stay.
    pub(crate) fn udp_set_forwards(&mut self, now: Instant, forwards: &[UdpForward]) {
        self.udp_start(now);
        if !self.cfg.features.udp {
            return;
        }
        // (A BTreeMap: no hasher seeded from OS randomness in the core.)
        let mut wanted: BTreeMap<(Option<IpAddr>, u16), u16> = BTreeMap::new();
        for f in forwards {
            wanted.entry((f.addr, f.port)).or_insert(f.target_port);
        }
        let mut free = Vec::new();
        for (i, l) in self.udp.listeners.iter_mut().enumerate() {
            if !l.used {
                free.push(i);
                continue;
            }
            if let Some(target) = wanted.remove(&(l.spec, l.addr.port())) {
                l.target_port = target;
                continue;
            }
            l.used = false;
            free.push(i);
            if l.open {
                l.open = false;
                self.udp.open_socks = self.udp.open_socks.saturating_sub(1);
                self.actions.push_back(Action::Close {
                    sock: SockId(LISTENER_BIT | UDP_LISTENER_BIT | i as u32),
                });
            }
        }
        // Lowest free slots first.
        free.reverse();
        for f in forwards {
            if let Some(target_port) = wanted.remove(&(f.addr, f.port)) {
                let f = UdpForward { target_port, ..*f };
                if !self.udp_listener_add(f, None, free.pop()) {
                    break;
                }
            }
        }
    }

    /// Opens a listener for `f` (bound to interface `device` if given) in
    /// slot `slot` (a free one; `None`: a new one). False if no slot is
    /// left; a forward of a disabled address family is skipped.
    fn udp_listener_add(
        &mut self,
        f: UdpForward,
        device: Option<u32>,
        slot: Option<usize>,
    ) -> bool {
        let bind = match f.addr {
            None if self.cfg.ip6.is_some() => Some((Family::V6, any_addr(Family::V6), false)),
            None if self.cfg.ip4.is_some() => Some((Family::V4, any_addr(Family::V4), false)),
            Some(a @ IpAddr::V4(_)) if self.cfg.ip4.is_some() => Some((Family::V4, a, false)),
            Some(a @ IpAddr::V6(_)) if self.cfg.ip6.is_some() => Some((Family::V6, a, true)),
            _ => None,
        };
        let Some((family, ip, v6_only)) = bind else {
            return true;
        };
        let l = UdpListener {
            used: true,
            spec: f.addr,
            addr: SocketAddr::new(ip, f.port),
            family,
            v6_only,
            target_port: f.target_port,
            device,
            open: true,
        };
        let idx = match slot.and_then(|i| self.udp.listeners.get_mut(i).map(|s| (i, s))) {
            Some((i, s)) => {
                *s = l;
                i
            }
            None => {
                if self.udp.listeners.len() > UDP_LISTENER_MAX as usize {
                    return false;
                }
                self.udp.listeners.push(l);
                self.udp.listeners.len() - 1
            }
        };
        let sock = SockId(LISTENER_BIT | UDP_LISTENER_BIT | idx as u32);
        self.udp.open_socks += 1;
        self.actions.push_back(Action::Open {
            sock,
            kind: SockKind::Udp,
            family,
            netns: Netns::Host,
        });
        self.actions.push_back(Action::Bind {
            sock,
            addr: l.addr,
            opts: BindOpts {
                reuse_addr: true,
                v6_only,
                device,
                ..BindOpts::default()
            },
        });
        self.actions.push_back(Action::SetInterest {
            sock,
            interest: READABLE,
        });
        true
    }

    // --- guest side ---------------------------------------------------------------

    /// One flow's UDP datagrams from a batch, in order: one `SendDatagrams`.
    pub(crate) fn udp_sequence(&mut self, now: Instant, batch: &FrameBatch<'_>, seq: &[L4Packet]) {
        let Some(first) = seq.first() else { return };
        let key = first.key;
        let id = match self.flows.lookup(&key) {
            Some(id) if matches!(self.flows.get(id).map(|f| &f.data), Some(FlowData::Udp(_))) => {
                Ok(id)
            }
            Some(_) => Err(DropReason::DgramBadEndpoint),
            None => self.udp_flow_from_guest(now, &key),
        };
        let id = match id {
            Ok(id) => id,
            Err(reason) => {
                for _ in seq {
                    self.counters.drop(reason);
                }
                return;
            }
        };
        let start = self.spans.len();
        let buf = batch.buffer();
        for p in seq {
            let off = p.l4_off as usize;
            let len = buf
                .get(off..off.saturating_add(p.l4_len as usize))
                .and_then(|l4| {
                    be16(l4, 4)
                        .map(usize::from)
                        .filter(|&n| n >= UDP_HLEN && n <= l4.len())
                });
            match len {
                Some(n) => self.spans.push(Span {
                    offset: (off + UDP_HLEN) as u32,
                    len: (n - UDP_HLEN) as u32,
                }),
                None => self.counters.drop(DropReason::L4Truncated),
            }
        }
        self.dgram_send(now, id, start, true);
    }

    /// A new flow for a datagram from the guest: a socket bound to the
    /// guest's source port and connected to the mapped destination.
    fn udp_flow_from_guest(&mut self, now: Instant, key: &FlowKey) -> Result<FlowId, DropReason> {
        let host_ip = nat::from_tap(&self.cfg, PROTO_UDP, key.src, key.sport, key.dst, key.dport)
            .ok_or(DropReason::DgramBadEndpoint)?;
        let host = SocketAddr::new(host_ip, key.dport);
        let (id, sock) = self.dgram_alloc(now, *key, host, false)?;
        let group = nat::is_group(host_ip) || self.is_broadcast(host_ip);
        if let Some(d) = self.dgram(id) {
            d.group = group;
        }
        let fam = family(host_ip);
        self.actions.push_back(Action::Open {
            sock,
            kind: SockKind::Udp,
            family: fam,
            netns: Netns::Host,
        });
        if self.is_broadcast(host_ip) {
            self.actions.push_back(Action::SetOption {
                sock,
                opt: SockOpt::Broadcast(true),
            });
        }
        // SO_REUSEADDR: the guest may use one source port with many peers;
        // each flow's socket is connected, so the kernel tells them apart.
        self.actions.push_back(Action::Bind {
            sock,
            addr: SocketAddr::new(any_addr(fam), key.sport),
            opts: BindOpts {
                reuse_addr: true,
                v6_only: fam == Family::V6,
                ..BindOpts::default()
            },
        });
        if !group {
            self.actions.push_back(Action::Connect { sock, addr: host });
        }
        self.actions.push_back(Action::SetInterest {
            sock,
            interest: READABLE,
        });
        self.udp.stats.udp_opened += 1;
        log::debug!(
            "udp flow {}: guest {}:{} -> {} (as {}:{})",
            id.0,
            key.src,
            key.sport,
            host,
            key.dst,
            key.dport
        );
        Ok(id)
    }

    /// Whether `a` is the limited broadcast address or the directed
    /// broadcast address of the guest's subnet.
    fn is_broadcast(&self, a: IpAddr) -> bool {
        let IpAddr::V4(a) = a else { return false };
        if a.is_broadcast() {
            return true;
        }
        self.cfg.ip4.as_ref().is_some_and(|c| {
            c.prefix_len < 31 && c.on_link(a) && u32::from(a) | u32::from(c.netmask()) == u32::MAX
        })
    }

    // --- socket side --------------------------------------------------------------

    /// Readiness of, or a result for, a datagram socket. Returns whether the
    /// id was one of ours.
    pub(crate) fn udp_sock_event(&mut self, now: Instant, sock: SockId, ev: SockEvent) -> bool {
        if let SockRef::Other(idx) = flow::decode(sock) {
            if idx & UDP_LISTENER_BIT == 0 || idx & !UDP_LISTENER_BIT > UDP_LISTENER_MAX {
                return false;
            }
            self.udp_listener_event(idx & !UDP_LISTENER_BIT, ev);
            return true;
        }
        let Some(id) = self.dgram_flow_of(sock) else {
            return false;
        };
        let ping = matches!(self.flows.get(id).map(|f| &f.data), Some(FlowData::Ping(_)));
        let Some(d) = self.dgram(id) else {
            return false;
        };
        match ev {
            SockEvent::OpenFailed(e) => {
                d.sock_open = false;
                // The datagrams queued for it are lost (a flow from a
                // listener has none: its first datagram went to the guest).
                let lost = d.last_send;
                self.udp.open_socks = self.udp.open_socks.saturating_sub(1);
                if ping {
                    self.ping_refused(e);
                } else {
                    log::debug!("udp flow {}: socket failed: {e:?}", id.0);
                }
                for _ in 0..lost {
                    self.counters.drop(DropReason::DgramSocketFailed);
                }
                self.dgram_close(id);
            }
            SockEvent::Connected(Err(e)) => {
                log::debug!("datagram flow {}: connect failed: {e:?}", id.0);
                self.dgram_close(id);
            }
            SockEvent::Sent(r) => {
                let want = core::mem::take(&mut d.last_send);
                let n = match r {
                    Ok(n) => n.min(want as usize) as u32,
                    Err(_) => 0,
                };
                for _ in n..want {
                    self.counters.drop(DropReason::DgramSocketFailed);
                }
                if let Err(e) = r {
                    self.udp.stats.sock_errors += 1;
                    if fatal(e) {
                        self.dgram_close(id);
                    }
                }
            }
            SockEvent::Readable => {
                let room = self.recv_room(sock) as u16;
                self.actions.push_back(Action::Recv {
                    sock,
                    max: RECV_BATCH,
                    room,
                });
            }
            SockEvent::Error(e) => {
                self.udp.stats.sock_errors += 1;
                log::debug!("datagram flow {}: socket error {e:?}", id.0);
                if fatal(e) {
                    self.dgram_close(id);
                }
            }
            SockEvent::HangUp => self.dgram_close(id),
            _ => {}
        }
        let _ = now;
        true
    }

    fn udp_listener_event(&mut self, idx: u32, ev: SockEvent) {
        let sock = SockId(LISTENER_BIT | UDP_LISTENER_BIT | idx);
        let room = self.recv_room(sock) as u16;
        let Some(l) = self.udp.listeners.get_mut(idx as usize) else {
            return;
        };
        if !l.open {
            return;
        }
        match ev {
            SockEvent::Readable => self.actions.push_back(Action::Recv {
                sock,
                max: RECV_BATCH,
                room,
            }),
            SockEvent::OpenFailed(e) => {
                log::warn!("UDP listener on {}: {e:?}", l.addr);
                l.open = false;
                self.udp.open_socks = self.udp.open_socks.saturating_sub(1);
            }
            SockEvent::Error(e) | SockEvent::Sent(Err(e)) => {
                self.udp.stats.sock_errors += 1;
                if fatal(e) {
                    log::warn!("UDP listener on {}: {e:?}, closed", l.addr);
                    l.open = false;
                    self.udp.open_socks = self.udp.open_socks.saturating_sub(1);
                    self.actions.push_back(Action::Close { sock });
                }
            }
            SockEvent::HangUp => {
                l.open = false;
                self.udp.open_socks = self.udp.open_socks.saturating_sub(1);
                self.actions.push_back(Action::Close { sock });
            }
            _ => {}
        }
    }

    /// Header room asked for in front of datagrams received on `sock`: the
    /// exact headers of the frames its datagrams become, so that frames
    /// start at the beginning of the driver's buffer. Dual-stack listeners,
    /// whose peers may be of either family, get the IPv4 room, so that the
    /// largest IPv4 datagrams fit the driver's buffer with their headers;
    /// the payload of an IPv6 peer is then moved up by the difference
    /// (see `udp_frame`), which only a flow's first datagrams take.
    pub(crate) fn recv_room(&self, sock: SockId) -> usize {
        if let SockRef::Other(idx) = flow::decode(sock) {
            let l = self.udp.listeners.get((idx & !UDP_LISTENER_BIT) as usize);
            return match l.map(|l| (l.family, l.v6_only)) {
                Some((Family::V4, _) | (Family::V6, false)) => l4_offset(false) + UDP_HLEN,
                _ => usize::from(DATAGRAM_ROOM),
            };
        }
        let Some(f) = self.dgram_flow_of(sock).and_then(|id| self.flows.get(id)) else {
            return usize::from(DATAGRAM_ROOM);
        };
        let v6 = f.key.src.is_ipv6();
        match f.data {
            FlowData::Ping(_) => l4_offset(v6),
            _ => l4_offset(v6) + UDP_HLEN,
        }
    }

    /// Datagrams received on socket `sock` (see [`Core::handle_datagrams`]).
    pub(crate) fn dgram_received(
        &mut self,
        now: Instant,
        sock: SockId,
        dgrams: &mut [RxDatagram<'_>],
    ) -> usize {
        for d in dgrams.iter_mut() {
            d.frame_start = 0;
            d.frame_len = 0;
        }
        if let SockRef::Other(idx) = flow::decode(sock) {
            if idx & UDP_LISTENER_BIT == 0 {
                return 0;
            }
            return self.udp_listener_received(now, idx & !UDP_LISTENER_BIT, dgrams);
        }
        let room = self.recv_room(sock);
        let Some(id) = self.dgram_flow_of(sock) else {
            return 0;
        };
        let Some(f) = self.flows.get(id) else {
            return 0;
        };
        let key = f.key;
        let (ping, flow) = match &f.data {
            FlowData::Udp(d) => (false, *d),
            FlowData::Ping(d) => (true, *d),
            _ => return 0,
        };
        if flow.group {
            return self.udp_group_received(now, &key, dgrams, room);
        }
        let mut frames = 0;
        for d in dgrams.iter_mut() {
            let ok = if ping {
                d.peer.ip().to_canonical() == flow.host.ip().to_canonical()
                    && self.ping_frame(&key, d, room)
            } else {
                same_peer(d.peer, flow.host) && self.udp_frame(&key, d, room)
            };
            if ok {
                frames += 1;
            }
        }
        if frames > 0 && !ping {
            if let Some(d) = self.dgram(id) {
                d.t_active = now;
            }
        }
        self.udp.stats.to_guest += frames as u64;
        self.counters.frames_out += frames as u64;
        frames
    }

    /// Answers to a datagram the guest sent to a group (flow `key`): each
    /// goes to the flow of its peer, created if new, with a socket bound to
    /// the guest's port and connected to the peer, so that the guest can
    /// answer it.
    fn udp_group_received(
        &mut self,
        now: Instant,
        key: &FlowKey,
        dgrams: &mut [RxDatagram<'_>],
        room: usize,
    ) -> usize {
        self.udp_frames_by_peer(now, dgrams, room, |c, peer| {
            c.udp_flow_to_peer(now, key, peer)
        })
    }

    /// Turns each datagram into a frame to the guest on the flow `flow_of`
    /// finds (or creates) for its peer; counts the drops. Returns the frames
    /// made ready.
    fn udp_frames_by_peer(
        &mut self,
        now: Instant,
        dgrams: &mut [RxDatagram<'_>],
        room: usize,
        mut flow_of: impl FnMut(&mut Self, SocketAddr) -> Result<FlowId, DropReason>,
    ) -> usize {
        let mut frames = 0;
        for d in dgrams.iter_mut() {
            let id = match flow_of(self, d.peer) {
                Ok(id) => id,
                Err(reason) => {
                    self.counters.drop(reason);
                    continue;
                }
            };
            let Some(k) = self.flows.get(id).map(|f| f.key) else {
                continue;
            };
            if self.udp_frame(&k, d, room) {
                frames += 1;
                if let Some(f) = self.dgram(id) {
                    f.t_active = now;
                }
            }
        }
        self.udp.stats.to_guest += frames as u64;
        self.counters.frames_out += frames as u64;
        frames
    }

    /// The flow between the guest's side of group flow `group` and unicast
    /// host peer `peer`.
    fn udp_flow_to_peer(
        &mut self,
        now: Instant,
        group: &FlowKey,
        peer: SocketAddr,
    ) -> Result<FlowId, DropReason> {
        let bad = DropReason::DgramBadEndpoint;
        let peer_ip = peer.ip().to_canonical();
        if !nat::is_unicast(peer_ip) && !peer_ip.is_loopback() || peer.port() == 0 {
            return Err(bad);
        }
        let (src, _) = nat::from_host(&self.cfg, &self.guest, peer_ip).ok_or(bad)?;
        if src.is_ipv6() != group.src.is_ipv6() {
            return Err(bad);
        }
        let key = FlowKey {
            proto: PROTO_UDP,
            src: group.src,
            dst: src,
            sport: group.sport,
            dport: peer.port(),
        };
        if let Some(id) = self.flows.lookup(&key) {
            let udp = matches!(self.flows.get(id).map(|f| &f.data), Some(FlowData::Udp(_)));
            return if udp { Ok(id) } else { Err(bad) };
        }
        let (id, sock) = self.dgram_alloc(now, key, peer, false)?;
        let fam = family(peer.ip());
        self.actions.push_back(Action::Open {
            sock,
            kind: SockKind::Udp,
            family: fam,
            netns: Netns::Host,
        });
        self.actions.push_back(Action::Bind {
            sock,
            addr: SocketAddr::new(any_addr(fam), group.sport),
            opts: BindOpts {
                reuse_addr: true,
                v6_only: fam == Family::V6,
                ..BindOpts::default()
            },
        });
        self.actions.push_back(Action::Connect { sock, addr: peer });
        self.actions.push_back(Action::SetInterest {
            sock,
            interest: READABLE,
        });
        self.udp.stats.udp_opened += 1;
        log::debug!(
            "udp flow {}: {peer} answers guest {}:{} (to {}:{})",
            id.0,
            group.src,
            group.sport,
            group.dst,
            group.dport
        );
        Ok(id)
    }

    /// Writes the headers for a UDP datagram of flow `key` (guest side)
    /// in front of its payload at `room`. Counts the drop and returns
    /// `false` if it does not fit.
    fn udp_frame(&mut self, key: &FlowKey, d: &mut RxDatagram<'_>, room: usize) -> bool {
        let hl = l4_offset(key.dst.is_ipv6()) + UDP_HLEN;
        let (dst_mac, our_mac) = (self.guest.mac, self.cfg.our_mac);
        let mut room = room;
        if room < hl {
            // An IPv6 peer on a dual-stack listener (IPv4 room): move the
            // payload up to make room for the longer headers.
            let fits = room
                .checked_add(d.len)
                .zip(hl.checked_add(d.len))
                .filter(|&(_, end)| end <= d.buf.len());
            let Some((src_end, _)) = fits else {
                self.counters.drop(DropReason::DgramMalformed);
                return false;
            };
            d.buf.copy_within(room..src_end, hl);
            room = hl;
        }
        let start = room - hl;
        let n = room
            .checked_add(d.len)
            .filter(|&end| end <= d.buf.len())
            .and_then(|end| d.buf.get_mut(start..end))
            .and_then(|b| {
                finish_udp_frame(
                    b, dst_mac, our_mac, key.dst, key.src, key.dport, key.sport, d.len,
                )
            });
        match n {
            Some(n) => {
                d.frame_start = start;
                d.frame_len = n;
                true
            }
            None => {
                self.counters.drop(DropReason::DgramMalformed);
                false
            }
        }
    }

    /// Datagrams on a listener: each goes to the flow of its peer, created
    /// if new.
    fn udp_listener_received(
        &mut self,
        now: Instant,
        idx: u32,
        dgrams: &mut [RxDatagram<'_>],
    ) -> usize {
        let Some(l) = self.udp.listeners.get(idx as usize).copied() else {
            return 0;
        };
        if !(l.used && l.open) {
            return 0;
        }
        let room = self.recv_room(SockId(LISTENER_BIT | UDP_LISTENER_BIT | idx));
        self.udp_frames_by_peer(now, dgrams, room, |c, peer| {
            c.udp_flow_from_host(now, &l, peer)
        })
    }

    /// The flow of host peer `peer` writing to listener `l`: an existing one
    /// with the same guest-side 4-tuple, or a new one with its own socket
    /// bound like the listener and connected to the peer.
    fn udp_flow_from_host(
        &mut self,
        now: Instant,
        l: &UdpListener,
        peer: SocketAddr,
    ) -> Result<FlowId, DropReason> {
        let peer_ip = peer.ip().to_canonical();
        let bad = DropReason::DgramBadEndpoint;
        if !nat::is_unicast(peer_ip) && !peer_ip.is_loopback() || peer.port() == 0 {
            return Err(bad);
        }
        let (src, guest_addr) = nat::from_host(&self.cfg, &self.guest, peer_ip).ok_or(bad)?;
        if l.target_port == 0 {
            return Err(bad);
        }
        let key = FlowKey {
            proto: PROTO_UDP,
            src: guest_addr,
            dst: src,
            sport: l.target_port,
            dport: peer.port(),
        };
        if let Some(id) = self.flows.lookup(&key) {
            let udp = matches!(self.flows.get(id).map(|f| &f.data), Some(FlowData::Udp(_)));
            return if udp { Ok(id) } else { Err(bad) };
        }
        let (id, sock) = self.dgram_alloc(now, key, peer, false)?;
        let connect_to = match (l.family, peer.ip()) {
            (Family::V6, IpAddr::V4(a)) => SocketAddr::new(a.to_ipv6_mapped().into(), peer.port()),
            _ => peer,
        };
        self.actions.push_back(Action::Open {
            sock,
            kind: SockKind::Udp,
            family: l.family,
            netns: Netns::Host,
        });
        self.actions.push_back(Action::Bind {
            sock,
            addr: l.addr,
            opts: BindOpts {
                reuse_addr: true,
                v6_only: l.v6_only,
                device: l.device,
                ..BindOpts::default()
            },
        });
        self.actions.push_back(Action::Connect {
            sock,
            addr: connect_to,
        });
        self.actions.push_back(Action::SetInterest {
            sock,
            interest: READABLE,
        });
        self.udp.stats.udp_opened += 1;
        log::debug!(
            "udp flow {}: host {peer} -> guest {}:{} as {}:{}",
            id.0,
            key.src,
            key.sport,
            key.dst,
            key.dport
        );
        Ok(id)
    }

    // --- timers -------------------------------------------------------------------

    /// When the earliest datagram flow may expire.
    pub(crate) fn udp_poll_timeout(&self) -> Option<Instant> {
        self.udp.next_timer
    }

    /// Ends datagram flows idle for too long.
    pub(crate) fn udp_timeout(&mut self, now: Instant) {
        match self.udp.next_timer {
            Some(t) if t <= now => {}
            _ => return,
        }
        let mut next = None;
        for i in self.flows.indices() {
            let id = FlowId(i);
            let Some(d) = self.dgram_deadline(id) else {
                continue;
            };
            if d <= now {
                self.udp.stats.timeouts += 1;
                self.dgram_close(id);
            } else {
                next = earliest(next, Some(d));
            }
        }
        self.udp.next_timer = next;
    }

    /// The `SendDatagrams` spans of flow `id` queued since `start`, for
    /// ICMP echo (one span per request).
    pub(crate) fn dgram_send_one(&mut self, now: Instant, id: FlowId, span: Span) {
        let start = self.spans.len();
        self.spans.push(span);
        self.dgram_send(now, id, start, true);
        self.dgram_note_timer(id);
    }
}
