//! Building guest frames for scenarios.

use super::*;

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
    let mut l4 = tcp_header((src.port(), dst.port()), seq, ack, flags, win, opts);
    l4.extend_from_slice(payload);
    ip_frame(src_mac, dst_mac, src.ip(), dst.ip(), 6, l4, Some(16))
}

/// A TCP header with options `opts` and a zero checksum.
pub fn tcp_header(
    (sport, dport): (u16, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    opts: &[u8],
) -> Vec<u8> {
    let hlen = 20 + opts.len();
    let mut l4 = vec![0u8; hlen];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    l4[4..8].copy_from_slice(&seq.to_be_bytes());
    l4[8..12].copy_from_slice(&ack.to_be_bytes());
    l4[12] = ((hlen / 4) as u8) << 4;
    l4[13] = flags;
    l4[14..16].copy_from_slice(&win.to_be_bytes());
    l4[20..].copy_from_slice(opts);
    l4
}

/// A UDP datagram.
pub fn udp_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
) -> Vec<u8> {
    let len = (8 + payload.len()).min(0xffff) as u16;
    let mut l4 = [src.port(), dst.port(), len, 0]
        .map(u16::to_be_bytes)
        .concat();
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

pub(super) fn solicited_node(a: Ipv6Addr) -> (Ipv6Addr, MacAddr) {
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

pub(super) const DHCP_NAMES: [&str; 9] = [
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

pub(super) const DHCPV6_NAMES: [&str; 12] = [
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

pub(super) fn render_tcp_options(opts: &[u8]) -> String {
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
