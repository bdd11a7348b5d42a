//! Per-flow timers: a binary heap of deadlines keyed by (deadline, flow id,
//! generation, kind), so that the next deadline is known in O(1) and each
//! due timer costs O(log n), whatever the number of flows.
//!
//! Invalidation is lazy: re-arming a timer pushes a new entry and leaves the
//! old one in the heap; an entry is stale once the flow's current deadline
//! for its kind (kept in a table beside the heap) differs from it, and is
//! dropped when it reaches the top. The top is kept live after every change,
//! so [`Timers::next`] is exact.
//!
//! Everything is allocated once: the table holds one deadline per flow and
//! kind, the heap twice that many entries. When the heap is full, the stale
//! entries are dropped at once (one entry per timer is live, at most half
//! of the heap, so this happens at most once every `capacity / 2` pushes:
//! O(1) amortised, no allocation).

use crate::flow::{FlowId, FlowTable};
use crate::time::Instant;
use core::cmp::Reverse;
use std::collections::BinaryHeap;

/// One armed timer; the field order is the heap's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at: Instant,
    flow: u32,
    gen: u8,
    kind: u8,
    /// Which arming of its timer this entry is (`Timers::stamp`): one
    /// entry per timer is live even if a deadline is armed again.
    stamp: u32,
}

/// A due timer, as [`Timers::pop_due`] hands it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Due {
    id: FlowId,
    gen: u8,
    kind: u8,
    /// The deadline it was armed for.
    at: Instant,
}

/// Timers of up to `flows` flows with `kinds` kinds each.
#[derive(Debug)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    /// The current deadline, generation and stamp of each flow and kind
    /// (`flow * kinds + kind`).
    current: Vec<Option<Armed>>,
    kinds: usize,
    /// Stamp of the next entry.
    stamp: u32,
    /// Heap operations so far (pushes, pops, entries kept by a
    /// compaction), for tests that show what timers cost.
    #[cfg(test)]
    pub(crate) ops: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Armed {
    at: Instant,
    gen: u8,
    stamp: u32,
}

impl Timers {
    /// Timers for flow ids below `flows`, of kinds below `kinds`.
    pub(crate) fn new(flows: usize, kinds: usize) -> Self {
        let slots = flows.saturating_mul(kinds.max(1));
        Timers {
            heap: BinaryHeap::with_capacity(slots.saturating_mul(2).max(2)),
            current: vec![None; slots],
            kinds: kinds.max(1),
            stamp: 0,
            #[cfg(test)]
            ops: 0,
        }
    }

    fn slot(&self, flow: u32, kind: u8) -> usize {
        (flow as usize)
            .saturating_mul(self.kinds)
            .saturating_add(usize::from(kind))
    }

    fn live(&self, e: &Entry) -> bool {
        self.current
            .get(self.slot(e.flow, e.kind))
            .copied()
            .flatten()
            .is_some_and(|a| a.stamp == e.stamp && a.at == e.at && a.gen == e.gen)
    }

    /// Arms the timer `kind` of flow `id` (generation `gen`) for `at`, or
    /// disarms it (`None`). Ids or kinds out of range are ignored.
    pub(crate) fn set(&mut self, id: FlowId, gen: u8, kind: u8, at: Option<Instant>) {
        if usize::from(kind) >= self.kinds {
            return;
        }
        let slot = self.slot(id.0, kind);
        let Some(cur) = self.current.get(slot).copied() else {
            return;
        };
        if cur.map(|a| (a.at, a.gen)) == at.map(|t| (t, gen)) {
            return;
        }
        let stamp = self.stamp;
        self.stamp = self.stamp.wrapping_add(1);
        let armed = at.map(|at| Armed { at, gen, stamp });
        if let Some(c) = self.current.get_mut(slot) {
            *c = armed;
        }
        if let Some(at) = at {
            if self.heap.len() == self.heap.capacity() {
                self.compact();
            }
            self.count_op(1);
            self.heap.push(Reverse(Entry {
                at,
                flow: id.0,
                gen,
                kind,
                stamp,
            }));
        }
        self.clean_top();
    }

    /// The current deadline of timer `kind` of flow `id`, if armed.
    #[cfg(test)]
    pub(crate) fn get(&self, id: FlowId, kind: u8) -> Option<(Instant, u8)> {
        let a = self.current.get(self.slot(id.0, kind)).copied().flatten()?;
        Some((a.at, a.gen))
    }

    /// The earliest armed deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.0.at)
    }

    /// Takes the earliest timer due at `now` (deadline at or before it),
    /// disarming it.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Due> {
        let Reverse(e) = *self.heap.peek()?;
        if e.at > now {
            return None;
        }
        self.count_op(1);
        self.heap.pop();
        // The top is live (`clean_top`): this timer is disarmed now.
        let slot = self.slot(e.flow, e.kind);
        if let Some(cur) = self.current.get_mut(slot) {
            *cur = None;
        }
        self.clean_top();
        Some(Due {
            id: FlowId(e.flow),
            gen: e.gen,
            kind: e.kind,
            at: e.at,
        })
    }

    /// Drops stale entries from the top, so that it is a live one.
    fn clean_top(&mut self) {
        while let Some(Reverse(e)) = self.heap.peek() {
            if self.live(e) {
                break;
            }
            self.count_op(1);
            self.heap.pop();
        }
    }

    /// Drops every stale entry.
    fn compact(&mut self) {
        let mut heap = core::mem::take(&mut self.heap);
        let visited = heap.len();
        heap.retain(|Reverse(e)| self.live(e));
        self.heap = heap;
        self.count_op(visited);
    }

    /// Counts `n` heap operations (tests only).
    #[cfg_attr(not(test), allow(unused_variables))]
    fn count_op(&mut self, n: usize) {
        #[cfg(test)]
        {
            self.ops += n as u64;
        }
    }
}

/// One timer per flow of a protocol, at or before the flow's deadline, and
/// the list the due flows are collected into (allocated once, with room for
/// every flow). A timer is armed when its flow's deadline is first known
/// and armed again when it runs early (traffic moved the deadline on), so
/// that traffic costs no timer work.
#[derive(Debug)]
pub(crate) struct FlowTimers {
    timers: Timers,
    due: Vec<FlowId>,
}

impl FlowTimers {
    /// The kind of the one timer of a flow.
    const KIND: u8 = 0;

    /// Timers for flow ids below `flows`.
    pub(crate) fn new(flows: usize) -> Self {
        FlowTimers {
            timers: Timers::new(flows, 1),
            due: Vec::with_capacity(flows),
        }
    }

    /// The earliest armed deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Arms the timer of flow `id` for `at` (`None`: disarms it), under the
    /// flow's current generation in `flows`.
    pub(crate) fn arm(&mut self, flows: &FlowTable, id: FlowId, at: Option<Instant>) {
        let gen = flows.get(id).map_or(0, |f| f.gen);
        self.timers.set(id, gen, Self::KIND, at);
    }

    /// The flows whose time is really up at `now`, in flow order. Each timer
    /// that fires is checked against the flow's current deadline,
    /// `deadline(flows, id)`, while the flow is still there under the
    /// generation the timer was armed for; one that moved later is armed
    /// again. Each flow fires once. The list is lent: hand it back with
    /// [`Self::done`], so that it is not allocated again.
    pub(crate) fn take_due(
        &mut self,
        now: Instant,
        flows: &FlowTable,
        deadline: impl Fn(&FlowTable, FlowId) -> Option<Instant>,
    ) -> Vec<FlowId> {
        let mut due = core::mem::take(&mut self.due);
        due.clear();
        while let Some(t) = self.timers.pop_due(now) {
            let live = flows.get(t.id).is_some_and(|f| f.gen == t.gen);
            match deadline(flows, t.id).filter(|_| live) {
                Some(d) if d <= now => due.push(t.id),
                Some(d) => self.timers.set(t.id, t.gen, Self::KIND, Some(d)),
                None => {}
            }
        }
        due.sort_unstable();
        due
    }

    /// Hands back the list of [`Self::take_due`].
    pub(crate) fn done(&mut self, due: Vec<FlowId>) {
        self.due = due;
    }

    /// Heap operations so far.
    #[cfg(test)]
    pub(crate) fn ops(&self) -> u64 {
        self.timers.ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// The plain scan the heap must agree with: a deadline per flow and kind.
    struct Scan {
        current: Vec<Option<(Instant, u8)>>,
        kinds: usize,
    }

    impl Scan {
        fn next(&self) -> Option<Instant> {
            self.current.iter().flatten().map(|d| d.0).min()
        }

        /// Everything due at `now`, disarmed.
        fn take_due(&mut self, now: Instant) -> BTreeSet<(u32, u8, u8, Instant)> {
            let mut due = BTreeSet::new();
            for (i, c) in self.current.iter_mut().enumerate() {
                if let Some((at, gen)) = *c {
                    if at <= now {
                        let (flow, kind) = (i / self.kinds, i % self.kinds);
                        due.insert((flow as u32, gen, kind as u8, at));
                        *c = None;
                    }
                }
            }
            due
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Arm(u32, u8, u8, u64),
        Disarm(u32, u8),
        Advance(u64),
    }

    fn op(flows: u32, kinds: u8) -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..flows, 0..kinds, 0u8..4, 0u64..2000).prop_map(|(f, k, g, t)| Op::Arm(f, k, g, t)),
            1 => (0..flows, 0..kinds).prop_map(|(f, k)| Op::Disarm(f, k)),
            1 => (0u64..500).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Random arm, disarm and advance sequences: the heap reports the
        /// same next deadline as a scan after every step, and the same due
        /// timers at every advance.
        #[test]
        fn heap_agrees_with_a_scan(ops in proptest::collection::vec(op(6, 3), 0..300)) {
            let (flows, kinds) = (6usize, 3usize);
            let mut t = Timers::new(flows, kinds);
            let cap = t.heap.capacity();
            let mut scan = Scan { current: vec![None; flows * kinds], kinds };
            let mut now = Instant::ZERO;
            for o in ops {
                match o {
                    Op::Arm(f, k, g, at) => {
                        // Deadlines in the past are allowed: due at once.
                        let at = Instant::from_millis(at);
                        t.set(FlowId(f), g, k, Some(at));
                        scan.current[f as usize * kinds + usize::from(k)] = Some((at, g));
                    }
                    Op::Disarm(f, k) => {
                        t.set(FlowId(f), 0, k, None);
                        scan.current[f as usize * kinds + usize::from(k)] = None;
                    }
                    Op::Advance(ms) => {
                        now = now.saturating_add(core::time::Duration::from_millis(ms));
                        let mut got = BTreeSet::new();
                        while let Some(d) = t.pop_due(now) {
                            prop_assert!(got.insert((d.id.0, d.gen, d.kind, d.at)), "due twice");
                        }
                        prop_assert_eq!(got, scan.take_due(now));
                    }
                }
                prop_assert_eq!(t.next(), scan.next());
                // Allocated once.
                prop_assert_eq!(t.heap.capacity(), cap);
            }
        }
    }

    #[test]
    fn rearming_one_timer_forever_never_grows_the_heap() {
        let mut t = Timers::new(2, 1);
        let cap = t.heap.capacity();
        for i in 0..10_000u64 {
            t.set(FlowId(1), 0, 0, Some(Instant::from_millis(10_000 - i)));
            t.set(FlowId(0), 0, 0, Some(Instant::from_millis(i)));
        }
        assert_eq!(t.heap.capacity(), cap);
        assert_eq!(t.next(), Some(Instant::from_millis(1)));
        assert_eq!(
            t.pop_due(Instant::from_millis(1)).map(|d| d.id),
            Some(FlowId(1))
        );
        assert_eq!(t.next(), Some(Instant::from_millis(9_999)));
    }

    #[test]
    fn arming_back_and_forth_keeps_one_live_entry() {
        let mut t = Timers::new(1, 1);
        let cap = t.heap.capacity();
        for i in 0..1000u64 {
            t.set(FlowId(0), 0, 0, Some(Instant::from_millis(5 + 2 * (i % 2))));
        }
        assert_eq!(t.heap.capacity(), cap);
        assert_eq!(t.next(), Some(Instant::from_millis(7)));
        assert!(t.pop_due(Instant::from_millis(100)).is_some());
        assert_eq!(t.pop_due(Instant::from_millis(100)), None);
        assert_eq!(t.next(), None);
    }

    #[test]
    fn out_of_range_is_ignored() {
        let mut t = Timers::new(1, 1);
        t.set(FlowId(5), 0, 0, Some(Instant::ZERO));
        t.set(FlowId(0), 0, 3, Some(Instant::ZERO));
        assert_eq!(t.next(), None);
        assert_eq!(t.get(FlowId(0), 0), None);
    }
}
