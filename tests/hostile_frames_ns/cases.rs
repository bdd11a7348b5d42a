//! The table of cases: every malformed frame, layer by layer, and the
//! well-formed ones that must still work among them.

use super::*;

/// Every malformed frame, and a few well-formed ones that must still work
/// among them. Source ports are distinct, so that no case meets another's
/// flow.
/// `ra`: router advertisements are on (not with pasta's `--config-net`).
pub(super) fn cases(m: Macs, ra: bool) -> Vec<Case> {
    let mut v = link_cases(m);
    v.extend(ip4_cases(m));
    v.extend(ip6_cases(m));
    v.extend(tcp_udp_cases(m));
    v.extend(other_l4_cases(m));
    v.extend(service_cases(m, ra));
    v
}

/// Ethernet and ARP.
fn link_cases(m: Macs) -> Vec<Case> {
    use Expect::*;
    let d = |r| Drop(r);
    let mut v = Vec::new();
    // Ethernet.
    v.push(case(
        "unknown ethertype",
        eth(m.gw, m.guest, 0x88b5, &[0; 46]),
        d("unknown_ethertype"),
    ));
    v.push(case(
        "IPv4 ethertype, no header",
        eth(m.gw, m.guest, ETH_IP4, &[]),
        d("ipv4_bad_header"),
    ));

    // ARP.
    let mut short = arp(m, 1, GW4);
    short.truncate(14 + 20);
    v.push(case("ARP truncated", short, d("arp_malformed")));
    v.push(case(
        "ARP for hardware type 6",
        arp(m, 6, GW4),
        d("arp_malformed"),
    ));
    v.push(case("ARP request", arp(m, 1, GW4), Reply(self::Reply::Arp)));
    v
}

/// The IPv4 header and its options.
fn ip4_cases(m: Macs) -> Vec<Case> {
    use Expect::*;
    let d = |r| Drop(r);
    let mut v = Vec::new();
    // IPv4 header.
    let u = with_csum(&GUEST4, &GW4, UDP, udp(40001, UDP_PORT, b"v4"));
    let ip4f = |f: &dyn Fn(&mut Vec<u8>)| {
        eth(
            m.gw,
            m.guest,
            ETH_IP4,
            &ip4_with(GUEST4, GW4, UDP, &[], &u, |h| f(h)),
        )
    };
    v.push(case(
        "IPv4 version 5",
        ip4f(&|h| h[0] = 0x55),
        d("ipv4_bad_header"),
    ));
    v.push(case(
        "IPv4 header length 16",
        ip4f(&|h| h[0] = 0x44),
        d("ipv4_bad_header"),
    ));
    let mut past = eth(
        m.gw,
        m.guest,
        ETH_IP4,
        &ip4_with(GUEST4, GW4, UDP, &[], &[0; 4], |h| h[0] = 0x4f),
    );
    past.truncate(14 + 24);
    v.push(case(
        "IPv4 header length past the frame",
        past,
        d("ipv4_bad_header"),
    ));
    v.push(case(
        "IPv4 total length past the frame",
        ip4f(&|h| h[2..4].copy_from_slice(&1000u16.to_be_bytes())),
        d("ipv4_bad_length"),
    ));
    v.push(case(
        "IPv4 total length inside the header",
        ip4f(&|h| h[2..4].copy_from_slice(&12u16.to_be_bytes())),
        d("ipv4_bad_length"),
    ));
    v.push(case(
        "IPv4 first fragment",
        ip4f(&|h| h[6] = 0x20),
        d("ipv4_fragment"),
    ));
    v.push(case(
        "IPv4 later fragment",
        ip4f(&|h| h[6..8].copy_from_slice(&185u16.to_be_bytes())),
        d("ipv4_fragment"),
    ));
    v.push(case(
        "IPv4 loopback source",
        ip4f(&|h| h[12..16].copy_from_slice(&[127, 0, 0, 1])),
        d("loopback"),
    ));
    // A timestamp option claiming 40 bytes in a 4-byte option area: the
    // options are not read; what follows the header is.
    let ts = with_csum(&GUEST4, &GW4, ICMP4, vec![13, 0, 0, 0, 0, 0, 0, 0]);
    v.push(case(
        "IPv4 option overrunning the header",
        eth(
            m.gw,
            m.guest,
            ETH_IP4,
            &ip4_with(GUEST4, GW4, ICMP4, &[0x44, 40, 5, 0], &ts, |_| {}),
        ),
        d("icmp_not_echo"),
    ));
    v.push(case(
        "IPv4 header checksum wrong",
        {
            let mut f = frame4(m, UDP, udp(40002, UDP_PORT, b"ipv4 csum"));
            f[14 + 10] ^= 0x5a;
            f
        },
        Delivered(b"ipv4 csum"),
    ));
    v
}

/// The IPv6 header and its extension headers.
fn ip6_cases(m: Macs) -> Vec<Case> {
    use Expect::*;
    let d = |r| Drop(r);
    let mut v = Vec::new();
    // IPv6 header and extension headers.
    let u6 = udp(40003, UDP_PORT, b"v6");
    let good6 = frame6_ext(m, 0, &[], UDP, u6.clone());
    let mut f = good6.clone();
    f[14] = 0x40;
    v.push(case("IPv6 version 4", f, d("ipv6_bad_header")));
    let mut f = good6.clone();
    f.truncate(14 + 30);
    v.push(case("IPv6 header truncated", f, d("ipv6_bad_header")));
    let mut f = good6.clone();
    f[18..20].fill(0);
    v.push(case("IPv6 payload length 0", f, d("ipv6_bad_length")));
    let mut f = good6.clone();
    f[18..20].copy_from_slice(&1200u16.to_be_bytes());
    v.push(case(
        "IPv6 payload length past the frame",
        f,
        d("ipv6_bad_length"),
    ));
    let mut f = good6.clone();
    f[14 + 24 + 15] = 1;
    f[14 + 24..14 + 39].fill(0);
    v.push(case("IPv6 loopback destination", f, d("loopback")));
    // Destination options headers: 8 bytes, PadN filling them.
    let dopt = |next: u8| vec![next, 0, 1, 4, 0, 0, 0, 0];
    let chain = |n: usize, last: u8| {
        let mut e = Vec::new();
        for i in 0..n {
            e.extend(dopt(if i + 1 == n { last } else { 60 }));
        }
        e
    };
    v.push(case(
        "IPv6 two destination options headers",
        frame6_ext(m, 60, &chain(2, UDP), UDP, udp(40004, UDP_PORT, b"ext ok")),
        Delivered(b"ext ok"),
    ));
    v.push(case(
        "IPv6 chain of 40 extension headers",
        frame6_ext(m, 60, &chain(40, UDP), UDP, u6.clone()),
        d("ipv6_bad_extension"),
    ));
    // Hop-by-hop options pointing at hop-by-hop options to the end of the
    // packet: a loop for a parser that follows the chain without a bound.
    let mut hbh = Vec::new();
    for _ in 0..150 {
        hbh.extend(dopt(0));
    }
    v.push(case(
        "IPv6 hop-by-hop header looping to the end",
        frame6_ext(m, 0, &hbh, 0, Vec::new()),
        d("ipv6_bad_extension"),
    ));
    v.push(case(
        "IPv6 extension header past the payload",
        frame6_ext(m, 60, &[UDP, 10, 1, 4, 0, 0, 0, 0], UDP, Vec::new()),
        d("ipv6_bad_extension"),
    ));
    v.push(case(
        "IPv6 extension header cut after its first byte",
        eth(
            m.gw,
            m.guest,
            ETH_IP6,
            &ip6(guest6(), gw6(), 60, 64, &[UDP]),
        ),
        d("ipv6_bad_extension"),
    ));
    v.push(case(
        "IPv6 authentication header past the payload",
        frame6_ext(m, 51, &[UDP, 200, 0, 0, 0, 0, 0, 0], UDP, Vec::new()),
        d("ipv6_bad_extension"),
    ));
    v.push(case(
        "IPv6 no next header",
        frame6_ext(m, 59, &[0; 8], 59, Vec::new()),
        d("ipv6_bad_extension"),
    ));
    let frag = |next: u8, off_mf: u16| {
        let mut h = vec![next, 0];
        h.extend_from_slice(&off_mf.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 7]);
        h
    };
    v.push(case(
        "IPv6 first fragment",
        frame6_ext(m, 44, &frag(UDP, 1), UDP, u6.clone()),
        d("ipv6_fragment"),
    ));
    v.push(case(
        "IPv6 atomic fragment",
        frame6_ext(m, 44, &frag(UDP, 0), UDP, u6.clone()),
        d("ipv6_fragment"),
    ));
    let mut e = dopt(44);
    e.extend(frag(UDP, 8 << 3));
    v.push(case(
        "IPv6 fragment after destination options",
        frame6_ext(m, 60, &e, UDP, u6.clone()),
        d("ipv6_fragment"),
    ));
    v
}

/// The UDP and TCP headers.
fn tcp_udp_cases(m: Macs) -> Vec<Case> {
    use Expect::*;
    let d = |r| Drop(r);
    let mut v = Vec::new();
    // UDP and TCP headers.
    v.push(case(
        "UDP header truncated",
        frame4(m, UDP, vec![0x9c, 0x45, 0x1a, 0x5f]),
        d("l4_truncated"),
    ));
    let mut x = udp(40005, UDP_PORT, b"len");
    x[4..6].copy_from_slice(&4u16.to_be_bytes());
    v.push(case("UDP length 4", frame4(m, UDP, x), d("l4_truncated")));
    let mut x = udp(40006, UDP_PORT, b"len");
    x[4..6].copy_from_slice(&300u16.to_be_bytes());
    v.push(case(
        "UDP length past the packet",
        frame4(m, UDP, x),
        d("l4_truncated"),
    ));
    v.push(case(
        "UDP to port 0",
        frame4(m, UDP, udp(40007, 0, b"zero")),
        d("dgram_bad_endpoint"),
    ));
    v.push(case(
        "UDP checksum wrong",
        {
            let mut f = frame4(m, UDP, udp(40008, UDP_PORT, b"udp csum"));
            let n = f.len();
            f[n - 10] ^= 0xff;
            f
        },
        Delivered(b"udp csum"),
    ));
    v.push(case(
        "UDP over IPv6, checksum wrong",
        {
            let mut f = frame6_ext(m, 0, &[], UDP, udp(40009, UDP_PORT, b"udp6 csum"));
            let n = f.len();
            f[n - 11] ^= 0xff;
            f
        },
        Delivered(b"udp6 csum"),
    ));
    v.push(case(
        "TCP header truncated",
        frame4(m, TCP, tcp(41000, TCP_PORT, 1, 0x02, &[])[..12].to_vec()),
        d("l4_truncated"),
    ));
    let mut t = tcp(41001, TCP_PORT, 1, 0x02, &[]);
    t[12] = 4 << 4;
    v.push(case(
        "TCP data offset 4",
        frame4(m, TCP, t),
        d("l4_truncated"),
    ));
    let mut t = tcp(41002, TCP_PORT, 1, 0x02, &[]);
    t[12] = 15 << 4;
    v.push(case(
        "TCP data offset past the segment",
        frame4(m, TCP, t),
        d("l4_truncated"),
    ));
    v.push(case(
        "TCP ACK for no connection",
        frame4(m, TCP, tcp(41003, TCP_PORT, 1, 0x10, &[])),
        d("tcp_no_flow"),
    ));
    v.push(case(
        "TCP SYN+FIN",
        frame4(m, TCP, tcp(41004, TCP_PORT, 1, 0x03, &[])),
        d("tcp_bad_segment"),
    ));
    v.push(case(
        "TCP SYN to port 0",
        frame4(m, TCP, tcp(41005, 0, 1, 0x02, &[])),
        d("tcp_bad_endpoint"),
    ));
    // Options that overrun the header end the option walk; the handshake
    // goes on with defaults.
    v.push(case(
        "TCP SYN, MSS option overrunning the header",
        frame4(m, TCP, tcp(41006, TCP_PORT, 1, 0x02, &[2, 40, 5, 0xb4])),
        Reply(self::Reply::SynAck(41006)),
    ));
    v.push(case(
        "TCP SYN, option of length 0",
        frame4(m, TCP, tcp(41007, TCP_PORT, 1, 0x02, &[3, 0, 7, 0])),
        Reply(self::Reply::SynAck(41007)),
    ));
    v.push(case(
        "TCP SYN over IPv6, option of length 1",
        frame6_ext(m, 0, &[], TCP, tcp(41008, TCP_PORT, 1, 0x02, &[2, 1, 1, 1])),
        Reply(self::Reply::SynAck(41008)),
    ));
    v.push(case(
        "TCP SYN, checksum wrong",
        {
            let mut f = frame4(m, TCP, tcp(41009, TCP_PORT, 1, 0x02, &[]));
            let n = f.len();
            f[n - 3] ^= 0xff;
            f
        },
        Reply(self::Reply::SynAck(41009)),
    ));
    v
}

/// ICMP and other protocols.
fn other_l4_cases(m: Macs) -> Vec<Case> {
    use Expect::*;
    let d = |r| Drop(r);
    vec![
        case(
            "ICMP timestamp request",
            frame4(m, ICMP4, vec![13, 0, 0, 0, 0, 1, 0, 1]),
            d("icmp_not_echo"),
        ),
        case(
            "ICMPv6 destination unreachable",
            frame6_ext(m, 0, &[], ICMP6, vec![1, 4, 0, 0, 0, 0, 0, 0]),
            d("icmp_not_echo"),
        ),
        case(
            "SCTP",
            frame4(m, 132, vec![0; 16]),
            d("unsupported_protocol"),
        ),
    ]
}

/// DHCP, DHCPv6 and NDP; `ra` as in [`cases`].
fn service_cases(m: Macs, ra: bool) -> Vec<Case> {
    let mut v = dhcp_cases(m);
    v.extend(ndp_cases(m, ra));
    v
}

/// DHCP and DHCPv6.
fn dhcp_cases(m: Macs) -> Vec<Case> {
    use Expect::*;
    let d = |r| Drop(r);
    let mut v = Vec::new();
    // DHCP.
    v.push(case(
        "DHCP header truncated",
        {
            let mut f = dhcp(m, COOKIE, DISCOVER);
            f.truncate(14 + 20 + 8 + 100);
            // Lengths of the truncated packet, checksums left alone.
            let ip_len = (20 + 8 + 100) as u16;
            f[16..18].copy_from_slice(&ip_len.to_be_bytes());
            f[14 + 10..14 + 12].fill(0);
            let c = fold(sum16(&f[14..34], 0));
            f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
            f[38..40].copy_from_slice(&108u16.to_be_bytes());
            f[40..42].fill(0);
            f
        },
        d("service_malformed"),
    ));
    v.push(case(
        "DHCP magic cookie wrong",
        dhcp(m, [1, 2, 3, 4], DISCOVER),
        d("service_malformed"),
    ));
    v.push(case(
        "DHCP option overrunning the message",
        dhcp(m, COOKIE, &[53, 1, 1, 55, 200, 1, 3, 6]),
        d("service_malformed"),
    ));
    v.push(case(
        "DHCP message type option cut short",
        dhcp(m, COOKIE, &[53]),
        d("service_malformed"),
    ));
    v.push(case(
        "DHCP discover",
        dhcp(m, COOKIE, DISCOVER),
        Reply(self::Reply::DhcpOffer),
    ));

    // DHCPv6.
    let mut o = client_id(m.guest);
    o.extend_from_slice(&[0, 8, 0, 200, 0, 0]);
    v.push(case(
        "DHCPv6 option overrunning the message",
        dhcp6(m, &solicit(&o)),
        d("service_malformed"),
    ));
    v.push(case(
        "DHCPv6 without client identifier",
        dhcp6(m, &solicit(&[0, 8, 0, 2, 0, 0])),
        d("service_malformed"),
    ));
    v.push(case(
        "DHCPv6 header truncated",
        dhcp6(m, &[1, 0xab]),
        d("service_malformed"),
    ));
    v.push(case(
        "DHCPv6 solicit",
        dhcp6(m, &solicit(&client_id(m.guest))),
        Reply(self::Reply::Dhcp6Advertise),
    ));

    v
}

/// NDP; `ra` as in [`cases`].
fn ndp_cases(m: Macs, ra: bool) -> Vec<Case> {
    use Expect::*;
    let d = |r| Drop(r);
    let mut v = Vec::new();
    let sll = |len: u8| {
        let mut o = vec![1, len];
        o.extend_from_slice(&m.guest);
        o
    };
    v.push(case(
        "NDP router solicitation, hop limit 64",
        ndp(m, 64, all_routers(), rs(&sll(1))),
        d("service_malformed"),
    ));
    v.push(case(
        "NDP option of length 0",
        ndp(m, 255, all_routers(), rs(&sll(0))),
        d("service_malformed"),
    ));
    v.push(case(
        "NDP option overrunning the message",
        ndp(m, 255, all_routers(), rs(&sll(4))),
        d("service_malformed"),
    ));
    v.push(case(
        "NDP neighbour solicitation truncated",
        ndp(
            m,
            255,
            all_routers(),
            vec![135, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0x80],
        ),
        d("service_malformed"),
    ));
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&all_routers());
    v.push(case(
        "NDP neighbour solicitation for a multicast address",
        ndp(m, 255, all_routers(), ns),
        d("service_malformed"),
    ));
    v.push(case(
        "NDP router solicitation",
        ndp(m, 255, all_routers(), rs(&sll(1))),
        if ra {
            Reply(self::Reply::RouterAdvert)
        } else {
            d("service_ignored")
        },
    ));
    v
}
