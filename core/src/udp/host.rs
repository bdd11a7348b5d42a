//! The host side of UDP: events on forwarded ports' listeners (the listeners
//! themselves are `fwd.rs`'s), and datagrams from host sockets turned into
//! frames for the guest.

use super::{act, family, framed, same_peer, Ctx, SockSetup, UdpState, RECV_BATCH};
use crate::action::{
    Action, BindOpts, Family, RxDatagram, SockEvent, SockId, SockKind, DATAGRAM_ROOM,
};
use crate::counters::DropReason;
use crate::flow::{self, FlowData, FlowId, FlowTable, SockRef};
use crate::fwd::{Listener, Listeners, Proto};
use crate::nat;
use crate::tap::FlowKey;
use crate::wire::headers::{finish_udp_frame, l4_offset, Ends, PROTO_UDP, UDP_HLEN};
use core::net::{IpAddr, SocketAddr};

impl UdpState {
    /// An event on open listener `slot` (see [`Listeners::event`]).
    pub(crate) fn listener_event(&mut self, cx: &mut Ctx<'_>, slot: u32, ev: SockEvent) {
        let sock = Listeners::sock(Proto::Udp, slot);
        let closed = match ev {
            SockEvent::Readable => {
                let room = recv_room(cx, sock) as u16;
                act(
                    cx,
                    Action::Recv {
                        sock,
                        max: RECV_BATCH,
                        room,
                    },
                );
                None
            }
            SockEvent::Error(e) | SockEvent::Sent(Err(e)) => {
                self.stats.sock_errors += 1;
                if !super::fatal(e) {
                    return;
                }
                cx.listeners.fail(Proto::Udp, slot, Some(e), true)
            }
            SockEvent::HangUp => cx.listeners.fail(Proto::Udp, slot, None, true),
            _ => None,
        };
        if let Some(close) = closed {
            act(cx, close);
        }
    }

    // --- datagrams to the guest ---------------------------------------------------

    /// Datagrams received on socket `sock` (see
    /// [`Core::handle_datagrams`](crate::Core::handle_datagrams)).
    pub(crate) fn received(
        &mut self,
        cx: &mut Ctx<'_>,
        sock: SockId,
        dgrams: &mut [RxDatagram<'_>],
    ) -> usize {
        let now = cx.now;
        for d in dgrams.iter_mut() {
            d.frame_start = 0;
            d.frame_len = 0;
        }
        if let SockRef::Other(_) = flow::decode(sock) {
            return match Listeners::decode(sock) {
                Some((Proto::Udp, slot)) => self.listener_received(cx, slot, dgrams),
                _ => 0,
            };
        }
        let room = recv_room(cx, sock);
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
            return self.group_received(cx, &key, dgrams, room);
        }
        let mut frames = 0;
        for d in dgrams.iter_mut() {
            let ok = if ping {
                d.peer.ip().to_canonical() == flow.host.ip().to_canonical()
                    && super::echo::ping_frame(cx, &key, d, room)
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
        key: &FlowKey,
        dgrams: &mut [RxDatagram<'_>],
        room: usize,
    ) -> usize {
        self.frames_by_peer(cx, dgrams, room, |s, cx, peer| {
            s.flow_to_peer(cx, key, peer)
        })
    }

    /// Turns each datagram into a frame to the guest on the flow `flow_of`
    /// finds (or creates) for its peer; counts the drops. Returns the frames
    /// made ready.
    fn frames_by_peer(
        &mut self,
        cx: &mut Ctx<'_>,
        dgrams: &mut [RxDatagram<'_>],
        room: usize,
        mut flow_of: impl FnMut(&mut Self, &mut Ctx<'_>, SocketAddr) -> Result<FlowId, DropReason>,
    ) -> usize {
        let now = cx.now;
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
        group: &FlowKey,
        peer: SocketAddr,
    ) -> Result<FlowId, DropReason> {
        let (src, _) = peer_source(cx, peer, None)?;
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
            let (cfg, fam) = (cx.cfg, family(peer.ip()));
            let id = s.open_flow(cx, key, peer, false, |sock| {
                SockSetup::guest_port(cfg, sock, fam, group.sport, Some(peer))
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
        slot: u32,
        dgrams: &mut [RxDatagram<'_>],
    ) -> usize {
        let Some(l) = cx.listeners.get(Proto::Udp, slot).copied() else {
            return 0;
        };
        let room = recv_room(cx, Listeners::sock(Proto::Udp, slot));
        self.frames_by_peer(cx, dgrams, room, |s, cx, peer| {
            s.flow_from_host(cx, slot, &l, peer)
        })
    }

    /// The flow of host peer `peer` writing to listener `l` (in `slot`): an
    /// existing one with the same guest-side 4-tuple, or a new one with its
    /// own socket bound like the listener and connected to the peer.
    fn flow_from_host(
        &mut self,
        cx: &mut Ctx<'_>,
        slot: u32,
        l: &Listener,
        peer: SocketAddr,
    ) -> Result<FlowId, DropReason> {
        let (src, guest_addr) = peer_source(cx, peer, Some(slot))?;
        if l.fwd.target_port == 0 {
            return Err(DropReason::DgramBadEndpoint);
        }
        let key = FlowKey {
            proto: PROTO_UDP,
            src: guest_addr,
            dst: src,
            sport: l.fwd.target_port,
            dport: peer.port(),
        };
        let connect_to = match (l.family, peer.ip()) {
            (Family::V6, IpAddr::V4(a)) => SocketAddr::new(a.to_ipv6_mapped().into(), peer.port()),
            _ => peer,
        };
        self.flow_or_new(cx, &key, false, |s, cx| {
            let id = s.open_flow(cx, key, peer, false, |sock| SockSetup {
                sock,
                kind: SockKind::Udp,
                family: l.family,
                broadcast: false,
                bind: l.addr,
                opts: BindOpts {
                    reuse_addr: true,
                    v6_only: l.v6_only,
                    device: l.fwd.ifindex,
                    freebind: l.freebind,
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
/// address it reaches (see [`nat::from_host`]; for a datagram on listener
/// `listener`, see [`Listeners::guest_side`]), if the peer may send to the
/// guest at all (unicast or loopback, port not 0).
fn peer_source(
    cx: &Ctx<'_>,
    peer: SocketAddr,
    listener: Option<u32>,
) -> Result<(IpAddr, IpAddr), DropReason> {
    let bad = DropReason::DgramBadEndpoint;
    let peer_ip = peer.ip().to_canonical();
    if !nat::is_unicast(peer_ip) && !peer_ip.is_loopback() || peer.port() == 0 {
        return Err(bad);
    }
    match listener {
        Some(slot) => cx
            .listeners
            .guest_side(cx.cfg, cx.guest, Proto::Udp, slot, peer_ip),
        None => nat::from_host(cx.cfg, cx.guest, peer_ip),
    }
    .ok_or(bad)
}

/// Header room asked for in front of datagrams received on `sock`: the exact
/// headers of the frames its datagrams become, so that frames start at the
/// beginning of the driver's buffer. Dual-stack listeners, whose peers may be
/// of either family, get the IPv4 room, so that the largest IPv4 datagrams
/// fit the driver's buffer with their headers; the payload of an IPv6 peer is
/// then moved up by the difference (see [`frame`]), which only a flow's first
/// datagrams take.
pub(crate) fn recv_room(cx: &Ctx<'_>, sock: SockId) -> usize {
    datagram_room(cx.listeners, cx.flows, sock)
}

/// [`recv_room`] from the listeners and the flow table alone.
pub(crate) fn datagram_room(listeners: &Listeners, flows: &FlowTable, sock: SockId) -> usize {
    if let SockRef::Other(_) = flow::decode(sock) {
        let l = Listeners::decode(sock).and_then(|(proto, slot)| listeners.family(proto, slot));
        return match l {
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

/// Writes the headers for a UDP datagram of flow `key` (guest side) in front
/// of its payload at `room`. Counts the drop and returns `false` if it does
/// not fit.
fn frame(cx: &mut Ctx<'_>, key: &FlowKey, d: &mut RxDatagram<'_>, room: usize) -> bool {
    let hl = l4_offset(key.dst.is_ipv6()) + UDP_HLEN;
    let ends = Ends::new(cx.guest.mac, cx.src_mac(key.dst), key.dst, key.src);
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
        .and_then(|b| finish_udp_frame(b, ends, key.dport, key.sport, d.len));
    framed(cx, d, start, n)
}
