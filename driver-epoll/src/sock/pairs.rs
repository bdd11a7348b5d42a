//! The pair table both splicers share: joined socket pairs by the id of
//! their first socket, and the pair each socket belongs to.

use crate::sock::SockTable;
use nix::sys::epoll::{Epoll, EpollFlags};
use passt_core::{Errno, SockEvent, SockId};
use std::collections::HashMap;

/// What a splicer reports to the core: the event on a pair's first socket,
/// once the pair has ended.
pub(crate) type Report = Option<(SockId, SockEvent)>;

/// What a splicer may touch while it joins a pair or handles a wake-up:
/// the epoll set its sockets are registered in and the socket table.
pub(crate) struct SockCx<'a> {
    pub(crate) epoll: &'a Epoll,
    pub(crate) socks: &'a mut SockTable,
}

impl SockCx<'_> {
    /// A pair to be joined whose socket `a` or `b` is gone ends at once.
    pub(crate) fn missing(&self, a: SockId, b: SockId) -> Report {
        let gone = self.socks.get(a).is_none() || self.socks.get(b).is_none();
        gone.then_some((a, SockEvent::SpliceEnded(Err(Errno::EBADF))))
    }
}

/// A joined pair: its two sockets, first the one the pair is known by,
/// whether it ended, and what the splicer keeps for it (`S`, reached
/// through `Deref`).
#[derive(Debug)]
pub(crate) struct Pair<S> {
    pub(crate) socks: [SockId; 2],
    /// Reported to the core: nothing more happens until `Close`.
    pub(crate) ended: bool,
    state: S,
}

impl<S> Pair<S> {
    /// A new pair of `a` and `b`.
    pub(crate) fn new(a: SockId, b: SockId, state: S) -> Self {
        Pair {
            socks: [a, b],
            ended: false,
            state,
        }
    }

    /// What the splicer kept for the pair, taken out.
    pub(crate) fn into_state(self) -> S {
        self.state
    }
}

impl<S> std::ops::Deref for Pair<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.state
    }
}

impl<S> std::ops::DerefMut for Pair<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.state
    }
}

/// Pairs by key (the id of their first socket) and socket → key.
#[derive(Debug)]
pub(crate) struct Pairs<S> {
    pairs: HashMap<u32, Pair<S>>,
    owner: HashMap<u32, u32>,
}

impl<S> Default for Pairs<S> {
    fn default() -> Self {
        Pairs {
            pairs: HashMap::new(),
            owner: HashMap::new(),
        }
    }
}

impl<S> Pairs<S> {
    /// Whether `sock` belongs to a joined pair.
    pub(crate) fn owns(&self, sock: SockId) -> bool {
        self.owner.contains_key(&sock.0)
    }

    /// Adds `pair` under the key of its first socket.
    pub(crate) fn insert(&mut self, pair: Pair<S>) -> u32 {
        let [a, b] = pair.socks;
        self.pairs.insert(a.0, pair);
        self.owner.insert(a.0, a.0);
        self.owner.insert(b.0, a.0);
        a.0
    }

    /// The key of the pair `sock` belongs to.
    pub(crate) fn key_of(&self, sock: SockId) -> Option<u32> {
        self.owner.get(&sock.0).copied()
    }

    /// The pair `sock` belongs to, unless it ended: its key, and the side
    /// of `sock` in it (0 or 1).
    pub(crate) fn live(&self, sock: SockId) -> Option<(u32, usize)> {
        let key = self.key_of(sock)?;
        let pair = self.pairs.get(&key)?;
        if pair.ended {
            return None;
        }
        Some((key, usize::from(pair.socks[1] == sock)))
    }

    /// Marks the pair ended and takes both its sockets out of the epoll
    /// set: nothing more happens until the core closes them.
    pub(crate) fn end(
        &mut self,
        epoll: &Epoll,
        socks: &mut SockTable,
        key: u32,
    ) -> Option<&mut Pair<S>> {
        self.end_each(key, |s| {
            let _ = socks.set_mask(epoll, s, EpollFlags::empty());
        })
    }

    /// Marks the pair ended, its sockets left in the epoll set: closing
    /// them takes them out (edge-triggered registrations, which wake the
    /// loop for nothing more than what the pair then ignores).
    pub(crate) fn end_with_close(
        &mut self,
        socks: &mut SockTable,
        key: u32,
    ) -> Option<&mut Pair<S>> {
        self.end_each(key, |s| socks.unregister_on_close(s))
    }

    /// Marks the pair ended and hands each of its sockets to `each`.
    fn end_each(&mut self, key: u32, mut each: impl FnMut(SockId)) -> Option<&mut Pair<S>> {
        let pair = self.pairs.get_mut(&key)?;
        pair.ended = true;
        for s in pair.socks {
            each(s);
        }
        Some(pair)
    }

    pub(crate) fn get(&self, key: u32) -> Option<&Pair<S>> {
        self.pairs.get(&key)
    }

    pub(crate) fn get_mut(&mut self, key: u32) -> Option<&mut Pair<S>> {
        self.pairs.get_mut(&key)
    }

    /// Forgets the pair `sock` belongs to, and both its sockets.
    pub(crate) fn remove(&mut self, sock: SockId) -> Option<Pair<S>> {
        let key = self.owner.remove(&sock.0)?;
        let pair = self.pairs.remove(&key)?;
        for s in pair.socks {
            self.owner.remove(&s.0);
        }
        Some(pair)
    }

    /// Pairs joined and not yet forgotten.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pairs.len()
    }
}
