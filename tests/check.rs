//! Independent checks of frames the core emits: parsed with etherparse (not the
//! core's own parser), lengths consistent, every checksum verified.

use etherparse::checksum::Sum16BitWords;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use std::fmt::Write as _;

/// Parses `frame` with etherparse and verifies the IPv4 header checksum and
/// the transport checksum (TCP, UDP, ICMP, ICMPv6). ARP frames are checked for
/// length only. Returns a description of the first problem.
pub fn validate(frame: &[u8]) -> Result<(), String> {
    let pkt = SlicedPacket::from_ethernet(frame).map_err(|e| format!("etherparse: {e}"))?;
    let (src, dst, l4, proto) = match &pkt.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            if usize::from(h.total_len()) + 14 != frame.len() {
                return Err(format!(
                    "IPv4 total length {} in a {}-byte frame",
                    h.total_len(),
                    frame.len()
                ));
            }
            let sum = Sum16BitWords::new().add_slice(h.slice()).ones_complement();
            if sum != 0 {
                return Err("bad IPv4 header checksum".into());
            }
            let pseudo = Sum16BitWords::new()
                .add_4bytes(h.source())
                .add_4bytes(h.destination());
            let l4 = &frame[14 + h.slice().len()..];
            (pseudo, l4.len(), l4, h.protocol().0)
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            if usize::from(h.payload_length()) + 54 != frame.len() {
                return Err(format!(
                    "IPv6 payload length {} in a {}-byte frame",
                    h.payload_length(),
                    frame.len()
                ));
            }
            let pseudo = Sum16BitWords::new()
                .add_16bytes(h.source())
                .add_16bytes(h.destination());
            let l4 = ip.payload().payload;
            (pseudo, l4.len(), l4, ip.payload().ip_number.0)
        }
        Some(NetSlice::Arp(_)) => return Ok(()),
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

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
