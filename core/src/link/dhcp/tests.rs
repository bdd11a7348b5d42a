//! DHCP server tests: requests built by hand and with etherparse, replies
//! checked by etherparse and smoltcp, replays of upstream's captures.

use super::*;
use crate::config::{Config, MAX_SEARCH};
use crate::queue::CONTROL_FRAME_MAX;
use crate::testutil::{capture_config, exchange};
use crate::wire::dhcp::*;
use crate::{Core, Instant};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use proptest::prelude::*;
use smoltcp::wire::{
    DhcpMessageType, DhcpOpCode, DhcpPacket, DhcpRepr, EthernetFrame, IpAddress, Ipv4Packet,
    UdpPacket,
};

const CLIENT: Mac = Mac([0x06, 0x05, 0xa7, 0xa5, 0xa5, 0x10]);
const XID: [u8; 4] = [0x5e, 0x90, 0xfa, 0x55];
/// The parameter request list of busybox udhcpc in the captures.
const UDHCPC_PRL: &[u8] = &[1, 3, 6, 12, 15, 26, 28, 42, 119, 121];
const ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// A BOOTREQUEST with option 53 = `typ` (none: BOOTP), `flags`, a parameter
/// request list and further options, closed with 255.
fn msg(typ: Option<u8>, flags: u16, prl: &[u8], extra: &[(u8, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; HDR_LEN];
    m[0] = BOOTREQUEST;
    m[1] = 1;
    m[2] = 6;
    m[4..8].copy_from_slice(&XID);
    m[10..12].copy_from_slice(&flags.to_be_bytes());
    m[28..34].copy_from_slice(&CLIENT.0);
    m.extend_from_slice(&COOKIE);
    if let Some(t) = typ {
        m.extend_from_slice(&[OPT_MSG_TYPE, 1, t]);
    }
    if !prl.is_empty() {
        m.extend_from_slice(&[OPT_PRL, prl.len() as u8]);
        m.extend_from_slice(prl);
    }
    for (c, d) in extra {
        m.extend_from_slice(&[*c, d.len() as u8]);
        m.extend_from_slice(d);
    }
    m.push(OPT_END);
    m
}

/// The datagram `payload` from 0.0.0.0:68 to 255.255.255.255:67.
fn frame(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT.0, [0xff; 6])
        .ipv4([0; 4], [255; 4], 64)
        .udp(68, 67);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, payload).unwrap();
    v
}

fn core_with(f: impl FnOnce(&mut Config)) -> Core {
    let mut cfg = capture_config();
    f(&mut cfg);
    Core::new(cfg)
}

/// Sends `payload` and returns the replies.
fn ask(core: &mut Core, payload: &[u8]) -> Vec<Vec<u8>> {
    exchange(core, Instant::ZERO, &[&frame(payload)])
}

/// A reply, checked by two independent parsers.
struct Out {
    eth_dst: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    dhcp: Vec<u8>,
}

fn check(f: &[u8]) -> Out {
    check_for(f, XID, CLIENT)
}

/// Checks a reply to the request with transaction `xid` from `chaddr`.
fn check_for(f: &[u8], xid: [u8; 4], chaddr: Mac) -> Out {
    // etherparse: headers and both checksums.
    let p = SlicedPacket::from_ethernet(f).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    assert_eq!(h.time_to_live, 255);
    let Some(TransportSlice::Udp(udp)) = &p.transport else {
        panic!("not UDP")
    };
    assert_eq!((udp.source_port(), udp.destination_port()), (67, 68));
    let sum = udp
        .to_header()
        .calc_checksum_ipv4(&h, udp.payload())
        .unwrap();
    assert_eq!(udp.checksum(), sum);
    // smoltcp: the same again, down to the DHCP header.
    let eth = EthernetFrame::new_checked(f).unwrap();
    let ip4 = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip4.verify_checksum());
    let u = UdpPacket::new_checked(ip4.payload()).unwrap();
    let (s, d) = (ip4.src_addr(), ip4.dst_addr());
    assert!(u.verify_checksum(&IpAddress::Ipv4(s), &IpAddress::Ipv4(d)));
    let dp = DhcpPacket::new_checked(u.payload()).unwrap();
    assert_eq!(dp.opcode(), DhcpOpCode::Reply);
    assert_eq!(dp.magic_number(), 0x6382_5363);
    assert_eq!(dp.your_ip(), ADDR);
    assert_eq!(dp.transaction_id(), u32::from_be_bytes(xid));
    assert_eq!(dp.client_hardware_address().0, chaddr.0);
    assert_eq!(u.payload(), udp.payload());
    // A DHCP reply (not BOOTP) also parses as a whole, consistently.
    let o = opts(u.payload());
    if let Some(t) = get(&o, OPT_MSG_TYPE) {
        let r = DhcpRepr::parse(&dp).unwrap();
        assert_eq!(u8::from(r.message_type), t[0]);
        let addr = |c| get(&o, c).map(|d| Ipv4Addr::from(<[u8; 4]>::try_from(d).unwrap()));
        assert_eq!(r.subnet_mask, addr(OPT_MASK));
        assert_eq!(r.router, addr(OPT_ROUTER));
        assert_eq!(r.server_identifier, addr(OPT_SERVER_ID));
        let lease = get(&o, OPT_LEASE).map(|d| u32::from_be_bytes(d.try_into().unwrap()));
        assert_eq!(r.lease_duration, lease);
        let dns: Vec<Ipv4Addr> = get(&o, OPT_DNS)
            .unwrap_or_default()
            .chunks(4)
            .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            .collect();
        assert_eq!(r.dns_servers.unwrap_or_default().as_slice(), &dns[..]);
    }
    Out {
        eth_dst: eth.dst_addr().0,
        src: s,
        dst: d,
        dhcp: u.payload().to_vec(),
    }
}

/// The only reply to `payload`, checked.
fn one(core: &mut Core, payload: &[u8]) -> Out {
    let r = ask(core, payload);
    assert_eq!(r.len(), 1, "expected one reply");
    check(&r[0])
}

/// The options of a reply in order, checking the end option and padding.
fn opts(dhcp: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = OPTS_OFF;
    loop {
        let c = dhcp[i];
        assert_ne!(c, OPT_PAD, "we never pad between options");
        if c == OPT_END {
            i += 1;
            break;
        }
        let l = usize::from(dhcp[i + 1]);
        out.push((c, dhcp[i + 2..i + 2 + l].to_vec()));
        i += 2 + l;
    }
    assert!(dhcp[i..].iter().all(|&b| b == 0), "padding not zero");
    assert_eq!(dhcp.len(), OPTS_OFF + (i + 1 - OPTS_OFF).max(OPT_MIN));
    out
}

fn codes(o: &[(u8, Vec<u8>)]) -> Vec<u8> {
    o.iter().map(|(c, _)| *c).collect()
}

fn get(o: &[(u8, Vec<u8>)], code: u8) -> Option<Vec<u8>> {
    o.iter().find(|(c, _)| *c == code).map(|(_, d)| d.clone())
}

/// The concatenated data of every instance of `code` (RFC 3396).
fn concat(o: &[(u8, Vec<u8>)], code: u8) -> Vec<u8> {
    o.iter()
        .filter(|(c, _)| *c == code)
        .flat_map(|(_, d)| d.clone())
        .collect()
}

/// Decodes a sequence of RFC 1035 names with compression; pointers must
/// point backwards to label starts.
fn decode_names(data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let mut labels = Vec::new();
        let mut pos = i;
        let mut next = None;
        loop {
            let l = data[pos];
            if l == 0 {
                next.get_or_insert(pos + 1);
                break;
            }
            if l & 0xc0 == 0xc0 {
                let ptr = usize::from(u16::from_be_bytes([l & 0x3f, data[pos + 1]]));
                assert!(ptr < pos, "pointer not backwards");
                next.get_or_insert(pos + 2);
                pos = ptr;
                continue;
            }
            assert!(l <= 63);
            let l = usize::from(l);
            labels.push(String::from_utf8(data[pos + 1..pos + 1 + l].to_vec()).unwrap());
            pos += 1 + l;
        }
        out.push(labels.join("."));
        i = next.unwrap();
    }
    out
}

fn encode(names: &[&str]) -> Vec<u8> {
    let mut buf = [0u8; SEARCH_MAX];
    let n = encode_names(names.iter().map(|s| s.as_bytes()), &mut buf);
    buf[..n].to_vec()
}

// --- message types --------------------------------------------------

#[test]
fn discover_gets_offer() {
    let mut core = Core::new(capture_config());
    let o = one(&mut core, &msg(Some(DISCOVER), 0, UDHCPC_PRL, &[]));
    assert_eq!(o.eth_dst, CLIENT.0);
    assert_eq!((o.src, o.dst), (GW, ADDR));
    let pkt = DhcpPacket::new_checked(&o.dhcp[..]).unwrap();
    let r = DhcpRepr::parse(&pkt).unwrap();
    assert_eq!(r.message_type, DhcpMessageType::Offer);
    assert_eq!(r.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
    assert_eq!(r.router, Some(GW));
    assert_eq!(r.server_identifier, Some(GW));
    assert_eq!(r.lease_duration, Some(u32::MAX));
    assert_eq!(r.dns_servers.unwrap().as_slice(), &[GW]);
    assert!(!r.broadcast);
    let o = opts(&o.dhcp);
    // 53, then the client's order (1 3 6 26 119; no 121: gateway on-link),
    // then the rest by code.
    assert_eq!(codes(&o), [53, 1, 3, 6, 26, 119, 51, 54]);
    assert_eq!(get(&o, OPT_MTU).unwrap(), 65520u16.to_be_bytes());
    assert_eq!(core.counters().replies(ReplyKind::Dhcp), 1);
    assert_eq!(core.counters().dropped_total(), 0);
}

#[test]
fn request_gets_ack_without_checks() {
    let mut core = Core::new(capture_config());
    // A foreign requested address and server identifier: still ACKed.
    let extra: &[(u8, &[u8])] = &[(50, &[192, 168, 1, 1]), (54, &[192, 168, 1, 254])];
    let o = one(&mut core, &msg(Some(REQUEST), 0, UDHCPC_PRL, extra));
    let pkt = DhcpPacket::new_checked(&o.dhcp[..]).unwrap();
    let r = DhcpRepr::parse(&pkt).unwrap();
    assert_eq!(r.message_type, DhcpMessageType::Ack);
    assert_eq!(r.your_ip, ADDR);
    assert_eq!(r.server_identifier, Some(GW));
    assert_eq!(get(&opts(&o.dhcp), OPT_RAPID_COMMIT), None);
}

#[test]
fn rapid_commit() {
    let mut core = Core::new(capture_config());
    let rc: &[(u8, &[u8])] = &[(OPT_RAPID_COMMIT, &[])];
    let o = one(&mut core, &msg(Some(DISCOVER), 0, &[1, 3], rc));
    let pkt = DhcpPacket::new_checked(&o.dhcp[..]).unwrap();
    assert_eq!(
        DhcpRepr::parse(&pkt).unwrap().message_type,
        DhcpMessageType::Ack
    );
    let o = opts(&o.dhcp);
    assert_eq!(get(&o, OPT_RAPID_COMMIT), Some(vec![]));
    assert_eq!(codes(&o), [53, 1, 3, 6, 26, 51, 54, 80, 119]);
    // A REQUEST with option 80 is a plain ACK without it.
    let o = one(&mut core, &msg(Some(REQUEST), 0, &[1, 3], rc));
    let pkt = DhcpPacket::new_checked(&o.dhcp[..]).unwrap();
    assert_eq!(
        DhcpRepr::parse(&pkt).unwrap().message_type,
        DhcpMessageType::Ack
    );
    assert_eq!(get(&opts(&o.dhcp), OPT_RAPID_COMMIT), None);
    assert_eq!(core.counters().replies(ReplyKind::Dhcp), 2);
}

#[test]
fn bootp_gets_configuration_options_only() {
    let mut core = core_with(|c| c.search.clear());
    let o = one(&mut core, &msg(None, 0, &[], &[]));
    assert_eq!((o.src, o.dst), (GW, ADDR));
    let op = opts(&o.dhcp);
    assert_eq!(codes(&op), [1, 3, 6, 26]);
    // A classic 300-byte BOOTP message: 64-byte vendor area.
    assert_eq!(o.dhcp.len(), 300);
    // Even if the request names DHCP options, none are sent.
    let o = one(&mut core, &msg(None, 0, &[53, 54, 51, 80, 3], &[]));
    assert_eq!(codes(&opts(&o.dhcp)), [3, 1, 6, 26]);
    assert_eq!(core.counters().replies(ReplyKind::Dhcp), 2);
}

#[test]
fn other_messages_are_ignored() {
    let mut core = Core::new(capture_config());
    for t in [2u8, 4, 6, 7, 8, 9, 18, 200] {
        assert!(ask(&mut core, &msg(Some(t), 0, UDHCPC_PRL, &[])).is_empty());
    }
    // A BOOTREPLY sent to us.
    let mut m = msg(Some(DISCOVER), 0, &[], &[]);
    m[0] = BOOTREPLY;
    assert!(ask(&mut core, &m).is_empty());
    assert_eq!(core.counters().dropped(DropReason::ServiceIgnored), 9);
    assert_eq!(core.counters().replies(ReplyKind::Dhcp), 0);
}

#[test]
fn switched_off_or_no_gateway() {
    let m = msg(Some(DISCOVER), 0, UDHCPC_PRL, &[]);
    let mut core = core_with(|c| c.features.dhcp = false);
    assert!(ask(&mut core, &m).is_empty());
    assert_eq!(core.counters().dropped(DropReason::ServiceIgnored), 1);
    let mut core = core_with(|c| c.ip4.as_mut().unwrap().gateway = None);
    assert!(ask(&mut core, &m).is_empty());
    assert_eq!(core.counters().dropped(DropReason::ServiceIgnored), 1);
    // Without our_addr, the gateway is the server.
    let mut core = core_with(|c| c.ip4.as_mut().unwrap().our_addr = None);
    let o = one(&mut core, &m);
    assert_eq!(o.src, GW);
    assert_eq!(get(&opts(&o.dhcp), OPT_SERVER_ID).unwrap(), GW.octets());
}

// --- header and addressing ------------------------------------------

#[test]
fn broadcast_flag() {
    let mut core = Core::new(capture_config());
    let o = one(&mut core, &msg(Some(DISCOVER), 0x8000, &[], &[]));
    assert_eq!(o.dst, Ipv4Addr::BROADCAST);
    // Ethernet still goes to the guest's MAC, as upstream.
    assert_eq!(o.eth_dst, CLIENT.0);
    let pkt = DhcpPacket::new_checked(&o.dhcp[..]).unwrap();
    assert!(DhcpRepr::parse(&pkt).unwrap().broadcast);
    let o = one(&mut core, &msg(Some(REQUEST), 0x0001, &[], &[]));
    assert_eq!(o.dst, ADDR);
    assert_eq!(&o.dhcp[10..12], &[0x00, 0x01]);
}

#[test]
fn header_fields() {
    let mut core = Core::new(capture_config());
    let mut m = msg(Some(REQUEST), 0x8000, &[], &[]);
    m[3] = 4; // hops
    m[8..10].copy_from_slice(&[0, 9]); // secs
    m[12..16].copy_from_slice(&[10, 77, 0, 2]); // ciaddr
    m[16..20].copy_from_slice(&[1, 1, 1, 1]); // yiaddr
    m[20..24].copy_from_slice(&[2, 2, 2, 2]); // siaddr
    m[24..28].copy_from_slice(&[10, 1, 0, 1]); // giaddr
    m[34..44].fill(0xaa); // chaddr padding
    m[44..236].fill(b'x'); // sname, file
    let o = one(&mut core, &m);
    let d = &o.dhcp;
    assert_eq!(&d[..4], &[BOOTREPLY, 1, 6, 0]);
    assert_eq!(&d[4..8], &XID);
    assert_eq!(&d[8..10], &[0, 0]);
    assert_eq!(&d[10..12], &[0x80, 0]);
    assert_eq!(&d[12..16], &[10, 77, 0, 2]);
    assert_eq!(&d[16..20], &ADDR.octets());
    assert_eq!(&d[20..24], &[0; 4]);
    assert_eq!(&d[24..28], &[10, 1, 0, 1]);
    assert_eq!(&d[28..44], &m[28..44]);
    assert!(d[44..236].iter().all(|&b| b == 0));
    assert_eq!(&d[236..240], &COOKIE);
}

// --- options --------------------------------------------------------

#[test]
fn option_order_follows_request_list() {
    let mut core = Core::new(capture_config());
    let o = one(&mut core, &msg(Some(DISCOVER), 0, &[54, 3, 1], &[]));
    assert_eq!(codes(&opts(&o.dhcp)), [53, 54, 3, 1, 6, 26, 51, 119]);
    // 53 listed: it takes its place in the list.
    let o = one(&mut core, &msg(Some(DISCOVER), 0, &[1, 53, 3], &[]));
    assert_eq!(codes(&opts(&o.dhcp)), [1, 53, 3, 6, 26, 51, 54, 119]);
    // Duplicates, unknown codes, pad and end in the list: each option once.
    let o = one(
        &mut core,
        &msg(Some(DISCOVER), 0, &[3, 3, 200, 0, 255, 1, 3], &[]),
    );
    assert_eq!(codes(&opts(&o.dhcp)), [53, 3, 1, 6, 26, 51, 54, 119]);
    // Two list instances are concatenated (RFC 3396).
    let o = one(
        &mut core,
        &msg(Some(DISCOVER), 0, &[26], &[(OPT_PRL, &[6, 1])]),
    );
    assert_eq!(codes(&opts(&o.dhcp)), [53, 26, 6, 1, 3, 51, 54, 119]);
    // No list at all: by code.
    let o = one(&mut core, &msg(Some(DISCOVER), 0, &[], &[]));
    assert_eq!(codes(&opts(&o.dhcp)), [53, 1, 3, 6, 26, 51, 54, 119]);
}

#[test]
fn padding_to_sixty_bytes() {
    let mut core = core_with(|c| {
        c.search.clear();
        c.mtu = None;
    });
    let o = one(&mut core, &msg(Some(DISCOVER), 0, &[], &[]));
    // 3 + 6 + 6 + 6 + 6 + 6 + 1 = 34 bytes of options, padded to 60.
    assert_eq!(o.dhcp.len(), OPTS_OFF + OPT_MIN);
    assert_eq!(o.dhcp[OPTS_OFF + 33], OPT_END);
    opts(&o.dhcp);
    // A long reply is not padded.
    let mut core = core_with(|c| {
        c.search = (0..6).map(|i| format!("domain{i}.example")).collect();
    });
    let o = one(&mut core, &msg(Some(DISCOVER), 0, &[], &[]));
    assert!(o.dhcp.len() > OPTS_OFF + OPT_MIN);
    assert_eq!(o.dhcp[o.dhcp.len() - 2..], [OPT_END, OPT_PAD]);
    opts(&o.dhcp);
}

#[test]
fn search_list_compressed() {
    let mut core = Core::new(capture_config());
    let o = one(&mut core, &msg(Some(DISCOVER), 0, &[], &[]));
    let s = get(&opts(&o.dhcp), OPT_SEARCH).unwrap();
    assert_eq!(s, b"\x07example\x03org\x00\x04test\xc0\x00");
    assert_eq!(decode_names(&s), ["example.org", "test.example.org"]);
}

#[test]
fn search_encoding_cases() {
    // A later name that is a suffix of an earlier one points into it.
    let e = encode(&["a.b.example.com", "example.com", "c.b.example.com."]);
    assert_eq!(
        decode_names(&e),
        ["a.b.example.com", "example.com", "c.b.example.com"]
    );
    assert_eq!(&e[17..19], &[0xc0, 4]);
    assert_eq!(e.len(), 17 + 2 + 2 + 2);
    // Duplicates become a bare pointer.
    assert_eq!(encode(&["x.y", "x.y"]), b"\x01x\x01y\x00\xc0\x00");
    // Invalid names are skipped.
    let long_label = "a".repeat(64);
    let long_name = [
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(63),
        "e".repeat(62),
    ]
    .join(".");
    assert_eq!(long_name.len(), 254);
    let e = encode(&["", ".", "a..b", &long_label, &long_name, "ok"]);
    assert_eq!(decode_names(&e), ["ok"]);
    // The longest name that fits: 253 characters, 255 bytes encoded.
    let max = [
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(63),
        "e".repeat(61),
    ]
    .join(".");
    assert_eq!(encode(&[&max]).len(), 255);
    // A name that does not fit is skipped, and nothing points into it.
    let names: [&[u8]; 4] = [
        b"example.org",
        b"test.example.org",
        b"ab",
        b"test.example.org",
    ];
    let mut small = [0u8; 19];
    let n = encode_names(names.into_iter(), &mut small);
    assert_eq!(decode_names(&small[..n]), ["example.org", "ab"]);
    // At most six names.
    let many: Vec<String> = (0..9).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(decode_names(&encode(&refs)).len(), MAX_SEARCH);
}

#[test]
fn long_search_list_split() {
    // Six maximal names with nothing in common.
    let names: Vec<String> = (0..6u8)
        .map(|i| {
            let c = char::from(b'a' + i).to_string();
            [c.repeat(63), c.repeat(63), c.repeat(63), c.repeat(61)].join(".")
        })
        .collect();
    let mut core = core_with(|c| {
        c.search = names.clone();
        let ip4 = c.ip4.as_mut().unwrap();
        ip4.gateway = Some(Ipv4Addr::new(10, 88, 0, 1));
        for a in [2, 3] {
            ip4.dns.push(Ipv4Addr::new(10, 77, 0, a)).unwrap();
        }
    });
    // The client takes long messages (option 57).
    let rc: &[(u8, &[u8])] = &[(OPT_RAPID_COMMIT, &[]), (OPT_MAX_SIZE, &[0xff, 0xff])];
    let r = ask(&mut core, &msg(Some(DISCOVER), 0, &[], rc));
    assert_eq!(r.len(), 1);
    assert!(r[0].len() <= CONTROL_FRAME_MAX);
    let o = check(&r[0]);
    let op = opts(&o.dhcp);
    let parts: Vec<_> = op.iter().filter(|(c, _)| *c == OPT_SEARCH).collect();
    assert_eq!(parts.len(), SEARCH_OPTS_MAX);
    assert!(parts.iter().all(|(_, d)| d.len() <= 255));
    // The instances are consecutive.
    let first = op.iter().position(|(c, _)| *c == OPT_SEARCH).unwrap();
    assert!(op[first..first + parts.len()]
        .iter()
        .all(|(c, _)| *c == OPT_SEARCH));
    assert_eq!(decode_names(&concat(&op, OPT_SEARCH)), names);
    assert_eq!(codes(&op).last(), Some(&OPT_ROUTES));
    // Every option but 12 and 81 at its largest: within what we reserve.
    assert_eq!(o.dhcp.len(), REPLY_MAX - 2 * (2 + 255));
}

/// Without option 57 a reply fits in 576 bytes with its IP and UDP headers
/// (busybox udhcpc drops longer ones): what does not fit is left out, the
/// search list losing its last names first; option 57 makes room.
#[test]
fn reply_fits_what_the_client_takes() {
    let names: Vec<String> = (0..6u8)
        .map(|i| format!("{}.example", char::from(b'a' + i).to_string().repeat(60)))
        .collect();
    let mut core = core_with(|c| {
        c.search = names.clone();
        c.hostname = Some("h".repeat(100));
    });
    let r = ask(&mut core, &msg(Some(DISCOVER), 0, UDHCPC_PRL, &[]));
    let ip_len = r[0].len() - 14;
    assert!(ip_len <= 576, "{ip_len} bytes");
    let op = opts(&check(&r[0]).dhcp);
    // 12 comes before 119 in the request list and fits whole.
    assert_eq!(get(&op, OPT_HOSTNAME), Some(vec![b'h'; 100]));
    let sent = decode_names(&concat(&op, OPT_SEARCH));
    assert!(!sent.is_empty() && sent.len() < names.len(), "{sent:?}");
    assert_eq!(sent[..], names[..sent.len()]);
    // Routes (off-subnet gateway or not) and every small option still
    // made it where they fit.
    for c in [OPT_MSG_TYPE, OPT_MASK, OPT_ROUTER, OPT_LEASE, OPT_SERVER_ID] {
        assert!(
            get(&op, c).is_some(),
            "option {c} missing: {:?}",
            codes(&op)
        );
    }
    // Option 57 of 1500: everything.
    let big: &[(u8, &[u8])] = &[(OPT_MAX_SIZE, &1500u16.to_be_bytes())];
    let r = ask(&mut core, &msg(Some(DISCOVER), 0, UDHCPC_PRL, big));
    assert!(r[0].len() - 14 <= 1500);
    let op = opts(&check(&r[0]).dhcp);
    assert_eq!(decode_names(&concat(&op, OPT_SEARCH)), names);
    // An option 57 below 576, or malformed, changes nothing.
    for bad in [&[0u8, 100][..], &[1, 2, 3]] {
        let r = ask(
            &mut core,
            &msg(Some(DISCOVER), 0, UDHCPC_PRL, &[(OPT_MAX_SIZE, bad)]),
        );
        assert!(r[0].len() - 14 <= 576);
        assert_eq!(
            decode_names(&concat(&opts(&check(&r[0]).dhcp), OPT_SEARCH)),
            sent
        );
    }
}

/// `-H` and `--fqdn`: option 12 carries the host name as given, option 81
/// (RFC 4702) the flags E, RCODEs 255 and the name in wire format, as
/// upstream passt since 2025; both in the request list's order when asked
/// for, else in code order. BOOTP gets 12 only.
#[test]
fn hostname_and_fqdn() {
    let mut core = core_with(|c| {
        c.search.clear();
        c.hostname = Some("myhost".into());
        c.fqdn = Some("myhost.example.".into());
    });
    let fqdn = b"\x04\xff\xff\x06myhost\x07example\x00".to_vec();
    let o = one(&mut core, &msg(Some(REQUEST), 0, UDHCPC_PRL, &[]));
    let op = opts(&o.dhcp);
    assert_eq!(get(&op, OPT_HOSTNAME).as_deref(), Some(&b"myhost"[..]));
    assert_eq!(get(&op, OPT_FQDN), Some(fqdn.clone()));
    assert_eq!(codes(&op), [53, 1, 3, 6, 12, 26, 51, 54, 81]);
    // No request list: ascending code order.
    let o = one(
        &mut core,
        &msg(Some(DISCOVER), 0, &[], &[(OPT_FQDN, b"\x01\0\0x")]),
    );
    assert_eq!(codes(&opts(&o.dhcp)), [53, 1, 3, 6, 12, 26, 51, 54, 81]);
    let o = one(&mut core, &msg(Some(DISCOVER), 0, &[81, 12], &[]));
    assert_eq!(codes(&opts(&o.dhcp))[..3], [53, 81, 12]);
    // BOOTP: the host name is a BOOTP option, 81 is not.
    let o = one(&mut core, &msg(None, 0, &[], &[]));
    assert_eq!(codes(&opts(&o.dhcp)), [1, 3, 6, 12, 26]);
    // Nothing configured: neither.
    let mut core = core_with(|c| c.search.clear());
    let o = one(&mut core, &msg(Some(REQUEST), 0, &[12, 81], &[]));
    let op = opts(&o.dhcp);
    assert!(get(&op, OPT_HOSTNAME).is_none() && get(&op, OPT_FQDN).is_none());
}

/// A name option 81 cannot carry (over 252 bytes in wire format, a bad
/// label) is left out, and so is a host name over 255 bytes; the reply
/// still goes.
#[test]
fn names_that_do_not_fit_are_left_out() {
    let label = "a".repeat(63);
    // 249 characters: 251 bytes encoded, 254 with the flags.
    let fits = format!("{label}.{label}.{label}.{}", "b".repeat(57));
    assert_eq!(fits.len(), 249);
    let too_long = format!("{fits}cd");
    for (fqdn, sent) in [
        (&fits[..], true),
        (&too_long[..], false),
        ("a..b", false),
        (&"c".repeat(64)[..], false),
    ] {
        let mut core = core_with(|c| {
            c.search.clear();
            c.fqdn = Some(fqdn.into());
            c.hostname = Some("x".repeat(256));
        });
        let r = ask(
            &mut core,
            &msg(Some(DISCOVER), 0, &[], &[(OPT_MAX_SIZE, &[5, 0])]),
        );
        let op = opts(&check(&r[0]).dhcp);
        assert!(get(&op, OPT_HOSTNAME).is_none());
        let o81 = get(&op, OPT_FQDN);
        assert_eq!(o81.is_some(), sent, "{fqdn}");
        if let Some(d) = o81 {
            assert_eq!(d.len(), 254);
        }
    }
}

#[test]
fn classless_routes_only_off_subnet() {
    let mut core = Core::new(capture_config());
    let o = one(&mut core, &msg(Some(DISCOVER), 0, UDHCPC_PRL, &[]));
    assert_eq!(get(&opts(&o.dhcp), OPT_ROUTES), None);
    let gw = Ipv4Addr::new(10, 88, 0, 1);
    let mut core = core_with(|c| {
        let ip4 = c.ip4.as_mut().unwrap();
        ip4.gateway = Some(gw);
        ip4.our_addr = Some(gw);
    });
    let o = one(&mut core, &msg(Some(DISCOVER), 0, UDHCPC_PRL, &[]));
    let op = opts(&o.dhcp);
    assert_eq!(
        get(&op, OPT_ROUTES).unwrap(),
        [32, 10, 88, 0, 1, 0, 0, 0, 0, 0, 10, 88, 0, 1]
    );
    assert_eq!(get(&op, OPT_ROUTER).unwrap(), gw.octets());
    assert_eq!(codes(&op), [53, 1, 3, 6, 26, 119, 121, 51, 54]);
    // A /8 puts the same gateway on-link again.
    let mut core = core_with(|c| {
        let ip4 = c.ip4.as_mut().unwrap();
        ip4.gateway = Some(gw);
        ip4.prefix_len = 8;
    });
    let o = one(&mut core, &msg(Some(DISCOVER), 0, UDHCPC_PRL, &[]));
    let op = opts(&o.dhcp);
    assert_eq!(get(&op, OPT_ROUTES), None);
    assert_eq!(get(&op, OPT_MASK).unwrap(), [255, 0, 0, 0]);
}

#[test]
fn dns_and_search_switches() {
    let m = msg(Some(REQUEST), 0, UDHCPC_PRL, &[]);
    let mut core = core_with(|c| c.features.advertise_dns = false);
    let op = opts(&one(&mut core, &m).dhcp);
    assert_eq!(get(&op, OPT_DNS), None);
    assert!(get(&op, OPT_SEARCH).is_some());
    let mut core = core_with(|c| c.features.advertise_search = false);
    let op = opts(&one(&mut core, &m).dhcp);
    assert!(get(&op, OPT_DNS).is_some());
    assert_eq!(get(&op, OPT_SEARCH), None);
    let mut core = core_with(|c| {
        c.ip4.as_mut().unwrap().dns.clear();
        c.search = vec!["a..b".into()];
    });
    let op = opts(&one(&mut core, &m).dhcp);
    assert_eq!(get(&op, OPT_DNS), None);
    assert_eq!(get(&op, OPT_SEARCH), None);
}

#[test]
fn no_mtu_with_m_0() {
    let mut core = core_with(|c| c.mtu = None);
    let op = opts(&one(&mut core, &msg(Some(DISCOVER), 0, UDHCPC_PRL, &[])).dhcp);
    assert_eq!(get(&op, OPT_MTU), None);
    let mut core = core_with(|c| c.mtu = Some(1500));
    let op = opts(&one(&mut core, &msg(Some(DISCOVER), 0, UDHCPC_PRL, &[])).dhcp);
    assert_eq!(get(&op, OPT_MTU).unwrap(), 1500u16.to_be_bytes());
}

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

// --- replay of the reference captures --------------------------------

/// The frames of a capture (classic pcap, Ethernet).
fn pcap_frames(name: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/../tests/captures/{name}", env!("CARGO_MANIFEST_DIR"));
    let d = std::fs::read(&path).unwrap();
    let magic = u32::from_le_bytes(d[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => panic!("{path}: not a pcap file"),
    };
    let rd = |o: usize| {
        let b: [u8; 4] = d[o..o + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    assert_eq!(rd(20), 1, "link type Ethernet");
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= d.len() {
        let incl = rd(off + 8) as usize;
        out.push(d[off + 16..off + 16 + incl].to_vec());
        off += 16 + incl;
    }
    out
}

/// Checks our reply to the captured request `req`.
fn check_replay(ours: &[u8], req: &[u8]) -> Out {
    let d = &req[14 + 28..];
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&d[28..34]);
    check_for(ours, d[4..8].try_into().unwrap(), Mac(chaddr))
}

/// Offset of the UDP checksum in an IPv4 frame without IP options.
const UDP_CSUM: usize = 14 + 20 + 6;

#[test]
fn replay_upstream_capture() {
    let frames = pcap_frames("pasta-upstream-dhcp4.ns.pcap");
    assert_eq!(frames.len(), 4);
    // pasta's defaults: neither resolvers nor search list advertised.
    let mut core = core_with(|c| {
        c.features.advertise_dns = false;
        c.features.advertise_search = false;
    });
    for (req, theirs) in [(&frames[0], &frames[1]), (&frames[2], &frames[3])] {
        let ours = exchange(&mut core, Instant::ZERO, &[req]);
        assert_eq!(ours.len(), 1);
        let ours = &ours[0];
        check_replay(ours, req);
        // Byte for byte, except that upstream leaves the UDP checksum out.
        assert_eq!(ours.len(), theirs.len());
        assert_eq!(&ours[..UDP_CSUM], &theirs[..UDP_CSUM]);
        assert_eq!(&theirs[UDP_CSUM..UDP_CSUM + 2], &[0, 0]);
        assert_eq!(&ours[UDP_CSUM + 2..], &theirs[UDP_CSUM + 2..]);
    }
    assert_eq!(core.counters().replies(ReplyKind::Dhcp), 2);
}

#[test]
fn replay_debian_dns_capture() {
    // The 2023 version orders options by code only; compare the contents.
    let frames = pcap_frames("pasta-debian-dhcp4_dns.ns.pcap");
    let dns = Ipv4Addr::new(10, 255, 255, 53);
    let mut core = core_with(|c| {
        c.features.advertise_search = false;
        let ip4 = c.ip4.as_mut().unwrap();
        ip4.dns.clear();
        ip4.dns.push(dns).unwrap();
    });
    for (req, theirs) in [(&frames[0], &frames[1]), (&frames[2], &frames[3])] {
        let ours = exchange(&mut core, Instant::ZERO, &[req]);
        assert_eq!(ours.len(), 1);
        let ours = &ours[0];
        check_replay(ours, req);
        let (o, t) = (&ours[14 + 28..], &theirs[14 + 28..]);
        assert_eq!(o[..OPTS_OFF], t[..OPTS_OFF]);
        let mut oo = opts(o);
        let mut to = opts(t);
        oo.sort();
        to.sort();
        assert_eq!(oo, to);
        assert_eq!(get(&oo, OPT_DNS).unwrap(), dns.octets());
        assert_eq!(o.len(), t.len());
    }
}
