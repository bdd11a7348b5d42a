//! Independent checks of frames the core emits: parsed with etherparse (not the
//! core's own parser), lengths consistent, every checksum verified.

use etherparse::checksum::Sum16BitWords;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// Parses `frame` with etherparse and verifies the IPv4 header checksum and
/// the transport checksum (TCP, UDP, ICMP, ICMPv6). ARP frames are checked for
/// length only. A frame is at least 60 bytes (802.3): a shorter packet is
/// padded with zeros to exactly 60. Returns a description of the first problem.
pub fn validate(frame: &[u8]) -> Result<(), String> {
    if frame.len() < 60 {
        return Err(format!("frame of {} bytes, under 60", frame.len()));
    }
    // The packet's end by its own length; zero padding may follow, to 60.
    let padded = |end: usize| -> Result<(), String> {
        if end == frame.len() || (end < 60 && frame.len() == 60) {
            if frame[end..].iter().all(|&b| b == 0) {
                return Ok(());
            }
            return Err("padding not zero".into());
        }
        Err(format!(
            "a {end}-byte packet in a {}-byte frame",
            frame.len()
        ))
    };
    let pkt = SlicedPacket::from_ethernet(frame).map_err(|e| format!("etherparse: {e}"))?;
    let (src, dst, l4, proto) = match &pkt.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let end = usize::from(h.total_len()) + 14;
            padded(end).map_err(|e| format!("IPv4 total length {}: {e}", h.total_len()))?;
            let sum = Sum16BitWords::new().add_slice(h.slice()).ones_complement();
            if sum != 0 {
                return Err("bad IPv4 header checksum".into());
            }
            let pseudo = Sum16BitWords::new()
                .add_4bytes(h.source())
                .add_4bytes(h.destination());
            let l4 = &frame[14 + h.slice().len()..end];
            (pseudo, l4.len(), l4, h.protocol().0)
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            let end = usize::from(h.payload_length()) + 54;
            padded(end).map_err(|e| format!("IPv6 payload length {}: {e}", h.payload_length()))?;
            let pseudo = Sum16BitWords::new()
                .add_16bytes(h.source())
                .add_16bytes(h.destination());
            let l4 = ip.payload().payload;
            (pseudo, l4.len(), l4, ip.payload().ip_number.0)
        }
        Some(NetSlice::Arp(_)) => return padded(14 + 28),
        None => return Err("no network layer".into()),
    };
    let _ = dst;
    let with_pseudo = |mut sum: Sum16BitWords| {
        sum.add_4bytes((l4.len() as u32).to_be_bytes())
            .add_2bytes([0, proto])
            .add_slice(l4)
            .ones_complement()
    };
    match &pkt.transport {
        Some(TransportSlice::Udp(udp)) => {
            if udp.checksum() == 0 {
                return Err("UDP checksum missing".into());
            }
            if usize::from(udp.length()) != l4.len() {
                return Err("UDP length mismatch".into());
            }
            if with_pseudo(src) != 0 {
                return Err("bad UDP checksum".into());
            }
        }
        Some(TransportSlice::Tcp(_)) | Some(TransportSlice::Icmpv6(_)) => {
            if with_pseudo(src) != 0 {
                return Err(format!("bad checksum (protocol {proto})"));
            }
        }
        Some(TransportSlice::Icmpv4(_)) => {
            if Sum16BitWords::new().add_slice(l4).ones_complement() != 0 {
                return Err("bad ICMP checksum".into());
            }
        }
        _ => return Err(format!("unexpected transport (protocol {proto})")),
    }
    Ok(())
}

/// A stable multi-line description of a frame for snapshots: a summary line
/// from etherparse, then the bytes in hex, 16 per line.
pub fn describe(frame: &[u8]) -> String {
    let mut s = String::new();
    match SlicedPacket::from_ethernet(frame) {
        Ok(p) => {
            if let Some(etherparse::LinkSlice::Ethernet2(e)) = &p.link {
                let _ = write!(s, "{} > {} ", mac(e.source()), mac(e.destination()));
            }
            match &p.net {
                Some(NetSlice::Ipv4(ip)) => {
                    let _ = write!(
                        s,
                        "{} > {} ",
                        ip.header().source_addr(),
                        ip.header().destination_addr()
                    );
                }
                Some(NetSlice::Ipv6(ip)) => {
                    let _ = write!(
                        s,
                        "{} > {} ",
                        ip.header().source_addr(),
                        ip.header().destination_addr()
                    );
                }
                Some(NetSlice::Arp(a)) => {
                    let _ = write!(s, "ARP op {} ", a.operation().0);
                }
                None => {}
            }
            match &p.transport {
                Some(TransportSlice::Udp(u)) => {
                    let _ = write!(
                        s,
                        "UDP {} > {} len {}",
                        u.source_port(),
                        u.destination_port(),
                        u.payload().len()
                    );
                    match (u.source_port(), u.destination_port()) {
                        (67, 68) | (68, 67) => s.push_str(&dhcp_options(u.payload())),
                        (546, 547) | (547, 546) => s.push_str(&dhcpv6_options(u.payload())),
                        _ => {}
                    }
                }
                Some(TransportSlice::Tcp(t)) => {
                    let _ = write!(
                        s,
                        "TCP {} > {} len {}",
                        t.source_port(),
                        t.destination_port(),
                        t.payload().len()
                    );
                }
                Some(TransportSlice::Icmpv6(i)) => {
                    let _ = write!(s, "ICMPv6 type {} len {}", i.type_u8(), i.slice().len());
                    let body = i.slice();
                    let start = match i.type_u8() {
                        133 => Some(8),
                        134 => Some(16),
                        135 | 136 => Some(24),
                        _ => None,
                    };
                    if let Some(mut o) = start {
                        s.push_str(" options");
                        while let (Some(&t), Some(&l)) = (body.get(o), body.get(o + 1)) {
                            let _ = write!(s, " {t}/{}", usize::from(l) * 8);
                            if l == 0 {
                                break;
                            }
                            o += usize::from(l) * 8;
                        }
                    }
                }
                Some(TransportSlice::Icmpv4(i)) => {
                    let _ = write!(s, "ICMP type {} len {}", i.type_u8(), i.slice().len());
                }
                _ => {}
            }
        }
        Err(e) => {
            let _ = write!(s, "unparsed: {e}");
        }
    }
    s.push('\n');
    for chunk in frame.chunks(16) {
        for (i, b) in chunk.iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            let _ = write!(s, "{b:02x}");
        }
        s.push('\n');
    }
    s
}

/// " dhcp: 53=02 1=ffffff00 ..." for a BOOTP/DHCP message.
fn dhcp_options(m: &[u8]) -> String {
    let mut s = String::from("\n  bootp:");
    let Some(opts) = m.get(240..) else {
        return s + " truncated";
    };
    if let Some(h) = m.get(..240) {
        let _ = write!(
            s,
            " op {} xid {} flags {:04x} ciaddr {} yiaddr {} siaddr {} giaddr {}",
            h[0],
            hex(&h[4..8]),
            u16::from_be_bytes([h[10], h[11]]),
            Ipv4Addr::new(h[12], h[13], h[14], h[15]),
            Ipv4Addr::new(h[16], h[17], h[18], h[19]),
            Ipv4Addr::new(h[20], h[21], h[22], h[23]),
            Ipv4Addr::new(h[24], h[25], h[26], h[27]),
        );
    }
    s.push_str("\n  options:");
    let mut i = 0;
    while let Some(&code) = opts.get(i) {
        match code {
            0 => i += 1,
            255 => {
                s.push_str(" end");
                break;
            }
            _ => {
                let Some(&len) = opts.get(i + 1) else { break };
                let v = opts.get(i + 2..i + 2 + usize::from(len)).unwrap_or(&[]);
                let _ = write!(s, " {code}={}", hex(v));
                i += 2 + usize::from(len);
            }
        }
    }
    s
}

/// " dhcpv6: type 2 xid .. options 2 3 1" for a DHCPv6 message.
fn dhcpv6_options(m: &[u8]) -> String {
    let mut s = String::from("\n  dhcpv6:");
    let (Some(&ty), Some(xid)) = (m.first(), m.get(1..4)) else {
        return s + " truncated";
    };
    let _ = write!(s, " type {ty} xid {}\n  options:", hex(xid));
    let mut i = 4;
    while let (Some(c), Some(l)) = (m.get(i..i + 2), m.get(i + 2..i + 4)) {
        let code = u16::from_be_bytes([c[0], c[1]]);
        let len = usize::from(u16::from_be_bytes([l[0], l[1]]));
        let v = m.get(i + 4..i + 4 + len).unwrap_or(&[]);
        let _ = write!(s, " {code}={}", hex(v));
        i += 4 + len;
    }
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
