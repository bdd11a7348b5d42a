//! Synchronous rtnetlink: dumps of links, addresses and routes for host
//! discovery, and the few changes `--config-net` makes inside the namespace;
//! and the subscription to the host's neighbour table (`neigh.rs`).
//!
//! Every call opens its own `NETLINK_ROUTE` socket in the network namespace of
//! the calling thread, so the same functions serve the host (discovery) and,
//! called from a thread that entered the namespace, the guest side. Receives
//! time out after [`RECV_TIMEOUT_SECS`] so a silent kernel can't hang start-up.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
pub use netlink_packet_route::route::RouteMetric;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteNextHop,
    RouteNextHopFlags, RoutePreference, RouteProtocol, RouteScope, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;

use crate::conf::{NsAddr, NsFamily, NsNetConfig, NsRoute};

mod configure;
pub use configure::*;
pub(crate) mod neigh;
pub use neigh::{NeighEvent, NeighWatch};

/// Longest wait for one answer from the kernel.
pub const RECV_TIMEOUT_SECS: i64 = 5;
/// Most datagrams read for one request (a dump of a very large table).
const MAX_DATAGRAMS: usize = 1 << 16;
/// `RT_TABLE_MAIN`.
pub const TABLE_MAIN: u32 = 254;
/// `RTN_UNICAST`.
pub const RTN_UNICAST: u8 = 1;
/// `IFF_UP`.
pub const IFF_UP: u32 = 1 << 0;
/// `IFF_NOARP`.
pub const IFF_NOARP: u32 = 1 << 7;
/// `IFF_LOOPBACK`.
pub const IFF_LOOPBACK: u32 = 1 << 3;
/// `IFA_F_NODAD`.
pub const IFA_F_NODAD: u32 = 1 << 1;
/// `IFA_F_DEPRECATED`.
pub const IFA_F_DEPRECATED: u32 = 1 << 5;
/// `IFA_F_TENTATIVE`.
pub const IFA_F_TENTATIVE: u32 = 1 << 6;

/// A network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// `IFF_*` flags.
    pub flags: u32,
    /// Hardware address, if Ethernet-like.
    pub mac: Option<[u8; 6]>,
}

/// An address of an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrInfo {
    /// Interface index.
    pub index: u32,
    /// The local address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
    /// `RT_SCOPE_*` (0 universe, 253 link, 254 host).
    pub scope: u8,
    /// `IFA_F_*` flags (the full 32-bit set).
    pub flags: u32,
}

impl AddrInfo {
    /// Whether the address is link-local (IPv6 fe80::/10, IPv4 169.254/16).
    pub fn is_link_local(&self) -> bool {
        is_link_local(self.addr)
    }
}

/// Whether `a` is a link-local address.
pub fn is_link_local(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => v.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// One next hop of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// Outgoing interface.
    pub ifindex: u32,
    /// Gateway, if any (`RTA_GATEWAY`, or `RTA_VIA` for an IPv4 route
    /// through an IPv6 gateway).
    pub gateway: Option<IpAddr>,
    /// Weight (1..=256).
    pub weight: u16,
    /// `RTNH_F_ONLINK`: the gateway is on the link without a route to it.
    pub onlink: bool,
}

/// A route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    /// Destination (the unspecified address for a default route).
    pub dst: IpAddr,
    /// Destination prefix length (0 for a default route).
    pub prefix: u8,
    /// Routing table.
    pub table: u32,
    /// `RTN_*` type.
    pub kind: u8,
    /// `RTPROT_*`.
    pub protocol: u8,
    /// `RT_SCOPE_*`.
    pub scope: u8,
    /// Type of service.
    pub tos: u8,
    /// Metric (`RTA_PRIORITY`).
    pub metric: Option<u32>,
    /// Next hops: one for a plain route, several for a multipath one.
    pub hops: Vec<NextHop>,
    /// Route attributes (`RTA_METRICS`: mtu, advmss, hoplimit, ...).
    pub metrics: Vec<RouteMetric>,
    /// IPv6 router preference (`RTA_PREF`).
    pub pref: Option<u8>,
    /// Lightweight tunnel encapsulation (MPLS, SRv6, ...): such a route
    /// means something else without it.
    pub encap: bool,
}

impl RouteInfo {
    /// Whether this is a default route.
    pub fn is_default(&self) -> bool {
        self.prefix == 0
    }

    /// The metric as the kernel compares it (none: 0).
    pub fn priority(&self) -> u32 {
        self.metric.unwrap_or(0)
    }

    /// The next hop with the highest weight (the first on a tie).
    pub fn best_hop(&self) -> Option<&NextHop> {
        best_of(self.hops.iter())
    }
}

/// The next hop with the highest weight among `hops`, the first on a tie:
/// the one discovery reports as the gateway.
pub fn best_of<'a>(hops: impl Iterator<Item = &'a NextHop>) -> Option<&'a NextHop> {
    let mut best: Option<&NextHop> = None;
    for h in hops {
        if best.is_none_or(|b| h.weight > b.weight) {
            best = Some(h);
        }
    }
    best
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {e}"))
}

/// Why a datagram's messages could not all be split out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// Fewer bytes left than a message header.
    Short,
    /// A length below the header's.
    BadLength,
    /// A length past the datagram's end.
    Truncated,
}

/// The messages of one netlink datagram, each with its header, in order
/// (lengths from the headers, each message padded to 4 bytes). A framing
/// error ends the list.
fn messages(data: &[u8]) -> impl Iterator<Item = Result<&[u8], Framing>> {
    let mut off = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || off >= data.len() {
            return None;
        }
        failed = true;
        let rest = data.get(off..).unwrap_or_default();
        let Some(len) = rest.get(..4).filter(|_| rest.len() >= 16) else {
            return Some(Err(Framing::Short));
        };
        let len = u32::from_ne_bytes(len.try_into().ok()?) as usize;
        if len < 16 {
            return Some(Err(Framing::BadLength));
        }
        let Some(chunk) = rest.get(..len) else {
            return Some(Err(Framing::Truncated));
        };
        failed = false;
        off = off.saturating_add(len).saturating_add(3) & !3;
        Some(Ok(chunk))
    })
}

fn family_of(v6: bool) -> AddressFamily {
    if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

struct Nl {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Nl {
    fn new() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        let tv = nix::sys::time::TimeVal::new(RECV_TIMEOUT_SECS, 0);
        nix::sys::socket::setsockopt(
            &sock.as_fd(),
            nix::sys::socket::sockopt::ReceiveTimeout,
            &tv,
        )
        .map_err(io::Error::from)?;
        Ok(Nl {
            sock,
            seq: 0,
            buf: Vec::with_capacity(1 << 18),
        })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | flags;
        hdr.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
        m.finalize();
        let mut out = vec![0u8; m.buffer_len()];
        m.serialize(&mut out);
        let n = self.sock.send(&out, 0)?;
        if n != out.len() {
            return Err(invalid("short send"));
        }
        Ok(self.seq)
    }

    /// Reads answers to `seq` and hands each inner message to `f`, until the
    /// end of a dump, an acknowledgement or an error.
    fn receive(
        &mut self,
        seq: u32,
        dump: bool,
        mut f: impl FnMut(RouteNetlinkMessage),
    ) -> io::Result<()> {
        for _ in 0..MAX_DATAGRAMS {
            self.buf.clear();
            let n = self.sock.recv(&mut self.buf, 0)?;
            let data = self.buf.get(..n.min(self.buf.len())).unwrap_or_default();
            for chunk in messages(data) {
                let chunk = match chunk {
                    Ok(c) => c,
                    // A remainder too short for a header: nothing more.
                    Err(Framing::Short) => break,
                    Err(Framing::BadLength) => return Err(invalid("bad message length")),
                    Err(Framing::Truncated) => return Err(invalid("truncated message")),
                };
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(chunk);
                let msg = match msg {
                    Ok(m) => m,
                    // Attributes this crate version can't parse: skip.
                    Err(_) if dump => continue,
                    Err(e) => return Err(invalid(e)),
                };
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(()),
                            Some(c) => Err(io::Error::from_raw_os_error(-c.get())),
                        };
                    }
                    NetlinkPayload::InnerMessage(m) => {
                        f(m);
                        if !dump {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
            }
        }
        Err(invalid("answer too long"))
    }

    fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_DUMP)?;
        let mut out = Vec::new();
        self.receive(seq, true, |m| out.push(m))?;
        Ok(out)
    }

    /// Sends a change and waits for its acknowledgement.
    fn change(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let seq = self.send(msg, NLM_F_ACK | flags)?;
        self.receive(seq, false, |_| {})
    }
}

fn link_from(m: &LinkMessage) -> LinkInfo {
    let mut l = LinkInfo {
        index: m.header.index,
        name: String::new(),
        mtu: 0,
        flags: m.header.flags.bits(),
        mac: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Address(b) => {
                if let Ok(mac) = <[u8; 6]>::try_from(b.as_slice()) {
                    l.mac = Some(mac);
                }
            }
            _ => {}
        }
    }
    l
}

/// Every interface.
pub fn links() -> io::Result<Vec<LinkInfo>> {
    let mut nl = Nl::new()?;
    let msgs = nl.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
    Ok(msgs
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(link_from(l)),
            _ => None,
        })
        .collect())
}

/// Every address of one family.
pub fn addresses(v6: bool) -> io::Result<Vec<AddrInfo>> {
    let mut nl = Nl::new()?;
    let mut req = AddressMessage::default();
    req.header.family = family_of(v6);
    let msgs = nl.dump(RouteNetlinkMessage::GetAddress(req))?;
    let mut out = Vec::new();
    for m in msgs {
        let RouteNetlinkMessage::NewAddress(a) = m else {
            continue;
        };
        if a.header.family != family_of(v6) {
            continue;
        }
        let mut flags = u32::from(a.header.flags.bits());
        let (mut local, mut address) = (None, None);
        for attr in &a.attributes {
            match attr {
                AddressAttribute::Local(x) => local = Some(*x),
                AddressAttribute::Address(x) => address = Some(*x),
                AddressAttribute::Flags(f) => flags |= f.bits(),
                _ => {}
            }
        }
        let Some(addr) = local.or(address) else {
            continue;
        };
        out.push(AddrInfo {
            index: a.header.index,
            addr,
            prefix: a.header.prefix_len,
            scope: u8::from(a.header.scope),
            flags,
        });
    }
    Ok(out)
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

fn via_addr(v: &RouteVia) -> Option<IpAddr> {
    match v {
        RouteVia::Inet(a) => Some(IpAddr::V4(*a)),
        RouteVia::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// The gateway among a route's (or a next hop's) attributes.
fn gateway_of(attrs: &[RouteAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => route_addr(g),
        RouteAttribute::Via(v) => via_addr(v),
        _ => None,
    })
}

fn route_from(m: &RouteMessage, v6: bool) -> Option<RouteInfo> {
    let h = &m.header;
    if h.address_family != family_of(v6) {
        return None;
    }
    let unspec = if v6 {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    };
    let mut r = RouteInfo {
        dst: unspec,
        prefix: h.destination_prefix_length,
        table: u32::from(h.table),
        kind: u8::from(h.kind),
        protocol: u8::from(h.protocol),
        scope: u8::from(h.scope),
        tos: h.tos,
        metric: None,
        hops: Vec::new(),
        metrics: Vec::new(),
        pref: None,
        encap: false,
    };
    let mut oif = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => r.dst = route_addr(d)?,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => r.table = *t,
            RouteAttribute::Priority(p) => r.metric = Some(*p),
            RouteAttribute::Metrics(v) => r.metrics.clone_from(v),
            RouteAttribute::Preference(p) => r.pref = Some(u8::from(*p)),
            RouteAttribute::Encap(_) | RouteAttribute::EncapType(_) => r.encap = true,
            RouteAttribute::MultiPath(hops) => {
                for nh in hops {
                    r.hops.push(NextHop {
                        ifindex: nh.interface_index,
                        gateway: gateway_of(&nh.attributes),
                        weight: u16::from(nh.hops) + 1,
                        onlink: nh.flags.contains(RouteNextHopFlags::Onlink),
                    });
                }
            }
            _ => {}
        }
    }
    if let Some(i) = oif {
        r.hops.insert(
            0,
            NextHop {
                ifindex: i,
                gateway: gateway_of(&m.attributes),
                weight: 1,
                onlink: h.flags.contains(RouteFlags::Onlink),
            },
        );
    }
    Some(r)
}

/// Every unicast route of one family in the main table.
pub fn routes(v6: bool) -> io::Result<Vec<RouteInfo>> {
    Ok(all_routes(v6)?
        .filter(|r| r.table == TABLE_MAIN && r.kind == RTN_UNICAST)
        .collect())
}

/// Every route of one family, of every table and type.
fn all_routes(v6: bool) -> io::Result<impl Iterator<Item = RouteInfo>> {
    let mut nl = Nl::new()?;
    let mut req = RouteMessage::default();
    req.header.address_family = family_of(v6);
    let msgs = nl.dump(RouteNetlinkMessage::GetRoute(req))?;
    Ok(msgs.into_iter().filter_map(move |m| match m {
        RouteNetlinkMessage::NewRoute(r) => route_from(&r, v6),
        _ => None,
    }))
}

/// Index of the interface called `name`.
pub fn link_index(name: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(io::Error::from)
}

/// Asks for one interface: `f` sees each answer.
fn get_link(ifindex: u32, mut f: impl FnMut(LinkMessage)) -> io::Result<()> {
    let mut nl = Nl::new()?;
    let mut req = LinkMessage::default();
    req.header.index = ifindex;
    let seq = nl.send(RouteNetlinkMessage::GetLink(req), 0)?;
    nl.receive(seq, false, |m| {
        if let RouteNetlinkMessage::NewLink(l) = m {
            f(l);
        }
    })
}

/// One interface.
pub fn link(ifindex: u32) -> io::Result<LinkInfo> {
    let mut out = None;
    get_link(ifindex, |l| out = Some(link_from(&l)))?;
    out.ok_or_else(|| invalid("no answer for the link"))
}

fn set_link(ifindex: u32, flags: u32, mask: u32, attrs: Vec<LinkAttribute>) -> io::Result<()> {
    let mut nl = Nl::new()?;
    let mut req = LinkMessage::default();
    req.header.index = ifindex;
    req.header.flags = LinkFlags::from_bits_retain(flags);
    req.header.change_mask = LinkFlags::from_bits_retain(mask);
    req.attributes = attrs;
    nl.change(RouteNetlinkMessage::NewLink(req), 0)
}

/// Sets and clears `IFF_*` flags of an interface.
pub fn set_link_flags(ifindex: u32, set: u32, clear: u32) -> io::Result<()> {
    set_link(ifindex, set, set | clear, Vec::new())
}

/// Brings an interface up.
pub fn link_up(ifindex: u32) -> io::Result<()> {
    set_link_flags(ifindex, IFF_UP, 0)
}

/// Sets the MTU of an interface.
pub fn set_mtu(ifindex: u32, mtu: u32) -> io::Result<()> {
    set_link(ifindex, 0, 0, vec![LinkAttribute::Mtu(mtu)])
}

/// Sets the hardware address of an interface.
pub fn set_mac(ifindex: u32, mac: [u8; 6]) -> io::Result<()> {
    set_link(ifindex, 0, 0, vec![LinkAttribute::Address(mac.to_vec())])
}

/// The hardware address of an interface.
pub fn get_mac(ifindex: u32) -> io::Result<[u8; 6]> {
    link(ifindex)?
        .mac
        .ok_or_else(|| invalid("interface has no Ethernet address"))
}

#[cfg(test)]
pub(crate) mod testns;

#[cfg(test)]
mod tests;
