//! ICMP errors from host sockets relayed to the guest, and the guest's TTL
//! on the sockets.

use super::*;
use crate::action::IcmpError;
use etherparse::{IcmpEchoHeader, Icmpv6Type, Ipv4HeaderSlice, Ipv6HeaderSlice};

/// A UDP datagram from the guest with TTL (hop limit) `ttl`.
fn udp_ttl(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, ttl: u8, data: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(GUEST_MAC.0, Mac::OUR_DEFAULT.0);
    let b = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => b.ipv4(s.octets(), d.octets(), ttl).udp(sport, dport),
        (IpAddr::V6(s), IpAddr::V6(d)) => b.ipv6(s.octets(), d.octets(), ttl).udp(sport, dport),
        _ => panic!(),
    };
    let mut v = Vec::new();
    b.write(&mut v, data).unwrap();
    v
}

/// Reports `e` on `sock`; returns the frames the core queued for the guest.
fn report(h: &mut H, sock: SockId, e: IcmpError) -> Vec<Vec<u8>> {
    h.core.handle_sock_event(h.now, sock, SockEvent::Icmp(e));
    let mut out = Vec::new();
    let mut tx = vec![0u8; 70000];
    while let Some(n) = h.core.poll_frame(&mut tx) {
        out.push(tx[..n].to_vec());
    }
    h.drain(&[]);
    out
}

/// An ICMP or ICMPv6 error frame to the guest, checked and taken apart:
/// (source, type, code, the 4 bytes after the checksum, the quoted packet).
fn parse_err(f: &[u8]) -> (IpAddr, u8, u8, [u8; 4], Vec<u8>) {
    assert_eq!(&f[0..6], &GUEST_MAC.0, "to the guest's MAC");
    assert_eq!(&f[6..12], &Mac::OUR_DEFAULT.0, "from our MAC");
    let p = SlicedPacket::from_ethernet(f).expect("frame re-parses");
    let src = match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(h.header_checksum, h.calc_header_checksum());
            assert_eq!(IpAddr::V4(h.destination.into()), IpAddr::V4(GUEST4));
            IpAddr::V4(h.source.into())
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(IpAddr::V6(h.destination.into()), IpAddr::V6(g6()));
            IpAddr::V6(h.source.into())
        }
        _ => panic!("not IP"),
    };
    let (l4, ok) = match &p.transport {
        Some(TransportSlice::Icmpv4(i)) => {
            let c = Icmpv4Header::with_checksum(i.icmp_type(), i.payload()).checksum;
            (i.slice().to_vec(), i.checksum() == c)
        }
        Some(TransportSlice::Icmpv6(i)) => {
            let Some(NetSlice::Ipv6(ip)) = &p.net else {
                panic!()
            };
            let h = ip.header().to_header();
            let c =
                Icmpv6Header::with_checksum(i.icmp_type(), h.source, h.destination, i.payload())
                    .unwrap()
                    .checksum;
            assert!(!matches!(i.icmp_type(), Icmpv6Type::EchoReply(_)));
            (i.slice().to_vec(), i.checksum() == c)
        }
        t => panic!("not ICMP: {t:?}"),
    };
    assert!(ok, "ICMP checksum");
    let rest = [l4[4], l4[5], l4[6], l4[7]];
    (src, l4[0], l4[1], rest, l4[8..].to_vec())
}

#[test]
fn port_unreachable_quotes_the_guests_datagram_both_families() {
    let mut h = H::new(capture_config());
    for (g, p) in both_families() {
        let v6 = p.is_ipv6();
        let data = b"0123456789abcdefXYZ";
        let s = h.flow_to(g, p, 40000, 7, data);
        let (t, c) = if v6 { (1, 4) } else { (3, 3) };
        let e = IcmpError::new(Errno::ECONNREFUSED, v6, (t, c, 0), Some(sa(p, 0)), data);
        let f = report(&mut h, s, e);
        assert_eq!(f.len(), 1);
        let (src, ty, code, rest, quoted) = parse_err(&f[0]);
        assert_eq!((src, ty, code, rest), (p, t, c, [0; 4]));
        // The guest's datagram: its addresses, its ports, the start of
        // its payload (8 bytes over IPv4, as upstream; 16 over IPv6).
        let (ip_len, data) = if v6 {
            let ip = Ipv6HeaderSlice::from_slice(&quoted).unwrap();
            assert_eq!(IpAddr::V6(ip.source_addr()), g);
            assert_eq!(IpAddr::V6(ip.destination_addr()), p);
            assert_eq!(ip.next_header(), etherparse::IpNumber::UDP);
            (40, &b"0123456789abcdef"[..])
        } else {
            let ip = Ipv4HeaderSlice::from_slice(&quoted).unwrap();
            assert_eq!(IpAddr::V4(ip.source_addr()), g);
            assert_eq!(IpAddr::V4(ip.destination_addr()), p);
            assert_eq!(ip.protocol(), etherparse::IpNumber::UDP);
            assert_eq!(usize::from(ip.total_len()), quoted.len());
            (20, &b"01234567"[..])
        };
        let udp = &quoted[ip_len..];
        assert_eq!(be16(udp, 0), Some(40000));
        assert_eq!(be16(udp, 2), Some(7));
        assert_eq!(be16(udp, 4).map(usize::from), Some(udp.len()));
        assert_eq!(&udp[8..], data);
        // The flow lives on: the guest's socket decides what to do.
        assert_eq!(h.core.flow_count(), if v6 { 2 } else { 1 });
    }
    assert_eq!(h.core.udp_stats().icmp_relayed, 2);
    assert_eq!(h.core.udp_stats().sock_errors, 2);
}

/// Per family: an error from a router on the path (time exceeded,
/// unreachable) keeps the router as its source; "fragmentation needed" and
/// "packet too big" keep the next-hop MTU in their last bytes.
#[test]
fn time_exceeded_comes_from_the_router_and_mtu_is_kept() {
    let mut h = H::new(capture_config());
    // Guest, peer, router, IPv6, the router's error (type, code), where the
    // quoted payload starts, and the MTU error (type, code, MTU) with the
    // payload it quotes.
    type Case = (
        IpAddr,
        IpAddr,
        IpAddr,
        bool,
        (u8, u8),
        usize,
        (u8, u8, u32),
        &'static [u8],
    );
    let cases: [Case; 2] = [
        (
            GUEST4.into(),
            PEER4.into(),
            Ipv4Addr::new(198, 51, 100, 1).into(),
            false,
            (11, 0),
            28,
            (3, 4, 1400),
            b"big",
        ),
        (
            g6().into(),
            p6().into(),
            "2001:db8:1::1".parse().unwrap(),
            true,
            (3, 0),
            48,
            (2, 0, 1280),
            b"x",
        ),
    ];
    for (g, p, router, v6, (ty0, code0), quote_at, (ty1, code1, mtu), big) in cases {
        let s = h.flow_to(g, p, 33434, 33435, b"probe");
        let e = IcmpError::new(
            Errno::EHOSTUNREACH,
            v6,
            (ty0, code0, 0),
            Some(sa(router, 0)),
            b"probe",
        );
        let (src, ty, code, _, quoted) = parse_err(&report(&mut h, s, e)[0]);
        assert_eq!((src, ty, code), (router, ty0, code0));
        assert_eq!(&quoted[quote_at..], b"probe");
        let e = IcmpError::new(Errno(90), v6, (ty1, code1, mtu), Some(sa(router, 0)), big);
        let (_, ty, code, rest, _) = parse_err(&report(&mut h, s, e)[0]);
        assert_eq!((ty, code, rest), (ty1, code1, mtu.to_be_bytes()));
    }
    assert_eq!(h.core.udp_stats().icmp_relayed, 4);
}

#[test]
fn errors_from_the_hosts_own_addresses_appear_as_the_guest_sees_them() {
    let mut h = H::new(capture_config());
    let (g, p) = (IpAddr::V4(GUEST4), IpAddr::V4(PEER4));
    let s = h.flow_to(g, p, 40000, 7, b"x");
    // A loopback sender is the host itself: the guest sees our address, as
    // for a datagram from it.
    let lo = IcmpError::new(
        Errno::ECONNREFUSED,
        false,
        (3, 3, 0),
        Some(sa(Ipv4Addr::LOCALHOST, 0)),
        b"x",
    );
    let expect = crate::nat::from_host(h.core.config(), h.core.guest(), Ipv4Addr::LOCALHOST.into())
        .unwrap()
        .0;
    assert_ne!(expect, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(parse_err(&report(&mut h, s, lo)[0]).0, expect);
    // No sender, or the other family: nothing for the guest, counted.
    let none = IcmpError::new(Errno::ECONNREFUSED, false, (3, 3, 0), None, b"x");
    assert!(report(&mut h, s, none).is_empty());
    let v6 = IcmpError::new(
        Errno::ECONNREFUSED,
        true,
        (1, 4, 0),
        Some(sa(p6(), 0)),
        b"x",
    );
    assert!(report(&mut h, s, v6).is_empty());
    assert_eq!(h.core.udp_stats().icmp_relayed, 1);
    assert_eq!(h.core.udp_stats().sock_errors, 3);
    // Errors on unknown sockets are ignored.
    assert!(report(&mut h, SockId(4242), lo).is_empty());
}

#[test]
fn echo_errors_quote_the_guests_echo_id_both_families() {
    let mut h = H::new(capture_config());
    for (g, p) in both_families() {
        let v6 = p.is_ipv6();
        h.guest(&[ping(g, p, 0x1234, 3, b"abcdefghijkl")]);
        let s = h.sock_to(sa(p, 0));
        // What a ping socket's error queue holds: the echo request as the
        // kernel sent it, with the socket's id.
        let sent = echo_reply(v6, 0x9999, 3, b"abcdefghijkl");
        let mut sent = sent.clone();
        sent[0] = if v6 { 128 } else { 8 };
        let router: IpAddr = if v6 {
            "2001:db8:1::1".parse().unwrap()
        } else {
            Ipv4Addr::new(198, 51, 100, 1).into()
        };
        let t = if v6 { 3 } else { 11 };
        let e = IcmpError::new(
            Errno::EHOSTUNREACH,
            v6,
            (t, 0, 0),
            Some(sa(router, 0)),
            &sent,
        );
        let (src, ty, _, _, quoted) = parse_err(&report(&mut h, s, e)[0]);
        assert_eq!((src, ty), (router, t));
        let ip_len = if v6 { 40 } else { 20 };
        let echo = &quoted[ip_len..];
        let hdr = IcmpEchoHeader::from_bytes([echo[4], echo[5], echo[6], echo[7]]);
        assert_eq!((echo[0], hdr.id, hdr.seq), (sent[0], 0x1234, 3));
        assert_eq!(&echo[8..], b"abcdefgh");
    }
    assert_eq!(h.core.udp_stats().icmp_relayed, 2);
}

#[test]
fn the_guests_ttl_goes_on_the_socket_when_it_changes() {
    let mut h = H::new(capture_config());
    let (g, p) = (IpAddr::V4(GUEST4), IpAddr::V4(PEER4));
    // The default TTL needs nothing.
    h.guest(&[udp_ttl(g, p, 40000, 7, 64, b"a")]);
    let s = h.sock_to(sa(p, 7));
    assert_eq!(h.socks[&s].hops, None);
    // TTL 1, twice, then 2 within one batch: an option before each run, one
    // send per run, in order.
    h.take_actions();
    h.guest(&[
        udp_ttl(g, p, 40000, 7, 1, b"b"),
        udp_ttl(g, p, 40000, 7, 1, b"c"),
        udp_ttl(g, p, 40000, 7, 2, b"d"),
    ]);
    let seq: Vec<String> = h
        .take_actions()
        .iter()
        .filter_map(|a| match a {
            Action::SetOption {
                opt: SockOpt::HopLimit { hops, .. },
                ..
            } => Some(format!("ttl {hops}")),
            Action::SendDatagrams { spans, .. } => Some(format!("send {}", spans.count)),
            _ => None,
        })
        .collect();
    assert_eq!(seq, ["ttl 1", "send 2", "ttl 2", "send 1"]);
    assert_eq!(h.socks[&s].hops, Some((Family::V4, 2)));
    let sent = &h.socks[&s].sent;
    assert_eq!(sent[1..], [b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]);
    // Back to 64: set again.
    h.guest(&[udp_ttl(g, p, 40000, 7, 64, b"e")]);
    assert_eq!(h.socks[&s].hops, Some((Family::V4, 64)));
    // IPv6 hop limit, and echo requests.
    let (g6, p6) = (IpAddr::V6(g6()), IpAddr::V6(p6()));
    h.guest(&[udp_ttl(g6, p6, 40000, 7, 3, b"f")]);
    assert_eq!(h.socks[&h.sock_to(sa(p6, 7))].hops, Some((Family::V6, 3)));
    let mut req = ping(g, p, 5, 1, b"");
    req[14 + 8] = 4; // TTL
    req[14 + 10] = 0;
    req[14 + 11] = 0;
    let c = etherparse::Ipv4HeaderSlice::from_slice(&req[14..])
        .unwrap()
        .to_header()
        .calc_header_checksum();
    req[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    h.guest(&[req]);
    assert_eq!(h.socks[&h.sock_to(sa(p, 0))].hops, Some((Family::V4, 4)));
    assert_eq!(h.core.counters().dropped_total(), 0);
}
