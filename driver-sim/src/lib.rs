//! # passt-driver-sim
//!
//! The deterministic simulator of passt-rs: the second driver of
//! [`passt_core`]. It carries out every [`passt_core::Action`] on a simulated
//! host kernel ([`kernel`]) in the same call order as the epoll driver, owns a
//! virtual clock that jumps from event to event, impairs the guest link with
//! faults drawn from a seed ([`link`], [`sweep::profile`]), and checks
//! invariants after every step ([`check`], [`sim`]): frames re-parse with valid
//! checksums, the guest is never acknowledged data the host socket did not
//! take, byte streams arrive whole and in order, closes map to closes, sockets
//! and flows go back to zero.
//!
//! Scenarios are written in a packetdrill-style dialect ([`scenario`]): `<`
//! guest frames, `>` expected frames, host application syscalls and `sim`
//! directives (peers, faults, captures to replay, model guest endpoints from
//! [`guest`]). `docs/simulator.md` is the reference; the corpus lives in
//! `tests/scenarios/` and its timelines in `snapshots/sim/`.
//!
//! ```
//! use passt_driver_sim::scenario::{run, RunOptions, Scenario};
//!
//! let text = "# ARP for the gateway\n\
//!             `sim config capture`\n\
//!             0  < arp who-has 10.77.0.1\n\
//!             +0 > ARP reply 10.77.0.1 is-at 9a:55:9a:55:9a:55\n";
//! let sc = Scenario::parse("arp", std::path::Path::new("."), text).unwrap();
//! let r = run(&sc, &RunOptions::default()).unwrap();
//! assert!(r.ok(), "{:?} {:?}", r.failures, r.violations);
//! assert!(r.timeline.contains("core>  ARP reply 10.77.0.1"));
//! ```

pub mod check;
pub mod frame;
pub mod fuzz;
pub mod guest;
pub mod kernel;
pub mod link;
pub mod plot;
pub mod replay;
pub mod scenario;
pub mod sim;
pub mod splice;
pub mod sweep;
pub mod tx;
