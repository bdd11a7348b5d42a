//! Neighbour solicitations for LAN neighbours with their own MAC, and
//! their announcements.

use super::*;

const PEER: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 9);
const PEER_MAC: Mac = Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);

#[test]
fn ns_for_lan_neighbour_is_answered_with_its_own_mac() {
    let mut c = core();
    c.handle_neighbour(T0, PEER.into(), Some(PEER_MAC));
    assert!(drain_frames(&mut c).is_empty());
    let out = exchange(&mut c, T0, &[&ns_frame(GUEST_GLOBAL, PEER)]);
    assert_eq!(out.len(), 1);
    let r = reparse(&out[0]);
    assert_eq!(r.src, our_ll());
    assert_eq!(r.repr, solicited_na(PEER, PEER_MAC));
    // The gateway keeps ours.
    let out = exchange(&mut c, T0, &[&ns_frame(GUEST_GLOBAL, GW)]);
    let NdiscRepr::NeighborAdvert { lladdr: l, .. } = reparse(&out[0]).repr else {
        panic!()
    };
    assert_eq!(l, lladdr(Mac::OUR_DEFAULT));
    c.handle_neighbour(T0, PEER.into(), None);
    let out = exchange(&mut c, T0, &[&ns_frame(GUEST_GLOBAL, PEER)]);
    let NdiscRepr::NeighborAdvert { lladdr: l, .. } = reparse(&out[0]).repr else {
        panic!()
    };
    assert_eq!(l, lladdr(Mac::OUR_DEFAULT));
}

#[test]
fn new_neighbour_is_announced_to_all_nodes_unsolicited() {
    let mut c = core();
    exchange(&mut c, T0, &[&ns_frame(GUEST_GLOBAL, GW)]);
    c.handle_neighbour(T0, PEER.into(), Some(PEER_MAC));
    let out = drain_frames(&mut c);
    assert_eq!(out.len(), 1);
    let r = reparse(&out[0]);
    assert_eq!(r.src, our_ll());
    assert_eq!(r.dst, ALL_NODES);
    assert_eq!(r.dst_mac, multicast_mac(ALL_NODES));
    assert_eq!(
        r.repr,
        NdiscRepr::NeighborAdvert {
            flags: NdiscNeighborFlags::ROUTER | NdiscNeighborFlags::OVERRIDE,
            target_addr: PEER,
            lladdr: lladdr(PEER_MAC),
        }
    );
    assert_eq!(c.neigh_stats().announced, 1);
    // Without NDP, no announcement.
    let mut cfg = capture_config();
    cfg.features.ndp = false;
    let mut c = Core::new(cfg);
    exchange(&mut c, T0, &[&ns_frame(GUEST_GLOBAL, GW)]);
    drain_frames(&mut c);
    c.handle_neighbour(T0, PEER.into(), Some(PEER_MAC));
    assert!(drain_frames(&mut c).is_empty());
    assert_eq!(c.neigh_stats().announced, 0);
}
