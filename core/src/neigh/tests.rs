//! Neighbour table tests: which addresses qualify, the fallback to the
//! gateway and to our MAC, the capacity, announcements.

use super::*;
use crate::testutil::capture_config;
use core::net::{Ipv4Addr, Ipv6Addr};
use proptest::prelude::*;

const PEER: Mac = Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
const ROUTER: Mac = Mac([0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]);

fn a(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn guest() -> GuestInfo {
    let mut g = GuestInfo::new(Mac::BROADCAST);
    g.ip4_seen = Some(Ipv4Addr::new(10, 77, 0, 2));
    g.ip6_ll_seen = Some("fe80::2".parse().unwrap());
    g
}

#[test]
fn lan_host_gets_its_mac_and_falls_back_to_ours_when_removed() {
    let cfg = capture_config();
    let g = guest();
    let mut t = NeighTable::default();
    let peer = a("10.77.0.9");
    assert_eq!(t.mac_of(&cfg, peer), cfg.our_mac);
    let ann = t.update(&cfg, &g, peer, Some(PEER));
    assert_eq!(
        ann,
        Some(Announce {
            addr: peer,
            mac: PEER
        })
    );
    assert_eq!(t.mac_of(&cfg, peer), PEER);
    // The IPv4-mapped form is the same address.
    assert_eq!(t.mac_of(&cfg, a("::ffff:10.77.0.9")), PEER);
    // Other addresses: ours (the gateway has no entry).
    assert_eq!(t.mac_of(&cfg, a("10.77.0.10")), cfg.our_mac);
    // A change is taken, not announced; the same MAC again changes nothing.
    let other = Mac([0x02, 0, 0, 0, 0, 7]);
    assert_eq!(t.update(&cfg, &g, peer, Some(other)), None);
    assert_eq!(t.update(&cfg, &g, peer, Some(other)), None);
    assert_eq!(t.mac_of(&cfg, peer), other);
    assert_eq!(t.stats.changed, 1);
    // Removed: ours again; removing an absent address is harmless.
    assert_eq!(t.update(&cfg, &g, peer, None), None);
    assert_eq!(t.update(&cfg, &g, peer, None), None);
    assert_eq!(t.mac_of(&cfg, peer), cfg.our_mac);
    assert_eq!(
        t.stats,
        NeighStats {
            added: 1,
            changed: 1,
            removed: 1,
            entries: 0,
            ..NeighStats::default()
        }
    );
}

#[test]
fn mapped_and_own_addresses_do_not_qualify() {
    let mut cfg = capture_config();
    cfg.ip4.as_mut().unwrap().map_guest_addr = Some(Ipv4Addr::new(10, 77, 0, 4));
    let g = guest();
    let mut t = NeighTable::default();
    let ignored = [
        // The gateway, mapped to the host's loopback (--map-gw, the default).
        "10.77.0.1",
        "fd77::1",
        // --map-guest-addr.
        "10.77.0.4",
        // The guest's own addresses, assigned and seen.
        "10.77.0.2",
        "fd77::2",
        "fe80::2",
        // Our link-local address, the source of NDP.
        "fe80::f0d8:fdff:fe4c:e225",
        // Not unicast.
        "127.0.0.1",
        "::1",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "255.255.255.255",
        "ff02::1",
    ];
    for s in ignored {
        assert_eq!(t.update(&cfg, &g, a(s), Some(PEER)), None, "{s}");
        assert_eq!(t.mac_of(&cfg, a(s)), cfg.our_mac, "{s}");
    }
    // A multicast or zero MAC is no host's.
    for m in [Mac::BROADCAST, Mac([1, 0, 0x5e, 0, 0, 1]), Mac::default()] {
        assert_eq!(t.update(&cfg, &g, a("10.77.0.9"), Some(m)), None);
    }
    assert_eq!(t.len(), 0);
    assert_eq!(t.stats.ignored, ignored.len() as u64 + 3);
    // A disabled family: nothing of it.
    cfg.ip6 = None;
    assert_eq!(t.update(&cfg, &g, a("fd77::9"), Some(PEER)), None);
    assert_eq!(t.len(), 0);
}

#[test]
fn unmapped_gateway_is_a_neighbour_and_stands_in_for_the_rest() {
    // --no-map-gw: the gateway is a LAN host like any other, and frames
    // from beyond the LAN come from it.
    let mut cfg = capture_config();
    cfg.ip4.as_mut().unwrap().map_host_loopback = None;
    cfg.ip6.as_mut().unwrap().map_host_loopback = None;
    let g = guest();
    let mut t = NeighTable::default();
    assert!(t.update(&cfg, &g, a("10.77.0.1"), Some(ROUTER)).is_some());
    assert!(t.update(&cfg, &g, a("10.77.0.9"), Some(PEER)).is_some());
    assert_eq!(t.mac_of(&cfg, a("10.77.0.1")), ROUTER);
    assert_eq!(t.mac_of(&cfg, a("10.77.0.9")), PEER);
    assert_eq!(t.mac_of(&cfg, a("192.0.2.1")), ROUTER);
    // Not across families.
    assert_eq!(t.mac_of(&cfg, a("2001:db8::1")), cfg.our_mac);
    assert!(t.update(&cfg, &g, a("fd77::1"), Some(PEER)).is_some());
    assert_eq!(t.mac_of(&cfg, a("2001:db8::1")), PEER);
    // The gateway's entry goes: so does the stand-in.
    t.update(&cfg, &g, a("10.77.0.1"), None);
    assert_eq!(t.mac_of(&cfg, a("192.0.2.1")), cfg.our_mac);
    assert_eq!(t.mac_of(&cfg, a("10.77.0.9")), PEER);
}

#[test]
fn our_own_mac_is_stored_but_not_announced() {
    let cfg = capture_config();
    let mut t = NeighTable::default();
    assert_eq!(
        t.update(&cfg, &guest(), a("10.77.0.9"), Some(cfg.our_mac)),
        None
    );
    assert_eq!(t.stats.added, 1);
}

#[test]
fn a_full_table_refuses_new_addresses_but_updates_and_removes() {
    let cfg = capture_config();
    let g = guest();
    let mut t = NeighTable::new(4);
    let cap = t.entries.capacity();
    for i in 0..4u8 {
        let addr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 10 + i));
        assert!(t.update(&cfg, &g, addr, Some(PEER)).is_some());
    }
    let fifth = a("10.77.0.20");
    assert_eq!(t.update(&cfg, &g, fifth, Some(PEER)), None);
    assert_eq!(t.mac_of(&cfg, fifth), cfg.our_mac);
    assert_eq!(t.stats.refused, 1);
    // Present addresses still change and go.
    assert_eq!(t.update(&cfg, &g, a("10.77.0.10"), Some(ROUTER)), None);
    assert_eq!(t.mac_of(&cfg, a("10.77.0.10")), ROUTER);
    t.update(&cfg, &g, a("10.77.0.11"), None);
    // And then there is room again.
    assert!(t.update(&cfg, &g, fifth, Some(PEER)).is_some());
    assert_eq!(t.stats.entries, 4);
    // Never grown past what was allocated at the start.
    assert_eq!(t.entries.capacity(), cap);
}

proptest! {
    /// Whatever the events, the table agrees with a model map (for the
    /// addresses that qualify), stays sorted and within its capacity.
    #[test]
    fn agrees_with_a_model(ops in proptest::collection::vec(
        (0u8..24, any::<bool>(), 0u8..3, any::<bool>()), 0..200)
    ) {
        let cfg = capture_config();
        let g = guest();
        let mut t = NeighTable::new(8);
        let mut model = std::collections::BTreeMap::new();
        for (host, v6, m, add) in ops {
            let addr = if v6 {
                IpAddr::V6(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x100 + u16::from(host)))
            } else {
                IpAddr::V4(Ipv4Addr::new(10, 77, 0, 100 + host))
            };
            let mac = Mac([0x02, 0, 0, 0, 0, m]);
            if add {
                let known = model.contains_key(&addr);
                let ann = t.update(&cfg, &g, addr, Some(mac));
                if known || model.len() < 8 {
                    prop_assert_eq!(ann.is_some(), !known);
                    model.insert(addr, mac);
                }
            } else {
                t.update(&cfg, &g, addr, None);
                model.remove(&addr);
            }
            prop_assert!(t.entries.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert!(t.len() <= 8);
            prop_assert_eq!(t.len(), model.len());
            for (k, v) in &model {
                prop_assert_eq!(t.get(*k), Some(*v));
            }
        }
    }
}
