//! ARP proxy tests: requests built with smoltcp, replies re-parsed with it.

use super::*;
use crate::testutil::{capture_config, exchange, GUEST_MAC};
use crate::wire::Mac;
use crate::{Config, Core, Instant};
use core::net::{Ipv4Addr, Ipv6Addr};
use proptest::prelude::*;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
};

const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const T0: Instant = Instant::ZERO;

/// A whole ARP frame from the guest, built with smoltcp.
fn arp_frame(op: ArpOperation, sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; 14 + ARP_LEN];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    eth.set_dst_addr(EthernetAddress::BROADCAST);
    eth.set_src_addr(EthernetAddress(sha.0));
    eth.set_ethertype(EthernetProtocol::Arp);
    let repr = ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: EthernetAddress(sha.0),
        source_protocol_addr: spa,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: tpa,
    };
    repr.emit(&mut ArpPacket::new_unchecked(&mut f[14..]));
    f
}

fn request(spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    arp_frame(ArpOperation::Request, GUEST_MAC, spa, tpa)
}

/// Checks `frame` with smoltcp and returns (Ethernet dst, ARP repr).
fn reparse(frame: &[u8]) -> (Mac, ArpRepr) {
    let eth = EthernetFrame::new_checked(frame).expect("ethernet");
    assert_eq!(eth.ethertype(), EthernetProtocol::Arp);
    assert_eq!(eth.src_addr().0, Mac::OUR_DEFAULT.0);
    let arp = ArpPacket::new_checked(eth.payload()).expect("arp");
    // Padded with zeros to the 802.3 minimum.
    assert_eq!(frame.len(), 60);
    assert!(frame[14 + ARP_LEN..].iter().all(|&b| b == 0));
    (
        Mac(eth.dst_addr().0),
        ArpRepr::parse(&arp).expect("arp repr"),
    )
}

fn core() -> Core {
    Core::new(capture_config())
}

#[test]
fn answers_request_for_gateway() {
    let mut c = core();
    let out = exchange(&mut c, T0, &[&request(GUEST_IP, GW)]);
    assert_eq!(out.len(), 1);
    let (dst, repr) = reparse(&out[0]);
    assert_eq!(dst, GUEST_MAC);
    assert_eq!(
        repr,
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: EthernetAddress(Mac::OUR_DEFAULT.0),
            source_protocol_addr: GW,
            target_hardware_addr: EthernetAddress(GUEST_MAC.0),
            target_protocol_addr: GUEST_IP,
        }
    );
    assert_eq!(c.counters().replies(ReplyKind::Arp), 1);
    assert_eq!(c.counters().dropped_total(), 0);
}

#[test]
fn proxies_any_target_and_probes() {
    let mut c = core();
    let targets = [
        Ipv4Addr::new(192, 0, 2, 7),
        Ipv4Addr::new(10, 77, 0, 200),
        Ipv4Addr::new(8, 8, 8, 8),
    ];
    for (i, &t) in targets.iter().enumerate() {
        let out = exchange(&mut c, T0, &[&request(GUEST_IP, t)]);
        let (_, repr) = reparse(&out[0]);
        let ArpRepr::EthernetIpv4 {
            source_protocol_addr,
            source_hardware_addr,
            ..
        } = repr
        else {
            panic!()
        };
        assert_eq!(source_protocol_addr, t);
        assert_eq!(source_hardware_addr.0, Mac::OUR_DEFAULT.0);
        assert_eq!(c.counters().replies(ReplyKind::Arp), i as u64 + 1);
    }
    // A probe (sender 0.0.0.0) for some other address is answered too.
    let out = exchange(&mut c, T0, &[&request(Ipv4Addr::UNSPECIFIED, GW)]);
    let (_, repr) = reparse(&out[0]);
    let ArpRepr::EthernetIpv4 {
        target_protocol_addr,
        ..
    } = repr
    else {
        panic!()
    };
    assert_eq!(target_protocol_addr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(c.counters().replies(ReplyKind::Arp), 4);
}

#[test]
fn reply_goes_to_the_arp_sender_and_uses_our_configured_mac() {
    let our = Mac([0x02, 0, 0, 0, 0, 0x99]);
    let mut c = Core::new(Config {
        our_mac: our,
        ..capture_config()
    });
    let other = Mac([0x02, 1, 2, 3, 4, 5]);
    let mut f = arp_frame(ArpOperation::Request, other, GUEST_IP, GW);
    // Ethernet source differs from the ARP sender: the reply follows ARP.
    f[6..12].copy_from_slice(&GUEST_MAC.0);
    let out = exchange(&mut c, T0, &[&f]);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][0..6], &other.0);
    assert_eq!(&out[0][6..12], &our.0);
    assert_eq!(&out[0][14 + 8..14 + 14], &our.0);
}

#[test]
fn ignores_gratuitous_own_address_and_other_ops() {
    let mut c = core();
    let cases = [
        request(GUEST_IP, GUEST_IP),                             // gratuitous
        request(Ipv4Addr::UNSPECIFIED, GUEST_IP),                // DAD probe for own
        request(Ipv4Addr::new(10, 77, 0, 9), GUEST_IP),          // anyone asking for guest
        arp_frame(ArpOperation::Reply, GUEST_MAC, GUEST_IP, GW), // reply
        arp_frame(ArpOperation::Unknown(7), GUEST_MAC, GUEST_IP, GW),
    ];
    for (i, f) in cases.iter().enumerate() {
        let out = exchange(&mut c, T0, &[f]);
        assert!(out.is_empty(), "case {i}");
        assert_eq!(
            c.counters().dropped(DropReason::ServiceIgnored),
            i as u64 + 1
        );
    }
    assert_eq!(c.counters().replies(ReplyKind::Arp), 0);
    // A zero-address request asking for 0.0.0.0 is not gratuitous: answered.
    let out = exchange(
        &mut c,
        T0,
        &[&request(Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)],
    );
    assert_eq!(out.len(), 1);
}

#[test]
fn malformed_is_dropped() {
    let mut c = core();
    let good = request(GUEST_IP, GW);
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for len in [14, 15, 20, 14 + ARP_LEN - 1] {
        cases.push(good[..len].to_vec());
    }
    for (off, val) in [(14, 0x01), (15, 6), (16, 0x86), (18, 8), (19, 16)] {
        let mut f = good.clone();
        f[off] = val;
        cases.push(f);
    }
    for (i, f) in cases.iter().enumerate() {
        assert!(exchange(&mut c, T0, &[f]).is_empty(), "case {i}");
        assert_eq!(c.counters().dropped(DropReason::ArpMalformed), i as u64 + 1);
    }
    // Padding after the packet (qemu pads to 60 bytes) is fine.
    let mut f = good.clone();
    f.resize(60, 0xaa);
    assert_eq!(exchange(&mut c, T0, &[&f]).len(), 1);
}

#[test]
fn ipv4_disabled_means_no_arp() {
    let mut c = Core::new(Config {
        ip4: None,
        ..capture_config()
    });
    assert!(exchange(&mut c, T0, &[&request(GUEST_IP, GW)]).is_empty());
    assert_eq!(c.counters().dropped(DropReason::Ipv4Disabled), 1);
}

#[test]
fn full_queue_counts_a_drop_not_a_reply() {
    let mut cfg = capture_config();
    cfg.limits.out_queue_frames = 1;
    let mut c = Core::new(cfg);
    let f = request(GUEST_IP, GW);
    assert!(!exchange(&mut c, T0, &[&f, &f]).is_empty());
    assert_eq!(c.counters().replies(ReplyKind::Arp), 1);
    assert_eq!(c.counters().dropped(DropReason::OutQueueFull), 1);
}

/// Frames 1 and 2 of the upstream ICMP capture: a Linux guest asks for its
/// gateway and upstream answers. Our answer is the same, byte for byte.
#[test]
fn matches_upstream_capture() {
    let req: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xea, 0xad, 0x3c, 0xfb, 0xc2, 0x4f, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0xea, 0xad, 0x3c, 0xfb, 0xc2, 0x4f, 0x0a, 0x4d,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x4d, 0x00, 0x01,
    ];
    let rep: [u8; 42] = [
        0xea, 0xad, 0x3c, 0xfb, 0xc2, 0x4f, 0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55, 0x0a, 0x4d,
        0x00, 0x01, 0xea, 0xad, 0x3c, 0xfb, 0xc2, 0x4f, 0x0a, 0x4d, 0x00, 0x02,
    ];
    let mut c = core();
    let out = exchange(&mut c, T0, &[&req]);
    // Upstream pads to 60 bytes since November 2025 (the capture is older).
    let mut padded = rep.to_vec();
    padded.resize(60, 0);
    assert_eq!(out, vec![padded]);
}

proptest! {
    /// Any bytes after an ARP Ethernet header: no panic, every frame is
    /// either answered (a valid reply) or dropped and counted.
    #[test]
    fn hostile_arp_never_panics(mut body in proptest::collection::vec(any::<u8>(), 0..80),
                                valid_hdr in any::<bool>()) {
        if valid_hdr && body.len() >= 6 {
            body[..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
        }
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&GUEST_MAC.0);
        f.extend_from_slice(&[0x08, 0x06]);
        f.extend_from_slice(&body);
        let mut c = core();
        let out = exchange(&mut c, T0, &[&f]);
        let n = c.counters();
        prop_assert_eq!(out.len() as u64 + n.dropped_total(), 1);
        prop_assert_eq!(out.len() as u64, n.replies(ReplyKind::Arp));
        for o in &out {
            let (_, repr) = reparse(o);
            let ArpRepr::EthernetIpv4 { operation, .. } = repr else { unreachable!() };
            prop_assert_eq!(operation, ArpOperation::Reply);
        }
    }
}

/// When the link (re)connects: an ARP request for the guest's address and a
/// neighbour solicitation for its IPv6 address (with our MAC as source
/// link-layer address, hop limit 255, to its solicited-node group); the
/// guest's answer teaches the core its MAC. Nothing for IPv6 with NDP off.
#[test]
fn link_up_probes_the_guests_addresses() {
    use etherparse::{Icmpv6Type, NetSlice, SlicedPacket, TransportSlice};
    let mut core = Core::new(capture_config());
    core.handle_tap_connected(T0);
    let f = crate::testutil::drain_frames(&mut core);
    assert_eq!(f.len(), 2, "{f:?}");
    let (dst, repr) = reparse(&f[0]);
    assert_eq!(dst, Mac::BROADCAST);
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = repr
    else {
        panic!("{repr:?}")
    };
    assert_eq!(operation, ArpOperation::Request);
    assert_eq!(source_hardware_addr, EthernetAddress(Mac::OUR_DEFAULT.0));
    assert_eq!((source_protocol_addr, target_protocol_addr), (GW, GUEST_IP));
    // The NS.
    assert_eq!(&f[1][0..6], &[0x33, 0x33, 0xff, 0, 0, 2]);
    let p = SlicedPacket::from_ethernet(&f[1]).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!()
    };
    let h = ip.header().to_header();
    assert_eq!(h.hop_limit, 255);
    assert_eq!(
        h.destination,
        "ff02::1:ff00:2".parse::<Ipv6Addr>().unwrap().octets()
    );
    let Some(TransportSlice::Icmpv6(i)) = &p.transport else {
        panic!()
    };
    assert_eq!(i.icmp_type(), Icmpv6Type::NeighborSolicitation);
    let c = etherparse::Icmpv6Header::with_checksum(
        i.icmp_type(),
        h.source,
        h.destination,
        i.payload(),
    )
    .unwrap()
    .checksum;
    assert_eq!(i.checksum(), c);
    let mut want = "fd77::2".parse::<Ipv6Addr>().unwrap().octets().to_vec();
    want.extend_from_slice(&[1, 1]);
    want.extend_from_slice(&Mac::OUR_DEFAULT.0);
    assert_eq!(i.payload(), &want[..]);
    assert_eq!(core.counters().replies(crate::ReplyKind::GuestProbe), 2);
    // The guest answers the ARP request: its MAC is known.
    assert_eq!(core.guest().mac, Mac::BROADCAST);
    exchange(
        &mut core,
        T0,
        &[&arp_frame(ArpOperation::Reply, GUEST_MAC, GUEST_IP, GW)],
    );
    assert_eq!(core.guest().mac, GUEST_MAC);
    // NDP off: the ARP request only.
    let mut cfg = capture_config();
    cfg.features.ndp = false;
    let mut core = Core::new(cfg);
    core.handle_tap_connected(T0);
    assert_eq!(crate::testutil::drain_frames(&mut core).len(), 1);
}

// --- LAN neighbours with their own MAC -----------------------------------

const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 9);
const PEER_MAC: Mac = Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);

/// The sender hardware and protocol addresses of an ARP frame.
fn sender(frame: &[u8]) -> (Mac, Ipv4Addr) {
    let eth = EthernetFrame::new_checked(frame).expect("ethernet");
    let arp = ArpPacket::new_checked(eth.payload()).expect("arp");
    let ArpRepr::EthernetIpv4 {
        source_hardware_addr,
        source_protocol_addr,
        ..
    } = ArpRepr::parse(&arp).expect("arp repr")
    else {
        panic!()
    };
    (Mac(source_hardware_addr.0), source_protocol_addr)
}

#[test]
fn lan_neighbour_is_answered_with_its_own_mac() {
    let mut c = core();
    c.handle_neighbour(T0, PEER_IP.into(), Some(PEER_MAC));
    // Not announced: the guest has not spoken yet.
    assert!(crate::testutil::drain_frames(&mut c).is_empty());
    let out = exchange(&mut c, T0, &[&request(GUEST_IP, PEER_IP)]);
    assert_eq!(out.len(), 1);
    // The reply comes from us, and names the neighbour's MAC.
    let (dst, _) = reparse(&out[0]);
    assert_eq!(dst, GUEST_MAC);
    assert_eq!(sender(&out[0]), (PEER_MAC, PEER_IP));
    // The gateway (mapped to the host's loopback) and other addresses: ours.
    for t in [GW, Ipv4Addr::new(10, 77, 0, 10)] {
        let out = exchange(&mut c, T0, &[&request(GUEST_IP, t)]);
        assert_eq!(sender(&out[0]), (Mac::OUR_DEFAULT, t));
    }
    // Gone from the host's table: ours again.
    c.handle_neighbour(T0, PEER_IP.into(), None);
    let out = exchange(&mut c, T0, &[&request(GUEST_IP, PEER_IP)]);
    assert_eq!(sender(&out[0]), (Mac::OUR_DEFAULT, PEER_IP));
    assert_eq!(c.neigh_stats().announced, 0);
}

#[test]
fn new_neighbour_is_announced_once_the_guest_spoke() {
    let mut c = core();
    exchange(&mut c, T0, &[&request(GUEST_IP, GW)]);
    c.handle_neighbour(T0, PEER_IP.into(), Some(PEER_MAC));
    let out = crate::testutil::drain_frames(&mut c);
    assert_eq!(out.len(), 1);
    // A gratuitous request from the neighbour's MAC, to everybody.
    let eth = EthernetFrame::new_checked(&out[0][..]).expect("ethernet");
    assert_eq!(eth.src_addr().0, PEER_MAC.0);
    assert_eq!(eth.dst_addr(), EthernetAddress::BROADCAST);
    let arp = ArpPacket::new_checked(eth.payload()).expect("arp");
    assert_eq!(
        ArpRepr::parse(&arp).expect("arp repr"),
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(PEER_MAC.0),
            source_protocol_addr: PEER_IP,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: PEER_IP,
        }
    );
    assert_eq!(out[0].len(), 60);
    assert_eq!(c.neigh_stats().announced, 1);
    // A change of MAC, the gateway, our own MAC: no announcement.
    c.handle_neighbour(T0, PEER_IP.into(), Some(Mac([2, 0, 0, 0, 0, 1])));
    c.handle_neighbour(T0, GW.into(), Some(PEER_MAC));
    c.handle_neighbour(
        T0,
        Ipv4Addr::new(10, 77, 0, 11).into(),
        Some(Mac::OUR_DEFAULT),
    );
    assert!(crate::testutil::drain_frames(&mut c).is_empty());
    assert_eq!(c.neigh_stats().announced, 1);
    assert_eq!(c.neigh_stats().ignored, 1);
}
