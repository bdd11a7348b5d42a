//! The namespace's network as `--config-net` writes it: addresses, routes
//! with every next hop, and how they follow from the host's.

use super::*;

/// An address with its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsAddr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

/// One next hop of a namespace route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsHop {
    /// Gateway; `None`: the destination is on the link.
    pub gateway: Option<IpAddr>,
    /// Weight among the next hops of a multipath route (1..=256).
    pub weight: u16,
    /// `onlink`: the gateway is on the link even though no route covers it
    /// (a /32 address with its router elsewhere, as on many cloud hosts).
    pub onlink: bool,
}

/// A route of the namespace: `dst/prefix` (prefix 0 for the default route)
/// through one next hop, or several (multipath), all on the namespace's
/// interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsRoute {
    /// Destination network.
    pub dst: IpAddr,
    /// Destination prefix length.
    pub prefix: u8,
    /// `RT_SCOPE_*`: link for a route without gateway, universe otherwise.
    pub scope: u8,
    /// Type of service.
    pub tos: u8,
    /// Metric, if not the kernel's default.
    pub metric: Option<u32>,
    /// Route attributes (`mtu`, `advmss`, `hoplimit`, ...).
    pub metrics: Vec<netlink::RouteMetric>,
    /// IPv6 router preference.
    pub pref: Option<u8>,
    /// Next hops: one for a plain route, several for a multipath one.
    pub hops: Vec<NsHop>,
}

/// `RT_SCOPE_UNIVERSE`.
pub(super) const SCOPE_UNIVERSE: u8 = 0;
/// `RT_SCOPE_LINK`.
pub(super) const SCOPE_LINK: u8 = 253;

impl NsRoute {
    /// `dst/prefix via gw`.
    pub fn via(dst: IpAddr, prefix: u8, gw: IpAddr) -> NsRoute {
        NsRoute {
            dst,
            prefix,
            scope: SCOPE_UNIVERSE,
            tos: 0,
            metric: None,
            metrics: Vec::new(),
            pref: None,
            hops: vec![NsHop {
                gateway: Some(gw),
                weight: 1,
                onlink: false,
            }],
        }
    }

    /// `dst/prefix` on the link.
    pub fn direct(dst: IpAddr, prefix: u8) -> NsRoute {
        NsRoute {
            hops: vec![NsHop {
                gateway: None,
                weight: 1,
                onlink: false,
            }],
            scope: SCOPE_LINK,
            ..NsRoute::via(dst, prefix, dst)
        }
    }

    /// Whether no next hop has a gateway: such routes go in first, as the
    /// gateways of the others may need them.
    pub fn is_direct(&self) -> bool {
        self.hops.iter().all(|h| h.gateway.is_none())
    }

    /// The gateway of the first next hop.
    pub fn gateway(&self) -> Option<IpAddr> {
        self.hops.first().and_then(|h| h.gateway)
    }
}

pub(super) fn metric_text(m: &netlink::RouteMetric) -> String {
    use netlink::RouteMetric as M;
    match m {
        M::Lock(v) => format!("lock {v:#x}"),
        M::Mtu(v) => format!("mtu {v}"),
        M::Window(v) => format!("window {v}"),
        M::Rtt(v) => format!("rtt {v}"),
        M::RttVar(v) => format!("rttvar {v}"),
        M::SsThresh(v) => format!("ssthresh {v}"),
        M::Cwnd(v) => format!("cwnd {v}"),
        M::Advmss(v) => format!("advmss {v}"),
        M::Reordering(v) => format!("reordering {v}"),
        M::Hoplimit(v) => format!("hoplimit {v}"),
        M::InitCwnd(v) => format!("initcwnd {v}"),
        M::Features(v) => format!("features {v:#x}"),
        M::RtoMin(v) => format!("rto_min {v}"),
        M::InitRwnd(v) => format!("initrwnd {v}"),
        M::QuickAck(v) => format!("quickack {v}"),
        M::CcAlgo(v) => format!("congctl {v}"),
        M::FastopenNoCookie(v) => format!("fastopen_no_cookie {v}"),
        other => format!("{other:?}"),
    }
}

/// As `ip route` writes it: `default via 192.0.2.1 onlink metric 100 mtu
/// 1400`, `default nexthop via fe80::1 weight 1 nexthop via fe80::2 weight 1`.
impl std::fmt::Display for NsRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix == 0 {
            f.write_str("default")?;
        } else {
            write!(f, "{}/{}", self.dst, self.prefix)?;
        }
        let hop = |f: &mut std::fmt::Formatter<'_>, h: &NsHop| -> std::fmt::Result {
            if let Some(g) = h.gateway {
                write!(f, " via {g}")?;
            }
            if h.onlink {
                f.write_str(" onlink")?;
            }
            Ok(())
        };
        match self.hops.as_slice() {
            [h] => hop(f, h)?,
            hops => {
                for h in hops {
                    f.write_str(" nexthop")?;
                    hop(f, h)?;
                    write!(f, " weight {}", h.weight)?;
                }
            }
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        for m in &self.metrics {
            write!(f, " {}", metric_text(m))?;
        }
        Ok(())
    }
}

/// What `--config-net` sets up for one address family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NsFamily {
    /// Addresses, added without duplicate address detection.
    pub addrs: Vec<NsAddr>,
    /// Routes, on-link ones added first.
    pub routes: Vec<NsRoute>,
    /// Local mode (no host interface for this family): left out with a
    /// warning if the namespace has this family disabled.
    pub local: bool,
}

/// What `--config-net` applies to the namespace's interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NsNetConfig {
    /// Interface name in the namespace.
    pub ifname: String,
    /// Link MTU, if one is set.
    pub mtu: Option<u32>,
    /// Link MAC (`--ns-mac-addr`), if one is set.
    pub mac: Option<[u8; 6]>,
    /// IPv4 set-up, if IPv4 is in use.
    pub v4: Option<NsFamily>,
    /// IPv6 set-up, if IPv6 is in use.
    pub v6: Option<NsFamily>,
}

/// The host's template interface for one address family.
pub(super) fn ns_net_config(
    opts: &Options,
    core: &Config,
    t4: Option<&HostFamily>,
    t6: Option<&HostFamily>,
    (local4, local6): (bool, bool),
    ifname: &str,
) -> NsNetConfig {
    let v4 = core.ip4.as_ref().map(|c| {
        let own = NsAddr {
            addr: IpAddr::V4(c.addr),
            prefix: c.prefix_len,
        };
        let given = (opts.addr4().is_some(), opts.gateway4().is_some());
        let gw = c.gateway.map(IpAddr::V4);
        ns_family(opts, t4, false, local4, given, Some(own), gw)
    });
    let v6 = core.ip6.as_ref().map(|c| {
        // No address of our own to give while we have none.
        let own = (!c.addr.is_unspecified()).then_some(NsAddr {
            addr: IpAddr::V6(c.addr),
            prefix: 64,
        });
        let given = (opts.addr6().is_some(), opts.gateway6().is_some());
        let gw = c.gateway.map(IpAddr::V6);
        ns_family(opts, t6, true, local6, given, own, gw)
    });
    NsNetConfig {
        ifname: ifname.to_string(),
        mtu: core.mtu.map(u32::from),
        mac: opts.ns_mac_addr.map(|m| m.0),
        v4,
        v6,
    }
}

/// The set-up of one family (`v6`: which) of the namespace: the addresses
/// and routes of the host's template `t`, or our own address `own` and the
/// default route through `gw` alone in local mode, with an address or a
/// gateway given (`given`: whether each was), or with `--no-copy-addrs`
/// (`--no-copy-routes`).
fn ns_family(
    opts: &Options,
    t: Option<&HostFamily>,
    v6: bool,
    local: bool,
    (addr_given, gw_given): (bool, bool),
    own: Option<NsAddr>,
    gw: Option<IpAddr>,
) -> NsFamily {
    let single = local || addr_given || opts.no_copy_addrs;
    let addrs: Vec<NsAddr> = match t {
        Some(t) if !single => t
            .addrs
            .iter()
            .filter(|a| a.addr.is_ipv6() == v6)
            .copied()
            .collect(),
        _ => own.into_iter().collect(),
    };
    let only_default = local || gw_given || opts.no_copy_routes;
    let routes = match t {
        Some(t) if !only_default => t.routes.clone(),
        _ => default_route(gw, &addrs),
    };
    NsFamily {
        addrs,
        routes,
        local,
    }
}

/// Whether `a` is inside `net/prefix`.
pub(super) fn in_prefix(a: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let (a, net, bits) = match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (
            u128::from(u32::from(a)) << 96,
            u128::from(u32::from(n)) << 96,
            prefix.min(32),
        ),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), prefix.min(128)),
        _ => return false,
    };
    let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
    a & mask == net & mask
}

/// The default route through `gw` alone, `onlink` if no address of the
/// namespace has it in its prefix (a /32 address, a gateway given with -g
/// outside the address's network): the kernel refuses such a gateway
/// otherwise. A link-local IPv6 gateway is always on the link.
pub(super) fn default_route(gw: Option<IpAddr>, addrs: &[NsAddr]) -> Vec<NsRoute> {
    gw.map(|g| {
        let on_link =
            netlink::is_link_local(g) || addrs.iter().any(|a| in_prefix(g, a.addr, a.prefix));
        let unspec = match g {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let mut r = NsRoute::via(unspec, 0, g);
        r.hops[0].onlink = !on_link;
        r
    })
    .into_iter()
    .collect()
}
