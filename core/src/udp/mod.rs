//! UDP translation, and what it shares with ICMP echo: datagram flows.
//!
//! A UDP flow is a pseudo-connection keyed by the guest-side 4-tuple in the
//! shared flow table. Each flow has its own host socket, bound to the guest's
//! source port (the port is kept) and connected to the mapped destination:
//!
//! * guest → host: a flow's datagrams of one batch leave with one
//!   `Action::SendDatagrams` over spans of the batch buffer (`sendmmsg`, no
//!   copy);
//! * host → guest (`host.rs`): a readable socket gets an `Action::Recv`; the
//!   driver receives a batch of datagrams (`recvmmsg`) straight into transmit
//!   slots and hands them to [`Core::handle_datagrams`](crate::Core::handle_datagrams),
//!   which writes Ethernet, IP and UDP headers in front of each payload (one
//!   copy, kernel → slot).
//!
//! Forwarded ports (`-u`) have listening sockets (`fwd.rs`); a datagram from a new host
//! peer creates a flow whose own socket is bound to the listener's address
//! and port (`SO_REUSEADDR`) and connected to the peer, so replies keep
//! working when the listener goes away. Flows expire after 180 s without
//! traffic either way ([`UDP_TIMEOUT`]), echo flows after 60 s without a
//! request from the guest (see `echo.rs`).
//!
//! UDP and echo state lives in [`UdpState`]; the engine lends it a [`Ctx`]
//! for each input, and nothing else of the core.

mod echo;
mod errors;
mod host;
pub(crate) mod splice;
pub(crate) mod splice_flow;
#[cfg(test)]
mod tests;

pub(crate) use host::{datagram_room, recv_room};

use crate::action::{
    Action, BindOpts, Errno, Family, Interest, Netns, RxDatagram, SockEvent, SockId, SockKind,
    SockOpt, Span, SpanList,
};
use crate::config::Config;
use crate::counters::{Counters, DropReason};
use crate::flow::{self, DgramFlow, FlowData, FlowId, FlowTable};
use crate::fwd::Listeners;
use crate::guest::GuestInfo;
use crate::mac::Mac;
use crate::nat;
use crate::neigh::NeighTable;
use crate::queue::{ActionQueue, FrameOut, FrameQueue};
use crate::tap::{FlowKey, FrameBatch, L4Packet};
use crate::time::Instant;
use crate::timers::FlowTimers;
use crate::wire::be16;
use crate::wire::headers::{pad_frame, PROTO_UDP, UDP_HLEN};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::time::Duration;

/// Idle time after which a UDP flow ends (upstream's `UDP_CONN_TIMEOUT`).
pub(crate) const UDP_TIMEOUT: Duration = Duration::from_secs(180);
/// Most datagrams asked for with one `Action::Recv` (upstream's
/// `UDP_MAX_FRAMES`).
pub(crate) const RECV_BATCH: u16 = 32;

/// What UDP and ICMP echo may touch while they handle an input, lent by the
/// engine.
pub(crate) struct Ctx<'a> {
    /// The time of the call being handled (the `now` of `Core::handle_*`).
    pub(crate) now: Instant,
    pub(crate) cfg: &'a Config,
    /// The guest's MAC and addresses (frames to it, address mapping).
    pub(crate) guest: &'a GuestInfo,
    pub(crate) counters: &'a mut Counters,
    /// Socket work for the driver.
    pub(crate) actions: &'a mut ActionQueue,
    /// Spans of the `SendDatagrams` of the current batch.
    pub(crate) spans: &'a mut Vec<Span>,
    /// The shared flow table: datagram flows live beside TCP's.
    pub(crate) flows: &'a mut FlowTable,
    /// The listeners of forwarded ports (UDP's take datagrams for new flows).
    pub(crate) listeners: &'a mut Listeners,
    /// Frames the core writes itself (ICMP errors).
    pub(crate) out: &'a mut FrameQueue,
    /// The host's LAN neighbours: the Ethernet source of frames from them.
    pub(crate) neigh: &'a NeighTable,
}

impl Ctx<'_> {
    /// The frame writer over the frame queue.
    pub(crate) fn tx(&mut self) -> FrameOut<'_> {
        FrameOut::new(self.out, self.counters, self.cfg)
    }

    /// The Ethernet source of a frame to the guest from `remote`: a LAN
    /// neighbour's own MAC, else ours (see `neigh.rs`).
    pub(crate) fn src_mac(&self, remote: IpAddr) -> Mac {
        self.neigh.mac_of(self.cfg, remote)
    }
}

/// What UDP and ICMP echo translation did, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// UDP flows created (both directions).
    pub udp_opened: u64,
    /// Echo flows created.
    pub ping_opened: u64,
    /// Datagram flows ended, for any reason.
    pub closed: u64,
    /// Datagram flows ended by their timer.
    pub timeouts: u64,
    /// Datagrams (and echo requests) handed to sockets.
    pub to_host: u64,
    /// Datagrams (and echo replies) framed for the guest.
    pub to_guest: u64,
    /// Errors reported on datagram sockets (error queue, failed sends).
    pub sock_errors: u64,
    /// ICMP and ICMPv6 errors from host sockets relayed to the guest.
    pub icmp_relayed: u64,
}

/// UDP and echo state outside the flow table.
#[derive(Debug)]
pub(crate) struct UdpState {
    /// One timer per datagram flow, at or before its expiry: armed when
    /// the flow is made, and armed again for the new expiry when it runs
    /// early (traffic moved the expiry on), so that traffic costs no timer
    /// work.
    timers: FlowTimers,
    /// Datagram sockets the driver holds for flows.
    pub(crate) open_socks: usize,
    /// The warning about refused ping sockets was logged.
    pub(crate) ping_warned: bool,
    pub(crate) stats: UdpStats,
}

pub(crate) fn family(a: IpAddr) -> Family {
    if a.is_ipv6() {
        Family::V6
    } else {
        Family::V4
    }
}

/// The unspecified address of `f`.
pub(crate) fn any_addr(f: Family) -> IpAddr {
    match f {
        Family::V4 => Ipv4Addr::UNSPECIFIED.into(),
        Family::V6 => Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// Whether two socket addresses name the same peer (IPv4-mapped IPv6
/// addresses equal their IPv4 form).
pub(crate) fn same_peer(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// Whether an error on a datagram socket ends its flow: the one rule for
/// the guest link's flows here and for the driver's spliced pairs
/// (exported as `passt_core::datagram_error_is_fatal`). Anything ends it
/// but
///
/// * `EAGAIN` and `EINTR`: nothing now, or interrupted;
/// * `ENOBUFS` and `ENOMEM`: the kernel was short of buffers or memory for
///   this datagram; the next may pass, and UDP may lose one anyway;
/// * `EMSGSIZE`: this datagram was too large, the socket is fine;
/// * what ICMP reports of the peer or the path (`ECONNREFUSED`,
///   `EHOSTUNREACH`, `ENETUNREACH`, `ETIMEDOUT`, `EPROTO`), and a firewall's
///   refusal (`EACCES`, `EPERM`): the peer may come back and rules change,
///   so the flow stays until it expires.
pub fn fatal(e: Errno) -> bool {
    ![
        Errno::EAGAIN,
        Errno::EINTR,
        Errno::ENOBUFS,
        Errno::ENOMEM,
        Errno::EMSGSIZE,
        Errno::ECONNREFUSED,
        Errno::EHOSTUNREACH,
        Errno::ENETUNREACH,
        Errno::ETIMEDOUT,
        Errno::EPROTO,
        Errno::EACCES,
        Errno::EPERM,
    ]
    .contains(&e)
}

const READABLE: Interest = Interest {
    readable: true,
    writable: false,
    read_hangup: false,
    edge: false,
};

/// Queues `a`, or counts it refused if the action queue is full.
pub(crate) fn act(cx: &mut Ctx<'_>, a: Action) {
    if !cx.actions.push(a) {
        cx.counters.actions_refused += 1;
    }
}

/// Most actions the set-up of a datagram flow's socket takes.
const SETUP_ACTIONS: usize = 5;

/// How to set up the socket of a new datagram flow.
pub(crate) struct SockSetup {
    sock: SockId,
    kind: SockKind,
    family: Family,
    /// `SO_BROADCAST` (a UDP flow to a broadcast address).
    broadcast: bool,
    bind: SocketAddr,
    opts: BindOpts,
    /// The peer to connect to; `None` leaves the socket unconnected (groups).
    connect: Option<SocketAddr>,
}

impl SockSetup {
    /// A UDP socket bound to `port` on every address of `family`, as the
    /// guest's side of a flow: `SO_REUSEADDR` (the guest may use one source
    /// port with many peers; each flow's socket is connected, so the kernel
    /// tells them apart), IPv6 only for IPv6.
    fn guest_port(
        cfg: &Config,
        sock: SockId,
        family: Family,
        port: u16,
        connect: Option<SocketAddr>,
    ) -> Self {
        SockSetup {
            sock,
            kind: SockKind::Udp,
            family,
            broadcast: false,
            bind: SocketAddr::new(any_addr(family), port),
            opts: BindOpts {
                reuse_addr: true,
                v6_only: family == Family::V6,
                freebind: cfg.freebind,
                ..BindOpts::default()
            },
            connect,
        }
    }
}

/// Queues the actions that set a datagram flow's socket up: `Open`,
/// `SetOption(Broadcast)` if asked, `Bind`, `Connect` unless unconnected,
/// and readable interest.
pub(crate) fn open_socket(cx: &mut Ctx<'_>, s: SockSetup) {
    let sock = s.sock;
    act(
        cx,
        Action::Open {
            sock,
            kind: s.kind,
            family: s.family,
            netns: Netns::Host,
        },
    );
    if s.broadcast {
        act(
            cx,
            Action::SetOption {
                sock,
                opt: SockOpt::Broadcast(true),
            },
        );
    }
    act(
        cx,
        Action::Bind {
            sock,
            addr: s.bind,
            opts: s.opts,
        },
    );
    if let Some(addr) = s.connect {
        act(cx, Action::Connect { sock, addr });
    }
    act(
        cx,
        Action::SetInterest {
            sock,
            interest: READABLE,
        },
    );
}

impl UdpState {
    /// UDP and echo state for a flow table of `flows` entries.
    pub(crate) fn new(flows: usize) -> Self {
        let flows = flows.min(flow::MAX_FLOWS);
        UdpState {
            timers: FlowTimers::new(flows),
            open_socks: 0,
            ping_warned: false,
            stats: UdpStats::default(),
        }
    }

    // --- flows (shared with ICMP echo) ---------------------------------------

    /// Deadline of a datagram flow.
    fn deadline(flows: &FlowTable, id: FlowId) -> Option<Instant> {
        match &flows.get(id)?.data {
            FlowData::Udp(d) => Some(d.t_active.saturating_add(UDP_TIMEOUT)),
            FlowData::Ping(d) => Some(d.t_active.saturating_add(echo::ECHO_TIMEOUT)),
            _ => None,
        }
    }

    /// Arms the timer of `id` for its expiry.
    pub(crate) fn note_timer(&mut self, flows: &FlowTable, id: FlowId) {
        self.timers.arm(flows, id, Self::deadline(flows, id));
    }

    /// The flow of `key`: the live one if it is a datagram flow of the
    /// same kind (`ping`: echo, else UDP), or the one `create` makes if
    /// there is none. Another kind of flow under the key is a bad endpoint.
    pub(crate) fn flow_or_new(
        &mut self,
        cx: &mut Ctx<'_>,
        key: &FlowKey,
        ping: bool,
        create: impl FnOnce(&mut Self, &mut Ctx<'_>) -> Result<FlowId, DropReason>,
    ) -> Result<FlowId, DropReason> {
        let Some(id) = cx.flows.lookup(key) else {
            return create(self, cx);
        };
        match cx.flows.get(id).map(|f| &f.data) {
            Some(FlowData::Udp(_)) if !ping => Ok(id),
            Some(FlowData::Ping(_)) if ping => Ok(id),
            _ => Err(DropReason::DgramBadEndpoint),
        }
    }

    /// A new datagram flow for `key` with host-side peer `host`: a flow
    /// entry with a socket id, and its socket set up as `setup` (given the
    /// id) says. Or why not (the caller counts the drop).
    pub(crate) fn open_flow(
        &mut self,
        cx: &mut Ctx<'_>,
        key: FlowKey,
        host: SocketAddr,
        ping: bool,
        setup: impl FnOnce(SockId) -> SockSetup,
    ) -> Result<FlowId, DropReason> {
        let now = cx.now;
        if !cx.actions.admits(SETUP_ACTIONS) {
            return Err(DropReason::ActionQueueFull);
        }
        let d = DgramFlow {
            sock: SockId(0),
            sock_open: true,
            host,
            t_active: now,
            last_send: 0,
            group: false,
            hop_limit: None,
        };
        let data = if ping {
            FlowData::Ping(d)
        } else {
            FlowData::Udp(d)
        };
        let id = cx.flows.alloc(data)?;
        if !cx.flows.insert_key(id, key) {
            cx.flows.free(id);
            return Err(DropReason::DgramBadEndpoint);
        }
        let gen = cx.flows.get(id).map_or(0, |f| f.gen);
        let sock = flow::sock_id(id, gen, 0);
        if let Some(d) = cx.flows.dgram_mut(id) {
            d.sock = sock;
        }
        self.open_socks += 1;
        self.note_timer(cx.flows, id);
        open_socket(cx, setup(sock));
        if ping {
            self.stats.ping_opened += 1;
        } else {
            self.stats.udp_opened += 1;
        }
        Ok(id)
    }

    /// Ends datagram flow `id`: closes its socket and frees the entry.
    pub(crate) fn close(&mut self, cx: &mut Ctx<'_>, id: FlowId) {
        let Some(d) = cx.flows.dgram_mut(id).copied() else {
            return;
        };
        if d.sock_open {
            act(cx, Action::Close { sock: d.sock });
            self.open_socks = self.open_socks.saturating_sub(1);
        }
        log::debug!("datagram flow {}: closed", id.0);
        cx.flows.free(id);
        self.stats.closed += 1;
    }

    /// Queues one `SendDatagrams` for the spans from `start` on.
    fn send(&mut self, cx: &mut Ctx<'_>, id: FlowId, start: usize) {
        let now = cx.now;
        let count = cx.spans.len().saturating_sub(start) as u32;
        let Some(d) = cx.flows.dgram_mut(id) else {
            return;
        };
        if count == 0 {
            return;
        }
        d.last_send = count;
        d.t_active = now;
        let (sock, to) = (d.sock, d.group.then_some(d.host));
        self.stats.to_host += u64::from(count);
        act(
            cx,
            Action::SendDatagrams {
                sock,
                spans: SpanList {
                    start: start as u32,
                    count,
                },
                to,
            },
        );
    }

    /// Sends one echo request of flow `id` (a span of the batch).
    pub(crate) fn send_one(&mut self, cx: &mut Ctx<'_>, id: FlowId, span: Span) {
        let start = cx.spans.len();
        cx.spans.push(span);
        self.send(cx, id, start);
        self.note_timer(cx.flows, id);
    }

    // --- guest side ---------------------------------------------------------------

    /// One flow's UDP datagrams from a batch, in order: one `SendDatagrams`
    /// for each run of datagrams with the same TTL, the guest's TTL set on
    /// the socket before it (see `errors.rs`).
    pub(crate) fn sequence(&mut self, cx: &mut Ctx<'_>, batch: &FrameBatch<'_>, seq: &[L4Packet]) {
        let Some(first) = seq.first() else { return };
        let key = first.key;
        let id = self.flow_or_new(cx, &key, false, |s, cx| s.flow_from_guest(cx, &key));
        let id = match id {
            Ok(id) => id,
            Err(reason) => {
                for _ in seq {
                    cx.counters.drop(reason);
                }
                return;
            }
        };
        let mut start = cx.spans.len();
        let buf = batch.buffer();
        for p in seq {
            if cx
                .flows
                .dgram_mut(id)
                .is_some_and(|d| errors::hops_change(d, p.hop_limit))
            {
                self.send(cx, id, start);
                start = cx.spans.len();
                self.follow_hop_limit(cx, id, p.hop_limit);
            }
            let off = p.l4_off as usize;
            let len = buf
                .get(off..off.saturating_add(p.l4_len as usize))
                .and_then(|l4| {
                    be16(l4, 4)
                        .map(usize::from)
                        .filter(|&n| n >= UDP_HLEN && n <= l4.len())
                });
            match len {
                Some(n) => cx.spans.push(Span {
                    offset: (off + UDP_HLEN) as u32,
                    len: (n - UDP_HLEN) as u32,
                }),
                None => cx.counters.drop(DropReason::L4Truncated),
            }
        }
        self.send(cx, id, start);
    }

    /// A new flow for a datagram from the guest: a socket bound to the
    /// guest's source port and connected to the mapped destination.
    fn flow_from_guest(&mut self, cx: &mut Ctx<'_>, key: &FlowKey) -> Result<FlowId, DropReason> {
        let host_ip = nat::from_tap(cx.cfg, PROTO_UDP, key.src, key.sport, key.dst, key.dport)
            .ok_or(DropReason::DgramBadEndpoint)?;
        let host = SocketAddr::new(host_ip, key.dport);
        let broadcast = is_broadcast(cx.cfg, host_ip);
        let group = nat::is_group(host_ip) || broadcast;
        let connect = (!group).then_some(host);
        let cfg = cx.cfg;
        let id = self.open_flow(cx, *key, host, false, |sock| SockSetup {
            broadcast,
            ..SockSetup::guest_port(cfg, sock, family(host_ip), key.sport, connect)
        })?;
        if let Some(d) = cx.flows.dgram_mut(id) {
            d.group = group;
        }
        log::debug!(
            "udp flow {}: guest {}:{} -> {} (as {}:{})",
            id.0,
            key.src,
            key.sport,
            host,
            key.dst,
            key.dport
        );
        Ok(id)
    }

    // --- socket side --------------------------------------------------------------

    /// Readiness of, or a result for, a datagram socket. Returns whether the
    /// id was one of ours.
    pub(crate) fn sock_event(&mut self, cx: &mut Ctx<'_>, sock: SockId, ev: SockEvent) -> bool {
        let Some(id) = cx.flows.dgram_of(sock) else {
            return false;
        };
        if let SockEvent::Icmp(e) = ev {
            self.icmp_error(cx, id, &e);
            return true;
        }
        let ping = matches!(cx.flows.get(id).map(|f| &f.data), Some(FlowData::Ping(_)));
        let room = recv_room(cx, sock) as u16;
        let Some(d) = cx.flows.dgram_mut(id) else {
            return false;
        };
        match ev {
            SockEvent::OpenFailed(e) => {
                d.sock_open = false;
                // The datagrams queued for it are lost (a flow from a
                // listener has none: its first datagram went to the guest).
                let lost = d.last_send;
                self.open_socks = self.open_socks.saturating_sub(1);
                if ping {
                    self.ping_refused(e);
                } else {
                    log::debug!("udp flow {}: socket failed: {e:?}", id.0);
                }
                for _ in 0..lost {
                    cx.counters.drop(DropReason::DgramSocketFailed);
                }
                self.close(cx, id);
            }
            SockEvent::Connected(Err(e)) => {
                log::debug!("datagram flow {}: connect failed: {e:?}", id.0);
                self.close(cx, id);
            }
            SockEvent::Sent(r) => {
                let want = core::mem::take(&mut d.last_send);
                let n = match r {
                    Ok(n) => n.min(want as usize) as u32,
                    Err(_) => 0,
                };
                for _ in n..want {
                    cx.counters.drop(DropReason::DgramSocketFailed);
                }
                if let Err(e) = r {
                    self.stats.sock_errors += 1;
                    if fatal(e) {
                        self.close(cx, id);
                    }
                }
            }
            SockEvent::Readable => act(
                cx,
                Action::Recv {
                    sock,
                    max: RECV_BATCH,
                    room,
                },
            ),
            SockEvent::Error(e) => {
                self.stats.sock_errors += 1;
                log::debug!("datagram flow {}: socket error {e:?}", id.0);
                if fatal(e) {
                    self.close(cx, id);
                }
            }
            SockEvent::HangUp => self.close(cx, id),
            _ => {}
        }
        true
    }

    // --- timers -------------------------------------------------------------------

    /// When the earliest datagram flow may expire.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Ends datagram flows idle for too long, in flow order.
    pub(crate) fn timeout(&mut self, cx: &mut Ctx<'_>) {
        let now = cx.now;
        let due = self.timers.take_due(now, cx.flows, Self::deadline);
        for &id in &due {
            self.stats.timeouts += 1;
            self.close(cx, id);
        }
        self.timers.done(due);
    }
}

/// Records the frame `buf[start..start + len]` made of datagram `d`, or
/// counts the drop if there is none. Returns whether there is a frame.
pub(crate) fn framed(
    cx: &mut Ctx<'_>,
    d: &mut RxDatagram<'_>,
    start: usize,
    len: Option<usize>,
) -> bool {
    match len {
        Some(n) => {
            d.frame_start = start;
            d.frame_len = match d.buf.get_mut(start..) {
                Some(b) => pad_frame(b, n),
                None => n,
            };
            true
        }
        None => {
            cx.counters.drop(DropReason::DgramMalformed);
            false
        }
    }
}

/// Whether `a` is the limited broadcast address or the directed broadcast
/// address of the guest's subnet.
fn is_broadcast(cfg: &Config, a: IpAddr) -> bool {
    let IpAddr::V4(a) = a else { return false };
    if a.is_broadcast() {
        return true;
    }
    cfg.ip4.as_ref().is_some_and(|c| {
        c.prefix_len < 31 && c.on_link(a) && u32::from(a) | u32::from(c.netmask()) == u32::MAX
    })
}
