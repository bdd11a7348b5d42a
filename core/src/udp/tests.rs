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
use crate::testutil::{
    capture_config, check_ip, check_l4_checksum, g6, gw6, p6, Clocked, FakeKernel, Harness, GUEST4,
    GUEST_MAC, GW4, PEER4,
};
use crate::wire::Mac;
use crate::{Core, FrameBatch, FrameRef};
use etherparse::{
    Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket,
    TransportSlice,
};
use proptest::prelude::*;
use std::collections::{HashSet, VecDeque};

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
    /// An ICMP echo reply (else a UDP datagram).
    icmp: bool,
    src: IpAddr,
    dst: IpAddr,
    /// UDP ports, or the echo id twice.
    sport: u16,
    dport: u16,
    /// Echo sequence number (ICMP only).
    seq: Option<u16>,
    payload: Vec<u8>,
}

type H = Harness<UdpKernel>;

/// The UDP side of the fake kernel, beside its sockets.
#[derive(Default)]
struct UdpKernel {
    /// Ports whose bind fails with EADDRINUSE.
    busy_ports: HashSet<u16>,
    /// Ping sockets are refused (ping_group_range).
    no_ping: bool,
    /// Most datagrams a `SendDatagrams` takes (None: all).
    send_limit: Option<usize>,
}

impl FakeKernel for UdpKernel {
    type Sock = FakeSock;
    type Out = Out;

    fn parse(f: &[u8]) -> Option<Out> {
        Some(parse_out(f))
    }

    fn carry_out(h: &mut H, a: Action, buf: &[u8]) {
        match a {
            Action::Open {
                sock, kind, family, ..
            } => {
                if kind == SockKind::Ping && h.k.no_ping {
                    h.core
                        .handle_sock_event(h.now, sock, SockEvent::OpenFailed(Errno::EACCES));
                    return;
                }
                let s = FakeSock {
                    kind: Some(kind),
                    family: Some(family),
                    ..FakeSock::default()
                };
                assert!(h.socks.insert(sock, s).is_none(), "{sock:?} reused");
            }
            Action::Bind { sock, addr, opts } => {
                // Actions on a socket that failed are ignored, as a driver
                // does with ids it no longer knows.
                let Some(s) = h.socks.get_mut(&sock) else {
                    return;
                };
                s.bind = Some((addr, opts));
                if h.k.busy_ports.contains(&addr.port()) {
                    h.socks.remove(&sock);
                    h.core
                        .handle_sock_event(h.now, sock, SockEvent::OpenFailed(Errno::EADDRINUSE));
                }
            }
            Action::Connect { sock, addr } => {
                if let Some(s) = h.socks.get_mut(&sock) {
                    s.connect = Some(addr);
                    h.core
                        .handle_sock_event(h.now, sock, SockEvent::Connected(Ok(())));
                }
            }
            Action::SetOption {
                sock,
                opt: SockOpt::Broadcast(b),
            } => {
                if let Some(s) = h.socks.get_mut(&sock) {
                    s.broadcast = b;
                }
            }
            Action::SetOption {
                sock,
                opt: SockOpt::HopLimit { family, hops },
            } => {
                if let Some(s) = h.socks.get_mut(&sock) {
                    s.hops = Some((family, hops));
                }
            }
            Action::SetInterest { sock, interest } => {
                if let Some(s) = h.socks.get_mut(&sock) {
                    s.interest = Some(interest);
                }
            }
            Action::SendDatagrams { sock, spans, to } => h.send(sock, spans, to, buf),
            Action::Recv { sock, max, room } => h.recv(sock, max, room),
            Action::Close { sock } => {
                assert!(h.socks.remove(&sock).is_some(), "close of unknown {sock:?}");
                h.closed.push(sock);
            }
            other => panic!("unexpected action {other:?}"),
        }
    }

    fn poll_timeout(core: &Core) -> Option<Instant> {
        core.udp.poll_timeout()
    }
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
    let p = SlicedPacket::from_ethernet(f).expect("frame re-parses");
    let (src, dst) = check_ip(f, &p);
    // Ports (echo: the id twice), echo sequence number, payload.
    let (sport, dport, seq, payload) = match &p.transport {
        Some(TransportSlice::Udp(u)) => {
            check_l4_checksum(src, dst, 17, u.slice(), "UDP");
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
            check_l4_checksum(src, dst, 58, i.slice(), "ICMPv6");
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
    /// A harness around a started core on `cfg`, with no unsolicited
    /// router advertisements in the frame log.
    fn new(cfg: Config) -> H {
        let mut cfg = cfg;
        cfg.features.ra = false;
        let mut h = Harness::with(cfg, UdpKernel::default());
        h.core.start(h.now);
        h.drain(&[]);
        h
    }

    fn guest(&mut self, frames: &[Vec<u8>]) {
        self.guest_raw(frames);
    }

    /// The guest sends `data` from `g`:`sport` to `p`:`dport`: the socket
    /// of the flow, connected to `p`:`dport`.
    fn flow_to(&mut self, g: IpAddr, p: IpAddr, sport: u16, dport: u16, data: &[u8]) -> SockId {
        self.guest(&[udp(g, p, sport, dport, data)]);
        self.sock_to(sa(p, dport))
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

    /// Carries out a `SendDatagrams` over spans of `buf`.
    fn send(&mut self, sock: SockId, spans: SpanList, to: Option<SocketAddr>, buf: &[u8]) {
        let limit = self.k.send_limit;
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
        self.poll_frames();
        self.frames.extend(frames);
    }

    /// The guest's SSDP M-SEARCH from port 40000 to 239.255.255.250:1900:
    /// the unconnected socket it went out on.
    fn ssdp_search(&mut self) -> SockId {
        let ssdp = sa(Ipv4Addr::new(239, 255, 255, 250), 1900);
        let g = IpAddr::V4(GUEST4);
        self.guest(&[udp(g, ssdp.ip(), 40000, ssdp.port(), b"M-SEARCH")]);
        self.sock_sent_to(ssdp)
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
