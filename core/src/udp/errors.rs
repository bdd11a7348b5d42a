//! ICMP errors between the guest and host datagram sockets, both ways.
//!
//! * Guest → host: a datagram (or echo request) leaves with the guest's own
//!   TTL or hop limit: the flow's socket gets `SockOpt::HopLimit` whenever
//!   the guest's value changes. A datagram whose TTL runs out on the way
//!   makes the router on which it expired answer with "time exceeded", as a
//!   routed guest would see it: `traceroute` from the guest lists the
//!   routers behind the host (the host itself is no hop: its kernel sends
//!   the datagram, it does not route it).
//! * Host → guest: an error that an ICMP or ICMPv6 message reported on a
//!   flow's socket (`SockEvent::Icmp`, from the socket's error queue) goes
//!   to the guest as the ICMP or ICMPv6 message of the same type and code
//!   (port unreachable, time exceeded, fragmentation needed with its MTU,
//!   ...), from the node that sent it as the guest sees that node (the
//!   address the guest used if it is the flow's peer, else the address
//!   mapped as for a datagram from it), quoting the guest's datagram: an IP
//!   header from the guest to the address it used, the UDP header with the
//!   guest's ports (or the echo header with the guest's id), and the start
//!   of the payload the socket got back (8 bytes for UDP over IPv4, as
//!   upstream; at most [`ICMP_QUOTE_MAX`](crate::ICMP_QUOTE_MAX) else).
//!   The guest's kernel hands the error to the socket that sent the
//!   datagram: `ECONNREFUSED` for a connected UDP socket, an error-queue
//!   entry for traceroute.

use super::{act, Ctx, UdpState};
use crate::action::{Action, Family, IcmpError, SockOpt};
use crate::counters::ReplyKind;
use crate::flow::{DgramFlow, FlowData, FlowId};
use crate::nat;
use crate::tap::FlowKey;
use crate::wire::checksum::Sum;
use crate::wire::headers::{
    l4_checksum, write_ip, IPV4_HLEN, IPV6_HLEN, PROTO_ICMP, PROTO_ICMPV6, PROTO_UDP, UDP_HLEN,
};
use crate::wire::{put, put16, put32};
use core::net::IpAddr;

/// The TTL and hop limit Linux gives datagrams by default
/// (`net.ipv4.ip_default_ttl`, `net.ipv6.conf.*.hop_limit`): a guest
/// sending with it needs no option on the socket.
const DEFAULT_HOPS: u8 = 64;
/// Length of an ICMP or ICMPv6 error header (type, code, checksum, and the
/// 4 bytes of MTU, pointer or nothing).
const ERR_HLEN: usize = 8;
/// Most UDP payload bytes an ICMPv4 error to the guest quotes (upstream's
/// `ICMP4_MAX_DLEN`).
const QUOTE4_UDP: usize = 8;
/// ICMP "destination unreachable", code "fragmentation needed": (type, code).
const ICMP_FRAG_NEEDED: (u8, u8) = (3, 4);
/// ICMPv6 "packet too big".
const ICMP6_TOO_BIG: u8 = 2;

/// Whether datagrams with TTL or hop limit `hops` need another value set
/// on the socket of `d`.
pub(crate) fn hops_change(d: &DgramFlow, hops: u8) -> bool {
    let current = d.hop_limit.unwrap_or(DEFAULT_HOPS);
    hops != 0 && hops != current && d.sock_open
}

impl UdpState {
    /// Makes datagrams of flow `id` leave with the guest's TTL or hop limit
    /// `hops`: queues `SockOpt::HopLimit` if it differs from what the socket
    /// has.
    pub(crate) fn follow_hop_limit(&mut self, cx: &mut Ctx<'_>, id: FlowId, hops: u8) {
        let Some(d) = cx.flows.dgram_mut(id) else {
            return;
        };
        if !hops_change(d, hops) {
            return;
        }
        d.hop_limit = Some(hops);
        let family = if d.host.ip().to_canonical().is_ipv6() {
            Family::V6
        } else {
            Family::V4
        };
        let sock = d.sock;
        act(
            cx,
            Action::SetOption {
                sock,
                opt: SockOpt::HopLimit { family, hops },
            },
        );
    }

    /// An error an ICMP message reported on the socket of flow `id`:
    /// relayed to the guest if it can be (see the module documentation).
    pub(crate) fn icmp_error(&mut self, cx: &mut Ctx<'_>, id: FlowId, e: &IcmpError) {
        self.stats.sock_errors += 1;
        let Some(f) = cx.flows.get(id) else { return };
        let (key, host, ping) = match &f.data {
            FlowData::Udp(d) => (f.key, d.host, false),
            FlowData::Ping(d) => (f.key, d.host, true),
            _ => return,
        };
        let Some(offender) = e.offender.map(|o| o.ip().to_canonical()) else {
            log::debug!("datagram flow {}: {e:?} without its sender", id.0);
            return;
        };
        // The flow's peer appears as the address the guest used; others as
        // a datagram of theirs would.
        let src = if offender == host.ip().to_canonical() {
            Some(key.dst)
        } else {
            nat::from_host(cx.cfg, cx.guest, offender).map(|(src, _)| src)
        };
        let v6 = key.src.is_ipv6();
        let Some(src) = src.filter(|s| s.is_ipv6() == v6 && e.v6 == v6) else {
            log::debug!(
                "datagram flow {}: cannot relay {e:?} from {offender} to the guest",
                id.0
            );
            return;
        };
        if relay(cx, &key, ping, src, e) {
            self.stats.icmp_relayed += 1;
            cx.counters.reply(ReplyKind::IcmpError);
            log::debug!(
                "datagram flow {}: ICMP{} type {} code {} from {src} relayed",
                id.0,
                if v6 { "v6" } else { "" },
                e.icmp_type,
                e.code
            );
        }
    }
}

/// Queues the ICMP or ICMPv6 message for `e` on the guest's flow `key` (a
/// ping flow if `ping`), from `src`. Returns whether it was queued.
fn relay(cx: &mut Ctx<'_>, key: &FlowKey, ping: bool, src: IpAddr, e: &IcmpError) -> bool {
    let v6 = key.src.is_ipv6();
    // The guest's datagram as it left the guest: L4 header and the start
    // of the payload.
    let mut l4 = [0u8; UDP_HLEN + crate::ICMP_QUOTE_MAX];
    let quote = e.quote();
    let (proto, l4_len) = if ping {
        // The echo header and what follows, with the guest's id back.
        if quote.len() < 8 {
            return false;
        }
        let n = quote.len();
        l4[..n].copy_from_slice(quote);
        let proto = if v6 { PROTO_ICMPV6 } else { PROTO_ICMP };
        if put16(&mut l4, 4, key.sport).is_none() || put16(&mut l4, 2, 0).is_none() {
            return false;
        }
        let csum = if v6 {
            l4_checksum(key.src, key.dst, proto, &l4[..n])
        } else {
            Some(Sum::new().add(&l4[..n]).finish())
        };
        if csum.and_then(|c| put16(&mut l4, 2, c)).is_none() {
            return false;
        }
        (proto, n)
    } else {
        let q = if v6 {
            quote
        } else {
            &quote[..quote.len().min(QUOTE4_UDP)]
        };
        let n = UDP_HLEN + q.len();
        let ok = put16(&mut l4, 0, key.sport)
            .and_then(|()| put16(&mut l4, 2, key.dport))
            .and_then(|()| put16(&mut l4, 4, n as u16))
            .and_then(|()| put(&mut l4, UDP_HLEN, q))
            .and_then(|()| l4_checksum(key.src, key.dst, PROTO_UDP, &l4[..n]))
            .and_then(|c| put16(&mut l4, 6, if c == 0 { 0xffff } else { c }));
        if ok.is_none() {
            return false;
        }
        (PROTO_UDP, n)
    };
    let ip_hlen = if v6 { IPV6_HLEN } else { IPV4_HLEN };
    let len = ERR_HLEN + ip_hlen + l4_len;
    let (icmp_proto, rest) = match (v6, (e.icmp_type, e.code)) {
        (false, ICMP_FRAG_NEEDED) => (PROTO_ICMP, e.info.min(0xffff)),
        (false, _) => (PROTO_ICMP, 0),
        (true, (ICMP6_TOO_BIG, _)) => (PROTO_ICMPV6, e.info),
        (true, _) => (PROTO_ICMPV6, 0),
    };
    let (icmp_type, code, guest_mac) = (e.icmp_type, e.code, cx.guest.mac);
    let (gsrc, gdst) = (key.src, key.dst);
    let src_mac = cx.src_mac(src);
    cx.tx()
        .with_src(src_mac)
        .queue_ip(guest_mac, src, key.src, icmp_proto, len, |b, _| {
            let b = b.get_mut(..len)?;
            b[0] = icmp_type;
            b[1] = code;
            put16(b, 2, 0)?;
            put32(b, 4, rest)?;
            let inner = &mut b[ERR_HLEN..];
            write_ip(inner, gsrc, gdst, proto, l4_len)?;
            put(inner, ip_hlen, &l4[..l4_len])?;
            Some(len)
        })
}
