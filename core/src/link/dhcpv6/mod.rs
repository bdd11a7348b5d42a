//! DHCPv6 server: the stateless subset of RFC 8415 that upstream passt serves.
//!
//! Every client gets the same address, [`Ip6Config::addr`](crate::Ip6Config),
//! with infinite lifetimes; nothing is remembered between messages. Only
//! messages to port 547 with a multicast destination reach this module.
//!
//! | received | condition | answer |
//! |---|---|---|
//! | SOLICIT | no Server ID | ADVERTISE (no Rapid Commit) |
//! | REQUEST, RENEW | our Server ID | REPLY, or REPLY with NotOnLink |
//! | CONFIRM | no Server ID | REPLY, or REPLY with NotOnLink |
//! | REBIND | our Server ID | REPLY |
//! | INFORMATION-REQUEST | no IA; Server ID absent or ours | REPLY without IA |
//! | anything else | | ignored |
//!
//! A Client ID (DUID of 1 to 128 bytes) is required in every message. Replies
//! carry, in this order: Server ID (DUID-LLT of our MAC), IA_NA (IAID echoed,
//! T1 = T2 = infinity) holding one IA Address, the Client ID echoed, DNS
//! servers (23), the Domain Search List (24) and, with `--fqdn`, the Client
//! FQDN (39, RFC 4704; as upstream since 2025). NotOnLink replies carry the
//! offending IA with a Status Code instead of the address, and no DNS options.
//! IA_TA is never served. `wire/dhcpv6.rs` parses and writes the messages;
//! replies are written straight into the control-frame queue.

#[cfg(test)]
mod tests;

use super::Ctx;
use crate::counters::{DropReason, ReplyKind};
use crate::queue::CONTROL_FRAME_MAX;
use crate::tap::{EthHdr, IpHdr};
use crate::wire::dhcpv6::*;
use crate::wire::headers::{finish_udp_frame, l4_offset, Ends, ETH_HLEN, UDP_HLEN};
use crate::wire::put32;
use core::net::IpAddr;

/// Room for the reply payload inside one control frame.
const MAX_PAYLOAD: usize = CONTROL_FRAME_MAX - l4_offset(true) - UDP_HLEN;
const _: () = assert!(REPLY_MAX <= MAX_PAYLOAD);
const _: () = assert!(FQDN_REPLY_LIMIT <= MAX_PAYLOAD);

/// A DHCPv6 message (`msg`, the UDP payload) from the guest to a multicast
/// address, port 547. Stateless, and replies go to port 546 whatever the
/// source port.
pub(crate) fn input(cx: &mut Ctx<'_>, eth: &EthHdr, ip: &IpHdr, msg: &[u8]) {
    if let Err(reason) = answer(cx, eth, ip, msg) {
        cx.counters.drop(reason);
    }
}

fn answer(cx: &mut Ctx<'_>, eth: &EthHdr, ip: &IpHdr, msg: &[u8]) -> Result<(), DropReason> {
    use DropReason::{ServiceIgnored as Ignored, ServiceMalformed as Bad};

    if !cx.cfg.features.dhcpv6 {
        return Err(Ignored);
    }
    let (addr, our_ll) = match &cx.cfg.ip6 {
        Some(c) if !c.addr.is_unspecified() => (c.addr, c.our_ll),
        _ => return Err(Ignored),
    };
    let client = match ip.src {
        IpAddr::V6(a) if !a.is_unspecified() && !a.is_multicast() => a,
        _ => return Err(Bad),
    };
    if let Some(&RELAY_FORW | &RELAY_REPL) = msg.first() {
        return Err(Ignored);
    }
    let m = Message::parse(msg).map_err(|_| Bad)?;
    let client_id = m.client_id.ok_or(Bad)?;
    let ours = server_duid(cx.cfg.duid_time, cx.cfg.our_mac);
    let ours_named = m.server_id.map(|s| s == ours);
    let not_on_link = || m.ias().find(|ia| ia.addresses().any(|a| a != addr));
    let lease = Body::Lease {
        iaid: m.ia_na.map_or(0, |ia| ia.iaid),
    };

    let (reply_type, body) = match m.msg_type {
        SOLICIT if ours_named.is_none() => (ADVERTISE, lease),
        REQUEST | RENEW if ours_named == Some(true) => {
            (REPLY, not_on_link().map_or(lease, Body::NotOnLink))
        }
        CONFIRM if ours_named.is_none() => (REPLY, not_on_link().map_or(lease, Body::NotOnLink)),
        REBIND if ours_named == Some(true) => (REPLY, lease),
        INFORMATION_REQUEST if ours_named != Some(false) && m.ia_na.is_none() && !m.has_ia_ta => {
            (REPLY, Body::Info)
        }
        // Leases are never taken back: nothing to release or decline.
        RELEASE | DECLINE => return Err(Ignored),
        // Server messages, unknown types, a Server ID that is not ours
        // (or one where none may be), IAs in INFORMATION-REQUEST.
        _ => return Err(Ignored),
    };

    let dst_mac = eth.src;
    let xid = m.xid;
    let client_fqdn = m.fqdn_flags;
    let queued = cx
        .tx()
        .queue_frame(l4_offset(true) + UDP_HLEN + MAX_PAYLOAD, |b, cfg| {
            let off = l4_offset(true) + UDP_HLEN;
            let n = write_reply(
                b.get_mut(off..)?,
                cfg,
                reply_type,
                xid,
                client_id,
                body,
                client_fqdn,
            )?;
            let ends = Ends::new(dst_mac, cfg.our_mac, our_ll.into(), client.into());
            let len = finish_udp_frame(b, ends, SERVER_PORT, CLIENT_PORT, n)?;
            // The flow label is not part of the UDP checksum.
            put32(b, ETH_HLEN, (6 << 28) | flow_label(xid))?;
            Some(len)
        });
    if queued {
        cx.counters.reply(ReplyKind::Dhcpv6);
        if matches!(body, Body::Lease { .. }) {
            // The guest is about to use the address, as upstream assumes.
            cx.guest.ip6_seen = Some(addr);
        }
    }
    Ok(())
}
