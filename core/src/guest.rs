//! What the core learns about the guest from the frames it sends.

use crate::mac::Mac;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What the core has learnt about the guest from its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestInfo {
    /// Destination MAC of frames to the guest: the source MAC of its last frame
    /// (broadcast until it sent one, unless configured).
    pub mac: Mac,
    /// Last non-zero IPv4 source address seen.
    pub ip4_seen: Option<Ipv4Addr>,
    /// Last global IPv6 source address seen (or link-local, if nothing else yet).
    pub ip6_seen: Option<Ipv6Addr>,
    /// Last link-local IPv6 source address seen.
    pub ip6_ll_seen: Option<Ipv6Addr>,
    /// Whether any frame from the guest arrived since start or the last reset.
    pub seen: bool,
}

impl GuestInfo {
    /// Nothing known yet; frames go to `mac` (the configured MAC, or
    /// broadcast).
    pub(crate) fn new(mac: Mac) -> Self {
        GuestInfo {
            mac,
            ip4_seen: None,
            ip6_seen: None,
            ip6_ll_seen: None,
            seen: false,
        }
    }

    /// Learns from the source MAC of a frame. Returns whether this is the
    /// first frame since start or the last reset.
    pub(crate) fn learn_mac(&mut self, src: Mac) -> bool {
        if !src.is_multicast() && src != Mac::default() {
            self.mac = src;
        }
        !core::mem::replace(&mut self.seen, true)
    }

    /// Learns from the source address of an IP packet.
    pub(crate) fn learn_addr(&mut self, src: IpAddr) {
        match src {
            IpAddr::V4(a) if !a.is_unspecified() => self.ip4_seen = Some(a),
            IpAddr::V6(a) if a.is_unicast_link_local() => {
                self.ip6_ll_seen = Some(a);
                if self.ip6_seen.is_none() {
                    self.ip6_seen = Some(a);
                }
            }
            IpAddr::V6(a) if !a.is_unspecified() && !a.is_multicast() => self.ip6_seen = Some(a),
            _ => {}
        }
    }
}
