//! Malformed frames of every layer from a hostile guest, end to end: through
//! passt (a client of its socket speaking qemu's framing, as qemu does) and
//! through pasta (frames written into its tap device from the guest's
//! namespace with a packet socket). The translators run as the unprivileged
//! test user with the sandbox on, and with `--trace`, which logs every frame
//! the core drops as `drop: REASON` (the name of its `DropReason`): each
//! malformed frame must be dropped for its own reason, or taken as upstream
//! takes it (TCP options that overrun the header end the option walk; guest
//! checksums are not verified, the host kernel makes fresh ones), and right
//! after it a good exchange (an ARP request and its reply) must work.
//!
//! On passt's stream: lengths 0, 13, 65536 and 0xffffffff reset the client,
//! as does a client leaving in the middle of a frame, and the next client is
//! served; every frame split byte by byte gives the same drops and replies
//! as when sent whole.

mod ns_support;
mod stream_support;

use ns_support::*;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stream_support::*;

fn s(p: &Path) -> String {
    p.display().to_string()
}

// --- frames ------------------------------------------------------------------

const GUEST4: [u8; 4] = [10, 77, 0, 2];
const GW4: [u8; 4] = [10, 77, 0, 1];
const BCAST4: [u8; 4] = [255, 255, 255, 255];
const ETH_IP4: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;
const ETH_IP6: u16 = 0x86dd;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP4: u8 = 1;
const ICMP6: u8 = 58;
/// Ports of the host side's TCP listener and UDP socket (on the host's
/// loopback, reached through the gateway address).
const TCP_PORT: u16 = 6750;
const UDP_PORT: u16 = 6751;

fn guest6() -> [u8; 16] {
    HOST_IP6.parse::<Ipv6Addr>().unwrap().octets()
}

fn gw6() -> [u8; 16] {
    GW_IP6.parse::<Ipv6Addr>().unwrap().octets()
}

/// The link-local address of a guest with MAC `mac` (EUI-64).
fn ll6(mac: [u8; 6]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfe;
    a[1] = 0x80;
    a[8] = mac[0] ^ 2;
    a[9] = mac[1];
    a[10] = mac[2];
    a[11] = 0xff;
    a[12] = 0xfe;
    a[13..16].copy_from_slice(&mac[3..6]);
    a
}

fn sum16(data: &[u8], mut sum: u32) -> u32 {
    for w in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The L4 checksum of `l4` (checksum field zero) with its pseudo-header.
fn l4_csum(src: &[u8], dst: &[u8], proto: u8, l4: &[u8]) -> u16 {
    let mut p = Vec::new();
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    if src.len() == 4 {
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    } else {
        p.extend_from_slice(&(l4.len() as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
    }
    fold(sum16(l4, sum16(&p, 0)))
}

/// Where the checksum field of a `proto` header is.
fn csum_at(proto: u8) -> Option<usize> {
    match proto {
        TCP => Some(16),
        UDP => Some(6),
        ICMP4 | ICMP6 => Some(2),
        _ => None,
    }
}

/// Fills in the checksum of `l4` (ICMPv4 has no pseudo-header).
fn with_csum(src: &[u8], dst: &[u8], proto: u8, mut l4: Vec<u8>) -> Vec<u8> {
    if let Some(at) = csum_at(proto).filter(|&a| l4.len() >= a + 2) {
        l4[at..at + 2].fill(0);
        let c = if proto == ICMP4 {
            fold(sum16(&l4, 0))
        } else {
            l4_csum(src, dst, proto, &l4)
        };
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    l4
}

/// Link-layer addresses of a frame from the guest.
#[derive(Clone, Copy)]
struct Macs {
    guest: [u8; 6],
    gw: [u8; 6],
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 header (with `opts`) and `payload`; `f` may change the header
/// before its checksum is computed.
fn ip4_with(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    opts: &[u8],
    payload: &[u8],
    f: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let hl = 20 + opts.len();
    let mut h = vec![0u8; 20];
    h[0] = 0x40 | (hl / 4) as u8;
    h[2..4].copy_from_slice(&((hl + payload.len()) as u16).to_be_bytes());
    h[6] = 0x40; // DF
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    h.extend_from_slice(opts);
    f(&mut h);
    h[10..12].fill(0);
    let c = fold(sum16(&h, 0));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// A frame to the gateway: IPv4 from the guest's address.
fn frame4(m: Macs, proto: u8, l4: Vec<u8>) -> Vec<u8> {
    let l4 = with_csum(&GUEST4, &GW4, proto, l4);
    eth(
        m.gw,
        m.guest,
        ETH_IP4,
        &ip4_with(GUEST4, GW4, proto, &[], &l4, |_| {}),
    )
}

/// An IPv6 header with `next` and `hop` limit, and `payload` (extension
/// headers included).
fn ip6(src: [u8; 16], dst: [u8; 16], next: u8, hop: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, hop]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

/// A frame to the gateway's global IPv6 address, the L4 part after the
/// extension headers `ext` (whose first one is `first`).
fn frame6_ext(m: Macs, first: u8, ext: &[u8], proto: u8, l4: Vec<u8>) -> Vec<u8> {
    let l4 = with_csum(&guest6(), &gw6(), proto, l4);
    let mut p = ext.to_vec();
    p.extend_from_slice(&l4);
    eth(
        m.gw,
        m.guest,
        ETH_IP6,
        &ip6(
            guest6(),
            gw6(),
            if ext.is_empty() { proto } else { first },
            64,
            &p,
        ),
    )
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// A TCP header with `flags` and `opts` (padded to a multiple of 4 bytes by
/// the caller), sequence number `seq`.
fn tcp(sport: u16, dport: u16, seq: u32, flags: u8, opts: &[u8]) -> Vec<u8> {
    let mut t = sport.to_be_bytes().to_vec();
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&[0; 4]);
    t.push((((20 + opts.len()) / 4) as u8) << 4);
    t.push(flags);
    t.extend_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(&[0; 4]);
    t.extend_from_slice(opts);
    t
}

fn arp(m: Macs, hw_type: u16, target: [u8; 4]) -> Vec<u8> {
    let mut a = hw_type.to_be_bytes().to_vec();
    a.extend_from_slice(&[0x08, 0, 6, 4, 0, 1]);
    a.extend_from_slice(&m.guest);
    a.extend_from_slice(&GUEST4);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target);
    eth([0xff; 6], m.guest, ETH_ARP, &a)
}

/// A DHCP request of `msg_type` with the options `opts` (after option 53),
/// from 0.0.0.0 to the broadcast address.
fn dhcp(m: Macs, cookie: [u8; 4], opts: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; 236];
    d[0] = 1; // BOOTREQUEST
    d[1] = 1;
    d[2] = 6;
    d[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    d[10] = 0x80; // broadcast
    d[28..34].copy_from_slice(&m.guest);
    d.extend_from_slice(&cookie);
    d.extend_from_slice(opts);
    let l4 = with_csum(&[0; 4], &BCAST4, UDP, udp(68, 67, &d));
    eth(
        [0xff; 6],
        m.guest,
        ETH_IP4,
        &ip4_with([0; 4], BCAST4, UDP, &[], &l4, |_| {}),
    )
}

const COOKIE: [u8; 4] = [99, 130, 83, 99];
/// DHCPDISCOVER, then the end option.
const DISCOVER: &[u8] = &[53, 1, 1, 255];

/// A DHCPv6 message from the guest's link-local address to
/// All_DHCP_Relay_Agents_and_Servers.
fn dhcp6(m: Macs, body: &[u8]) -> Vec<u8> {
    let src = ll6(m.guest);
    let dst: [u8; 16] = "ff02::1:2".parse::<Ipv6Addr>().unwrap().octets();
    let l4 = with_csum(&src, &dst, UDP, udp(546, 547, body));
    eth(
        [0x33, 0x33, 0, 1, 0, 2],
        m.guest,
        ETH_IP6,
        &ip6(src, dst, UDP, 1, &l4),
    )
}

/// SOLICIT with transaction 0xabcdef and `opts`.
fn solicit(opts: &[u8]) -> Vec<u8> {
    let mut b = vec![1, 0xab, 0xcd, 0xef];
    b.extend_from_slice(opts);
    b
}

/// Client Identifier option: a DUID-LL of `mac`.
fn client_id(mac: [u8; 6]) -> Vec<u8> {
    let mut o = vec![0, 1, 0, 10, 0, 3, 0, 1];
    o.extend_from_slice(&mac);
    o
}

/// An NDP message (`icmp`: type, code, checksum, body) with hop limit `hop`
/// from the guest's link-local address to `dst`.
fn ndp(m: Macs, hop: u8, dst: [u8; 16], icmp: Vec<u8>) -> Vec<u8> {
    let src = ll6(m.guest);
    let l4 = with_csum(&src, &dst, ICMP6, icmp);
    let mut dmac = [0x33, 0x33, 0, 0, 0, 0];
    dmac[2..6].copy_from_slice(&dst[12..16]);
    eth(dmac, m.guest, ETH_IP6, &ip6(src, dst, ICMP6, hop, &l4))
}

fn all_routers() -> [u8; 16] {
    "ff02::2".parse::<Ipv6Addr>().unwrap().octets()
}

/// A router solicitation with options `opts`.
fn rs(opts: &[u8]) -> Vec<u8> {
    let mut i = vec![133, 0, 0, 0, 0, 0, 0, 0];
    i.extend_from_slice(opts);
    i
}

/// What a case must lead to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Dropped, counted under this `DropReason` name.
    Drop(&'static str),
    /// Taken (no drop), and the guest gets a frame `Reply::matches`.
    Reply(Reply),
    /// Taken (no drop): a datagram with this payload reaches the host's UDP
    /// socket.
    Delivered(&'static [u8]),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Reply {
    Arp,
    DhcpOffer,
    Dhcp6Advertise,
    RouterAdvert,
    /// A SYN-ACK to this guest port.
    SynAck(u16),
}

/// The IP payload (L4) and protocol of a frame, if it is IP.
fn l4_of(f: &[u8]) -> Option<(u8, &[u8])> {
    match u16::from_be_bytes([*f.get(12)?, *f.get(13)?]) {
        ETH_IP4 => {
            let ihl = usize::from(f.get(14)? & 0xf) * 4;
            Some((*f.get(23)?, f.get(14 + ihl..)?))
        }
        ETH_IP6 => Some((*f.get(20)?, f.get(54..)?)),
        _ => None,
    }
}

impl Reply {
    fn matches(self, f: &[u8], m: Macs) -> bool {
        if f.get(0..6) != Some(&m.guest[..]) && f.first() != Some(&0x33) {
            return false;
        }
        let l4 = l4_of(f);
        match self {
            Reply::Arp => {
                f.len() >= 42 && f[12..14] == [8, 6] && f[20..22] == [0, 2] && f[28..32] == GW4
            }
            Reply::DhcpOffer => {
                matches!(l4, Some((UDP, u)) if u.len() > 8 && u[0..4] == [0, 67, 0, 68] && u[8] == 2)
            }
            Reply::Dhcp6Advertise => {
                matches!(l4, Some((UDP, u)) if u.len() > 8 && u[0..4] == [2, 35, 2, 34] && u[8] == 2)
            }
            Reply::RouterAdvert => matches!(l4, Some((ICMP6, i)) if i.first() == Some(&134)),
            Reply::SynAck(port) => {
                matches!(l4, Some((TCP, t)) if t.len() >= 20 && t[2..4] == port.to_be_bytes() && t[13] & 0x12 == 0x12)
            }
        }
    }
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    expect: Expect,
}

fn case(name: &'static str, frame: Vec<u8>, expect: Expect) -> Case {
    Case {
        name,
        frame,
        expect,
    }
}

/// Every malformed frame, and a few well-formed ones that must still work
/// among them. Source ports are distinct, so that no case meets another's
/// flow.
/// `ra`: router advertisements are on (not with pasta's `--config-net`).
fn cases(m: Macs, ra: bool) -> Vec<Case> {
    use Expect::*;
    let d = |r| Drop(r);
    let mut v = Vec::new();

    // Ethernet.
    v.push(case(
        "unknown ethertype",
        eth(m.gw, m.guest, 0x88b5, &[0; 46]),
        d("unknown_ethertype"),
    ));
    v.push(case(
        "IPv4 ethertype, no header",
        eth(m.gw, m.guest, ETH_IP4, &[]),
        d("ipv4_bad_header"),
    ));

    // ARP.
    let mut short = arp(m, 1, GW4);
    short.truncate(14 + 20);
    v.push(case("ARP truncated", short, d("arp_malformed")));
    v.push(case(
        "ARP for hardware type 6",
        arp(m, 6, GW4),
        d("arp_malformed"),
    ));
    v.push(case("ARP request", arp(m, 1, GW4), Reply(self::Reply::Arp)));

    // IPv4 header.
    let u = with_csum(&GUEST4, &GW4, UDP, udp(40001, UDP_PORT, b"v4"));
    let ip4f = |f: &dyn Fn(&mut Vec<u8>)| {
        eth(
            m.gw,
            m.guest,
            ETH_IP4,
            &ip4_with(GUEST4, GW4, UDP, &[], &u, |h| f(h)),
        )
    };
    v.push(case(
        "IPv4 version 5",
        ip4f(&|h| h[0] = 0x55),
        d("ipv4_bad_header"),
    ));
    v.push(case(
        "IPv4 header length 16",
        ip4f(&|h| h[0] = 0x44),
        d("ipv4_bad_header"),
    ));
    let mut past = eth(
        m.gw,
        m.guest,
        ETH_IP4,
        &ip4_with(GUEST4, GW4, UDP, &[], &[0; 4], |h| h[0] = 0x4f),
    );
    past.truncate(14 + 24);
    v.push(case(
        "IPv4 header length past the frame",
        past,
        d("ipv4_bad_header"),
    ));
    v.push(case(
        "IPv4 total length past the frame",
        ip4f(&|h| h[2..4].copy_from_slice(&1000u16.to_be_bytes())),
        d("ipv4_bad_length"),
    ));
    v.push(case(
        "IPv4 total length inside the header",
        ip4f(&|h| h[2..4].copy_from_slice(&12u16.to_be_bytes())),
        d("ipv4_bad_length"),
    ));
    v.push(case(
        "IPv4 first fragment",
        ip4f(&|h| h[6] = 0x20),
        d("ipv4_fragment"),
    ));
    v.push(case(
        "IPv4 later fragment",
        ip4f(&|h| h[6..8].copy_from_slice(&185u16.to_be_bytes())),
        d("ipv4_fragment"),
    ));
    v.push(case(
        "IPv4 loopback source",
        ip4f(&|h| h[12..16].copy_from_slice(&[127, 0, 0, 1])),
        d("loopback"),
    ));
    // A timestamp option claiming 40 bytes in a 4-byte option area: the
    // options are not read; what follows the header is.
    let ts = with_csum(&GUEST4, &GW4, ICMP4, vec![13, 0, 0, 0, 0, 0, 0, 0]);
    v.push(case(
        "IPv4 option overrunning the header",
        eth(
            m.gw,
            m.guest,
            ETH_IP4,
            &ip4_with(GUEST4, GW4, ICMP4, &[0x44, 40, 5, 0], &ts, |_| {}),
        ),
        d("icmp_not_echo"),
    ));
    v.push(case(
        "IPv4 header checksum wrong",
        {
            let mut f = frame4(m, UDP, udp(40002, UDP_PORT, b"ipv4 csum"));
            f[14 + 10] ^= 0x5a;
            f
        },
        Delivered(b"ipv4 csum"),
    ));

    // IPv6 header and extension headers.
    let u6 = udp(40003, UDP_PORT, b"v6");
    let good6 = frame6_ext(m, 0, &[], UDP, u6.clone());
    let mut f = good6.clone();
    f[14] = 0x40;
    v.push(case("IPv6 version 4", f, d("ipv6_bad_header")));
    let mut f = good6.clone();
    f.truncate(14 + 30);
    v.push(case("IPv6 header truncated", f, d("ipv6_bad_header")));
    let mut f = good6.clone();
    f[18..20].fill(0);
    v.push(case("IPv6 payload length 0", f, d("ipv6_bad_length")));
    let mut f = good6.clone();
    f[18..20].copy_from_slice(&1200u16.to_be_bytes());
    v.push(case(
        "IPv6 payload length past the frame",
        f,
        d("ipv6_bad_length"),
    ));
    let mut f = good6.clone();
    f[14 + 24 + 15] = 1;
    f[14 + 24..14 + 39].fill(0);
    v.push(case("IPv6 loopback destination", f, d("loopback")));
    // Destination options headers: 8 bytes, PadN filling them.
    let dopt = |next: u8| vec![next, 0, 1, 4, 0, 0, 0, 0];
    let chain = |n: usize, last: u8| {
        let mut e = Vec::new();
        for i in 0..n {
            e.extend(dopt(if i + 1 == n { last } else { 60 }));
        }
        e
    };
    v.push(case(
        "IPv6 two destination options headers",
        frame6_ext(m, 60, &chain(2, UDP), UDP, udp(40004, UDP_PORT, b"ext ok")),
        Delivered(b"ext ok"),
    ));
    v.push(case(
        "IPv6 chain of 40 extension headers",
        frame6_ext(m, 60, &chain(40, UDP), UDP, u6.clone()),
        d("ipv6_bad_extension"),
    ));
    // Hop-by-hop options pointing at hop-by-hop options to the end of the
    // packet: a loop for a parser that follows the chain without a bound.
    let mut hbh = Vec::new();
    for _ in 0..150 {
        hbh.extend(dopt(0));
    }
    v.push(case(
        "IPv6 hop-by-hop header looping to the end",
        frame6_ext(m, 0, &hbh, 0, Vec::new()),
        d("ipv6_bad_extension"),
    ));
    v.push(case(
        "IPv6 extension header past the payload",
        frame6_ext(m, 60, &[UDP, 10, 1, 4, 0, 0, 0, 0], UDP, Vec::new()),
        d("ipv6_bad_extension"),
    ));
    v.push(case(
        "IPv6 extension header cut after its first byte",
        eth(
            m.gw,
            m.guest,
            ETH_IP6,
            &ip6(guest6(), gw6(), 60, 64, &[UDP]),
        ),
        d("ipv6_bad_extension"),
    ));
    v.push(case(
        "IPv6 authentication header past the payload",
        frame6_ext(m, 51, &[UDP, 200, 0, 0, 0, 0, 0, 0], UDP, Vec::new()),
        d("ipv6_bad_extension"),
    ));
    v.push(case(
        "IPv6 no next header",
        frame6_ext(m, 59, &[0; 8], 59, Vec::new()),
        d("ipv6_bad_extension"),
    ));
    let frag = |next: u8, off_mf: u16| {
        let mut h = vec![next, 0];
        h.extend_from_slice(&off_mf.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 7]);
        h
    };
    v.push(case(
        "IPv6 first fragment",
        frame6_ext(m, 44, &frag(UDP, 1), UDP, u6.clone()),
        d("ipv6_fragment"),
    ));
    v.push(case(
        "IPv6 atomic fragment",
        frame6_ext(m, 44, &frag(UDP, 0), UDP, u6.clone()),
        d("ipv6_fragment"),
    ));
    let mut e = dopt(44);
    e.extend(frag(UDP, 8 << 3));
    v.push(case(
        "IPv6 fragment after destination options",
        frame6_ext(m, 60, &e, UDP, u6.clone()),
        d("ipv6_fragment"),
    ));

    // UDP and TCP headers.
    v.push(case(
        "UDP header truncated",
        frame4(m, UDP, vec![0x9c, 0x45, 0x1a, 0x5f]),
        d("l4_truncated"),
    ));
    let mut x = udp(40005, UDP_PORT, b"len");
    x[4..6].copy_from_slice(&4u16.to_be_bytes());
    v.push(case("UDP length 4", frame4(m, UDP, x), d("l4_truncated")));
    let mut x = udp(40006, UDP_PORT, b"len");
    x[4..6].copy_from_slice(&300u16.to_be_bytes());
    v.push(case(
        "UDP length past the packet",
        frame4(m, UDP, x),
        d("l4_truncated"),
    ));
    v.push(case(
        "UDP to port 0",
        frame4(m, UDP, udp(40007, 0, b"zero")),
        d("dgram_bad_endpoint"),
    ));
    v.push(case(
        "UDP checksum wrong",
        {
            let mut f = frame4(m, UDP, udp(40008, UDP_PORT, b"udp csum"));
            let n = f.len();
            f[n - 10] ^= 0xff;
            f
        },
        Delivered(b"udp csum"),
    ));
    v.push(case(
        "UDP over IPv6, checksum wrong",
        {
            let mut f = frame6_ext(m, 0, &[], UDP, udp(40009, UDP_PORT, b"udp6 csum"));
            let n = f.len();
            f[n - 11] ^= 0xff;
            f
        },
        Delivered(b"udp6 csum"),
    ));
    v.push(case(
        "TCP header truncated",
        frame4(m, TCP, tcp(41000, TCP_PORT, 1, 0x02, &[])[..12].to_vec()),
        d("l4_truncated"),
    ));
    let mut t = tcp(41001, TCP_PORT, 1, 0x02, &[]);
    t[12] = 4 << 4;
    v.push(case(
        "TCP data offset 4",
        frame4(m, TCP, t),
        d("l4_truncated"),
    ));
    let mut t = tcp(41002, TCP_PORT, 1, 0x02, &[]);
    t[12] = 15 << 4;
    v.push(case(
        "TCP data offset past the segment",
        frame4(m, TCP, t),
        d("l4_truncated"),
    ));
    v.push(case(
        "TCP ACK for no connection",
        frame4(m, TCP, tcp(41003, TCP_PORT, 1, 0x10, &[])),
        d("tcp_no_flow"),
    ));
    v.push(case(
        "TCP SYN+FIN",
        frame4(m, TCP, tcp(41004, TCP_PORT, 1, 0x03, &[])),
        d("tcp_bad_segment"),
    ));
    v.push(case(
        "TCP SYN to port 0",
        frame4(m, TCP, tcp(41005, 0, 1, 0x02, &[])),
        d("tcp_bad_endpoint"),
    ));
    // Options that overrun the header end the option walk; the handshake
    // goes on with defaults.
    v.push(case(
        "TCP SYN, MSS option overrunning the header",
        frame4(m, TCP, tcp(41006, TCP_PORT, 1, 0x02, &[2, 40, 5, 0xb4])),
        Reply(self::Reply::SynAck(41006)),
    ));
    v.push(case(
        "TCP SYN, option of length 0",
        frame4(m, TCP, tcp(41007, TCP_PORT, 1, 0x02, &[3, 0, 7, 0])),
        Reply(self::Reply::SynAck(41007)),
    ));
    v.push(case(
        "TCP SYN over IPv6, option of length 1",
        frame6_ext(m, 0, &[], TCP, tcp(41008, TCP_PORT, 1, 0x02, &[2, 1, 1, 1])),
        Reply(self::Reply::SynAck(41008)),
    ));
    v.push(case(
        "TCP SYN, checksum wrong",
        {
            let mut f = frame4(m, TCP, tcp(41009, TCP_PORT, 1, 0x02, &[]));
            let n = f.len();
            f[n - 3] ^= 0xff;
            f
        },
        Reply(self::Reply::SynAck(41009)),
    ));

    // ICMP and other protocols.
    v.push(case(
        "ICMP timestamp request",
        frame4(m, ICMP4, vec![13, 0, 0, 0, 0, 1, 0, 1]),
        d("icmp_not_echo"),
    ));
    v.push(case(
        "ICMPv6 destination unreachable",
        frame6_ext(m, 0, &[], ICMP6, vec![1, 4, 0, 0, 0, 0, 0, 0]),
        d("icmp_not_echo"),
    ));
    v.push(case(
        "SCTP",
        frame4(m, 132, vec![0; 16]),
        d("unsupported_protocol"),
    ));

    // DHCP.
    v.push(case(
        "DHCP header truncated",
        {
            let mut f = dhcp(m, COOKIE, DISCOVER);
            f.truncate(14 + 20 + 8 + 100);
            // Lengths of the truncated packet, checksums left alone.
            let ip_len = (20 + 8 + 100) as u16;
            f[16..18].copy_from_slice(&ip_len.to_be_bytes());
            f[14 + 10..14 + 12].fill(0);
            let c = fold(sum16(&f[14..34], 0));
            f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
            f[38..40].copy_from_slice(&108u16.to_be_bytes());
            f[40..42].fill(0);
            f
        },
        d("service_malformed"),
    ));
    v.push(case(
        "DHCP magic cookie wrong",
        dhcp(m, [1, 2, 3, 4], DISCOVER),
        d("service_malformed"),
    ));
    v.push(case(
        "DHCP option overrunning the message",
        dhcp(m, COOKIE, &[53, 1, 1, 55, 200, 1, 3, 6]),
        d("service_malformed"),
    ));
    v.push(case(
        "DHCP message type option cut short",
        dhcp(m, COOKIE, &[53]),
        d("service_malformed"),
    ));
    v.push(case(
        "DHCP discover",
        dhcp(m, COOKIE, DISCOVER),
        Reply(self::Reply::DhcpOffer),
    ));

    // DHCPv6.
    let mut o = client_id(m.guest);
    o.extend_from_slice(&[0, 8, 0, 200, 0, 0]);
    v.push(case(
        "DHCPv6 option overrunning the message",
        dhcp6(m, &solicit(&o)),
        d("service_malformed"),
    ));
    v.push(case(
        "DHCPv6 without client identifier",
        dhcp6(m, &solicit(&[0, 8, 0, 2, 0, 0])),
        d("service_malformed"),
    ));
    v.push(case(
        "DHCPv6 header truncated",
        dhcp6(m, &[1, 0xab]),
        d("service_malformed"),
    ));
    v.push(case(
        "DHCPv6 solicit",
        dhcp6(m, &solicit(&client_id(m.guest))),
        Reply(self::Reply::Dhcp6Advertise),
    ));

    // NDP.
    let sll = |len: u8| {
        let mut o = vec![1, len];
        o.extend_from_slice(&m.guest);
        o
    };
    v.push(case(
        "NDP router solicitation, hop limit 64",
        ndp(m, 64, all_routers(), rs(&sll(1))),
        d("service_malformed"),
    ));
    v.push(case(
        "NDP option of length 0",
        ndp(m, 255, all_routers(), rs(&sll(0))),
        d("service_malformed"),
    ));
    v.push(case(
        "NDP option overrunning the message",
        ndp(m, 255, all_routers(), rs(&sll(4))),
        d("service_malformed"),
    ));
    v.push(case(
        "NDP neighbour solicitation truncated",
        ndp(
            m,
            255,
            all_routers(),
            vec![135, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0x80],
        ),
        d("service_malformed"),
    ));
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&all_routers());
    v.push(case(
        "NDP neighbour solicitation for a multicast address",
        ndp(m, 255, all_routers(), ns),
        d("service_malformed"),
    ));
    v.push(case(
        "NDP router solicitation",
        ndp(m, 255, all_routers(), rs(&sll(1))),
        if ra {
            Reply(self::Reply::RouterAdvert)
        } else {
            d("service_ignored")
        },
    ));
    v
}

/// The `drop: REASON` lines in `log` after byte `from`.
fn drops_since(log: &str, from: usize) -> Vec<String> {
    log.get(from..)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split("drop: ").nth(1))
        .map(|r| r.trim().to_string())
        .collect()
}

/// The host side of every case: a TCP listener and a UDP socket on the host's
/// loopback (the gateway's address maps to it).
struct HostPeers {
    tcp: TcpListener,
    _tcp6: TcpListener,
    udp: UdpSocket,
}

impl HostPeers {
    fn new(h: &Netns) -> HostPeers {
        // Both families: the IPv6 cases reach the host's ::1.
        let (tcp, tcp6, udp) = in_ns(h, || {
            (
                TcpListener::bind(lo4(TCP_PORT)).expect("TCP listener"),
                TcpListener::bind(lo6(TCP_PORT)).expect("TCP listener"),
                UdpSocket::bind(any6(UDP_PORT)).expect("UDP socket"),
            )
        });
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        HostPeers {
            tcp,
            _tcp6: tcp6,
            udp,
        }
    }

    /// Whether `payload` arrives within `secs`.
    fn got(&self, payload: &[u8], secs: u64) -> bool {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut b = [0u8; 2048];
        while Instant::now() < end {
            if let Ok((n, _)) = self.udp.recv_from(&mut b) {
                if &b[..n] == payload {
                    return true;
                }
            }
        }
        false
    }
}

/// A guest link under test: frames in, frames out.
trait Guest {
    fn send(&mut self, frame: &[u8]);
    /// Frames received within `secs` until `stop` matches one.
    fn recv_until(&mut self, secs: u64, stop: &dyn Fn(&[u8]) -> bool) -> Vec<Vec<u8>>;
}

/// Runs every case: the frame, then an ARP exchange; checks the drop
/// reasons logged in between. `exact`: no other frames reach the
/// translator (passt with our client), so the drops must be exactly the
/// case's; pasta's guest kernel sends frames of its own.
fn run_cases(
    g: &mut dyn Guest,
    m: Macs,
    peers: &HostPeers,
    log: &dyn Fn() -> String,
    exact: bool,
    ra: bool,
) -> Vec<String> {
    let mut failures = Vec::new();
    for c in cases(m, ra) {
        let from = log().len();
        g.send(&c.frame);
        if let Expect::Reply(r) = c.expect {
            let got = g.recv_until(5, &|f| r.matches(f, m));
            if !got.iter().any(|f| r.matches(f, m)) {
                failures.push(format!("{}: no {r:?} reply", c.name));
            }
            if let self::Reply::SynAck(port) = r {
                // Reset in the family of the SYN.
                let rst = tcp(port, TCP_PORT, 2, 0x04, &[]);
                g.send(&if c.frame[12..14] == ETH_IP6.to_be_bytes() {
                    frame6_ext(m, 0, &[], TCP, rst)
                } else {
                    frame4(m, TCP, rst)
                });
            }
        }
        if let Expect::Delivered(p) = c.expect {
            if !peers.got(p, 5) {
                failures.push(format!("{}: datagram not delivered", c.name));
            }
        }
        // The next client exchange works.
        g.send(&arp(m, 1, GW4));
        let got = g.recv_until(5, &|f| Reply::Arp.matches(f, m));
        if !got.iter().any(|f| Reply::Arp.matches(f, m)) {
            failures.push(format!("{}: no ARP reply after it", c.name));
        }
        let drops = drops_since(&log(), from);
        let ok = match c.expect {
            Expect::Drop(r) if exact => drops == [r],
            Expect::Drop(r) => drops.iter().any(|d| d == r),
            _ if exact => drops.is_empty(),
            _ => true,
        };
        if !ok {
            failures.push(format!(
                "{}: expected {:?}, drops {drops:?}",
                c.name, c.expect
            ));
        }
    }
    failures
}

// --- passt and its stream ------------------------------------------------------

struct Passt {
    h: Netns,
    p: Proc,
    sock: PathBuf,
    _dir: Scratch,
}

fn passt(tag: &str) -> Passt {
    let h = Netns::host(tag);
    let dir = Scratch::new(tag);
    let sock = dir.join("passt.socket");
    let pidf = dir.join("passt.pid");
    let mut p = Proc::spawn(
        h.user_cmd(&[
            s(&bin("passt")),
            "-f".into(),
            "--trace".into(),
            "-s".into(),
            s(&sock),
            "-P".into(),
            s(&pidf),
        ]),
        "passt",
        dir.join("passt.log"),
    );
    wait_file(&pidf, 20, &mut p);
    Passt {
        h,
        p,
        sock,
        _dir: dir,
    }
}

/// Our client on passt's stream; `split`: every frame goes out one byte
/// per write.
struct StreamGuest {
    c: StreamClient,
    split: bool,
}

impl Guest for StreamGuest {
    fn send(&mut self, frame: &[u8]) {
        let b = StreamClient::encode(&[frame.to_vec()]);
        if self.split {
            for (i, x) in b.iter().enumerate() {
                self.c.send_raw(&[*x]);
                if i % 7 == 0 {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        } else {
            self.c.send_raw(&b);
        }
    }

    fn recv_until(&mut self, secs: u64, stop: &dyn Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        self.c.collect(secs, 1, stop)
    }
}

fn gw_mac(g: &mut dyn Guest, m: Macs) -> [u8; 6] {
    g.send(&arp(m, 1, GW4));
    let got = g.recv_until(5, &|f| Reply::Arp.matches(f, m));
    let r = got
        .iter()
        .find(|f| Reply::Arp.matches(f, m))
        .expect("an ARP reply from the gateway");
    r[22..28].try_into().unwrap()
}

/// Every case through passt, each frame whole and then split byte by byte,
/// on one client connection.
#[test]
fn passt_malformed_frames() {
    let mut t = passt("hfp");
    let peers = HostPeers::new(&t.h);
    let mut g = StreamGuest {
        c: StreamClient::connect(&t.sock),
        split: false,
    };
    let mut m = Macs {
        guest: GUEST_MAC,
        gw: [0xff; 6],
    };
    m.gw = gw_mac(&mut g, m);
    let log = || t.p.output();
    let mut failures = run_cases(&mut g, m, &peers, &log, true, true);
    g.split = true;
    failures.extend(
        run_cases(&mut g, m, &peers, &log, true, true)
            .into_iter()
            .map(|f| format!("split: {f}")),
    );
    t.p.assert_running();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Bad lengths on the stream (0, 13, 65536, 0xffffffff, each after a good
/// frame and alone) and a client leaving in the middle of a frame: each
/// resets that client only (no panic, no hang), and the next client is
/// served from a clean stream (no bytes left over from the last one).
#[test]
fn passt_bad_stream_lengths_reset_client() {
    let mut t = passt("hfl");
    let arp_req = arp_request(GW_IP4.parse::<Ipv4Addr>().unwrap().octets(), 60);
    let serve = |c: &mut StreamClient, what: &str| {
        c.send_raw(&StreamClient::encode(std::slice::from_ref(&arp_req)));
        let got = c.collect(5, 1, |f| is_arp_reply_for(f, GW4));
        assert!(
            got.iter().any(|f| is_arp_reply_for(f, GW4)),
            "{what}: the client is not served"
        );
    };
    for len in [0u32, 13, 65536, 0xffff_ffff] {
        for after_good in [false, true] {
            let what = format!(
                "length {len:#x}{}",
                if after_good {
                    " after a good frame"
                } else {
                    ""
                }
            );
            let mut c = StreamClient::connect(&t.sock);
            serve(&mut c, &what);
            let mut b = Vec::new();
            if after_good {
                b.extend(StreamClient::encode(std::slice::from_ref(&arp_req)));
            }
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(&[0xa5; 64]);
            c.send_raw(&b);
            if after_good {
                let got = c.collect(5, 1, |f| is_arp_reply_for(f, GW4));
                assert!(
                    got.iter().any(|f| is_arp_reply_for(f, GW4)),
                    "{what}: the frame before the bad length is served"
                );
            }
            assert!(c.closed_by_peer(5), "{what}: the client is not reset");
            t.p.assert_running();
        }
    }
    // A client that leaves halfway through a frame: its bytes are gone
    // with it.
    for cut in [1usize, 3, 4, 20] {
        let mut c = StreamClient::connect(&t.sock);
        serve(&mut c, "before a partial frame");
        let b = StreamClient::encode(std::slice::from_ref(&arp_req));
        c.send_raw(&b[..cut]);
        std::thread::sleep(Duration::from_millis(50));
        drop(c);
        let mut c = StreamClient::connect(&t.sock);
        serve(
            &mut c,
            &format!("after a client left {cut} bytes into a frame"),
        );
    }
    t.p.assert_running();
    assert!(
        t.p.output().contains("bad frame size"),
        "the log names the bad length: {}",
        t.p.output()
    );
}

// --- pasta, frames through its tap ---------------------------------------------

/// A packet socket on the tap interface inside pasta's guest namespace:
/// what it sends, pasta reads from the tap.
struct TapGuest {
    fd: OwnedFd,
    ifindex: i32,
}

impl TapGuest {
    fn open(g: &Netns, ifname: &str) -> TapGuest {
        let name = std::ffi::CString::new(ifname).unwrap();
        in_ns(g, || {
            let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
            // SAFETY: plain socket creation; the descriptor is owned below.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: a fresh descriptor owned by no one else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
            assert!(ifindex > 0, "no interface {name:?}");
            // SAFETY: an all-zero sockaddr_ll is valid.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_protocol = proto as u16;
            sa.sll_ifindex = ifindex;
            // SAFETY: `sa` lives across the call, its size passed along.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: `tv` lives across the call and its size is passed along.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            TapGuest { fd, ifindex }
        })
    }
}

impl Guest for TapGuest {
    fn send(&mut self, frame: &[u8]) {
        // SAFETY: an all-zero sockaddr_ll is valid.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_ifindex = self.ifindex;
        sa.sll_halen = 6;
        // SAFETY: `frame` and `sa` live across the call, lengths passed along.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            r,
            frame.len() as isize,
            "sending a frame into the tap: {}",
            std::io::Error::last_os_error()
        );
    }

    fn recv_until(&mut self, secs: u64, stop: &dyn Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut out = Vec::new();
        let mut b = vec![0u8; 65536];
        while Instant::now() < end {
            // SAFETY: an all-zero sockaddr_ll is valid.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut sl = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: `b` and `sa` are valid for writes of the lengths given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    b.as_mut_ptr().cast(),
                    b.len(),
                    0,
                    (&mut sa as *mut libc::sockaddr_ll).cast(),
                    &mut sl,
                )
            };
            // Frames from pasta only, not our own going out.
            if n <= 0 || sa.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let f = b[..n as usize].to_vec();
            let done = stop(&f);
            out.push(f);
            if done {
                break;
            }
        }
        out
    }
}

/// Every case through pasta's tap; then pasta still serves the guest's own
/// TCP connections.
#[test]
fn pasta_malformed_frames() {
    let h = Netns::host("hft");
    let g = UserNetns::new("hftg");
    let dir = Scratch::new("hft");
    let pidf = dir.join("pasta.pid");
    let mut p = Proc::spawn(
        h.user_cmd(&[
            s(&bin("pasta")),
            "-f".into(),
            "--trace".into(),
            "-P".into(),
            s(&pidf),
            "--config-net".into(),
            "--userns".into(),
            s(&g.userns_path()),
            "--netns".into(),
            g.name.clone(),
        ]),
        "pasta",
        dir.join("pasta.log"),
    );
    wait_file(&pidf, 20, &mut p);
    let ready = eventually(10, || {
        let a = g.sh("ip -o -4 addr show; ip -4 route show default");
        (a.contains(HOST_IP4) && a.contains("default via")).then_some(())
    });
    assert!(ready.is_some(), "guest not configured: {}", p.output());
    let link = g.sh("ip -o link show | grep -v ' lo:'");
    let ifname = link
        .split(':')
        .nth(1)
        .map(|n| n.trim().to_string())
        .expect("the tap interface");
    let mac_txt = g.sh(&format!(
        "cat /sys/class/net/{ifname}/address 2>/dev/null || ip -o link show {ifname}"
    ));
    let mac: Vec<u8> = mac_txt
        .split_whitespace()
        .find(|w| w.len() == 17 && w.matches(':').count() == 5 && *w != "ff:ff:ff:ff:ff:ff")
        .expect("the tap's MAC")
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    let peers = HostPeers::new(&h);
    let mut tg = TapGuest::open(&g, &ifname);
    let mut m = Macs {
        guest: mac.try_into().unwrap(),
        gw: [0xff; 6],
    };
    m.gw = gw_mac(&mut tg, m);
    let log = || p.output();
    let failures = run_cases(&mut tg, m, &peers, &log, false, false);
    p.assert_running();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The guest's own connection through the gateway still works.
    let gw = std::net::SocketAddr::from((GW_IP4.parse::<Ipv4Addr>().unwrap(), TCP_PORT));
    let mut c = in_ns(&g, || {
        std::net::TcpStream::connect_timeout(&gw, Duration::from_secs(5))
    })
    .expect("a guest connection after the malformed frames");
    // The listener's backlog holds the connections of the SYN cases too.
    let mut b = [0u8; 1];
    let served = eventually(10, || {
        let mut a = accept_timeout(&peers.tcp, 5);
        a.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        c.write_all(b"z").ok()?;
        (a.read(&mut b).ok() == Some(1)).then_some(())
    });
    assert!(
        served.is_some() && &b == b"z",
        "the guest's connection carries data"
    );
}
