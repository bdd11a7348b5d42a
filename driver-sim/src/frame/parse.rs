//! Parsing the core's frames and checking them with an independent parser.

use super::*;

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

/// The flags of a TCP header as [`flags`] bits.
pub fn tcp_flag_bits(t: &etherparse::TcpSlice<'_>) -> u8 {
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
    fl
}

/// Parses a TCP segment out of an Ethernet frame (no checks beyond parsing).
pub fn parse_tcp(frame: &[u8]) -> Option<TcpSeg> {
    let (src, dst, t) = tcp_slice(frame)?;
    let fl = tcp_flag_bits(&t);
    Some(TcpSeg {
        src,
        dst,
        seq: t.sequence_number(),
        ack: t.acknowledgment_number(),
        flags: fl,
        win: t.window_size(),
        opts: render_tcp_options(t.options()),
        payload: t.payload().to_vec(),
    })
}

/// The two ends (source, destination) of a TCP segment in an Ethernet
/// frame: [`parse_tcp`] without copying the options and payload.
pub fn tcp_ends(frame: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    tcp_slice(frame).map(|(src, dst, _)| (src, dst))
}

/// The ends of a TCP segment in an Ethernet frame, and the segment.
fn tcp_slice(frame: &[u8]) -> Option<(SocketAddr, SocketAddr, etherparse::TcpSlice<'_>)> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let (src, dst) = ip_addrs(p.net.as_ref()?)?;
    let Some(TransportSlice::Tcp(t)) = p.transport else {
        return None;
    };
    Some((
        SocketAddr::new(src, t.source_port()),
        SocketAddr::new(dst, t.destination_port()),
        t,
    ))
}

pub(super) fn ip_addrs(net: &NetSlice<'_>) -> Option<(IpAddr, IpAddr)> {
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
pub(super) const ETH_ZLEN: usize = 60;

/// A frame whose packet ends at `end`: anything after it is zero padding up
/// to [`ETH_ZLEN`] bytes, no more.
pub(super) fn check_padding(frame: &[u8], end: usize) -> Result<(), String> {
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
    let too_long = || format!("frame of {} bytes exceeds {max_len}", frame.len());
    let (src, dst, payload) = match net {
        NetSlice::Arp(a) => {
            if frame.len() > max_len {
                return Err(too_long());
            }
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
        return Err(too_long());
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

pub(super) fn transport_ok(p: &SlicedPacket<'_>, proto: u8) -> bool {
    match proto {
        6 | 17 | 1 | 58 => p.transport.is_some(),
        _ => true,
    }
}
