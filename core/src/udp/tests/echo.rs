//! ICMP and ICMPv6 echo through ping sockets.

use super::*;

// --- ICMP echo ---------------------------------------------------------------------

#[test]
fn echo_id_is_rewritten_both_families() {
    let mut h = H::new(capture_config());
    for (g, p) in both_families() {
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
    h.assert_empty();
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
    h.k.no_ping = true;
    h.guest(&[ping(IpAddr::V4(GUEST4), IpAddr::V4(PEER4), 1, 1, b"")]);
    assert_eq!(h.dropped(DropReason::DgramSocketFailed), 1);
    assert!(h.core.udp.ping_warned);
    h.assert_empty();
}
