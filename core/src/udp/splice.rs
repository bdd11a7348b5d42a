//! pasta's loopback path for UDP: datagram flows joined in the driver.
//!
//! A UDP listener that may splice (pasta, unless `--no-splice`: every `-U`
//! listener in the guest's namespace, and the `-u` listeners on the host) is
//! not read blindly: on readiness the core asks the driver who sent the next
//! datagram and to which address ([`Action::PeekPeer`]), and chooses its
//! path before anything is read, as upstream does:
//!
//! * on a `-u` listener, a datagram from a loopback address of the host
//!   (and a forward with no target address) is spliced to the guest's own
//!   address of the same family, or with `--host-lo-to-ns-lo` and a datagram
//!   sent to a loopback address, to that loopback address in the guest's
//!   namespace; anything else goes through the guest link as before
//!   (dropped with `--splice-only`, which has no link);
//! * on a `-U` listener, a datagram from a loopback address to a loopback
//!   address of the guest's namespace is spliced to the same destination
//!   address on the host; anything else is dropped.
//!
//! A spliced flow has two sockets: side 0 in the listener's namespace, bound
//! to the address and port the datagram was sent to and connected to its
//! source (so replies leave from where the peer expects them); side 1 in
//! the other namespace, bound to the source port (and, towards the host, to
//! the source loopback address too: the peer's port is kept, as on the
//! guest link) and connected to the target. The core asks the driver to
//! join them ([`Action::SpliceDatagrams`]): from then on the driver moves the
//! datagrams of both sockets itself. The first datagrams, still queued on
//! the listener, go to side 1 with [`Action::ForwardDatagrams`]. Bytes never
//! pass through the core.
//!
//! Flows expire like those of the guest link: after [`UDP_TIMEOUT`] without
//! a datagram either way. The core cannot see the datagrams the driver
//! moves, so when a flow's time is up it asks for the pair's count
//! ([`Action::QuerySpliced`]): a count that moved keeps the flow for another
//! period, one that did not (or no answer within [`QUERY_WAIT`]) ends it.
//!
//! Each flow has one timer in a heap (`timers.rs`), at or before its
//! expiry: armed when the flow is made and when a query goes out; traffic
//! only moves the flow's expiry on, and a timer that comes up early is
//! armed again for the new expiry. So the next expiry is known in O(1) and
//! each due flow costs O(log n), whatever the number of flows.

use super::{any_addr, family, UDP_TIMEOUT};
use crate::action::{Action, BindOpts, Family, Netns, SockEvent, SockId, SockKind};
use crate::flow::{self, FlowData, FlowId, FlowTable, SockRef};
use crate::fwd::{Listener, Listeners, Proto};
use crate::splice::{guest_addr, Ctx};
use crate::tap::FlowKey;
use crate::time::Instant;
use crate::timers::FlowTimers;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;

/// How long the core waits for the answer to [`Action::QuerySpliced`]
/// before it ends the flow anyway.
pub(crate) const QUERY_WAIT: Duration = Duration::from_secs(1);
/// Most actions the first datagram of a new spliced flow queues.
const NEW_FLOW_ACTIONS: usize = 8;
/// Flow-key protocol numbers of spliced UDP flows, by the namespace of
/// the listener they came from: never a protocol number of a guest frame,
/// so these keys cannot meet the guest link's.
const KEY_FROM_HOST: u8 = 0xf1;
const KEY_FROM_GUEST: u8 = 0xf2;

/// What spliced UDP did, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpSpliceStats {
    /// Flows created.
    pub opened: u64,
    /// Flows ended, for any reason.
    pub closed: u64,
    /// Flows ended because nothing moved for [`UDP_TIMEOUT`].
    pub timeouts: u64,
    /// Flows that could not be set up (a socket could not be opened, bound
    /// or connected), or failed later.
    pub failed: u64,
    /// Datagrams taken from listeners and sent on a flow's socket.
    pub forwarded: u64,
    /// Datagrams on listeners discarded: not between loopback addresses on
    /// a `-U` listener, or with no guest link (`--splice-only`).
    pub discarded: u64,
    /// Datagrams the driver moved, both ways, as last reported.
    pub moved: u64,
}

pub(crate) use super::splice_flow::UdpSpliceFlow;

impl UdpSpliceFlow {
    fn deadline(&self) -> Instant {
        match self.query_at {
            Some(q) => q.saturating_add(QUERY_WAIT),
            None => self.t_active.saturating_add(UDP_TIMEOUT),
        }
    }
}

/// Spliced UDP state outside the flow table.
#[derive(Debug)]
pub(crate) struct UdpSpliceState {
    /// One timer per spliced flow, at or before its deadline: armed when
    /// the flow is made and when a query goes out, and armed again for the
    /// new deadline when it runs early (traffic moved the deadline on), so
    /// that traffic costs no timer work.
    timers: FlowTimers,
    /// Sockets of spliced flows the driver holds.
    pub(crate) open_socks: usize,
    pub(crate) stats: UdpSpliceStats,
}

/// Where the datagrams of a listener go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// Through the guest link, as any other.
    Tap,
    /// Thrown away.
    Discard,
    /// Spliced: side 1 in `netns`, bound to `bind`, connected to `target`.
    Splice {
        netns: Netns,
        bind: SocketAddr,
        target: SocketAddr,
    },
}

/// `a` in the form a socket of `family` takes (IPv4-mapped on IPv6).
fn for_family(a: SocketAddr, fam: Family) -> SocketAddr {
    match (fam, a.ip()) {
        (Family::V6, IpAddr::V4(v4)) => SocketAddr::new(v4.to_ipv6_mapped().into(), a.port()),
        _ => a,
    }
}

/// The actions that make `sock` a UDP socket of `(family, netns)`, bound
/// to `addr` with `opts` and connected to `to`.
fn connected(
    sock: SockId,
    (family, netns): (Family, Netns),
    addr: SocketAddr,
    opts: BindOpts,
    to: SocketAddr,
) -> [Action; 3] {
    [
        Action::Open {
            sock,
            kind: SockKind::Udp,
            family,
            netns,
        },
        Action::Bind { sock, addr, opts },
        Action::Connect { sock, addr: to },
    ]
}

impl UdpSpliceState {
    /// Spliced UDP state for a flow table of `flows` entries.
    pub(crate) fn new(flows: usize) -> Self {
        let flows = flows.min(flow::MAX_FLOWS);
        UdpSpliceState {
            timers: FlowTimers::new(flows),
            open_socks: 0,
            stats: UdpSpliceStats::default(),
        }
    }

    /// Deadline of spliced flow `id`, if it is one.
    fn deadline(flows: &FlowTable, id: FlowId) -> Option<Instant> {
        match &flows.get(id)?.data {
            FlowData::UdpSplice(u) => Some(u.deadline()),
            _ => None,
        }
    }

    /// Arms the timer of `id` for its deadline.
    fn note_timer(&mut self, flows: &FlowTable, id: FlowId) {
        self.timers.arm(flows, id, Self::deadline(flows, id));
    }

    /// Whether the UDP listener `l` is read through [`Action::PeekPeer`].
    fn peeks(cx: &Ctx<'_>, l: &Listener) -> bool {
        cx.cfg.splice && (l.fwd.netns == Netns::Guest || l.fwd.target.is_none())
    }

    /// An event on open UDP listener `slot`; `false` if the listener does
    /// not splice (the guest link's code takes the event).
    pub(crate) fn listener_event(
        &mut self,
        cx: &mut Ctx<'_>,
        now: Instant,
        slot: u32,
        ev: SockEvent,
    ) -> bool {
        let Some(l) = cx.listeners.get(Proto::Udp, slot).copied() else {
            return false;
        };
        if !Self::peeks(cx, &l) {
            return false;
        }
        let sock = Listeners::sock(Proto::Udp, slot);
        match ev {
            SockEvent::Readable => {
                cx.act(Action::PeekPeer { sock });
                true
            }
            SockEvent::DatagramPeer { peer, local } => {
                if !cx.actions.admits(NEW_FLOW_ACTIONS) {
                    // Still queued: the listener is readable again at the
                    // next wait.
                    return true;
                }
                self.datagram(cx, now, slot, &l, peer, local);
                true
            }
            // Errors and hang-ups: as for any UDP listener.
            _ => false,
        }
    }

    /// The path of a datagram from `peer` to `local` on listener `l`.
    fn path(cx: &Ctx<'_>, l: &Listener, peer: SocketAddr, local: Option<IpAddr>) -> Path {
        let peer_ip = peer.ip().to_canonical();
        let local_ip = local
            .map(|a| a.to_canonical())
            .or(l.fwd.addr)
            .filter(|a| !a.is_unspecified());
        let port = l.fwd.target_port;
        if port == 0 || peer.port() == 0 {
            return Path::Discard;
        }
        match l.fwd.netns {
            Netns::Guest => {
                if !peer_ip.is_loopback() || local_ip.is_some_and(|a| !a.is_loopback()) {
                    return Path::Discard;
                }
                let dst = local_ip.unwrap_or(match peer_ip {
                    IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                    IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
                });
                if dst.is_ipv4() != peer_ip.is_ipv4() {
                    return Path::Discard;
                }
                Path::Splice {
                    netns: Netns::Host,
                    bind: SocketAddr::new(peer_ip, peer.port()),
                    target: SocketAddr::new(dst, port),
                }
            }
            Netns::Host => {
                let tap = if cx.cfg.splice_only {
                    Path::Discard
                } else {
                    Path::Tap
                };
                if l.fwd.target.is_some() || !peer_ip.is_loopback() {
                    return tap;
                }
                let dst = match local_ip {
                    Some(a) if cx.cfg.host_lo_to_ns_lo && a.is_loopback() => Some(a),
                    _ => guest_addr(cx.cfg, cx.guest, family(peer_ip)),
                };
                match dst {
                    Some(d) if d.is_ipv4() == peer_ip.is_ipv4() => Path::Splice {
                        netns: Netns::Guest,
                        bind: SocketAddr::new(any_addr(family(d)), peer.port()),
                        target: SocketAddr::new(d, port),
                    },
                    _ => Path::Discard,
                }
            }
        }
    }

    /// The next datagram on listener `slot` (`l`) is from `peer` to `local`:
    /// read it into the guest link, discard it, or send it on its spliced
    /// flow (created if new).
    fn datagram(
        &mut self,
        cx: &mut Ctx<'_>,
        now: Instant,
        slot: u32,
        l: &Listener,
        peer: SocketAddr,
        local: Option<IpAddr>,
    ) {
        let sock = Listeners::sock(Proto::Udp, slot);
        let (netns, bind, target) = match Self::path(cx, l, peer, local) {
            Path::Tap => {
                let room = super::datagram_room(cx.listeners, cx.flows, sock) as u16;
                return cx.act(Action::Recv { sock, max: 1, room });
            }
            Path::Discard => {
                self.stats.discarded += 1;
                return cx.act(Action::ForwardDatagrams {
                    from: sock,
                    to: None,
                    max: 1,
                });
            }
            Path::Splice {
                netns,
                bind,
                target,
            } => (netns, bind, target),
        };
        let peer_ip = peer.ip().to_canonical();
        let local_ip = local.map(|a| a.to_canonical()).or(l.fwd.addr);
        let key = FlowKey {
            proto: match l.fwd.netns {
                Netns::Host => KEY_FROM_HOST,
                Netns::Guest => KEY_FROM_GUEST,
            },
            src: peer_ip,
            dst: local_ip.unwrap_or(any_addr(family(peer_ip))),
            sport: peer.port(),
            dport: l.addr.port(),
        };
        let to = match cx.flows.lookup(&key) {
            Some(id) => match cx.flows.get_mut(id).map(|f| &mut f.data) {
                Some(FlowData::UdpSplice(u)) => {
                    u.t_active = now;
                    u.open[1].then_some(u.socks[1])
                }
                _ => None,
            },
            None => self.open(cx, now, l, key, peer, local_ip, netns, bind, target),
        };
        if to.is_some() {
            self.stats.forwarded += 1;
        } else {
            self.stats.discarded += 1;
        }
        cx.act(Action::ForwardDatagrams {
            from: sock,
            to,
            max: 1,
        });
    }

    /// A new spliced flow under `key`: both sockets opened, bound,
    /// connected and joined. Returns side 1's socket, or `None` if no flow
    /// could be made.
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        cx: &mut Ctx<'_>,
        now: Instant,
        l: &Listener,
        key: FlowKey,
        peer: SocketAddr,
        local_ip: Option<IpAddr>,
        netns: Netns,
        bind: SocketAddr,
        target: SocketAddr,
    ) -> Option<SockId> {
        let flow = UdpSpliceFlow {
            socks: [SockId(0); 2],
            open: [true, true],
            joined: false,
            t_active: now,
            moved: 0,
            query_at: None,
        };
        let id = match cx.flows.alloc(FlowData::UdpSplice(flow)) {
            Ok(id) => id,
            Err(reason) => {
                cx.counters.drop(reason);
                return None;
            }
        };
        if !cx.flows.insert_key(id, key) {
            cx.flows.free(id);
            return None;
        }
        let gen = cx.flows.get(id).map_or(0, |f| f.gen);
        let socks = [flow::sock_id(id, gen, 0), flow::sock_id(id, gen, 1)];
        if let Some(FlowData::UdpSplice(u)) = cx.flows.get_mut(id).map(|f| &mut f.data) {
            u.socks = socks;
        }
        self.open_socks += 2;
        self.stats.opened += 1;
        self.note_timer(cx.flows, id);
        log::debug!(
            "udp splice flow {}: {peer} -> {:?}:{}, to {target} from {bind}",
            id.0,
            local_ip,
            l.addr.port()
        );
        // Side 0: where the peer sent to, connected to the peer.
        let near_bind = SocketAddr::new(
            local_ip
                .filter(|a| !a.is_unspecified())
                .unwrap_or(l.addr.ip()),
            l.addr.port(),
        );
        let near = connected(
            socks[0],
            (l.family, l.fwd.netns),
            for_family(near_bind, l.family),
            BindOpts {
                reuse_addr: true,
                v6_only: l.v6_only,
                device: l.fwd.ifindex,
                freebind: true,
            },
            for_family(peer, l.family),
        );
        // Side 1: in the other namespace, connected to the target.
        let fam = family(target.ip());
        let far = connected(
            socks[1],
            (fam, netns),
            bind,
            BindOpts {
                reuse_addr: true,
                v6_only: fam == Family::V6,
                freebind: true,
                ..BindOpts::default()
            },
            target,
        );
        for a in near.into_iter().chain(far) {
            cx.act(a);
        }
        if let Some(FlowData::UdpSplice(u)) = cx.flows.get_mut(id).map(|f| &mut f.data) {
            u.joined = true;
        }
        cx.act(Action::SpliceDatagrams {
            sock: socks[0],
            peer: socks[1],
        });
        Some(socks[1])
    }

    /// An event for a socket of a spliced UDP flow; `false` if `sock` is
    /// not one.
    pub(crate) fn sock_event(
        &mut self,
        cx: &mut Ctx<'_>,
        now: Instant,
        sock: SockId,
        ev: SockEvent,
    ) -> bool {
        let SockRef::Flow { id, gen, side } = flow::decode(sock) else {
            return false;
        };
        let Some(f) = cx.flows.get_mut(id) else {
            return false;
        };
        if f.gen != gen {
            return false;
        }
        let FlowData::UdpSplice(u) = &mut f.data else {
            return false;
        };
        let side = usize::from(side).min(1);
        match ev {
            SockEvent::OpenFailed(e) => {
                log::debug!("udp splice flow {}: socket {side}: {e:?}", id.0);
                if u.open[side] {
                    u.open[side] = false;
                    self.open_socks = self.open_socks.saturating_sub(1);
                }
                self.stats.failed += 1;
                self.close(cx, id);
            }
            SockEvent::Connected(Err(e)) | SockEvent::SpliceEnded(Err(e)) => {
                log::debug!("udp splice flow {}: socket {side}: {e:?}", id.0);
                self.stats.failed += 1;
                self.close(cx, id);
            }
            SockEvent::Spliced(t) => {
                let total = t.to_peer.saturating_add(t.from_peer);
                u.query_at = None;
                if total != u.moved {
                    self.stats.moved += total.saturating_sub(u.moved);
                    u.moved = total;
                    // Later than the armed timer: it runs early and is
                    // armed again then.
                    u.t_active = now;
                } else {
                    self.stats.timeouts += 1;
                    self.close(cx, id);
                }
            }
            // Readiness is the driver's business once joined.
            _ => {}
        }
        true
    }

    /// Closes both sockets of spliced UDP flow `id` and frees it.
    fn close(&mut self, cx: &mut Ctx<'_>, id: FlowId) {
        let Some(&FlowData::UdpSplice(u)) = cx.flows.get(id).map(|f| &f.data) else {
            return;
        };
        for side in 0..2 {
            if u.open[side] {
                cx.act(Action::Close {
                    sock: u.socks[side],
                });
                self.open_socks = self.open_socks.saturating_sub(1);
            }
        }
        log::debug!("udp splice flow {}: closed", id.0);
        self.stats.closed += 1;
        // Its timer goes with it: left armed, it would wake the driver once
        // for a flow that is gone.
        self.timers.arm(cx.flows, id, None);
        cx.flows.free(id);
    }

    /// When the earliest spliced UDP flow may expire.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Asks for the counts of flows whose time is up, in flow order; ends
    /// those that did not answer.
    pub(crate) fn timeout(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        let due = self.timers.take_due(now, cx.flows, Self::deadline);
        for &id in &due {
            let Some(&FlowData::UdpSplice(u)) = cx.flows.get(id).map(|f| &f.data) else {
                continue;
            };
            if u.query_at.is_some() || !u.joined || !u.open[0] {
                self.stats.timeouts += 1;
                self.close(cx, id);
                continue;
            }
            if !cx.actions.admits(1) {
                // No room for the query: again at the next call.
                self.timers.arm(cx.flows, id, Some(now));
                continue;
            }
            if let Some(FlowData::UdpSplice(u)) = cx.flows.get_mut(id).map(|f| &mut f.data) {
                u.query_at = Some(now);
            }
            cx.act(Action::QuerySpliced { sock: u.socks[0] });
            self.note_timer(cx.flows, id);
        }
        self.timers.done(due);
    }
}

#[cfg(test)]
#[path = "splice_tests.rs"]
mod tests;
