//! Host discovery: the template interface of each family, its addresses and
//! routes, and the ephemeral port range.

use super::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFamily {
    /// Interface name.
    pub ifname: String,
    /// Interface index.
    pub ifindex: u32,
    /// Link-local address of the interface (IPv6).
    pub link_local: Option<IpAddr>,
    /// Interface MTU.
    pub mtu: u32,
    /// Usable addresses (not link-local, not deprecated), most specific
    /// prefix first.
    pub addrs: Vec<NsAddr>,
    /// Default gateway through this interface: of the default route with the
    /// lowest metric that has one, the next hop on this interface with the
    /// highest weight (the first on a tie). `--config-net` copies every next
    /// hop of that route, so the namespace routes through this one.
    pub gateway: Option<IpAddr>,
    /// Routes through this interface, for `--config-net` to copy.
    pub routes: Vec<NsRoute>,
}

/// What discovery found on the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// IPv4 template interface, if any.
    pub v4: Option<HostFamily>,
    /// IPv6 template interface, if any.
    pub v6: Option<HostFamily>,
    /// The host's ephemeral port range.
    pub ephemeral: (u16, u16),
    /// The host has no IPv6 at all (its kernel refuses IPv6 dumps): no IPv6
    /// local mode either.
    pub no_ipv6: bool,
    /// Remarks worth logging (several default routes, ...).
    pub notes: Vec<String>,
}

/// Default routes, lowest metric first (the one the kernel uses), the
/// kernel's order among equal metrics.
pub(super) fn defaults_by_metric(routes: &[RouteInfo]) -> Vec<&RouteInfo> {
    let mut d: Vec<&RouteInfo> = routes.iter().filter(|r| r.is_default()).collect();
    d.sort_by_key(|r| r.priority());
    d
}

/// Chooses the template interface: `requested` by name, else the interface of
/// the best next hop of the default route with the lowest metric, else the
/// first interface with a route that is not link-local. Loopback interfaces
/// are never chosen implicitly.
pub fn pick_template(
    links: &[LinkInfo],
    routes: &[RouteInfo],
    requested: Option<&str>,
    notes: &mut Vec<String>,
) -> io::Result<Option<u32>> {
    if let Some(name) = requested {
        return links
            .iter()
            .find(|l| l.name == name)
            .map(|l| Some(l.index))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no interface called '{name}'"),
                )
            });
    }
    let usable = |i: u32| {
        links
            .iter()
            .any(|l| l.index == i && l.flags & IFF_LOOPBACK == 0)
    };
    let defaults: Vec<u32> = defaults_by_metric(routes)
        .into_iter()
        .filter_map(|r| netlink::best_of(r.hops.iter().filter(|h| usable(h.ifindex))))
        .map(|h| h.ifindex)
        .collect();
    if let Some(first) = defaults.first() {
        if defaults.iter().any(|i| i != first) {
            notes.push("several interfaces have a default route: using the first".into());
        }
        return Ok(Some(*first));
    }
    Ok(routes
        .iter()
        .filter(|r| !netlink::is_link_local(r.dst) && !r.dst.is_multicast())
        .filter_map(|r| r.best_hop().map(|h| h.ifindex))
        .find(|i| usable(*i)))
}

/// The namespace's copy of a host route: the next hops through the template
/// interface `ifindex` with their flags, and the route's attributes. `None`
/// if no next hop goes through it, or for a route the namespace can't mean
/// the same by (lightweight tunnel encapsulation).
pub(super) fn copy_route(r: &RouteInfo, ifindex: u32) -> Option<NsRoute> {
    if r.encap {
        return None;
    }
    let hops: Vec<NsHop> = r
        .hops
        .iter()
        .filter(|h| h.ifindex == ifindex)
        .map(|h| NsHop {
            gateway: h.gateway,
            weight: h.weight,
            onlink: h.onlink,
        })
        .collect();
    if hops.is_empty() {
        return None;
    }
    // A single next hop left of a multipath route: a plain route.
    let hops = match hops.as_slice() {
        [h] => vec![NsHop { weight: 1, ..*h }],
        _ => hops,
    };
    Some(NsRoute {
        dst: r.dst,
        prefix: r.prefix,
        scope: r.scope,
        tos: r.tos,
        metric: r.metric,
        metrics: r.metrics.clone(),
        pref: r.pref.filter(|_| r.dst.is_ipv6()),
        hops,
    })
}

/// Builds the template information for `ifindex` from dumps.
pub fn template_family(
    links: &[LinkInfo],
    addrs: &[AddrInfo],
    routes: &[RouteInfo],
    ifindex: u32,
) -> Option<HostFamily> {
    let link = links.iter().find(|l| l.index == ifindex)?;
    let mut usable: Vec<NsAddr> = addrs
        .iter()
        .filter(|a| a.index == ifindex && a.flags & IFA_F_DEPRECATED == 0)
        .filter(|a| !(a.addr.is_ipv6() && a.is_link_local()))
        .map(|a| NsAddr {
            addr: a.addr,
            prefix: a.prefix,
        })
        .collect();
    // Stable: among equal prefixes the kernel's order stays.
    usable.sort_by_key(|a| std::cmp::Reverse(a.prefix));
    let link_local = addrs
        .iter()
        .find(|a| a.index == ifindex && a.addr.is_ipv6() && a.is_link_local())
        .map(|a| a.addr);
    let gateway = defaults_by_metric(routes).into_iter().find_map(|r| {
        let same_family = |g: &IpAddr| g.is_ipv6() == r.dst.is_ipv6();
        netlink::best_of(
            r.hops
                .iter()
                .filter(|h| h.ifindex == ifindex && h.gateway.is_some_and(|g| same_family(&g))),
        )
        .and_then(|h| h.gateway)
    });
    let copied = routes
        .iter()
        .filter(|r| !netlink::is_link_local(r.dst) && !r.dst.is_multicast())
        .filter_map(|r| copy_route(r, ifindex))
        .collect();
    Some(HostFamily {
        ifname: link.name.clone(),
        ifindex,
        mtu: link.mtu,
        addrs: usable,
        gateway,
        link_local,
        routes: copied,
    })
}

/// Reads the ephemeral port range (RFC 6335's if unreadable).
pub fn read_ephemeral() -> (u16, u16) {
    let Ok(s) = std::fs::read_to_string(EPHEMERAL_PATH) else {
        return EPHEMERAL_DEFAULT;
    };
    let mut it = s.split_ascii_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b))) if a <= b => (a, b),
        _ => EPHEMERAL_DEFAULT,
    }
}

/// Discovers the host's template interfaces, addresses, gateways and MTU
/// through netlink, in the network namespace of the calling thread.
pub fn discover_host(opts: &Options) -> io::Result<HostInfo> {
    let links = netlink::links()?;
    let mut host = HostInfo {
        ephemeral: read_ephemeral(),
        ..HostInfo::default()
    };
    for v6 in [false, true] {
        if (v6 && opts.ipv4_only) || (!v6 && opts.ipv6_only) {
            continue;
        }
        let dumps = netlink::routes(v6).and_then(|r| Ok((r, netlink::addresses(v6)?)));
        let (routes, addrs) = match dumps {
            Ok(d) => d,
            // A kernel without IPv6 refuses the IPv6 dumps: go on without it.
            Err(e) if v6 => {
                host.notes.push(format!("IPv6 not available: {e}"));
                host.no_ipv6 = true;
                continue;
            }
            Err(e) => return Err(e),
        };
        let outbound_if = if v6 {
            opts.outbound_if6.as_deref()
        } else {
            opts.outbound_if4.as_deref()
        };
        let requested = opts.interface.as_deref().or(outbound_if);
        let Some(ifindex) = pick_template(&links, &routes, requested, &mut host.notes)? else {
            continue;
        };
        let fam = template_family(&links, &addrs, &routes, ifindex);
        if v6 {
            host.v6 = fam;
        } else {
            host.v4 = fam;
        }
    }
    Ok(host)
}
