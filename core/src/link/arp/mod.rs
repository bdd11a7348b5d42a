//! ARP proxy.
//!
//! Like upstream passt, the core answers every ARP request from the guest,
//! whatever the target address: every IPv4 destination is reached through
//! us. The answer carries our MAC, or, for a host on the host's LAN, that
//! host's own MAC (`neigh.rs`); the Ethernet source of the reply stays ours,
//! as upstream's. The core never asks the guest's LAN anything but the
//! guest's own MAC. Two kinds of request get no answer:
//!
//! * gratuitous announcements (sender address equal to the target address, and
//!   not 0.0.0.0): nobody asked anything;
//! * requests for the guest's own assigned address: answering would make the
//!   guest's duplicate-address probes (sender 0.0.0.0) report a conflict.
//!
//! Replies and other operations from the guest are ignored.
//!
//! When the guest link (re)connects, [`probe`] asks for the guest's MAC
//! (who has the guest's address?), as upstream does since 2025: a passt
//! restarted under a running guest learns its MAC from the answer, and
//! reaches it before the guest sends anything of its own.
//!
//! When a LAN host enters the neighbour table, [`announce`] tells the guest
//! its MAC with a gratuitous ARP request (RFC 5227 §2.3: sender and target
//! address both the host's), from that MAC: a guest that resolved the
//! address to our MAC before takes the new one at once.

#[cfg(test)]
mod tests;

use super::Ctx;
use crate::counters::{DropReason, ReplyKind};
use crate::wire::arp::{Arp, ARP_LEN, OP_REPLY, OP_REQUEST};
use crate::wire::headers::ETHERTYPE_ARP;
use crate::wire::Mac;
use core::net::Ipv4Addr;

/// A broadcast ARP request for the guest's assigned address, from our
/// address (the gateway's), if both are known.
pub(crate) fn probe(cx: &mut Ctx<'_>) {
    let Some(c) = cx.cfg.ip4.as_ref() else { return };
    let spa = c.our_addr.or(c.gateway).unwrap_or(Ipv4Addr::UNSPECIFIED);
    if c.addr.is_unspecified() || spa.is_unspecified() {
        return;
    }
    let req = Arp {
        op: OP_REQUEST,
        sender: (cx.cfg.our_mac, spa),
        target: (Mac([0; 6]), c.addr),
    };
    if cx
        .tx()
        .queue_eth(Mac::BROADCAST, ETHERTYPE_ARP, ARP_LEN, |b, _| req.emit(b))
    {
        cx.counters.reply(ReplyKind::GuestProbe);
    }
}

/// Handles an ARP packet from the guest (`arp`: the bytes after the
/// Ethernet header).
pub(crate) fn input(cx: &mut Ctx<'_>, arp: &[u8]) {
    let Some(req) = Arp::parse(arp) else {
        return cx.counters.drop(DropReason::ArpMalformed);
    };
    if req.op != OP_REQUEST {
        return cx.counters.drop(DropReason::ServiceIgnored);
    }
    let ((sha, spa), (_, tpa)) = (req.sender, req.target);
    if spa == tpa && !spa.is_unspecified() {
        // Gratuitous ARP: an announcement, not a question.
        return cx.counters.drop(DropReason::ServiceIgnored);
    }
    if cx.cfg.ip4.as_ref().is_some_and(|c| c.addr == tpa) {
        return cx.counters.drop(DropReason::ServiceIgnored);
    }
    let reply = Arp {
        op: OP_REPLY,
        sender: (cx.neigh.mac_of(cx.cfg, tpa.into()), tpa),
        target: req.sender,
    };
    if cx
        .tx()
        .queue_eth(sha, ETHERTYPE_ARP, ARP_LEN, |b, _| reply.emit(b))
    {
        cx.counters.reply(ReplyKind::Arp);
    }
}

/// A gratuitous ARP request announcing that `ip` is at `mac`, broadcast from
/// `mac`. Returns whether it was queued.
pub(crate) fn announce(cx: &mut Ctx<'_>, ip: Ipv4Addr, mac: Mac) -> bool {
    let msg = Arp {
        op: OP_REQUEST,
        sender: (mac, ip),
        target: (Mac([0; 6]), ip),
    };
    cx.tx()
        .with_src(mac)
        .queue_eth(Mac::BROADCAST, ETHERTYPE_ARP, ARP_LEN, |b, _| msg.emit(b))
}
