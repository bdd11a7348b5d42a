//! The host side of UDP: forwarded ports' listeners, and datagrams from
//! host sockets turned into frames for the guest.

use super::any_addr;
use super::{family, framed, same_peer, Ctx, SockSetup, UdpState, READABLE, RECV_BATCH};
use crate::action::{
    Action, BindOpts, Family, Netns, RxDatagram, SockEvent, SockId, SockKind, DATAGRAM_ROOM,
};
use crate::counters::DropReason;
use crate::flow::{self, FlowData, FlowId, FlowTable, SockRef, LISTENER_BIT};
use crate::fwd::FwdMode;
use crate::nat;
use crate::tap::FlowKey;
use crate::time::Instant;
use crate::wire::headers::{finish_udp_frame, l4_offset, PROTO_UDP, UDP_HLEN};
use core::net::{IpAddr, SocketAddr};
use std::collections::BTreeMap;

/// Bit of a listener index (with [`LISTENER_BIT`]) marking UDP listeners.
/// TCP listeners use small indices, and `0x7fffffff` (which has this bit)
/// is TCP's id for refused connections.
pub(crate) const UDP_LISTENER_BIT: u32 = 1 << 30;
const UDP_LISTENER_MAX: u32 = UDP_LISTENER_BIT - 2;

/// A UDP port forwarded from the host to the guest (`-u`): a listener
/// (see [`Core::set_udp_forwards`](crate::Core::set_udp_forwards)).
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
pub(crate) struct UdpListener {
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

fn listener_sock(idx: u32) -> SockId {
    SockId(LISTENER_BIT | UDP_LISTENER_BIT | idx)
}

impl UdpState {
    // --- listeners ---------------------------------------------------------------

    /// Opens the listeners of `Config::fwd.udp_in` (explicit lists and
    /// `all`), once.
    pub(crate) fn start(&mut self, cx: &mut Ctx<'_>) {
        if self.started {
            return;
        }
        self.started = true;
        if !cx.cfg.features.udp {
            return;
        }
        let table = &cx.cfg.fwd.udp_in;
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
        self.listeners.reserve_exact(all.len());
        for (addr, port, target_port, device) in all {
            let f = UdpForward {
                addr,
                port,
                target_port,
            };
            if !self.listener_add(cx, f, device, None) {
                break;
            }
        }
    }

    /// Replaces the forwarded ports with `forwards` (first listing of an
    /// address and port wins): listeners not listed are closed, new ones
    /// opened, kept ones take the listed target port. Flows stay.
    pub(crate) fn set_forwards(&mut self, cx: &mut Ctx<'_>, forwards: &[UdpForward]) {
        self.start(cx);
        if !cx.cfg.features.udp {
            return;
        }
        // (A BTreeMap: no hasher seeded from OS randomness in the core.)
        let mut wanted: BTreeMap<(Option<IpAddr>, u16), u16> = BTreeMap::new();
        for f in forwards {
            wanted.entry((f.addr, f.port)).or_insert(f.target_port);
        }
        let mut free = Vec::new();
        for (i, l) in self.listeners.iter_mut().enumerate() {
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
                self.open_socks = self.open_socks.saturating_sub(1);
                cx.actions.push(Action::Close {
                    sock: listener_sock(i as u32),
                });
            }
        }
        // Lowest free slots first.
        free.reverse();
        for f in forwards {
            if let Some(target_port) = wanted.remove(&(f.addr, f.port)) {
                let f = UdpForward { target_port, ..*f };
                if !self.listener_add(cx, f, None, free.pop()) {
                    break;
                }
            }
        }
    }

    /// Opens a listener for `f` (bound to interface `device` if given) in
    /// slot `slot` (a free one; `None`: a new one). False if no slot is
    /// left; a forward of a disabled address family is skipped.
    fn listener_add(
        &mut self,
        cx: &mut Ctx<'_>,
        f: UdpForward,
        device: Option<u32>,
        slot: Option<usize>,
    ) -> bool {
        let bind = match f.addr {
            None if cx.cfg.ip6.is_some() => Some((Family::V6, any_addr(Family::V6), false)),
            None if cx.cfg.ip4.is_some() => Some((Family::V4, any_addr(Family::V4), false)),
            Some(a @ IpAddr::V4(_)) if cx.cfg.ip4.is_some() => Some((Family::V4, a, false)),
            Some(a @ IpAddr::V6(_)) if cx.cfg.ip6.is_some() => Some((Family::V6, a, true)),
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
        let idx = match slot.and_then(|i| self.listeners.get_mut(i).map(|s| (i, s))) {
            Some((i, s)) => {
                *s = l;
                i
            }
            None => {
                if self.listeners.len() > UDP_LISTENER_MAX as usize {
                    return false;
                }
                self.listeners.push(l);
                self.listeners.len() - 1
            }
        };
        let sock = listener_sock(idx as u32);
        self.open_socks += 1;
        cx.actions.push(Action::Open {
            sock,
            kind: SockKind::Udp,
            family,
            netns: Netns::Host,
        });
        cx.actions.push(Action::Bind {
            sock,
            addr: l.addr,
            opts: BindOpts {
                reuse_addr: true,
                v6_only,
                device,
                ..BindOpts::default()
            },
        });
        cx.actions.push(Action::SetInterest {
            sock,
            interest: READABLE,
        });
        true
    }

    /// An event on a socket outside the flow table with index `idx`:
    /// handled if it is one of the UDP listeners.
    pub(super) fn listener_event(&mut self, cx: &mut Ctx<'_>, idx: u32, ev: SockEvent) -> bool {
        if idx & UDP_LISTENER_BIT == 0 || idx & !UDP_LISTENER_BIT > UDP_LISTENER_MAX {
            return false;
        }
        let idx = idx & !UDP_LISTENER_BIT;
        let sock = listener_sock(idx);
        let room = self.recv_room(cx.flows, sock) as u16;
        let Some(l) = self.listeners.get_mut(idx as usize) else {
            return true;
        };
        if !l.open {
            return true;
        }
        match ev {
            SockEvent::Readable => cx.actions.push(Action::Recv {
                sock,
                max: RECV_BATCH,
                room,
            }),
            SockEvent::OpenFailed(e) => {
                log::warn!("UDP listener on {}: {e:?}", l.addr);
                l.open = false;
                self.open_socks = self.open_socks.saturating_sub(1);
            }
            SockEvent::Error(e) | SockEvent::Sent(Err(e)) => {
                self.stats.sock_errors += 1;
                if super::fatal(e) {
                    log::warn!("UDP listener on {}: {e:?}, closed", l.addr);
                    l.open = false;
                    self.open_socks = self.open_socks.saturating_sub(1);
                    cx.actions.push(Action::Close { sock });
                }
            }
            SockEvent::HangUp => {
                l.open = false;
                self.open_socks = self.open_socks.saturating_sub(1);
                cx.actions.push(Action::Close { sock });
            }
            _ => {}
        }
        true
    }

    // --- datagrams to the guest ---------------------------------------------------

    /// Header room asked for in front of datagrams received on `sock`: the
    /// exact headers of the frames its datagrams become, so that frames
    /// start at the beginning of the driver's buffer. Dual-stack listeners,
    /// whose peers may be of either family, get the IPv4 room, so that the
    /// largest IPv4 datagrams fit the driver's buffer with their headers;
    /// the payload of an IPv6 peer is then moved up by the difference
    /// (see [`frame`]), which only a flow's first datagrams take.
    pub(crate) fn recv_room(&self, flows: &FlowTable, sock: SockId) -> usize {
        if let SockRef::Other(idx) = flow::decode(sock) {
            let l = self.listeners.get((idx & !UDP_LISTENER_BIT) as usize);
            return match l.map(|l| (l.family, l.v6_only)) {
                Some((Family::V4, _) | (Family::V6, false)) => l4_offset(false) + UDP_HLEN,
                _ => usize::from(DATAGRAM_ROOM),
            };
        }
        let Some(f) = flows.dgram_of(sock).and_then(|id| flows.get(id)) else {
            return usize::from(DATAGRAM_ROOM);
        };
        let v6 = f.key.src.is_ipv6();
        match f.data {
            FlowData::Ping(_) => l4_offset(v6),
            _ => l4_offset(v6) + UDP_HLEN,
        }
    }

    /// Datagrams received on socket `sock` (see
    /// [`Core::handle_datagrams`](crate::Core::handle_datagrams)).
    pub(crate) fn received(
        &mut self,
        cx: &mut Ctx<'_>,
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
            return self.listener_received(cx, now, idx & !UDP_LISTENER_BIT, dgrams);
        }
        let room = self.recv_room(cx.flows, sock);
        let Some(id) = cx.flows.dgram_of(sock) else {
            return 0;
        };
        let Some(f) = cx.flows.get(id) else {
            return 0;
        };
        let key = f.key;
        let (ping, flow) = match &f.data {
            FlowData::Udp(d) => (false, *d),
            FlowData::Ping(d) => (true, *d),
            _ => return 0,
        };
        if flow.group {
            return self.group_received(cx, now, &key, dgrams, room);
        }
        let mut frames = 0;
        for d in dgrams.iter_mut() {
            let ok = if ping {
                d.peer.ip().to_canonical() == flow.host.ip().to_canonical()
                    && crate::icmp::ping_frame(cx, &key, d, room)
            } else {
                same_peer(d.peer, flow.host) && frame(cx, &key, d, room)
            };
            if ok {
                frames += 1;
            }
        }
        if frames > 0 && !ping {
            if let Some(d) = cx.flows.dgram_mut(id) {
                d.t_active = now;
            }
        }
        self.delivered(cx, frames)
    }

    /// Counts `frames` frames made ready for the guest; returns them.
    fn delivered(&mut self, cx: &mut Ctx<'_>, frames: usize) -> usize {
        self.stats.to_guest += frames as u64;
        cx.counters.frames_out += frames as u64;
        frames
    }

    /// Answers to a datagram the guest sent to a group (flow `key`): each
    /// goes to the flow of its peer, created if new, with a socket bound to
    /// the guest's port and connected to the peer, so that the guest can
    /// answer it.
    fn group_received(
        &mut self,
        cx: &mut Ctx<'_>,
        now: Instant,
        key: &FlowKey,
        dgrams: &mut [RxDatagram<'_>],
        room: usize,
    ) -> usize {
        self.frames_by_peer(cx, now, dgrams, room, |s, cx, peer| {
            s.flow_to_peer(cx, now, key, peer)
        })
    }

    /// Turns each datagram into a frame to the guest on the flow `flow_of`
    /// finds (or creates) for its peer; counts the drops. Returns the frames
    /// made ready.
    fn frames_by_peer(
        &mut self,
        cx: &mut Ctx<'_>,
        now: Instant,
        dgrams: &mut [RxDatagram<'_>],
        room: usize,
        mut flow_of: impl FnMut(&mut Self, &mut Ctx<'_>, SocketAddr) -> Result<FlowId, DropReason>,
    ) -> usize {
        let mut frames = 0;
        for d in dgrams.iter_mut() {
            let id = match flow_of(self, cx, d.peer) {
                Ok(id) => id,
                Err(reason) => {
                    cx.counters.drop(reason);
                    continue;
                }
            };
            let Some(k) = cx.flows.get(id).map(|f| f.key) else {
                continue;
            };
            if frame(cx, &k, d, room) {
                frames += 1;
                if let Some(f) = cx.flows.dgram_mut(id) {
                    f.t_active = now;
                }
            }
        }
        self.delivered(cx, frames)
    }

    /// The flow between the guest's side of group flow `group` and unicast
    /// host peer `peer`.
    fn flow_to_peer(
        &mut self,
        cx: &mut Ctx<'_>,
        now: Instant,
        group: &FlowKey,
        peer: SocketAddr,
    ) -> Result<FlowId, DropReason> {
        let (src, _) = peer_source(cx, peer)?;
        if src.is_ipv6() != group.src.is_ipv6() {
            return Err(DropReason::DgramBadEndpoint);
        }
        let key = FlowKey {
            proto: PROTO_UDP,
            src: group.src,
            dst: src,
            sport: group.sport,
            dport: peer.port(),
        };
        self.flow_or_new(cx, &key, false, |s, cx| {
            let fam = family(peer.ip());
            let id = s.open_flow(cx, now, key, peer, false, |sock| {
                SockSetup::guest_port(sock, fam, group.sport, Some(peer))
            })?;
            log::debug!(
                "udp flow {}: {peer} answers guest {}:{} (to {}:{})",
                id.0,
                group.src,
                group.sport,
                group.dst,
                group.dport
            );
            Ok(id)
        })
    }

    /// Datagrams on a listener: each goes to the flow of its peer, created
    /// if new.
    fn listener_received(
        &mut self,
        cx: &mut Ctx<'_>,
        now: Instant,
        idx: u32,
        dgrams: &mut [RxDatagram<'_>],
    ) -> usize {
        let Some(l) = self.listeners.get(idx as usize).copied() else {
            return 0;
        };
        if !(l.used && l.open) {
            return 0;
        }
        let room = self.recv_room(cx.flows, listener_sock(idx));
        self.frames_by_peer(cx, now, dgrams, room, |s, cx, peer| {
            s.flow_from_host(cx, now, &l, peer)
        })
    }

    /// The flow of host peer `peer` writing to listener `l`: an existing one
    /// with the same guest-side 4-tuple, or a new one with its own socket
    /// bound like the listener and connected to the peer.
    fn flow_from_host(
        &mut self,
        cx: &mut Ctx<'_>,
        now: Instant,
        l: &UdpListener,
        peer: SocketAddr,
    ) -> Result<FlowId, DropReason> {
        let (src, guest_addr) = peer_source(cx, peer)?;
        if l.target_port == 0 {
            return Err(DropReason::DgramBadEndpoint);
        }
        let key = FlowKey {
            proto: PROTO_UDP,
            src: guest_addr,
            dst: src,
            sport: l.target_port,
            dport: peer.port(),
        };
        let connect_to = match (l.family, peer.ip()) {
            (Family::V6, IpAddr::V4(a)) => SocketAddr::new(a.to_ipv6_mapped().into(), peer.port()),
            _ => peer,
        };
        self.flow_or_new(cx, &key, false, |s, cx| {
            let id = s.open_flow(cx, now, key, peer, false, |sock| SockSetup {
                sock,
                kind: SockKind::Udp,
                family: l.family,
                broadcast: false,
                bind: l.addr,
                opts: BindOpts {
                    reuse_addr: true,
                    v6_only: l.v6_only,
                    device: l.device,
                    ..BindOpts::default()
                },
                connect: Some(connect_to),
            })?;
            log::debug!(
                "udp flow {}: host {peer} -> guest {}:{} as {}:{}",
                id.0,
                key.src,
                key.sport,
                key.dst,
                key.dport
            );
            Ok(id)
        })
    }
}

/// The source address the guest sees for host peer `peer`, and the guest
/// address it reaches (see [`nat::from_host`]), if the peer may send to the
/// guest at all (unicast or loopback, port not 0).
fn peer_source(cx: &Ctx<'_>, peer: SocketAddr) -> Result<(IpAddr, IpAddr), DropReason> {
    let bad = DropReason::DgramBadEndpoint;
    let peer_ip = peer.ip().to_canonical();
    if !nat::is_unicast(peer_ip) && !peer_ip.is_loopback() || peer.port() == 0 {
        return Err(bad);
    }
    nat::from_host(cx.cfg, cx.guest, peer_ip).ok_or(bad)
}

/// Writes the headers for a UDP datagram of flow `key` (guest side) in front
/// of its payload at `room`. Counts the drop and returns `false` if it does
/// not fit.
fn frame(cx: &mut Ctx<'_>, key: &FlowKey, d: &mut RxDatagram<'_>, room: usize) -> bool {
    let hl = l4_offset(key.dst.is_ipv6()) + UDP_HLEN;
    let (dst_mac, our_mac) = (cx.guest.mac, cx.cfg.our_mac);
    let mut room = room;
    if room < hl {
        // An IPv6 peer on a dual-stack listener (IPv4 room): move the
        // payload up to make room for the longer headers.
        let fits = room
            .checked_add(d.len)
            .zip(hl.checked_add(d.len))
            .filter(|&(_, end)| end <= d.buf.len());
        let Some((src_end, _)) = fits else {
            cx.counters.drop(DropReason::DgramMalformed);
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
    framed(cx, d, start, n)
}
