//! Per-frame offload metadata, both directions of the guest link.
//!
//! A link that checksums and segments for us (a tap device opened with
//! `IFF_VNET_HDR` and `TUNSETOFFLOAD`, a virtio-net device) carries, next to
//! each frame, what it may leave undone: an L4 checksum that holds only the
//! pseudo-header sum ("partial"), or one TCP segment of up to 64 KiB that
//! stands for many segments of `gso_size` bytes each. On a tap device this
//! travels in a virtio-net header in front of every frame; [`FrameMeta`]
//! reads and writes it ([`FrameMeta::parse_virtio`],
//! [`FrameMeta::write_virtio`]).
//!
//! Towards the guest, a [`TxRing`](crate::TxRing) says what its link takes
//! ([`TxRing::offload`](crate::TxRing::offload)); the core then writes TCP
//! data frames with a partial checksum and, with TSO, one large segment per
//! slot, and hands each frame's metadata over in
//! [`TxRing::commit_meta`](crate::TxRing::commit_meta). A ring that takes
//! no offload sees the same frames as before, byte for byte.
//!
//! From the guest, a batch built with
//! [`FrameBatch::with_virtio_hdr`](crate::FrameBatch::with_virtio_hdr) has a
//! virtio-net header in front of each frame. The core checks it (anything it
//! does not know is dropped and counted as
//! [`DropReason::BadOffload`](crate::DropReason::BadOffload)) and otherwise
//! takes the frame as it is: the core never verifies L4 checksums, and
//! takes a TCP segment larger than the MTU (a GSO frame) as the one segment
//! it is.

use crate::counters::DropReason;

/// What a guest link does for the frames the core sends it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkOffload {
    /// Frames may carry a partial L4 checksum ([`Csum::Partial`]): the link
    /// completes it, or the receiver trusts it (`TUN_F_CSUM`).
    pub csum: bool,
    /// TCP segments larger than the guest's MSS, up to
    /// [`MAX_FRAME`](crate::MAX_FRAME) bytes, with [`Gso`] metadata (`TUN_F_TSO4 |
    /// TUN_F_TSO6`). Implies `csum`.
    pub tso: bool,
}

impl LinkOffload {
    /// No offload: every frame complete, at most one MSS of payload.
    pub const NONE: LinkOffload = LinkOffload {
        csum: false,
        tso: false,
    };
    /// Partial checksums and TCP segmentation.
    pub const ALL: LinkOffload = LinkOffload {
        csum: true,
        tso: true,
    };
}

/// The state of a frame's L4 checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Csum {
    /// Every checksum in the frame is complete (or, from the guest, not
    /// vouched for).
    #[default]
    Complete,
    /// The 16-bit field at `start + offset` holds the folded sum of the
    /// pseudo-header only; the sum from `start` to the end of the frame
    /// completes it (`VIRTIO_NET_HDR_F_NEEDS_CSUM`). Offsets from the first
    /// byte of the Ethernet header.
    Partial {
        /// Where the checksummed data begins (the L4 header).
        start: u16,
        /// Offset of the checksum field from `start`.
        offset: u16,
    },
    /// The sender vouches for the checksums (`VIRTIO_NET_HDR_F_DATA_VALID`).
    Valid,
}

/// The protocol of a segmentation offload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoKind {
    /// TCP over IPv4.
    Tcp4,
    /// TCP over IPv6.
    Tcp6,
}

/// A TCP segment standing for several: the receiver (or the link) splits
/// its payload into segments of `size` bytes, each behind a copy of the
/// first `hdr_len` bytes of the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gso {
    /// The protocol.
    pub kind: GsoKind,
    /// Payload bytes per segment (the receiver's MSS).
    pub size: u16,
    /// Bytes of headers, Ethernet through TCP.
    pub hdr_len: u16,
    /// The segments carry ECN's congestion-window-reduced bit
    /// (`VIRTIO_NET_HDR_GSO_ECN`).
    pub ecn: bool,
}

/// Offload metadata of one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// The L4 checksum.
    pub csum: Csum,
    /// Segmentation, if the frame stands for several segments.
    pub gso: Option<Gso>,
}

/// Length of the legacy virtio-net header (`struct virtio_net_hdr`).
pub const VIRTIO_NET_HDR_LEN: usize = 10;
/// Length of the virtio 1.0 header (`struct virtio_net_hdr_v1`, with
/// `num_buffers`).
pub const VIRTIO_NET_HDR_V1_LEN: usize = 12;

// The header's `flags` bits and `gso_type` values (linux/virtio_net.h).
const F_NEEDS_CSUM: u8 = 1 << 0;
const F_DATA_VALID: u8 = 1 << 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 1 << 7;

impl FrameMeta {
    /// A frame with nothing left to the link.
    pub const PLAIN: FrameMeta = FrameMeta {
        csum: Csum::Complete,
        gso: None,
    };

    /// A TCP frame of `kind` standing for segments of `size` payload bytes
    /// behind `hdr_len` bytes of headers, with a partial checksum over the
    /// TCP header at `l4_start` (its checksum field 16 bytes in).
    pub const fn tcp_gso(
        kind: GsoKind,
        l4_start: u16,
        hdr_len: u16,
        size: u16,
        ecn: bool,
    ) -> FrameMeta {
        FrameMeta {
            csum: Csum::Partial {
                start: l4_start,
                offset: 16,
            },
            gso: Some(Gso {
                kind,
                size,
                hdr_len,
                ecn,
            }),
        }
    }

    /// Writes the metadata as a virtio-net header into `hdr`, which is
    /// [`VIRTIO_NET_HDR_LEN`] or [`VIRTIO_NET_HDR_V1_LEN`] bytes long
    /// (fields little-endian, as virtio 1.0 and a tap device set with
    /// `TUNSETVNETLE` read them; `num_buffers` 0). Returns `None` for
    /// another length.
    pub fn write_virtio(&self, hdr: &mut [u8]) -> Option<()> {
        if hdr.len() != VIRTIO_NET_HDR_LEN && hdr.len() != VIRTIO_NET_HDR_V1_LEN {
            return None;
        }
        hdr.fill(0);
        let (flags, start, offset) = match self.csum {
            Csum::Complete => (0, 0, 0),
            Csum::Partial { start, offset } => (F_NEEDS_CSUM, start, offset),
            Csum::Valid => (F_DATA_VALID, 0, 0),
        };
        let (gso_type, hdr_len, size) = match self.gso {
            None => (GSO_NONE, 0, 0),
            Some(g) => {
                let t = match g.kind {
                    GsoKind::Tcp4 => GSO_TCPV4,
                    GsoKind::Tcp6 => GSO_TCPV6,
                };
                (t | if g.ecn { GSO_ECN } else { 0 }, g.hdr_len, g.size)
            }
        };
        hdr[0] = flags;
        hdr[1] = gso_type;
        hdr[2..4].copy_from_slice(&hdr_len.to_le_bytes());
        hdr[4..6].copy_from_slice(&size.to_le_bytes());
        hdr[6..8].copy_from_slice(&start.to_le_bytes());
        hdr[8..10].copy_from_slice(&offset.to_le_bytes());
        Some(())
    }

    /// Reads a virtio-net header (`hdr`, of either length) in front of a
    /// frame of `frame_len` bytes. Flags or segmentation types the core does
    /// not know (UDP segmentation, which it never enables), a checksum field
    /// beyond the frame, or segmentation without a segment size are
    /// [`DropReason::BadOffload`].
    pub fn parse_virtio(hdr: &[u8], frame_len: usize) -> Result<FrameMeta, DropReason> {
        if hdr.len() < VIRTIO_NET_HDR_LEN {
            return Err(DropReason::BadOffload);
        }
        let le = |i: usize| u16::from_le_bytes([hdr[i], hdr[i + 1]]);
        let (flags, gso_type) = (hdr[0], hdr[1]);
        let (hdr_len, size, start, offset) = (le(2), le(4), le(6), le(8));
        let csum = match flags & !4 {
            // Bit 2 (RSC_INFO) only reuses the checksum fields.
            0 => Csum::Complete,
            F_NEEDS_CSUM => {
                let end = usize::from(start) + usize::from(offset) + 2;
                if end > frame_len {
                    return Err(DropReason::BadOffload);
                }
                Csum::Partial { start, offset }
            }
            F_DATA_VALID => Csum::Valid,
            _ => return Err(DropReason::BadOffload),
        };
        let kind = match gso_type & !GSO_ECN {
            GSO_NONE => None,
            GSO_TCPV4 => Some(GsoKind::Tcp4),
            GSO_TCPV6 => Some(GsoKind::Tcp6),
            _ => return Err(DropReason::BadOffload),
        };
        let gso = match kind {
            None => None,
            Some(_) if size == 0 || usize::from(hdr_len) > frame_len => {
                return Err(DropReason::BadOffload)
            }
            Some(kind) => Some(Gso {
                kind,
                size,
                hdr_len,
                ecn: gso_type & GSO_ECN != 0,
            }),
        };
        Ok(FrameMeta { csum, gso })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any header parses or is refused, never panics; what parses
        /// writes back to a header that parses the same.
        #[test]
        fn any_header_round_trips(h in proptest::collection::vec(any::<u8>(), 0..16),
                                  len in 0usize..70000) {
            if let Ok(m) = FrameMeta::parse_virtio(&h, len) {
                let mut w = [0u8; VIRTIO_NET_HDR_V1_LEN];
                m.write_virtio(&mut w).unwrap();
                prop_assert_eq!(FrameMeta::parse_virtio(&w, len), Ok(m));
            }
        }
    }

    #[test]
    fn virtio_header_round_trip() {
        let metas = [
            FrameMeta::PLAIN,
            FrameMeta {
                csum: Csum::Valid,
                gso: None,
            },
            FrameMeta::tcp_gso(GsoKind::Tcp4, 34, 54, 1460, false),
            FrameMeta::tcp_gso(GsoKind::Tcp6, 54, 74, 1440, true),
        ];
        for m in metas {
            for len in [VIRTIO_NET_HDR_LEN, VIRTIO_NET_HDR_V1_LEN] {
                let mut h = vec![0xaa; len];
                m.write_virtio(&mut h).unwrap();
                assert_eq!(FrameMeta::parse_virtio(&h, 65000), Ok(m));
            }
        }
        let mut h = [0u8; 10];
        metas[2].write_virtio(&mut h).unwrap();
        // The layout of struct virtio_net_hdr, little-endian.
        assert_eq!(h, [1, 1, 54, 0, 0xb4, 0x05, 34, 0, 16, 0]);
        assert!(FrameMeta::PLAIN.write_virtio(&mut [0u8; 11]).is_none());
    }

    #[test]
    fn unknown_or_inconsistent_headers_are_refused() {
        let bad = |h: [u8; 10], len: usize| {
            assert_eq!(
                FrameMeta::parse_virtio(&h, len),
                Err(DropReason::BadOffload),
                "{h:?}"
            )
        };
        // UDP segmentation (never enabled), unknown flags.
        bad([0, 3, 0, 0, 0, 0, 0, 0, 0, 0], 100);
        bad([0, 5, 0, 0, 0, 0, 0, 0, 0, 0], 100);
        bad([8, 0, 0, 0, 0, 0, 0, 0, 0, 0], 100);
        // Checksum field past the end of the frame.
        bad([1, 0, 0, 0, 0, 0, 34, 0, 16, 0], 51);
        // TCP segmentation without a size, headers longer than the frame.
        bad([1, 1, 54, 0, 0, 0, 34, 0, 16, 0], 100);
        bad([1, 1, 200, 0, 0xb4, 5, 34, 0, 16, 0], 100);
        // Too short.
        assert_eq!(
            FrameMeta::parse_virtio(&[0; 9], 100),
            Err(DropReason::BadOffload)
        );
        assert!(FrameMeta::parse_virtio(&[1, 0, 0, 0, 0, 0, 34, 0, 16, 0], 52).is_ok());
    }
}
