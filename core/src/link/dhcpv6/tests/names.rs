//! DNS servers, the search list and the client's FQDN in the reply.

use super::*;

#[test]
fn dns_and_search_switches() {
    let req = msg(SOLICIT, &[client_id(), ia_na(IAID, &[])]);
    let base = [OPT_SERVERID, OPT_IA_NA, OPT_CLIENTID];
    let cases = [
        (false, true, vec![OPT_DOMAIN_LIST]),
        (true, false, vec![OPT_DNS_SERVERS]),
        (false, false, vec![]),
    ];
    for (dns, search, extra) in cases {
        let mut cfg = capture_config();
        cfg.features.advertise_dns = dns;
        cfg.features.advertise_search = search;
        let (_, p) = one_reply(cfg.clone(), &req);
        let m = Message::parse(&p).unwrap();
        assert_eq!(codes(&m), [&base[..], &extra[..]].concat());
        assert_eq!(lease(&m), lease_expected(&cfg, IAID));
    }
    // Switched on but with nothing to say: no empty options.
    let mut cfg = capture_config();
    cfg.ip6.as_mut().unwrap().dns.clear();
    cfg.search = vec![".".into(), String::new()];
    let (_, p) = one_reply(cfg, &req);
    assert_eq!(codes(&Message::parse(&p).unwrap()), base);
    // Three resolvers, in order.
    let mut cfg = capture_config();
    let dns: Vec<Ipv6Addr> = ["fd77::1", "2001:db8::53", "fd00::35"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    cfg.ip6.as_mut().unwrap().dns = dns.iter().copied().collect();
    let (_, p) = one_reply(cfg, &req);
    let m = Message::parse(&p).unwrap();
    assert_eq!(dns_list(m.option(OPT_DNS_SERVERS).unwrap()), dns);
}

/// `--fqdn`: option 39 (RFC 4704) last in leases and information replies,
/// the name in wire format, flags O if the client set S, else none; not in
/// NotOnLink replies; left out if it would not fit in the IPv6 minimum MTU.
#[test]
fn client_fqdn() {
    let mut cfg = capture_config();
    cfg.fqdn = Some("myhost.example".into());
    let body = |p: &[u8]| {
        let m = Message::parse(p).unwrap();
        assert_eq!(codes(&m).last(), Some(&OPT_CLIENT_FQDN), "{:?}", codes(&m));
        m.option(OPT_CLIENT_FQDN).unwrap().to_vec()
    };
    let name = b"\x06myhost\x07example\x00";
    // No option 39 from the client, or one without S: flags 0.
    for fqdn in [None, Some(opt(OPT_CLIENT_FQDN, b"\x00\x01x\x00"))] {
        let mut opts = vec![client_id(), ia_na(IAID, &[])];
        opts.extend(fqdn);
        let (_, p) = one_reply(cfg.clone(), &msg(SOLICIT, &opts));
        assert_eq!(body(&p), [&[0u8][..], name].concat());
    }
    // S set (dhclient -6 sends S with its own name): O, our name.
    let s = opt(OPT_CLIENT_FQDN, b"\x01\x05other\x00");
    let req = msg(
        REQUEST,
        &[client_id(), our_server_id(&cfg), ia_na(IAID, &[]), s],
    );
    let (_, p) = one_reply(cfg.clone(), &req);
    assert_eq!(body(&p), [&[FQDN_O][..], name].concat());
    let info = msg(INFORMATION_REQUEST, &[client_id()]);
    let (_, p) = one_reply(cfg.clone(), &info);
    assert_eq!(body(&p), [&[0u8][..], name].concat());
    // NotOnLink: no DNS options, no FQDN.
    let wrong = ia_na(IAID, &iaaddr("2001:db8::99", &[]));
    let (_, p) = one_reply(cfg.clone(), &msg(CONFIRM, &[client_id(), wrong]));
    let m = Message::parse(&p).unwrap();
    assert!(m.option(OPT_CLIENT_FQDN).is_none());
    // A name that cannot be encoded is left out; the rest goes.
    cfg.fqdn = Some("a..b".into());
    let (_, p) = one_reply(cfg.clone(), &msg(SOLICIT, &[client_id()]));
    assert!(Message::parse(&p)
        .unwrap()
        .option(OPT_CLIENT_FQDN)
        .is_none());
    // Six maximal search names leave no room under 1280 bytes.
    let label = |c: char| c.to_string().repeat(63);
    cfg.search = (b'a'..b'g')
        .map(|c| {
            let c = char::from(c);
            [label(c), label(c), label(c), c.to_string().repeat(61)].join(".")
        })
        .collect();
    cfg.fqdn = Some("myhost.example".into());
    let (_, p) = one_reply(cfg.clone(), &msg(SOLICIT, &[client_id()]));
    let m = Message::parse(&p).unwrap();
    assert_eq!(decode_names(m.option(OPT_DOMAIN_LIST).unwrap()).len(), 6);
    assert!(m.option(OPT_CLIENT_FQDN).is_none());
    // Four leave room.
    cfg.search.truncate(4);
    let (_, p) = one_reply(cfg, &msg(SOLICIT, &[client_id()]));
    assert!(p.len() <= FQDN_REPLY_LIMIT);
    assert_eq!(body(&p), [&[0u8][..], name].concat());
}
