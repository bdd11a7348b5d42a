//! Helpers for the core's unit tests: the set-up of the reference captures,
//! feeding frames through a [`Core`] the way a driver does, and the harness
//! of the TCP and UDP tests ([`Harness`]), a core whose actions a fake kernel
//! answers.

use crate::action::{Action, SockEvent, SockId};
use crate::{Config, Core, FrameBatch, FrameRef, Instant, Ip4Config, Ip6Config, Mac};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use etherparse::{NetSlice, SlicedPacket};
use std::collections::HashMap;

/// The guest's MAC in the reference captures.
pub(crate) const GUEST_MAC: Mac = Mac([0x22, 0x72, 0xee, 0x22, 0xd2, 0x37]);

/// The guest's IPv4 address in the reference captures.
pub(crate) const GUEST4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The gateway's IPv4 address in the reference captures.
pub(crate) const GW4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// A peer beyond the gateway (documentation prefix).
pub(crate) const PEER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 80);

/// The guest's IPv6 address in the reference captures.
pub(crate) fn g6() -> Ipv6Addr {
    "fd77::2".parse().unwrap()
}
/// The gateway's IPv6 address in the reference captures.
pub(crate) fn gw6() -> Ipv6Addr {
    "fd77::1".parse().unwrap()
}
/// A peer beyond the gateway (documentation prefix).
pub(crate) fn p6() -> Ipv6Addr {
    "2001:db8::80".parse().unwrap()
}

/// The configuration of the reference captures: host 10.77.0.2/24 and fd77::2,
/// gateway 10.77.0.1 and fd77::1, our link-local fe80::f0d8:fdff:fe4c:e225.
pub(crate) fn capture_config() -> Config {
    let mut ip4 = Ip4Config::new(GUEST4, 24, Some(GW4));
    ip4.dns.push(GW4).unwrap();
    let mut ip6 = Ip6Config::new(
        g6(),
        Some(gw6()),
        "fe80::f0d8:fdff:fe4c:e225".parse::<Ipv6Addr>().unwrap(),
    );
    ip6.dns.push(gw6()).unwrap();
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

/// The socket address written `s`.
pub(crate) fn sa(s: &str) -> core::net::SocketAddr {
    s.parse().unwrap()
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

/// The `Bind` actions the core has queued, in order, each with the kind of
/// the socket (from its `Open`); the other actions are drained too.
pub(crate) fn drain_binds(
    core: &mut Core,
) -> Vec<(crate::SockKind, core::net::SocketAddr, crate::BindOpts)> {
    let mut kinds = HashMap::new();
    let mut binds = Vec::new();
    while let Some(a) = core.poll_action() {
        match a {
            Action::Open { sock, kind, .. } => {
                kinds.insert(sock, kind);
            }
            Action::Bind { sock, addr, opts } => binds.push((kinds[&sock], addr, opts)),
            _ => {}
        }
    }
    binds
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

/// Checks the Ethernet and IP headers of `f`, a frame the core sent to the
/// guest, re-parsed as `p`, as every such frame must have them: to the
/// guest's MAC from ours, the IPv4 header checksum, TTL or hop limit 255,
/// IPv4 ID 0 and DF clear, and the IP lengths (short frames are padded
/// with zeros to 60 bytes, 802.3). Returns the source and destination.
pub(crate) fn check_ip(f: &[u8], p: &SlicedPacket<'_>) -> (IpAddr, IpAddr) {
    assert_eq!(&f[0..6], &GUEST_MAC.0, "to the guest's MAC");
    assert_eq!(&f[6..12], &Mac::OUR_DEFAULT.0, "from our MAC");
    match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
            let end = usize::from(h.total_len) + 14;
            assert_eq!(end.max(60), f.len(), "IPv4 length");
            assert!(f[end..].iter().all(|&b| b == 0), "padding");
            assert_eq!(h.time_to_live, 255);
            assert_eq!(h.identification, 0);
            assert!(!h.dont_fragment);
            (h.source.into(), h.destination.into())
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(h.hop_limit, 255);
            assert_eq!(usize::from(h.payload_length) + 54, f.len(), "IPv6 length");
            (h.source.into(), h.destination.into())
        }
        _ => panic!("not IP"),
    }
}

/// Asserts that the checksum of transport segment `l4` (header and
/// payload, IP protocol `proto`) from `src` to `dst` verifies: the
/// one's-complement sum over the pseudo-header and the segment is all ones.
pub(crate) fn check_l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8], what: &str) {
    let (s, d) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (s.octets().to_vec(), d.octets().to_vec()),
        (IpAddr::V6(s), IpAddr::V6(d)) => (s.octets().to_vec(), d.octets().to_vec()),
        _ => panic!("mixed families {src} {dst}"),
    };
    let len = u32::try_from(l4.len()).unwrap().to_be_bytes();
    let mut sum = 0u32;
    for part in [&s[..], &d[..], &[0, 0, 0, proto][..], &len[..], l4] {
        for w in part.chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    assert_eq!(sum, 0xffff, "{what} checksum");
}

/// What a protocol's fake kernel adds to a [`Harness`]: its sockets, what
/// a frame to the guest re-parses into, and how it carries out actions.
pub(crate) trait FakeKernel: Sized {
    /// A socket of the fake kernel.
    type Sock;
    /// A frame to the guest, re-parsed.
    type Out;
    /// Re-parses frame `f` to the guest; `None`: not one the tests keep.
    fn parse(f: &[u8]) -> Option<Self::Out>;
    /// Carries out action `a` of `h` (`buf`: the batch its spans point
    /// into).
    fn carry_out(h: &mut Harness<Self>, a: Action, buf: &[u8]);
    /// The next deadline of the protocol's state in `core`.
    fn poll_timeout(core: &Core) -> Option<Instant>;
}

/// A core driven the way a driver drives it: guest frames go in, a fake
/// kernel (`K`) answers the actions, and every frame that comes out is
/// re-parsed and kept.
pub(crate) struct Harness<K: FakeKernel> {
    pub(crate) core: Core,
    pub(crate) now: Instant,
    pub(crate) socks: HashMap<SockId, K::Sock>,
    /// Every action, in order, until taken.
    pub(crate) actions: Vec<Action>,
    /// Every frame to the guest, in order, until taken.
    pub(crate) frames: Vec<K::Out>,
    /// Sockets the core closed, in order.
    pub(crate) closed: Vec<SockId>,
    /// The rest of the fake kernel's state.
    pub(crate) k: K,
}

impl<K: FakeKernel> Harness<K> {
    /// A harness around a core on `cfg` (the guest's MAC set to
    /// [`GUEST_MAC`]), not started, at 1 s.
    pub(crate) fn with(mut cfg: Config, k: K) -> Self {
        cfg.guest_mac = Some(GUEST_MAC);
        Harness {
            core: Core::new(cfg),
            now: Instant::from_millis(1000),
            socks: HashMap::new(),
            actions: vec![],
            frames: vec![],
            closed: vec![],
            k,
        }
    }

    /// Feeds guest frames as one batch, then drains.
    pub(crate) fn guest_raw(&mut self, frames: &[Vec<u8>]) {
        let buf = feed(&mut self.core, self.now, frames);
        self.drain(&buf);
    }

    pub(crate) fn event(&mut self, sock: SockId, ev: SockEvent) {
        self.core.handle_sock_event(self.now, sock, ev);
        self.drain(&[]);
    }

    /// Carries out every action (their spans point into `buf`), then
    /// takes the frames to the guest.
    pub(crate) fn drain(&mut self, buf: &[u8]) {
        for _ in 0..10_000 {
            let Some(a) = self.core.poll_action() else {
                break;
            };
            self.actions.push(a);
            K::carry_out(self, a, buf);
        }
        self.poll_frames();
    }

    /// Takes the frames the core queued for the guest.
    pub(crate) fn poll_frames(&mut self) {
        let mut tx = vec![0u8; 70000];
        while let Some(n) = self.core.poll_frame(&mut tx) {
            if let Some(o) = K::parse(&tx[..n]) {
                self.frames.push(o);
            }
        }
    }

    pub(crate) fn take_frames(&mut self) -> Vec<K::Out> {
        core::mem::take(&mut self.frames)
    }

    pub(crate) fn take_actions(&mut self) -> Vec<Action> {
        core::mem::take(&mut self.actions)
    }

    /// Asserts that the core holds no flow and no socket any more.
    pub(crate) fn assert_empty(&self) {
        assert_eq!(self.core.flow_count(), 0, "flows left");
        assert_eq!(self.core.socket_count(), 0, "sockets left");
    }

    /// Runs virtual time forward by `ms` and takes the frames sent to the
    /// guest meanwhile.
    pub(crate) fn frames_after(&mut self, ms: u64) -> Vec<K::Out> {
        self.run_for(ms);
        self.take_frames()
    }
}

/// After `handle_timeout`, no timer of the protocol's state may still be
/// due: a timer that ran moved on (no busy loop).
impl<K: FakeKernel> Clocked for Harness<K> {
    fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    fn now(&mut self) -> &mut Instant {
        &mut self.now
    }

    fn timeout(&mut self) {
        self.core.handle_timeout(self.now);
        assert!(
            K::poll_timeout(&self.core).is_none_or(|t| t > self.now),
            "timer still due after handle_timeout"
        );
        self.drain(&[]);
    }
}
