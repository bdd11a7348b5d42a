//! The core's two output queues.
//!
//! [`FrameQueue`] is a fixed-size byte ring of whole frames waiting to be
//! handed to the driver: control frames (ARP, NDP, DHCP replies, TCP flag
//! segments) are built in place here when an input is handled and copied out
//! by [`Core::poll_frame`](crate::Core::poll_frame). Memory is allocated once;
//! a full queue refuses new frames, and the caller counts the drop.
//!
//! [`ActionQueue`] holds the socket work read with
//! [`Core::poll_action`](crate::Core::poll_action).

use crate::action::Action;
use crate::config::Config;
use crate::counters::{Counters, DropReason};
use crate::wire::headers::UDP_HLEN;
use crate::wire::headers::{
    finish_ip_frame, finish_udp_frame, l4_offset, write_eth, Ends, ETH_HLEN,
};
use crate::wire::Mac;
use core::net::IpAddr;
use std::collections::VecDeque;

/// Largest control frame the core builds (DHCP and DHCPv6 replies with long
/// search lists are the biggest; a DHCP reply leaves out what does not fit).
pub(crate) const CONTROL_FRAME_MAX: usize = 2048;

#[derive(Debug)]
pub(crate) struct FrameQueue {
    buf: Box<[u8]>,
    /// (start, len) of queued frames, oldest first. Never grows past `max`.
    recs: VecDeque<(usize, usize)>,
    max: usize,
}

impl FrameQueue {
    pub(crate) fn new(bytes: usize, frames: usize) -> Self {
        FrameQueue {
            buf: vec![0; bytes].into_boxed_slice(),
            recs: VecDeque::with_capacity(frames),
            max: frames,
        }
    }

    /// Length of the oldest frame, if any.
    pub(crate) fn front_len(&self) -> Option<usize> {
        self.recs.front().map(|&(_, len)| len)
    }

    /// Frames queued (TCP numbers its frames for `handle_tap_sent`).
    pub(crate) fn len(&self) -> usize {
        self.recs.len()
    }

    /// Start of a free region of at least `need` bytes, if there is one.
    fn reserve(&self, need: usize) -> Option<usize> {
        let (Some(&(head, _)), Some(&(back, back_len))) = (self.recs.front(), self.recs.back())
        else {
            return (need <= self.buf.len()).then_some(0);
        };
        let tail = back + back_len;
        if back >= head {
            // Unwrapped: free space is [tail, end) and [0, head).
            if self.buf.len() - tail >= need {
                Some(tail)
            } else if head >= need {
                Some(0)
            } else {
                None
            }
        } else if head - tail >= need {
            // Wrapped: free space is [tail, head).
            Some(tail)
        } else {
            None
        }
    }

    /// Lends `max_len` bytes to `fill`, which writes a frame and returns its
    /// length (`None` to abandon it). Returns whether a frame was queued.
    pub(crate) fn push_with(
        &mut self,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Result<bool, QueueFull> {
        if self.recs.len() >= self.max {
            return Err(QueueFull);
        }
        let start = self.reserve(max_len).ok_or(QueueFull)?;
        let region = &mut self.buf[start..start + max_len];
        match fill(region) {
            Some(n) if n > 0 && n <= max_len => {
                self.recs.push_back((start, n));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Copies the oldest frame into `out` and removes it. A frame larger than
    /// `out` is removed and reported as `Err(len)`.
    pub(crate) fn pop_into(&mut self, out: &mut [u8]) -> Option<Result<usize, usize>> {
        let (start, len) = self.recs.pop_front()?;
        if self.recs.is_empty() {
            // As the action queue: start over at the front of the records.
            self.recs.clear();
        }
        match out.get_mut(..len) {
            Some(dst) => {
                dst.copy_from_slice(&self.buf[start..start + len]);
                Some(Ok(len))
            }
            None => Some(Err(len)),
        }
    }
}

/// Socket work for the driver, in the order it is to be carried out.
///
/// The queue holds at most [`Limits::actions`](crate::Limits::actions)
/// actions, allocated once: a push into a full queue is refused (the caller
/// counts it). New work is admitted only while a quarter of the queue stays
/// free ([`Self::admits`]), so that the actions that finish work already
/// under way (results, closes) find room.
#[derive(Debug)]
pub(crate) struct ActionQueue {
    q: VecDeque<Action>,
    cap: usize,
    /// Actions popped so far: the queue's front has this index (see
    /// [`Self::get_mut`]).
    popped: u64,
}

/// Least capacity of the action queue, whatever the configuration says: room
/// for the set-up of one socket besides the reserve.
pub(crate) const ACTIONS_MIN: usize = 64;

impl ActionQueue {
    /// A queue with room for `capacity` actions (at least [`ACTIONS_MIN`]),
    /// allocated now.
    pub(crate) fn new(capacity: usize) -> Self {
        let cap = capacity.max(ACTIONS_MIN);
        ActionQueue {
            q: VecDeque::with_capacity(cap),
            cap,
            popped: 0,
        }
    }

    /// Queues `a`; `false` (and `a` is dropped) if the queue is full.
    #[must_use]
    pub(crate) fn push(&mut self, a: Action) -> bool {
        if self.q.len() >= self.cap {
            return false;
        }
        self.q.push_back(a);
        true
    }

    /// Whether new work of up to `n` actions may start: it leaves a quarter
    /// of the queue free.
    pub(crate) fn admits(&self, n: usize) -> bool {
        self.q.len() + n + self.cap / 4 <= self.cap
    }

    /// The oldest action.
    pub(crate) fn pop(&mut self) -> Option<Action> {
        let a = self.q.pop_front()?;
        self.popped += 1;
        if self.q.is_empty() {
            // Back to the start of the buffer: the queue is drained after
            // every batch, so the memory it touches stays that of its
            // longest batch, not all of its capacity as the ring goes round
            // (`clear` resets the ring's head; a test below checks it).
            // Indices go on from `popped`.
            self.q.clear();
        }
        Some(a)
    }

    /// The index the next pushed action gets: every action keeps its index
    /// (counted from the first action ever queued) until it is popped.
    pub(crate) fn next_index(&self) -> u64 {
        self.popped + self.q.len() as u64
    }

    /// The queued action of index `index` (see [`Self::next_index`]), to
    /// amend it; `None` once it was popped.
    pub(crate) fn get_mut(&mut self, index: u64) -> Option<&mut Action> {
        let pos = usize::try_from(index.checked_sub(self.popped)?).ok()?;
        self.q.get_mut(pos)
    }
}

/// The control-frame queue has no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueFull;

/// What writing a frame to the guest needs, lent by the engine: the queue,
/// the counters (a full queue is a counted drop) and the configuration (our
/// MAC, and whatever the writer reads).
pub(crate) struct FrameOut<'a> {
    pub(crate) queue: &'a mut FrameQueue,
    pub(crate) counters: &'a mut Counters,
    pub(crate) cfg: &'a Config,
    /// Ethernet source of the frames: our MAC unless [`Self::with_src`]
    /// says otherwise (a LAN neighbour's, see `neigh.rs`).
    src_mac: Mac,
}

impl<'a> FrameOut<'a> {
    /// The writer over `queue`.
    pub(crate) fn new(
        queue: &'a mut FrameQueue,
        counters: &'a mut Counters,
        cfg: &'a Config,
    ) -> Self {
        FrameOut {
            queue,
            counters,
            cfg,
            src_mac: cfg.our_mac,
        }
    }

    /// The same writer, with `mac` as the Ethernet source.
    pub(crate) fn with_src(self, mac: Mac) -> Self {
        FrameOut {
            src_mac: mac,
            ..self
        }
    }

    /// Queues a frame of at most `max_len` bytes written by `fill`. Counts a
    /// drop if the queue is full. Returns whether a frame was queued.
    pub(crate) fn queue_frame(
        &mut self,
        max_len: usize,
        fill: impl FnOnce(&mut [u8], &Config) -> Option<usize>,
    ) -> bool {
        let cfg = self.cfg;
        match self.queue.push_with(max_len, |b| fill(b, cfg)) {
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
        let ends = Ends::new(dst_mac, self.src_mac, src, dst);
        self.queue_frame(off + max_payload, |b, cfg| {
            let n = fill(b.get_mut(off..)?, cfg)?;
            finish_udp_frame(b, ends, sport, dport, n)
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
        let ends = Ends::new(dst_mac, self.src_mac, src, dst);
        self.queue_frame(off + max_l4, |b, cfg| {
            let n = fill(b.get_mut(off..)?, cfg)?;
            finish_ip_frame(b, ends, proto, n)
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
        let our_mac = self.src_mac;
        self.queue_frame(ETH_HLEN + max_payload, |b, cfg| {
            let n = fill(b.get_mut(ETH_HLEN..)?, cfg)?;
            write_eth(b, dst_mac, our_mac, ethertype)?;
            Some(ETH_HLEN + n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fifo_and_wrap() {
        let mut q = FrameQueue::new(100, 10);
        for i in 0..3u8 {
            assert_eq!(
                q.push_with(40, |b| {
                    b[..30].fill(i);
                    Some(30)
                }),
                Ok(true)
            );
        }
        // 90 bytes used, 10 left: a 40-byte reservation does not fit.
        assert_eq!(q.push_with(40, |_| Some(1)), Err(QueueFull));
        let mut out = [0u8; 64];
        assert_eq!(q.pop_into(&mut out), Some(Ok(30)));
        assert!(out[..30].iter().all(|&b| b == 0));
        // Head at 30: a frame now fits at the start.
        assert_eq!(
            q.push_with(30, |b| {
                b.fill(9);
                Some(30)
            }),
            Ok(true)
        );
        assert_eq!(q.pop_into(&mut out), Some(Ok(30)));
        assert_eq!(out[0], 1);
        assert_eq!(q.pop_into(&mut out), Some(Ok(30)));
        assert_eq!(out[0], 2);
        assert_eq!(q.pop_into(&mut out), Some(Ok(30)));
        assert_eq!(out[0], 9);
        assert_eq!(q.pop_into(&mut out), None);
    }

    #[test]
    fn abandoned_and_oversized() {
        let mut q = FrameQueue::new(100, 2);
        assert_eq!(q.push_with(10, |_| None), Ok(false));
        assert_eq!(q.push_with(10, |_| Some(11)), Ok(false));
        assert_eq!(q.push_with(101, |_| Some(1)), Err(QueueFull));
        assert_eq!(q.push_with(50, |_| Some(50)), Ok(true));
        assert_eq!(q.push_with(10, |_| Some(5)), Ok(true));
        assert_eq!(q.push_with(10, |_| Some(5)), Err(QueueFull)); // frame count limit
        let mut small = [0u8; 10];
        assert_eq!(q.pop_into(&mut small), Some(Err(50)));
        assert_eq!(q.pop_into(&mut small), Some(Ok(5)));
        assert_eq!(q.len(), 0);
    }

    /// A drained queue starts over at the front of its buffer: batches of a
    /// few actions each touch the same few slots, never the whole ring.
    #[test]
    fn drained_queues_start_over_at_the_front() {
        let a = |i| Action::Close {
            sock: crate::action::SockId(i),
        };
        let mut q = ActionQueue::new(ACTIONS_MIN);
        assert!(q.push(a(0)));
        let front = q.q.as_slices().0.as_ptr();
        for round in 0..3 * ACTIONS_MIN as u32 {
            assert!(q.push(a(round)) && q.push(a(round + 1)));
            while q.pop().is_some() {}
            assert!(q.push(a(round)));
            assert_eq!(q.q.as_slices().0.as_ptr(), front, "round {round}");
            assert_eq!(q.pop(), Some(a(round)));
        }
        let mut f = FrameQueue::new(1000, 8);
        assert_eq!(f.push_with(10, |_| Some(10)), Ok(true));
        let front = f.recs.as_slices().0.as_ptr();
        let mut out = [0u8; 10];
        for round in 0..20 {
            assert_eq!(f.push_with(10, |_| Some(10)), Ok(true));
            while f.pop_into(&mut out).is_some() {}
            assert_eq!(f.push_with(10, |_| Some(10)), Ok(true), "round {round}");
            assert_eq!(f.recs.as_slices().0.as_ptr(), front, "round {round}");
        }
    }

    #[test]
    fn action_queue_is_bounded_with_a_reserve() {
        let a = Action::Close {
            sock: crate::action::SockId(1),
        };
        let mut q = ActionQueue::new(8);
        assert_eq!(q.cap, ACTIONS_MIN, "raised to the least capacity");
        // New work stops at three quarters, pushes at the capacity.
        assert!(q.admits(48));
        assert!(!q.admits(49));
        for _ in 0..48 {
            assert!(q.push(a));
        }
        assert!(!q.admits(1));
        for _ in 48..ACTIONS_MIN {
            assert!(q.push(a));
        }
        assert!(!q.push(a), "full");
        assert_eq!(q.next_index(), ACTIONS_MIN as u64);
        assert_eq!(q.pop(), Some(a));
        // Indices stay with their actions: the popped one is gone, the
        // next keeps its own, a new one takes the next.
        assert_eq!(q.get_mut(0), None);
        assert!(q.get_mut(1).is_some());
        assert!(q.get_mut(ACTIONS_MIN as u64).is_none());
        assert!(q.push(a));
        assert!(q.get_mut(ACTIONS_MIN as u64).is_some());
        assert_eq!(q.next_index(), ACTIONS_MIN as u64 + 1);
    }

    proptest! {
        /// Random pushes and pops behave like a FIFO of byte strings.
        #[test]
        fn behaves_like_fifo(ops in proptest::collection::vec((any::<bool>(), 1usize..60, any::<u8>()), 1..200)) {
            let mut q = FrameQueue::new(256, 8);
            let mut model: std::collections::VecDeque<Vec<u8>> = Default::default();
            let mut out = [0u8; 64];
            for (push, len, val) in ops {
                if push {
                    let r = q.push_with(len, |b| { b[..len].fill(val); Some(len) });
                    if r == Ok(true) { model.push_back(vec![val; len]); }
                } else {
                    match (q.pop_into(&mut out), model.pop_front()) {
                        (Some(Ok(n)), Some(m)) => prop_assert_eq!(&out[..n], &m[..]),
                        (None, None) => {}
                        (a, b) => prop_assert!(false, "queue {:?} model {:?}", a, b),
                    }
                }
                prop_assert_eq!(q.len(), model.len());
            }
        }
    }
}
