//! The transmit side of the simulated guest link, as the core's
//! [`TxRing`]: slots lent for frames and, on flush, frames taken by the
//! link, all of them or (with a [`TxProfile`]) part of them, or none for a
//! while, as a guest that is slow to post receive buffers or a socket
//! that is full would.

use passt_core::{FrameMeta, Instant, Reserved, Rng, SlotUse, TxRing, MAX_FRAME};
use std::fmt;

/// Most slots lent at once (the epoll driver's arena).
pub const TX_SLOTS: usize = 128;

/// How the link takes what the core hands it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TxProfile {
    /// Probability that a flush is taken only in part: a random number of
    /// its first frames (maybe none), after which the link has no room
    /// for a while.
    pub partial: f64,
    /// Longest time without room after a partial flush.
    pub busy_ns: u64,
    /// Most slots lent per reservation (0: [`TX_SLOTS`]).
    pub max_slots: usize,
}

impl TxProfile {
    /// Whether the link takes everything, always.
    pub fn is_clean(&self) -> bool {
        self.partial == 0.0 && self.max_slots == 0
    }
}

impl fmt::Display for TxProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return f.write_str("takes everything");
        }
        write!(
            f,
            "partial {:.3} busy up to {}us, at most {} slots",
            self.partial,
            self.busy_ns / 1000,
            if self.max_slots == 0 {
                TX_SLOTS
            } else {
                self.max_slots
            }
        )
    }
}

/// The simulated transmit ring.
pub struct SimTx {
    pub profile: TxProfile,
    rng: Rng,
    /// Slot buffers, reused.
    slots: Vec<Vec<u8>>,
    /// Slots lent and not committed yet.
    lent: usize,
    /// Frames committed and not flushed, with their offload metadata.
    committed: Vec<(Vec<u8>, FrameMeta)>,
    /// What the last flushes sent, for the simulator to put on the wire.
    pub sent: Vec<Vec<u8>>,
    /// Frames the link refused since the simulator last looked.
    pub refused: Vec<Vec<u8>>,
    /// No room before this time.
    pub busy_until: Instant,
    /// The current time, set by the simulator.
    pub now: Instant,
    /// Frames taken with TCP segmentation metadata (each split before it
    /// reached the wire).
    pub gso_frames: u64,
}

impl SimTx {
    pub fn new(profile: TxProfile, rng: Rng) -> SimTx {
        SimTx {
            profile,
            rng,
            slots: Vec::new(),
            lent: 0,
            committed: Vec::new(),
            sent: Vec::new(),
            refused: Vec::new(),
            busy_until: Instant::ZERO,
            now: Instant::ZERO,
            gso_frames: 0,
        }
    }

    fn cap(&self) -> usize {
        if self.profile.max_slots == 0 {
            TX_SLOTS
        } else {
            self.profile.max_slots.min(TX_SLOTS)
        }
    }
}

impl SimTx {
    /// A frame as the link passes it on: as it is, or, with offload
    /// metadata, checked, completed and split as a tap with virtio-net
    /// headers does. Metadata that does not fit its frame is a bug of the
    /// core.
    fn finish(&mut self, f: Vec<u8>, m: FrameMeta) -> Vec<Vec<u8>> {
        if m == FrameMeta::PLAIN {
            return vec![f];
        }
        self.gso_frames += u64::from(m.gso.is_some());
        crate::frame::finish_offloaded(&f, &m)
            .unwrap_or_else(|e| panic!("bad offload metadata from the core: {e}"))
    }
}

impl TxRing for SimTx {
    fn reserve(&mut self, n: usize, len: usize, _how: SlotUse) -> usize {
        if self.now < self.busy_until {
            return 0;
        }
        let free = self.cap().saturating_sub(self.committed.len() + self.lent);
        let k = n.min(free);
        let len = len.min(MAX_FRAME);
        while self.slots.len() < self.lent + k {
            self.slots.push(Vec::new());
        }
        for s in &mut self.slots[self.lent..self.lent + k] {
            s.clear();
            s.resize(len, 0);
        }
        self.lent += k;
        k
    }

    fn reserved<'a>(&'a mut self, areas: &mut Reserved<'a>) {
        let n = self.lent.min(areas.remaining_capacity());
        areas.extend(self.slots.iter_mut().take(n).map(Vec::as_mut_slice));
    }

    fn commit(&mut self, lens: &[usize]) {
        self.commit_meta(lens, &[]);
    }

    fn commit_meta(&mut self, lens: &[usize], meta: &[FrameMeta]) {
        for (i, (s, &l)) in self.slots.iter().zip(lens).take(self.lent).enumerate() {
            if l > 0 {
                let m = meta.get(i).copied().unwrap_or(FrameMeta::PLAIN);
                self.committed.push((s.get(..l).unwrap_or(s).to_vec(), m));
            }
        }
        self.lent = 0;
    }

    fn pending(&self) -> usize {
        self.committed.len()
    }

    fn flush(&mut self) -> usize {
        let n = self.committed.len();
        let take = if n > 0 && self.profile.partial > 0.0 && self.rng.chance(self.profile.partial) {
            let busy = self.rng.range(1, self.profile.busy_ns.max(2));
            self.busy_until = self
                .now
                .saturating_add(std::time::Duration::from_nanos(busy));
            self.rng.below(n as u64 + 1) as usize
        } else {
            n
        };
        let mut frames = std::mem::take(&mut self.committed);
        // What the link does with frames that carry offload metadata (a tap
        // with virtio-net headers): checked, completed, split in MSS.
        for (f, m) in frames.drain(take..) {
            let out = self.finish(f, m);
            self.refused.extend(out);
        }
        for (f, m) in frames {
            let out = self.finish(f, m);
            self.sent.extend(out);
        }
        take
    }
}
