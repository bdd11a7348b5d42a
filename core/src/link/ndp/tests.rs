//! Neighbour discovery tests: solicitations built with smoltcp, every
//! advertisement re-parsed with smoltcp and etherparse, replays of upstream's
//! captures, the router advertisement timer.

use super::*;
use crate::config::MAX_SEARCH;
use crate::testutil::{capture_config, drain_frames, exchange, GUEST_MAC};
use crate::wire::ndp::tests::{decode_names, lladdr, options, reparse, smol_icmp};
use crate::wire::ndp::*;
use crate::Core;
use proptest::prelude::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetFrame, Icmpv6Packet, Icmpv6Repr, Ipv6Packet, NdiscNeighborFlags, NdiscPrefixInfoFlags,
    NdiscRepr, NdiscRouterFlags,
};

const T0: Instant = Instant::ZERO;
const GUEST_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x2072, 0xeeff, 0xfe22, 0xd237);
const GUEST_GLOBAL: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
const GW: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

fn our_ll() -> Ipv6Addr {
    capture_config().ip6.unwrap().our_ll
}

/// The answer to a solicitation for `target`: router, solicited, override,
/// with `mac` as its link-layer address.
fn solicited_na(target: Ipv6Addr, mac: Mac) -> NdiscRepr<'static> {
    NdiscRepr::NeighborAdvert {
        flags: NdiscNeighborFlags::ROUTER
            | NdiscNeighborFlags::SOLICITED
            | NdiscNeighborFlags::OVERRIDE,
        target_addr: target,
        lladdr: lladdr(mac),
    }
}

fn core() -> Core {
    Core::new(capture_config())
}

fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([
        0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// A guest frame carrying `icmp` (checksum filled when there is room).
fn guest_frame(src: Ipv6Addr, dst: Ipv6Addr, hop: u8, icmp: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    let dst_mac = if dst.is_multicast() {
        multicast_mac(dst)
    } else {
        Mac::OUR_DEFAULT
    };
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&GUEST_MAC.0);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[PROTO_ICMPV6, hop]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(icmp);
    if icmp.len() >= 4 {
        Icmpv6Packet::new_unchecked(&mut f[54..]).fill_checksum(&src, &dst);
    }
    f
}

fn ns_frame(src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let dst = solicited_node(target);
    let ll = if src.is_unspecified() {
        None
    } else {
        lladdr(GUEST_MAC)
    };
    let icmp = smol_icmp(
        src,
        dst,
        NdiscRepr::NeighborSolicit {
            target_addr: target,
            lladdr: ll,
        },
    );
    guest_frame(src, dst, 255, &icmp)
}

fn rs_frame(src: Ipv6Addr) -> Vec<u8> {
    let ll = if src.is_unspecified() {
        None
    } else {
        lladdr(GUEST_MAC)
    };
    let icmp = smol_icmp(src, ALL_ROUTERS, NdiscRepr::RouterSolicit { lladdr: ll });
    guest_frame(src, ALL_ROUTERS, 255, &icmp)
}

fn ignored(c: &Core) -> u64 {
    c.counters().dropped(DropReason::ServiceIgnored)
}

fn malformed(c: &Core) -> u64 {
    c.counters().dropped(DropReason::ServiceMalformed)
}

// --- neighbour solicitations -------------------------------------------

#[test]
fn ns_is_answered_with_na() {
    let mut c = core();
    let out = exchange(&mut c, T0, &[&ns_frame(GUEST_GLOBAL, GW)]);
    assert_eq!(out.len(), 1);
    let r = reparse(&out[0]);
    assert_eq!(r.dst_mac, GUEST_MAC);
    assert_eq!(r.src, our_ll());
    assert_eq!(r.dst, GUEST_GLOBAL);
    assert_eq!(r.repr, solicited_na(GW, Mac::OUR_DEFAULT));
    assert_eq!(r.icmp.len(), NA_LEN);
    assert_eq!(c.counters().replies(ReplyKind::NeighborAdvert), 1);
    assert_eq!(c.counters().dropped_total(), 0);
}

#[test]
fn ns_for_any_target_is_answered() {
    let mut c = core();
    let targets: [Ipv6Addr; 5] = [
        "fe80::1".parse().unwrap(),
        "2001:db8::42".parse().unwrap(),
        "fd77::99".parse().unwrap(),
        our_ll(),
        GUEST_GLOBAL,
    ];
    for (i, &t) in targets.iter().enumerate() {
        let out = exchange(&mut c, T0, &[&ns_frame(GUEST_LL, t)]);
        assert_eq!(out.len(), 1, "{t}");
        let r = reparse(&out[0]);
        assert_eq!(r.dst, GUEST_LL);
        let NdiscRepr::NeighborAdvert { target_addr, .. } = r.repr else {
            panic!()
        };
        assert_eq!(target_addr, t);
        assert_eq!(
            c.counters().replies(ReplyKind::NeighborAdvert),
            i as u64 + 1
        );
    }
    // A unicast solicitation (neighbour unreachability detection) too.
    let icmp = smol_icmp(
        GUEST_LL,
        our_ll(),
        NdiscRepr::NeighborSolicit {
            target_addr: our_ll(),
            lladdr: None,
        },
    );
    let out = exchange(&mut c, T0, &[&guest_frame(GUEST_LL, our_ll(), 255, &icmp)]);
    assert_eq!(reparse(&out[0]).dst, GUEST_LL);
}

#[test]
fn dad_probe_is_ignored() {
    let mut c = core();
    let out = exchange(&mut c, T0, &[&ns_frame(Ipv6Addr::UNSPECIFIED, GUEST_LL)]);
    assert!(out.is_empty());
    assert_eq!(ignored(&c), 1);
    assert_eq!(c.counters().replies(ReplyKind::NeighborAdvert), 0);
}

#[test]
fn na_uses_our_configured_mac_and_link_local() {
    let mut cfg = capture_config();
    let our = Mac([2, 0, 0, 0, 0, 7]);
    let ll: Ipv6Addr = "fe80::1".parse().unwrap();
    cfg.our_mac = our;
    cfg.ip6.as_mut().unwrap().our_ll = ll;
    let mut c = Core::new(cfg);
    let out = exchange(&mut c, T0, &[&ns_frame(GUEST_GLOBAL, GW)]);
    let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
    assert_eq!(eth.src_addr().0, our.0);
    let ip = Ipv6Packet::new_checked(&out[0][14..]).unwrap();
    assert_eq!(ip.src_addr(), ll);
    let pkt = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert!(pkt.verify_checksum(&ll, &GUEST_GLOBAL));
    let Ok(Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert { lladdr: l, .. })) =
        Icmpv6Repr::parse(&ll, &GUEST_GLOBAL, &pkt, &ChecksumCapabilities::default())
    else {
        panic!()
    };
    assert_eq!(l, lladdr(our));
}

// --- router solicitations ----------------------------------------------

#[test]
fn rs_is_answered_with_full_ra() {
    let mut c = core();
    let out = exchange(&mut c, T0, &[&rs_frame(GUEST_LL)]);
    assert_eq!(out.len(), 1);
    let r = reparse(&out[0]);
    assert_eq!(r.dst_mac, GUEST_MAC);
    assert_eq!((r.src, r.dst), (our_ll(), GUEST_LL));
    let NdiscRepr::RouterAdvert {
        hop_limit,
        flags,
        router_lifetime,
        reachable_time,
        retrans_time,
        lladdr: l,
        mtu,
        prefix_info,
    } = r.repr
    else {
        panic!("{:?}", r.repr)
    };
    assert_eq!(hop_limit, 255);
    assert_eq!(flags, NdiscRouterFlags::MANAGED);
    assert_eq!(router_lifetime.secs(), 65535);
    assert_eq!(reachable_time.total_millis(), 0);
    assert_eq!(retrans_time.total_millis(), 0);
    assert_eq!(l, lladdr(Mac::OUR_DEFAULT));
    assert_eq!(mtu, Some(u32::from(crate::DEFAULT_MTU)));
    let p = prefix_info.unwrap();
    assert_eq!(p.prefix_len, 64);
    assert_eq!(
        p.flags,
        NdiscPrefixInfoFlags::ON_LINK | NdiscPrefixInfoFlags::ADDRCONF
    );
    assert_eq!(p.valid_lifetime.secs(), u64::from(u32::MAX));
    assert_eq!(p.preferred_lifetime.secs(), u64::from(u32::MAX));
    assert_eq!(p.prefix, GUEST_GLOBAL, "not masked, as upstream");

    // Options, in order, with the RFC 8106 ones smoltcp does not read.
    let opts = options(r.icmp, 16);
    let types: Vec<u8> = opts.iter().map(|o| o.0).collect();
    assert_eq!(
        types,
        [OPT_PREFIX, OPT_SOURCE_LL, OPT_MTU, OPT_RDNSS, OPT_DNSSL]
    );
    let rdnss = opts[3].1;
    assert_eq!(rdnss.len(), 6 + 16);
    assert_eq!(&rdnss[..6], &[0, 0, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(&rdnss[6..], &GW.octets());
    let dnssl = opts[4].1;
    assert_eq!(&dnssl[..6], &[0, 0, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!((dnssl.len() + 2) % 8, 0);
    assert_eq!(decode_names(&dnssl[6..]), capture_config().search);
    assert_eq!(c.counters().replies(ReplyKind::RouterAdvert), 1);
    assert_eq!(c.counters().dropped_total(), 0);
}

#[test]
fn rs_from_unspecified_goes_to_all_nodes() {
    let mut c = core();
    let out = exchange(&mut c, T0, &[&rs_frame(Ipv6Addr::UNSPECIFIED)]);
    assert_eq!(out.len(), 1);
    let r = reparse(&out[0]);
    assert_eq!(r.dst, ALL_NODES);
    assert_eq!(r.dst_mac, Mac([0x33, 0x33, 0, 0, 0, 1]));
    assert!(matches!(r.repr, NdiscRepr::RouterAdvert { .. }));
    assert_eq!(c.counters().replies(ReplyKind::RouterAdvert), 1);
}

#[test]
fn rs_ignored_without_ra() {
    let mut cfg = capture_config();
    cfg.features.ra = false;
    let mut c = Core::new(cfg);
    assert!(exchange(&mut c, T0, &[&rs_frame(GUEST_LL)]).is_empty());
    assert_eq!(ignored(&c), 1);
    // Neighbour solicitations are still answered.
    assert_eq!(exchange(&mut c, T0, &[&ns_frame(GUEST_LL, GW)]).len(), 1);
}

#[test]
fn nothing_answered_with_ndp_off() {
    let mut cfg = capture_config();
    cfg.features.ndp = false;
    let mut c = Core::new(cfg);
    let out = exchange(&mut c, T0, &[&rs_frame(GUEST_LL), &ns_frame(GUEST_LL, GW)]);
    assert!(out.is_empty());
    assert_eq!(ignored(&c), 2);
}

/// The RA for a configuration, as (ICMPv6 bytes, option types).
fn ra_for(cfg: crate::Config) -> (Vec<u8>, Vec<u8>) {
    let mut c = Core::new(cfg);
    let out = exchange(&mut c, T0, &[&rs_frame(GUEST_LL)]);
    assert_eq!(out.len(), 1);
    let r = reparse(&out[0]);
    assert!(matches!(r.repr, NdiscRepr::RouterAdvert { .. }));
    let types = options(r.icmp, 16).iter().map(|o| o.0).collect();
    (r.icmp.to_vec(), types)
}

#[test]
fn ra_options_follow_the_configuration() {
    let base = capture_config;
    let all = [OPT_PREFIX, OPT_SOURCE_LL, OPT_MTU, OPT_RDNSS, OPT_DNSSL];

    let (_, t) = ra_for(base());
    assert_eq!(t, all);

    // Local mode: no prefix.
    let mut cfg = base();
    cfg.ip6.as_mut().unwrap().addr = Ipv6Addr::UNSPECIFIED;
    assert_eq!(ra_for(cfg).1, all[1..]);

    // No MTU advertised.
    let mut cfg = base();
    cfg.mtu = None;
    assert_eq!(
        ra_for(cfg).1,
        [OPT_PREFIX, OPT_SOURCE_LL, OPT_RDNSS, OPT_DNSSL]
    );

    // Other MTU.
    let mut cfg = base();
    cfg.mtu = Some(1500);
    let (icmp, _) = ra_for(cfg);
    let opts = options(&icmp, 16);
    assert_eq!(opts[2].1, &[0, 0, 0, 0, 0x05, 0xdc]);

    // No DNS advertisement: neither RDNSS nor DNSSL.
    let mut cfg = base();
    cfg.features.advertise_dns = false;
    assert_eq!(ra_for(cfg).1, all[..3]);

    // No resolvers: no DNSSL either, even with a search list.
    let mut cfg = base();
    cfg.ip6.as_mut().unwrap().dns.clear();
    assert_eq!(ra_for(cfg).1, all[..3]);

    // No search advertisement, or an empty or unencodable list: no DNSSL.
    let mut cfg = base();
    cfg.features.advertise_search = false;
    assert_eq!(ra_for(cfg).1, all[..4]);
    let mut cfg = base();
    cfg.search.clear();
    assert_eq!(ra_for(cfg).1, all[..4]);
    let mut cfg = base();
    cfg.search = vec!["".into(), "a..b".into(), "x".repeat(64), ".".into()];
    assert_eq!(ra_for(cfg).1, all[..4]);

    // Three resolvers.
    let mut cfg = base();
    let dns = &mut cfg.ip6.as_mut().unwrap().dns;
    dns.push("2001:db8::53".parse().unwrap()).unwrap();
    dns.push("2001:db8::54".parse().unwrap()).unwrap();
    let (icmp, _) = ra_for(cfg);
    let opts = options(&icmp, 16);
    assert_eq!(opts[3].0, OPT_RDNSS);
    assert_eq!(opts[3].1.len(), 6 + 3 * 16);
    assert_eq!(
        &opts[3].1[6 + 32..],
        &"2001:db8::54".parse::<Ipv6Addr>().unwrap().octets()
    );

    // At most six search domains; bad ones skipped; trailing dot accepted.
    let mut cfg = base();
    cfg.search = (0..9).map(|i| format!("d{i}.example.")).collect();
    cfg.search[1] = "bad..name".into();
    let (icmp, _) = ra_for(cfg);
    let opts = options(&icmp, 16);
    let names = decode_names(&opts[4].1[6..]);
    assert_eq!(
        names,
        [
            "d0.example",
            "d2.example",
            "d3.example",
            "d4.example",
            "d5.example"
        ]
    );
}

#[test]
fn longest_ra_fits() {
    let mut cfg = capture_config();
    let dns = &mut cfg.ip6.as_mut().unwrap().dns;
    dns.push("2001:db8::53".parse().unwrap()).unwrap();
    dns.push("2001:db8::54".parse().unwrap()).unwrap();
    let long = [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61),
    ]
    .join(".");
    assert_eq!(long.len(), 253);
    cfg.search = vec![long.clone(); MAX_SEARCH];
    let (icmp, types) = ra_for(cfg);
    assert_eq!(
        types,
        [OPT_PREFIX, OPT_SOURCE_LL, OPT_MTU, OPT_RDNSS, OPT_DNSSL]
    );
    assert_eq!(icmp.len(), RA_MAX);
    let opts = options(&icmp, 16);
    assert_eq!(decode_names(&opts[4].1[6..]), vec![long; MAX_SEARCH]);
}

// --- ignored and malformed ---------------------------------------------

#[test]
fn advertisements_and_redirects_from_guest_are_ignored() {
    let mut c = core();
    let ra = smol_icmp(
        GUEST_LL,
        ALL_NODES,
        NdiscRepr::RouterAdvert {
            hop_limit: 64,
            flags: NdiscRouterFlags::empty(),
            router_lifetime: smoltcp::time::Duration::from_secs(1800),
            reachable_time: smoltcp::time::Duration::from_millis(0),
            retrans_time: smoltcp::time::Duration::from_millis(0),
            lladdr: lladdr(GUEST_MAC),
            mtu: Some(1500),
            prefix_info: None,
        },
    );
    let na = smol_icmp(
        GUEST_LL,
        ALL_NODES,
        NdiscRepr::NeighborAdvert {
            flags: NdiscNeighborFlags::OVERRIDE,
            target_addr: GUEST_LL,
            lladdr: lladdr(GUEST_MAC),
        },
    );
    let redirect = smol_icmp(
        GUEST_LL,
        our_ll(),
        NdiscRepr::Redirect {
            target_addr: GW,
            dest_addr: GW,
            lladdr: None,
            redirected_hdr: None,
        },
    );
    assert_eq!(redirect.len(), 40);
    let frames = [
        guest_frame(GUEST_LL, ALL_NODES, 255, &ra),
        guest_frame(GUEST_LL, ALL_NODES, 255, &na),
        guest_frame(GUEST_LL, our_ll(), 255, &redirect),
    ];
    for (i, f) in frames.iter().enumerate() {
        assert!(exchange(&mut c, T0, &[f]).is_empty(), "case {i}");
        assert_eq!(ignored(&c), i as u64 + 1);
    }
    assert_eq!(c.counters().dropped_total(), 3);
}

#[test]
fn malformed_messages_are_dropped() {
    let ns = smol_icmp(
        GUEST_LL,
        solicited_node(GW),
        NdiscRepr::NeighborSolicit {
            target_addr: GW,
            lladdr: lladdr(GUEST_MAC),
        },
    );
    let rs = smol_icmp(
        GUEST_LL,
        ALL_ROUTERS,
        NdiscRepr::RouterSolicit {
            lladdr: lladdr(GUEST_MAC),
        },
    );
    let dst = solicited_node(GW);
    let mut cases: Vec<(Ipv6Addr, Vec<u8>)> = Vec::new();
    // Truncated below each type's minimum.
    for (t, min) in [(133u8, 8usize), (134, 16), (135, 24), (136, 24), (137, 40)] {
        let mut b = vec![0u8; min - 1];
        b[0] = t;
        cases.push((dst, b));
    }
    cases.push((dst, vec![135]));
    // A copy of `base` changed by `edit`.
    let edited = |base: &Vec<u8>, edit: &dyn Fn(&mut Vec<u8>)| {
        let mut b = base.clone();
        edit(&mut b);
        b
    };
    cases.extend([
        // Code not zero.
        (dst, edited(&ns, &|b| b[1] = 1)),
        // Option of length 0.
        (dst, edited(&ns, &|b| b[25] = 0)),
        (ALL_ROUTERS, edited(&rs, &|b| b[9] = 0)),
        // Option running past the end: huge length, or a lone trailing byte.
        (dst, edited(&ns, &|b| b[25] = 255)),
        (ALL_ROUTERS, edited(&rs, &|b| b.push(1))),
        (
            ALL_ROUTERS,
            edited(&rs, &|b| b.extend_from_slice(&[1, 2, 0, 0, 0, 0, 0, 0])),
        ),
        // Multicast target.
        (
            dst,
            edited(&ns, &|b| b[8..24].copy_from_slice(&ALL_NODES.octets())),
        ),
    ]);

    let mut c = core();
    for (i, (dst, icmp)) in cases.iter().enumerate() {
        let f = guest_frame(GUEST_LL, *dst, 255, icmp);
        assert!(exchange(&mut c, T0, &[&f]).is_empty(), "case {i}");
        assert_eq!(malformed(&c), i as u64 + 1, "case {i}");
    }
    // Hop limit other than 255 (required: see `parse_ndp`).
    for hop in [1, 64, 254] {
        let f = guest_frame(GUEST_LL, dst, hop, &ns);
        assert!(exchange(&mut c, T0, &[&f]).is_empty());
        let f = guest_frame(GUEST_LL, ALL_ROUTERS, hop, &rs);
        assert!(exchange(&mut c, T0, &[&f]).is_empty());
    }
    assert_eq!(malformed(&c), cases.len() as u64 + 6);
    // Multicast source.
    let f = guest_frame(ALL_NODES, dst, 255, &ns);
    assert!(exchange(&mut c, T0, &[&f]).is_empty());
    assert_eq!(malformed(&c), cases.len() as u64 + 7);
    assert_eq!(c.counters().replies(ReplyKind::NeighborAdvert), 0);
    assert_eq!(c.counters().replies(ReplyKind::RouterAdvert), 0);
    // The unmodified messages are answered.
    let out = exchange(
        &mut c,
        T0,
        &[
            &guest_frame(GUEST_LL, dst, 255, &ns),
            &guest_frame(GUEST_LL, ALL_ROUTERS, 255, &rs),
        ],
    );
    assert_eq!(out.len(), 2);
}

// --- against upstream ----------------------------------------------------

/// The frames of a little-endian microsecond pcap file with Ethernet links.
fn pcap_frames(data: &[u8]) -> Vec<&[u8]> {
    assert_eq!(&data[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
    assert_eq!(u32::from_le_bytes(data[20..24].try_into().unwrap()), 1);
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let incl = u32::from_le_bytes(data[off + 8..off + 12].try_into().unwrap()) as usize;
        let orig = u32::from_le_bytes(data[off + 12..off + 16].try_into().unwrap()) as usize;
        assert_eq!(incl, orig, "no truncated frames");
        out.push(&data[off + 16..off + 16 + incl]);
        off += 16 + incl;
    }
    assert_eq!(off, data.len());
    out
}

/// Replays every guest frame of a capture, one batch each, and checks that
/// what we send back equals, byte for byte, what upstream sent.
fn replay(cfg: crate::Config, pcap: &[u8]) -> usize {
    let mut c = Core::new(cfg);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for f in pcap_frames(pcap) {
        if f[6..12] == Mac::OUR_DEFAULT.0 {
            theirs.push(f.to_vec());
        } else if f[12..14] == [0x86, 0xdd] || f[12..14] == [0x08, 0x06] {
            ours.extend(exchange(&mut c, T0, &[f]));
        }
    }
    assert_eq!(ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "reply {i}");
        reparse(a);
    }
    ours.len()
}

/// Frames 5 to 8: two router solicitations (with and without a source
/// link-layer option) and upstream's two advertisements. Upstream had no
/// IPv6 resolver to advertise in that set-up. The DAD solicitations and MLD
/// reports of the capture get no answer from either.
#[test]
fn ra_matches_upstream_capture() {
    let mut cfg = capture_config();
    cfg.features.advertise_dns = false;
    let n = replay(
        cfg,
        include_bytes!("../../../../tests/captures/pasta-upstream-slaac.ns.pcap"),
    );
    assert_eq!(n, 2);
}

/// The upstream ICMP capture: an ARP request for the gateway and a
/// neighbour solicitation for fd77::1, answered as upstream did.
#[test]
fn na_matches_upstream_capture() {
    let pcap = include_bytes!("../../../../tests/captures/pasta-upstream-icmp.ns.pcap");
    let frames = pcap_frames(pcap);
    let mut c = core();
    let ns = frames[18];
    let out = exchange(&mut c, T0, &[ns]);
    assert_eq!(out, vec![frames[19].to_vec()]);
    let r = reparse(&out[0]);
    assert!(matches!(r.repr, NdiscRepr::NeighborAdvert { .. }));
}

// --- unsolicited router advertisements -----------------------------------

const SEC: u64 = 1_000_000_000;

fn at(secs: u64) -> Instant {
    Instant::from_nanos(secs * SEC)
}

/// `c` has no router advertisement timer, and sends none at `t`.
fn assert_no_ra_timer(c: &mut Core, t: Instant) {
    assert_eq!(c.poll_timeout(), None);
    c.handle_timeout(t);
    assert!(drain_frames(c).is_empty());
    assert_eq!(c.counters().replies(ReplyKind::RouterAdvert), 0);
}

/// Brings the guest up at `t` with a frame that gets no answer.
fn guest_appears(c: &mut Core, t: Instant) {
    let f = ns_frame(Ipv6Addr::UNSPECIFIED, GUEST_LL);
    assert!(exchange(c, t, &[&f]).is_empty());
}

#[test]
fn no_ra_timer_before_guest_is_seen() {
    let mut c = core();
    assert_no_ra_timer(&mut c, at(10_000));
}

#[test]
fn unsolicited_ra_is_sent_and_rescheduled() {
    let mut c = core();
    let t0 = at(1000);
    guest_appears(&mut c, t0);
    let due = c.poll_timeout().expect("scheduled");
    let wait = due.since(t0).as_millis() as u64;
    assert!((200_000..600_000).contains(&wait), "{wait}");
    // Early or repeated calls are harmless.
    c.handle_timeout(t0);
    c.handle_timeout(Instant::from_nanos(due.as_nanos() - 1));
    assert!(drain_frames(&mut c).is_empty());
    assert_eq!(c.poll_timeout(), Some(due));
    // Later frames do not move the deadline.
    guest_appears(&mut c, at(1001));
    assert_eq!(c.poll_timeout(), Some(due));

    c.handle_timeout(due);
    let out = drain_frames(&mut c);
    assert_eq!(out.len(), 1);
    let r = reparse(&out[0]);
    assert_eq!(r.dst, ALL_NODES);
    assert_eq!(r.dst_mac, Mac([0x33, 0x33, 0, 0, 0, 1]));
    assert_eq!(r.src, our_ll());
    assert!(matches!(r.repr, NdiscRepr::RouterAdvert { .. }));
    assert_eq!(c.counters().replies(ReplyKind::RouterAdvert), 1);
    let next = c.poll_timeout().unwrap();
    let wait = next.since(due).as_millis() as u64;
    assert!((200_000..600_000).contains(&wait), "{wait}");
    c.handle_timeout(due);
    assert!(drain_frames(&mut c).is_empty());

    // A late timer sends one advertisement and schedules from now.
    let late = next.saturating_add(Duration::from_secs(5000));
    c.handle_timeout(late);
    assert_eq!(drain_frames(&mut c).len(), 1);
    assert!(c.poll_timeout().unwrap() >= late.saturating_add(Duration::from_secs(200)));
}

#[test]
fn ra_timer_is_deterministic_and_spread() {
    let schedule = |seed: u64| {
        let mut cfg = capture_config();
        cfg.seed = seed;
        let mut c = Core::new(cfg);
        guest_appears(&mut c, T0);
        let mut deadlines = Vec::new();
        for _ in 0..20 {
            let d = c.poll_timeout().unwrap();
            deadlines.push(d);
            c.handle_timeout(d);
            assert_eq!(drain_frames(&mut c).len(), 1);
        }
        assert_eq!(c.counters().replies(ReplyKind::RouterAdvert), 20);
        deadlines
    };
    let a = schedule(1);
    assert_eq!(a, schedule(1));
    assert_ne!(a, schedule(2));
    let mut prev = T0;
    let mut waits = Vec::new();
    for d in &a {
        let w = d.since(prev).as_millis() as u64;
        assert!((200_000..600_000).contains(&w), "{w}");
        waits.push(w);
        prev = *d;
    }
    waits.sort_unstable();
    waits.dedup();
    assert!(waits.len() > 10, "jitter: {waits:?}");
}

#[test]
fn no_unsolicited_ra_when_disabled() {
    let mut no_ra = capture_config();
    no_ra.features.ra = false;
    let mut no_ndp = capture_config();
    no_ndp.features.ndp = false;
    let mut no_ip6 = capture_config();
    no_ip6.ip6 = None;
    for cfg in [no_ra, no_ndp, no_ip6] {
        let mut c = Core::new(cfg);
        let arp = {
            let mut f = vec![0xff; 6];
            f.extend_from_slice(&GUEST_MAC.0);
            f.extend_from_slice(&[0x08, 0x06]);
            f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
            f.resize(42, 0);
            f
        };
        exchange(&mut c, T0, &[&arp]);
        assert!(c.guest().seen);
        assert_no_ra_timer(&mut c, at(100_000));
    }
}

#[test]
fn tap_reset_stops_ra_until_guest_returns() {
    let mut c = core();
    guest_appears(&mut c, T0);
    assert!(c.poll_timeout().is_some());
    c.handle_tap_reset(at(1));
    assert_eq!(c.poll_timeout(), None);
    c.handle_timeout(at(10_000));
    assert!(drain_frames(&mut c).is_empty());
    guest_appears(&mut c, at(20_000));
    let d = c.poll_timeout().unwrap();
    assert!(d >= at(20_200) && d < at(20_600));
}

proptest! {
    /// smoltcp builds a neighbour solicitation; we parse the same target
    /// and answer it with an advertisement for that target.
    #[test]
    fn ns_from_smoltcp(target in any::<[u8; 16]>(), with_ll in any::<bool>(), mac in any::<[u8; 6]>()) {
        let target = Ipv6Addr::from(target);
        prop_assume!(!target.is_multicast() && !target.is_loopback());
        let dst = solicited_node(target);
        let icmp = smol_icmp(GUEST_LL, dst, NdiscRepr::NeighborSolicit {
            target_addr: target,
            lladdr: if with_ll { lladdr(Mac(mac)) } else { None },
        });
        prop_assert_eq!(parse_ndp(255, &icmp), Ok(NdpMsg::NeighborSolicit { target }));
        let mut c = core();
        let out = exchange(&mut c, T0, &[&guest_frame(GUEST_LL, dst, 255, &icmp)]);
        prop_assert_eq!(out.len(), 1);
        let NdiscRepr::NeighborAdvert { target_addr, .. } = reparse(&out[0]).repr else {
            panic!()
        };
        prop_assert_eq!(target_addr, target);
    }

    /// Hostile NDP messages: never a panic; each frame is answered with a
    /// valid reply or dropped and counted.
    #[test]
    fn hostile_ndp_never_panics(
        t in 133u8..=137,
        mut body in proptest::collection::vec(any::<u8>(), 0..120),
        hop in prop_oneof![Just(255u8), any::<u8>()],
        src_kind in 0u8..3,
        zero_code in any::<bool>(),
    ) {
        if let Some(b) = body.first_mut() { *b = t; }
        if zero_code { if let Some(b) = body.get_mut(1) { *b = 0; } }
        let src = match src_kind {
            0 => GUEST_LL,
            1 => Ipv6Addr::UNSPECIFIED,
            _ => GUEST_GLOBAL,
        };
        let f = guest_frame(src, ALL_ROUTERS, hop, &body);
        let mut c = core();
        let out = exchange(&mut c, T0, &[&f]);
        let n = c.counters();
        prop_assert_eq!(out.len() as u64 + n.dropped_total(), 1);
        prop_assert_eq!(out.len() as u64,
            n.replies(ReplyKind::NeighborAdvert) + n.replies(ReplyKind::RouterAdvert));
        for o in &out {
            reparse(o);
        }
    }
}

mod neigh;
