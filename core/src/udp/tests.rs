//! UDP and ICMP echo translation, driven the way a driver drives it: guest
//! frames built with etherparse go in, a small fake kernel answers the
//! actions (sendmmsg into per-socket logs, recvmmsg out of per-socket
//! queues into transmit slots), and every frame that comes out is re-parsed
//! with etherparse, checksums verified.

use super::*;
use crate::action::{RxDatagram, DATAGRAM_ROOM};
use crate::counters::DropReason;
use crate::flow::LISTENER_BIT;
use crate::fwd::UDP_LISTENER_BIT;
use crate::fwd::{Forward, Proto};
use crate::testutil::{capture_config, GUEST_MAC};
use crate::wire::Mac;
use crate::{Core, FrameBatch, FrameRef};
use etherparse::{
    Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket,
    TransportSlice,
};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet, VecDeque};

// --- the fake kernel ------------------------------------------------------

#[derive(Debug, Default)]
struct FakeSock {
    kind: Option<SockKind>,
    family: Option<Family>,
    bind: Option<(SocketAddr, BindOpts)>,
    connect: Option<SocketAddr>,
    broadcast: bool,
    interest: Option<Interest>,
    /// Datagrams written by the core, in order.
    sent: Vec<Vec<u8>>,
    /// `SendDatagrams` actions seen.
    sends: usize,
    /// Destination of the last `SendDatagrams` (unconnected sockets).
    sent_to: Option<SocketAddr>,
    /// Datagrams waiting to be received: (peer, bytes).
    rx: VecDeque<(SocketAddr, Vec<u8>)>,
}

/// One guest-bound frame, re-parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Out {
    src: IpAddr,
    dst: IpAddr,
    /// UDP ports, or the echo id twice.
    sport: u16,
    dport: u16,
    /// Echo sequence number (ICMP only).
    seq: Option<u16>,
    icmp: bool,
    payload: Vec<u8>,
}

struct H {
    core: Core,
    now: Instant,
    socks: HashMap<SockId, FakeSock>,
    actions: Vec<Action>,
    frames: Vec<Out>,
    closed: Vec<SockId>,
    /// Ports whose bind fails with EADDRINUSE.
    busy_ports: HashSet<u16>,
    /// Ping sockets are refused (ping_group_range).
    no_ping: bool,
    /// Most datagrams a `SendDatagrams` takes (None: all).
    send_limit: Option<usize>,
}

const GUEST4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const GW4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const PEER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 80);

fn g6() -> Ipv6Addr {
    "fd77::2".parse().unwrap()
}
fn gw6() -> Ipv6Addr {
    "fd77::1".parse().unwrap()
}
fn p6() -> Ipv6Addr {
    "2001:db8::80".parse().unwrap()
}
fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn parse_out(f: &[u8]) -> Out {
    assert_eq!(&f[0..6], &GUEST_MAC.0, "to the guest's MAC");
    assert_eq!(&f[6..12], &Mac::OUR_DEFAULT.0, "from our MAC");
    let p = SlicedPacket::from_ethernet(f).expect("frame re-parses");
    let (src, dst, s4, d4, s6, d6) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
            assert_eq!(usize::from(h.total_len) + 14, f.len(), "IPv4 length");
            (
                IpAddr::V4(h.source.into()),
                IpAddr::V4(h.destination.into()),
                h.source,
                h.destination,
                [0; 16],
                [0; 16],
            )
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(usize::from(h.payload_length) + 54, f.len(), "IPv6 length");
            (
                IpAddr::V6(h.source.into()),
                IpAddr::V6(h.destination.into()),
                [0; 4],
                [0; 4],
                h.source,
                h.destination,
            )
        }
        _ => panic!("not IP"),
    };
    match &p.transport {
        Some(TransportSlice::Udp(u)) => {
            let h = u.to_header();
            let c = if src.is_ipv6() {
                h.calc_checksum_ipv6_raw(s6, d6, u.payload()).unwrap()
            } else {
                h.calc_checksum_ipv4_raw(s4, d4, u.payload()).unwrap()
            };
            assert_eq!(u.checksum(), c, "UDP checksum");
            Out {
                src,
                dst,
                sport: u.source_port(),
                dport: u.destination_port(),
                seq: None,
                icmp: false,
                payload: u.payload().to_vec(),
            }
        }
        Some(TransportSlice::Icmpv4(i)) => {
            let Icmpv4Type::EchoReply(e) = i.icmp_type() else {
                panic!("not an echo reply: {:?}", i.icmp_type());
            };
            let c = Icmpv4Header::with_checksum(i.icmp_type(), i.payload()).checksum;
            assert_eq!(i.checksum(), c, "ICMP checksum");
            Out {
                src,
                dst,
                sport: e.id,
                dport: e.id,
                seq: Some(e.seq),
                icmp: true,
                payload: i.payload().to_vec(),
            }
        }
        Some(TransportSlice::Icmpv6(i)) => {
            let Icmpv6Type::EchoReply(e) = i.icmp_type() else {
                panic!("not an echo reply: {:?}", i.icmp_type());
            };
            let c = Icmpv6Header::with_checksum(i.icmp_type(), s6, d6, i.payload())
                .unwrap()
                .checksum;
            assert_eq!(i.checksum(), c, "ICMPv6 checksum");
            Out {
                src,
                dst,
                sport: e.id,
                dport: e.id,
                seq: Some(e.seq),
                icmp: true,
                payload: i.payload().to_vec(),
            }
        }
        t => panic!("unexpected transport {t:?}"),
    }
}

/// A UDP datagram from the guest.
fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(GUEST_MAC.0, Mac::OUR_DEFAULT.0);
    let b = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), 64).udp(sport, dport),
        (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), 64).udp(sport, dport),
        _ => panic!(),
    };
    let mut v = Vec::new();
    b.write(&mut v, data).unwrap();
    v
}

/// An echo request from the guest.
fn ping(src: IpAddr, dst: IpAddr, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(GUEST_MAC.0, Mac::OUR_DEFAULT.0);
    let mut v = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b
            .ipv4(s.octets(), d.octets(), 64)
            .icmpv4_echo_request(id, seq)
            .write(&mut v, data)
            .unwrap(),
        (IpAddr::V6(s), IpAddr::V6(d)) => b
            .ipv6(s.octets(), d.octets(), 64)
            .icmpv6_echo_request(id, seq)
            .write(&mut v, data)
            .unwrap(),
        _ => panic!(),
    }
    v
}

/// An echo reply as a ping socket returns it (ICMP header and data, with
/// the socket's id; the checksum is whatever the kernel left).
fn echo_reply(v6: bool, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut v = vec![if v6 { 129 } else { 0 }, 0, 0xde, 0xad];
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(data);
    v
}

impl H {
    fn new(cfg: Config) -> H {
        let mut cfg = cfg;
        cfg.guest_mac = Some(GUEST_MAC);
        // No unsolicited router advertisements in the frame log.
        cfg.features.ra = false;
        let mut h = H {
            core: Core::new(cfg),
            now: Instant::from_millis(1000),
            socks: HashMap::new(),
            actions: vec![],
            frames: vec![],
            closed: vec![],
            busy_ports: HashSet::new(),
            no_ping: false,
            send_limit: None,
        };
        h.core.start(h.now);
        h.drain(&[]);
        h
    }

    fn guest(&mut self, frames: &[Vec<u8>]) {
        let mut buf = Vec::new();
        let mut refs = Vec::new();
        for f in frames {
            refs.push(FrameRef {
                offset: buf.len() as u32,
                len: f.len() as u32,
            });
            buf.extend_from_slice(f);
        }
        self.core
            .handle_tap_batch(self.now, &FrameBatch::new(&buf, &refs));
        self.drain(&buf);
    }

    fn event(&mut self, sock: SockId, ev: SockEvent) {
        self.core.handle_sock_event(self.now, sock, ev);
        self.drain(&[]);
    }

    /// The host peer `peer` sends `data` to socket `sock`, which becomes
    /// readable.
    fn host(&mut self, sock: SockId, peer: SocketAddr, data: &[u8]) {
        self.host_many(sock, &[(peer, data.to_vec())]);
    }

    fn host_many(&mut self, sock: SockId, dgrams: &[(SocketAddr, Vec<u8>)]) {
        let s = self.socks.get_mut(&sock).expect("socket exists");
        s.rx.extend(dgrams.iter().cloned());
        self.event(sock, SockEvent::Readable);
    }

    fn timeout(&mut self) {
        self.core.handle_timeout(self.now);
        assert!(
            self.core.udp.poll_timeout().is_none_or(|t| t > self.now),
            "timer still due after handle_timeout"
        );
        self.drain(&[]);
    }

    /// Runs virtual time forward by `ms`, firing timers when due.
    fn run_for(&mut self, ms: u64) {
        let end = self.now.saturating_add(Duration::from_millis(ms));
        for _ in 0..100_000 {
            match self.core.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.timeout();
                }
                _ => break,
            }
        }
        self.now = end;
        self.timeout();
    }

    fn drain(&mut self, buf: &[u8]) {
        while let Some(a) = self.core.poll_action() {
            self.actions.push(a);
            self.carry_out(a, buf);
        }
        let mut tx = vec![0u8; 70000];
        while let Some(n) = self.core.poll_frame(&mut tx) {
            self.frames.push(parse_out(&tx[..n]));
        }
    }

    fn carry_out(&mut self, a: Action, buf: &[u8]) {
        match a {
            Action::Open {
                sock, kind, family, ..
            } => {
                if kind == SockKind::Ping && self.no_ping {
                    self.core.handle_sock_event(
                        self.now,
                        sock,
                        SockEvent::OpenFailed(Errno::EACCES),
                    );
                    return;
                }
                let s = FakeSock {
                    kind: Some(kind),
                    family: Some(family),
                    ..FakeSock::default()
                };
                assert!(self.socks.insert(sock, s).is_none(), "{sock:?} reused");
            }
            Action::Bind { sock, addr, opts } => {
                // Actions on a socket that failed are ignored, as a driver
                // does with ids it no longer knows.
                let Some(s) = self.socks.get_mut(&sock) else {
                    return;
                };
                s.bind = Some((addr, opts));
                if self.busy_ports.contains(&addr.port()) {
                    self.socks.remove(&sock);
                    self.core.handle_sock_event(
                        self.now,
                        sock,
                        SockEvent::OpenFailed(Errno::EADDRINUSE),
                    );
                }
            }
            Action::Connect { sock, addr } => {
                if let Some(s) = self.socks.get_mut(&sock) {
                    s.connect = Some(addr);
                    self.core
                        .handle_sock_event(self.now, sock, SockEvent::Connected(Ok(())));
                }
            }
            Action::SetOption {
                sock,
                opt: SockOpt::Broadcast(b),
            } => {
                if let Some(s) = self.socks.get_mut(&sock) {
                    s.broadcast = b;
                }
            }
            Action::SetInterest { sock, interest } => {
                if let Some(s) = self.socks.get_mut(&sock) {
                    s.interest = Some(interest);
                }
            }
            Action::SendDatagrams { sock, spans, to } => {
                let limit = self.send_limit;
                let data: Vec<Vec<u8>> = self
                    .core
                    .spans(spans)
                    .iter()
                    .map(|s| buf[s.offset as usize..(s.offset + s.len) as usize].to_vec())
                    .collect();
                let r = match self.socks.get_mut(&sock) {
                    Some(s) if s.connect.is_none() && to.is_none() => Err(Errno(89)),
                    Some(s) => {
                        s.sent_to = to;
                        let n = limit.unwrap_or(data.len()).min(data.len());
                        s.sent.extend(data.into_iter().take(n));
                        s.sends += 1;
                        Ok(n)
                    }
                    None => Err(Errno::EBADF),
                };
                self.core
                    .handle_sock_event(self.now, sock, SockEvent::Sent(r));
            }
            Action::Recv { sock, max, room } => {
                assert!(room <= DATAGRAM_ROOM);
                let s = self.socks.get_mut(&sock).expect("recv: no socket");
                let n = s.rx.len().min(usize::from(max));
                let got: Vec<_> = s.rx.drain(..n).collect();
                let mut bufs: Vec<Vec<u8>> = got
                    .iter()
                    .map(|(_, d)| {
                        let mut b = vec![0xaa; usize::from(room) + 65535];
                        let end = (usize::from(room) + d.len()).min(b.len());
                        b[usize::from(room)..end].copy_from_slice(&d[..end - usize::from(room)]);
                        b
                    })
                    .collect();
                let mut dg: Vec<RxDatagram<'_>> = bufs
                    .iter_mut()
                    .zip(&got)
                    .map(|(b, (peer, d))| RxDatagram::new(b, d.len(), *peer))
                    .collect();
                let k = self.core.handle_datagrams(self.now, sock, &mut dg);
                assert_eq!(k, dg.iter().filter(|d| d.frame_len > 0).count());
                let frames: Vec<Out> = dg.iter().filter_map(|d| d.frame()).map(parse_out).collect();
                for d in dg.iter().filter(|d| d.frame_len > 0) {
                    // Frames start at the beginning of the buffer: the room
                    // is exact, or IPv6 payloads on dual-stack listeners
                    // were moved up.
                    assert_eq!(d.frame_start, 0);
                }
                // Frames queued before the Recv go out first.
                let mut tx = vec![0u8; 70000];
                while let Some(n) = self.core.poll_frame(&mut tx) {
                    self.frames.push(parse_out(&tx[..n]));
                }
                self.frames.extend(frames);
            }
            Action::Close { sock } => {
                assert!(
                    self.socks.remove(&sock).is_some(),
                    "close of unknown {sock:?}"
                );
                self.closed.push(sock);
            }
            other => panic!("unexpected action {other:?}"),
        }
    }

    fn take_frames(&mut self) -> Vec<Out> {
        core::mem::take(&mut self.frames)
    }

    fn take_actions(&mut self) -> Vec<Action> {
        core::mem::take(&mut self.actions)
    }

    /// The unconnected socket whose last datagrams went to `addr`.
    fn sock_sent_to(&self, addr: SocketAddr) -> SockId {
        let v: Vec<_> = self
            .socks
            .iter()
            .filter(|(_, s)| s.connect.is_none() && s.sent_to == Some(addr))
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(v.len(), 1, "sockets sending to {addr}: {v:?}");
        v[0]
    }

    /// The socket connected to `addr`.
    fn sock_to(&self, addr: SocketAddr) -> SockId {
        self.sock_from_to(None, addr)
    }

    /// The socket bound to port `from` (if given) and connected to `addr`.
    fn sock_from_to(&self, from: Option<u16>, addr: SocketAddr) -> SockId {
        let v: Vec<_> = self
            .socks
            .iter()
            .filter(|(_, s)| {
                s.connect == Some(addr)
                    && from.is_none_or(|p| s.bind.is_some_and(|b| b.0.port() == p))
            })
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(v.len(), 1, "sockets connected to {addr}: {v:?}");
        v[0]
    }

    fn dropped(&self, r: DropReason) -> u64 {
        self.core.counters().dropped(r)
    }
}

fn cfg_dns() -> Config {
    let mut cfg = capture_config();
    let c4 = cfg.ip4.as_mut().unwrap();
    c4.dns_match = Some(Ipv4Addr::new(10, 77, 0, 3));
    c4.dns_host = Some(Ipv4Addr::new(192, 0, 2, 53));
    let c6 = cfg.ip6.as_mut().unwrap();
    c6.dns_match = Some("fd77::3".parse().unwrap());
    c6.dns_host = Some("2001:db8::53".parse().unwrap());
    cfg
}

// --- UDP from the guest ------------------------------------------------------

#[test]
fn guest_flow_keeps_source_port_and_batches_per_flow() {
    let mut h = H::new(capture_config());
    let (g, p) = (IpAddr::V4(GUEST4), IpAddr::V4(PEER4));
    h.guest(&[
        udp(g, p, 40000, 5000, b"one"),
        udp(g, p, 40001, 5000, b"other flow"),
        udp(g, p, 40000, 5000, b"two"),
        udp(g, p, 40000, 5000, b""),
    ]);
    let s = h.sock_from_to(Some(40000), sa(PEER4, 5000));
    let fs = &h.socks[&s];
    assert_eq!(fs.kind, Some(SockKind::Udp));
    assert_eq!(fs.family, Some(Family::V4));
    assert_eq!(fs.bind.unwrap().0, sa(Ipv4Addr::UNSPECIFIED, 40000));
    assert!(fs.bind.unwrap().1.reuse_addr, "one source port, many peers");
    assert_eq!(fs.sends, 1, "one SendDatagrams for the flow's batch");
    assert_eq!(fs.sent, vec![b"one".to_vec(), b"two".to_vec(), vec![]]);
    assert!(fs.interest.unwrap().readable && !fs.interest.unwrap().edge);
    let sends = h
        .take_actions()
        .iter()
        .filter(|a| matches!(a, Action::SendDatagrams { .. }))
        .count();
    assert_eq!(sends, 2, "one per flow");
    assert_eq!(h.core.flow_count(), 2);
    assert_eq!(h.core.socket_count(), 2);
    // The next batch reuses the flows.
    h.guest(&[udp(g, p, 40000, 5000, b"three")]);
    assert_eq!(h.socks[&s].sent.len(), 4);
    assert_eq!(h.core.flow_count(), 2);
    assert_eq!(h.core.udp_stats().udp_opened, 2);
    assert_eq!(h.core.udp_stats().to_host, 5);
    assert_eq!(h.core.counters().dropped_total(), 0);
}

#[test]
fn replies_are_framed_in_the_slots_both_families() {
    let mut h = H::new(capture_config());
    for (g, p) in [
        (IpAddr::V4(GUEST4), IpAddr::V4(PEER4)),
        (IpAddr::V6(g6()), IpAddr::V6(p6())),
    ] {
        h.guest(&[udp(g, p, 40000, 7, b"ping")]);
        let s = h.sock_to(sa(p, 7));
        if p.is_ipv6() {
            assert_eq!(
                h.socks[&s].bind.unwrap().0,
                sa(Ipv6Addr::UNSPECIFIED, 40000)
            );
            assert!(h.socks[&s].bind.unwrap().1.v6_only);
        }
        let big = vec![0x5a; 1400];
        h.host_many(
            s,
            &[
                (sa(p, 7), b"pong".to_vec()),
                (sa(p, 7), vec![]),
                (sa(p, 7), big.clone()),
            ],
        );
        let f = h.take_frames();
        assert_eq!(f.len(), 3);
        for o in &f {
            assert_eq!((o.src, o.dst, o.sport, o.dport), (p, g, 7, 40000));
        }
        assert_eq!(f[0].payload, b"pong");
        assert!(f[1].payload.is_empty());
        assert_eq!(f[2].payload, big);
    }
    assert_eq!(h.core.udp_stats().to_guest, 6);
    assert_eq!(h.core.counters().dropped_total(), 0);
}

#[test]
fn datagrams_from_other_peers_or_too_large_are_dropped() {
    let mut h = H::new(capture_config());
    let (g, p) = (IpAddr::V4(GUEST4), IpAddr::V4(PEER4));
    h.guest(&[udp(g, p, 40000, 7, b"x")]);
    let s = h.sock_to(sa(p, 7));
    h.host(s, sa(PEER4, 8), b"wrong port");
    h.host(s, sa(Ipv4Addr::new(192, 0, 2, 81), 7), b"wrong host");
    assert!(h.take_frames().is_empty());
    assert_eq!(h.dropped(DropReason::DgramMalformed), 0);
    // A datagram longer than the slot (truncated by the driver).
    let mut buf = vec![0u8; 100];
    let mut d = [RxDatagram::new(&mut buf, 200, sa(p, 7))];
    assert_eq!(h.core.handle_datagrams(h.now, s, &mut d), 0);
    assert_eq!(d[0].frame_len, 0);
    assert_eq!(h.dropped(DropReason::DgramMalformed), 1);
    // Unknown and stale sockets.
    let mut buf = vec![0u8; 100];
    let mut d = [RxDatagram::new(&mut buf, 4, sa(p, 7))];
    assert_eq!(h.core.handle_datagrams(h.now, SockId(12345), &mut d), 0);
    assert_eq!(
        h.core
            .handle_datagrams(h.now, SockId(LISTENER_BIT | UDP_LISTENER_BIT | 9), &mut d),
        0
    );
}

#[test]
fn bind_failure_drops_and_counts() {
    let mut h = H::new(capture_config());
    h.busy_ports.insert(40000);
    let (g, p) = (IpAddr::V4(GUEST4), IpAddr::V4(PEER4));
    h.guest(&[udp(g, p, 40000, 7, b"a"), udp(g, p, 40000, 7, b"b")]);
    assert_eq!(h.dropped(DropReason::DgramSocketFailed), 2);
    assert_eq!(h.core.flow_count(), 0);
    assert_eq!(h.core.socket_count(), 0);
    // Another port works.
    h.guest(&[udp(g, p, 40002, 7, b"c")]);
    assert_eq!(h.core.flow_count(), 1);
}

#[test]
fn partial_and_failed_sends_are_counted_fatal_errors_end_the_flow() {
    let mut h = H::new(capture_config());
    let (g, p) = (IpAddr::V4(GUEST4), IpAddr::V4(PEER4));
    h.send_limit = Some(1);
    h.guest(&[udp(g, p, 40000, 7, b"a"), udp(g, p, 40000, 7, b"b")]);
    assert_eq!(h.dropped(DropReason::DgramSocketFailed), 1);
    let s = h.sock_to(sa(p, 7));
    // ICMP errors queued on the socket (IP_RECVERR) do not end the flow.
    h.event(s, SockEvent::Error(Errno::ECONNREFUSED));
    h.event(s, SockEvent::Error(Errno::EHOSTUNREACH));
    assert_eq!(h.core.flow_count(), 1);
    assert_eq!(h.core.udp_stats().sock_errors, 2);
    h.event(s, SockEvent::Error(Errno::EBADF));
    assert_eq!(h.core.flow_count(), 0);
    assert_eq!(h.core.socket_count(), 0);
    assert_eq!(h.closed, vec![s]);
    // Events for the old id are ignored.
    h.event(s, SockEvent::Readable);
    assert!(h
        .take_actions()
        .iter()
        .all(|a| !matches!(a, Action::Recv { .. })));
}

#[test]
fn multicast_and_broadcast_destinations_are_allowed() {
    let mut h = H::new(capture_config());
    let g = IpAddr::V4(GUEST4);
    let ssdp = IpAddr::V4(Ipv4Addr::new(239, 255, 255, 250));
    h.guest(&[udp(g, ssdp, 40000, 1900, b"M-SEARCH")]);
    // Not connected: each datagram names the group.
    let s = h.sock_sent_to(sa(ssdp, 1900));
    assert!(!h.socks[&s].broadcast);
    assert_eq!(h.socks[&s].sent, vec![b"M-SEARCH".to_vec()]);
    let bc = IpAddr::V4(Ipv4Addr::BROADCAST);
    h.guest(&[udp(g, bc, 40001, 9, b"wol")]);
    assert!(h.socks[&h.sock_sent_to(sa(bc, 9))].broadcast);
    let dbc = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 255));
    h.guest(&[udp(g, dbc, 40002, 9, b"wol")]);
    assert!(h.socks[&h.sock_sent_to(sa(dbc, 9))].broadcast);
    let mc6: IpAddr = "ff02::fb".parse().unwrap();
    h.guest(&[udp(IpAddr::V6(g6()), mc6, 5353, 5353, b"mdns")]);
    h.sock_sent_to(sa(mc6, 5353));
    assert_eq!(h.core.flow_count(), 4);
    assert!(h.socks.values().all(|s| s.connect.is_none()));
    // Port 0 and unspecified sources are not.
    h.guest(&[
        udp(g, IpAddr::V4(PEER4), 40000, 0, b"x"),
        udp(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(PEER4),
            1,
            2,
            b"x",
        ),
    ]);
    assert_eq!(h.dropped(DropReason::DgramBadEndpoint), 2);
    assert_eq!(h.core.flow_count(), 4);
}

#[test]
fn gateway_maps_to_host_loopback_and_back() {
    let mut h = H::new(capture_config());
    for (g, gw, lo) in [
        (
            IpAddr::V4(GUEST4),
            IpAddr::V4(GW4),
            IpAddr::V4(Ipv4Addr::LOCALHOST),
        ),
        (
            IpAddr::V6(g6()),
            IpAddr::V6(gw6()),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ),
    ] {
        h.guest(&[udp(g, gw, 40000, 8080, b"q")]);
        let s = h.sock_to(sa(lo, 8080));
        h.host(s, sa(lo, 8080), b"r");
        let f = h.take_frames();
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].src, f[0].sport, f[0].dst, f[0].dport),
            (gw, 8080, g, 40000)
        );
    }
}

#[test]
fn map_guest_addr_both_ways() {
    let mut cfg = capture_config();
    cfg.ip4.as_mut().unwrap().map_guest_addr = Some(Ipv4Addr::new(10, 77, 0, 9));
    let mut h = H::new(cfg);
    let g = IpAddr::V4(GUEST4);
    h.guest(&[udp(
        g,
        IpAddr::V4(Ipv4Addr::new(10, 77, 0, 9)),
        40000,
        99,
        b"q",
    )]);
    // The guest's assigned address is the host's own.
    let s = h.sock_to(sa(GUEST4, 99));
    h.host(s, sa(GUEST4, 99), b"r");
    let f = h.take_frames();
    assert_eq!(f[0].src, IpAddr::V4(Ipv4Addr::new(10, 77, 0, 9)));
}

// --- DNS forwarding ------------------------------------------------------------

#[test]
fn dns_forward_udp_and_back_from_dns_match() {
    let mut h = H::new(cfg_dns());
    for (g, m, host) in [
        (IpAddr::V4(GUEST4), "10.77.0.3", "192.0.2.53"),
        (IpAddr::V6(g6()), "fd77::3", "2001:db8::53"),
    ] {
        let m: IpAddr = m.parse().unwrap();
        let host: IpAddr = host.parse().unwrap();
        for port in [53, 853] {
            h.guest(&[udp(g, m, 33333, port, b"query")]);
            let s = h.sock_to(sa(host, port));
            assert_eq!(h.socks[&s].sent, vec![b"query".to_vec()]);
            h.host(s, sa(host, port), b"answer");
            let f = h.take_frames();
            assert_eq!(f.len(), 1);
            assert_eq!(
                (f[0].src, f[0].sport, f[0].dst, f[0].dport),
                (m, port, g, 33333)
            );
            assert_eq!(f[0].payload, b"answer");
        }
        // Other ports to the same address are not redirected.
        h.guest(&[udp(g, m, 33333, 5353, b"x")]);
        h.sock_to(sa(m, 5353));
    }
}

#[test]
fn dns_host_peers_are_not_translated_back_unless_remapped() {
    let mut h = H::new(cfg_dns());
    // The guest talks to the resolver by its real address: no remapping,
    // replies come from that address.
    let g = IpAddr::V4(GUEST4);
    let host = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53));
    h.guest(&[udp(g, host, 33334, 53, b"direct")]);
    let s = h.sock_to(sa(host, 53));
    h.host(s, sa(host, 53), b"a");
    assert_eq!(h.take_frames()[0].src, host);
}

#[test]
fn dns_forward_tcp() {
    let mut h = H::new(cfg_dns());
    let g = IpAddr::V4(GUEST4);
    let syn = PacketBuilder::ethernet2(GUEST_MAC.0, Mac::OUR_DEFAULT.0)
        .ipv4(GUEST4.octets(), [10, 77, 0, 3], 64)
        .tcp(44444, 53, 1000, 65535)
        .syn();
    let mut f = Vec::new();
    syn.write(&mut f, &[]).unwrap();
    let mut buf = Vec::new();
    let refs = [FrameRef {
        offset: 0,
        len: f.len() as u32,
    }];
    buf.extend_from_slice(&f);
    h.core
        .handle_tap_batch(h.now, &FrameBatch::new(&buf, &refs));
    let mut connect = None;
    let mut sock = None;
    while let Some(a) = h.core.poll_action() {
        match a {
            Action::Open {
                sock: s,
                kind: SockKind::TcpStream,
                ..
            } => sock = Some(s),
            Action::Connect { addr, .. } => connect = Some(addr),
            _ => {}
        }
    }
    assert_eq!(connect, Some(sa(Ipv4Addr::new(192, 0, 2, 53), 53)));
    let sock = sock.unwrap();
    h.core
        .handle_sock_event(h.now, sock, SockEvent::Connected(Ok(())));
    h.core.handle_sock_event(
        h.now,
        sock,
        SockEvent::TcpInfo(crate::action::TcpInfo {
            sndbuf: 1 << 20,
            ..Default::default()
        }),
    );
    while h.core.poll_action().is_some() {}
    let mut tx = vec![0u8; 70000];
    let n = h.core.poll_frame(&mut tx).expect("SYN-ACK");
    let p = SlicedPacket::from_ethernet(&tx[..n]).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!()
    };
    assert_eq!(ip.header().source_addr(), Ipv4Addr::new(10, 77, 0, 3));
    assert_eq!(IpAddr::V4(ip.header().destination_addr()), g);
    let Some(TransportSlice::Tcp(t)) = &p.transport else {
        panic!()
    };
    assert!(t.syn() && t.ack());
    assert_eq!(t.source_port(), 53);
}

// --- forwarded ports (-u) ---------------------------------------------------------

/// The configuration with `-u spec`: `none`, `PORT` or `PORT:TARGET`.
fn cfg_fwd(spec: &str) -> Config {
    let mut cfg = capture_config();
    if spec != "none" {
        let (port, target) = spec.split_once(':').unwrap_or((spec, spec));
        cfg.forwards = vec![ufwd(port.parse().unwrap(), target.parse().unwrap())];
    }
    cfg
}

fn listener(h: &H) -> SockId {
    let v: Vec<_> = h
        .socks
        .iter()
        .filter(|(id, _)| id.0 & LISTENER_BIT != 0)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(v.len(), 1);
    v[0]
}

#[test]
fn forwarded_port_remaps_and_replies_survive_the_listener() {
    let mut h = H::new(cfg_fwd("5353:53"));
    let l = listener(&h);
    let ls = &h.socks[&l];
    assert_eq!(ls.family, Some(Family::V6));
    assert_eq!(ls.bind.unwrap().0, sa(Ipv6Addr::UNSPECIFIED, 5353));
    assert!(ls.bind.unwrap().1.reuse_addr && !ls.bind.unwrap().1.v6_only);
    assert_eq!(h.core.socket_count(), 1);
    assert_eq!(h.core.flow_count(), 0);

    let peer = sa(Ipv4Addr::new(192, 0, 2, 9), 1234);
    let mapped = sa(Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped(), 1234);
    h.host_many(l, &[(mapped, b"q1".to_vec()), (mapped, b"q2".to_vec())]);
    let f = h.take_frames();
    assert_eq!(f.len(), 2);
    for o in &f {
        assert_eq!(
            (o.src, o.sport, o.dst, o.dport),
            (peer.ip(), 1234, IpAddr::V4(GUEST4), 53)
        );
    }
    assert_eq!(h.core.flow_count(), 1);
    // The flow's own socket: bound like the listener, connected to the peer.
    let s = h.sock_to(mapped);
    assert_eq!(h.socks[&s].bind.unwrap().0, sa(Ipv6Addr::UNSPECIFIED, 5353));
    assert!(h.socks[&s].bind.unwrap().1.reuse_addr);
    // The guest answers from port 53: same flow, its socket.
    h.guest(&[udp(IpAddr::V4(GUEST4), peer.ip(), 53, 1234, b"a1")]);
    assert_eq!(h.socks[&s].sent, vec![b"a1".to_vec()]);
    assert_eq!(h.core.flow_count(), 1);
    // The listener goes away; the flow keeps working both ways.
    h.event(l, SockEvent::Error(Errno::EBADF));
    assert!(h.closed.contains(&l));
    h.host(s, mapped, b"q3");
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].dport, &f[0].payload[..]), (53, &b"q3"[..]));
    h.guest(&[udp(IpAddr::V4(GUEST4), peer.ip(), 53, 1234, b"a2")]);
    assert_eq!(h.socks[&s].sent.len(), 2);
    assert_eq!(h.core.socket_count(), 1);
    // Events on the closed listener are ignored.
    h.event(l, SockEvent::Readable);
}

#[test]
fn forwarded_port_from_loopback_and_ipv6_peers() {
    let mut h = H::new(cfg_fwd("7000"));
    let l = listener(&h);
    h.host_many(
        l,
        &[
            (sa(Ipv6Addr::LOCALHOST, 5000), b"lo6".to_vec()),
            (
                sa(Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 5001),
                b"lo4".to_vec(),
            ),
            (sa(p6(), 5002), b"real".to_vec()),
            // Not acceptable peers.
            (sa(p6(), 0), b"port0".to_vec()),
            (sa(Ipv6Addr::UNSPECIFIED, 5), b"unspec".to_vec()),
            (
                sa("ff02::1".parse::<Ipv6Addr>().unwrap(), 5),
                b"mc".to_vec(),
            ),
        ],
    );
    let f = h.take_frames();
    assert_eq!(f.len(), 3);
    assert_eq!((f[0].src, f[0].dst), (IpAddr::V6(gw6()), IpAddr::V6(g6())));
    assert_eq!((f[1].src, f[1].dst), (IpAddr::V4(GW4), IpAddr::V4(GUEST4)));
    assert_eq!((f[2].src, f[2].dst), (IpAddr::V6(p6()), IpAddr::V6(g6())));
    assert!(f.iter().all(|o| o.dport == 7000));
    assert_eq!(h.dropped(DropReason::DgramBadEndpoint), 3);
    assert_eq!(h.core.flow_count(), 3);
}

#[test]
fn listener_that_fails_to_open_is_not_counted() {
    let mut cfg = cfg_fwd("6000");
    cfg.guest_mac = Some(GUEST_MAC);
    let mut core = Core::new(cfg);
    core.start(Instant::ZERO);
    let mut sock = None;
    while let Some(a) = core.poll_action() {
        if let Action::Open { sock: s, .. } = a {
            sock = Some(s);
        }
    }
    assert_eq!(core.socket_count(), 1);
    core.handle_sock_event(
        Instant::ZERO,
        sock.unwrap(),
        SockEvent::OpenFailed(Errno::EADDRINUSE),
    );
    assert_eq!(core.socket_count(), 0);
    // --no-udp: no listeners at all.
    let mut cfg = cfg_fwd("6000");
    cfg.features.udp = false;
    let mut core = Core::new(cfg);
    core.start(Instant::ZERO);
    assert!(core.poll_action().is_none());
}

// --- expiry --------------------------------------------------------------------------

#[test]
fn udp_flows_expire_after_180s_idle_active_ones_stay() {
    let mut h = H::new(capture_config());
    let (g, p) = (IpAddr::V4(GUEST4), IpAddr::V4(PEER4));
    h.guest(&[udp(g, p, 40000, 7, b"idle"), udp(g, p, 40001, 7, b"busy")]);
    let busy = h.sock_from_to(Some(40001), sa(p, 7));
    assert!(h.core.poll_timeout().is_some());
    h.run_for(100_000);
    // Traffic from the host keeps a flow alive too.
    h.host(busy, sa(p, 7), b"still here");
    h.run_for(79_999);
    assert_eq!(h.core.flow_count(), 2, "nothing expires before 180 s");
    h.run_for(2);
    assert_eq!(h.core.flow_count(), 1, "the idle flow is gone at 180 s");
    assert!(h.socks.contains_key(&busy));
    h.run_for(99_000);
    assert_eq!(h.core.flow_count(), 1);
    h.run_for(2_000);
    assert_eq!(h.core.flow_count(), 0);
    assert_eq!(h.core.socket_count(), 0);
    assert_eq!(h.core.udp_stats().timeouts, 2);
    assert!(h.socks.is_empty());
    assert_eq!(h.core.poll_timeout(), None);
}

// --- ICMP echo ---------------------------------------------------------------------

#[test]
fn echo_id_is_rewritten_both_families() {
    let mut h = H::new(capture_config());
    for (g, p) in [
        (IpAddr::V4(GUEST4), IpAddr::V4(PEER4)),
        (IpAddr::V6(g6()), IpAddr::V6(p6())),
    ] {
        let req = ping(g, p, 0x1234, 7, b"abcdefgh");
        h.guest(std::slice::from_ref(&req));
        let s = h.sock_to(sa(p, 0));
        let fs = &h.socks[&s];
        assert_eq!(fs.kind, Some(SockKind::Ping));
        assert_eq!(fs.bind.unwrap().0.port(), 0, "the kernel picks the id");
        // The whole echo request goes out unchanged.
        let l4 = &req[req.len() - 16..];
        assert_eq!(fs.sent, vec![l4.to_vec()]);
        // The reply carries the kernel's id; the guest gets its own back.
        h.host(
            s,
            sa(p, 0),
            &echo_reply(p.is_ipv6(), 0x9999, 7, b"abcdefgh"),
        );
        let f = h.take_frames();
        assert_eq!(f.len(), 1);
        assert!(f[0].icmp);
        assert_eq!((f[0].src, f[0].dst), (p, g));
        assert_eq!((f[0].sport, f[0].seq), (0x1234, Some(7)));
        assert_eq!(f[0].payload, b"abcdefgh");
        // Same id again: same flow. Another id: another flow.
        h.guest(&[ping(g, p, 0x1234, 8, b"")]);
        assert_eq!(h.socks[&s].sent.len(), 2);
        h.guest(&[ping(g, p, 0x1235, 1, b"")]);
    }
    assert_eq!(h.core.flow_count(), 4);
    assert_eq!(h.core.udp_stats().ping_opened, 4);
    assert_eq!(h.core.counters().dropped_total(), 0);
}

#[test]
fn echo_to_the_gateway_reaches_host_loopback() {
    let mut h = H::new(capture_config());
    h.guest(&[ping(IpAddr::V4(GUEST4), IpAddr::V4(GW4), 0, 1, b"x")]);
    let s = h.sock_to(sa(Ipv4Addr::LOCALHOST, 0));
    h.host(
        s,
        sa(Ipv4Addr::LOCALHOST, 0),
        &echo_reply(false, 77, 1, b"x"),
    );
    let f = h.take_frames();
    assert_eq!((f[0].src, f[0].sport), (IpAddr::V4(GW4), 0));
    // Replies that are not echo replies or come from elsewhere: dropped.
    h.host(s, sa(Ipv4Addr::LOCALHOST, 0), &[8, 0, 0, 0, 0, 1, 0, 1]);
    h.host(s, sa(Ipv4Addr::LOCALHOST, 0), &[0, 0, 0]);
    h.host(s, sa(PEER4, 0), &echo_reply(false, 77, 1, b"x"));
    assert!(h.take_frames().is_empty());
    assert_eq!(h.dropped(DropReason::DgramMalformed), 2);
}

#[test]
fn echo_flows_expire_after_60s_without_requests() {
    let mut h = H::new(capture_config());
    let (g, p) = (IpAddr::V4(GUEST4), IpAddr::V4(PEER4));
    h.guest(&[ping(g, p, 1, 1, b""), ping(g, p, 2, 1, b"")]);
    assert_eq!(h.socks.len(), 2);
    h.run_for(30_000);
    // A request keeps flow 2 alive; replies do not count.
    h.guest(&[ping(g, p, 2, 2, b"")]);
    let ids: Vec<_> = h.socks.keys().copied().collect();
    for s in ids {
        h.host(s, sa(p, 0), &echo_reply(false, 5, 1, b""));
    }
    h.run_for(29_999);
    assert_eq!(h.core.flow_count(), 2);
    h.run_for(2);
    assert_eq!(h.core.flow_count(), 1);
    h.run_for(30_000);
    assert_eq!(h.core.flow_count(), 0);
    assert_eq!(h.core.socket_count(), 0);
}

#[test]
fn other_icmp_is_dropped_and_counted_not_translated() {
    let mut h = H::new(capture_config());
    let b = PacketBuilder::ethernet2(GUEST_MAC.0, Mac::OUR_DEFAULT.0)
        .ipv4(GUEST4.octets(), PEER4.octets(), 64)
        .icmpv4_raw(13, 0, [0; 4]);
    let mut f = Vec::new();
    b.write(&mut f, &[]).unwrap();
    let b6 = PacketBuilder::ethernet2(GUEST_MAC.0, Mac::OUR_DEFAULT.0)
        .ipv6(g6().octets(), p6().octets(), 64)
        .icmpv6_raw(129, 0, [0; 4]);
    let mut f6 = Vec::new();
    b6.write(&mut f6, &[]).unwrap();
    h.guest(&[f, f6]);
    assert_eq!(h.dropped(DropReason::IcmpNotEcho), 2);
    assert_eq!(h.dropped(DropReason::NotTranslated), 0);
    assert!(h.socks.is_empty());
    // Echo to multicast or broadcast: not forwarded.
    h.guest(&[ping(
        IpAddr::V4(GUEST4),
        IpAddr::V4(Ipv4Addr::BROADCAST),
        1,
        1,
        b"",
    )]);
    assert_eq!(h.dropped(DropReason::DgramBadEndpoint), 1);
}

#[test]
fn refused_ping_sockets_drop_and_count() {
    let mut h = H::new(capture_config());
    h.no_ping = true;
    h.guest(&[ping(IpAddr::V4(GUEST4), IpAddr::V4(PEER4), 1, 1, b"")]);
    assert_eq!(h.dropped(DropReason::DgramSocketFailed), 1);
    assert!(h.core.udp.ping_warned);
    assert_eq!(h.core.flow_count(), 0);
    assert_eq!(h.core.socket_count(), 0);
}

#[test]
fn switches_turn_udp_and_icmp_off() {
    let mut cfg = capture_config();
    cfg.features.udp = false;
    cfg.features.icmp = false;
    let mut h = H::new(cfg);
    h.guest(&[
        udp(IpAddr::V4(GUEST4), IpAddr::V4(PEER4), 1, 2, b"x"),
        ping(IpAddr::V4(GUEST4), IpAddr::V4(PEER4), 1, 1, b""),
    ]);
    assert_eq!(h.dropped(DropReason::ProtocolDisabled), 2);
    assert!(h.take_actions().is_empty());
}

#[test]
fn full_table_refuses_new_flows() {
    let mut cfg = capture_config();
    cfg.limits.flows = 2;
    let mut h = H::new(cfg);
    let (g, p) = (IpAddr::V4(GUEST4), IpAddr::V4(PEER4));
    h.guest(&[
        udp(g, p, 1, 7, b""),
        udp(g, p, 2, 7, b""),
        udp(g, p, 3, 7, b""),
    ]);
    h.guest(&[ping(g, p, 1, 1, b"")]);
    assert_eq!(h.dropped(DropReason::FlowTableFull), 2);
    assert_eq!(
        h.core.counters().dropped_total(),
        2,
        "each drop counted once"
    );
    assert_eq!(h.core.flow_count(), 2);
}

// --- hostile input ----------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random guest datagrams and echo messages, random host datagrams with
    /// random peers and lengths, random socket events: no panic, every
    /// frame re-parses with valid checksums, and everything closes in time.
    #[test]
    fn hostile_inputs_never_panic_and_flows_return_to_zero(
        guest in proptest::collection::vec((any::<bool>(), any::<u8>(), 0u16..4, 0u16..4, proptest::collection::vec(any::<u8>(), 0..40), 0usize..60), 1..20),
        host in proptest::collection::vec((any::<u8>(), 0u16..4, 0usize..300, any::<bool>()), 0..20),
        events in proptest::collection::vec((any::<u8>(), 0u8..6), 0..10),
    ) {
        let mut h = H::new(cfg_fwd("7000"));
        let l = listener(&h);
        let g4 = IpAddr::V4(GUEST4);
        for (v6, kind, sp, dp, data, cut) in guest {
            let (g, p) = if v6 { (IpAddr::V6(g6()), IpAddr::V6(p6())) } else { (g4, IpAddr::V4(PEER4)) };
            let mut f = if kind % 3 == 0 {
                ping(g, p, sp, dp, &data)
            } else {
                udp(g, p, 40000 + sp, 7 + dp, &data)
            };
            // Corrupt a byte and maybe cut the frame.
            if let Some(b) = f.get_mut(14 + usize::from(kind) % 60) {
                if kind % 5 == 0 { *b ^= kind; }
            }
            if cut > 0 { f.truncate(f.len().saturating_sub(cut)); }
            h.guest(&[f]);
        }
        let socks: Vec<SockId> = {
            let mut v: Vec<_> = h.socks.keys().copied().collect();
            v.sort();
            v
        };
        for (i, port, len, mapped) in host {
            let Some(&s) = socks.get(usize::from(i) % socks.len().max(1)) else { continue };
            if !h.socks.contains_key(&s) { continue; }
            let ip: IpAddr = match i % 4 {
                0 => IpAddr::V4(PEER4),
                1 => IpAddr::V6(p6()),
                2 => IpAddr::V4(Ipv4Addr::LOCALHOST),
                _ => IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
            };
            let ip = if mapped { IpAddr::V6(match ip { IpAddr::V4(a) => a.to_ipv6_mapped(), IpAddr::V6(a) => a }) } else { ip };
            let mut d = vec![i; len];
            if let Some(b) = d.first_mut() { *b = if i % 2 == 0 { 0 } else { 129 }; }
            h.host(s, SocketAddr::new(ip, 7 + port), &d);
        }
        for (i, e) in events {
            let Some(&s) = socks.get(usize::from(i) % socks.len().max(1)) else { continue };
            if !h.socks.contains_key(&s) || s == l { continue; }
            let ev = match e {
                0 => SockEvent::Error(Errno::ECONNREFUSED),
                1 => SockEvent::Error(Errno::EBADF),
                2 => SockEvent::Readable,
                3 => SockEvent::Sent(Err(Errno::EAGAIN)),
                4 => SockEvent::HangUp,
                _ => SockEvent::Writable,
            };
            h.event(s, ev);
        }
        h.run_for(181_000);
        prop_assert_eq!(h.core.flow_count(), 0);
        prop_assert_eq!(h.core.socket_count(), 1);
        prop_assert_eq!(h.socks.len(), 1);
    }
}

#[test]
fn ten_thousand_datagrams_echo_in_order() {
    let mut h = H::new(capture_config());
    let (g, p) = (IpAddr::V4(GUEST4), IpAddr::V4(PEER4));
    let mut seen = 0u32;
    for batch in 0..100u32 {
        let frames: Vec<Vec<u8>> = (0..100u32)
            .map(|i| udp(g, p, 40000, 7, &(batch * 100 + i).to_be_bytes()))
            .collect();
        h.guest(&frames);
        let s = h.sock_to(sa(p, 7));
        let sent = core::mem::take(&mut h.socks.get_mut(&s).unwrap().sent);
        assert_eq!(sent.len(), 100);
        let echo: Vec<_> = sent.into_iter().map(|d| (sa(p, 7), d)).collect();
        // The driver receives at most 32 per Recv; level-triggered
        // readiness asks again while data is queued.
        h.socks.get_mut(&s).unwrap().rx.extend(echo);
        while !h.socks[&s].rx.is_empty() {
            h.event(s, SockEvent::Readable);
        }
        for o in h.take_frames() {
            assert_eq!(o.payload, seen.to_be_bytes());
            assert_eq!((o.sport, o.dport), (7, 40000));
            seen += 1;
        }
    }
    assert_eq!(seen, 10_000);
    assert_eq!(h.core.flow_count(), 1);
    assert_eq!(h.core.counters().dropped_total(), 0);
    assert_eq!(h.core.udp_stats().to_host, 10_000);
    assert_eq!(h.core.udp_stats().to_guest, 10_000);
}

#[test]
fn forwarded_flow_whose_socket_fails_loses_nothing_queued() {
    let mut h = H::new(cfg_fwd("7100"));
    let l = listener(&h);
    // The flow's own socket cannot bind (the listener's port is taken now).
    h.busy_ports.insert(7100);
    h.host(l, sa(p6(), 4000), b"first");
    let f = h.take_frames();
    assert_eq!(f.len(), 1, "the datagram still reaches the guest");
    assert_eq!(h.core.flow_count(), 0);
    assert_eq!(h.core.socket_count(), 1, "only the listener");
    assert_eq!(h.core.counters().dropped_total(), 0);
    // The next datagram from that peer tries again.
    h.busy_ports.clear();
    h.host(l, sa(p6(), 4000), b"second");
    assert_eq!(h.take_frames().len(), 1);
    assert_eq!(h.core.flow_count(), 1);
    assert_eq!(h.core.socket_count(), 2);
}

#[test]
fn one_source_port_to_many_peers() {
    let mut h = H::new(capture_config());
    let g = IpAddr::V4(GUEST4);
    let peers = [
        PEER4,
        Ipv4Addr::new(192, 0, 2, 81),
        Ipv4Addr::new(198, 51, 100, 1),
    ];
    let frames: Vec<_> = peers
        .iter()
        .map(|&p| udp(g, IpAddr::V4(p), 5000, 53, b"q"))
        .collect();
    h.guest(&frames);
    assert_eq!(h.core.flow_count(), 3);
    for p in peers {
        let s = h.sock_from_to(Some(5000), sa(p, 53));
        h.host(s, sa(p, 53), b"a");
        let f = h.take_frames();
        assert_eq!(
            (f[0].src, f[0].sport, f[0].dport),
            (IpAddr::V4(p), 53, 5000)
        );
    }
}

#[test]
fn answers_to_a_group_get_flows_of_their_own() {
    let mut h = H::new(capture_config());
    let g = IpAddr::V4(GUEST4);
    let ssdp = IpAddr::V4(Ipv4Addr::new(239, 255, 255, 250));
    h.guest(&[udp(g, ssdp, 40000, 1900, b"M-SEARCH")]);
    let s = h.sock_sent_to(sa(ssdp, 1900));
    let (d1, d2) = (sa(PEER4, 1900), sa(Ipv4Addr::new(192, 0, 2, 81), 1901));
    h.host_many(
        s,
        &[
            (d1, b"one".to_vec()),
            (d2, b"two".to_vec()),
            (d1, b"one again".to_vec()),
            (sa(Ipv4Addr::new(224, 0, 0, 1), 5), b"bad".to_vec()),
        ],
    );
    let f = h.take_frames();
    assert_eq!(f.len(), 3);
    assert_eq!((f[0].src, f[0].sport, f[0].dport), (d1.ip(), 1900, 40000));
    assert_eq!((f[1].src, f[1].sport, f[1].dport), (d2.ip(), 1901, 40000));
    assert_eq!(f[2].payload, b"one again");
    assert_eq!(h.dropped(DropReason::DgramBadEndpoint), 1);
    // Each answering peer has a flow with a socket on the guest's port,
    // connected to it; the guest's answer goes there.
    assert_eq!(h.core.flow_count(), 3);
    let s1 = h.sock_from_to(Some(40000), d1);
    assert!(h.socks[&s1].bind.unwrap().1.reuse_addr);
    h.guest(&[udp(g, d1.ip(), 40000, 1900, b"GET")]);
    assert_eq!(h.socks[&s1].sent, vec![b"GET".to_vec()]);
    assert_eq!(h.core.flow_count(), 3);
    // Later datagrams of that peer arrive on its own socket.
    h.host(s1, d1, b"200 OK");
    assert_eq!(h.take_frames()[0].payload, b"200 OK");
    h.run_for(181_000);
    assert_eq!(h.core.flow_count(), 0);
}

/// A dual-stack listener asks for the IPv4 room, so that the largest IPv4
/// datagram (65 507 bytes) fits a driver's buffer of one Ethernet frame of
/// 65 535 bytes of IP; an IPv6 peer's payload is moved up behind its longer
/// headers; what does not fit is dropped and counted.
#[test]
fn dual_stack_listener_fits_the_largest_datagrams() {
    const SLOT: usize = 65535 + 14 + 1;
    let mut h = H::new(cfg_fwd("7000"));
    let l = listener(&h);
    assert_eq!(h.core.recv_room(l), 42);
    let cases: [(SocketAddr, usize, bool); 3] = [
        (sa(Ipv4Addr::LOCALHOST.to_ipv6_mapped(), 5001), 65507, true),
        (sa(Ipv6Addr::LOCALHOST, 5000), 65472, true),
        (sa(p6(), 5002), SLOT - 62 + 1, false),
    ];
    for (peer, len, fits) in cases {
        let mut buf = vec![0u8; SLOT];
        for (i, b) in buf[42..42 + len.min(SLOT - 42)].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut d = [RxDatagram::new(&mut buf, len, peer)];
        let n = h.core.handle_datagrams(h.now, l, &mut d);
        assert_eq!(n, usize::from(fits), "{peer} {len}");
        if fits {
            assert_eq!(d[0].frame_start, 0);
            let o = parse_out(d[0].frame().unwrap());
            assert_eq!(o.payload.len(), len);
            assert!(o.payload.iter().enumerate().all(|(i, &b)| b == i as u8));
            assert_eq!(o.dport, 7000);
        }
    }
    assert_eq!(h.dropped(DropReason::DgramMalformed), 1);
}

// --- run-time forwards (-u auto) ----------------------------------------------------

fn listeners(h: &H) -> Vec<(SockId, SocketAddr)> {
    let mut v: Vec<_> = h
        .socks
        .iter()
        .filter(|(id, _)| id.0 & LISTENER_BIT != 0)
        .map(|(id, s)| (*id, s.bind.unwrap().0))
        .collect();
    v.sort_by_key(|(_, a)| a.port());
    v
}

fn ufwd(port: u16, target_port: u16) -> Forward {
    Forward::new(Proto::Udp, port, target_port)
}

#[test]
fn set_forwards_opens_new_closes_unlisted_and_keeps_flows() {
    let mut h = H::new(cfg_fwd("none"));
    assert!(listeners(&h).is_empty());
    h.core
        .set_forwards(h.now, &[ufwd(5000, 5000), ufwd(6000, 60)]);
    h.drain(&[]);
    let ls = listeners(&h);
    let ports: Vec<u16> = ls.iter().map(|(_, a)| a.port()).collect();
    assert_eq!(ports, vec![5000, 6000]);
    assert_eq!(h.core.socket_count(), 2);
    let l5 = ls[0].0;
    let l6 = ls[1].0;

    // A peer writes to 6000: a flow to guest port 60.
    let peer = sa(Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped(), 1234);
    h.host(l6, peer, b"x");
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].dport, 60);
    let flow_sock = h.sock_to(peer);

    // 6000 goes away, 7000 appears, 5000 stays (same socket).
    h.actions.clear();
    h.core
        .set_forwards(h.now, &[ufwd(7000, 7000), ufwd(5000, 5000)]);
    h.drain(&[]);
    assert!(h.closed.contains(&l6));
    assert!(!h.closed.contains(&l5));
    let ls = listeners(&h);
    let ports: Vec<u16> = ls.iter().map(|(_, a)| a.port()).collect();
    assert_eq!(ports, vec![5000, 7000]);
    assert_eq!(ls[0].0, l5);
    // The freed slot is reused.
    assert_eq!(ls[1].0, l6);
    let opens = h
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Open { .. }))
        .count();
    assert_eq!(opens, 1, "only the new port opens");
    // The flow survives, both ways.
    h.host(flow_sock, peer, b"y");
    assert_eq!(h.take_frames().len(), 1);
    h.guest(&[udp(
        IpAddr::V4(GUEST4),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)),
        60,
        1234,
        b"z",
    )]);
    assert_eq!(h.socks[&flow_sock].sent, vec![b"z".to_vec()]);
    assert_eq!(h.core.socket_count(), 3);

    // Unchanged set: nothing to do. Same ports with a new target: no
    // socket churn, new target used.
    h.actions.clear();
    h.core
        .set_forwards(h.now, &[ufwd(5000, 5000), ufwd(7000, 7000)]);
    h.core
        .set_forwards(h.now, &[ufwd(5000, 55), ufwd(7000, 7000)]);
    h.drain(&[]);
    assert!(h.actions.is_empty(), "{:?}", h.actions);
    h.host(l5, sa(p6(), 999), b"t");
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].dport, 55);

    // Empty set: every listener closes, the flows stay.
    h.core.set_forwards(h.now, &[]);
    h.drain(&[]);
    assert!(listeners(&h).is_empty());
    assert_eq!(h.core.socket_count(), 2);
    assert_eq!(h.core.flow_count(), 2);
}

#[test]
fn set_forwards_replaces_configured_listeners_and_honours_addresses() {
    let mut h = H::new(cfg_fwd("5353:53"));
    let l = listener(&h);
    let v4 = Forward {
        addr: Some(Ipv4Addr::LOCALHOST.into()),
        ..ufwd(5353, 53)
    };
    // Same port on another address: a different forward.
    h.core.set_forwards(h.now, &[v4]);
    h.drain(&[]);
    assert!(h.closed.contains(&l));
    let ls = listeners(&h);
    assert_eq!(ls.len(), 1);
    assert_eq!(ls[0].1, sa(Ipv4Addr::LOCALHOST, 5353));
    assert_eq!(h.socks[&ls[0].0].family, Some(Family::V4));
    // A listener that failed to open is not reopened while listed, and
    // is not closed again when it goes.
    h.event(ls[0].0, SockEvent::OpenFailed(Errno::EADDRINUSE));
    // (The driver has no socket left under a failed id.)
    h.socks.remove(&ls[0].0);
    let n = h.closed.len();
    h.core.set_forwards(h.now, &[]);
    h.drain(&[]);
    assert_eq!(h.closed.len(), n);
    assert_eq!(h.core.socket_count(), 0);
    // Duplicates: the first listing wins, one socket.
    h.core.set_forwards(h.now, &[ufwd(9000, 1), ufwd(9000, 2)]);
    h.drain(&[]);
    let ls = listeners(&h);
    assert_eq!(ls.len(), 1);
    h.host(ls[0].0, sa(p6(), 999), b"d");
    assert_eq!(h.take_frames()[0].dport, 1);
}

#[test]
fn set_forwards_without_udp_does_nothing() {
    let mut cfg = cfg_fwd("none");
    cfg.features.udp = false;
    let mut h = H::new(cfg);
    h.core.set_forwards(h.now, &[ufwd(5000, 5000)]);
    h.drain(&[]);
    assert!(h.socks.is_empty());
}

proptest! {
    /// Any sequence of forward sets leaves exactly the last set's ports
    /// listening, one socket each.
    #[test]
    fn set_forwards_sequences_end_in_the_last_set(
        sets in proptest::collection::vec(
            proptest::collection::vec(1000u16..1016, 0..8), 1..8)
    ) {
        let mut h = H::new(cfg_fwd("none"));
        for set in &sets {
            let f: Vec<_> = set.iter().map(|&p| ufwd(p, p)).collect();
            h.core.set_forwards(h.now, &f);
            h.drain(&[]);
        }
        let mut want: Vec<u16> = sets.last().unwrap().clone();
        want.sort_unstable();
        want.dedup();
        let got: Vec<u16> = listeners(&h).iter().map(|(_, a)| a.port()).collect();
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(h.core.socket_count(), want.len());
    }
}
