//! The `--config-net` side: addresses, routes and link settings written into
//! the namespace, and the wait until the kernel has made them usable.

use super::*;

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
    let mut out = None;
    get_link(ifindex, |l| {
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
    Ok(all_routes(v6)?
        .filter(|r| r.table == TABLE_LOCAL && r.kind == RTN_LOCAL)
        .map(|r| r.dst)
        .collect())
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
    wait_ready(ifindex, dev, &addrs)
}

/// Step 7 of [`configure_ns_interface`]: waits, at most
/// [`ADDR_READY_TIMEOUT`], until every one of `addrs` is usable (a warning
/// if one is not by then).
fn wait_ready(ifindex: u32, dev: &str, addrs: &[IpAddr]) -> io::Result<()> {
    let start = std::time::Instant::now();
    loop {
        let pending = first_unready(ifindex, addrs)
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
