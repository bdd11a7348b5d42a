//! Port forwarding: the forwards a driver asks for, and the one table of
//! listening sockets that serves them, TCP and UDP alike.
//!
//! A [`Forward`] names a range of host ports to listen on (an address or
//! every address, optionally bound to an interface) and where their
//! connections and datagrams go on the guest side (a port, and optionally an
//! address). The driver hands the core the complete set: in
//! [`Config::forwards`](crate::Config::forwards) for
//! [`Core::start`](crate::Core::start), and with
//! [`Core::set_forwards`](crate::Core::set_forwards) when it changes (a rescan
//! of `auto` forwarding). The command-line grammar that produces forwards is
//! the driver's business.
//!
//! The table holds one listener per forwarded port, in slots per protocol
//! whose index is part of the listener's socket id. A new set is matched
//! against the listeners by protocol, address, interface and port: listeners
//! no longer listed close, new ones open in the lowest free slots, kept ones
//! take the listed target. A listener that cannot be opened (its address
//! family is disabled, or `Open`, `Bind` or `Listen` fails) is logged,
//! counted and listed by [`Core::failed_forwards`](crate::Core::failed_forwards)
//! while it stays in the set, for TCP and UDP the same way.

use crate::action::{
    Action, BindOpts, Errno, Family, Interest, Netns, SockEvent, SockId, SockKind,
};
use crate::config::Config;
pub(crate) use crate::config::{Forward, Proto};
use crate::flow::{self, SockRef, LISTENER_BIT};
use crate::guest::GuestInfo;
use crate::nat;
use crate::queue::ActionQueue;
use crate::time::Instant;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};

/// Bit of a listener index (with [`LISTENER_BIT`]) marking UDP listeners.
/// TCP listeners use small indices, and `0x7fffffff` (which has this bit)
/// is TCP's id for refused connections.
pub(crate) const UDP_LISTENER_BIT: u32 = 1 << 30;
/// Most listener slots of one protocol.
const SLOTS_MAX: u32 = UDP_LISTENER_BIT - 2;
/// Listen backlog (as upstream).
const BACKLOG: u32 = 128;
/// Most actions the opening of a listener takes.
const OPEN_ACTIONS: usize = 4;
/// How long a TCP listener stops accepting once an `accept()` failed for
/// want of descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`).
/// The pending connection stays in the kernel's backlog, so the listener
/// stays readable: watched all the while, it would wake the loop at once,
/// again and again, until a descriptor frees up. Paused, it is looked at
/// five times a second.
pub(crate) const ACCEPT_PAUSE: Duration = Duration::from_millis(200);

/// Whether an `accept()` failed for want of resources, which a retry at
/// once does not cure.
pub(crate) fn accept_exhausted(e: Errno) -> bool {
    matches!(
        e,
        Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM
    )
}

/// A forwarded port whose listener the core could not open (see
/// [`Core::failed_forwards`](crate::Core::failed_forwards)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenFailure {
    /// The forward of that one port (`first == last`).
    pub forward: Forward,
    /// The address the listener was (to be) bound to; `None` if its
    /// address family is disabled.
    pub addr: Option<SocketAddr>,
    /// The error of the failed `Open`, `Bind` or `Listen`, or of the socket
    /// later; `None` if the address family is disabled or the socket hung
    /// up.
    pub error: Option<Errno>,
}

/// What the listener table did, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenStats {
    /// Listeners asked of the driver.
    pub opened: u64,
    /// Listeners that could not be opened, or failed later.
    pub failures: u64,
    /// Listeners closed because their forward went away.
    pub closed: u64,
    /// Times a TCP listener stopped accepting for [`ACCEPT_PAUSE`] because
    /// an `accept()` failed for want of descriptors or memory.
    pub accept_pauses: u64,
}

/// What became of a listener slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Unused (its forward was removed); the slot may be taken again.
    Free,
    /// To be opened when the action queue has room.
    Pending,
    /// The driver holds the socket.
    Open,
    /// Not opened (an action failed), or lost later (`None`: hung up).
    Failed(Option<Errno>),
    /// The address family of its address is disabled: not opened.
    NoFamily,
    /// The protocol is disabled: nothing opened.
    Off,
}

/// One forwarded port's listener.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Listener {
    /// The forward of this port (`first == last`).
    pub(crate) fwd: Forward,
    state: State,
    /// Bound address and port (the wildcard address of `family` when the
    /// forward has none).
    pub(crate) addr: SocketAddr,
    pub(crate) family: Family,
    pub(crate) v6_only: bool,
    /// `IP_FREEBIND` (`Config::freebind`), for the listener and the sockets
    /// of flows bound like it.
    pub(crate) freebind: bool,
    /// Not watched until [`Listeners::timeout`] (see [`ACCEPT_PAUSE`]).
    paused: bool,
}

/// Where an event on a listener's socket goes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listened {
    /// Not a listener's socket.
    NotListener,
    /// Taken care of here (a failed open, or a listener no longer open).
    Done,
    /// An event on open listener `slot` of `proto`, for the protocol.
    Open(Proto, u32),
}

/// The listeners of the forwarded ports.
///
/// A set of forwards may ask for more actions than the action queue holds
/// (`-t all` alone opens some 36 000 listeners): the `Close`s and the
/// opening of new listeners wait in `closing` and `pending`, and go out, in
/// that order, as the queue has room ([`Self::pump`]).
#[derive(Debug, Default)]
pub(crate) struct Listeners {
    /// `start` or `set` ran.
    started: bool,
    /// Slots by protocol ([`Proto::index`]).
    slots: [Vec<Listener>; 2],
    /// Sockets of removed listeners still to be closed.
    closing: VecDeque<SockId>,
    /// Slots still to be opened (those no longer pending are skipped).
    pending: VecDeque<(Proto, u32)>,
    /// Listener sockets the driver holds.
    open: usize,
    /// When paused listeners are watched again.
    resume_at: Option<Instant>,
    stats: ListenStats,
}

/// Namespace, address and port, interface: what tells two listeners of a
/// protocol apart.
type Key = (Proto, Netns, Option<IpAddr>, Option<u32>, u16);

impl Listeners {
    /// The socket id of listener `slot` of `proto`.
    pub(crate) fn sock(proto: Proto, slot: u32) -> SockId {
        match proto {
            Proto::Tcp => SockId(LISTENER_BIT | slot),
            Proto::Udp => SockId(LISTENER_BIT | UDP_LISTENER_BIT | slot),
        }
    }

    /// The protocol and slot of listener socket `sock`.
    pub(crate) fn decode(sock: SockId) -> Option<(Proto, u32)> {
        let SockRef::Other(idx) = flow::decode(sock) else {
            return None;
        };
        let (proto, slot) = if idx & UDP_LISTENER_BIT != 0 {
            (Proto::Udp, idx & !UDP_LISTENER_BIT)
        } else {
            (Proto::Tcp, idx)
        };
        (slot <= SLOTS_MAX).then_some((proto, slot))
    }

    /// Opens the listeners of the configured forwards, unless a set of
    /// forwards replaced them already.
    pub(crate) fn start(&mut self, cfg: &Config, actions: &mut ActionQueue) {
        if !self.started {
            self.set(cfg, actions, &cfg.forwards);
        }
    }

    /// Whether closes or openings wait for room in the action queue.
    pub(crate) fn waiting(&self) -> bool {
        !self.closing.is_empty() || !self.pending.is_empty()
    }

    /// Queues the waiting `Close`s, then the actions of pending listeners,
    /// as far as the action queue admits them.
    pub(crate) fn pump(&mut self, actions: &mut ActionQueue) {
        while let Some(&sock) = self.closing.front() {
            if !actions.admits(1) || !actions.push(Action::Close { sock }) {
                return;
            }
            self.closing.pop_front();
        }
        while let Some(&(proto, slot)) = self.pending.front() {
            if !actions.admits(OPEN_ACTIONS) {
                return;
            }
            self.pending.pop_front();
            self.open(actions, proto, slot);
        }
    }

    /// Replaces the forwards with `forwards` (the first listing of a port
    /// wins): listeners not listed close, new ones open, kept ones take the
    /// listed target. Flows and connections stay.
    pub(crate) fn set(&mut self, cfg: &Config, actions: &mut ActionQueue, forwards: &[Forward]) {
        self.started = true;
        // (A BTreeMap: no hasher seeded from OS randomness in the core.)
        let mut wanted: BTreeMap<Key, Forward> = BTreeMap::new();
        for f in forwards {
            for port in f.first..=f.last {
                let f = f.single(port);
                wanted.entry(key(&f)).or_insert(f);
            }
        }
        let mut free: [Vec<usize>; 2] = Default::default();
        for (slots, free) in self.slots.iter_mut().zip(free.iter_mut()) {
            for (i, l) in slots.iter_mut().enumerate() {
                if l.state == State::Free {
                    free.push(i);
                    continue;
                }
                if let Some(f) = wanted.remove(&key(&l.fwd)) {
                    l.fwd = f;
                    continue;
                }
                let was_open = l.state == State::Open;
                l.state = State::Free;
                free.push(i);
                if was_open {
                    self.open = self.open.saturating_sub(1);
                    self.stats.closed += 1;
                    self.closing.push_back(Self::sock(l.fwd.proto, i as u32));
                }
            }
            // Lowest free slots first.
            free.reverse();
        }
        for f in forwards {
            for port in f.first..=f.last {
                if let Some(f) = wanted.remove(&key(&f.single(port))) {
                    let slot = free[f.proto.index()].pop();
                    self.add(cfg, f, slot);
                }
            }
        }
        self.pump(actions);
    }

    /// Puts the forward of one port `f` in a slot of its protocol (`slot`,
    /// a free one, or a new one), to be opened.
    fn add(&mut self, cfg: &Config, f: Forward, slot: Option<usize>) {
        let bind = match f.addr {
            None if cfg.ip6.is_some() => Some((Family::V6, Ipv6Addr::UNSPECIFIED.into(), false)),
            None if cfg.ip4.is_some() => Some((Family::V4, Ipv4Addr::UNSPECIFIED.into(), false)),
            Some(a @ IpAddr::V4(_)) if cfg.ip4.is_some() => Some((Family::V4, a, false)),
            Some(a @ IpAddr::V6(_)) if cfg.ip6.is_some() => Some((Family::V6, a, true)),
            _ => None,
        };
        let enabled = match (f.proto, f.netns) {
            (Proto::Tcp, Netns::Host) => cfg.features.tcp,
            (Proto::Udp, Netns::Host) => cfg.features.udp,
            // The guest's loopback to the host's: spliced only.
            (Proto::Tcp, Netns::Guest) => cfg.features.tcp && cfg.splice,
            (Proto::Udp, Netns::Guest) => cfg.features.udp && cfg.splice,
        };
        let (family, ip, v6_only) =
            bind.unwrap_or((Family::V4, Ipv4Addr::UNSPECIFIED.into(), false));
        let state = match (bind, enabled) {
            (_, false) => State::Off,
            (None, true) => {
                log::warn!(
                    "{} listener on port {}: address family disabled",
                    f.proto,
                    f.first
                );
                self.stats.failures += 1;
                State::NoFamily
            }
            (Some(_), true) => State::Pending,
        };
        let l = Listener {
            fwd: f,
            state,
            addr: SocketAddr::new(ip, f.first),
            family,
            v6_only,
            freebind: cfg.freebind,
            paused: false,
        };
        let slots = &mut self.slots[f.proto.index()];
        let idx = match slot.filter(|&i| i < slots.len()) {
            Some(i) => {
                slots[i] = l;
                i
            }
            None if slots.len() <= SLOTS_MAX as usize => {
                slots.push(l);
                slots.len() - 1
            }
            None => {
                log::warn!("{} listener on port {}: too many", f.proto, f.first);
                return;
            }
        };
        if state == State::Pending {
            self.pending.push_back((f.proto, idx as u32));
        }
    }

    /// Opens pending listener `slot` of `proto`: `Open`, `Bind`, `Listen`
    /// for TCP, readable interest.
    fn open(&mut self, actions: &mut ActionQueue, proto: Proto, slot: u32) {
        let Some(l) = self.slots[proto.index()].get_mut(slot as usize) else {
            return;
        };
        if l.state != State::Pending {
            return;
        }
        l.state = State::Open;
        let l = *l;
        let sock = Self::sock(proto, slot);
        self.open += 1;
        self.stats.opened += 1;
        let kind = match proto {
            Proto::Tcp => SockKind::TcpListener,
            Proto::Udp => SockKind::Udp,
        };
        let listen = (proto == Proto::Tcp).then_some(Action::Listen {
            sock,
            backlog: BACKLOG,
        });
        let open = Action::Open {
            sock,
            kind,
            family: l.family,
            netns: l.fwd.netns,
        };
        let bind = Action::Bind {
            sock,
            addr: l.addr,
            opts: BindOpts {
                reuse_addr: true,
                v6_only: l.v6_only,
                device: l.fwd.ifindex,
                freebind: l.freebind,
            },
        };
        let interest = Action::SetInterest {
            sock,
            interest: Interest {
                readable: true,
                ..Interest::default()
            },
        };
        // Admitted beforehand (`pump`): the pushes find room.
        for a in [Some(open), Some(bind), listen, Some(interest)]
            .into_iter()
            .flatten()
        {
            let _ = actions.push(a);
        }
    }

    /// TCP listener `slot` ran out of descriptors or memory on `accept()`:
    /// it is not watched until `now` + [`ACCEPT_PAUSE`] (all TCP listeners
    /// if `slot` is `None`: the failed accept was one refusing a connection
    /// for want of a flow, whose listener is not remembered).
    pub(crate) fn pause_accept(
        &mut self,
        actions: &mut ActionQueue,
        slot: Option<u32>,
        now: Instant,
    ) {
        let proto = Proto::Tcp;
        let n = self.slots[proto.index()].len() as u32;
        let range = match slot {
            Some(s) => s..s.saturating_add(1).min(n),
            None => 0..n,
        };
        let mut any = false;
        for i in range {
            let Some(l) = self.slots[proto.index()].get_mut(i as usize) else {
                continue;
            };
            if l.state != State::Open || l.paused {
                continue;
            }
            let sock = Self::sock(proto, i);
            if !actions.push(Action::SetInterest {
                sock,
                interest: Interest::default(),
            }) {
                continue;
            }
            l.paused = true;
            any = true;
        }
        if any {
            self.stats.accept_pauses += 1;
            log::debug!("tcp: out of descriptors or memory on accept: pausing listeners");
            if self.resume_at.is_none() {
                self.resume_at = Some(now.saturating_add(ACCEPT_PAUSE));
            }
        }
    }

    /// Whether TCP listener `slot` is paused (readiness reported before
    /// the pause is ignored).
    pub(crate) fn accept_paused(&self, slot: u32) -> bool {
        self.slots[Proto::Tcp.index()]
            .get(slot as usize)
            .is_some_and(|l| l.paused)
    }

    /// When paused listeners are to be watched again.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.resume_at
    }

    /// Watches paused listeners again once their pause is over.
    pub(crate) fn timeout(&mut self, actions: &mut ActionQueue, now: Instant) {
        if self.resume_at.is_none_or(|t| t > now) {
            return;
        }
        self.resume_at = None;
        let proto = Proto::Tcp;
        let mut left = false;
        for i in 0..self.slots[proto.index()].len() {
            let sock = Self::sock(proto, i as u32);
            let l = &mut self.slots[proto.index()][i];
            if !l.paused {
                continue;
            }
            if l.state != State::Open {
                l.paused = false;
                continue;
            }
            let interest = Interest {
                readable: true,
                ..Interest::default()
            };
            if actions.push(Action::SetInterest { sock, interest }) {
                l.paused = false;
            } else {
                left = true;
            }
        }
        if left {
            self.resume_at = Some(now.saturating_add(ACCEPT_PAUSE));
        }
    }

    /// The open listener `slot` of `proto`.
    pub(crate) fn get(&self, proto: Proto, slot: u32) -> Option<&Listener> {
        self.slots[proto.index()]
            .get(slot as usize)
            .filter(|l| l.state == State::Open)
    }

    /// The address family of listener `slot` of `proto`, and whether it is
    /// IPv6 only, open or not.
    pub(crate) fn family(&self, proto: Proto, slot: u32) -> Option<(Family, bool)> {
        let l = self.slots[proto.index()].get(slot as usize)?;
        Some((l.family, l.v6_only))
    }

    /// First look at an event on socket `sock`: a failed open marks its
    /// listener failed; events on listeners that are not open are dropped.
    pub(crate) fn event(&mut self, sock: SockId, ev: SockEvent) -> Listened {
        let Some((proto, slot)) = Self::decode(sock) else {
            return Listened::NotListener;
        };
        let Some(l) = self.slots[proto.index()].get(slot as usize) else {
            return Listened::NotListener;
        };
        if l.state != State::Open {
            return Listened::Done;
        }
        if let SockEvent::OpenFailed(e) = ev {
            self.fail(proto, slot, Some(e), false);
            return Listened::Done;
        }
        Listened::Open(proto, slot)
    }

    /// Listener `slot` of `proto` failed with `e` (`None`: hung up): logged,
    /// counted, out of the open sockets. Returns the `Close` to queue if
    /// `close` (the driver still holds the socket).
    pub(crate) fn fail(
        &mut self,
        proto: Proto,
        slot: u32,
        e: Option<Errno>,
        close: bool,
    ) -> Option<Action> {
        let l = self.slots[proto.index()].get_mut(slot as usize)?;
        if l.state != State::Open {
            return None;
        }
        match e {
            Some(e) => log::warn!("{proto} listener on {}: {e:?}", l.addr),
            None => log::warn!("{proto} listener on {}: hung up", l.addr),
        }
        l.state = State::Failed(e);
        self.open = self.open.saturating_sub(1);
        self.stats.failures += 1;
        close.then_some(Action::Close {
            sock: Self::sock(proto, slot),
        })
    }

    /// The forwards whose listener could not be opened or failed, among the
    /// current ones.
    pub(crate) fn failures(&self) -> impl Iterator<Item = ListenFailure> + '_ {
        self.slots.iter().flatten().filter_map(|l| {
            let (addr, error) = match l.state {
                State::Failed(e) => (Some(l.addr), e),
                State::NoFamily => (None, None),
                _ => return None,
            };
            Some(ListenFailure {
                forward: l.fwd,
                addr,
                error,
            })
        })
    }

    /// Listener sockets the driver holds.
    pub(crate) fn open_count(&self) -> usize {
        self.open
    }

    /// What the table did.
    pub(crate) fn stats(&self) -> &ListenStats {
        &self.stats
    }

    /// The guest side of a connection or datagram from host peer `peer` to
    /// listener `slot` of `proto`: the source address the guest sees and the
    /// destination address (the forward's target, or the guest's address as
    /// [`nat::from_host`] maps it). `None` if the peer cannot be mapped, or
    /// the target is of the other family.
    pub(crate) fn guest_side(
        &self,
        cfg: &Config,
        guest: &GuestInfo,
        proto: Proto,
        slot: u32,
        peer: IpAddr,
    ) -> Option<(IpAddr, IpAddr)> {
        let (src, guest_addr) = nat::from_host(cfg, guest, peer)?;
        let target = self.slots[proto.index()]
            .get(slot as usize)
            .and_then(|l| l.fwd.target);
        match target {
            None => Some((src, guest_addr)),
            Some(t) if t.is_ipv6() == src.is_ipv6() => Some((src, t)),
            Some(_) => None,
        }
    }
}

fn key(f: &Forward) -> Key {
    (f.proto, f.netns, f.addr, f.ifindex, f.first)
}

#[cfg(test)]
mod tests;
