//! Helpers for the core's unit tests: the set-up of the reference captures, and
//! feeding frames through a [`Core`] the way a driver does.

use crate::{Config, Core, FrameBatch, FrameRef, Instant, Ip4Config, Ip6Config, Mac};
use core::net::{Ipv4Addr, Ipv6Addr};

/// The guest's MAC in the reference captures.
pub(crate) const GUEST_MAC: Mac = Mac([0x22, 0x72, 0xee, 0x22, 0xd2, 0x37]);

/// The configuration of the reference captures: host 10.77.0.2/24 and fd77::2,
/// gateway 10.77.0.1 and fd77::1, our link-local fe80::f0d8:fdff:fe4c:e225.
pub(crate) fn capture_config() -> Config {
    let mut ip4 = Ip4Config::new(
        Ipv4Addr::new(10, 77, 0, 2),
        24,
        Some(Ipv4Addr::new(10, 77, 0, 1)),
    );
    ip4.dns.push(Ipv4Addr::new(10, 77, 0, 1)).unwrap();
    let mut ip6 = Ip6Config::new(
        "fd77::2".parse().unwrap(),
        Some("fd77::1".parse().unwrap()),
        "fe80::f0d8:fdff:fe4c:e225".parse::<Ipv6Addr>().unwrap(),
    );
    ip6.dns.push("fd77::1".parse().unwrap()).unwrap();
    Config {
        ip4: Some(ip4),
        ip6: Some(ip6),
        search: vec!["example.org".into(), "test.example.org".into()],
        seed: 1,
        secret: [7; 16],
        duid_time: 0x3039_0000,
        ..Config::default()
    }
}

/// Feeds `frames` to `core` as one batch at `now`, laid end to end in one
/// buffer as a driver hands them over; returns the buffer (the spans of
/// `Send` actions point into it).
pub(crate) fn feed<F: AsRef<[u8]>>(
    core: &mut Core,
    now: Instant,
    frames: impl IntoIterator<Item = F>,
) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut refs = Vec::new();
    for f in frames {
        let f = f.as_ref();
        refs.push(FrameRef {
            offset: buf.len() as u32,
            len: f.len() as u32,
        });
        buf.extend_from_slice(f);
    }
    core.handle_tap_batch(now, &FrameBatch::new(&buf, &refs));
    buf
}

/// Feeds `frames` as one batch at `now` and returns every frame the core
/// queued for the guest, after draining actions (which must be none for the
/// link services).
pub(crate) fn exchange(core: &mut Core, now: Instant, frames: &[&[u8]]) -> Vec<Vec<u8>> {
    feed(core, now, frames);
    drain_frames(core)
}

/// A test harness around a core that keeps virtual time: runs the core's
/// timers as a driver does.
pub(crate) trait Clocked {
    fn core(&mut self) -> &mut Core;
    fn now(&mut self) -> &mut Instant;
    /// Calls `handle_timeout` at the current time and drains the outputs.
    fn timeout(&mut self);

    /// Runs virtual time forward by `ms`, firing timers when due.
    fn run_for(&mut self, ms: u64) {
        let end = self
            .now()
            .saturating_add(core::time::Duration::from_millis(ms));
        for _ in 0..100_000 {
            match self.core().poll_timeout() {
                Some(t) if t <= end => {
                    let now = self.now();
                    *now = (*now).max(t);
                    self.timeout();
                }
                _ => break,
            }
        }
        *self.now() = end;
        self.timeout();
    }
}

/// Every frame queued for the guest.
pub(crate) fn drain_frames(core: &mut Core) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut tx = vec![0u8; 65536 + 14];
    while let Some(n) = core.poll_frame(&mut tx) {
        out.push(tx[..n].to_vec());
    }
    out
}

/// Every action the core has queued, in order.
pub(crate) fn drain_actions(core: &mut Core) -> Vec<crate::Action> {
    let mut v = Vec::new();
    while let Some(a) = core.poll_action() {
        v.push(a);
    }
    v
}

/// The capture configuration with splicing set as given and forwards
/// `fwds`, a core started on it at time zero, its start-up actions
/// (listeners) drained.
pub(crate) fn splicing_core(
    splice: bool,
    splice_only: bool,
    lo_to_lo: bool,
    fwds: Vec<crate::config::Forward>,
) -> Core {
    let mut cfg = capture_config();
    cfg.splice = splice;
    cfg.splice_only = splice_only;
    cfg.host_lo_to_ns_lo = lo_to_lo;
    cfg.forwards = fwds;
    let mut c = Core::new(cfg);
    c.start(Instant::ZERO);
    drain_actions(&mut c);
    c
}

/// Implements [`Clocked`] for a harness with fields `core` and `now` and a
/// method `drain(&mut self, &[u8])` that takes the outputs. After
/// `handle_timeout`, no timer of the core's state `$proto` (`tcp`, `udp`)
/// may still be due: a timer that ran moved on (no busy loop).
macro_rules! impl_clocked {
    ($h:ty, $proto:ident) => {
        impl $crate::testutil::Clocked for $h {
            fn core(&mut self) -> &mut $crate::Core {
                &mut self.core
            }

            fn now(&mut self) -> &mut $crate::Instant {
                &mut self.now
            }

            fn timeout(&mut self) {
                self.core.handle_timeout(self.now);
                assert!(
                    self.core.$proto.poll_timeout().is_none_or(|t| t > self.now),
                    "timer still due after handle_timeout"
                );
                self.drain(&[]);
            }
        }
    };
}
pub(crate) use impl_clocked;
