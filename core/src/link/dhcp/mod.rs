//! DHCPv4 server (RFC 2131, RFC 2132), stateless, as upstream passt.
//!
//! Every client gets the same address, [`Ip4Config::addr`](crate::Ip4Config):
//! there are no leases and no per-client state. Any IPv4 UDP datagram to port
//! 67 lands here.
//!
//! * DISCOVER → OFFER; DISCOVER with Rapid Commit (option 80, RFC 4039) → ACK
//!   carrying option 80; REQUEST → ACK (the requested address and the server
//!   identifier are not checked, no NAK is ever sent).
//! * A request without option 53 is a BOOTP request (RFC 951) and gets a BOOTP
//!   reply: the same header as an ACK, but only the configuration options (1, 3,
//!   6, 12, 26, 119, 121), none of the DHCP-only options of RFC 2132 §9 (51 lease
//!   time, 53 message type, 54 server identifier) nor 80 or 81 (RFC 1534 §2: a
//!   BOOTP client is not to be handed DHCP-specific options).
//! * `-H` gives option 12 (the host name as given), `--fqdn` option 81 (RFC
//!   4702: flags E, RCODEs 255, the name in wire format), as upstream passt
//!   since 2025, whether or not the client asked for them.
//! * DECLINE, RELEASE, INFORM, replies and unknown types are ignored.
//! * `--no-dhcp`, or no IPv4 gateway (which upstream treats as `--no-dhcp`):
//!   everything is ignored.
//!
//! The reply goes from our address, port 67, to port 68 of 255.255.255.255 if
//! the client set the broadcast flag, else of the assigned address; the
//! Ethernet destination is always the guest's MAC (the source of its last
//! frame), as upstream does. Upstream passt sends the request's `hops`,
//! `siaddr`, `sname` and `file` back unchanged; we set them as RFC 2131 table 3
//! says (they are zero in every reference capture, so the replies are the same
//! for real clients). `wire/dhcp.rs` writes the reply.

#[cfg(test)]
mod tests;

use super::Ctx;
use crate::counters::{DropReason, ReplyKind};
use crate::queue::CONTROL_FRAME_MAX;
use crate::wire::dhcp::{build_reply, parse_request, reply_kind};
use crate::wire::dhcp::{CLIENT_PORT, FLAG_BROADCAST, REPLY_MAX, SERVER_PORT};
use crate::wire::headers::{l4_offset, UDP_HLEN};
use crate::wire::{be16, Mac};
use core::net::{IpAddr, Ipv4Addr};

/// Room for a reply: every option at its largest, as far as a control frame
/// holds it (options that do not fit are left out).
const MAX_PAYLOAD: usize = {
    let room = CONTROL_FRAME_MAX - l4_offset(false) - UDP_HLEN;
    if REPLY_MAX < room {
        REPLY_MAX
    } else {
        room
    }
};

/// Handles the UDP payload `msg` of a datagram from the guest to port 67.
/// Stateless: neither time, addresses nor ports of the request matter.
pub(crate) fn input(cx: &mut Ctx<'_>, msg: &[u8]) {
    let Some(ip4) = cx.cfg.ip4.as_ref() else {
        return cx.counters.drop(DropReason::Ipv4Disabled);
    };
    let Some(gateway) = ip4.gateway else {
        return cx.counters.drop(DropReason::ServiceIgnored);
    };
    if !cx.cfg.features.dhcp {
        return cx.counters.drop(DropReason::ServiceIgnored);
    }
    let (req, kind) = match parse_request(msg).and_then(|r| Ok((reply_kind(&r)?, r))) {
        Ok((kind, req)) => (req, kind),
        Err(e) => return cx.counters.drop(e.into()),
    };
    let our = ip4.our_addr.unwrap_or(gateway);
    let flags = be16(req.hdr, 10).unwrap_or(0);
    let dst = if flags & FLAG_BROADCAST != 0 {
        Ipv4Addr::BROADCAST
    } else {
        ip4.addr
    };
    let dst_mac = cx.guest.mac;
    let queued = cx.tx().queue_udp(
        dst_mac,
        IpAddr::V4(our),
        IpAddr::V4(dst),
        SERVER_PORT,
        CLIENT_PORT,
        MAX_PAYLOAD,
        |b, cfg| build_reply(b, cfg, &req, kind),
    );
    if queued {
        cx.counters.reply(ReplyKind::Dhcp);
        if let Some(chaddr) = req
            .hdr
            .get(28..34)
            .and_then(|m| <[u8; 6]>::try_from(m).ok())
        {
            log::debug!("DHCP: {kind:?} to {}", Mac(chaddr));
        }
    }
}
