//! DHCPv6 server tests: messages built option by option, replies re-parsed
//! with etherparse and our own parser, replays of upstream's capture.

use super::*;
use crate::config::{Config, MAX_SEARCH};
use crate::tap::tests::udp_frame;
use crate::testutil::{capture_config, exchange};
use crate::wire::dhcpv6::tests::decode_names;
use crate::wire::{be16, be32, Mac};
use crate::{Core, Instant};
use core::net::Ipv6Addr;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use proptest::prelude::*;
mod malformed;
mod messages;
mod names;
mod replay;

/// The client of the reference capture.
const CLIENT_LL: &str = "fe80::703f:e9ff:fe77:1e0b";

/// Source MAC of frames built by `udp_frame`.
const CLIENT_MAC: Mac = Mac([2, 0, 0, 0, 0, 1]);

const CLIENT_DUID: [u8; 14] = [
    0, 1, 0, 1, 0x32, 0x9b, 0x76, 0x6a, 0x72, 0x3f, 0xe9, 0x77, 0x1e, 0x0b,
];

const XID: [u8; 3] = [0xd4, 0x72, 0xa4];

const IAID: u32 = 0xe977_1e0b;

fn opt(code: u16, body: &[u8]) -> Vec<u8> {
    let mut v = code.to_be_bytes().to_vec();
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn client_id() -> Vec<u8> {
    opt(OPT_CLIENTID, &CLIENT_DUID)
}

fn our_server_id(cfg: &Config) -> Vec<u8> {
    opt(OPT_SERVERID, &server_duid(cfg.duid_time, cfg.our_mac))
}

fn other_server_id() -> Vec<u8> {
    opt(OPT_SERVERID, &[0, 3, 0, 1, 1, 2, 3, 4, 5, 6])
}

/// An IA Address option for `addr` (lifetimes 7200 and 7500 s) with the
/// options `extra` inside.
fn iaaddr(addr: &str, extra: &[u8]) -> Vec<u8> {
    let a: Ipv6Addr = addr.parse().unwrap();
    let lifetimes = [7200u32.to_be_bytes(), 7500u32.to_be_bytes()].concat();
    opt(OPT_IAADDR, &[&a.octets()[..], &lifetimes, extra].concat())
}

/// An IA_NA option (T1 3600 s, T2 5400 s) holding `inner`.
fn ia_na(iaid: u32, inner: &[u8]) -> Vec<u8> {
    let times = [3600u32.to_be_bytes(), 5400u32.to_be_bytes()].concat();
    opt(
        OPT_IA_NA,
        &[&iaid.to_be_bytes()[..], &times, inner].concat(),
    )
}

/// An IA_TA option holding `inner`.
fn ia_ta(iaid: u32, inner: &[u8]) -> Vec<u8> {
    opt(OPT_IA_TA, &[&iaid.to_be_bytes()[..], inner].concat())
}

fn msg(t: u8, opts: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![t, XID[0], XID[1], XID[2]];
    for o in opts {
        v.extend_from_slice(o);
    }
    v
}

fn frame(payload: &[u8]) -> Vec<u8> {
    udp_frame(
        CLIENT_LL.parse().unwrap(),
        "ff02::1:2".parse().unwrap(),
        546,
        547,
        payload,
    )
}

/// A reply as an independent parser sees it.
#[derive(Debug)]
struct Seen {
    eth_dst: Mac,
    eth_src: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    flow_label: u32,
    hop_limit: u8,
    payload: Vec<u8>,
}

/// Re-parses a frame with etherparse and checks the UDP checksum.
fn reparse(f: &[u8]) -> Seen {
    let p = SlicedPacket::from_ethernet(f).expect("etherparse accepts the frame");
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!("not IPv6")
    };
    let Some(TransportSlice::Udp(udp)) = &p.transport else {
        panic!("not UDP")
    };
    let h = ip.header();
    let expected = udp
        .to_header()
        .calc_checksum_ipv6(&h.to_header(), udp.payload())
        .unwrap();
    assert_eq!(udp.checksum(), expected, "UDP checksum");
    assert_eq!(usize::from(udp.length()), 8 + udp.payload().len());
    assert_eq!(usize::from(h.payload_length()), 8 + udp.payload().len());
    assert_eq!(f.len(), 14 + 40 + 8 + udp.payload().len());
    Seen {
        eth_dst: Mac(f[0..6].try_into().unwrap()),
        eth_src: Mac(f[6..12].try_into().unwrap()),
        src: h.source_addr(),
        dst: h.destination_addr(),
        sport: udp.source_port(),
        dport: udp.destination_port(),
        flow_label: h.flow_label().value(),
        hop_limit: h.hop_limit(),
        payload: udp.payload().to_vec(),
    }
}

/// Sends one DHCPv6 payload to a fresh core; returns the core and the
/// replies, re-parsed.
fn run(cfg: Config, payload: &[u8]) -> (Core, Vec<Seen>) {
    let mut core = Core::new(cfg);
    let f = frame(payload);
    let out = exchange(&mut core, Instant::ZERO, &[&f]);
    let seen = out.iter().map(|f| reparse(f)).collect();
    (core, seen)
}

/// Expects exactly one reply and checks its addressing.
fn one_reply(cfg: Config, payload: &[u8]) -> (Core, Vec<u8>) {
    let (core, mut seen) = run(cfg.clone(), payload);
    assert_eq!(seen.len(), 1, "{}", core.counters());
    let s = seen.remove(0);
    let ip6 = cfg.ip6.as_ref().unwrap();
    assert_eq!(s.eth_dst, CLIENT_MAC);
    assert_eq!(s.eth_src, cfg.our_mac);
    assert_eq!(s.src, ip6.our_ll);
    assert_eq!(s.dst, CLIENT_LL.parse::<Ipv6Addr>().unwrap());
    assert_eq!((s.sport, s.dport), (547, 546));
    assert_eq!(s.hop_limit, 255);
    assert_eq!(s.flow_label, flow_label(XID));
    assert_eq!(core.counters().replies(ReplyKind::Dhcpv6), 1);
    assert_eq!(core.counters().dropped_total(), 0);
    (core, s.payload)
}

/// Expects no reply and one drop for `reason`.
fn dropped(cfg: Config, payload: &[u8], reason: DropReason) {
    let (core, seen) = run(cfg, payload);
    assert!(seen.is_empty());
    assert_eq!(core.counters().dropped(reason), 1, "{}", core.counters());
    assert_eq!(core.counters().dropped_total(), 1);
    assert_eq!(core.counters().replies(ReplyKind::Dhcpv6), 0);
}

/// The fields of an IA_NA holding one IA Address.
#[derive(Debug, PartialEq, Eq)]
struct Lease {
    iaid: u32,
    t1: u32,
    t2: u32,
    addr: Ipv6Addr,
    preferred: u32,
    valid: u32,
}

fn lease(m: &Message<'_>) -> Lease {
    let ia = m.ia_na.expect("IA_NA");
    let mut inner = Options::new(ia.opts).map(Result::unwrap);
    let a = inner.next().expect("IA Address");
    assert_eq!(a.code, OPT_IAADDR);
    assert_eq!(a.body.len(), 24);
    assert!(inner.next().is_none());
    Lease {
        iaid: ia.iaid,
        t1: ia.t1,
        t2: ia.t2,
        addr: ia.addresses().next().unwrap(),
        preferred: be32(a.body, 16).unwrap(),
        valid: be32(a.body, 20).unwrap(),
    }
}

fn codes(m: &Message<'_>) -> Vec<u16> {
    m.options().map(|o| o.code).collect()
}

fn dns_list(body: &[u8]) -> Vec<Ipv6Addr> {
    assert_eq!(body.len() % 16, 0);
    body.chunks(16)
        .map(|c| Ipv6Addr::from(<[u8; 16]>::try_from(c).unwrap()))
        .collect()
}

fn lease_expected(cfg: &Config, iaid: u32) -> Lease {
    Lease {
        iaid,
        t1: INFINITY,
        t2: INFINITY,
        addr: cfg.ip6.as_ref().unwrap().addr,
        preferred: INFINITY,
        valid: INFINITY,
    }
}

/// Checks a lease reply in full: type, xid, option order and every field.
fn check_lease_reply(cfg: &Config, payload: &[u8], reply_type: u8, iaid: u32) {
    let m = Message::parse(payload).expect("our own parser accepts the reply");
    assert_eq!(m.msg_type, reply_type);
    assert_eq!(m.xid, XID);
    assert_eq!(
        codes(&m),
        [
            OPT_SERVERID,
            OPT_IA_NA,
            OPT_CLIENTID,
            OPT_DNS_SERVERS,
            OPT_DOMAIN_LIST
        ]
    );
    assert_eq!(
        m.server_id.unwrap(),
        [0, 1, 0, 1, 0x30, 0x39, 0, 0, 0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55]
    );
    assert_eq!(m.client_id.unwrap(), CLIENT_DUID);
    assert_eq!(lease(&m), lease_expected(cfg, iaid));
    assert_eq!(
        dns_list(m.option(OPT_DNS_SERVERS).unwrap()),
        ["fd77::1".parse::<Ipv6Addr>().unwrap()]
    );
    assert_eq!(
        decode_names(m.option(OPT_DOMAIN_LIST).unwrap()),
        ["example.org", "test.example.org"]
    );
}
