//! Malformed requests are counted drops, tolerated oddities still get
//! answers, and arbitrary payloads never panic.

use super::*;

// --- hostile input --------------------------------------------------

#[test]
fn malformed_requests_are_counted() {
    let good = msg(Some(DISCOVER), 0, UDHCPC_PRL, &[]);
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        good[..100].to_vec(),
        good[..HDR_LEN].to_vec(),
        good[..HDR_LEN + 2].to_vec(),
    ];
    // Missing cookie.
    let mut m = good.clone();
    m[HDR_LEN..OPTS_OFF].fill(0);
    cases.push(m);
    // Option length past the end.
    let mut m = good[..OPTS_OFF].to_vec();
    m.extend_from_slice(&[OPT_MSG_TYPE, 1, DISCOVER, 12, 40, b'h']);
    cases.push(m);
    // Option code without a length byte.
    let mut m = good[..OPTS_OFF].to_vec();
    m.extend_from_slice(&[OPT_MSG_TYPE, 1, DISCOVER, 12]);
    cases.push(m);
    // Zero-length and over-long message types.
    cases.push(msg(None, 0, &[], &[(OPT_MSG_TYPE, &[])]));
    cases.push(msg(None, 0, &[], &[(OPT_MSG_TYPE, &[1, 1])]));
    let n = cases.len() as u64;
    let mut core = Core::new(capture_config());
    for c in &cases {
        assert!(ask(&mut core, c).is_empty());
    }
    assert_eq!(core.counters().dropped(DropReason::ServiceMalformed), n);
    assert_eq!(core.counters().dropped_total(), n);
}

#[test]
fn tolerated_oddities() {
    let mut core = Core::new(capture_config());
    // No end option: the options end with the datagram.
    let mut m = msg(Some(DISCOVER), 0, &[], &[]);
    m.pop();
    one(&mut core, &m);
    // Zero-length options, pad bytes, and options after the end ignored.
    let mut m = msg(
        Some(REQUEST),
        0,
        &[],
        &[(12, &[]), (55, &[]), (OPT_PAD, &[])],
    );
    m.extend_from_slice(&[OPT_MSG_TYPE, 7, 1]);
    let o = one(&mut core, &m);
    assert_eq!(o.dhcp[OPTS_OFF + 2], ACK);
    // Header only with the cookie, no options at all: BOOTP.
    let o = one(&mut core, &msg(None, 0, &[], &[])[..OPTS_OFF]);
    assert_eq!(get(&opts(&o.dhcp), OPT_MSG_TYPE), None);
    assert_eq!(core.counters().replies(ReplyKind::Dhcp), 3);
    assert_eq!(core.counters().dropped_total(), 0);
}

proptest! {
    /// Arbitrary payloads never panic, and each gets a reply or a drop.
    #[test]
    fn arbitrary_payloads_are_answered_or_counted(
        tail in proptest::collection::vec(any::<u8>(), 0..400),
        keep_cookie in any::<bool>(),
        op in 0u8..3,
        cut in 0usize..700,
    ) {
        let mut m = msg(None, 0, &[], &[]);
        m.truncate(OPTS_OFF);
        m[0] = op;
        if !keep_cookie {
            m[HDR_LEN] = 0;
        }
        m.extend_from_slice(&tail);
        m.truncate(cut);
        let mut core = Core::new(capture_config());
        let r = ask(&mut core, &m);
        for f in &r {
            check(f);
        }
        let c = core.counters();
        prop_assert_eq!(c.replies(ReplyKind::Dhcp) + c.dropped_total(), 1);
        prop_assert_eq!(r.len() as u64, c.replies(ReplyKind::Dhcp));
    }

    /// Any list of names decodes back to itself (invalid names skipped).
    #[test]
    fn search_round_trip(
        names in proptest::collection::vec(
            proptest::collection::vec("[a-c]{1,3}|[a-z0-9-]{1,63}", 1..6)
                .prop_map(|l| l.join(".")),
            0..9,
        )
    ) {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let e = encode(&refs);
        let expected: Vec<String> = names
            .iter()
            .take(MAX_SEARCH)
            .filter(|n| valid_name(n.as_bytes()))
            .cloned()
            .collect();
        prop_assert_eq!(decode_names(&e), expected.clone());
        let plain: usize = expected.iter().map(|n| n.len() + 2).sum();
        prop_assert!(e.len() <= plain);
    }

    /// The search option of a reply decodes to the configured list, for
    /// lists long enough to be split.
    #[test]
    fn search_option_round_trip(
        names in proptest::collection::vec(
            proptest::collection::vec("[a-b]{1,2}|[a-z]{20,63}", 1..5)
                .prop_map(|l| l.join("."))
                .prop_filter("encodable", |n| valid_name(n.as_bytes())),
            1..=MAX_SEARCH,
        )
    ) {
        let mut core = core_with(|c| c.search = names.clone());
        let big: &[(u8, &[u8])] = &[(OPT_MAX_SIZE, &[8, 0])];
        let r = ask(&mut core, &msg(Some(DISCOVER), 0, &[], big));
        prop_assert_eq!(r.len(), 1);
        let op = opts(&check(&r[0]).dhcp);
        prop_assert!(op.iter().all(|(c, d)| *c != OPT_SEARCH || d.len() <= 255));
        prop_assert_eq!(decode_names(&concat(&op, OPT_SEARCH)), names);
    }
}
