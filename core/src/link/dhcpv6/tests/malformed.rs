//! Hostile and odd input: counted drops, the first client ID and IA
//! win, replies to any source port, the flow label; arbitrary input and
//! search lists under proptest.

use super::*;

#[test]
// Long by design: a table of hostile messages, one line each, and one loop over it.
fn hostile_inputs_are_counted_as_malformed() {
    let cfg = capture_config();
    let cid = client_id();
    let good_ia = ia_na(IAID, &iaaddr("fd77::2", &[]));
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty message", vec![]),
        ("header cut", vec![SOLICIT, 1, 2]),
        ("no client id", msg(SOLICIT, &[])),
        ("empty DUID", msg(SOLICIT, &[opt(OPT_CLIENTID, &[])])),
        (
            "DUID of 129 bytes",
            msg(SOLICIT, &[opt(OPT_CLIENTID, &[1; 129])]),
        ),
    ];
    // Option length past the end of the message.
    let mut past = msg(SOLICIT, std::slice::from_ref(&cid));
    past.extend_from_slice(&[0, 8, 0, 10, 0, 0]);
    cases.push(("option past the end", past));
    // Option header cut short.
    let mut cut = msg(SOLICIT, std::slice::from_ref(&cid));
    cut.extend_from_slice(&[0, 8, 0]);
    cases.push(("option header cut", cut));
    // Client ID claiming more than there is.
    let mut claim = msg(SOLICIT, &[]);
    claim.extend_from_slice(&[0, 1, 0, 14, 0, 1, 0, 1]);
    cases.push(("client id past the end", claim));
    // IA_NA shorter than its fixed part.
    cases.push((
        "IA_NA too short",
        msg(SOLICIT, &[cid.clone(), opt(OPT_IA_NA, &[0; 11])]),
    ));
    cases.push((
        "IA_TA too short",
        msg(SOLICIT, &[cid.clone(), opt(OPT_IA_TA, &[0; 3])]),
    ));
    // IA Address inside an IA_NA running past the IA_NA.
    let mut body = IAID.to_be_bytes().to_vec();
    body.extend_from_slice(&[0; 8]);
    body.extend_from_slice(&[0, 5, 0, 24]);
    body.extend_from_slice(&[0; 10]);
    cases.push((
        "nested IA Address truncated",
        msg(REQUEST, &[cid.clone(), opt(OPT_IA_NA, &body)]),
    ));
    // IA Address shorter than its fixed part.
    cases.push((
        "IA Address too short",
        msg(
            CONFIRM,
            &[cid.clone(), ia_na(IAID, &opt(OPT_IAADDR, &[0; 23]))],
        ),
    ));
    // An option inside an IA Address running past it.
    cases.push((
        "option in IA Address truncated",
        msg(
            CONFIRM,
            &[
                cid.clone(),
                ia_na(IAID, &iaaddr("fd77::2", &[0, 13, 0, 9, 0])),
            ],
        ),
    ));
    // The same structures, well formed, are answered: the cases above
    // fail for the reason they name.
    let fine = [
        msg(SOLICIT, &[cid.clone(), opt(OPT_CLIENTID, &[1; 128])]),
        msg(SOLICIT, &[opt(OPT_CLIENTID, &[1; 128])]),
        msg(CONFIRM, &[cid.clone(), good_ia.clone()]),
        msg(
            CONFIRM,
            &[
                cid.clone(),
                ia_na(IAID, &iaaddr("fd77::2", &opt(OPT_STATUS_CODE, &[0, 0]))),
            ],
        ),
    ];
    for f in fine {
        let (core, seen) = run(cfg.clone(), &f);
        assert_eq!(seen.len(), 1, "{}", core.counters());
    }
    for (what, m) in cases {
        let (core, seen) = run(cfg.clone(), &m);
        assert!(seen.is_empty(), "{what}");
        assert_eq!(
            core.counters().dropped(DropReason::ServiceMalformed),
            1,
            "{what}: {}",
            core.counters()
        );
    }
    // A source address no reply could go to.
    let mut core = Core::new(cfg);
    let f = udp_frame(
        "::".parse().unwrap(),
        "ff02::1:2".parse().unwrap(),
        546,
        547,
        &msg(SOLICIT, &[client_id()]),
    );
    assert!(exchange(&mut core, Instant::ZERO, &[&f]).is_empty());
    assert_eq!(core.counters().dropped(DropReason::ServiceMalformed), 1);
}

#[test]
fn first_client_id_and_ia_win() {
    let cfg = capture_config();
    let req = msg(
        SOLICIT,
        &[
            client_id(),
            opt(OPT_CLIENTID, &[9; 5]),
            ia_na(5, &[]),
            ia_na(6, &[]),
        ],
    );
    let (_, p) = one_reply(cfg.clone(), &req);
    check_lease_reply(&cfg, &p, ADVERTISE, 5);
}

#[test]
fn reply_to_any_source_port_goes_to_546() {
    let mut core = Core::new(capture_config());
    let f = udp_frame(
        CLIENT_LL.parse().unwrap(),
        "ff02::1:2".parse().unwrap(),
        40000,
        547,
        &msg(SOLICIT, &[client_id()]),
    );
    let out = exchange(&mut core, Instant::ZERO, &[&f]);
    assert_eq!(out.len(), 1);
    assert_eq!(reparse(&out[0]).dport, 546);
}

#[test]
fn flow_label_follows_upstream() {
    assert_eq!(flow_label([0xd4, 0x72, 0xa4]), 0x472d4);
    assert_eq!(flow_label([0xfc, 0xa7, 0xb3]), 0x3a7fc);
    assert_eq!(flow_label([0xff, 0xff, 0xff]), 0xfffff);
}

// --- properties ----------------------------------------------------------

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?"
}

fn domain() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (proptest::collection::vec(label(), 1..5), any::<bool>())
            .prop_map(|(l, dot)| l.join(".") + if dot { "." } else { "" }),
        1 => Just(".".to_owned()),
    ]
}

/// Upper bound on one handled frame: a reply or exactly one counted drop.
fn assert_accounted(core: &Core, replies: usize) {
    let c = core.counters();
    assert_eq!(c.frames_in, 1);
    assert!(replies <= 1);
    assert_eq!(c.replies(ReplyKind::Dhcpv6) + c.dropped_total(), 1, "{c}");
    assert_eq!(c.replies(ReplyKind::Dhcpv6), replies as u64);
}

proptest! {
    /// Search lists survive encoding: what the guest decodes is the
    /// configured list without trailing dots and root-only entries.
    #[test]
    fn search_list_round_trip(names in proptest::collection::vec(domain(), 0..=MAX_SEARCH)) {
        let mut cfg = capture_config();
        cfg.search = names.clone();
        let req = msg(SOLICIT, &[client_id(), ia_na(IAID, &[])]);
        let (_, p) = one_reply(cfg, &req);
        let m = Message::parse(&p).unwrap();
        let expected: Vec<String> = names
            .iter()
            .map(|n| n.strip_suffix('.').unwrap_or(n).to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        match m.option(OPT_DOMAIN_LIST) {
            Some(body) => prop_assert_eq!(decode_names(body), expected),
            None => prop_assert!(expected.is_empty()),
        }
    }

    /// Arbitrary bytes never panic and are always either answered or
    /// counted.
    #[test]
    fn arbitrary_payloads_are_accounted(payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (core, seen) = run(capture_config(), &payload);
        assert_accounted(&core, seen.len());
    }

    /// Valid messages cut short or with one byte changed never panic and
    /// are always either answered or counted; replies stay well formed.
    #[test]
    fn mangled_requests_are_accounted(
        t in prop_oneof![Just(SOLICIT), Just(REQUEST), Just(CONFIRM), Just(INFORMATION_REQUEST)],
        cut in any::<proptest::sample::Index>(),
        flip in any::<(proptest::sample::Index, u8)>(),
        do_cut in any::<bool>(),
    ) {
        let cfg = capture_config();
        let mut m = msg(
            t,
            &[
                client_id(),
                our_server_id(&cfg),
                ia_na(IAID, &iaaddr("fd77::2", &opt(OPT_STATUS_CODE, &[0, 0, b'o', b'k']))),
                ia_ta(3, &iaaddr("fd77::2", &[])),
                opt(6, &[0, 23, 0, 24]),
            ],
        );
        if do_cut {
            m.truncate(cut.index(m.len() + 1));
        } else {
            let i = flip.0.index(m.len());
            m[i] ^= flip.1;
        }
        let (core, seen) = run(cfg, &m);
        assert_accounted(&core, seen.len());
        for s in &seen {
            prop_assert!(Message::parse(&s.payload).is_ok());
        }
    }
}
