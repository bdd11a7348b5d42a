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
mod malformed;
mod messages;
mod options;
mod replay;

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
