//! pasta's loopback path: TCP connections joined in the driver.
//!
//! A connection between the host's loopback and the guest's loopback never
//! goes through the guest link. The core decides which connections take that
//! path, and asks the driver to open and connect the socket in the other
//! namespace and then to join the two ([`Action::Splice`]); the driver moves
//! the bytes and reports [`SockEvent::SpliceEnded`] when the pair is done.
//! Bytes never pass through the core.
//!
//! Which connections are spliced (with [`Config::splice`]):
//!
//! * a connection to a forwarded port of the host ([`Netns::Host`]
//!   listener) from a loopback address of the host, unless the forward names
//!   a target address: it goes to the guest's own address of the same family
//!   (the address it was assigned, or the one it was last seen using), or,
//!   with [`Config::host_lo_to_ns_lo`] and a connection that arrived on a
//!   loopback address, to that loopback address in the guest's namespace
//!   (other connections take the guest link, or are refused with
//!   [`Config::splice_only`], which has none);
//! * every connection to a [`Netns::Guest`] listener (`-T`) from a loopback
//!   address to a loopback address of the guest's namespace: it goes to the
//!   same loopback address on the host. Other connections there are refused.
//!
//! The port is the forward's target port. The far-side socket is not bound:
//! the kernel picks its source address and port. Both sockets get
//! `TCP_NODELAY` (small request/response exchanges would otherwise wait for
//! Nagle's algorithm), asked for right after the join, which moves the first
//! bytes before it. A far side that cannot be connected resets the
//! accepted connection; a pair that ended with an error is closed with a
//! reset on both sides, so each peer learns of the other's reset.
//!
//! A spliced flow sits in the flow table like any other (so ids, generations
//! and limits work the same), with no guest-side 4-tuple and no timers:
//! upstream has no idle timeout for spliced connections either.

use crate::action::{Action, Family, Netns, SockEvent, SockId, SockKind, SockOpt};
use crate::config::Config;
use crate::counters::Counters;
use crate::flow::{self, FlowData, FlowId, FlowTable, SockRef};
use crate::fwd::{Listeners, Proto};
use crate::guest::GuestInfo;
use crate::queue::ActionQueue;
use core::net::{IpAddr, SocketAddr};

pub(crate) mod conn;
pub(crate) use conn::{Phase, SpliceConn};

/// What became of spliced connections, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpliceStats {
    /// Connections the core chose to splice.
    pub accepted: u64,
    /// Pairs joined (the far side connected).
    pub joined: u64,
    /// Connections refused: the far side could not be opened or connected,
    /// or a `-T` connection was not between loopback addresses.
    pub refused: u64,
    /// Pairs that ended with both directions closed cleanly.
    pub ended: u64,
    /// Pairs that ended with an error on one side (reset both).
    pub reset: u64,
    /// Bytes moved towards the side that was connected by the driver.
    pub bytes_out: u64,
    /// Bytes moved towards the side that was accepted.
    pub bytes_in: u64,
}

/// Splicing state outside the flow table.
#[derive(Debug, Default)]
pub(crate) struct SpliceState {
    /// Sockets of spliced flows the driver holds.
    pub(crate) open_socks: usize,
    pub(crate) stats: SpliceStats,
}

/// What splicing (TCP here, UDP in `udp/splice.rs`) may touch while it
/// handles an event, lent by the engine.
pub(crate) struct Ctx<'a> {
    pub(crate) cfg: &'a Config,
    /// The guest's addresses (where host connections are spliced to).
    pub(crate) guest: &'a GuestInfo,
    /// The listeners of forwarded ports (their namespace and target).
    pub(crate) listeners: &'a Listeners,
    /// The shared flow table: spliced flows live beside the others.
    pub(crate) flows: &'a mut FlowTable,
    /// Socket work for the driver.
    pub(crate) actions: &'a mut ActionQueue,
    pub(crate) counters: &'a mut Counters,
}

impl Ctx<'_> {
    /// Queues `a` for the driver (counted if the queue refuses it).
    pub(crate) fn act(&mut self, a: Action) {
        if !self.actions.push(a) {
            self.counters.actions_refused += 1;
        }
    }
}

/// The guest's own address of `family`: the one it was last seen using, or
/// the configured one.
pub(crate) fn guest_addr(cfg: &Config, guest: &GuestInfo, family: Family) -> Option<IpAddr> {
    match family {
        Family::V4 => guest
            .ip4_seen
            .or(cfg.ip4.as_ref().map(|c| c.addr))
            .filter(|a| !a.is_unspecified())
            .map(IpAddr::V4),
        Family::V6 => guest
            .ip6_seen
            .filter(|a| !a.is_unicast_link_local())
            .or(cfg.ip6.as_ref().map(|c| c.addr))
            .filter(|a| !a.is_unspecified())
            .map(IpAddr::V6),
    }
}

fn family_of(a: IpAddr) -> Family {
    match a {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

/// The splicing decision for a connection accepted on a listener of
/// `netns` from `peer` to `local`, forwarded to `target_port` (and to
/// `target_addr`, if the forward names one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Through the guest link, as any other connection.
    Tap,
    /// Spliced: connect a socket in `netns` to `target`.
    Splice { netns: Netns, target: SocketAddr },
    /// Refused (reset).
    Refuse,
}

/// Decides the path of a connection accepted on a listener in `netns` (see
/// the module documentation).
pub(crate) fn decide(
    cfg: &Config,
    guest: &GuestInfo,
    listener_netns: Netns,
    target_addr: Option<IpAddr>,
    target_port: u16,
    peer: SocketAddr,
    local: SocketAddr,
) -> Decision {
    let peer_ip = peer.ip().to_canonical();
    let local_ip = local.ip().to_canonical();
    match listener_netns {
        Netns::Guest => {
            if !cfg.splice || !peer_ip.is_loopback() || !local_ip.is_loopback() {
                return Decision::Refuse;
            }
            Decision::Splice {
                netns: Netns::Host,
                target: SocketAddr::new(local_ip, target_port),
            }
        }
        Netns::Host => {
            if !cfg.splice || target_addr.is_some() || !peer_ip.is_loopback() {
                // `--splice-only`: there is no guest link to take.
                if cfg.splice_only {
                    return Decision::Refuse;
                }
                return Decision::Tap;
            }
            let dst = if cfg.host_lo_to_ns_lo && local_ip.is_loopback() {
                Some(local_ip)
            } else {
                guest_addr(cfg, guest, family_of(peer_ip))
            };
            match dst {
                Some(d) => Decision::Splice {
                    netns: Netns::Guest,
                    target: SocketAddr::new(d, target_port),
                },
                None => Decision::Refuse,
            }
        }
    }
}

impl SpliceState {
    /// A connection from `peer` to `local` accepted on listener `listener`
    /// (flow `id`, socket `sock`, not yet counted as open): returns `false`
    /// if it takes the guest link; otherwise the flow became a spliced one
    /// (or was refused).
    pub(crate) fn accepted(
        &mut self,
        cx: &mut Ctx<'_>,
        (id, sock): (FlowId, SockId),
        listener: u32,
        target_port: u16,
        (peer, local): (SocketAddr, SocketAddr),
    ) -> bool {
        let Some(l) = cx.listeners.get(Proto::Tcp, listener) else {
            return false;
        };
        let (netns, target_addr) = (l.fwd.netns, l.fwd.target);
        let d = decide(
            cx.cfg,
            cx.guest,
            netns,
            target_addr,
            target_port,
            peer,
            local,
        );
        let (far_ns, target) = match d {
            Decision::Tap => return false,
            Decision::Refuse => {
                log::debug!("splice: refusing {peer} -> {local}");
                self.stats.refused += 1;
                cx.act(Action::SetOption {
                    sock,
                    opt: SockOpt::ResetOnClose,
                });
                cx.act(Action::Close { sock });
                cx.flows.free(id);
                return true;
            }
            Decision::Splice { netns, target } => (netns, target),
        };
        let gen = cx.flows.get(id).map_or(0, |f| f.gen);
        let far = flow::sock_id(id, gen, 1);
        if let Some(f) = cx.flows.get_mut(id) {
            f.data = FlowData::Splice(SpliceConn {
                phase: Phase::Connecting,
                open: [true, false],
                target,
            });
        }
        self.open_socks += 1;
        self.stats.accepted += 1;
        log::debug!("splice flow {}: {peer} -> {local}, to {target}", id.0);
        cx.act(Action::Open {
            sock: far,
            kind: SockKind::TcpStream,
            family: family_of(target.ip()),
            netns: far_ns,
        });
        cx.act(Action::Connect {
            sock: far,
            addr: target,
        });
        true
    }

    /// An event for a socket of a spliced flow; `false` if `sock` is not
    /// one.
    pub(crate) fn sock_event(&mut self, cx: &mut Ctx<'_>, sock: SockId, ev: SockEvent) -> bool {
        let SockRef::Flow { id, gen, side } = flow::decode(sock) else {
            return false;
        };
        let c = match cx.flows.get_mut(id) {
            Some(f) if f.gen == gen => match &mut f.data {
                FlowData::Splice(c) => c,
                _ => return false,
            },
            _ => return false,
        };
        let near = flow::sock_id(id, gen, 0);
        let far = flow::sock_id(id, gen, 1);
        match (ev, c.phase, side) {
            (SockEvent::OpenFailed(e), Phase::Connecting, 1) => {
                log::debug!("splice flow {}: socket for {}: {e:?}", id.0, c.target);
                self.end(cx, id, false, true);
            }
            (SockEvent::Connected(Ok(())), Phase::Connecting, 1) => {
                c.phase = Phase::Joined;
                c.open[1] = true;
                self.open_socks += 1;
                self.stats.joined += 1;
                // The join first: it moves the first bytes, which no Nagle
                // delay holds (nothing is unacknowledged yet); the options
                // are in place before anything follows them.
                cx.act(Action::Splice {
                    sock: near,
                    peer: far,
                });
                for s in [near, far] {
                    cx.act(Action::SetOption {
                        sock: s,
                        opt: SockOpt::NoDelay,
                    });
                }
            }
            (SockEvent::Connected(Err(e)), Phase::Connecting, 1) => {
                log::debug!("splice flow {}: connect to {}: {e:?}", id.0, c.target);
                // The driver holds the socket that failed to connect.
                c.open[1] = true;
                self.open_socks += 1;
                self.end(cx, id, false, true);
            }
            (SockEvent::SpliceEnded(r), Phase::Joined, 0) => match r {
                Ok(t) => {
                    self.stats.ended += 1;
                    self.stats.bytes_out += t.to_peer;
                    self.stats.bytes_in += t.from_peer;
                    self.end(cx, id, true, false);
                }
                Err(e) => {
                    log::debug!("splice flow {}: {e:?}", id.0);
                    self.stats.reset += 1;
                    self.end(cx, id, true, true);
                }
            },
            // Readiness of a socket not yet joined (the accepted one is not
            // registered; the connecting one reports `Connected`), or
            // anything after the join: the driver's business.
            _ => {}
        }
        true
    }

    /// Closes both sides of spliced flow `id` (with a reset if `reset`) and
    /// frees it. `joined`: the pair got as far as the driver.
    fn end(&mut self, cx: &mut Ctx<'_>, id: FlowId, joined: bool, reset: bool) {
        let Some(f) = cx.flows.get(id) else { return };
        let gen = f.gen;
        let FlowData::Splice(c) = f.data else { return };
        if !joined {
            self.stats.refused += 1;
        }
        for side in 0..2u8 {
            if !c.open[usize::from(side)] {
                continue;
            }
            let sock = flow::sock_id(id, gen, side);
            if reset {
                cx.act(Action::SetOption {
                    sock,
                    opt: SockOpt::ResetOnClose,
                });
            }
            cx.act(Action::Close { sock });
            self.open_socks = self.open_socks.saturating_sub(1);
        }
        cx.flows.free(id);
    }
}

#[cfg(test)]
mod tests;
