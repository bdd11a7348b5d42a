//! Headers of captured frames, read leniently: captures taken with a small
//! snapshot length (`tcpdump -s 96`) hold the headers but not the payload,
//! so lengths come from the IP header, not from the bytes at hand
//! (etherparse's lax slicing).

use etherparse::{
    IcmpEchoHeader, Icmpv4Type, Icmpv6Type, LaxNetSlice, LaxSlicedPacket, LinkSlice,
    TcpOptionElement, TransportSlice,
};
use std::net::{IpAddr, SocketAddr};

/// TCP flag bits (as in [`crate::frame::flags`]).
pub use crate::frame::flags;

/// What a TCP header says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpHdr {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flag bits.
    pub flags: u8,
    /// Window field, unscaled.
    pub win: u16,
    /// Payload length (from the IP header).
    pub len: u32,
    /// Handshake options.
    pub opts: SynOpts,
}

/// The options a SYN announces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynOpts {
    /// MSS option.
    pub mss: Option<u16>,
    /// Window scale option.
    pub wscale: Option<u8>,
    /// SACK permitted.
    pub sack_ok: bool,
}

impl TcpHdr {
    /// Sequence space taken: payload, SYN and FIN.
    pub fn seq_len(&self) -> u32 {
        self.len + u32::from(self.flags & flags::SYN != 0) + u32::from(self.flags & flags::FIN != 0)
    }

    /// Whether a flag is set.
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// The transport part of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// A TCP segment.
    Tcp(TcpHdr),
    /// A UDP datagram of `len` payload bytes.
    Udp {
        /// Payload length.
        len: u32,
    },
    /// An ICMP or ICMPv6 echo request or reply.
    Echo {
        /// Request (true) or reply.
        request: bool,
        /// Identifier.
        id: u16,
        /// Sequence number.
        seq: u16,
        /// Data length after the 8-byte header.
        len: u32,
    },
    /// Anything else (ARP, NDP, other ICMP, ...).
    Other,
}

/// One captured frame, headers only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pkt {
    /// Time since the start of the capture (ns).
    pub t: u64,
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source address and port (port 0 for ICMP and non-IP frames).
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Transport.
    pub l4: L4,
}

impl Pkt {
    /// The TCP header, if a TCP segment.
    pub fn tcp(&self) -> Option<&TcpHdr> {
        match &self.l4 {
            L4::Tcp(t) => Some(t),
            _ => None,
        }
    }
}

/// Reads the headers of an Ethernet frame captured at time `t` (ns). Frames
/// without an IP header come back as [`L4::Other`] with unspecified
/// addresses; frames too short for an Ethernet header give `None`.
pub fn parse(t: u64, frame: &[u8]) -> Option<Pkt> {
    let p = LaxSlicedPacket::from_ethernet(frame).ok()?;
    let (src_mac, dst_mac) = match &p.link {
        Some(LinkSlice::Ethernet2(e)) => (e.source(), e.destination()),
        _ => return None,
    };
    let unspec = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);
    let mut pkt = Pkt {
        t,
        src_mac,
        dst_mac,
        src: unspec,
        dst: unspec,
        l4: L4::Other,
    };
    // Addresses and the full length of the IP payload, as the header says.
    let (src, dst, ip_payload) = match &p.net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let hl = usize::from(h.ihl()) * 4;
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                usize::from(h.total_len()).saturating_sub(hl),
            )
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let h = v6.header();
            let ext = v6.extensions().slice().len();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                usize::from(h.payload_length()).saturating_sub(ext),
            )
        }
        _ => return Some(pkt),
    };
    pkt.src = SocketAddr::new(src, 0);
    pkt.dst = SocketAddr::new(dst, 0);
    let echo = |request: bool, e: IcmpEchoHeader| L4::Echo {
        request,
        id: e.id,
        seq: e.seq,
        len: ip_payload.saturating_sub(8) as u32,
    };
    pkt.l4 = match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            pkt.src.set_port(t.source_port());
            pkt.dst.set_port(t.destination_port());
            let hlen = usize::from(t.data_offset()) * 4;
            let mut h = TcpHdr {
                seq: t.sequence_number(),
                ack: t.acknowledgment_number(),
                win: t.window_size(),
                len: ip_payload.saturating_sub(hlen) as u32,
                flags: crate::frame::tcp_flag_bits(t),
                ..TcpHdr::default()
            };
            for o in t.options_iterator().flatten() {
                match o {
                    TcpOptionElement::MaximumSegmentSize(m) => h.opts.mss = Some(m),
                    TcpOptionElement::WindowScale(s) => h.opts.wscale = Some(s.min(14)),
                    TcpOptionElement::SelectiveAcknowledgementPermitted => h.opts.sack_ok = true,
                    _ => {}
                }
            }
            L4::Tcp(h)
        }
        Some(TransportSlice::Udp(u)) => {
            pkt.src.set_port(u.source_port());
            pkt.dst.set_port(u.destination_port());
            L4::Udp {
                len: ip_payload.saturating_sub(8) as u32,
            }
        }
        Some(TransportSlice::Icmpv4(i)) => match i.icmp_type() {
            Icmpv4Type::EchoRequest(e) => echo(true, e),
            Icmpv4Type::EchoReply(e) => echo(false, e),
            _ => L4::Other,
        },
        Some(TransportSlice::Icmpv6(i)) => match i.icmp_type() {
            Icmpv6Type::EchoRequest(e) => echo(true, e),
            Icmpv6Type::EchoReply(e) => echo(false, e),
            _ => L4::Other,
        },
        _ => L4::Other,
    };
    Some(pkt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{tcp_frame, tcp_options, GUEST_MAC};

    #[test]
    fn headers_of_a_truncated_segment() {
        let a: SocketAddr = "10.77.0.2:34034".parse().unwrap();
        let b: SocketAddr = "10.77.0.1:5201".parse().unwrap();
        let opts = tcp_options("mss 65480,sackOK,nop,wscale 10").unwrap();
        let f = tcp_frame(
            GUEST_MAC,
            [1; 6],
            a,
            b,
            7,
            9,
            flags::SYN | flags::ACK,
            64,
            &opts,
            &[5; 1000],
        );
        let cut = &f[..96];
        let p = parse(3, cut).unwrap();
        assert_eq!((p.src, p.dst, p.t), (a, b, 3));
        let t = p.tcp().unwrap();
        assert_eq!(t.len, 1000, "length from the IP header");
        assert_eq!((t.seq, t.ack, t.win), (7, 9, 64));
        assert_eq!(
            (t.opts.mss, t.opts.wscale, t.opts.sack_ok),
            (Some(65480), Some(10), true)
        );
        assert_eq!(t.seq_len(), 1001);
        assert!(parse(0, &f[..10]).is_none());
        let arp =
            crate::frame::arp_request(GUEST_MAC, [10, 77, 0, 2].into(), [10, 77, 0, 1].into());
        assert_eq!(parse(0, &arp).unwrap().l4, L4::Other);
    }
}
