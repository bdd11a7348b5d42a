//! ICMP and ICMPv6 echo through unprivileged ping sockets.
//!
//! Only echo requests from the guest are translated; other ICMP messages are
//! dropped and counted. One flow per (guest address, destination, echo id),
//! with the id as both "ports" of the flow key. Its ping socket is bound to
//! port 0, so the kernel picks the id on the host side, and connected to the
//! mapped destination. Each request goes out unchanged (the kernel writes
//! its id and checksum); each reply gets the guest's id back and comes from
//! the address the guest pinged. A flow ends 60 s after the guest's last
//! request ([`ECHO_TIMEOUT`]).

use super::{any_addr, family, framed, Ctx, SockSetup, UdpState};
use crate::action::{BindOpts, Errno, RxDatagram, SockKind, Span};
use crate::counters::DropReason;
use crate::flow::FlowId;
use crate::nat;
use crate::tap::{FlowKey, IpHdr};
use crate::wire::headers::{finish_ip_frame, l4_offset, Ends, PROTO_ICMPV6};
use crate::wire::{be16, put16};
use core::net::SocketAddr;
use core::time::Duration;

/// Time without a request from the guest after which an echo flow ends
/// (upstream's `ICMP_ECHO_TIMEOUT`).
pub(crate) const ECHO_TIMEOUT: Duration = Duration::from_secs(60);
/// Length of an echo header: type, code, checksum, id, sequence.
const ECHO_HLEN: usize = 8;

/// Echo request and reply types of the family of `proto`.
fn echo_types(proto: u8) -> (u8, u8) {
    if proto == PROTO_ICMPV6 {
        (128, 129)
    } else {
        (8, 0)
    }
}

impl UdpState {
    /// An ICMP/ICMPv6 message from the guest other than NDP; `l4_off` is its
    /// offset in the batch buffer.
    pub(crate) fn echo_input(&mut self, cx: &mut Ctx<'_>, ip: &IpHdr, l4: &[u8], l4_off: usize) {
        let (request, _) = echo_types(ip.proto);
        match l4.first() {
            Some(&t) if t == request => {}
            Some(_) => return cx.counters.drop(DropReason::IcmpNotEcho),
            None => return cx.counters.drop(DropReason::L4Truncated),
        }
        let Some(id) = be16(l4, 4).filter(|_| l4.len() >= ECHO_HLEN) else {
            return cx.counters.drop(DropReason::L4Truncated);
        };
        let key = FlowKey {
            proto: ip.proto,
            src: ip.src,
            dst: ip.dst,
            sport: id,
            dport: id,
        };
        let flow = self.flow_or_new(cx, &key, true, |s, cx| s.ping_flow_from_guest(cx, &key));
        let flow = match flow {
            Ok(f) => f,
            Err(reason) => return cx.counters.drop(reason),
        };
        self.follow_hop_limit(cx, flow, ip.hop_limit);
        let span = Span {
            offset: l4_off as u32,
            len: l4.len() as u32,
        };
        self.send_one(cx, flow, span);
    }

    fn ping_flow_from_guest(
        &mut self,
        cx: &mut Ctx<'_>,
        key: &FlowKey,
    ) -> Result<FlowId, DropReason> {
        let bad = DropReason::DgramBadEndpoint;
        let host_ip = nat::from_tap(cx.cfg, key.proto, key.src, 0, key.dst, 0).ok_or(bad)?;
        if host_ip.is_ipv6() != key.src.is_ipv6() {
            return Err(bad);
        }
        let host = SocketAddr::new(host_ip, 0);
        let fam = family(host_ip);
        let id = self.open_flow(cx, *key, host, true, |sock| SockSetup {
            sock,
            kind: SockKind::Ping,
            family: fam,
            broadcast: false,
            bind: SocketAddr::new(any_addr(fam), 0),
            opts: BindOpts::default(),
            connect: Some(host),
        })?;
        log::debug!(
            "ping flow {}: guest {} id {} -> {}",
            id.0,
            key.src,
            key.sport,
            host_ip
        );
        Ok(id)
    }

    /// A ping socket could not be opened: warn once about the sysctl.
    pub(crate) fn ping_refused(&mut self, e: Errno) {
        if self.ping_warned {
            log::debug!("ping socket: {e:?}");
            return;
        }
        self.ping_warned = true;
        if e == Errno::EACCES || e == Errno::EPERM {
            log::warn!(
                "ping sockets refused ({e:?}): ICMP echo will not work; allow them with \
                 sysctl -w net.ipv4.ping_group_range=\"0 2147483647\""
            );
        } else {
            log::warn!("could not open a ping socket ({e:?}): ICMP echo will not work");
        }
    }
}

/// Writes the headers for an echo reply of flow `key` (guest side) in front
/// of it (at `room`), with the guest's id. Counts the drop and returns
/// `false` if it is not a well-formed reply.
pub(crate) fn ping_frame(
    cx: &mut Ctx<'_>,
    key: &FlowKey,
    d: &mut RxDatagram<'_>,
    room: usize,
) -> bool {
    let (_, reply) = echo_types(key.proto);
    let Some(start) = room.checked_sub(l4_offset(key.src.is_ipv6())) else {
        cx.counters.drop(DropReason::DgramMalformed);
        return false;
    };
    let ends = Ends::new(cx.guest.mac, cx.src_mac(key.dst), key.dst, key.src);
    let ok = room
        .checked_add(d.len)
        .filter(|&end| end <= d.buf.len() && d.len >= ECHO_HLEN)
        .and_then(|end| d.buf.get_mut(start..end))
        .and_then(|b| {
            let icmp = b.get_mut(room - start..)?;
            if *icmp.first()? != reply || *icmp.get(1)? != 0 {
                return None;
            }
            put16(icmp, 4, key.sport)?;
            finish_ip_frame(b, ends, key.proto, d.len)
        });
    framed(cx, d, start, ok)
}
