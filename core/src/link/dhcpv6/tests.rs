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

fn iaaddr(addr: &str, extra: &[u8]) -> Vec<u8> {
    let a: Ipv6Addr = addr.parse().unwrap();
    let mut b = a.octets().to_vec();
    b.extend_from_slice(&7200u32.to_be_bytes());
    b.extend_from_slice(&7500u32.to_be_bytes());
    b.extend_from_slice(extra);
    opt(OPT_IAADDR, &b)
}

fn ia_na(iaid: u32, inner: &[u8]) -> Vec<u8> {
    let mut b = iaid.to_be_bytes().to_vec();
    b.extend_from_slice(&3600u32.to_be_bytes());
    b.extend_from_slice(&5400u32.to_be_bytes());
    b.extend_from_slice(inner);
    opt(OPT_IA_NA, &b)
}

fn ia_ta(iaid: u32, inner: &[u8]) -> Vec<u8> {
    let mut b = iaid.to_be_bytes().to_vec();
    b.extend_from_slice(inner);
    opt(OPT_IA_TA, &b)
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

#[test]
fn dns_and_search_switches() {
    let req = msg(SOLICIT, &[client_id(), ia_na(IAID, &[])]);
    let base = [OPT_SERVERID, OPT_IA_NA, OPT_CLIENTID];
    let cases = [
        (false, true, vec![OPT_DOMAIN_LIST]),
        (true, false, vec![OPT_DNS_SERVERS]),
        (false, false, vec![]),
    ];
    for (dns, search, extra) in cases {
        let mut cfg = capture_config();
        cfg.features.advertise_dns = dns;
        cfg.features.advertise_search = search;
        let (_, p) = one_reply(cfg.clone(), &req);
        let m = Message::parse(&p).unwrap();
        assert_eq!(codes(&m), [&base[..], &extra[..]].concat());
        assert_eq!(lease(&m), lease_expected(&cfg, IAID));
    }
    // Switched on but with nothing to say: no empty options.
    let mut cfg = capture_config();
    cfg.ip6.as_mut().unwrap().dns.clear();
    cfg.search = vec![".".into(), String::new()];
    let (_, p) = one_reply(cfg, &req);
    assert_eq!(codes(&Message::parse(&p).unwrap()), base);
    // Three resolvers, in order.
    let mut cfg = capture_config();
    let dns: Vec<Ipv6Addr> = ["fd77::1", "2001:db8::53", "fd00::35"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    cfg.ip6.as_mut().unwrap().dns = dns.iter().copied().collect();
    let (_, p) = one_reply(cfg, &req);
    let m = Message::parse(&p).unwrap();
    assert_eq!(dns_list(m.option(OPT_DNS_SERVERS).unwrap()), dns);
}

#[test]
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

// --- replay of the reference capture ------------------------------------

/// The frames of a classic little-endian pcap file.
fn pcap_frames(b: &[u8]) -> Vec<Vec<u8>> {
    assert_eq!(&b[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "pcap magic");
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let incl = u32::from_le_bytes(b[off + 8..off + 12].try_into().unwrap()) as usize;
        out.push(b[off + 16..off + 16 + incl].to_vec());
        off += 16 + incl;
    }
    assert_eq!(off, b.len(), "trailing bytes in the capture");
    out
}

/// UDP ports of an IPv6 frame without extension headers.
fn udp6_ports(f: &[u8]) -> Option<(u16, u16)> {
    (be16(f, 12)? == 0x86dd && *f.get(20)? == 17).then_some((be16(f, 54)?, be16(f, 56)?))
}

fn capture() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/captures/pasta-upstream-dhcpv6.ns.pcap"
    );
    let frames = pcap_frames(&std::fs::read(path).unwrap());
    let requests: Vec<_> = frames
        .iter()
        .filter(|f| udp6_ports(f).is_some_and(|p| p.1 == 547))
        .cloned()
        .collect();
    let replies: Vec<_> = frames
        .iter()
        .filter(|f| udp6_ports(f).is_some_and(|p| p.0 == 547))
        .cloned()
        .collect();
    assert_eq!(requests.len(), 2);
    assert_eq!(replies.len(), 2);
    (requests, replies)
}

/// Upstream's server DUID time in the capture.
const CAPTURE_DUID_TIME: u32 = 0x329b_7669;

fn replay(cfg: Config, requests: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut core = Core::new(cfg);
    let mut ours = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let out = exchange(&mut core, Instant::from_millis(1000 * i as u64), &[r]);
        let mut dhcp: Vec<_> = out
            .into_iter()
            .filter(|f| udp6_ports(f).is_some_and(|p| p.0 == 547))
            .collect();
        assert_eq!(dhcp.len(), 1, "one reply per request");
        ours.push(dhcp.remove(0));
    }
    assert_eq!(core.counters().dropped(DropReason::ServiceMalformed), 0);
    ours
}

/// With DNS and search advertising off (pasta's default, as in the
/// capture), replies equal upstream's byte for byte: addresses, flow
/// label, checksum, option order and every field.
#[test]
fn capture_replay_matches_upstream_exactly() {
    let (requests, replies) = capture();
    let mut cfg = capture_config();
    cfg.duid_time = CAPTURE_DUID_TIME;
    cfg.features.advertise_dns = false;
    cfg.features.advertise_search = false;
    let ours = replay(cfg, &requests);
    for (o, u) in ours.iter().zip(&replies) {
        let (so, su) = (reparse(o), reparse(u));
        let (mo, mu) = (
            Message::parse(&so.payload).unwrap(),
            Message::parse(&su.payload).unwrap(),
        );
        assert_eq!(mo.msg_type, mu.msg_type);
        assert_eq!(mo.xid, mu.xid);
        assert_eq!(codes(&mo), codes(&mu));
        assert_eq!(mo.server_id, mu.server_id);
        assert_eq!(mo.client_id, mu.client_id);
        assert_eq!(lease(&mo), lease(&mu));
        assert_eq!(
            (so.eth_dst, so.src, so.dst, so.flow_label),
            (su.eth_dst, su.src, su.dst, su.flow_label)
        );
        assert_eq!(o, u, "whole frame");
    }
}

/// With advertising on, the replies carry upstream's options first, then
/// the resolvers and the search list.
#[test]
fn capture_replay_with_dns_and_search() {
    let (requests, replies) = capture();
    let mut cfg = capture_config();
    cfg.duid_time = CAPTURE_DUID_TIME;
    let ours = replay(cfg, &requests);
    for (o, u) in ours.iter().zip(&replies) {
        let (po, pu) = (reparse(o).payload, reparse(u).payload);
        assert_eq!(&po[..pu.len()], &pu[..]);
        let m = Message::parse(&po).unwrap();
        let tail: Vec<_> = m.options().map(|o| o.code).skip(3).collect();
        assert_eq!(tail, [OPT_DNS_SERVERS, OPT_DOMAIN_LIST]);
        assert_eq!(
            decode_names(m.option(OPT_DOMAIN_LIST).unwrap()),
            ["example.org", "test.example.org"]
        );
    }
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

/// `--fqdn`: option 39 (RFC 4704) last in leases and information replies,
/// the name in wire format, flags O if the client set S, else none; not in
/// NotOnLink replies; left out if it would not fit in the IPv6 minimum MTU.
#[test]
fn client_fqdn() {
    let mut cfg = capture_config();
    cfg.fqdn = Some("myhost.example".into());
    let body = |p: &[u8]| {
        let m = Message::parse(p).unwrap();
        assert_eq!(codes(&m).last(), Some(&OPT_CLIENT_FQDN), "{:?}", codes(&m));
        m.option(OPT_CLIENT_FQDN).unwrap().to_vec()
    };
    let name = b"\x06myhost\x07example\x00";
    // No option 39 from the client, or one without S: flags 0.
    for fqdn in [None, Some(opt(OPT_CLIENT_FQDN, b"\x00\x01x\x00"))] {
        let mut opts = vec![client_id(), ia_na(IAID, &[])];
        opts.extend(fqdn);
        let (_, p) = one_reply(cfg.clone(), &msg(SOLICIT, &opts));
        assert_eq!(body(&p), [&[0u8][..], name].concat());
    }
    // S set (dhclient -6 sends S with its own name): O, our name.
    let s = opt(OPT_CLIENT_FQDN, b"\x01\x05other\x00");
    let req = msg(
        REQUEST,
        &[client_id(), our_server_id(&cfg), ia_na(IAID, &[]), s],
    );
    let (_, p) = one_reply(cfg.clone(), &req);
    assert_eq!(body(&p), [&[FQDN_O][..], name].concat());
    let info = msg(INFORMATION_REQUEST, &[client_id()]);
    let (_, p) = one_reply(cfg.clone(), &info);
    assert_eq!(body(&p), [&[0u8][..], name].concat());
    // NotOnLink: no DNS options, no FQDN.
    let wrong = ia_na(IAID, &iaaddr("2001:db8::99", &[]));
    let (_, p) = one_reply(cfg.clone(), &msg(CONFIRM, &[client_id(), wrong]));
    let m = Message::parse(&p).unwrap();
    assert!(m.option(OPT_CLIENT_FQDN).is_none());
    // A name that cannot be encoded is left out; the rest goes.
    cfg.fqdn = Some("a..b".into());
    let (_, p) = one_reply(cfg.clone(), &msg(SOLICIT, &[client_id()]));
    assert!(Message::parse(&p)
        .unwrap()
        .option(OPT_CLIENT_FQDN)
        .is_none());
    // Six maximal search names leave no room under 1280 bytes.
    let label = |c: char| c.to_string().repeat(63);
    cfg.search = (b'a'..b'g')
        .map(|c| {
            let c = char::from(c);
            [label(c), label(c), label(c), c.to_string().repeat(61)].join(".")
        })
        .collect();
    cfg.fqdn = Some("myhost.example".into());
    let (_, p) = one_reply(cfg.clone(), &msg(SOLICIT, &[client_id()]));
    let m = Message::parse(&p).unwrap();
    assert_eq!(decode_names(m.option(OPT_DOMAIN_LIST).unwrap()).len(), 6);
    assert!(m.option(OPT_CLIENT_FQDN).is_none());
    // Four leave room.
    cfg.search.truncate(4);
    let (_, p) = one_reply(cfg, &msg(SOLICIT, &[client_id()]));
    assert!(p.len() <= FQDN_REPLY_LIMIT);
    assert_eq!(body(&p), [&[0u8][..], name].concat());
}
