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

#[path = "hostile_frames_ns/cases.rs"]
mod cases;
mod ns_support;
#[path = "hostile_frames_ns/passt.rs"]
mod passt;
#[path = "hostile_frames_ns/pasta.rs"]
mod pasta;
mod relay_support;
mod stream_support;

use cases::cases;
use ns_support::*;
use relay_support::*;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use stream_support::*;

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

/// Where the checksum field of a header is, by protocol.
const CSUM_AT: [(u8, usize); 4] = [(TCP, 16), (UDP, 6), (ICMP4, 2), (ICMP6, 2)];

/// Where the checksum field of a `proto` header is.
fn csum_at(proto: u8) -> Option<usize> {
    CSUM_AT
        .iter()
        .find(|&&(p, _)| p == proto)
        .map(|&(_, at)| at)
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

/// The gateway's MAC address, from its ARP reply to the guest.
fn gw_mac(g: &mut dyn Guest, m: Macs) -> [u8; 6] {
    g.send(&arp(m, 1, GW4));
    let got = g.recv_until(5, &|f| Reply::Arp.matches(f, m));
    let r = got
        .iter()
        .find(|f| Reply::Arp.matches(f, m))
        .expect("an ARP reply from the gateway");
    r[22..28].try_into().unwrap()
}
