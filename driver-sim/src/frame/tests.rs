use super::*;

fn v4(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn built_frames_check_out() {
    let t = tcp_frame(
        GUEST_MAC,
        BROADCAST,
        v4("10.77.0.2:40000"),
        v4("192.0.2.1:80"),
        1000,
        0,
        flags::SYN,
        65535,
        &tcp_options("mss 1460,sackOK,nop,wscale 7").unwrap(),
        b"",
    );
    check_frame(&t, 65535).unwrap();
    assert!(well_formed(&t));
    let mut tr = SeqTracker::default();
    assert_eq!(
        summarize(&t, &mut tr),
        "TCP 10.77.0.2:40000 > 192.0.2.1:80 S 0:0(0) win 65535 <mss 1460,sackOK,nop,wscale 7>"
    );
    let seg = parse_tcp(&t).unwrap();
    assert_eq!(seg.seq_len(), 1);
    let u = udp_frame(
        GUEST_MAC,
        BROADCAST,
        v4("10.77.0.2:5000"),
        v4("10.77.0.1:53"),
        b"hi",
    );
    check_frame(&u, 65535).unwrap();
    let echo = |src: &str, dst: &str| {
        echo_request(
            GUEST_MAC,
            BROADCAST,
            src.parse().unwrap(),
            dst.parse().unwrap(),
            1,
            1,
            56,
        )
    };
    for f in [
        arp_request(
            GUEST_MAC,
            Ipv4Addr::new(10, 77, 0, 2),
            Ipv4Addr::new(10, 77, 0, 1),
        ),
        dhcp_client(GUEST_MAC, 1, 7, None),
        dhcpv6_client(GUEST_MAC, 1, 7, None),
        ndp_rs(GUEST_MAC),
        ndp_ns(GUEST_MAC, Ipv6Addr::UNSPECIFIED, "fd77::2".parse().unwrap()),
        echo("10.77.0.2", "10.77.0.1"),
        echo("fd77::2", "fd77::1"),
    ] {
        check_frame(&f, 65535).unwrap();
        assert!(well_formed(&f));
    }
    assert!(summarize(&dhcp_client(GUEST_MAC, 1, 7, None), &mut tr)
        .contains("DHCP DISCOVER xid 0x00000007"));
    assert!(summarize(&ndp_rs(GUEST_MAC), &mut tr).contains("router-solicitation"));
}

#[test]
fn damage_is_caught() {
    let mut f = udp_frame(
        GUEST_MAC,
        BROADCAST,
        v4("10.77.0.2:5000"),
        v4("10.77.0.1:53"),
        b"hello",
    );
    let last = f.len() - 1;
    f[last] ^= 1;
    assert!(check_frame(&f, 65535).unwrap_err().contains("checksum"));
    f[last] ^= 1;
    f.pop();
    assert!(check_frame(&f, 65535).is_err());
    assert!(!well_formed(&f));
    let f = arp_request(
        GUEST_MAC,
        Ipv4Addr::new(10, 77, 0, 2),
        Ipv4Addr::new(10, 77, 0, 1),
    );
    assert!(check_frame(&f, 20).is_err());
    assert!(!well_formed(&f[..20]));
    assert!(summarize(&f[..10], &mut SeqTracker::default()).starts_with("malformed"));
}

#[test]
fn ack_rewrite_keeps_the_frame_valid() {
    for (a, b) in [
        ("10.77.0.2:40000", "10.77.0.1:80"),
        ("[fd77::2]:40000", "[fd77::1]:80"),
    ] {
        let mut f = tcp_frame(
            GUEST_MAC,
            BROADCAST,
            v4(a),
            v4(b),
            5,
            7,
            flags::ACK,
            100,
            &[],
            b"data",
        );
        assert!(set_tcp_ack(&mut f, 0xdead_beef));
        check_frame(&f, 65535).unwrap();
        let t = parse_tcp(&f).unwrap();
        assert_eq!(
            (t.ack, t.seq, t.payload.as_slice()),
            (0xdead_beef, 5, &b"data"[..])
        );
    }
    let mut arp = arp_request(
        GUEST_MAC,
        Ipv4Addr::new(1, 2, 3, 4),
        Ipv4Addr::new(1, 2, 3, 5),
    );
    assert!(!set_tcp_ack(&mut arp, 1));
    let mut tr = SeqTracker::default();
    tr.rel_seq(v4("1.1.1.1:1"), v4("2.2.2.2:2"), 77, true);
    assert_eq!(tr.isn(v4("1.1.1.1:1"), v4("2.2.2.2:2")), Some(77));
    assert_eq!(tr.isn(v4("2.2.2.2:2"), v4("1.1.1.1:1")), None);
}

#[test]
fn relative_numbers() {
    let mut tr = SeqTracker::default();
    let a = v4("10.0.0.1:1");
    let b = v4("10.0.0.2:2");
    assert_eq!(tr.rel_seq(a, b, 5000, true), 0);
    assert_eq!(tr.rel_seq(b, a, 9, true), 0);
    assert_eq!(tr.rel_seq(a, b, 5001, false), 1);
    assert_eq!(tr.rel_ack(b, a, 5011), 11);
    assert_eq!(flag_str(flags::SYN | flags::ACK), "S.");
    assert_eq!(flag_str(flags::RST), "R");
    assert_eq!(tcp_options("mss 1460").unwrap(), vec![2, 4, 5, 180]);
    assert!(tcp_options("bogus").is_err());
}
