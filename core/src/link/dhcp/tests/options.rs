//! The options of the reply: the search list and its encoding, names,
//! what fits the client's size, routes, DNS and MTU switches.

use super::*;

#[test]
fn search_list_compressed() {
    let mut core = Core::new(capture_config());
    let o = one(&mut core, &msg(Some(DISCOVER), 0, &[], &[]));
    let s = get(&opts(&o.dhcp), OPT_SEARCH).unwrap();
    assert_eq!(s, b"\x07example\x03org\x00\x04test\xc0\x00");
    assert_eq!(decode_names(&s), ["example.org", "test.example.org"]);
}

#[test]
fn search_encoding_cases() {
    // A later name that is a suffix of an earlier one points into it.
    let e = encode(&["a.b.example.com", "example.com", "c.b.example.com."]);
    assert_eq!(
        decode_names(&e),
        ["a.b.example.com", "example.com", "c.b.example.com"]
    );
    assert_eq!(&e[17..19], &[0xc0, 4]);
    assert_eq!(e.len(), 17 + 2 + 2 + 2);
    // Duplicates become a bare pointer.
    assert_eq!(encode(&["x.y", "x.y"]), b"\x01x\x01y\x00\xc0\x00");
    // Invalid names are skipped.
    let long_label = "a".repeat(64);
    let long_name = [
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(63),
        "e".repeat(62),
    ]
    .join(".");
    assert_eq!(long_name.len(), 254);
    let e = encode(&["", ".", "a..b", &long_label, &long_name, "ok"]);
    assert_eq!(decode_names(&e), ["ok"]);
    // The longest name that fits: 253 characters, 255 bytes encoded.
    let max = [
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(63),
        "e".repeat(61),
    ]
    .join(".");
    assert_eq!(encode(&[&max]).len(), 255);
    // A name that does not fit is skipped, and nothing points into it.
    let names: [&[u8]; 4] = [
        b"example.org",
        b"test.example.org",
        b"ab",
        b"test.example.org",
    ];
    let mut small = [0u8; 19];
    let n = encode_names(names.into_iter(), &mut small);
    assert_eq!(decode_names(&small[..n]), ["example.org", "ab"]);
    // At most six names.
    let many: Vec<String> = (0..9).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(decode_names(&encode(&refs)).len(), MAX_SEARCH);
}

#[test]
fn long_search_list_split() {
    // Six maximal names with nothing in common.
    let names: Vec<String> = (0..6u8)
        .map(|i| {
            let c = char::from(b'a' + i).to_string();
            [c.repeat(63), c.repeat(63), c.repeat(63), c.repeat(61)].join(".")
        })
        .collect();
    let mut core = core_with(|c| {
        c.search = names.clone();
        let ip4 = c.ip4.as_mut().unwrap();
        ip4.gateway = Some(Ipv4Addr::new(10, 88, 0, 1));
        for a in [2, 3] {
            ip4.dns.push(Ipv4Addr::new(10, 77, 0, a)).unwrap();
        }
    });
    // The client takes long messages (option 57).
    let rc: &[(u8, &[u8])] = &[(OPT_RAPID_COMMIT, &[]), (OPT_MAX_SIZE, &[0xff, 0xff])];
    let r = ask(&mut core, &msg(Some(DISCOVER), 0, &[], rc));
    assert_eq!(r.len(), 1);
    assert!(r[0].len() <= CONTROL_FRAME_MAX);
    let o = check(&r[0]);
    let op = opts(&o.dhcp);
    let parts: Vec<_> = op.iter().filter(|(c, _)| *c == OPT_SEARCH).collect();
    assert_eq!(parts.len(), SEARCH_OPTS_MAX);
    assert!(parts.iter().all(|(_, d)| d.len() <= 255));
    // The instances are consecutive.
    let first = op.iter().position(|(c, _)| *c == OPT_SEARCH).unwrap();
    assert!(op[first..first + parts.len()]
        .iter()
        .all(|(c, _)| *c == OPT_SEARCH));
    assert_eq!(decode_names(&concat(&op, OPT_SEARCH)), names);
    assert_eq!(codes(&op).last(), Some(&OPT_ROUTES));
    // Every option but 12 and 81 at its largest: within what we reserve.
    assert_eq!(o.dhcp.len(), REPLY_MAX - 2 * (2 + 255));
}

/// Without option 57 a reply fits in 576 bytes with its IP and UDP headers
/// (busybox udhcpc drops longer ones): what does not fit is left out, the
/// search list losing its last names first; option 57 makes room.
#[test]
fn reply_fits_what_the_client_takes() {
    let names: Vec<String> = (0..6u8)
        .map(|i| format!("{}.example", char::from(b'a' + i).to_string().repeat(60)))
        .collect();
    let mut core = core_with(|c| {
        c.search = names.clone();
        c.hostname = Some("h".repeat(100));
    });
    let r = ask(&mut core, &msg(Some(DISCOVER), 0, UDHCPC_PRL, &[]));
    let ip_len = r[0].len() - 14;
    assert!(ip_len <= 576, "{ip_len} bytes");
    let op = opts(&check(&r[0]).dhcp);
    // 12 comes before 119 in the request list and fits whole.
    assert_eq!(get(&op, OPT_HOSTNAME), Some(vec![b'h'; 100]));
    let sent = decode_names(&concat(&op, OPT_SEARCH));
    assert!(!sent.is_empty() && sent.len() < names.len(), "{sent:?}");
    assert_eq!(sent[..], names[..sent.len()]);
    // Routes (off-subnet gateway or not) and every small option still
    // made it where they fit.
    for c in [OPT_MSG_TYPE, OPT_MASK, OPT_ROUTER, OPT_LEASE, OPT_SERVER_ID] {
        assert!(
            get(&op, c).is_some(),
            "option {c} missing: {:?}",
            codes(&op)
        );
    }
    // Option 57 of 1500: everything.
    let big: &[(u8, &[u8])] = &[(OPT_MAX_SIZE, &1500u16.to_be_bytes())];
    let r = ask(&mut core, &msg(Some(DISCOVER), 0, UDHCPC_PRL, big));
    assert!(r[0].len() - 14 <= 1500);
    let op = opts(&check(&r[0]).dhcp);
    assert_eq!(decode_names(&concat(&op, OPT_SEARCH)), names);
    // An option 57 below 576, or malformed, changes nothing.
    for bad in [&[0u8, 100][..], &[1, 2, 3]] {
        let r = ask(
            &mut core,
            &msg(Some(DISCOVER), 0, UDHCPC_PRL, &[(OPT_MAX_SIZE, bad)]),
        );
        assert!(r[0].len() - 14 <= 576);
        assert_eq!(
            decode_names(&concat(&opts(&check(&r[0]).dhcp), OPT_SEARCH)),
            sent
        );
    }
}

/// `-H` and `--fqdn`: option 12 carries the host name as given, option 81
/// (RFC 4702) the flags E, RCODEs 255 and the name in wire format, as
/// upstream passt since 2025; both in the request list's order when asked
/// for, else in code order. BOOTP gets 12 only.
#[test]
fn hostname_and_fqdn() {
    let mut core = core_with(|c| {
        c.search.clear();
        c.hostname = Some("myhost".into());
        c.fqdn = Some("myhost.example.".into());
    });
    let fqdn = b"\x04\xff\xff\x06myhost\x07example\x00".to_vec();
    let o = one(&mut core, &msg(Some(REQUEST), 0, UDHCPC_PRL, &[]));
    let op = opts(&o.dhcp);
    assert_eq!(get(&op, OPT_HOSTNAME).as_deref(), Some(&b"myhost"[..]));
    assert_eq!(get(&op, OPT_FQDN), Some(fqdn.clone()));
    assert_eq!(codes(&op), [53, 1, 3, 6, 12, 26, 51, 54, 81]);
    // No request list: ascending code order.
    let o = one(
        &mut core,
        &msg(Some(DISCOVER), 0, &[], &[(OPT_FQDN, b"\x01\0\0x")]),
    );
    assert_eq!(codes(&opts(&o.dhcp)), [53, 1, 3, 6, 12, 26, 51, 54, 81]);
    let o = one(&mut core, &msg(Some(DISCOVER), 0, &[81, 12], &[]));
    assert_eq!(codes(&opts(&o.dhcp))[..3], [53, 81, 12]);
    // BOOTP: the host name is a BOOTP option, 81 is not.
    let o = one(&mut core, &msg(None, 0, &[], &[]));
    assert_eq!(codes(&opts(&o.dhcp)), [1, 3, 6, 12, 26]);
    // Nothing configured: neither.
    let mut core = core_with(|c| c.search.clear());
    let o = one(&mut core, &msg(Some(REQUEST), 0, &[12, 81], &[]));
    let op = opts(&o.dhcp);
    assert!(get(&op, OPT_HOSTNAME).is_none() && get(&op, OPT_FQDN).is_none());
}

/// A name option 81 cannot carry (over 252 bytes in wire format, a bad
/// label) is left out, and so is a host name over 255 bytes; the reply
/// still goes.
#[test]
fn names_that_do_not_fit_are_left_out() {
    let label = "a".repeat(63);
    // 249 characters: 251 bytes encoded, 254 with the flags.
    let fits = format!("{label}.{label}.{label}.{}", "b".repeat(57));
    assert_eq!(fits.len(), 249);
    let too_long = format!("{fits}cd");
    for (fqdn, sent) in [
        (&fits[..], true),
        (&too_long[..], false),
        ("a..b", false),
        (&"c".repeat(64)[..], false),
    ] {
        let mut core = core_with(|c| {
            c.search.clear();
            c.fqdn = Some(fqdn.into());
            c.hostname = Some("x".repeat(256));
        });
        let r = ask(
            &mut core,
            &msg(Some(DISCOVER), 0, &[], &[(OPT_MAX_SIZE, &[5, 0])]),
        );
        let op = opts(&check(&r[0]).dhcp);
        assert!(get(&op, OPT_HOSTNAME).is_none());
        let o81 = get(&op, OPT_FQDN);
        assert_eq!(o81.is_some(), sent, "{fqdn}");
        if let Some(d) = o81 {
            assert_eq!(d.len(), 254);
        }
    }
}

#[test]
fn classless_routes_only_off_subnet() {
    let mut core = Core::new(capture_config());
    let o = one(&mut core, &msg(Some(DISCOVER), 0, UDHCPC_PRL, &[]));
    assert_eq!(get(&opts(&o.dhcp), OPT_ROUTES), None);
    let gw = Ipv4Addr::new(10, 88, 0, 1);
    let mut core = core_with(|c| {
        let ip4 = c.ip4.as_mut().unwrap();
        ip4.gateway = Some(gw);
        ip4.our_addr = Some(gw);
    });
    let o = one(&mut core, &msg(Some(DISCOVER), 0, UDHCPC_PRL, &[]));
    let op = opts(&o.dhcp);
    assert_eq!(
        get(&op, OPT_ROUTES).unwrap(),
        [32, 10, 88, 0, 1, 0, 0, 0, 0, 0, 10, 88, 0, 1]
    );
    assert_eq!(get(&op, OPT_ROUTER).unwrap(), gw.octets());
    assert_eq!(codes(&op), [53, 1, 3, 6, 26, 119, 121, 51, 54]);
    // A /8 puts the same gateway on-link again.
    let mut core = core_with(|c| {
        let ip4 = c.ip4.as_mut().unwrap();
        ip4.gateway = Some(gw);
        ip4.prefix_len = 8;
    });
    let o = one(&mut core, &msg(Some(DISCOVER), 0, UDHCPC_PRL, &[]));
    let op = opts(&o.dhcp);
    assert_eq!(get(&op, OPT_ROUTES), None);
    assert_eq!(get(&op, OPT_MASK).unwrap(), [255, 0, 0, 0]);
}

#[test]
fn dns_and_search_switches() {
    let m = msg(Some(REQUEST), 0, UDHCPC_PRL, &[]);
    let mut core = core_with(|c| c.features.advertise_dns = false);
    let op = opts(&one(&mut core, &m).dhcp);
    assert_eq!(get(&op, OPT_DNS), None);
    assert!(get(&op, OPT_SEARCH).is_some());
    let mut core = core_with(|c| c.features.advertise_search = false);
    let op = opts(&one(&mut core, &m).dhcp);
    assert!(get(&op, OPT_DNS).is_some());
    assert_eq!(get(&op, OPT_SEARCH), None);
    let mut core = core_with(|c| {
        c.ip4.as_mut().unwrap().dns.clear();
        c.search = vec!["a..b".into()];
    });
    let op = opts(&one(&mut core, &m).dhcp);
    assert_eq!(get(&op, OPT_DNS), None);
    assert_eq!(get(&op, OPT_SEARCH), None);
}

#[test]
fn no_mtu_with_m_0() {
    let mut core = core_with(|c| c.mtu = None);
    let op = opts(&one(&mut core, &msg(Some(DISCOVER), 0, UDHCPC_PRL, &[])).dhcp);
    assert_eq!(get(&op, OPT_MTU), None);
    let mut core = core_with(|c| c.mtu = Some(1500));
    let op = opts(&one(&mut core, &msg(Some(DISCOVER), 0, UDHCPC_PRL, &[])).dhcp);
    assert_eq!(get(&op, OPT_MTU).unwrap(), 1500u16.to_be_bytes());
}
