//! LAN neighbours in the simulator: the `neighbour` scenario, with the
//! Ethernet source of every frame the core sent checked (the timeline's
//! summaries do not show it).

use passt_driver_sim::scenario::{run, RunOptions, Scenario};
use std::net::Ipv4Addr;
use std::path::PathBuf;

const PEER_MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
const OUR_MAC: [u8; 6] = [0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55];
const GUEST_MAC: [u8; 6] = [0x22, 0x72, 0xee, 0x22, 0xd2, 0x37];
const PEER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 9);

/// The IPv4 source of an IPv4 frame.
fn ip4_src(f: &[u8]) -> Option<Ipv4Addr> {
    (f.get(12..14)? == [0x08, 0x00]).then(|| Ipv4Addr::new(f[26], f[27], f[28], f[29]))
}

#[test]
fn frames_from_a_lan_neighbour_carry_its_mac_while_it_is_known() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/scenarios/neighbour");
    let sc = Scenario::load(&dir).expect("scenario");
    let r = run(&sc, &RunOptions::default()).expect("run");
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    // The core's frames to the guest, in order: those from the neighbour
    // (IPv4 source 10.77.0.9) and the announcement.
    let from_core: Vec<&Vec<u8>> = r
        .wire
        .iter()
        .map(|(_, f)| f)
        .filter(|f| f.get(6..12) != Some(&GUEST_MAC[..]))
        .collect();
    let announce: Vec<_> = from_core
        .iter()
        .filter(|f| f.get(..6) == Some(&[0xff; 6][..]) && f.get(12..14) == Some(&[8, 6][..]))
        .collect();
    assert_eq!(announce.len(), 1, "one gratuitous ARP");
    assert_eq!(&announce[0][6..12], &PEER_MAC[..]);
    let srcs: Vec<[u8; 6]> = from_core
        .iter()
        .filter(|f| ip4_src(f) == Some(PEER))
        .map(|f| f[6..12].try_into().unwrap())
        .collect();
    // Echo reply and UDP while known, the last echo reply after removal.
    assert_eq!(srcs, vec![PEER_MAC, PEER_MAC, OUR_MAC], "{srcs:x?}");
}
