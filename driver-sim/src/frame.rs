//! Guest frames: building them for scenarios, checking the core's frames with an
//! independent parser (etherparse plus our own checksum arithmetic), and
//! rendering one-line summaries for timelines.

use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// An Ethernet address.
pub type MacAddr = [u8; 6];

/// The default guest MAC of scenarios (the one of the reference captures).
pub const GUEST_MAC: MacAddr = [0x22, 0x72, 0xee, 0x22, 0xd2, 0x37];
/// Broadcast.
pub const BROADCAST: MacAddr = [0xff; 6];

/// TCP flag bits.
pub mod flags {
    /// FIN
    pub const FIN: u8 = 0x01;
    /// SYN
    pub const SYN: u8 = 0x02;
    /// RST
    pub const RST: u8 = 0x04;
    /// PSH
    pub const PSH: u8 = 0x08;
    /// ACK
    pub const ACK: u8 = 0x10;
    /// URG
    pub const URG: u8 = 0x20;
}

// --- checksums (written here, independent of the core's) --------------------

fn sum16(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn pseudo_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u64 {
    let mut acc = 0u64;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum16(&s.octets(), acc);
            acc = sum16(&d.octets(), acc);
        }
        (s, d) => {
            acc = sum16(&v6(s).octets(), acc);
            acc = sum16(&v6(d).octets(), acc);
        }
    }
    acc + u64::from(proto) + len as u64
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// Whether the L4 checksum of `l4` (header and payload) is right.
pub fn l4_checksum_ok(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> bool {
    fold(sum16(l4, pseudo_sum(src, dst, proto, l4.len()))) == 0xffff
}

/// Writes the L4 checksum at `l4[off..off + 2]` (zeroed first).
fn fill_l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, l4: &mut [u8], off: usize) {
    if let Some(f) = l4.get_mut(off..off + 2) {
        f.fill(0);
    }
    let mut c = !fold(sum16(l4, pseudo_sum(src, dst, proto, l4.len())));
    if c == 0 && proto == 17 {
        c = 0xffff;
    }
    if let Some(f) = l4.get_mut(off..off + 2) {
        f.copy_from_slice(&c.to_be_bytes());
    }
}

// --- building ---------------------------------------------------------------

/// An Ethernet frame.
pub fn eth(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IP packet in an Ethernet frame; the L4 checksum at `csum_off` of `l4`
/// (if any) is filled in.
pub fn ip_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    mut l4: Vec<u8>,
    csum_off: Option<usize>,
) -> Vec<u8> {
    if let Some(off) = csum_off {
        fill_l4_checksum(src, dst, proto, &mut l4, off);
    }
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (20 + l4.len()).min(0xffff) as u16;
            let mut h = [0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&total.to_be_bytes());
            h[6] = 0x40; // DF
            h[8] = 64;
            h[9] = proto;
            h[12..16].copy_from_slice(&s.octets());
            h[16..20].copy_from_slice(&d.octets());
            let c = !fold(sum16(&h, 0));
            h[10..12].copy_from_slice(&c.to_be_bytes());
            let mut p = h.to_vec();
            p.extend_from_slice(&l4);
            eth(dst_mac, src_mac, 0x0800, &p)
        }
        (s, d) => {
            let mut h = [0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(l4.len().min(0xffff) as u16).to_be_bytes());
            h[6] = proto;
            h[7] = 255;
            h[8..24].copy_from_slice(&v6(s).octets());
            h[24..40].copy_from_slice(&v6(d).octets());
            let mut p = h.to_vec();
            p.extend_from_slice(&l4);
            eth(dst_mac, src_mac, 0x86dd, &p)
        }
    }
}

/// A TCP segment with options `opts` (already encoded, padded to 4 bytes).
#[allow(clippy::too_many_arguments)]
pub fn tcp_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let hlen = 20 + opts.len();
    let mut l4 = vec![0u8; hlen];
    l4[0..2].copy_from_slice(&src.port().to_be_bytes());
    l4[2..4].copy_from_slice(&dst.port().to_be_bytes());
    l4[4..8].copy_from_slice(&seq.to_be_bytes());
    l4[8..12].copy_from_slice(&ack.to_be_bytes());
    l4[12] = ((hlen / 4) as u8) << 4;
    l4[13] = flags;
    l4[14..16].copy_from_slice(&win.to_be_bytes());
    l4[20..].copy_from_slice(opts);
    l4.extend_from_slice(payload);
    ip_frame(src_mac, dst_mac, src.ip(), dst.ip(), 6, l4, Some(16))
}

/// A UDP datagram.
pub fn udp_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) -> Vec<u8> {
    let mut l4 = vec![0u8; 8];
    l4[0..2].copy_from_slice(&src.port().to_be_bytes());
    l4[2..4].copy_from_slice(&dst.port().to_be_bytes());
    l4[4..6].copy_from_slice(&((8 + payload.len()).min(0xffff) as u16).to_be_bytes());
    l4.extend_from_slice(payload);
    ip_frame(src_mac, dst_mac, src.ip(), dst.ip(), 17, l4, Some(6))
}

/// An ARP request for `target` from `sender`.
pub fn arp_request(src_mac: MacAddr, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&src_mac);
    a.extend_from_slice(&sender.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    eth(BROADCAST, src_mac, 0x0806, &a)
}

/// ICMP (v4) or ICMPv6 echo request.
pub fn echo_request(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: IpAddr,
    dst: IpAddr,
    id: u16,
    seq: u16,
    len: usize,
) -> Vec<u8> {
    let (ty, proto) = if src.is_ipv4() { (8, 1) } else { (128, 58) };
    let mut l4 = vec![ty, 0, 0, 0];
    l4.extend_from_slice(&id.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend((0..len).map(|i| i as u8));
    if proto == 1 {
        let c = !fold(sum16(&l4, 0));
        l4[2..4].copy_from_slice(&c.to_be_bytes());
        ip_frame(src_mac, dst_mac, src, dst, proto, l4, None)
    } else {
        ip_frame(src_mac, dst_mac, src, dst, proto, l4, Some(2))
    }
}

/// The link-local address a guest with `mac` forms (EUI-64).
pub fn link_local(mac: MacAddr) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([mac[0] ^ 2, mac[1]]),
        u16::from_be_bytes([mac[2], 0xff]),
        u16::from_be_bytes([0xfe, mac[3]]),
        u16::from_be_bytes([mac[4], mac[5]]),
    )
}

fn solicited_node(a: Ipv6Addr) -> (Ipv6Addr, MacAddr) {
    let o = a.octets();
    let ip = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    );
    let m = ip.octets();
    (ip, [0x33, 0x33, m[12], m[13], m[14], m[15]])
}

/// A neighbour solicitation for `target` from `src` (the unspecified address
/// for duplicate address detection).
pub fn ndp_ns(src_mac: MacAddr, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let (dst, dst_mac) = solicited_node(target);
    let mut l4 = vec![135, 0, 0, 0, 0, 0, 0, 0];
    l4.extend_from_slice(&target.octets());
    if !src.is_unspecified() {
        l4.extend_from_slice(&[1, 1]);
        l4.extend_from_slice(&src_mac);
    }
    ip_frame(src_mac, dst_mac, src.into(), dst.into(), 58, l4, Some(2))
}

/// A router solicitation from the guest's link-local address.
pub fn ndp_rs(src_mac: MacAddr) -> Vec<u8> {
    let mut l4 = vec![133, 0, 0, 0, 0, 0, 0, 0, 1, 1];
    l4.extend_from_slice(&src_mac);
    let dst: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
    let dst_mac = [0x33, 0x33, 0, 0, 0, 2];
    ip_frame(
        src_mac,
        dst_mac,
        link_local(src_mac).into(),
        dst.into(),
        58,
        l4,
        Some(2),
    )
}

/// DHCP message types by name.
pub fn dhcp_type(name: &str) -> Option<u8> {
    Some(match name {
        "discover" => 1,
        "offer" => 2,
        "request" => 3,
        "decline" => 4,
        "ack" => 5,
        "nak" => 6,
        "release" => 7,
        "inform" => 8,
        _ => return None,
    })
}

const DHCP_NAMES: [&str; 9] = [
    "?", "DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE", "INFORM",
];

/// A DHCP client message of `kind`, broadcast from 0.0.0.0:68.
pub fn dhcp_client(src_mac: MacAddr, kind: u8, xid: u32, requested: Option<Ipv4Addr>) -> Vec<u8> {
    let mut m = vec![0u8; 240];
    m[0] = 1;
    m[1] = 1;
    m[2] = 6;
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[10] = 0x80; // broadcast flag
    m[28..34].copy_from_slice(&src_mac);
    m[236..240].copy_from_slice(&[99, 130, 83, 99]);
    m.extend_from_slice(&[53, 1, kind]);
    if let Some(r) = requested {
        m.extend_from_slice(&[50, 4]);
        m.extend_from_slice(&r.octets());
    }
    m.extend_from_slice(&[55, 4, 1, 3, 6, 15, 255]);
    while m.len() < 300 {
        m.push(0);
    }
    udp_frame(
        src_mac,
        BROADCAST,
        SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 68),
        SocketAddr::new(Ipv4Addr::BROADCAST.into(), 67),
        &m,
    )
}

/// DHCPv6 message types by name.
pub fn dhcpv6_type(name: &str) -> Option<u8> {
    Some(match name {
        "solicit" => 1,
        "advertise" => 2,
        "request" => 3,
        "confirm" => 4,
        "renew" => 5,
        "rebind" => 6,
        "reply" => 7,
        "release" => 8,
        "decline" => 9,
        "info-request" => 11,
        _ => return None,
    })
}

const DHCPV6_NAMES: [&str; 12] = [
    "?",
    "SOLICIT",
    "ADVERTISE",
    "REQUEST",
    "CONFIRM",
    "RENEW",
    "REBIND",
    "REPLY",
    "RELEASE",
    "DECLINE",
    "RECONFIGURE",
    "INFORMATION-REQUEST",
];

/// A DHCPv6 client message with a client identifier (DUID-LL), an IA_NA (IAID 1)
/// unless it is an information request, and an option request for DNS and the
/// search list. `server_id`, if given, is copied in (request, renew).
pub fn dhcpv6_client(src_mac: MacAddr, kind: u8, xid: u32, server_id: Option<&[u8]>) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&xid.to_be_bytes()[1..4]);
    // Client identifier: DUID-LL, hardware type 1.
    m.extend_from_slice(&[0, 1, 0, 10, 0, 3, 0, 1]);
    m.extend_from_slice(&src_mac);
    if let Some(sid) = server_id {
        m.extend_from_slice(&[0, 2]);
        m.extend_from_slice(&(sid.len().min(0xffff) as u16).to_be_bytes());
        m.extend_from_slice(sid);
    }
    if kind != 11 {
        m.extend_from_slice(&[0, 3, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
    m.extend_from_slice(&[0, 6, 0, 4, 0, 23, 0, 24]);
    m.extend_from_slice(&[0, 8, 0, 2, 0, 0]); // elapsed time
    let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
    udp_frame(
        src_mac,
        [0x33, 0x33, 0, 1, 0, 2],
        SocketAddr::new(link_local(src_mac).into(), 546),
        SocketAddr::new(dst.into(), 547),
        &m,
    )
}

/// Encodes TCP options from packetdrill names: `mss N`, `wscale N`, `sackOK`,
/// `nop`, `eol`; pads with NOPs... then EOL to a multiple of 4.
pub fn tcp_options(spec: &str) -> Result<Vec<u8>, String> {
    let mut o = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let mut w = item.split_whitespace();
        match (w.next(), w.next()) {
            (Some("mss"), Some(v)) => {
                let v: u16 = v.parse().map_err(|_| format!("bad mss {v}"))?;
                o.extend_from_slice(&[2, 4]);
                o.extend_from_slice(&v.to_be_bytes());
            }
            (Some("wscale"), Some(v)) => {
                let v: u8 = v.parse().map_err(|_| format!("bad wscale {v}"))?;
                o.extend_from_slice(&[3, 3, v]);
            }
            (Some("sackOK"), None) => o.extend_from_slice(&[4, 2]),
            (Some("nop"), None) => o.push(1),
            (Some("eol"), None) => o.push(0),
            _ => return Err(format!("unknown TCP option `{item}`")),
        }
    }
    while o.len() % 4 != 0 {
        o.push(0);
    }
    Ok(o)
}

fn render_tcp_options(opts: &[u8]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            0 => break,
            1 => {
                out.push("nop".to_string());
                i += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = opts.get(i + 1) else {
            out.push("bad".into());
            break;
        };
        let len = usize::from(len);
        let Some(body) = opts.get(i + 2..i + len.max(2)) else {
            out.push("bad".into());
            break;
        };
        if len < 2 {
            out.push("bad".into());
            break;
        }
        out.push(match (kind, body) {
            (2, [a, b]) => format!("mss {}", u16::from_be_bytes([*a, *b])),
            (3, [s]) => format!("wscale {s}"),
            (4, []) => "sackOK".into(),
            (5, _) => "sack".into(),
            (8, _) => "TS".into(),
            (k, _) => format!("opt{k}"),
        });
        i += len;
    }
    out.join(",")
}

/// Rewrites the acknowledgement number of a TCP segment in place (IPv4, or
/// IPv6 without extension headers) and fixes its checksum. Returns whether it
/// did.
pub fn set_tcp_ack(frame: &mut [u8], ack: u32) -> bool {
    let Some(t) = parse_tcp(frame) else {
        return false;
    };
    let l4_off = match frame.get(12..14) {
        Some([0x08, 0x00]) => 14 + usize::from(frame.get(14).map_or(0, |b| b & 0x0f)) * 4,
        Some([0x86, 0xdd]) if frame.get(20) == Some(&6) => 54,
        _ => return false,
    };
    let ip_end = match frame.get(12..14) {
        Some([0x08, 0x00]) => {
            14 + frame
                .get(16..18)
                .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        }
        _ => {
            54 + frame
                .get(18..20)
                .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        }
    };
    let Some(l4) = frame.get_mut(l4_off..ip_end) else {
        return false;
    };
    if l4.len() < 20 {
        return false;
    }
    l4[8..12].copy_from_slice(&ack.to_be_bytes());
    fill_l4_checksum(t.src.ip(), t.dst.ip(), 6, l4, 16);
    true
}

// --- parsing and checking ---------------------------------------------------

/// A TCP segment, as seen by the checker and the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSeg {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flag bits ([`flags`]).
    pub flags: u8,
    /// Window field (unscaled).
    pub win: u16,
    /// Options, rendered.
    pub opts: String,
    /// Payload.
    pub payload: Vec<u8>,
}

impl TcpSeg {
    /// Sequence space the segment takes (payload plus SYN and FIN).
    pub fn seq_len(&self) -> u32 {
        let mut n = self.payload.len() as u32;
        if self.flags & flags::SYN != 0 {
            n += 1;
        }
        if self.flags & flags::FIN != 0 {
            n += 1;
        }
        n
    }
}

/// Parses a TCP segment out of an Ethernet frame (no checks beyond parsing).
pub fn parse_tcp(frame: &[u8]) -> Option<TcpSeg> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let (src, dst) = ip_addrs(p.net.as_ref()?)?;
    let Some(TransportSlice::Tcp(t)) = p.transport else {
        return None;
    };
    let mut fl = 0;
    for (set, bit) in [
        (t.fin(), flags::FIN),
        (t.syn(), flags::SYN),
        (t.rst(), flags::RST),
        (t.psh(), flags::PSH),
        (t.ack(), flags::ACK),
        (t.urg(), flags::URG),
    ] {
        if set {
            fl |= bit;
        }
    }
    Some(TcpSeg {
        src: SocketAddr::new(src, t.source_port()),
        dst: SocketAddr::new(dst, t.destination_port()),
        seq: t.sequence_number(),
        ack: t.acknowledgment_number(),
        flags: fl,
        win: t.window_size(),
        opts: render_tcp_options(t.options()),
        payload: t.payload().to_vec(),
    })
}

fn ip_addrs(net: &NetSlice<'_>) -> Option<(IpAddr, IpAddr)> {
    match net {
        NetSlice::Ipv4(v4) => Some((
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
        )),
        NetSlice::Ipv6(v6) => Some((
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
        )),
        NetSlice::Arp(_) => None,
    }
}

/// Least Ethernet frame without FCS (802.3).
const ETH_ZLEN: usize = 60;

/// A frame whose packet ends at `end`: anything after it is zero padding up
/// to [`ETH_ZLEN`] bytes, no more.
fn check_padding(frame: &[u8], end: usize) -> Result<(), String> {
    let Some(pad) = frame.get(end..) else {
        return Err(format!(
            "packet of {end} bytes in a frame of {}",
            frame.len()
        ));
    };
    if !pad.is_empty() && frame.len() != ETH_ZLEN {
        return Err(format!(
            "{} bytes after a packet of {end} bytes in a frame of {}",
            pad.len(),
            frame.len()
        ));
    }
    if pad.iter().any(|&b| b != 0) {
        return Err("padding not zero".into());
    }
    Ok(())
}

/// [`check_frame`] for a frame the core sent the guest: also no shorter
/// than 60 bytes (802.3; upstream pads since 2025).
pub fn check_core_frame(frame: &[u8], max_len: usize) -> Result<(), String> {
    if frame.len() < ETH_ZLEN {
        return Err(format!(
            "frame of {} bytes, under the 802.3 minimum of {ETH_ZLEN}",
            frame.len()
        ));
    }
    check_frame(frame, max_len)
}

/// Checks a frame: it must parse with etherparse at every
/// layer, with consistent lengths and valid checksums, no larger than
/// `max_len` bytes unless it carries a UDP datagram; bytes after the
/// packet only as zero padding to 60.
/// Returns what is wrong ([`check_core_frame`] also wants the padding).
pub fn check_frame(frame: &[u8], max_len: usize) -> Result<(), String> {
    let p = SlicedPacket::from_ethernet(frame).map_err(|e| format!("etherparse: {e}"))?;
    match p.link {
        Some(LinkSlice::Ethernet2(_)) => {}
        _ => return Err("no Ethernet II header".into()),
    }
    let Some(net) = p.net.as_ref() else {
        return Err("unknown ethertype".into());
    };
    let l3_len = frame.len() - 14;
    let (src, dst, payload) = match net {
        NetSlice::Arp(a) => {
            if a.slice().len() != 28 {
                return Err(format!("ARP of {} bytes", a.slice().len()));
            }
            return check_padding(frame, 14 + 28);
        }
        NetSlice::Ipv4(v4) => {
            let h = v4.header();
            check_padding(frame, 14 + usize::from(h.total_len()))?;
            if usize::from(h.total_len()) < ETH_ZLEN - 14 && l3_len == ETH_ZLEN - 14 {
                // Padded: the packet itself ends before the frame does.
            } else if usize::from(h.total_len()) != l3_len {
                return Err(format!(
                    "IPv4 total length {} but {} bytes follow the Ethernet header",
                    h.total_len(),
                    l3_len
                ));
            }
            if fold(sum16(h.slice(), 0)) != 0xffff {
                return Err("bad IPv4 header checksum".into());
            }
            (
                IpAddr::from(h.source_addr()),
                IpAddr::from(h.destination_addr()),
                v4.payload(),
            )
        }
        NetSlice::Ipv6(v6) => {
            let h = v6.header();
            if usize::from(h.payload_length()) + 40 != l3_len {
                return Err(format!(
                    "IPv6 payload length {} but {} bytes follow the IPv6 header",
                    h.payload_length(),
                    l3_len.saturating_sub(40)
                ));
            }
            (
                IpAddr::from(h.source_addr()),
                IpAddr::from(h.destination_addr()),
                v6.payload(),
            )
        }
    };
    if payload.fragmented {
        return Err("fragment".into());
    }
    let proto = payload.ip_number.0;
    // A host datagram goes to the guest whole, whatever the MTU (as
    // upstream): the MTU bounds what the guest sends, and a Linux tap or
    // virtio-net guest takes a longer frame. Everything else must fit.
    if frame.len() > max_len && proto != 17 {
        return Err(format!("frame of {} bytes exceeds {max_len}", frame.len()));
    }
    let l4 = payload.payload;
    match proto {
        6 | 17 | 58 => {
            if proto == 17 && src.is_ipv4() && l4.get(6..8) == Some(&[0, 0]) {
                // No checksum: legal for UDP over IPv4.
            } else if !l4_checksum_ok(src, dst, proto, l4) {
                return Err(format!("bad L4 checksum (protocol {proto})"));
            }
        }
        1 if fold(sum16(l4, 0)) != 0xffff => return Err("bad ICMP checksum".into()),
        _ => {}
    }
    if proto == 17 {
        let ulen = l4
            .get(4..6)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        if ulen != Some(l4.len()) {
            return Err(format!("UDP length {ulen:?} but {} bytes", l4.len()));
        }
    }
    if p.transport.is_none() && matches!(proto, 6 | 17 | 1 | 58) {
        return Err(format!(
            "transport header (protocol {proto}) does not parse"
        ));
    }
    Ok(())
}

/// Whether a guest frame is well-formed down to the transport layer, by the
/// same independent rules: the core must not drop such a frame as malformed.
pub fn well_formed(frame: &[u8]) -> bool {
    // Frames may carry padding after the IP packet (short frames): cut it.
    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        return false;
    };
    match &p.net {
        Some(NetSlice::Arp(_)) => true,
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let total = usize::from(h.total_len());
            !v4.payload().fragmented
                && frame.len() >= 14 + total
                && h.ihl() >= 5
                && transport_ok(&p, v4.payload().ip_number.0)
        }
        Some(NetSlice::Ipv6(v6)) => {
            let plen = usize::from(v6.header().payload_length());
            !v6.payload().fragmented
                && plen > 0
                && frame.len() >= 54 + plen
                && transport_ok(&p, v6.payload().ip_number.0)
        }
        None => false,
    }
}

fn transport_ok(p: &SlicedPacket<'_>, proto: u8) -> bool {
    match proto {
        6 | 17 | 1 | 58 => p.transport.is_some(),
        _ => true,
    }
}

// --- summaries --------------------------------------------------------------

/// Tracks the initial sequence number of each direction of each TCP flow, so
/// that summaries show relative numbers (as packetdrill does).
#[derive(Default, Debug, Clone)]
pub struct SeqTracker {
    isn: BTreeMap<(SocketAddr, SocketAddr), u32>,
}

impl SeqTracker {
    /// Sequence number `seq` of direction `src → dst`, relative to its ISN.
    /// A SYN (re)defines the ISN; otherwise the first number seen does.
    pub fn rel_seq(&mut self, src: SocketAddr, dst: SocketAddr, seq: u32, syn: bool) -> u32 {
        let e = self.isn.entry((src, dst)).or_insert(seq);
        if syn {
            *e = seq;
        }
        seq.wrapping_sub(*e)
    }

    /// The initial sequence number of direction `src → dst`, if seen.
    pub fn isn(&self, src: SocketAddr, dst: SocketAddr) -> Option<u32> {
        self.isn.get(&(src, dst)).copied()
    }

    /// Acknowledgement number `ack` sent by `src` to `dst`, relative to the ISN
    /// of the other direction (absolute if unknown).
    pub fn rel_ack(&self, src: SocketAddr, dst: SocketAddr, ack: u32) -> u32 {
        match self.isn.get(&(dst, src)) {
            Some(i) => ack.wrapping_sub(*i),
            None => ack,
        }
    }
}

/// The flags of a segment in packetdrill notation (`S.`, `F.`, `R`, `P.`).
pub fn flag_str(f: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (flags::SYN, 'S'),
        (flags::FIN, 'F'),
        (flags::RST, 'R'),
        (flags::PSH, 'P'),
        (flags::URG, 'U'),
    ] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    if f & flags::ACK != 0 {
        s.push('.');
    }
    if s.is_empty() {
        s.push('-');
    }
    s
}

fn mac_str(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn sa(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// A one-line summary of a frame. `tcp` makes TCP numbers relative.
pub fn summarize(frame: &[u8], tcp: &mut SeqTracker) -> String {
    let p = match SlicedPacket::from_ethernet(frame) {
        Ok(p) => p,
        Err(e) => return format!("malformed ({e}) len {}", frame.len()),
    };
    let mut s = match &p.net {
        None => {
            let et = frame
                .get(12..14)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            return format!("ethertype 0x{et:04x} len {}", frame.len());
        }
        Some(NetSlice::Arp(a)) => return arp_summary(a.slice()),
        Some(net) => {
            let Some((src, dst)) = ip_addrs(net) else {
                return "?".into();
            };
            match &p.transport {
                Some(TransportSlice::Tcp(_)) => match parse_tcp(frame) {
                    Some(t) => tcp_summary(&t, tcp),
                    None => "TCP ?".into(),
                },
                Some(TransportSlice::Udp(u)) => {
                    let mut s = format!(
                        "UDP {} > {} len {}",
                        sa(src, u.source_port()),
                        sa(dst, u.destination_port()),
                        u.payload().len()
                    );
                    s.push_str(&udp_app(u.source_port(), u.destination_port(), u.payload()));
                    s
                }
                Some(TransportSlice::Icmpv4(i)) => {
                    let b = i.bytes5to8();
                    let what = match i.type_u8() {
                        0 => "echo-reply",
                        8 => "echo-request",
                        3 => "unreachable",
                        11 => "time-exceeded",
                        _ => "type",
                    };
                    format!(
                        "ICMP {src} > {dst} {what} id {} seq {} len {}",
                        u16::from_be_bytes([b[0], b[1]]),
                        u16::from_be_bytes([b[2], b[3]]),
                        i.payload().len()
                    )
                }
                Some(TransportSlice::Icmpv6(i)) => icmp6_summary(src, dst, i.slice()),
                Some(TransportSlice::Igmp(_)) => format!("IGMP {src} > {dst}"),
                None => format!("IP {src} > {dst} proto {}", ip_proto(net)),
            }
        }
    };
    if let Err(e) = check_frame(frame, usize::MAX) {
        let _ = write!(s, " [invalid: {e}]");
    }
    s
}

fn ip_proto(net: &NetSlice<'_>) -> u8 {
    match net {
        NetSlice::Ipv4(v) => v.payload().ip_number.0,
        NetSlice::Ipv6(v) => v.payload().ip_number.0,
        NetSlice::Arp(_) => 0,
    }
}

fn arp_summary(a: &[u8]) -> String {
    if a.len() < 28 {
        return format!("ARP malformed len {}", a.len());
    }
    let op = u16::from_be_bytes([a[6], a[7]]);
    let sha = mac_str(&a[8..14]);
    let spa = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
    let tpa = Ipv4Addr::new(a[24], a[25], a[26], a[27]);
    match op {
        1 => format!("ARP who-has {tpa} tell {spa}"),
        2 => format!("ARP reply {spa} is-at {sha}"),
        o => format!("ARP op {o}"),
    }
}

fn tcp_summary(t: &TcpSeg, tr: &mut SeqTracker) -> String {
    let rel = tr.rel_seq(t.src, t.dst, t.seq, t.flags & flags::SYN != 0);
    let len = t.payload.len() as u32;
    let mut s = format!(
        "TCP {} > {} {} {}:{}({})",
        sa(t.src.ip(), t.src.port()),
        sa(t.dst.ip(), t.dst.port()),
        flag_str(t.flags),
        rel,
        rel.wrapping_add(len),
        len
    );
    if t.flags & flags::ACK != 0 {
        let _ = write!(s, " ack {}", tr.rel_ack(t.src, t.dst, t.ack));
    }
    let _ = write!(s, " win {}", t.win);
    if !t.opts.is_empty() {
        let _ = write!(s, " <{}>", t.opts);
    }
    s
}

fn udp_app(sport: u16, dport: u16, pl: &[u8]) -> String {
    if (dport == 67 || dport == 68) && (sport == 67 || sport == 68) {
        // BOOTP: walk the options for the message type.
        let xid = pl
            .get(4..8)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let mut i = 240;
        let mut ty = None;
        while let Some(&code) = pl.get(i) {
            match code {
                0 => i += 1,
                255 => break,
                _ => {
                    let Some(&l) = pl.get(i + 1) else { break };
                    if code == 53 {
                        ty = pl.get(i + 2).copied();
                    }
                    i += 2 + usize::from(l);
                }
            }
        }
        let yiaddr = pl
            .get(16..20)
            .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let name = ty
            .and_then(|t| DHCP_NAMES.get(usize::from(t)).copied())
            .unwrap_or("BOOTP");
        let mut s = format!(" DHCP {name} xid 0x{xid:08x}");
        if !yiaddr.is_unspecified() {
            let _ = write!(s, " yiaddr {yiaddr}");
        }
        return s;
    }
    if (dport == 546 || dport == 547) && (sport == 546 || sport == 547) {
        let ty = pl.first().copied().unwrap_or(0);
        let name = DHCPV6_NAMES.get(usize::from(ty)).copied().unwrap_or("?");
        let xid = pl
            .get(1..4)
            .map_or(0, |b| u32::from_be_bytes([0, b[0], b[1], b[2]]));
        return format!(" DHCPv6 {name} xid 0x{xid:06x}");
    }
    if dport == 53 || sport == 53 {
        return " DNS".into();
    }
    String::new()
}

fn icmp6_summary(src: IpAddr, dst: IpAddr, m: &[u8]) -> String {
    let ty = m.first().copied().unwrap_or(0);
    let target = || {
        m.get(8..24)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Ipv6Addr::from)
            .map_or("?".to_string(), |a| a.to_string())
    };
    let what = match ty {
        1 => "unreachable".to_string(),
        128 | 129 => {
            let f = |i: usize| {
                m.get(i..i + 2)
                    .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
            };
            format!(
                "{} id {} seq {} len {}",
                if ty == 128 {
                    "echo-request"
                } else {
                    "echo-reply"
                },
                f(4),
                f(6),
                m.len().saturating_sub(8)
            )
        }
        130..=132 | 143 => "mld".to_string(),
        133 => "router-solicitation".to_string(),
        134 => {
            let mut s = "router-advertisement".to_string();
            // Prefix information options.
            let mut i = 16;
            while let (Some(&t), Some(&l)) = (m.get(i), m.get(i + 1)) {
                if l == 0 {
                    break;
                }
                if t == 3 {
                    if let Some(b) = m
                        .get(i + 16..i + 32)
                        .and_then(|b| <[u8; 16]>::try_from(b).ok())
                    {
                        let _ = write!(
                            s,
                            " prefix {}/{}",
                            Ipv6Addr::from(b),
                            m.get(i + 2).copied().unwrap_or(0)
                        );
                    }
                }
                if t == 5 {
                    if let Some(b) = m.get(i + 4..i + 8) {
                        let _ = write!(s, " mtu {}", u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                    }
                }
                i += usize::from(l) * 8;
            }
            s
        }
        135 => format!("neighbor-solicitation who-has {}", target()),
        136 => {
            format!("neighbor-advertisement {} is-at", target())
                + &m.get(24..)
                    .and_then(|o| (o.first() == Some(&2)).then(|| o.get(2..8)).flatten())
                    .map(|mac| format!(" {}", mac_str(mac)))
                    .unwrap_or_default()
        }
        t => format!("type {t}"),
    };
    format!("ICMPv6 {src} > {dst} {what}")
}

// --- offloads ---------------------------------------------------------------

/// What a link with offloads does with a frame the core gave it with
/// `meta`, as the kernel does with a frame written to a tap with virtio-net
/// headers: checks the metadata against the frame (the checksum field must
/// hold the pseudo-header sum at the TCP header; a GSO frame's headers and
/// family must match), then completes the checksum and, for a GSO frame,
/// splits it into segments of `gso.size` bytes (sequence numbers moved on,
/// PSH and FIN on the last only, lengths and checksums rewritten). A frame
/// without metadata is returned as it is. `Err` names what was wrong.
pub fn finish_offloaded(
    frame: &[u8],
    meta: &passt_core::FrameMeta,
) -> Result<Vec<Vec<u8>>, String> {
    use passt_core::{Csum, GsoKind};
    let (start, offset) = match meta.csum {
        Csum::Complete | Csum::Valid if meta.gso.is_none() => return Ok(vec![frame.to_vec()]),
        Csum::Partial { start, offset } => (usize::from(start), usize::from(offset)),
        _ => return Err(format!("GSO without a partial checksum: {meta:?}")),
    };
    let (v6, l4_off, ip_end) = match frame.get(12..14) {
        Some([0x08, 0x00]) => {
            let ihl = usize::from(frame.get(14).map_or(0, |b| b & 0x0f)) * 4;
            let total = frame
                .get(16..18)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            (false, 14 + ihl, 14 + usize::from(total))
        }
        Some([0x86, 0xdd]) => {
            let plen = frame
                .get(18..20)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            (true, 54, 54 + usize::from(plen))
        }
        _ => return Err("offload metadata on a frame that is not IP".into()),
    };
    if ip_end > frame.len() || frame.get(if v6 { 20 } else { 23 }) != Some(&6) {
        return Err("offload metadata on a frame that is not TCP, or truncated".into());
    }
    if start != l4_off || offset != 16 {
        return Err(format!(
            "checksum at {start}+{offset}, TCP header at {l4_off}"
        ));
    }
    let Some(t) = parse_tcp(frame) else {
        return Err("TCP segment does not parse".into());
    };
    let (src, dst) = (t.src.ip(), t.dst.ip());
    let l4 = &frame[l4_off..ip_end];
    let seed = u16::from_be_bytes([l4[16], l4[17]]);
    let want = fold(pseudo_sum(src, dst, 6, l4.len()));
    if seed != want {
        return Err(format!(
            "partial checksum {seed:#06x}, pseudo-header sum {want:#06x}"
        ));
    }
    let doff = usize::from(l4[12] >> 4) * 4;
    let payload = &l4[doff..];
    let (size, hdr_len) = match meta.gso {
        None => (payload.len().max(1), l4_off + doff),
        Some(g) => {
            let kind = if v6 { GsoKind::Tcp6 } else { GsoKind::Tcp4 };
            if g.kind != kind || usize::from(g.hdr_len) != l4_off + doff || g.size == 0 {
                return Err(format!(
                    "GSO metadata {g:?} for a frame with {} bytes of headers",
                    l4_off + doff
                ));
            }
            if payload.len() <= usize::from(g.size) {
                return Err(format!(
                    "GSO frame of {} bytes, segments of {}",
                    payload.len(),
                    g.size
                ));
            }
            (usize::from(g.size), usize::from(g.hdr_len))
        }
    };
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![payload]
    } else {
        payload.chunks(size).collect()
    };
    let n = chunks.len();
    let mut out = Vec::with_capacity(n);
    let mut seq = t.seq;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut f = Vec::with_capacity(hdr_len + chunk.len());
        f.extend_from_slice(&frame[..hdr_len]);
        f.extend_from_slice(chunk);
        let l4_len = f.len() - l4_off;
        if v6 {
            f[18..20].copy_from_slice(&(l4_len as u16).to_be_bytes());
        } else {
            f[16..18].copy_from_slice(&((l4_len + l4_off - 14) as u16).to_be_bytes());
            f[24..26].fill(0);
            let c = !fold(sum16(&f[14..l4_off], 0));
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        let l4 = &mut f[l4_off..];
        l4[4..8].copy_from_slice(&seq.to_be_bytes());
        if i + 1 < n {
            l4[13] &= !(flags::PSH | flags::FIN);
        }
        fill_l4_checksum(src, dst, 6, l4, 16);
        seq = seq.wrapping_add(chunk.len() as u32);
        // Short frames padded as the core pads its own.
        if f.len() < 60 {
            f.resize(60, 0);
        }
        out.push(f);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn built_frames_check_out() {
        let t = tcp_frame(
            GUEST_MAC,
            BROADCAST,
            v4("10.77.0.2:40000"),
            v4("192.0.2.1:80"),
            1000,
            0,
            flags::SYN,
            65535,
            &tcp_options("mss 1460,sackOK,nop,wscale 7").unwrap(),
            b"",
        );
        check_frame(&t, 65535).unwrap();
        assert!(well_formed(&t));
        let mut tr = SeqTracker::default();
        assert_eq!(
            summarize(&t, &mut tr),
            "TCP 10.77.0.2:40000 > 192.0.2.1:80 S 0:0(0) win 65535 <mss 1460,sackOK,nop,wscale 7>"
        );
        let seg = parse_tcp(&t).unwrap();
        assert_eq!(seg.seq_len(), 1);
        let u = udp_frame(
            GUEST_MAC,
            BROADCAST,
            v4("10.77.0.2:5000"),
            v4("10.77.0.1:53"),
            b"hi",
        );
        check_frame(&u, 65535).unwrap();
        for f in [
            arp_request(
                GUEST_MAC,
                Ipv4Addr::new(10, 77, 0, 2),
                Ipv4Addr::new(10, 77, 0, 1),
            ),
            dhcp_client(GUEST_MAC, 1, 7, None),
            dhcpv6_client(GUEST_MAC, 1, 7, None),
            ndp_rs(GUEST_MAC),
            ndp_ns(GUEST_MAC, Ipv6Addr::UNSPECIFIED, "fd77::2".parse().unwrap()),
            echo_request(
                GUEST_MAC,
                BROADCAST,
                "10.77.0.2".parse().unwrap(),
                "10.77.0.1".parse().unwrap(),
                1,
                1,
                56,
            ),
            echo_request(
                GUEST_MAC,
                BROADCAST,
                "fd77::2".parse().unwrap(),
                "fd77::1".parse().unwrap(),
                1,
                1,
                56,
            ),
        ] {
            check_frame(&f, 65535).unwrap();
            assert!(well_formed(&f));
        }
        assert!(summarize(&dhcp_client(GUEST_MAC, 1, 7, None), &mut tr)
            .contains("DHCP DISCOVER xid 0x00000007"));
        assert!(summarize(&ndp_rs(GUEST_MAC), &mut tr).contains("router-solicitation"));
    }

    #[test]
    fn damage_is_caught() {
        let mut f = udp_frame(
            GUEST_MAC,
            BROADCAST,
            v4("10.77.0.2:5000"),
            v4("10.77.0.1:53"),
            b"hello",
        );
        let last = f.len() - 1;
        f[last] ^= 1;
        assert!(check_frame(&f, 65535).unwrap_err().contains("checksum"));
        f[last] ^= 1;
        f.pop();
        assert!(check_frame(&f, 65535).is_err());
        assert!(!well_formed(&f));
        let f = arp_request(
            GUEST_MAC,
            Ipv4Addr::new(10, 77, 0, 2),
            Ipv4Addr::new(10, 77, 0, 1),
        );
        assert!(check_frame(&f, 20).is_err());
        assert!(!well_formed(&f[..20]));
        assert!(summarize(&f[..10], &mut SeqTracker::default()).starts_with("malformed"));
    }

    #[test]
    fn ack_rewrite_keeps_the_frame_valid() {
        for (a, b) in [
            ("10.77.0.2:40000", "10.77.0.1:80"),
            ("[fd77::2]:40000", "[fd77::1]:80"),
        ] {
            let mut f = tcp_frame(
                GUEST_MAC,
                BROADCAST,
                v4(a),
                v4(b),
                5,
                7,
                flags::ACK,
                100,
                &[],
                b"data",
            );
            assert!(set_tcp_ack(&mut f, 0xdead_beef));
            check_frame(&f, 65535).unwrap();
            let t = parse_tcp(&f).unwrap();
            assert_eq!(
                (t.ack, t.seq, t.payload.as_slice()),
                (0xdead_beef, 5, &b"data"[..])
            );
        }
        let mut arp = arp_request(
            GUEST_MAC,
            Ipv4Addr::new(1, 2, 3, 4),
            Ipv4Addr::new(1, 2, 3, 5),
        );
        assert!(!set_tcp_ack(&mut arp, 1));
        let mut tr = SeqTracker::default();
        tr.rel_seq(v4("1.1.1.1:1"), v4("2.2.2.2:2"), 77, true);
        assert_eq!(tr.isn(v4("1.1.1.1:1"), v4("2.2.2.2:2")), Some(77));
        assert_eq!(tr.isn(v4("2.2.2.2:2"), v4("1.1.1.1:1")), None);
    }

    #[test]
    fn relative_numbers() {
        let mut tr = SeqTracker::default();
        let a = v4("10.0.0.1:1");
        let b = v4("10.0.0.2:2");
        assert_eq!(tr.rel_seq(a, b, 5000, true), 0);
        assert_eq!(tr.rel_seq(b, a, 9, true), 0);
        assert_eq!(tr.rel_seq(a, b, 5001, false), 1);
        assert_eq!(tr.rel_ack(b, a, 5011), 11);
        assert_eq!(flag_str(flags::SYN | flags::ACK), "S.");
        assert_eq!(flag_str(flags::RST), "R");
        assert_eq!(tcp_options("mss 1460").unwrap(), vec![2, 4, 5, 180]);
        assert!(tcp_options("bogus").is_err());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Built TCP segments parse back to the same fields, with valid
        /// checksums, for both families.
        #[test]
        fn tcp_build_parse_round_trip(
            v6 in any::<bool>(), sp in 1u16.., dp in 1u16.., seq in any::<u32>(), ack in any::<u32>(),
            fl in 0u8..0x40, win in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..300),
            mss in proptest::option::of(any::<u16>()),
        ) {
            let (a, b): (IpAddr, IpAddr) = if v6 {
                ("fd77::2".parse().unwrap(), "2001:db8::1".parse().unwrap())
            } else {
                ("10.77.0.2".parse().unwrap(), "192.0.2.1".parse().unwrap())
            };
            let opts = mss.map(|m| tcp_options(&format!("mss {m}")).unwrap()).unwrap_or_default();
            let f = tcp_frame(GUEST_MAC, BROADCAST, SocketAddr::new(a, sp), SocketAddr::new(b, dp), seq, ack, fl, win, &opts, &payload);
            prop_assert!(check_frame(&f, 65535).is_ok());
            prop_assert!(well_formed(&f));
            let t = parse_tcp(&f).unwrap();
            prop_assert_eq!((t.src, t.dst, t.seq, t.ack, t.flags, t.win), (SocketAddr::new(a, sp), SocketAddr::new(b, dp), seq, ack, fl, win));
            prop_assert_eq!(t.payload, payload);
            if let Some(m) = mss {
                prop_assert_eq!(t.opts, format!("mss {m}"));
            }
        }

        /// Summaries and checks of arbitrary bytes never panic, and damaging a
        /// valid UDP frame's payload is always caught.
        #[test]
        fn arbitrary_frames_are_handled(bytes in proptest::collection::vec(any::<u8>(), 0..200), flip in 0usize..64) {
            let _ = summarize(&bytes, &mut SeqTracker::default());
            let _ = check_frame(&bytes, 65535);
            let _ = well_formed(&bytes);
            let _ = parse_tcp(&bytes);
            let mut f = udp_frame(GUEST_MAC, BROADCAST, "10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap(), &[7u8; 64]);
            let i = f.len() - 64 + flip;
            f[i] ^= 0x10;
            prop_assert!(check_frame(&f, 65535).is_err());
        }
    }
}

#[cfg(test)]
mod offload_tests {
    use super::*;
    use passt_core::{Csum, FrameMeta, Gso, GsoKind};

    /// A 3000-byte segment with the pseudo-header sum in its checksum
    /// field, as the core writes it for a link with offloads.
    fn partial(v6: bool) -> (Vec<u8>, usize) {
        let (src, dst): (SocketAddr, SocketAddr) = if v6 {
            (
                "[fd77::1]:80".parse().unwrap(),
                "[fd77::2]:4000".parse().unwrap(),
            )
        } else {
            (
                "10.77.0.1:80".parse().unwrap(),
                "10.77.0.2:4000".parse().unwrap(),
            )
        };
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 13) as u8).collect();
        let mut f = tcp_frame(
            [2; 6],
            [4; 6],
            src,
            dst,
            1000,
            7,
            flags::ACK | flags::PSH,
            100,
            &[],
            &payload,
        );
        let l4_off = if v6 { 54 } else { 34 };
        let seed = fold(pseudo_sum(src.ip(), dst.ip(), 6, f.len() - l4_off));
        f[l4_off + 16..l4_off + 18].copy_from_slice(&seed.to_be_bytes());
        (f, l4_off)
    }

    #[test]
    fn gso_frames_are_checked_completed_and_split() {
        for v6 in [false, true] {
            let (f, l4_off) = partial(v6);
            let meta = FrameMeta {
                csum: Csum::Partial {
                    start: l4_off as u16,
                    offset: 16,
                },
                gso: Some(Gso {
                    kind: if v6 { GsoKind::Tcp6 } else { GsoKind::Tcp4 },
                    size: 1400,
                    hdr_len: (l4_off + 20) as u16,
                    ecn: false,
                }),
            };
            let segs = finish_offloaded(&f, &meta).unwrap();
            assert_eq!(segs.len(), 3);
            let mut seq = 1000u32;
            for (i, s) in segs.iter().enumerate() {
                check_frame(s, 1514).unwrap();
                let t = parse_tcp(s).unwrap();
                assert_eq!(t.seq, seq);
                assert_eq!(t.flags & flags::PSH != 0, i == 2, "PSH on the last only");
                seq += t.payload.len() as u32;
            }
            assert_eq!(seq, 4000);
            // Without GSO, the checksum is only completed.
            let one = finish_offloaded(&f, &FrameMeta { gso: None, ..meta }).unwrap();
            assert_eq!(one.len(), 1);
            check_frame(&one[0], 65535).unwrap();
            // A wrong seed, wrong headers or family, a frame no larger than
            // a segment: refused.
            let mut bad = f.clone();
            bad[l4_off + 17] ^= 1;
            assert!(finish_offloaded(&bad, &meta).is_err());
            let g = meta.gso.unwrap();
            for g in [
                Gso {
                    hdr_len: g.hdr_len + 4,
                    ..g
                },
                Gso {
                    kind: if v6 { GsoKind::Tcp4 } else { GsoKind::Tcp6 },
                    ..g
                },
                Gso { size: 3000, ..g },
            ] {
                assert!(
                    finish_offloaded(
                        &f,
                        &FrameMeta {
                            gso: Some(g),
                            ..meta
                        }
                    )
                    .is_err(),
                    "{g:?}"
                );
            }
            let at = FrameMeta {
                csum: Csum::Partial {
                    start: 14,
                    offset: 16,
                },
                ..meta
            };
            assert!(finish_offloaded(&f, &at).is_err());
        }
    }
}
