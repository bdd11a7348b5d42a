//! Tests of the forwarding grammar and of the forwards it yields.

use super::*;
use proptest::prelude::*;

const EPH: (u16, u16) = (32768, 60999);

fn table(specs: &[&str], kind: SpecKind) -> Result<FwdTable, FwdError> {
    FwdTable::from_specs(specs, kind, EPH).map(|(t, _)| t)
}

#[test]
fn keywords() {
    let t = table(&["none"], SpecKind::PasstInbound).unwrap();
    assert_eq!(t.mode(), FwdMode::None);
    assert_eq!(t.count(), 0);
    let t = table(&["auto"], SpecKind::PastaInbound).unwrap();
    assert_eq!(t.mode(), FwdMode::Auto);
    assert_eq!(t.target(4242), Some(4242));
    let t = table(&["all"], SpecKind::PasstInbound).unwrap();
    assert_eq!(t.mode(), FwdMode::All);
    // 1..=65535 minus the ephemeral range.
    assert_eq!(t.count(), 65535 - (60999 - 32768 + 1));
    assert!(!t.is_forwarded(0));
    assert!(t.is_forwarded(1));
    assert!(t.is_forwarded(32767));
    assert!(!t.is_forwarded(32768));
    assert!(!t.is_forwarded(60999));
    assert!(t.is_forwarded(61000));
    assert!(t.is_forwarded(65535));
    assert_eq!(t.rules().len(), 2);
    assert!(t.rules().iter().all(|r| r.best_effort));
    assert_eq!(
        table(&["auto"], SpecKind::PasstInbound),
        Err(FwdError::AutoNotAllowed)
    );
    assert_eq!(
        table(&["all"], SpecKind::PastaInbound),
        Err(FwdError::AllNotAllowed)
    );
    assert_eq!(
        table(&["all"], SpecKind::PastaOutbound),
        Err(FwdError::AllNotAllowed)
    );
}

/// (spec, [(port, target)] that must hold, ports that must not be forwarded)
#[allow(clippy::type_complexity)]
const GOOD: &[(&str, &[(u16, u16)], &[u16])] = &[
    ("22", &[(22, 22)], &[21, 23]),
    ("22:23", &[(22, 23)], &[23]),
    ("22,25", &[(22, 22), (25, 25)], &[23, 24]),
    ("22-80", &[(22, 22), (50, 50), (80, 80)], &[21, 81]),
    ("22-80:32-90", &[(22, 32), (80, 90)], &[81, 90]),
    (
        "5-25,~10-20",
        &[(5, 5), (9, 9), (21, 21), (25, 25)],
        &[10, 15, 20],
    ),
    ("~10-20,5-25", &[(5, 5), (21, 21)], &[10, 20]),
    ("192.0.2.1/5", &[(5, 5)], &[4, 6]),
    ("[192.0.2.1]/5", &[(5, 5)], &[]),
    ("2001:db8::1/22", &[(22, 22)], &[]),
    ("[2001:db8::1]/22", &[(22, 22)], &[]),
    ("%eth0/22", &[(22, 22)], &[]),
    ("192.0.2.1%eth0/22-23", &[(22, 22), (23, 23)], &[]),
    ("65535", &[(65535, 65535)], &[65534]),
    ("65535:1", &[(65535, 1)], &[]),
    ("1:65535", &[(1, 65535)], &[]),
    ("0-2", &[(1, 1), (2, 2)], &[0]),
    ("80:8080,443:8443", &[(80, 8080), (443, 8443)], &[8080]),
];

#[test]
fn good_specs() {
    for (spec, fwd, not) in GOOD {
        let t = table(&[spec], SpecKind::PasstInbound).unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(t.mode(), FwdMode::Spec, "{spec}");
        for (p, to) in *fwd {
            assert_eq!(t.target(*p), Some(*to), "{spec}: port {p}");
            let r = t.rules().iter().find(|r| r.target(*p).is_some());
            assert_eq!(r.and_then(|r| r.target(*p)), Some(*to), "{spec}: rule {p}");
        }
        for p in *not {
            assert_eq!(t.target(*p), None, "{spec}: port {p}");
        }
    }
}

#[test]
fn bind_parts() {
    let t = table(&["192.0.2.1%eth0/22"], SpecKind::PastaInbound).unwrap();
    let r = &t.rules()[0];
    assert_eq!(r.addr, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(r.ifname.as_deref(), Some("eth0"));
    assert!(!r.best_effort);
    let t = table(&["%veth-x/1-3"], SpecKind::PastaInbound).unwrap();
    assert_eq!(t.rules()[0].addr, None);
    assert_eq!(t.rules()[0].ifname.as_deref(), Some("veth-x"));
    let t = table(&["[fd00::1]/8080:80"], SpecKind::PasstInbound).unwrap();
    assert_eq!(t.rules()[0].addr, Some("fd00::1".parse().unwrap()));
    assert_eq!(t.rules()[0].to, 80);
}

#[test]
fn exclusion_only() {
    let t = table(&["~25"], SpecKind::PasstInbound).unwrap();
    assert_eq!(t.mode(), FwdMode::Spec);
    assert!(t.is_forwarded(24));
    assert!(!t.is_forwarded(25));
    assert!(t.is_forwarded(26));
    assert!(!t.is_forwarded(40000));
    assert!(t.is_forwarded(61000));
    assert!(!t.is_forwarded(0));
    assert_eq!(t.count(), 65535 - (60999 - 32768 + 1) - 1);
    assert!(t.rules().iter().all(|r| r.best_effort));
    assert_eq!(t.rules().len(), 3);
    let t = table(&["~20000-20010,~1"], SpecKind::PastaInbound).unwrap();
    assert!(!t.is_forwarded(1));
    assert!(t.is_forwarded(2));
    assert!(!t.is_forwarded(20005));
    assert!(t.is_forwarded(20011));
}

#[test]
fn bad_specs() {
    use FwdError::*;
    let passt = SpecKind::PasstInbound;
    // Each group: the kind of list, what the error must be, and the specs.
    type Group = (SpecKind, fn(&FwdError) -> bool, &'static [&'static str]);
    let groups: &[Group] = &[
        (passt, |e| *e == Empty, &["", "22,", ",22", "192.0.2.1/"]),
        (
            passt,
            |e| matches!(e, BadRange(_)),
            &[
                "65536", "-1", "a", "22-", "22:", "+22", "22-23-24", "22:23:24",
            ],
        ),
        (
            passt,
            |e| matches!(e, RangeMismatch(_)),
            &["80-22", "22-80:30-31"],
        ),
        (passt, |e| matches!(e, PortZero(_)), &["22:0"]),
        (passt, |e| matches!(e, ExclusionTarget(_)), &["~22:23"]),
        (passt, |e| *e == OverlappingExclusion(25), &["~20-30,~25"]),
        (
            passt,
            |e| matches!(e, BadAddress(_)),
            &["300.1.1.1/22", "/22", "224.0.0.1/22"],
        ),
        (
            passt,
            |e| matches!(e, BadInterface(_)),
            &["%/22", "%abcdefghijklmnop/22"],
        ),
        (
            SpecKind::PastaOutbound,
            |e| *e == BindNotAllowed,
            &["127.0.0.1/22", "%lo/22"],
        ),
    ];
    for (kind, check, specs) in groups {
        for spec in *specs {
            let e = table(&[spec], *kind).expect_err(spec);
            assert!(check(&e), "{spec}: {e:?}");
            assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn mode_conflicts() {
    let k = SpecKind::PastaInbound;
    for specs in [
        &["none", "22"][..],
        &["22", "none"],
        &["auto", "22"],
        &["22", "auto"],
        &["none", "none"],
        &["auto", "none"],
    ] {
        assert!(
            matches!(table(specs, k), Err(FwdError::ModeConflict { .. })),
            "{specs:?}"
        );
    }
    assert!(matches!(
        table(&["all", "22"], SpecKind::PasstInbound),
        Err(FwdError::ModeConflict { .. })
    ));
    // Several lists add up.
    let t = table(&["22", "80:8080", "192.0.2.1/443"], k).unwrap();
    assert_eq!(t.target(22), Some(22));
    assert_eq!(t.target(80), Some(8080));
    assert_eq!(t.target(443), Some(443));
    assert_eq!(t.rules().len(), 3);
}

#[test]
fn remap_warns() {
    let (t, w) = FwdTable::from_specs(&["22", "22:2222"], SpecKind::PasstInbound, EPH).unwrap();
    assert_eq!(t.target(22), Some(2222));
    assert_eq!(w.len(), 1);
    let (_, w) = FwdTable::from_specs(&["22", "23"], SpecKind::PasstInbound, EPH).unwrap();
    assert!(w.is_empty());
}

#[test]
fn default_table_is_cheap() {
    let t = FwdTable::new();
    assert!(t.map.is_empty() && t.delta.is_empty());
    assert_eq!(t.target(80), None);
    assert_eq!(t.delta(80), 0);
    let t = table(&["80"], SpecKind::PasstInbound).unwrap();
    assert!(t.delta.is_empty(), "no remapping, no delta table");
    assert_eq!(t.target(80), Some(80));
}

#[test]
fn forwards_of_tables() {
    let t = |specs: &[&str]| table(specs, SpecKind::PasstInbound).unwrap();
    let f = |first, last, target_port| Forward {
        last,
        ..Forward::new(Proto::Udp, first, target_port)
    };
    assert_eq!(t(&["22"]).forwards(Proto::Udp), vec![f(22, 22, 22)]);
    assert_eq!(
        t(&["20-30:120-130"]).forwards(Proto::Udp),
        vec![f(20, 30, 120)]
    );
    // A later specification remaps part of a range: the range splits.
    assert_eq!(
        t(&["20-30", "25:2525"]).forwards(Proto::Udp),
        vec![
            f(20, 24, 20),
            f(25, 25, 2525),
            f(26, 30, 26),
            f(25, 25, 2525)
        ]
    );
    // Exclusions and `all`: the runs of forwarded ports.
    assert_eq!(t(&["~2-65535"]).forwards(Proto::Udp), vec![f(1, 1, 1)]);
    let all = t(&["all"]).forwards(Proto::Tcp);
    assert_eq!(all.len(), 2);
    assert_eq!((all[0].first, all[0].last), (1, 32767));
    assert_eq!((all[1].first, all[1].last), (61000, 65535));
    // Addresses and interfaces carry over.
    let mut b = t(&["192.0.2.1%eth7/8080:80"]);
    b.resolve_interfaces(&mut |name| (name == "eth7").then_some(7))
        .unwrap();
    let g = b.forwards(Proto::Tcp);
    assert_eq!(g[0].addr, Some("192.0.2.1".parse().unwrap()));
    assert_eq!(g[0].ifindex, Some(7));
    assert_eq!(g[0].target_port, 80);
    let mut unknown = t(&["%nope/1"]);
    assert_eq!(
        unknown.resolve_interfaces(&mut |_| None),
        Err("no interface nope".into())
    );
    // Other modes: nothing.
    for m in ["none", "auto"] {
        let k = SpecKind::PastaInbound;
        assert!(table(&[m], k).unwrap().forwards(Proto::Tcp).is_empty());
    }
}

#[test]
fn default_mode() {
    let mut t = FwdTable::new();
    t.set_default(FwdMode::Auto);
    assert_eq!(t.mode(), FwdMode::Auto);
    let mut t = table(&["none"], SpecKind::PastaInbound).unwrap();
    t.set_default(FwdMode::Auto);
    assert_eq!(t.mode(), FwdMode::None);
}

fn spec_of(items: &[(u16, u16, Option<u16>)]) -> String {
    items
        .iter()
        .map(|(a, len, to)| {
            let b = a.saturating_add(*len);
            let mut s = if b > *a {
                format!("{a}-{b}")
            } else {
                format!("{a}")
            };
            if let Some(t) = to {
                let tb = u32::from(*t) + u32::from(b - a);
                if b > *a {
                    s += &format!(":{t}-{tb}");
                } else {
                    s += &format!(":{t}");
                }
            }
            s
        })
        .collect::<Vec<_>>()
        .join(",")
}

proptest! {
    /// Any list of valid items parses, and every port of every item maps
    /// to its target (the last item wins for a port given twice).
    #[test]
    fn lists_map_as_written(items in proptest::collection::vec(
        (1u16..65000, 0u16..200, proptest::option::of(1u16..65000)), 1..6)) {
        let items: Vec<_> = items.into_iter().map(|(a, l, t)| {
            let l = l.min(u16::MAX - a);
            let t = t.map(|t| t.min(u16::MAX - l));
            (a, l, t)
        }).collect();
        let spec = spec_of(&items);
        let t = table(&[&spec], SpecKind::PasstInbound).unwrap();
        let mut expect = std::collections::BTreeMap::new();
        for (a, l, to) in &items {
            for i in 0..=*l {
                expect.insert(a + i, to.map_or(a + i, |t| t + i));
            }
        }
        prop_assert_eq!(t.count(), expect.len());
        for (p, to) in &expect {
            prop_assert_eq!(t.target(*p), Some(*to));
        }
        // The rules cover exactly the map.
        let covered: usize = t.rules().iter().map(|r| usize::from(r.last - r.first) + 1).sum();
        prop_assert!(covered >= t.count());
        for r in t.rules() {
            prop_assert!(r.first <= r.last);
        }
    }

    /// Exclusions always win over the ports of the same specification.
    #[test]
    fn exclusions_win(a in 1u16..60000, l in 0u16..500, ex in 1u16..60000, el in 0u16..50) {
        let spec = format!("{}-{},~{}-{}", a, a + l, ex, ex + el);
        let t = table(&[&spec], SpecKind::PastaInbound).unwrap();
        for p in ex..=ex + el {
            prop_assert!(!t.is_forwarded(p));
        }
        for p in a..=a + l {
            prop_assert_eq!(t.is_forwarded(p), p < ex || p > ex + el);
        }
    }

    /// Nothing panics on arbitrary input.
    #[test]
    fn no_panic(s in "[0-9a-f:~,\\-/%\\[\\].]{0,40}") {
        for k in [SpecKind::PasstInbound, SpecKind::PastaInbound, SpecKind::PastaOutbound] {
            let _ = table(&[&s], k);
        }
    }
}
