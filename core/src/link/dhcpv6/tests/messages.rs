//! Which message gets which reply: Solicit, Request, Renew, Rebind,
//! Confirm, Information-request, and those left unanswered.

use super::*;

#[test]
fn solicit_gets_advertise() {
    let cfg = capture_config();
    let req = msg(SOLICIT, &[client_id(), ia_na(IAID, &[])]);
    let (core, p) = one_reply(cfg.clone(), &req);
    check_lease_reply(&cfg, &p, ADVERTISE, IAID);
    assert_eq!(core.guest().ip6_seen, Some("fd77::2".parse().unwrap()));
    // Without an IA_NA the lease is still offered, with IAID 0.
    let (_, p) = one_reply(cfg.clone(), &msg(SOLICIT, &[client_id()]));
    check_lease_reply(&cfg, &p, ADVERTISE, 0);
}

#[test]
fn solicit_with_server_id_is_ignored() {
    let cfg = capture_config();
    for sid in [our_server_id(&cfg), other_server_id()] {
        let req = msg(SOLICIT, &[client_id(), sid, ia_na(IAID, &[])]);
        dropped(cfg.clone(), &req, DropReason::ServiceIgnored);
    }
}

#[test]
fn request_renew_rebind_need_our_server_id() {
    let cfg = capture_config();
    for t in [REQUEST, RENEW, REBIND] {
        let ia = ia_na(IAID, &iaaddr("fd77::2", &[]));
        let good = msg(t, &[client_id(), our_server_id(&cfg), ia.clone()]);
        let (_, p) = one_reply(cfg.clone(), &good);
        check_lease_reply(&cfg, &p, REPLY, IAID);
        let wrong = msg(t, &[client_id(), other_server_id(), ia.clone()]);
        dropped(cfg.clone(), &wrong, DropReason::ServiceIgnored);
        let none = msg(t, &[client_id(), ia.clone()]);
        dropped(cfg.clone(), &none, DropReason::ServiceIgnored);
        // Our DUID with a different time is not ours.
        let mut other_time = cfg.clone();
        other_time.duid_time ^= 1;
        let stale = msg(t, &[client_id(), our_server_id(&other_time), ia]);
        dropped(cfg.clone(), &stale, DropReason::ServiceIgnored);
    }
}

/// Checks a NotOnLink reply: the offending IA with a status code and no
/// address, then the Client ID, nothing else.
fn check_not_on_link(payload: &[u8], code: u16, iaid: u32) {
    let m = Message::parse(payload).unwrap();
    assert_eq!(m.msg_type, REPLY);
    assert_eq!(m.xid, XID);
    assert_eq!(codes(&m), [OPT_SERVERID, code, OPT_CLIENTID]);
    assert_eq!(m.client_id.unwrap(), CLIENT_DUID);
    let ia = m.ias().next().unwrap();
    assert_eq!(ia.iaid, iaid);
    if code == OPT_IA_NA {
        assert_eq!((ia.t1, ia.t2), (3600, 5400), "client's T1/T2 echoed");
    }
    assert_eq!(ia.addresses().count(), 0);
    let inner: Vec<_> = Options::new(ia.opts).map(Result::unwrap).collect();
    assert_eq!(inner.len(), 1);
    assert_eq!(inner[0].code, OPT_STATUS_CODE);
    assert_eq!(be16(inner[0].body, 0), Some(STATUS_NOT_ON_LINK));
    let text = std::str::from_utf8(&inner[0].body[2..]).unwrap();
    assert!(!text.is_empty() && text.is_ascii());
}

#[test]
fn confirm_on_link_and_not_on_link() {
    let cfg = capture_config();
    let on = msg(
        CONFIRM,
        &[client_id(), ia_na(IAID, &iaaddr("fd77::2", &[]))],
    );
    let (_, p) = one_reply(cfg.clone(), &on);
    check_lease_reply(&cfg, &p, REPLY, IAID);

    // An IA with no address at all is on link too.
    let (_, p) = one_reply(cfg.clone(), &msg(CONFIRM, &[client_id(), ia_na(7, &[])]));
    check_lease_reply(&cfg, &p, REPLY, 7);

    // One wrong address among several, in the second IA_NA.
    let ias = [
        ia_na(1, &iaaddr("fd77::2", &[])),
        ia_na(
            2,
            &[iaaddr("fd77::2", &[]), iaaddr("2001:db8::5", &[])].concat(),
        ),
    ];
    let off = msg(CONFIRM, &[client_id(), ias[0].clone(), ias[1].clone()]);
    let (core, p) = one_reply(cfg.clone(), &off);
    check_not_on_link(&p, OPT_IA_NA, 2);
    assert_eq!(core.guest().ip6_seen, Some(CLIENT_LL.parse().unwrap()));

    // An IA_TA gets its own IA back.
    let ta = msg(CONFIRM, &[client_id(), ia_ta(9, &iaaddr("fd00::1", &[]))]);
    let (_, p) = one_reply(cfg.clone(), &ta);
    check_not_on_link(&p, OPT_IA_TA, 9);

    // CONFIRM never names a server.
    for sid in [our_server_id(&cfg), other_server_id()] {
        let with = msg(
            CONFIRM,
            &[client_id(), sid, ia_na(IAID, &iaaddr("fd77::2", &[]))],
        );
        dropped(cfg.clone(), &with, DropReason::ServiceIgnored);
    }
}

#[test]
fn request_for_another_address_is_not_on_link() {
    let cfg = capture_config();
    for t in [REQUEST, RENEW] {
        let req = msg(
            t,
            &[
                client_id(),
                our_server_id(&cfg),
                ia_na(IAID, &iaaddr("fd77::99", &[])),
            ],
        );
        let (_, p) = one_reply(cfg.clone(), &req);
        check_not_on_link(&p, OPT_IA_NA, IAID);
    }
}

#[test]
fn information_request() {
    let cfg = capture_config();
    let sids = [None, Some(our_server_id(&cfg))];
    for sid in sids {
        let mut opts = vec![client_id(), opt(6, &[0, 23, 0, 24])];
        opts.extend(sid);
        let (core, p) = one_reply(cfg.clone(), &msg(INFORMATION_REQUEST, &opts));
        let m = Message::parse(&p).unwrap();
        assert_eq!(m.msg_type, REPLY);
        assert_eq!(m.xid, XID);
        assert_eq!(
            codes(&m),
            [OPT_SERVERID, OPT_CLIENTID, OPT_DNS_SERVERS, OPT_DOMAIN_LIST]
        );
        assert_eq!(m.client_id.unwrap(), CLIENT_DUID);
        assert_eq!(core.guest().ip6_seen, Some(CLIENT_LL.parse().unwrap()));
    }
    let wrong = msg(INFORMATION_REQUEST, &[client_id(), other_server_id()]);
    dropped(cfg.clone(), &wrong, DropReason::ServiceIgnored);
    let na = msg(INFORMATION_REQUEST, &[client_id(), ia_na(1, &[])]);
    dropped(cfg.clone(), &na, DropReason::ServiceIgnored);
    let ta = msg(INFORMATION_REQUEST, &[client_id(), ia_ta(1, &[])]);
    dropped(cfg.clone(), &ta, DropReason::ServiceIgnored);
    // The Client ID is required here too.
    let anon = msg(INFORMATION_REQUEST, &[]);
    dropped(cfg, &anon, DropReason::ServiceMalformed);
}

#[test]
fn other_messages_are_ignored() {
    let cfg = capture_config();
    let sid = our_server_id(&cfg);
    let ia = ia_na(IAID, &iaaddr("fd77::2", &[]));
    for t in [
        RELEASE, DECLINE, ADVERTISE, REPLY, 10, RELAY_FORW, RELAY_REPL, 200,
    ] {
        let m = msg(t, &[client_id(), sid.clone(), ia.clone()]);
        dropped(cfg.clone(), &m, DropReason::ServiceIgnored);
    }
    // A relay header does not parse as options: still only ignored.
    dropped(cfg.clone(), &[RELAY_FORW, 0, 1], DropReason::ServiceIgnored);
}

#[test]
fn switched_off_or_without_address() {
    let req = msg(SOLICIT, &[client_id(), ia_na(IAID, &[])]);
    let mut cfg = capture_config();
    cfg.features.dhcpv6 = false;
    dropped(cfg, &req, DropReason::ServiceIgnored);
    let mut cfg = capture_config();
    cfg.ip6.as_mut().unwrap().addr = Ipv6Addr::UNSPECIFIED;
    dropped(cfg, &req, DropReason::ServiceIgnored);
}
