//! Guest frames: building them for scenarios, checking the core's frames with an
//! independent parser (etherparse plus our own checksum arithmetic), and
//! rendering one-line summaries for timelines.

use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

mod build;
mod checksum;
mod offload;
mod parse;
mod summary;
#[cfg(test)]
mod tests;

pub use build::*;
pub use checksum::*;
pub use offload::*;
pub use parse::*;
pub use summary::*;

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
