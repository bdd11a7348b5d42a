//! ARP packets (Ethernet/IPv4 only): parsing and writing.

use super::{be16, put, put16, Mac};
use crate::wire::headers::ETHERTYPE_IPV4;
use core::net::Ipv4Addr;

/// Length of an Ethernet/IPv4 ARP packet.
pub(crate) const ARP_LEN: usize = 28;
/// `ar_hrd` of Ethernet.
const HTYPE_ETHERNET: u16 = 1;
/// `ar_op` of a request.
pub(crate) const OP_REQUEST: u16 = 1;
/// `ar_op` of a reply.
pub(crate) const OP_REPLY: u16 = 2;

/// An Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Arp {
    /// Operation (1: request, 2: reply, anything else is carried as is).
    pub(crate) op: u16,
    /// Sender hardware and protocol addresses (`ar_sha`, `ar_spa`).
    pub(crate) sender: (Mac, Ipv4Addr),
    /// Target hardware and protocol addresses (`ar_tha`, `ar_tpa`).
    pub(crate) target: (Mac, Ipv4Addr),
}

fn mac_at(b: &[u8], off: usize) -> Option<Mac> {
    let s = b.get(off..off.checked_add(6)?)?;
    let mut m = [0u8; 6];
    m.copy_from_slice(s);
    Some(Mac(m))
}

fn ip4_at(b: &[u8], off: usize) -> Option<Ipv4Addr> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(Ipv4Addr::new(s[0], s[1], s[2], s[3]))
}

impl Arp {
    /// Parses the bytes after the Ethernet header. `None` unless this is an
    /// Ethernet/IPv4 ARP packet of at least [`ARP_LEN`] bytes (trailing bytes,
    /// such as qemu's padding, are ignored).
    pub(crate) fn parse(b: &[u8]) -> Option<Arp> {
        if b.len() < ARP_LEN
            || be16(b, 0)? != HTYPE_ETHERNET
            || be16(b, 2)? != ETHERTYPE_IPV4
            || b.get(4..6)? != [6, 4]
        {
            return None;
        }
        Some(Arp {
            op: be16(b, 6)?,
            sender: (mac_at(b, 8)?, ip4_at(b, 14)?),
            target: (mac_at(b, 18)?, ip4_at(b, 24)?),
        })
    }

    /// Writes the packet (all [`ARP_LEN`] bytes) at the start of `b`.
    pub(crate) fn emit(&self, b: &mut [u8]) -> Option<usize> {
        let b = b.get_mut(..ARP_LEN)?;
        put16(b, 0, HTYPE_ETHERNET)?;
        put16(b, 2, ETHERTYPE_IPV4)?;
        put(b, 4, &[6, 4])?;
        put16(b, 6, self.op)?;
        let ((sha, spa), (tha, tpa)) = (self.sender, self.target);
        put(b, 8, &sha.0)?;
        put(b, 14, &spa.octets())?;
        put(b, 18, &tha.0)?;
        put(b, 24, &tpa.octets())?;
        Some(ARP_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use smoltcp::wire::{ArpPacket, ArpRepr};

    const GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    fn any_mac() -> impl Strategy<Value = Mac> {
        any::<[u8; 6]>().prop_map(Mac)
    }

    fn any_ip4() -> impl Strategy<Value = Ipv4Addr> {
        any::<[u8; 4]>().prop_map(Ipv4Addr::from)
    }

    proptest! {
        /// emit then parse gives the packet back, and smoltcp reads the same.
        #[test]
        fn emit_parse_round_trip(op in any::<u16>(), sha in any_mac(), spa in any_ip4(),
                                 tha in any_mac(), tpa in any_ip4(), pad in 0usize..40) {
            let a = Arp { op, sender: (sha, spa), target: (tha, tpa) };
            let mut b = vec![0x5a; ARP_LEN + pad];
            prop_assert_eq!(a.emit(&mut b), Some(ARP_LEN));
            prop_assert_eq!(Arp::parse(&b), Some(a));
            let pkt = ArpPacket::new_checked(&b[..]).unwrap();
            let ArpRepr::EthernetIpv4 {
                operation, source_hardware_addr, source_protocol_addr,
                target_hardware_addr, target_protocol_addr,
            } = ArpRepr::parse(&pkt).unwrap() else { unreachable!() };
            prop_assert_eq!(u16::from(operation), op);
            prop_assert_eq!(source_hardware_addr.0, sha.0);
            prop_assert_eq!(source_protocol_addr, spa);
            prop_assert_eq!(target_hardware_addr.0, tha.0);
            prop_assert_eq!(target_protocol_addr, tpa);
        }

        /// Whatever parses re-emits to the same 28 bytes; short buffers are refused.
        #[test]
        fn parse_emit_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some(a) = Arp::parse(&bytes) {
                let mut b = [0u8; ARP_LEN];
                prop_assert_eq!(a.emit(&mut b), Some(ARP_LEN));
                prop_assert_eq!(&b[..], &bytes[..ARP_LEN]);
            } else {
                prop_assert!(bytes.len() < ARP_LEN || bytes[..6] != [0, 1, 8, 0, 6, 4]);
            }
            let mut short = vec![0u8; bytes.len().min(ARP_LEN - 1)];
            let a = Arp { op: 1, sender: (Mac::BROADCAST, GW), target: (Mac::BROADCAST, GW) };
            prop_assert_eq!(a.emit(&mut short), None);
        }
    }
}
