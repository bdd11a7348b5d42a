//! Neighbour discovery: neighbour and router advertisements.
//!
//! As upstream passt does, the core is a proxy for every IPv6 neighbour: a
//! neighbour solicitation for any target is answered with our MAC, or, for a
//! host on the host's LAN, that host's own MAC (`neigh.rs`), so all the
//! guest's traffic comes to us. When such a host enters the neighbour
//! table, [`announce`] sends an unsolicited neighbour advertisement to all
//! nodes (with the override flag, without the solicited one: a guest drops a
//! multicast advertisement marked solicited, RFC 4861 §7.1.2). Router solicitations are answered with a router
//! advertisement carrying the guest's prefix, our MAC, the MTU and the resolvers
//! and search list; once the guest has been seen, unsolicited advertisements go
//! to all nodes every 200 to 600 seconds.
//!
//! What the guest sends is checked in `wire/ndp.rs`. Router and neighbour
//! advertisements and redirects from the guest are well-formed but ignored, as
//! are duplicate address detection probes (solicitations from the unspecified
//! address).

#[cfg(test)]
mod tests;

use super::Ctx;
use crate::config::Config;
use crate::counters::{DropReason, ReplyKind};
use crate::tap::IpHdr;
use crate::time::Instant;
use crate::wire::headers::PROTO_ICMPV6;
use crate::wire::ndp::{multicast_mac, parse_ndp, write_na, write_ns, write_ra, NdpMsg, ALL_NODES};
use crate::wire::ndp::{NA_LEN, RA_MAX};
use crate::wire::Mac;
use core::net::{IpAddr, Ipv6Addr};
use core::time::Duration;

/// Shortest interval between unsolicited router advertisements, in ms
/// (a third of `MaxRtrAdvInterval`, RFC 4861 §6.2.1).
pub(crate) const RA_INTERVAL_MIN_MS: u64 = 200_000;
/// Longest interval (`MaxRtrAdvInterval`, 600 s), exclusive.
pub(crate) const RA_INTERVAL_MAX_MS: u64 = 600_000;

/// The state of neighbour discovery: when the next unsolicited router
/// advertisement is due.
#[derive(Debug, Default)]
pub(crate) struct Ndp {
    /// Next unsolicited router advertisement.
    ra_next: Option<Instant>,
}

impl Ndp {
    /// Handles an NDP message (ICMPv6 types 133 to 137) from the guest:
    /// `icmp` is the ICMPv6 header and body. See [`parse_ndp`] for what is
    /// checked.
    pub(crate) fn input(&mut self, cx: &mut Ctx<'_>, ip: &IpHdr, icmp: &[u8]) {
        let IpAddr::V6(src) = ip.src else {
            return cx.counters.drop(DropReason::ServiceMalformed);
        };
        let msg = match parse_ndp(ip.hop_limit, icmp) {
            Ok(m) => m,
            Err(r) => return cx.counters.drop(r),
        };
        if src.is_multicast() {
            return cx.counters.drop(DropReason::ServiceMalformed);
        }
        match msg {
            NdpMsg::NeighborSolicit { .. } if src.is_unspecified() => {
                // Duplicate address detection: the address is the guest's to take.
                cx.counters.drop(DropReason::ServiceIgnored);
            }
            NdpMsg::NeighborSolicit { target } => send_na(cx, src, target),
            NdpMsg::RouterSolicit if !cx.cfg.features.ra => {
                cx.counters.drop(DropReason::ServiceIgnored);
            }
            NdpMsg::RouterSolicit => {
                let dst = if src.is_unspecified() { ALL_NODES } else { src };
                send_ra(cx, dst);
            }
            NdpMsg::Other(_) => cx.counters.drop(DropReason::ServiceIgnored),
        }
    }

    /// The first frame from the guest arrived: schedule router advertisements.
    pub(crate) fn guest_seen(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        if ra_enabled(cx) && self.ra_next.is_none() {
            self.schedule_ra(cx, now);
        }
    }

    /// Sends an unsolicited router advertisement when due.
    pub(crate) fn timer(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        let Some(due) = self.ra_next else { return };
        if now < due {
            return;
        }
        // Scheduled only when enabled, and the configuration never changes.
        send_ra(cx, ALL_NODES);
        self.schedule_ra(cx, now);
    }

    /// When [`Self::timer`] has work next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.ra_next
    }

    /// The guest went away: no advertisements until it is seen again.
    pub(crate) fn reset(&mut self) {
        self.ra_next = None;
    }

    fn schedule_ra(&mut self, cx: &mut Ctx<'_>, now: Instant) {
        let ms = cx.rng.range(RA_INTERVAL_MIN_MS, RA_INTERVAL_MAX_MS);
        self.ra_next = Some(now.saturating_add(Duration::from_millis(ms)));
    }
}

/// Whether unsolicited router advertisements are sent at all.
fn ra_enabled(cx: &Ctx<'_>) -> bool {
    cx.cfg.features.ndp && cx.cfg.features.ra && cx.cfg.ip6.is_some()
}

/// Destination MAC for an NDP message to `dst`.
fn ndp_dst_mac(cx: &Ctx<'_>, dst: Ipv6Addr) -> Mac {
    if dst.is_multicast() {
        multicast_mac(dst)
    } else {
        cx.guest.mac
    }
}

fn send_na(cx: &mut Ctx<'_>, dst: Ipv6Addr, target: Ipv6Addr) {
    let mac = cx.neigh.mac_of(cx.cfg, target.into());
    let fill = |l4: &mut [u8], _: &Config| write_na(l4, target, mac, true);
    send(cx, dst, ReplyKind::NeighborAdvert, NA_LEN, fill);
}

/// An unsolicited neighbour advertisement to all nodes: `target` is at
/// the MAC of its entry in the neighbour table. Returns whether it was
/// queued.
pub(crate) fn announce(cx: &mut Ctx<'_>, target: Ipv6Addr) -> bool {
    if !cx.cfg.features.ndp {
        return false;
    }
    let mac = cx.neigh.mac_of(cx.cfg, target.into());
    let fill = |l4: &mut [u8], _: &Config| write_na(l4, target, mac, false);
    send(cx, ALL_NODES, ReplyKind::NeighborAdvert, NA_LEN, fill)
}

/// A neighbour solicitation for the guest's assigned address (to its
/// solicited-node group, with our link-layer address), when the guest link
/// (re)connects: see `arp::probe`.
pub(crate) fn probe(cx: &mut Ctx<'_>) {
    if !cx.cfg.features.ndp {
        return;
    }
    let Some(target) = cx.cfg.ip6.as_ref().map(|c| c.addr) else {
        return;
    };
    if target.is_unspecified() {
        return;
    }
    let t = target.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let fill = |l4: &mut [u8], cfg: &Config| write_ns(l4, target, cfg.our_mac);
    send(cx, group, ReplyKind::GuestProbe, NA_LEN, fill);
}

fn send_ra(cx: &mut Ctx<'_>, dst: Ipv6Addr) {
    send(cx, dst, ReplyKind::RouterAdvert, RA_MAX, write_ra);
}

/// Sends an NDP message of at most `max_len` bytes, written by `fill`, from
/// our link-local address to `dst`, and counts it as `kind`.
fn send(
    cx: &mut Ctx<'_>,
    dst: Ipv6Addr,
    kind: ReplyKind,
    max_len: usize,
    fill: impl FnOnce(&mut [u8], &Config) -> Option<usize>,
) -> bool {
    let Some(our_ll) = cx.cfg.ip6.as_ref().map(|c| c.our_ll) else {
        cx.counters.drop(DropReason::Ipv6Disabled);
        return false;
    };
    let mac = ndp_dst_mac(cx, dst);
    let (src, dst) = (our_ll.into(), dst.into());
    let queued = cx.tx().queue_ip(mac, src, dst, PROTO_ICMPV6, max_len, fill);
    if queued {
        cx.counters.reply(kind);
    }
    queued
}
