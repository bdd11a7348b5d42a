//! Synchronous rtnetlink: dumps of links, addresses and routes for host
//! discovery, and the few changes `--config-net` makes inside the namespace.
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

/// Longest wait for one answer from the kernel.
pub const RECV_TIMEOUT_SECS: i64 = 5;
/// Most datagrams read for one request (a dump of a very large table).
const MAX_DATAGRAMS: usize = 1 << 16;
/// `RT_TABLE_MAIN`.
pub const TABLE_MAIN: u32 = 254;
/// `RTN_UNICAST`.
pub const RTN_UNICAST: u8 = 1;
/// `IFF_UP`.
pub const IFF_UP: u32 = 1;
/// `IFF_NOARP`.
pub const IFF_NOARP: u32 = 0x80;
/// `IFF_LOOPBACK`.
pub const IFF_LOOPBACK: u32 = 0x8;
/// `IFA_F_NODAD`.
pub const IFA_F_NODAD: u32 = 0x02;
/// `IFA_F_DEPRECATED`.
pub const IFA_F_DEPRECATED: u32 = 0x20;
/// `IFA_F_TENTATIVE`.
pub const IFA_F_TENTATIVE: u32 = 0x40;

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
            let mut off = 0usize;
            while off.checked_add(16).is_some_and(|e| e <= data.len()) {
                let len_bytes: [u8; 4] = data
                    .get(off..off.saturating_add(4))
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| invalid("truncated"))?;
                let len = u32::from_ne_bytes(len_bytes) as usize;
                if len < 16 {
                    return Err(invalid("bad message length"));
                }
                let end = off.checked_add(len).ok_or_else(|| invalid("overflow"))?;
                let chunk = data
                    .get(off..end)
                    .ok_or_else(|| invalid("truncated message"))?;
                off = end.checked_add(3).map_or(usize::MAX, |e| e & !3);
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
    let mut nl = Nl::new()?;
    let mut req = RouteMessage::default();
    req.header.address_family = family_of(v6);
    let msgs = nl.dump(RouteNetlinkMessage::GetRoute(req))?;
    Ok(msgs
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => route_from(r, v6),
            _ => None,
        })
        .filter(|r| r.table == TABLE_MAIN && r.kind == RTN_UNICAST)
        .collect())
}

/// Index of the interface called `name`.
pub fn link_index(name: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(io::Error::from)
}

/// One interface.
pub fn link(ifindex: u32) -> io::Result<LinkInfo> {
    let mut nl = Nl::new()?;
    let mut req = LinkMessage::default();
    req.header.index = ifindex;
    let seq = nl.send(RouteNetlinkMessage::GetLink(req), 0)?;
    let mut out = None;
    nl.receive(seq, false, |m| {
        if let RouteNetlinkMessage::NewLink(l) = m {
            out = Some(link_from(&l));
        }
    })?;
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

fn address_request(ifindex: u32, addr: IpAddr, prefix: u8, nodad: bool) -> AddressMessage {
    let mut req = AddressMessage::default();
    req.header.family = family_of(addr.is_ipv6());
    req.header.prefix_len = prefix;
    req.header.index = ifindex;
    req.header.scope = if is_link_local(addr) {
        AddressScope::Link
    } else {
        AddressScope::Universe
    };
    let flags = if nodad { IFA_F_NODAD } else { 0 };
    req.header.flags = AddressHeaderFlags::from_bits_retain(flags as u8);
    req.attributes.push(AddressAttribute::Local(addr));
    req.attributes.push(AddressAttribute::Address(addr));
    if nodad {
        req.attributes
            .push(AddressAttribute::Flags(AddressFlags::from_bits_retain(
                flags,
            )));
    }
    req
}

/// Adds an address (with `IFA_F_NODAD` if `nodad`).
pub fn add_address(ifindex: u32, addr: IpAddr, prefix: u8, nodad: bool) -> io::Result<()> {
    Nl::new()?.change(
        RouteNetlinkMessage::NewAddress(address_request(ifindex, addr, prefix, nodad)),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// The gateway attribute of a route of family `v6`: `RTA_GATEWAY`, or
/// `RTA_VIA` for a gateway of the other family (an IPv4 route through an
/// IPv6 router).
fn gateway_attr(v6: bool, gw: IpAddr) -> RouteAttribute {
    match gw {
        IpAddr::V6(g) if !v6 => RouteAttribute::Via(RouteVia::Inet6(g)),
        IpAddr::V4(g) if v6 => RouteAttribute::Via(RouteVia::Inet(g)),
        g => RouteAttribute::Gateway(RouteAddress::from(g)),
    }
}

/// The request adding `r` in the main table with every next hop on
/// `ifindex`.
fn route_request(ifindex: u32, r: &NsRoute) -> RouteMessage {
    let v6 = r.dst.is_ipv6();
    let mut req = RouteMessage::default();
    req.header = RouteHeader {
        address_family: family_of(v6),
        destination_prefix_length: r.prefix,
        tos: r.tos,
        table: RouteHeader::RT_TABLE_MAIN,
        protocol: RouteProtocol::Boot,
        scope: RouteScope::from(r.scope),
        kind: RouteType::Unicast,
        ..RouteHeader::default()
    };
    if r.prefix > 0 {
        req.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(r.dst)));
    }
    match r.hops.as_slice() {
        [] => req.attributes.push(RouteAttribute::Oif(ifindex)),
        [h] => {
            req.attributes.push(RouteAttribute::Oif(ifindex));
            if let Some(g) = h.gateway {
                req.attributes.push(gateway_attr(v6, g));
            }
            if h.onlink {
                req.header.flags = RouteFlags::Onlink;
            }
        }
        hops => {
            let nhs = hops
                .iter()
                .map(|h| {
                    let mut nh = RouteNextHop::default();
                    if h.onlink {
                        nh.flags = RouteNextHopFlags::Onlink;
                    }
                    nh.hops = u8::try_from(h.weight.clamp(1, 256) - 1).unwrap_or(u8::MAX);
                    nh.interface_index = ifindex;
                    nh.attributes = h.gateway.map(|g| gateway_attr(v6, g)).into_iter().collect();
                    nh
                })
                .collect();
            req.attributes.push(RouteAttribute::MultiPath(nhs));
        }
    }
    if let Some(m) = r.metric {
        req.attributes.push(RouteAttribute::Priority(m));
    }
    if !r.metrics.is_empty() {
        req.attributes
            .push(RouteAttribute::Metrics(r.metrics.clone()));
    }
    if let Some(p) = r.pref.filter(|_| v6) {
        req.attributes
            .push(RouteAttribute::Preference(RoutePreference::from(p)));
    }
    req
}

/// Adds the route `r` in the main table, every next hop on `ifindex`.
pub fn add_route(ifindex: u32, r: &NsRoute) -> io::Result<()> {
    Nl::new()?.change(
        RouteNetlinkMessage::NewRoute(route_request(ifindex, r)),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

fn ignore_exists(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

/// The EUI-64 link-local address for `mac` (fe80::/64 with the universal/local
/// bit flipped and ff:fe in the middle).
pub fn eui64_link_local(mac: [u8; 6]) -> std::net::Ipv6Addr {
    let [a, b, c, d, e, f] = mac;
    std::net::Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        a ^ 2,
        b,
        c,
        0xff,
        0xfe,
        d,
        e,
        f,
    ])
}

/// `IN6_ADDR_GEN_MODE_NONE`: the kernel adds no link-local address itself.
pub const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
/// `RT_TABLE_LOCAL`.
pub const TABLE_LOCAL: u32 = 255;
/// `RTN_LOCAL`.
pub const RTN_LOCAL: u8 = 2;
/// Longest wait for the namespace's addresses to become usable.
pub const ADDR_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The IPv6 address generation mode of an interface (`IFLA_INET6_ADDR_GEN_MODE`),
/// if the interface has IPv6.
pub fn addr_gen_mode(ifindex: u32) -> io::Result<Option<u8>> {
    use netlink_packet_route::link::{AfSpecInet6, AfSpecUnspec};
    let mut nl = Nl::new()?;
    let mut req = LinkMessage::default();
    req.header.index = ifindex;
    let seq = nl.send(RouteNetlinkMessage::GetLink(req), 0)?;
    let mut out = None;
    nl.receive(seq, false, |m| {
        let RouteNetlinkMessage::NewLink(l) = m else {
            return;
        };
        for a in &l.attributes {
            let LinkAttribute::AfSpecUnspec(specs) = a else {
                continue;
            };
            for spec in specs {
                let AfSpecUnspec::Inet6(v6) = spec else {
                    continue;
                };
                for x in v6 {
                    if let AfSpecInet6::AddrGenMode(mode) = x {
                        out = Some(u8::from(mode));
                    }
                }
            }
        }
    })?;
    Ok(out)
}

/// Sets the IPv6 address generation mode of an interface. The kernel applies
/// it the next time the link goes up; an up link keeps its addresses.
pub fn set_addr_gen_mode(ifindex: u32, mode: u8) -> io::Result<()> {
    use netlink_packet_route::link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode};
    set_link(
        ifindex,
        0,
        0,
        vec![LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::from(mode))],
        )])],
    )
}

/// Destinations of the local routes (`RTN_LOCAL`, table local) of one family:
/// the kernel adds one for each address once the address is usable.
pub fn local_routes(v6: bool) -> io::Result<Vec<IpAddr>> {
    let mut nl = Nl::new()?;
    let mut req = RouteMessage::default();
    req.header.address_family = family_of(v6);
    let msgs = nl.dump(RouteNetlinkMessage::GetRoute(req))?;
    let mut out = Vec::new();
    for m in &msgs {
        let RouteNetlinkMessage::NewRoute(r) = m else {
            continue;
        };
        let Some(info) = route_from(r, v6) else {
            continue;
        };
        if info.table == TABLE_LOCAL && info.kind == RTN_LOCAL {
            out.push(info.dst);
        }
    }
    Ok(out)
}

/// The first of `addrs` on `ifindex` that is not usable yet: missing,
/// tentative, or without its local route.
pub fn first_unready(ifindex: u32, addrs: &[IpAddr]) -> io::Result<Option<(IpAddr, &'static str)>> {
    for v6 in [false, true] {
        let fam: Vec<IpAddr> = addrs
            .iter()
            .copied()
            .filter(|a| a.is_ipv6() == v6)
            .collect();
        if fam.is_empty() {
            continue;
        }
        let have = addresses(v6)?;
        let local = local_routes(v6)?;
        for a in fam {
            match have.iter().find(|h| h.index == ifindex && h.addr == a) {
                None => return Ok(Some((a, "missing"))),
                Some(h) if h.flags & IFA_F_TENTATIVE != 0 => return Ok(Some((a, "tentative"))),
                Some(_) if !local.contains(&a) => return Ok(Some((a, "no local route"))),
                Some(_) => {}
            }
        }
    }
    Ok(None)
}

fn step(what: String, e: io::Error) -> io::Error {
    crate::netns::step_err(&what, e)
}

/// Whether `e`, adding an IPv6 address or route, says that IPv6 is off on
/// the interface (`disable_ipv6`) or in the kernel.
fn ipv6_off(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES | libc::EAFNOSUPPORT | libc::EOPNOTSUPP)
    )
}

/// What a failed route addition means, for the start-up error.
fn route_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH) => {
            " (its gateway is not on the link with the namespace's addresses and routes; \
             --no-copy-routes or -g sets a default route only)"
        }
        _ => "",
    }
}

/// The `--config-net` sequence, run in the namespace. Addresses and routes
/// are final when it returns, so that the command (or whoever waits for
/// pasta) finds a usable interface:
///
/// 1. MTU and MAC, while the link is down.
/// 2. With IPv6, the address generation mode is set to "none" so that the
///    kernel adds no link-local address of its own when the link goes up (it
///    would go through duplicate address detection, which delays it by a
///    second or more and sends probes).
/// 3. Link up. No `IFF_NOARP` on the way: clearing that flag on an up link
///    makes the kernel restart address configuration, which, on this
///    kernel, leaves a just-added address without its local route for a
///    random delay of up to `rtr_solicit_delay` (1 s) — packets to it count
///    as `Ip6InAddrErrors`, among them the neighbour advertisement answering
///    the namespace's first solicitation.
/// 4. The link-local address derived from the MAC (EUI-64), then the
///    configured addresses, all without DAD (`IFA_F_NODAD`). A family in
///    local mode that the namespace refuses (IPv6 disabled there) is left
///    out with a warning, as upstream does; any other failure is an error.
/// 5. Routes, with every next hop, their flags and attributes: on-link ones
///    first so that gateways are reachable. A route that cannot be added is
///    an error naming it (one that exists already is not).
/// 6. The address generation mode as it was (it applies only to a later
///    link up, such as one by the user).
/// 7. A wait, bounded by [`ADDR_READY_TIMEOUT`], until every address is
///    present, not tentative and has its local route: the kernel inserts
///    that route from a work queue, after the request was acknowledged.
///
/// One netlink socket serves every address and route, so that thousands of
/// routes cost one round trip each and nothing more.
pub fn configure_ns_interface(cfg: &NsNetConfig) -> io::Result<()> {
    let dev = &cfg.ifname;
    let ifindex = link_index(dev)
        .map_err(|e| step(format!("finding interface {dev} in the namespace"), e))?;
    if let Some(mtu) = cfg.mtu {
        set_mtu(ifindex, mtu).map_err(|e| step(format!("setting the MTU of {dev} to {mtu}"), e))?;
    }
    if let Some(mac) = cfg.mac {
        set_mac(ifindex, mac).map_err(|e| step(format!("setting the MAC address of {dev}"), e))?;
    }
    // Without IPv6 on the link this fails; adding the addresses below then
    // says so.
    let old_gen_mode = match cfg.v6 {
        Some(_) => addr_gen_mode(ifindex)
            .ok()
            .flatten()
            .filter(|_| set_addr_gen_mode(ifindex, IN6_ADDR_GEN_MODE_NONE).is_ok()),
        None => None,
    };
    link_up(ifindex).map_err(|e| step(format!("bringing up {dev}"), e))?;
    let mut nl = Nl::new().map_err(|e| step("opening a netlink socket".into(), e))?;
    let add_addr = |nl: &mut Nl, a: &NsAddr| {
        let req = address_request(ifindex, a.addr, a.prefix, true);
        ignore_exists(nl.change(
            RouteNetlinkMessage::NewAddress(req),
            NLM_F_CREATE | NLM_F_EXCL,
        ))
    };
    let mut v6 = cfg.v6.as_ref();
    let mut all = Vec::new();
    if let Some(f6) = v6 {
        let mac =
            get_mac(ifindex).map_err(|e| step(format!("reading the MAC address of {dev}"), e))?;
        let ll = NsAddr {
            addr: IpAddr::V6(eui64_link_local(mac)),
            prefix: 64,
        };
        match add_addr(&mut nl, &ll) {
            Ok(()) => all.push(ll),
            Err(e) if f6.local && ipv6_off(&e) => {
                log::warn!(
                    "IPv6 is not available on {dev} in the namespace ({}): no IPv6 local mode",
                    crate::netns::describe(&e)
                );
                v6 = None;
            }
            Err(e) => {
                return Err(step(
                    format!("adding address {}/{} to {dev}", ll.addr, ll.prefix),
                    e,
                ))
            }
        }
    }
    let fams: Vec<&NsFamily> = [cfg.v4.as_ref(), v6].into_iter().flatten().collect();
    for a in fams.iter().flat_map(|f| f.addrs.iter()) {
        add_addr(&mut nl, a).map_err(|e| {
            step(
                format!("adding address {}/{} to {dev}", a.addr, a.prefix),
                e,
            )
        })?;
        all.push(*a);
    }
    for fam in &fams {
        let (direct, via): (Vec<&NsRoute>, Vec<&NsRoute>) =
            fam.routes.iter().partition(|r| r.is_direct());
        for r in direct.into_iter().chain(via) {
            let req = route_request(ifindex, r);
            let res = nl.change(
                RouteNetlinkMessage::NewRoute(req),
                NLM_F_CREATE | NLM_F_EXCL,
            );
            if let Err(e) = ignore_exists(res) {
                let hint = route_hint(&e);
                return Err(step(format!("adding the route {r} on {dev}{hint}"), e));
            }
        }
    }
    drop(nl);
    if let Some(m) = old_gen_mode.filter(|&m| m != IN6_ADDR_GEN_MODE_NONE) {
        set_addr_gen_mode(ifindex, m).map_err(|e| {
            step(
                format!("restoring the IPv6 address generation mode of {dev}"),
                e,
            )
        })?;
    }
    let addrs: Vec<IpAddr> = all.iter().map(|a| a.addr).collect();
    let start = std::time::Instant::now();
    loop {
        let pending = first_unready(ifindex, &addrs)
            .map_err(|e| step(format!("reading the addresses of {dev}"), e))?;
        let Some((a, why)) = pending else {
            log::debug!(
                "addresses of {dev} ready after {} µs",
                start.elapsed().as_micros()
            );
            return Ok(());
        };
        if start.elapsed() >= ADDR_READY_TIMEOUT {
            log::warn!(
                "address {a} of {dev} not ready after {} ms ({why})",
                ADDR_READY_TIMEOUT.as_millis()
            );
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[cfg(test)]
pub(crate) mod testns {
    //! Throw-away network namespaces for tests (needs root).

    use std::process::Command;

    /// Runs `f` in a thread of its own, in a new network namespace that goes
    /// away with the thread. `None` if namespaces can't be created here.
    pub(crate) fn in_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        std::thread::spawn(move || {
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                eprintln!("skipped: can't create a network namespace ({e})");
                return None;
            }
            Some(f())
        })
        .join()
        .expect("test thread panicked")
    }

    /// Runs an `ip` command line (in the calling thread's namespace).
    pub(crate) fn ip(args: &str) {
        let out = Command::new("ip")
            .args(args.split_whitespace())
            .output()
            .expect("ip");
        assert!(
            out.status.success(),
            "ip {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Output of an `ip` command line.
    pub(crate) fn ip_out(args: &str) -> String {
        let out = Command::new("ip")
            .args(args.split_whitespace())
            .output()
            .expect("ip");
        assert!(out.status.success(), "ip {args}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::testns::*;
    use super::*;
    use crate::conf::{NsAddr, NsFamily, NsHop};

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn eui64() {
        assert_eq!(
            eui64_link_local([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]),
            "fe80::11:22ff:fe33:4455"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
        );
        assert_eq!(
            eui64_link_local([0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55]),
            "fe80::9855:9aff:fe55:9a55"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
        );
    }

    #[test]
    fn link_changes() {
        let Some(()) = in_netns(|| {
            ip("link add v0 type veth peer name v1");
            let i = link_index("v0").unwrap();
            assert!(link_index("nope0").is_err());
            set_mtu(i, 1400).unwrap();
            set_mac(i, [2, 0, 0, 0, 0, 9]).unwrap();
            assert_eq!(get_mac(i).unwrap(), [2, 0, 0, 0, 0, 9]);
            link_up(i).unwrap();
            let l = link(i).unwrap();
            assert_eq!(l.name, "v0");
            assert_eq!(l.mtu, 1400);
            assert!(l.flags & IFF_UP != 0);
            assert!(set_mtu(i, 10).is_err(), "MTU below the minimum must fail");
            let all = links().unwrap();
            assert!(all
                .iter()
                .any(|l| l.name == "lo" && l.flags & IFF_LOOPBACK != 0));
            assert!(all.iter().any(|l| l.name == "v1"));
        }) else {
            return;
        };
    }

    #[test]
    fn addresses_and_routes() {
        let Some(()) = in_netns(|| {
            ip("link add v0 type veth peer name v1");
            ip("link set v1 up");
            let i = link_index("v0").unwrap();
            link_up(i).unwrap();
            add_address(i, "192.0.2.2".parse().unwrap(), 24, false).unwrap();
            add_address(i, "2001:db8::2".parse().unwrap(), 64, true).unwrap();
            let e = add_address(i, "192.0.2.2".parse().unwrap(), 24, false).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
            add_route(i, &NsRoute::via(a("0.0.0.0"), 0, a("192.0.2.1"))).unwrap();
            add_route(i, &NsRoute::direct(a("198.51.100.0"), 24)).unwrap();
            add_route(i, &NsRoute::via(a("::"), 0, a("2001:db8::1"))).unwrap();

            let a4 = addresses(false).unwrap();
            assert!(a4.iter().any(|a| a.index == i
                && a.addr == "192.0.2.2".parse::<IpAddr>().unwrap()
                && a.prefix == 24));
            let a6 = addresses(true).unwrap();
            let g = a6
                .iter()
                .find(|a| a.addr == "2001:db8::2".parse::<IpAddr>().unwrap())
                .unwrap();
            assert!(g.flags & IFA_F_NODAD != 0);
            assert!(g.flags & IFA_F_TENTATIVE == 0);

            let r4 = routes(false).unwrap();
            let d = r4.iter().find(|r| r.is_default()).unwrap();
            assert_eq!(d.hops[0].gateway, Some("192.0.2.1".parse().unwrap()));
            assert_eq!(d.hops[0].ifindex, i);
            assert!(r4
                .iter()
                .any(|r| r.prefix == 24 && r.dst == "198.51.100.0".parse::<IpAddr>().unwrap()));
            let r6 = routes(true).unwrap();
            assert!(r6.iter().any(|r| r.is_default()
                && r.best_hop().and_then(|h| h.gateway) == Some("2001:db8::1".parse().unwrap())));
        }) else {
            return;
        };
    }

    fn hop(gw: Option<&str>, weight: u16, onlink: bool) -> NsHop {
        NsHop {
            gateway: gw.map(a),
            weight,
            onlink,
        }
    }

    /// Routes with flags, several next hops and attributes go in as they
    /// are and come back the same from a dump.
    #[test]
    fn routes_round_trip() {
        let Some(()) = in_netns(|| {
            ip("link add v0 type veth peer name v1");
            ip("link set v1 up");
            let i = link_index("v0").unwrap();
            link_up(i).unwrap();
            add_address(i, a("192.0.2.77"), 32, false).unwrap();
            add_address(i, a("2001:db8::2"), 64, true).unwrap();
            let mut onlink = NsRoute::via(a("0.0.0.0"), 0, a("198.51.100.1"));
            onlink.hops[0].onlink = true;
            onlink.metric = Some(50);
            let mut multi4 = NsRoute::via(a("203.0.113.0"), 24, a("198.51.100.1"));
            multi4.hops = vec![
                hop(Some("198.51.100.1"), 1, true),
                hop(Some("198.51.100.2"), 3, true),
            ];
            multi4.metrics = vec![
                RouteMetric::Mtu(1400),
                RouteMetric::Advmss(1360),
                RouteMetric::Hoplimit(33),
            ];
            let mut multi6 = NsRoute::via(a("::"), 0, a("fe80::1"));
            multi6.hops = vec![
                hop(Some("fe80::1"), 1, false),
                hop(Some("fe80::2"), 1, false),
            ];
            multi6.metric = Some(1024);
            let mut attrs6 = NsRoute::via(a("2001:db8:ff::"), 48, a("fe80::1"));
            attrs6.metric = Some(1024);
            attrs6.metrics = vec![RouteMetric::Mtu(1300), RouteMetric::Hoplimit(40)];
            attrs6.pref = Some(1); // high
            for r in [&onlink, &multi4, &multi6, &attrs6] {
                add_route(i, r).unwrap_or_else(|e| panic!("{r}: {e}"));
            }
            let dumped = |v6: bool, dst: &str, prefix: u8| -> RouteInfo {
                routes(v6)
                    .unwrap()
                    .into_iter()
                    .find(|r| r.dst == a(dst) && r.prefix == prefix)
                    .unwrap_or_else(|| panic!("no route {dst}/{prefix}"))
            };
            let d = dumped(false, "0.0.0.0", 0);
            assert_eq!(d.hops.len(), 1);
            assert!(d.hops[0].onlink && d.hops[0].gateway == Some(a("198.51.100.1")));
            assert_eq!(d.metric, Some(50));
            let m = dumped(false, "203.0.113.0", 24);
            let hops: Vec<_> = m
                .hops
                .iter()
                .map(|h| (h.gateway.unwrap(), h.weight, h.onlink, h.ifindex))
                .collect();
            assert_eq!(
                hops,
                vec![
                    (a("198.51.100.1"), 1, true, i),
                    (a("198.51.100.2"), 3, true, i)
                ]
            );
            for want in [
                RouteMetric::Mtu(1400),
                RouteMetric::Advmss(1360),
                RouteMetric::Hoplimit(33),
            ] {
                assert!(m.metrics.contains(&want), "{want:?} in {:?}", m.metrics);
            }
            let m6 = dumped(true, "::", 0);
            let gws: Vec<_> = m6.hops.iter().map(|h| h.gateway.unwrap()).collect();
            assert_eq!(gws, vec![a("fe80::1"), a("fe80::2")]);
            let r6 = dumped(true, "2001:db8:ff::", 48);
            assert!(r6.metrics.contains(&RouteMetric::Mtu(1300)));
            assert!(r6.metrics.contains(&RouteMetric::Hoplimit(40)));
            assert_eq!(r6.pref, Some(1));
            let shown = ip_out("-6 route show 2001:db8:ff::/48");
            assert!(
                shown.contains("mtu 1300") && shown.contains("pref high"),
                "{shown}"
            );
            // Written as ip route writes it, for error messages.
            assert_eq!(
                multi4.to_string(),
                "203.0.113.0/24 nexthop via 198.51.100.1 onlink weight 1 \
                 nexthop via 198.51.100.2 onlink weight 3 mtu 1400 advmss 1360 hoplimit 33"
            );
            assert_eq!(
                onlink.to_string(),
                "default via 198.51.100.1 onlink metric 50"
            );
        }) else {
            return;
        };
    }

    fn sequence_config() -> NsNetConfig {
        let mut onlink = NsRoute::via(a("0.0.0.0"), 0, a("192.0.2.1"));
        onlink.hops[0].onlink = true;
        let mut multi6 = NsRoute::via(a("::"), 0, a("fe80::1"));
        multi6.hops = vec![
            hop(Some("fe80::1"), 1, false),
            hop(Some("fe80::2"), 1, false),
        ];
        NsNetConfig {
            ifname: "ns0".into(),
            mtu: Some(9000),
            mac: Some([2, 0x11, 0x22, 0x33, 0x44, 0x55]),
            v4: Some(NsFamily {
                addrs: vec![NsAddr {
                    addr: a("192.0.2.2"),
                    prefix: 32,
                }],
                routes: vec![onlink],
                local: false,
            }),
            v6: Some(NsFamily {
                addrs: vec![NsAddr {
                    addr: a("2001:db8::2"),
                    prefix: 64,
                }],
                routes: vec![multi6],
                local: false,
            }),
        }
    }

    #[test]
    fn config_net_sequence() {
        let Some(()) = in_netns(|| {
            ip("link add ns0 type veth peer name peer0");
            ip("link set peer0 up");
            let cfg = sequence_config();
            configure_ns_interface(&cfg).unwrap();
            // Usable at once: every address has its local route, the only
            // link-local address is ours, the generation mode is as before.
            let local = ip_out("-6 route show table local dev ns0");
            assert!(local.contains("local 2001:db8::2 "), "{local}");
            assert!(local.contains("local fe80::11:22ff:fe33:4455 "), "{local}");
            assert_eq!(
                ip_out("-6 addr show dev ns0 scope link")
                    .matches("inet6 ")
                    .count(),
                1
            );
            assert!(ip_out("-d link show ns0").contains("addrgenmode eui64"));
            // Running it again changes nothing and doesn't fail.
            configure_ns_interface(&cfg).unwrap();

            let link = ip_out("-j link show ns0");
            assert!(link.contains("\"mtu\":9000"), "{link}");
            assert!(link.contains("02:11:22:33:44:55"), "{link}");
            assert!(link.contains("\"UP\""), "{link}");
            assert!(!link.contains("NOARP"), "{link}");
            let addr = ip_out("-j addr show ns0");
            assert!(
                addr.contains("\"local\":\"192.0.2.2\",\"prefixlen\":32"),
                "{addr}"
            );
            assert!(
                addr.contains("\"local\":\"2001:db8::2\",\"prefixlen\":64"),
                "{addr}"
            );
            assert!(!addr.contains("tentative"), "{addr}");
            assert!(
                addr.contains("\"local\":\"fe80::11:22ff:fe33:4455\""),
                "{addr}"
            );
            let r4 = ip_out("-4 route show dev ns0");
            assert!(r4.contains("default via 192.0.2.1 onlink"), "{r4}");
            let r6 = ip_out("-6 route show default");
            assert!(
                r6.contains("nexthop via fe80::1 dev ns0")
                    && r6.contains("nexthop via fe80::2 dev ns0"),
                "{r6}"
            );
        }) else {
            return;
        };
    }

    /// A route the namespace refuses is an error naming it; one that exists
    /// already is not.
    #[test]
    fn config_net_route_failure_names_the_route() {
        let Some(()) = in_netns(|| {
            ip("link add ns0 type veth peer name peer0");
            ip("link set peer0 up");
            let mut cfg = sequence_config();
            let v4 = cfg.v4.as_mut().unwrap();
            v4.routes.push(NsRoute::direct(a("192.0.2.2"), 32));
            v4.routes
                .push(NsRoute::via(a("203.0.113.0"), 24, a("198.18.0.1")));
            let e = configure_ns_interface(&cfg).unwrap_err().to_string();
            assert!(
                e.contains("adding the route 203.0.113.0/24 via 198.18.0.1 on ns0")
                    && e.contains("Network is unreachable")
                    && e.contains("not on the link"),
                "{e}"
            );
        }) else {
            return;
        };
    }

    /// A family in local mode that the namespace has disabled is left out;
    /// one from the host is an error.
    #[test]
    fn config_net_local_family_without_ipv6() {
        let Some(()) = in_netns(|| {
            ip("link add ns0 type veth peer name peer0");
            ip("link set peer0 up");
            std::fs::write("/proc/sys/net/ipv6/conf/ns0/disable_ipv6", "1").unwrap();
            let mut cfg = sequence_config();
            let e = configure_ns_interface(&cfg).unwrap_err().to_string();
            assert!(e.contains("adding address fe80::"), "{e}");
            let v6 = cfg.v6.as_mut().unwrap();
            v6.local = true;
            v6.addrs.clear();
            v6.routes = vec![NsRoute::via(a("::"), 0, a("fe80::1"))];
            configure_ns_interface(&cfg).unwrap();
            let r4 = ip_out("-4 route show dev ns0");
            assert!(r4.contains("default via 192.0.2.1 onlink"), "{r4}");
        }) else {
            return;
        };
    }
}
