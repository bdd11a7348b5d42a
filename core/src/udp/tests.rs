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

mod echo;
mod errors;
mod guest;
mod host;

// --- the fake kernel ------------------------------------------------------

#[derive(Debug, Default)]
struct FakeSock {
    kind: Option<SockKind>,
    family: Option<Family>,
    bind: Option<(SocketAddr, BindOpts)>,
    connect: Option<SocketAddr>,
    broadcast: bool,
    /// `SockOpt::HopLimit` set, with the family it named.
    hops: Option<(Family, u8)>,
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
/// The guest's address and a peer's, in IPv4 and in IPv6.
fn both_families() -> [(IpAddr, IpAddr); 2] {
    [
        (IpAddr::V4(GUEST4), IpAddr::V4(PEER4)),
        (IpAddr::V6(g6()), IpAddr::V6(p6())),
    ]
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
            // Short frames are padded to 60 bytes with zeros (802.3).
            let end = usize::from(h.total_len) + 14;
            assert_eq!(end.max(60), f.len(), "IPv4 length");
            assert!(f[end..].iter().all(|&b| b == 0), "padding");
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
    // Ports (echo: the id twice), echo sequence number, payload.
    let (sport, dport, seq, payload) = match &p.transport {
        Some(TransportSlice::Udp(u)) => {
            let h = u.to_header();
            let c = if src.is_ipv6() {
                h.calc_checksum_ipv6_raw(s6, d6, u.payload()).unwrap()
            } else {
                h.calc_checksum_ipv4_raw(s4, d4, u.payload()).unwrap()
            };
            assert_eq!(u.checksum(), c, "UDP checksum");
            (u.source_port(), u.destination_port(), None, u.payload())
        }
        Some(TransportSlice::Icmpv4(i)) => {
            let Icmpv4Type::EchoReply(e) = i.icmp_type() else {
                panic!("not an echo reply: {:?}", i.icmp_type());
            };
            let c = Icmpv4Header::with_checksum(i.icmp_type(), i.payload()).checksum;
            assert_eq!(i.checksum(), c, "ICMP checksum");
            (e.id, e.id, Some(e.seq), i.payload())
        }
        Some(TransportSlice::Icmpv6(i)) => {
            let Icmpv6Type::EchoReply(e) = i.icmp_type() else {
                panic!("not an echo reply: {:?}", i.icmp_type());
            };
            let c = Icmpv6Header::with_checksum(i.icmp_type(), s6, d6, i.payload())
                .unwrap()
                .checksum;
            assert_eq!(i.checksum(), c, "ICMPv6 checksum");
            (e.id, e.id, Some(e.seq), i.payload())
        }
        t => panic!("unexpected transport {t:?}"),
    };
    Out {
        src,
        dst,
        sport,
        dport,
        seq,
        icmp: seq.is_some(),
        payload: payload.to_vec(),
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
            Action::SetOption {
                sock,
                opt: SockOpt::HopLimit { family, hops },
            } => {
                if let Some(s) = self.socks.get_mut(&sock) {
                    s.hops = Some((family, hops));
                }
            }
            Action::SetInterest { sock, interest } => {
                if let Some(s) = self.socks.get_mut(&sock) {
                    s.interest = Some(interest);
                }
            }
            Action::SendDatagrams { sock, spans, to } => self.send(sock, spans, to, buf),
            Action::Recv { sock, max, room } => self.recv(sock, max, room),
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

    /// Carries out a `SendDatagrams` over spans of `buf`.
    fn send(&mut self, sock: SockId, spans: SpanList, to: Option<SocketAddr>, buf: &[u8]) {
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

    /// Carries out a `Recv`: the datagrams queued for `sock` are framed
    /// by the core, after the frames it queued before.
    fn recv(&mut self, sock: SockId, max: u16, room: u16) {
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

fn ufwd(port: u16, target_port: u16) -> Forward {
    Forward::new(Proto::Udp, port, target_port)
}
