//! The guest link: one direction of the Ethernet link between the guest and
//! the core, with impairments drawn from its own seeded generator.

use passt_core::Instant;
use passt_core::Rng;
use std::fmt;

/// Impairments of one link direction.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct LinkProfile {
    /// Probability that a frame is lost.
    pub loss: f64,
    /// Probability that a frame is delivered twice.
    pub dup: f64,
    /// Probability that a frame is held back by up to `reorder_ns`.
    pub reorder: f64,
    /// Largest extra delay of a reordered frame.
    pub reorder_ns: u64,
    /// Fixed one-way delay.
    pub delay_ns: u64,
    /// Random extra delay, uniform in `0..jitter_ns`.
    pub jitter_ns: u64,
    /// Probability that one bit of a frame is flipped (checksums not fixed).
    pub corrupt: f64,
    /// Frames longer than this are dropped.
    pub mtu: Option<usize>,
}

impl LinkProfile {
    /// Whether the profile impairs anything at all.
    pub fn is_clean(&self) -> bool {
        *self == LinkProfile::default()
            || (self.loss == 0.0
                && self.dup == 0.0
                && self.reorder == 0.0
                && self.corrupt == 0.0
                && self.mtu.is_none()
                && self.jitter_ns == 0)
    }
}

impl fmt::Display for LinkProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.loss > 0.0 {
            parts.push(format!("loss {:.3}", self.loss));
        }
        if self.dup > 0.0 {
            parts.push(format!("dup {:.3}", self.dup));
        }
        if self.reorder > 0.0 {
            parts.push(format!(
                "reorder {:.3} window {}us",
                self.reorder,
                self.reorder_ns / 1000
            ));
        }
        if self.delay_ns > 0 {
            parts.push(format!("delay {}us", self.delay_ns / 1000));
        }
        if self.jitter_ns > 0 {
            parts.push(format!("jitter {}us", self.jitter_ns / 1000));
        }
        if self.corrupt > 0.0 {
            parts.push(format!("corrupt {:.3}", self.corrupt));
        }
        if let Some(m) = self.mtu {
            parts.push(format!("mtu {m}"));
        }
        if parts.is_empty() {
            f.write_str("clean")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

/// What happened to a frame put on the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Delivered once.
    Sent,
    /// Lost.
    Lost,
    /// Longer than the link MTU: dropped.
    TooBig,
    /// Delivered twice.
    Duplicated,
    /// Held back (may overtake nothing or be overtaken).
    Reordered,
    /// Delivered with a flipped bit.
    Corrupted,
}

/// Frames in flight in one direction.
#[derive(Debug)]
pub struct Link {
    /// Current impairments.
    pub profile: LinkProfile,
    rng: Rng,
    /// (arrival, order, frame, corrupted)
    flight: Vec<(Instant, u64, Vec<u8>, bool)>,
    order: u64,
    /// Frames lost, duplicated, reordered, corrupted, too big.
    pub stats: LinkStats,
}

/// Counters of one link direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames put on the link.
    pub sent: u64,
    /// Frames lost.
    pub lost: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Frames held back.
    pub reordered: u64,
    /// Frames corrupted.
    pub corrupted: u64,
    /// Frames dropped as too big.
    pub too_big: u64,
}

impl fmt::Display for LinkStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent={} lost={} dup={} reordered={} corrupted={} too_big={}",
            self.sent, self.lost, self.duplicated, self.reordered, self.corrupted, self.too_big
        )
    }
}

impl Link {
    /// A link with `profile` whose random choices come from `rng`.
    pub fn new(profile: LinkProfile, rng: Rng) -> Self {
        Link {
            profile,
            rng,
            flight: Vec::new(),
            order: 0,
            stats: LinkStats::default(),
        }
    }

    fn push(&mut self, at: Instant, frame: Vec<u8>, corrupted: bool) {
        self.order += 1;
        self.flight.push((at, self.order, frame, corrupted));
    }

    /// Puts `frame` on the link at `now`.
    pub fn send(&mut self, now: Instant, frame: &[u8]) -> Fate {
        self.stats.sent += 1;
        let p = self.profile.clone();
        if p.mtu.is_some_and(|m| frame.len() > m) {
            self.stats.too_big += 1;
            return Fate::TooBig;
        }
        if self.rng.chance(p.loss) {
            self.stats.lost += 1;
            return Fate::Lost;
        }
        let mut delay = p.delay_ns + self.rng.below(p.jitter_ns);
        let mut fate = Fate::Sent;
        if self.rng.chance(p.reorder) {
            delay += self.rng.below(p.reorder_ns.max(1));
            self.stats.reordered += 1;
            fate = Fate::Reordered;
        }
        let mut f = frame.to_vec();
        let mut corrupted = false;
        if !f.is_empty() && self.rng.chance(p.corrupt) {
            let i = self.rng.below(f.len() as u64) as usize;
            let bit = self.rng.below(8) as u32;
            if let Some(b) = f.get_mut(i) {
                *b ^= 1 << bit;
            }
            self.stats.corrupted += 1;
            corrupted = true;
            fate = Fate::Corrupted;
        }
        let at = now.saturating_add(std::time::Duration::from_nanos(delay));
        if self.rng.chance(p.dup) {
            self.stats.duplicated += 1;
            let extra = self.rng.below(p.jitter_ns.max(p.reorder_ns).max(1));
            self.push(
                at.saturating_add(std::time::Duration::from_nanos(extra)),
                f.clone(),
                corrupted,
            );
            fate = Fate::Duplicated;
        }
        self.push(at, f, corrupted);
        fate
    }

    /// When the next frame arrives, if any is in flight.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.flight.iter().map(|e| e.0).min()
    }

    /// Every frame that has arrived by `now`, in arrival order, with whether
    /// it was corrupted.
    pub fn take_arrived(&mut self, now: Instant) -> Vec<(Vec<u8>, bool)> {
        let mut due: Vec<_> = Vec::new();
        let mut keep = Vec::with_capacity(self.flight.len());
        for e in self.flight.drain(..) {
            if e.0 <= now {
                due.push(e);
            } else {
                keep.push(e);
            }
        }
        self.flight = keep;
        due.sort_by_key(|e| (e.0, e.1));
        due.into_iter().map(|e| (e.2, e.3)).collect()
    }

    /// Frames in flight.
    pub fn in_flight(&self) -> usize {
        self.flight.len()
    }

    /// The frames in flight, in no particular order.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> {
        self.flight.iter().map(|e| e.2.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_link_delivers_in_order() {
        let mut l = Link::new(LinkProfile::default(), Rng::new(1));
        for i in 0..10u8 {
            assert_eq!(l.send(Instant::ZERO, &[i]), Fate::Sent);
        }
        let got: Vec<u8> = l
            .take_arrived(Instant::ZERO)
            .into_iter()
            .map(|f| f.0[0])
            .collect();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert_eq!(l.next_arrival(), None);
    }

    #[test]
    fn impairments_happen_and_repeat_per_seed() {
        let p = LinkProfile {
            loss: 0.2,
            dup: 0.2,
            reorder: 0.3,
            reorder_ns: 1_000_000,
            corrupt: 0.1,
            mtu: Some(50),
            ..Default::default()
        };
        let run = |seed| {
            let mut l = Link::new(p.clone(), Rng::new(seed));
            let fates: Vec<Fate> = (0..200u32)
                .map(|i| l.send(Instant::ZERO, &vec![i as u8; 10 + (i as usize % 60)]))
                .collect();
            let out = l.take_arrived(Instant::from_millis(10));
            (fates, out, l.stats)
        };
        let (f1, o1, s1) = run(5);
        let (f2, o2, s2) = run(5);
        assert_eq!((&f1, &o1, s1), (&f2, &o2, s2));
        assert!(s1.lost > 0 && s1.duplicated > 0 && s1.reordered > 0 && s1.corrupted > 0);
        assert!(s1.too_big > 0);
        assert!(o1.iter().all(|f| f.0.len() <= 50));
        let (f3, ..) = run(6);
        assert_ne!(f1, f3);
    }

    #[test]
    fn delay_holds_frames() {
        let p = LinkProfile {
            delay_ns: 5_000_000,
            ..Default::default()
        };
        let mut l = Link::new(p, Rng::new(1));
        l.send(Instant::ZERO, b"x");
        assert!(l.take_arrived(Instant::from_millis(4)).is_empty());
        assert_eq!(l.next_arrival(), Some(Instant::from_millis(5)));
        assert_eq!(l.take_arrived(Instant::from_millis(5)).len(), 1);
    }
}
