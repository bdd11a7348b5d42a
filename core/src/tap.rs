//! Frames from the guest: batches, parsing, per-flow grouping.
//!
//! The driver reads as many frames as are ready into one buffer it owns and
//! describes them with [`FrameRef`]s. The core parses every frame once, answers
//! link services at once, and groups TCP and UDP segments by 4-tuple so that each
//! protocol handler sees all of a flow's segments of the batch together (one
//! `sendmsg` per flow per batch). Every access is bounds-checked; anything that
//! does not parse is dropped and counted with a [`DropReason`].

use crate::counters::DropReason;
use crate::offload::FrameMeta;
use crate::wire::headers::{
    ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETH_HLEN, IPV4_HLEN, IPV6_HLEN, PROTO_ICMP,
    PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};
use crate::wire::{be16, Mac};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where one frame lies in a batch buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FrameRef {
    /// Offset of the first byte of the Ethernet header.
    pub offset: u32,
    /// Length of the frame.
    pub len: u32,
}

/// A batch of frames from the guest, in a buffer the driver owns.
///
/// The buffer must stay untouched until every action produced by
/// [`Core::handle_tap_batch`](crate::Core::handle_tap_batch) has been carried
/// out: send actions refer to byte spans inside it.
#[derive(Clone, Copy, Debug)]
pub struct FrameBatch<'a> {
    buf: &'a [u8],
    frames: &'a [FrameRef],
    /// Bytes of virtio-net header in front of each frame (0: none).
    vnet: u8,
}

impl<'a> FrameBatch<'a> {
    /// A batch of `frames` inside `buf`. Descriptors are checked when used.
    pub fn new(buf: &'a [u8], frames: &'a [FrameRef]) -> Self {
        FrameBatch {
            buf,
            frames,
            vnet: 0,
        }
    }

    /// The same batch, with a virtio-net header of `hdr_len` bytes
    /// ([`VIRTIO_NET_HDR_LEN`](crate::VIRTIO_NET_HDR_LEN) or
    /// [`VIRTIO_NET_HDR_V1_LEN`](crate::VIRTIO_NET_HDR_V1_LEN)) at the start
    /// of each descriptor, in front of the Ethernet header: a tap device
    /// opened with `IFF_VNET_HDR`. [`FrameBatch::frame`] gives the frame
    /// past it, [`FrameBatch::meta`] what it says.
    pub fn with_virtio_hdr(self, hdr_len: usize) -> Self {
        FrameBatch {
            vnet: u8::try_from(hdr_len).unwrap_or(u8::MAX),
            ..self
        }
    }

    /// Bytes of virtio-net header in front of each frame.
    pub fn virtio_hdr_len(&self) -> usize {
        usize::from(self.vnet)
    }

    /// Number of frame descriptors.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the batch has no frames.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The bytes of frame `i` (past its virtio-net header, if the batch has
    /// them), if the descriptor lies inside the buffer and holds the header.
    pub fn frame(&self, i: usize) -> Option<&'a [u8]> {
        let whole = self.whole(i)?;
        whole.get(usize::from(self.vnet)..)
    }

    /// The offload metadata of frame `i`: [`FrameMeta::PLAIN`] in a batch
    /// without virtio-net headers; `None` if the descriptor is bad.
    pub fn meta(&self, i: usize) -> Option<Result<FrameMeta, DropReason>> {
        let whole = self.whole(i)?;
        let n = usize::from(self.vnet);
        if n == 0 {
            return Some(Ok(FrameMeta::PLAIN));
        }
        let (hdr, frame) = (whole.get(..n)?, whole.get(n..)?);
        Some(FrameMeta::parse_virtio(hdr, frame.len()))
    }

    /// Descriptor `i`'s bytes, header included.
    fn whole(&self, i: usize) -> Option<&'a [u8]> {
        let r = self.frames.get(i)?;
        let start = r.offset as usize;
        self.buf.get(start..start.checked_add(r.len as usize)?)
    }

    /// The whole batch buffer.
    pub fn buffer(&self) -> &'a [u8] {
        self.buf
    }
}

/// The Ethernet header of a guest frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EthHdr {
    pub(crate) dst: Mac,
    pub(crate) src: Mac,
    pub(crate) ethertype: u16,
}

/// The network layer of a parsed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IpHdr {
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    /// The L4 protocol (after IPv6 extension headers).
    pub(crate) proto: u8,
    /// TTL or hop limit.
    pub(crate) hop_limit: u8,
}

/// One parsed guest frame.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Parsed<'a> {
    /// An ARP packet (payload after the Ethernet header, unchecked).
    Arp(EthHdr, &'a [u8]),
    /// An IP packet; `l4` is the transport header and payload, cut to the IP length
    /// (so qemu's padding of short frames is ignored); `l4_off` its offset in the frame.
    Ip(EthHdr, IpHdr, &'a [u8], usize),
}

/// Parses one frame down to the transport layer.
pub(crate) fn parse(frame: &[u8]) -> Result<Parsed<'_>, DropReason> {
    if frame.len() < ETH_HLEN {
        return Err(DropReason::EthTruncated);
    }
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    dst.copy_from_slice(&frame[0..6]);
    src.copy_from_slice(&frame[6..12]);
    let eth = EthHdr {
        dst: Mac(dst),
        src: Mac(src),
        ethertype: be16(frame, 12).ok_or(DropReason::EthTruncated)?,
    };
    let l3 = &frame[ETH_HLEN..];
    match eth.ethertype {
        ETHERTYPE_ARP => Ok(Parsed::Arp(eth, l3)),
        ETHERTYPE_IPV4 => {
            let (ip, l4, off) = parse_ipv4(l3)?;
            Ok(Parsed::Ip(eth, ip, l4, ETH_HLEN + off))
        }
        ETHERTYPE_IPV6 => {
            let (ip, l4, off) = parse_ipv6(l3)?;
            Ok(Parsed::Ip(eth, ip, l4, ETH_HLEN + off))
        }
        _ => Err(DropReason::UnknownEthertype),
    }
}

fn parse_ipv4(b: &[u8]) -> Result<(IpHdr, &[u8], usize), DropReason> {
    if b.len() < IPV4_HLEN || b[0] >> 4 != 4 {
        return Err(DropReason::Ipv4BadHeader);
    }
    let ihl = usize::from(b[0] & 0x0f) * 4;
    if ihl < IPV4_HLEN || ihl > b.len() {
        return Err(DropReason::Ipv4BadHeader);
    }
    let total = usize::from(be16(b, 2).ok_or(DropReason::Ipv4BadLength)?);
    if total < ihl || total > b.len() {
        return Err(DropReason::Ipv4BadLength);
    }
    let frag = be16(b, 6).ok_or(DropReason::Ipv4BadHeader)?;
    if frag & 0x2000 != 0 || frag & 0x1fff != 0 {
        return Err(DropReason::Ipv4Fragment);
    }
    let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
    let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
    if src.is_loopback() || dst.is_loopback() {
        return Err(DropReason::Loopback);
    }
    let ip = IpHdr {
        src: src.into(),
        dst: dst.into(),
        proto: b[9],
        hop_limit: b[8],
    };
    Ok((ip, &b[ihl..total], ihl))
}

fn parse_ipv6(b: &[u8]) -> Result<(IpHdr, &[u8], usize), DropReason> {
    if b.len() < IPV6_HLEN || b[0] >> 4 != 6 {
        return Err(DropReason::Ipv6BadHeader);
    }
    let plen = usize::from(be16(b, 4).ok_or(DropReason::Ipv6BadHeader)?);
    let end = IPV6_HLEN + plen;
    if plen == 0 || end > b.len() {
        // A zero payload length means a jumbogram (hop-by-hop option): unsupported.
        return Err(DropReason::Ipv6BadLength);
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&b[8..24]);
    dst.copy_from_slice(&b[24..40]);
    let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
    if src.is_loopback() || dst.is_loopback() {
        return Err(DropReason::Loopback);
    }
    let mut next = b[6];
    let mut off = IPV6_HLEN;
    // Skip extension headers. At most a handful are legitimate; bound the walk.
    for _ in 0..16 {
        let hdr_len = match next {
            // Hop-by-hop, routing, destination options, mobility, HIP, shim6,
            // experimental: (len + 1) * 8.
            0 | 43 | 60 | 135 | 139 | 140 | 253 | 254 => {
                let l = *b.get(off + 1).ok_or(DropReason::Ipv6BadExtension)?;
                (usize::from(l) + 1) * 8
            }
            // Authentication header: (len + 2) * 4.
            51 => {
                let l = *b.get(off + 1).ok_or(DropReason::Ipv6BadExtension)?;
                (usize::from(l) + 2) * 4
            }
            44 => return Err(DropReason::Ipv6Fragment),
            59 => return Err(DropReason::Ipv6BadExtension),
            _ => {
                let ip = IpHdr {
                    src: src.into(),
                    dst: dst.into(),
                    proto: next,
                    hop_limit: b[7],
                };
                return Ok((ip, &b[off..end], off));
            }
        };
        next = *b.get(off).ok_or(DropReason::Ipv6BadExtension)?;
        off += hdr_len;
        if off > end {
            return Err(DropReason::Ipv6BadExtension);
        }
    }
    Err(DropReason::Ipv6BadExtension)
}

/// A TCP or UDP segment waiting in a per-flow sequence.
#[derive(Clone, Copy, Debug)]
pub(crate) struct L4Packet {
    pub(crate) key: FlowKey,
    /// Offset of the L4 header inside the batch buffer.
    pub(crate) l4_off: u32,
    /// Length of the L4 header plus payload.
    pub(crate) l4_len: u32,
    /// TTL or hop limit of the packet.
    pub(crate) hop_limit: u8,
}

/// What identifies a transport flow from the guest side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FlowKey {
    pub(crate) proto: u8,
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) sport: u16,
    pub(crate) dport: u16,
}

impl FlowKey {
    /// Source and destination ports of a segment to the guest on this flow.
    pub(crate) fn reply_ports(&self) -> (u16, u16) {
        (self.dport, self.sport)
    }
}

/// Most distinct flows grouped from one batch before the groups are handed over
/// (upstream's `TAP_SEQS`).
pub(crate) const MAX_SEQS: usize = 128;

/// Groups transport segments of a batch by flow, keeping each flow's order.
///
/// Storage is allocated once: segments go into a flat array, each group is a
/// linked list through `next`, so adding a segment never allocates.
#[derive(Debug)]
pub(crate) struct Grouper {
    pkts: Vec<L4Packet>,
    next: Vec<u32>,
    seqs: Vec<Seq>,
    capacity: usize,
    /// Scratch for handing one group to a handler as a slice.
    out: Vec<L4Packet>,
}

#[derive(Clone, Copy, Debug)]
struct Seq {
    key: FlowKey,
    first: u32,
    last: u32,
    count: u32,
}

const NIL: u32 = u32::MAX;

impl Grouper {
    pub(crate) fn new(capacity: usize) -> Self {
        Grouper {
            pkts: Vec::with_capacity(capacity),
            next: Vec::with_capacity(capacity),
            seqs: Vec::with_capacity(MAX_SEQS),
            capacity,
            out: Vec::with_capacity(capacity),
        }
    }

    /// Whether another segment (of a possibly new flow) can be added.
    pub(crate) fn has_room(&self, key: &FlowKey) -> bool {
        self.pkts.len() < self.capacity
            && (self.seqs.len() < MAX_SEQS || self.seqs.iter().any(|s| s.key == *key))
    }

    /// Adds a segment; the caller checked [`Self::has_room`].
    pub(crate) fn push(&mut self, p: L4Packet) {
        if self.pkts.len() >= self.capacity {
            return;
        }
        let idx = self.pkts.len() as u32;
        self.pkts.push(p);
        self.next.push(NIL);
        // Most batches carry one or a few flows: search the newest groups first.
        if let Some(s) = self.seqs.iter_mut().rev().find(|s| s.key == p.key) {
            self.next[s.last as usize] = idx;
            s.last = idx;
            s.count += 1;
        } else if self.seqs.len() < MAX_SEQS {
            self.seqs.push(Seq {
                key: p.key,
                first: idx,
                last: idx,
                count: 1,
            });
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pkts.is_empty()
    }

    /// Hands each group, in order of first appearance, to `f`, then empties.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(&[L4Packet])) {
        for s in &self.seqs {
            self.out.clear();
            let mut i = s.first;
            while i != NIL {
                self.out.push(self.pkts[i as usize]);
                i = self.next[i as usize];
            }
            debug_assert_eq!(self.out.len(), s.count as usize);
            f(&self.out);
        }
        self.seqs.clear();
        self.pkts.clear();
        self.next.clear();
    }
}

/// Extracts ports from a TCP or UDP header, checking its length.
pub(crate) fn l4_ports(proto: u8, l4: &[u8]) -> Result<(u16, u16), DropReason> {
    let min = match proto {
        PROTO_TCP => {
            let doff = usize::from(*l4.get(12).ok_or(DropReason::L4Truncated)? >> 4) * 4;
            if doff < 20 || doff > l4.len() {
                return Err(DropReason::L4Truncated);
            }
            doff
        }
        PROTO_UDP => {
            let len = usize::from(be16(l4, 4).ok_or(DropReason::L4Truncated)?);
            if len < 8 || len > l4.len() {
                return Err(DropReason::L4Truncated);
            }
            8
        }
        _ => return Err(DropReason::UnsupportedProtocol),
    };
    if l4.len() < min {
        return Err(DropReason::L4Truncated);
    }
    Ok((
        be16(l4, 0).ok_or(DropReason::L4Truncated)?,
        be16(l4, 2).ok_or(DropReason::L4Truncated)?,
    ))
}

/// Whether `proto` is ICMP for the family of `ip`.
pub(crate) fn is_icmp(ip: &IpHdr) -> bool {
    matches!(
        (ip.src, ip.proto),
        (IpAddr::V4(_), PROTO_ICMP) | (IpAddr::V6(_), PROTO_ICMPV6)
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::headers::{finish_ip_frame, l4_offset, Ends, PROTO_UDP};

    /// Builds a guest UDP frame through the core's own writers (checked
    /// elsewhere against etherparse).
    pub(crate) fn udp_frame(
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut b = vec![0u8; 2048];
        let off = l4_offset(src.is_ipv6());
        b[off..off + 2].copy_from_slice(&sport.to_be_bytes());
        b[off + 2..off + 4].copy_from_slice(&dport.to_be_bytes());
        b[off + 4..off + 6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        b[off + 8..off + 8 + payload.len()].copy_from_slice(payload);
        let ends = Ends::new(Mac::OUR_DEFAULT, Mac([2, 0, 0, 0, 0, 1]), src, dst);
        let n = finish_ip_frame(&mut b, ends, PROTO_UDP, 8 + payload.len()).unwrap();
        b.truncate(n);
        b
    }

    fn v4(a: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, a))
    }

    #[test]
    fn parses_udp4_and_ignores_padding() {
        let mut f = udp_frame(v4(2), v4(1), 1000, 2000, b"xy");
        f.resize(60, 0); // qemu pads short frames to 60 bytes
        let Ok(Parsed::Ip(eth, ip, l4, off)) = parse(&f) else {
            panic!()
        };
        assert_eq!(eth.ethertype, ETHERTYPE_IPV4);
        assert_eq!(ip.src, v4(2));
        assert_eq!(ip.proto, PROTO_UDP);
        assert_eq!(l4.len(), 10);
        assert_eq!(off, 34);
        assert_eq!(l4_ports(ip.proto, l4), Ok((1000, 2000)));
    }

    #[test]
    fn ipv4_drop_reasons() {
        let good = udp_frame(v4(2), v4(1), 1, 2, b"");
        let mut f = good.clone();
        f[14] = 0x44;
        assert_eq!(parse(&f).unwrap_err(), DropReason::Ipv4BadHeader);
        let mut f = good.clone();
        f[14 + 3] = 200; // total length beyond the frame
        assert_eq!(parse(&f).unwrap_err(), DropReason::Ipv4BadLength);
        let mut f = good.clone();
        f[14 + 6] = 0x20; // more fragments
        assert_eq!(parse(&f).unwrap_err(), DropReason::Ipv4Fragment);
        let mut f = good.clone();
        f[14 + 7] = 1; // offset
        assert_eq!(parse(&f).unwrap_err(), DropReason::Ipv4Fragment);
        let f = udp_frame(IpAddr::V4(Ipv4Addr::LOCALHOST), v4(1), 1, 2, b"");
        assert_eq!(parse(&f).unwrap_err(), DropReason::Loopback);
        assert_eq!(parse(&good[..13]).unwrap_err(), DropReason::EthTruncated);
        assert_eq!(parse(&good[..20]).unwrap_err(), DropReason::Ipv4BadHeader);
        let mut f = good.clone();
        f[12] = 0x88;
        assert_eq!(parse(&f).unwrap_err(), DropReason::UnknownEthertype);
    }

    #[test]
    fn ipv6_extension_headers_are_skipped() {
        let src: IpAddr = "fd00::2".parse().unwrap();
        let dst: IpAddr = "fd00::1".parse().unwrap();
        let f = udp_frame(src, dst, 5, 6, b"abc");
        // Insert an 8-byte destination-options header.
        let mut g = f[..54].to_vec();
        g[20] = 60;
        g.extend_from_slice(&[PROTO_UDP, 0, 1, 4, 0, 0, 0, 0]);
        g.extend_from_slice(&f[54..]);
        let plen = (f.len() - 54 + 8) as u16;
        g[18..20].copy_from_slice(&plen.to_be_bytes());
        let Ok(Parsed::Ip(_, ip, l4, off)) = parse(&g) else {
            panic!()
        };
        assert_eq!(ip.proto, PROTO_UDP);
        assert_eq!(off, 14 + 40 + 8);
        assert_eq!(l4_ports(ip.proto, l4), Ok((5, 6)));
        // Fragment header: dropped.
        g[54] = 44;
        g[20] = 44;
        assert_eq!(parse(&g).unwrap_err(), DropReason::Ipv6Fragment);
        // Truncated chain: hop-by-hop claiming more than is there.
        g[20] = 0;
        g[55] = 200;
        assert_eq!(parse(&g).unwrap_err(), DropReason::Ipv6BadExtension);
        // No next header.
        let mut h = f.clone();
        h[20] = 59;
        assert_eq!(parse(&h).unwrap_err(), DropReason::Ipv6BadExtension);
        // Payload length beyond the frame, and zero (jumbogram).
        let mut h = f.clone();
        h[18] = 0xff;
        assert_eq!(parse(&h).unwrap_err(), DropReason::Ipv6BadLength);
        h[18] = 0;
        h[19] = 0;
        assert_eq!(parse(&h).unwrap_err(), DropReason::Ipv6BadLength);
    }

    #[test]
    fn l4_length_checks() {
        assert_eq!(
            l4_ports(PROTO_UDP, &[0, 1, 0, 2, 0, 7, 0, 0]),
            Err(DropReason::L4Truncated)
        );
        assert_eq!(
            l4_ports(PROTO_UDP, &[0, 1, 0, 2, 0, 9, 0, 0]),
            Err(DropReason::L4Truncated)
        );
        assert_eq!(l4_ports(PROTO_UDP, &[0, 1, 0, 2, 0, 8, 0, 0]), Ok((1, 2)));
        let mut tcp = [0u8; 20];
        tcp[12] = 0x40;
        assert_eq!(l4_ports(PROTO_TCP, &tcp), Err(DropReason::L4Truncated));
        tcp[12] = 0x60;
        assert_eq!(l4_ports(PROTO_TCP, &tcp), Err(DropReason::L4Truncated));
        tcp[12] = 0x50;
        assert_eq!(l4_ports(PROTO_TCP, &tcp), Ok((0, 0)));
        assert_eq!(
            l4_ports(PROTO_TCP, &tcp[..12]),
            Err(DropReason::L4Truncated)
        );
    }

    #[test]
    fn batch_descriptors_are_checked() {
        let buf = [0u8; 10];
        let refs = [
            FrameRef { offset: 0, len: 10 },
            FrameRef { offset: 5, len: 6 },
            FrameRef {
                offset: u32::MAX,
                len: u32::MAX,
            },
        ];
        let b = FrameBatch::new(&buf, &refs);
        assert_eq!(b.len(), 3);
        assert!(b.frame(0).is_some());
        assert!(b.frame(1).is_none());
        assert!(b.frame(2).is_none());
        assert!(b.frame(3).is_none());
    }

    /// A segment of flow `sport`, told apart by its offset `off`.
    fn pkt(sport: u16, off: u32) -> L4Packet {
        L4Packet {
            key: FlowKey {
                proto: PROTO_TCP,
                src: v4(2),
                dst: v4(1),
                sport,
                dport: 80,
            },
            l4_off: off,
            l4_len: 0,
            hop_limit: 64,
        }
    }

    #[test]
    fn grouping_keeps_per_flow_order() {
        let mut g = Grouper::new(16);
        for (i, port) in [1, 2, 1, 3, 2, 1].iter().enumerate() {
            let p = pkt(*port, i as u32);
            assert!(g.has_room(&p.key));
            g.push(p);
        }
        let mut groups = Vec::new();
        g.drain(|s| {
            groups.push(
                s.iter()
                    .map(|p| (p.key.sport, p.l4_off))
                    .collect::<Vec<_>>(),
            )
        });
        assert_eq!(
            groups,
            vec![
                vec![(1, 0), (1, 2), (1, 5)],
                vec![(2, 1), (2, 4)],
                vec![(3, 3)]
            ]
        );
        assert!(g.is_empty());
    }

    #[test]
    fn grouper_limits() {
        let mut g = Grouper::new(2);
        g.push(pkt(1, 0));
        g.push(pkt(1, 1));
        assert!(!g.has_room(&pkt(1, 2).key));
        let mut g = Grouper::new(1000);
        for i in 0..MAX_SEQS as u16 {
            g.push(pkt(i + 1, 0));
        }
        assert!(!g.has_room(&pkt(60000, 0).key));
        assert!(g.has_room(&pkt(1, 0).key));
    }
}
