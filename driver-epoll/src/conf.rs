//! From the command line, the host's interfaces and its resolver
//! configuration to a [`RuntimeConfig`]: the core's [`Config`] plus what the
//! driver itself needs (socket, namespaces, logging, `--config-net`).
//!
//! [`discover_host`] looks at the host through netlink; [`build`] is pure
//! (apart from the random secret and the clock for the DHCPv6 DUID, and user
//! name look-ups for `--runas`) so that the rules can be tested with made-up
//! hosts.

use crate::cli::{self, IdOrName, Mode, Options, PastaTarget};
use crate::fwd::{Forwarding, FwdMode, FwdTable, SpecKind, EPHEMERAL_DEFAULT};
use crate::netlink::{self, AddrInfo, LinkInfo, RouteInfo, IFA_F_DEPRECATED, IFF_LOOPBACK};
use crate::resolv::Resolv;
use passt_core::Proto;
use passt_core::{Config, Ip4Config, Ip6Config, Mac, DEFAULT_MTU, MAX_DNS, MAX_SEARCH};
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// Local mode: the guest's IPv4 address.
pub const LOCAL_ADDR4: Ipv4Addr = Ipv4Addr::new(169, 254, 2, 1);
/// Local mode: IPv4 prefix length.
pub const LOCAL_PREFIX4: u8 = 16;
/// Local mode: IPv4 gateway (our address).
pub const LOCAL_GW4: Ipv4Addr = Ipv4Addr::new(169, 254, 2, 2);
/// Local mode: IPv6 gateway and our link-local address.
pub const LOCAL_GW6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// Namespace interface name in local mode.
pub const LOCAL_IFNAME: &str = "tap0";
/// Where the ephemeral port range is read from.
pub const EPHEMERAL_PATH: &str = "/proc/sys/net/ipv4/ip_local_port_range";

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
    /// Next hops: one for a plain route, several for a multipath one.
    pub hops: Vec<NsHop>,
    /// Metric, if not the kernel's default.
    pub metric: Option<u32>,
    /// `RT_SCOPE_*`: link for a route without gateway, universe otherwise.
    pub scope: u8,
    /// Type of service.
    pub tos: u8,
    /// Route attributes (`mtu`, `advmss`, `hoplimit`, ...).
    pub metrics: Vec<netlink::RouteMetric>,
    /// IPv6 router preference.
    pub pref: Option<u8>,
}

/// `RT_SCOPE_UNIVERSE`.
const SCOPE_UNIVERSE: u8 = 0;
/// `RT_SCOPE_LINK`.
const SCOPE_LINK: u8 = 253;

impl NsRoute {
    /// `dst/prefix via gw`.
    pub fn via(dst: IpAddr, prefix: u8, gw: IpAddr) -> NsRoute {
        NsRoute {
            dst,
            prefix,
            hops: vec![NsHop {
                gateway: Some(gw),
                weight: 1,
                onlink: false,
            }],
            metric: None,
            scope: SCOPE_UNIVERSE,
            tos: 0,
            metrics: Vec::new(),
            pref: None,
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

fn metric_text(m: &netlink::RouteMetric) -> String {
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFamily {
    /// Interface name.
    pub ifname: String,
    /// Interface index.
    pub ifindex: u32,
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
    /// Link-local address of the interface (IPv6).
    pub link_local: Option<IpAddr>,
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
fn defaults_by_metric(routes: &[RouteInfo]) -> Vec<&RouteInfo> {
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
fn copy_route(r: &RouteInfo, ifindex: u32) -> Option<NsRoute> {
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
        hops,
        metric: r.metric,
        scope: r.scope,
        tos: r.tos,
        metrics: r.metrics.clone(),
        pref: r.pref.filter(|_| r.dst.is_ipv6()),
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

/// Everything a run needs: the core's configuration and the driver's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// The core's configuration.
    pub core: Config,
    /// The forwarding tables (`-t`, `-u`, `-T`, `-U`); the explicit and
    /// `all` ones of `-t` and `-u` are in `core.forwards` too.
    pub fwd: Forwarding,
    /// passt or pasta.
    pub mode: Mode,
    /// Name of the tap interface in the namespace (pasta).
    pub ns_ifname: String,
    /// What `--config-net` applies (pasta with `--config-net` only).
    pub ns_net: Option<NsNetConfig>,
    /// Host template interface names (IPv4, IPv6), for messages.
    pub template4: Option<String>,
    /// See [`Self::template4`].
    pub template6: Option<String>,
    /// Index of the IPv6 template interface: the scope of link-local
    /// destinations on the host side.
    pub ifindex6: Option<u32>,
    /// No usable host interface for IPv4: link-local defaults (local mode).
    pub local4: bool,
    /// The same for IPv6.
    pub local6: bool,
    /// `-s`: the UNIX domain socket (passt); `None` probes a free one.
    pub socket_path: Option<PathBuf>,
    /// `-F`: pre-opened descriptor.
    pub fd: Option<i32>,
    /// Exit when the client goes away (`-1`, implied by `--fd` for passt).
    pub one_off: bool,
    /// passt `--vhost-user`: the socket speaks vhost-user.
    pub vhost_user: bool,
    /// Don't daemonise.
    pub foreground: bool,
    /// Warnings and errors only.
    pub quiet: bool,
    /// Debug messages.
    pub debug: bool,
    /// Per-packet messages.
    pub trace: bool,
    /// `-l`.
    pub log_file: Option<PathBuf>,
    /// `--log-size` (default 1 MiB).
    pub log_size: u64,
    /// `-p`.
    pub pcap: Option<PathBuf>,
    /// `-P`.
    pub pid_file: Option<PathBuf>,
    /// `--runas`, resolved to (uid, gid). `None`: keep the current ids (the
    /// driver drops root to nobody by itself).
    pub runas: Option<(u32, u32)>,
    /// `--seccomp-log`: log system calls outside the allowlist instead of
    /// killing the process.
    pub seccomp_log: bool,
    /// `--stats`: seconds between event count lines.
    pub stats: Option<u32>,
    /// What pasta connects to.
    pub target: Option<PastaTarget>,
    /// User namespace to join: `--userns`, or that of the target PID.
    pub userns: Option<PathBuf>,
    /// Don't create or join a user namespace.
    pub netns_only: bool,
    /// `--no-netns-quit`.
    pub no_netns_quit: bool,
    /// `--no-splice` (always set for passt).
    pub no_splice: bool,
    /// pasta `--no-tap-offload`: a plain tap, without virtio-net headers.
    pub no_tap_offload: bool,
    /// `--host-lo-to-ns-lo`.
    pub host_lo_to_ns_lo: bool,
    /// `-o` per family.
    pub outbound4: Option<Ipv4Addr>,
    /// See [`Self::outbound4`].
    pub outbound6: Option<Ipv6Addr>,
    /// `--outbound-if4`.
    pub outbound_if4: Option<String>,
    /// `--outbound-if6`.
    pub outbound_if6: Option<String>,
    /// Things to log at start-up (remapped ports, no nameserver, ...).
    pub warnings: Vec<String>,
}

fn classful(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        192..=223 => 24,
        _ => 32,
    }
}

fn v4_of(a: IpAddr) -> Option<Ipv4Addr> {
    match a {
        IpAddr::V4(v) => Some(v),
        IpAddr::V6(_) => None,
    }
}

fn v6_of(a: IpAddr) -> Option<Ipv6Addr> {
    match a {
        IpAddr::V6(v) => Some(v),
        IpAddr::V4(_) => None,
    }
}

/// Fills `buf` from the kernel's random source (`/dev/urandom` as fallback).
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0usize;
    for _ in 0..16 {
        let Some(rest) = buf.get_mut(filled..) else {
            break;
        };
        if rest.is_empty() {
            return Ok(());
        }
        // SAFETY: the pointer and length describe `rest`, which is valid for
        // writes for its whole length.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n <= 0 {
            break;
        }
        filled += n as usize;
    }
    if filled >= buf.len() {
        return Ok(());
    }
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// Seconds since 2000-01-01 00:00:00 UTC (the DHCPv6 DUID-LLT epoch).
pub fn duid_time_now() -> u32 {
    const Y2K: u64 = 946_684_800;
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().saturating_sub(Y2K))
        .unwrap_or(0)
        .try_into()
        .unwrap_or(u32::MAX)
}

fn resolve_runas(r: &cli::RunAs) -> Result<(u32, u32), String> {
    use nix::unistd::{Gid, Group, Uid, User};
    let (uid, user_gid) = match &r.user {
        IdOrName::Id(u) => {
            let gid = User::from_uid(Uid::from_raw(*u))
                .ok()
                .flatten()
                .map_or(*u, |p| p.gid.as_raw());
            (*u, gid)
        }
        IdOrName::Name(n) => {
            let p = User::from_name(n)
                .ok()
                .flatten()
                .ok_or_else(|| format!("--runas: no user called '{n}'"))?;
            (p.uid.as_raw(), p.gid.as_raw())
        }
    };
    if uid == 0 {
        return Err("--runas: running as root (UID 0) is not allowed".into());
    }
    let gid = match &r.group {
        None => user_gid,
        Some(IdOrName::Id(g)) => *g,
        Some(IdOrName::Name(n)) => Group::from_name(n)
            .ok()
            .flatten()
            .ok_or_else(|| format!("--runas: no group called '{n}'"))?
            .gid
            .as_raw(),
    };
    let _ = Gid::from_raw(gid);
    Ok((uid, gid))
}

/// Nameservers of one family: the advertised list, the guest-side address
/// redirected to the host resolver, and that resolver.
struct Dns<A> {
    list: Vec<A>,
    dns_match: Option<A>,
    dns_host: Option<A>,
}

/// Applies §DNS rules for one family. `given`: `-D` addresses of the family;
/// `map`: the host-loopback mapping; `forward`/`host`: `--dns-forward` and
/// `--dns-host`.
fn dns_family<A: Copy + PartialEq>(
    disabled: bool,
    given: &[A],
    from_resolv: &[A],
    is_loopback: impl Fn(A) -> bool,
    map: Option<A>,
    forward: Option<A>,
    host: Option<A>,
) -> Dns<A> {
    let mut d = Dns {
        list: Vec::new(),
        dns_match: forward,
        dns_host: host,
    };
    if disabled {
        d.dns_match = None;
        d.dns_host = None;
        return d;
    }
    if d.dns_host.is_none() {
        d.dns_host = from_resolv.first().copied();
    }
    let push = |list: &mut Vec<A>, a: A| {
        if !list.contains(&a) && list.len() < MAX_DNS {
            list.push(a);
        }
    };
    if !given.is_empty() {
        for a in given {
            push(&mut d.list, *a);
        }
        return d;
    }
    for ns in from_resolv {
        if is_loopback(*ns) || Some(*ns) == map {
            // The guest can't reach the host's loopback, and the mapped
            // address (usually the gateway, which may be the resolver
            // itself) leads to the host: DNS sent to the address that
            // redirects to the host resolver is what to advertise. That is
            // the --dns-forward address if given (also with --no-map-gw),
            // else the mapped address, which then redirects DNS. Only one
            // redirection exists: further resolvers of this kind advertise
            // the same address.
            let m = match (d.dns_match, map) {
                (Some(m), _) => m,
                (None, Some(m)) => {
                    d.dns_match = Some(m);
                    m
                }
                (None, None) => continue,
            };
            push(&mut d.list, m);
        } else {
            push(&mut d.list, *ns);
        }
    }
    d
}

fn fwd_table(
    specs: &[String],
    kind: SpecKind,
    ephemeral: (u16, u16),
    default: FwdMode,
    disabled: bool,
    name: &str,
    warnings: &mut Vec<String>,
) -> Result<FwdTable, String> {
    if disabled {
        let mut t = FwdTable::new();
        t.set_default(FwdMode::None);
        return Ok(t);
    }
    let (mut t, w) =
        FwdTable::from_specs(specs, kind, ephemeral).map_err(|e| format!("{name}: {e}"))?;
    warnings.extend(w.into_iter().map(|w| format!("{name}: {w}")));
    t.set_default(default);
    Ok(t)
}

/// Builds the configuration of a run.
pub fn build(
    mode: Mode,
    opts: &Options,
    host: &HostInfo,
    resolv: &Resolv,
) -> Result<RuntimeConfig, String> {
    let mut warnings: Vec<String> = host.notes.clone();
    let v4_on = !opts.ipv6_only;
    let v6_on = !opts.ipv4_only;

    // Template-based settings per family.
    let t4 = host.v4.as_ref().filter(|_| v4_on);
    let t6 = host.v6.as_ref().filter(|_| v6_on);

    let addr4 = opts
        .addr4()
        .or_else(|| t4.and_then(|t| t.addrs.iter().find_map(|a| v4_of(a.addr))));
    let usable4 = t4.is_some() && addr4.is_some();
    let addr6 = opts
        .addr6()
        .or_else(|| t6.and_then(|t| t.addrs.iter().find_map(|a| v6_of(a.addr))));
    let ll6 = t6.and_then(|t| t.link_local).and_then(v6_of);
    let gw6 = opts
        .gateway6()
        .or_else(|| t6.and_then(|t| t.gateway).and_then(v6_of));
    // Our link-local address: a link-local gateway's, else the host's.
    let our_ll6 = match gw6 {
        Some(g) if netlink::is_link_local(IpAddr::V6(g)) => Some(g),
        _ => ll6,
    };
    let usable6 = t6.is_some() && addr6.is_some() && our_ll6.is_some();
    // Local mode, per family as upstream since 2025-12: a family without a
    // usable host interface gets link-local addresses and reaches the host
    // through the gateway mapping. Not for IPv6 on a host without IPv6.
    let local4 = v4_on && !usable4;
    let local6 = v6_on && !usable6 && !host.no_ipv6;

    let map4 = cli::map_v4(&opts.map_host_loopback);
    let map6 = cli::map_v6(&opts.map_host_loopback);
    let guest4 = cli::map_v4(&opts.map_guest_addr).flatten();
    let guest6 = cli::map_v6(&opts.map_guest_addr).flatten();

    let mut ip4 = None;
    if v4_on {
        let (addr, prefix, gateway) = if local4 {
            (
                opts.addr4().unwrap_or(LOCAL_ADDR4),
                opts.netmask.unwrap_or(LOCAL_PREFIX4),
                Some(opts.gateway4().unwrap_or(LOCAL_GW4)),
            )
        } else {
            let t = t4.ok_or("internal: no IPv4 template")?;
            let addr = addr4.ok_or("internal: no IPv4 address")?;
            let prefix = opts.netmask.unwrap_or_else(|| {
                if opts.addr4().is_some() {
                    t.addrs
                        .iter()
                        .find(|a| a.addr == IpAddr::V4(addr))
                        .map_or_else(|| classful(addr), |a| a.prefix)
                } else {
                    t.addrs
                        .iter()
                        .find(|a| a.addr == IpAddr::V4(addr))
                        .map_or(32, |a| a.prefix)
                }
            });
            let gw = opts.gateway4().or_else(|| t.gateway.and_then(v4_of));
            (addr, prefix, gw)
        };
        let mut c = Ip4Config::new(addr, prefix.min(32), gateway);
        c.map_host_loopback = match map4 {
            Some(m) => m,
            None if opts.no_map_gw => None,
            None => gateway,
        };
        c.map_guest_addr = guest4;
        ip4 = Some(c);
    }

    let mut ip6 = None;
    if usable6 || local6 {
        let (addr, gateway, our_ll) = if local6 {
            let gw = opts.gateway6().unwrap_or(LOCAL_GW6);
            let ll = if netlink::is_link_local(IpAddr::V6(gw)) {
                gw
            } else {
                LOCAL_GW6
            };
            (opts.addr6().unwrap_or(Ipv6Addr::UNSPECIFIED), Some(gw), ll)
        } else {
            let ll = our_ll6.ok_or("internal: no link-local address")?;
            (addr6.ok_or("internal: no IPv6 address")?, gw6, ll)
        };
        let mut c = Ip6Config::new(addr, gateway, our_ll);
        c.map_host_loopback = match map6 {
            Some(m) => m,
            None if opts.no_map_gw => None,
            None => gateway,
        };
        c.map_guest_addr = guest6;
        ip6 = Some(c);
    }

    // DNS.
    let disabled = opts.dns_disabled();
    let given4: Vec<Ipv4Addr> = opts
        .dns
        .iter()
        .filter_map(|d| match d {
            cli::AddrOrNone::Addr(a) => v4_of(*a),
            cli::AddrOrNone::None => None,
        })
        .collect();
    let given6: Vec<Ipv6Addr> = opts
        .dns
        .iter()
        .filter_map(|d| match d {
            cli::AddrOrNone::Addr(a) => v6_of(*a),
            cli::AddrOrNone::None => None,
        })
        .collect();
    if let Some(c) = ip4.as_mut() {
        let d = dns_family(
            disabled,
            &given4,
            &resolv.v4,
            |a: Ipv4Addr| a.is_loopback(),
            c.map_host_loopback,
            opts.dns_forward4(),
            opts.dns_host4(),
        );
        for a in d.list {
            let _ = c.dns.push(a);
        }
        c.dns_match = d.dns_match;
        c.dns_host = d.dns_host;
    }
    if let Some(c) = ip6.as_mut() {
        let d = dns_family(
            disabled,
            &given6,
            &resolv.v6,
            |a: Ipv6Addr| a.is_loopback(),
            c.map_host_loopback,
            opts.dns_forward6(),
            opts.dns_host6(),
        );
        for a in d.list {
            let _ = c.dns.push(a);
        }
        c.dns_match = d.dns_match;
        c.dns_host = d.dns_host;
    }
    let no_dns = ip4.as_ref().is_none_or(|c| c.dns.is_empty())
        && ip6.as_ref().is_none_or(|c| c.dns.is_empty());
    if !disabled && no_dns {
        warnings.push("no nameserver address to advertise".into());
    }

    let search: Vec<String> = if opts.search_disabled() {
        Vec::new()
    } else if !opts.search.is_empty() {
        opts.search.clone()
    } else {
        resolv.search.clone()
    }
    .into_iter()
    .take(MAX_SEARCH)
    .collect();

    // Services.
    let mut core = Config {
        our_mac: opts.mac_addr.unwrap_or(Mac::OUR_DEFAULT),
        guest_mac: opts.ns_mac_addr,
        mtu: match opts.mtu {
            Some(0) => None,
            Some(m) => Some(m),
            None => Some(DEFAULT_MTU),
        },
        search,
        hostname: opts.hostname.clone(),
        fqdn: opts.fqdn.clone(),
        ..Config::default()
    };
    let f = &mut core.features;
    f.tcp = !opts.no_tcp;
    f.udp = !opts.no_udp;
    f.icmp = !opts.no_icmp;
    f.dhcp = !opts.no_dhcp && ip4.as_ref().is_some_and(|c| c.gateway.is_some());
    f.ndp = !opts.no_ndp && ip6.is_some();
    f.dhcpv6 = !opts.no_dhcpv6 && ip6.as_ref().is_some_and(|c| !c.addr.is_unspecified());
    f.ra = f.ndp && !opts.no_ra && !opts.config_net;
    match mode {
        Mode::Passt => {
            f.advertise_dns = !opts.no_dhcp_dns;
            f.advertise_search = !opts.no_dhcp_search;
        }
        Mode::Pasta => {
            f.advertise_dns = opts.dhcp_dns;
            f.advertise_search = opts.dhcp_search;
        }
    }
    core.ip4 = ip4;
    core.ip6 = ip6;

    // Forwarding.
    let (kind_in, default_in, default_out) = match mode {
        Mode::Passt => (SpecKind::PasstInbound, FwdMode::None, FwdMode::None),
        Mode::Pasta => (SpecKind::PastaInbound, FwdMode::Auto, FwdMode::Auto),
    };
    let eph = host.ephemeral;
    let mut fwd = Forwarding {
        tcp_in: fwd_table(
            &opts.tcp_ports,
            kind_in,
            eph,
            default_in,
            opts.no_tcp,
            "-t",
            &mut warnings,
        )?,
        udp_in: fwd_table(
            &opts.udp_ports,
            kind_in,
            eph,
            default_in,
            opts.no_udp,
            "-u",
            &mut warnings,
        )?,
        tcp_out: fwd_table(
            &opts.tcp_ns,
            SpecKind::PastaOutbound,
            eph,
            default_out,
            opts.no_tcp,
            "-T",
            &mut warnings,
        )?,
        udp_out: fwd_table(
            &opts.udp_ns,
            SpecKind::PastaOutbound,
            eph,
            default_out,
            opts.no_udp,
            "-U",
            &mut warnings,
        )?,
    };
    // `%IFNAME` bindings: the core needs interface indices, looked up here.
    for (t, name) in [(&mut fwd.tcp_in, "-t"), (&mut fwd.udp_in, "-u")] {
        t.resolve_interfaces(&mut |n| crate::netlink::link_index(n).ok())
            .map_err(|e| format!("{name}: {e}"))?;
    }
    for (t, name) in [(&fwd.tcp_in, "-t"), (&fwd.udp_in, "-u")] {
        for r in t.rules() {
            match r.addr {
                Some(IpAddr::V4(a)) if core.ip4.is_none() => {
                    return Err(format!("{name}: can't bind {a}: IPv4 is not in use"));
                }
                Some(IpAddr::V6(a)) if core.ip6.is_none() => {
                    return Err(format!("{name}: can't bind {a}: IPv6 is not in use"));
                }
                _ => {}
            }
        }
    }
    core.freebind = opts.freebind;
    core.forwards = fwd.tcp_in.forwards(Proto::Tcp);
    core.forwards.extend(fwd.udp_in.forwards(Proto::Udp));
    // pasta's loopback path: host-loopback connections to forwarded ports
    // and the `-T` listeners on the namespace's loopback are spliced.
    if mode == Mode::Pasta && opts.host_lo_to_ns_lo && opts.no_splice {
        return Err("--host-lo-to-ns-lo is incompatible with --no-splice".into());
    }
    core.splice = mode == Mode::Pasta && !opts.no_splice;
    core.host_lo_to_ns_lo = core.splice && opts.host_lo_to_ns_lo;
    if core.splice {
        core.forwards.extend(
            fwd.tcp_out
                .forwards(Proto::Tcp)
                .into_iter()
                .map(crate::fwd::outbound_forward),
        );
    }

    // Secrets.
    random_bytes(&mut core.secret).map_err(|e| format!("no random source: {e}"))?;
    let mut seed = [0u8; 8];
    random_bytes(&mut seed).map_err(|e| format!("no random source: {e}"))?;
    core.seed = u64::from_ne_bytes(seed);
    core.duid_time = duid_time_now();

    let template4 = t4.filter(|_| usable4).map(|t| t.ifname.clone());
    let template6 = t6.filter(|_| usable6).map(|t| t.ifname.clone());
    let ns_ifname = opts
        .ns_ifname
        .clone()
        .or_else(|| template4.clone())
        .or_else(|| template6.clone())
        .unwrap_or_else(|| LOCAL_IFNAME.to_string());

    let ns_net = (mode == Mode::Pasta && opts.config_net)
        .then(|| ns_net_config(opts, &core, t4, t6, (local4, local6), &ns_ifname));

    let spawn = matches!(opts.target, Some(PastaTarget::Spawn(_)));
    let runas = opts.runas.as_ref().map(resolve_runas).transpose()?;

    Ok(RuntimeConfig {
        mode,
        ns_ifname,
        ns_net,
        template4,
        template6,
        ifindex6: t6.filter(|_| usable6).map(|t| t.ifindex),
        local4,
        local6,
        socket_path: opts.socket.clone(),
        fd: opts.fd,
        one_off: opts.one_off || (mode == Mode::Passt && opts.fd.is_some()),
        vhost_user: opts.vhost_user,
        foreground: opts.foreground || (mode == Mode::Pasta && spawn),
        quiet: opts.quiet || (mode == Mode::Pasta && spawn && !opts.debug),
        debug: opts.debug || opts.trace,
        trace: opts.trace,
        log_file: opts.log_file.clone(),
        log_size: opts.log_size.unwrap_or(cli::LOG_SIZE_DEFAULT),
        pcap: opts.pcap.clone(),
        pid_file: opts.pid_file.clone(),
        runas,
        seccomp_log: opts.seccomp_log,
        stats: opts.stats,
        target: opts.target.clone(),
        userns: opts.userns.clone().or_else(|| match opts.target {
            Some(PastaTarget::Pid(p)) if !opts.netns_only => {
                Some(PathBuf::from(format!("/proc/{p}/ns/user")))
            }
            _ => None,
        }),
        netns_only: opts.netns_only,
        no_netns_quit: opts.no_netns_quit,
        no_splice: opts.no_splice || mode == Mode::Passt,
        no_tap_offload: opts.no_tap_offload,
        host_lo_to_ns_lo: opts.host_lo_to_ns_lo,
        outbound4: opts.outbound4(),
        outbound6: opts.outbound6(),
        outbound_if4: opts.outbound_if4.clone(),
        outbound_if6: opts.outbound_if6.clone(),
        warnings,
        core,
        fwd,
    })
}

fn ns_net_config(
    opts: &Options,
    core: &Config,
    t4: Option<&HostFamily>,
    t6: Option<&HostFamily>,
    (local4, local6): (bool, bool),
    ifname: &str,
) -> NsNetConfig {
    let v4 = core.ip4.as_ref().map(|c| {
        let single = local4 || opts.addr4().is_some() || opts.no_copy_addrs;
        let addrs = match t4 {
            Some(t) if !single => t
                .addrs
                .iter()
                .filter(|a| a.addr.is_ipv4())
                .copied()
                .collect(),
            _ => vec![NsAddr {
                addr: IpAddr::V4(c.addr),
                prefix: c.prefix_len,
            }],
        };
        let only_default = local4 || opts.gateway4().is_some() || opts.no_copy_routes;
        let routes = match t4 {
            Some(t) if !only_default => t.routes.clone(),
            _ => default_route(c.gateway.map(IpAddr::V4), &addrs),
        };
        NsFamily {
            addrs,
            routes,
            local: local4,
        }
    });
    let v6 = core.ip6.as_ref().map(|c| {
        let single = local6 || opts.addr6().is_some() || opts.no_copy_addrs;
        let addrs = match t6 {
            Some(t) if !single => t
                .addrs
                .iter()
                .filter(|a| a.addr.is_ipv6())
                .copied()
                .collect(),
            _ if c.addr.is_unspecified() => Vec::new(),
            _ => vec![NsAddr {
                addr: IpAddr::V6(c.addr),
                prefix: 64,
            }],
        };
        let only_default = local6 || opts.gateway6().is_some() || opts.no_copy_routes;
        let routes = match t6 {
            Some(t) if !only_default => t.routes.clone(),
            _ => default_route(c.gateway.map(IpAddr::V6), &addrs),
        };
        NsFamily {
            addrs,
            routes,
            local: local6,
        }
    });
    NsNetConfig {
        ifname: ifname.to_string(),
        mtu: core.mtu.map(u32::from),
        mac: opts.ns_mac_addr.map(|m| m.0),
        v4,
        v6,
    }
}

/// Whether `a` is inside `net/prefix`.
fn in_prefix(a: IpAddr, net: IpAddr, prefix: u8) -> bool {
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
fn default_route(gw: Option<IpAddr>, addrs: &[NsAddr]) -> Vec<NsRoute> {
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

/// How to connect qemu to the socket at `path`, for the start-up message.
pub fn socket_hints(path: &std::path::Path, vhost_user: bool) -> String {
    let p = path.display();
    if vhost_user {
        format!(
            "You can start qemu with:\n    \
             -chardev socket,id=chr0,path={p} -netdev vhost-user,id=netdev0,chardev=chr0 \
             -device virtio-net,netdev=netdev0 -object memory-backend-memfd,id=memfd0,share=on,size=$RAMSIZE \
             -numa node,memdev=memfd0\n"
        )
    } else {
        format!(
            "UNIX domain socket bound at {p}\n\
             You can start qemu (7.2 or later) with:\n    \
             -device virtio-net-pci,netdev=s -netdev stream,id=s,server=off,addr.type=unix,addr.path={p}\n"
        )
    }
}

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter().map(|a| format!("    {a}\n")).collect::<String>()
}

/// The start-up information: interfaces, addresses and services, one item per
/// line.
pub fn summary(cfg: &RuntimeConfig) -> String {
    let mut s = String::new();
    let c = &cfg.core;
    let mut parts = Vec::new();
    if let Some(n) = &cfg.template4 {
        parts.push(format!("{n} (IPv4)"));
    }
    if let Some(n) = &cfg.template6 {
        parts.push(format!("{n} (IPv6)"));
    }
    if !parts.is_empty() {
        let _ = writeln!(s, "Host interface used as template: {}", parts.join(", "));
    }
    for (local, fam) in [(cfg.local4, "IPv4"), (cfg.local6, "IPv6")] {
        if local {
            let _ = writeln!(s, "{fam}: no usable host interface, local mode");
        }
    }
    let oif: Vec<String> = [
        cfg.outbound_if4.as_ref().map(|n| format!("{n} (IPv4)")),
        cfg.outbound_if6.as_ref().map(|n| format!("{n} (IPv6)")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !oif.is_empty() {
        let _ = writeln!(s, "Outbound interface: {}", oif.join(", "));
    }
    let oaddr: Vec<String> = [
        cfg.outbound4.map(|a| a.to_string()),
        cfg.outbound6.map(|a| a.to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !oaddr.is_empty() {
        let _ = writeln!(s, "Outbound address: {}", oaddr.join(", "));
    }
    if cfg.mode == Mode::Pasta {
        let _ = writeln!(s, "Namespace interface: {}", cfg.ns_ifname);
    }
    let _ = writeln!(s, "Our MAC address: {}", c.our_mac);
    if let Some(ip4) = &c.ip4 {
        if let Some(m) = ip4.map_host_loopback {
            let _ = writeln!(s, "Reaches host's 127.0.0.1: {m}");
        }
        if let Some(m) = ip4.map_guest_addr {
            let _ = writeln!(s, "Reaches host's own address: {m}");
        }
        if c.features.dhcp {
            let _ = writeln!(s, "DHCP:");
            let _ = writeln!(s, "    address: {}", ip4.addr);
            let _ = writeln!(s, "    netmask: {}", ip4.netmask());
            if let Some(g) = ip4.gateway {
                let _ = writeln!(s, "    router: {g}");
            }
        } else {
            let _ = writeln!(s, "IPv4 address: {}/{}", ip4.addr, ip4.prefix_len);
        }
        if !ip4.dns.is_empty() {
            let _ = write!(s, "IPv4 nameservers:\n{}", list(&ip4.dns));
        }
        if let (Some(m), Some(h)) = (ip4.dns_match, ip4.dns_host) {
            let _ = writeln!(s, "DNS to {m} goes to {h}");
        }
    }
    if let Some(ip6) = &c.ip6 {
        if let Some(m) = ip6.map_host_loopback {
            let _ = writeln!(s, "Reaches host's ::1: {m}");
        }
        if let Some(m) = ip6.map_guest_addr {
            let _ = writeln!(s, "Reaches host's own IPv6 address: {m}");
        }
        let svc = match (c.features.ndp, c.features.dhcpv6) {
            (true, true) => "NDP and DHCPv6",
            (true, false) => "NDP",
            (false, true) => "DHCPv6",
            (false, false) => "IPv6",
        };
        let _ = writeln!(s, "{svc}:");
        if ip6.addr.is_unspecified() {
            let _ = writeln!(s, "    address: learned from the guest");
        } else {
            let _ = writeln!(s, "    address: {}", ip6.addr);
        }
        if let Some(g) = ip6.gateway {
            let _ = writeln!(s, "    router: {g}");
        }
        let _ = writeln!(s, "    our link-local: {}", ip6.our_ll);
        if !ip6.dns.is_empty() {
            let _ = write!(s, "IPv6 nameservers:\n{}", list(&ip6.dns));
        }
        if let (Some(m), Some(h)) = (ip6.dns_match, ip6.dns_host) {
            let _ = writeln!(s, "DNS to {m} goes to {h}");
        }
    }
    if !c.search.is_empty() {
        let _ = write!(s, "DNS search list:\n{}", list(&c.search));
    }
    if !c.features.advertise_dns || !c.features.advertise_search {
        let what = match (c.features.advertise_dns, c.features.advertise_search) {
            (false, false) => "nameservers and search list",
            (false, true) => "nameservers",
            _ => "search list",
        };
        let _ = writeln!(s, "Not advertised to the guest: {what}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fwd::FwdMode;
    use crate::netlink::testns::{in_netns, ip};
    use crate::resolv::parse_resolv;
    use passt_core::Forward;
    use std::ffi::OsString;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }
    fn na(s: &str, prefix: u8) -> NsAddr {
        NsAddr { addr: a(s), prefix }
    }
    fn rt(dst: &str, prefix: u8, gw: Option<&str>) -> NsRoute {
        match gw {
            Some(g) => NsRoute::via(a(dst), prefix, a(g)),
            None => NsRoute::direct(a(dst), prefix),
        }
    }

    fn host() -> HostInfo {
        HostInfo {
            v4: Some(HostFamily {
                ifname: "eth0".into(),
                ifindex: 2,
                mtu: 1500,
                addrs: vec![na("192.0.2.2", 24), na("10.1.2.3", 8)],
                gateway: Some(a("192.0.2.1")),
                link_local: None,
                routes: vec![
                    rt("0.0.0.0", 0, Some("192.0.2.1")),
                    rt("192.0.2.0", 24, None),
                    rt("203.0.113.0", 24, Some("192.0.2.254")),
                ],
            }),
            v6: Some(HostFamily {
                ifname: "eth0".into(),
                ifindex: 2,
                mtu: 1500,
                addrs: vec![na("2001:db8::2", 64)],
                gateway: Some(a("fe80::1")),
                link_local: Some(a("fe80::2")),
                routes: vec![rt("::", 0, Some("fe80::1")), rt("2001:db8::", 64, None)],
            }),
            ephemeral: (32768, 60999),
            no_ipv6: false,
            notes: vec![],
        }
    }

    fn opts(mode: Mode, args: &[&str]) -> Options {
        let v: Vec<OsString> = args.iter().map(OsString::from).collect();
        crate::cli::parse_args(mode, &v).unwrap()
    }

    fn cfg(mode: Mode, args: &[&str], host: &HostInfo, resolv: &str) -> RuntimeConfig {
        build(mode, &opts(mode, args), host, &parse_resolv(resolv))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn link(index: u32, name: &str, flags: u32) -> LinkInfo {
        LinkInfo {
            index,
            name: name.into(),
            mtu: 1500,
            flags,
            mac: None,
        }
    }

    fn route(dst: &str, prefix: u8, hops: &[(u32, Option<&str>, u16)]) -> RouteInfo {
        RouteInfo {
            dst: a(dst),
            prefix,
            table: netlink::TABLE_MAIN,
            kind: netlink::RTN_UNICAST,
            protocol: 4,
            scope: if hops.iter().all(|h| h.1.is_none()) {
                SCOPE_LINK
            } else {
                SCOPE_UNIVERSE
            },
            tos: 0,
            metric: None,
            hops: hops
                .iter()
                .map(|(i, g, w)| netlink::NextHop {
                    ifindex: *i,
                    gateway: g.map(a),
                    weight: *w,
                    onlink: false,
                })
                .collect(),
            metrics: vec![],
            pref: None,
            encap: false,
        }
    }

    #[test]
    fn template_choice() {
        let links = [
            link(1, "lo", IFF_LOOPBACK),
            link(2, "eth0", 0),
            link(3, "wlan0", 0),
        ];
        let mut notes = Vec::new();
        // Only link-local and loopback routes: nothing.
        let routes = [
            route("fe80::", 64, &[(2, None, 1)]),
            route("::1", 128, &[(1, None, 1)]),
        ];
        assert_eq!(
            pick_template(&links, &routes, None, &mut notes).unwrap(),
            None
        );
        // A non-link-local route.
        let routes = [
            route("fe80::", 64, &[(2, None, 1)]),
            route("2001:db8::", 64, &[(3, None, 1)]),
        ];
        assert_eq!(
            pick_template(&links, &routes, None, &mut notes).unwrap(),
            Some(3)
        );
        // Default routes win, the first one, with a note if there are others.
        let routes = [
            route("198.51.100.0", 24, &[(2, None, 1)]),
            route("0.0.0.0", 0, &[(3, Some("192.0.2.1"), 1)]),
            route("0.0.0.0", 0, &[(2, Some("198.51.100.1"), 1)]),
        ];
        assert_eq!(
            pick_template(&links, &routes, None, &mut notes).unwrap(),
            Some(3)
        );
        assert_eq!(notes.len(), 1);
        // Multipath: the heaviest next hop.
        let routes = [route(
            "0.0.0.0",
            0,
            &[(2, Some("192.0.2.1"), 1), (3, Some("198.51.100.1"), 5)],
        )];
        assert_eq!(
            pick_template(&links, &routes, None, &mut notes).unwrap(),
            Some(3)
        );
        // Requested by name.
        assert_eq!(
            pick_template(&links, &routes, Some("eth0"), &mut notes).unwrap(),
            Some(2)
        );
        assert!(pick_template(&links, &routes, Some("eth9"), &mut notes).is_err());
    }

    #[test]
    fn template_contents() {
        let links = [link(2, "eth0", 0), link(3, "eth1", 0)];
        let addr = |i: u32, s: &str, p: u8, flags: u32| AddrInfo {
            index: i,
            addr: a(s),
            prefix: p,
            scope: 0,
            flags,
        };
        let addrs = [
            addr(2, "10.0.0.2", 8, 0),
            addr(2, "192.0.2.2", 24, 0),
            addr(2, "192.0.2.9", 30, IFA_F_DEPRECATED),
            addr(3, "198.51.100.2", 32, 0),
            addr(2, "fe80::2", 64, 0),
            addr(2, "2001:db8::2", 64, 0),
        ];
        let routes = [
            route(
                "0.0.0.0",
                0,
                &[
                    (3, Some("198.51.100.1"), 9),
                    (2, Some("192.0.2.1"), 2),
                    (2, Some("192.0.2.254"), 4),
                ],
            ),
            route("192.0.2.0", 24, &[(2, None, 1)]),
            route("198.51.100.0", 24, &[(3, None, 1)]),
            route("fe80::", 64, &[(2, None, 1)]),
            route("ff00::", 8, &[(2, None, 1)]),
        ];
        let t = template_family(&links, &addrs, &routes, 2).unwrap();
        assert_eq!(t.ifname, "eth0");
        assert_eq!(t.addrs.first(), Some(&na("2001:db8::2", 64)));
        assert_eq!(
            t.addrs
                .iter()
                .filter(|x| x.addr.is_ipv4())
                .copied()
                .collect::<Vec<_>>(),
            vec![na("192.0.2.2", 24), na("10.0.0.2", 8)],
            "most specific first, deprecated left out"
        );
        assert_eq!(t.link_local, Some(a("fe80::2")));
        assert_eq!(
            t.gateway,
            Some(a("192.0.2.254")),
            "heaviest hop on this interface"
        );
        let mut multi = rt("0.0.0.0", 0, Some("192.0.2.1"));
        multi.hops = vec![hop("192.0.2.1", 2), hop("192.0.2.254", 4)];
        assert_eq!(
            t.routes,
            vec![multi, rt("192.0.2.0", 24, None)],
            "every next hop on this interface, none of the others"
        );
        assert!(template_family(&links, &addrs, &routes, 7).is_none());
        // eth1: the one hop left is a plain route.
        let t1 = template_family(&links, &addrs, &routes, 3).unwrap();
        assert_eq!(t1.gateway, Some(a("198.51.100.1")));
        assert_eq!(t1.routes[0], rt("0.0.0.0", 0, Some("198.51.100.1")));
    }

    fn hop(gw: &str, weight: u16) -> NsHop {
        NsHop {
            gateway: Some(a(gw)),
            weight,
            onlink: false,
        }
    }

    /// The gateway is one the namespace's copy routes through: equal
    /// weights give the first hop, several defaults the lowest metric; flags
    /// and attributes are copied; encapsulated routes are not.
    #[test]
    fn template_gateway_and_route_copy() {
        let links = [link(2, "eth0", 0), link(3, "eth1", 0)];
        let addrs = [AddrInfo {
            index: 2,
            addr: a("192.0.2.77"),
            prefix: 32,
            scope: 0,
            flags: 0,
        }];
        // Two link-local routers of equal weight.
        let r6 = [route(
            "::",
            0,
            &[(2, Some("fe80::1"), 1), (2, Some("fe80::2"), 1)],
        )];
        let t = template_family(&links, &[], &r6, 2).unwrap();
        assert_eq!(t.gateway, Some(a("fe80::1")), "first of equal weights");
        assert_eq!(
            t.routes[0]
                .hops
                .iter()
                .map(|h| h.gateway)
                .collect::<Vec<_>>(),
            vec![Some(a("fe80::1")), Some(a("fe80::2"))]
        );
        // Defaults with metrics: the lowest wins, whatever the dump order;
        // one on another interface with a lower metric picks that interface.
        let mut d300 = route("0.0.0.0", 0, &[(2, Some("192.0.2.254"), 1)]);
        d300.metric = Some(300);
        let mut d100 = route("0.0.0.0", 0, &[(2, Some("192.0.2.1"), 1)]);
        d100.metric = Some(100);
        d100.hops[0].onlink = true;
        d100.metrics = vec![netlink::RouteMetric::Mtu(1400)];
        let mut other = route("0.0.0.0", 0, &[(3, Some("198.51.100.1"), 1)]);
        other.metric = Some(200);
        let mut tunnel = route("203.0.113.0", 24, &[(2, Some("192.0.2.1"), 1)]);
        tunnel.encap = true;
        let routes = [other.clone(), d300, d100, tunnel];
        let t = template_family(&links, &addrs, &routes, 2).unwrap();
        assert_eq!(t.gateway, Some(a("192.0.2.1")));
        assert_eq!(t.routes.len(), 2, "{:?}", t.routes);
        let copy = t.routes.iter().find(|r| r.metric == Some(100)).unwrap();
        assert!(copy.hops[0].onlink);
        assert_eq!(copy.metrics, vec![netlink::RouteMetric::Mtu(1400)]);
        let mut notes = vec![];
        assert_eq!(
            pick_template(&links, &routes, None, &mut notes).unwrap(),
            Some(2)
        );
        other.metric = Some(50);
        assert_eq!(
            pick_template(&links, &[other], None, &mut notes).unwrap(),
            Some(3)
        );
        // A default route without gateway first: the next one's gateway.
        let mut dev = route("0.0.0.0", 0, &[(2, None, 1)]);
        dev.metric = Some(10);
        let t = template_family(&links, &addrs, &[dev, routes[1].clone()], 2).unwrap();
        assert_eq!(t.gateway, Some(a("192.0.2.254")));
    }

    /// Default routes `--config-net` makes itself (-g, --no-copy-routes,
    /// local mode): onlink where no address of the namespace covers the
    /// gateway.
    #[test]
    fn default_route_onlink() {
        let on = |gw: &str, addrs: &[NsAddr]| default_route(Some(a(gw)), addrs)[0].hops[0].onlink;
        assert!(!on("192.0.2.1", &[na("192.0.2.2", 24)]));
        assert!(on("192.0.2.1", &[na("192.0.2.77", 32)]));
        assert!(!on("192.0.2.1", &[na("10.0.0.1", 8), na("192.0.2.7", 25)]));
        assert!(!on("fe80::1", &[]));
        assert!(on("2001:db8:1::1", &[na("2001:db8::2", 64)]));
        assert!(!on("2001:db8::1", &[na("2001:db8::2", 64)]));
        assert!(default_route(None, &[]).is_empty());
        let h = HostInfo {
            v4: Some(HostFamily {
                addrs: vec![na("192.0.2.77", 32)],
                ..host().v4.unwrap()
            }),
            ..host()
        };
        let c = cfg(Mode::Pasta, &["--config-net", "--no-copy-routes"], &h, "");
        let r = &c.ns_net.unwrap().v4.unwrap().routes;
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].to_string(), "default via 192.0.2.1 onlink");
    }

    #[test]
    fn passt_defaults() {
        let c = cfg(
            Mode::Passt,
            &[],
            &host(),
            "nameserver 198.51.100.53\nsearch a.test\n",
        );
        let ip4 = c.core.ip4.as_ref().unwrap();
        assert_eq!(ip4.addr, Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(ip4.prefix_len, 24);
        assert_eq!(ip4.gateway, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(ip4.our_addr, ip4.gateway);
        assert_eq!(ip4.map_host_loopback, ip4.gateway);
        assert_eq!(ip4.dns.as_slice(), &[Ipv4Addr::new(198, 51, 100, 53)]);
        assert_eq!(ip4.dns_host, Some(Ipv4Addr::new(198, 51, 100, 53)));
        assert_eq!(ip4.dns_match, None);
        let ip6 = c.core.ip6.as_ref().unwrap();
        assert_eq!(ip6.addr, "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip6.prefix_len, 64);
        assert_eq!(
            ip6.our_ll,
            "fe80::1".parse::<Ipv6Addr>().unwrap(),
            "link-local gateway is our address"
        );
        assert_eq!(c.core.search, vec!["a.test"]);
        let f = c.core.features;
        assert!(f.dhcp && f.ndp && f.dhcpv6 && f.ra && f.advertise_dns && f.advertise_search);
        assert!(f.tcp && f.udp && f.icmp);
        assert_eq!(c.core.mtu, Some(DEFAULT_MTU));
        assert_eq!(c.core.our_mac, Mac::OUR_DEFAULT);
        assert_eq!(c.fwd.tcp_in.mode(), FwdMode::None);
        assert_eq!(c.fwd.udp_in.mode(), FwdMode::None);
        assert!(c.no_splice);
        assert!(!c.local4 && !c.local6);
        assert_eq!(c.template4.as_deref(), Some("eth0"));
        assert_eq!(c.ns_net, None);
        assert_ne!(c.core.secret, [0; 16]);
        assert!(c.core.duid_time > 0x2000_0000, "after 2017");
        assert_eq!(c.log_size, 1 << 20);
    }

    #[test]
    fn pasta_defaults() {
        let c = cfg(
            Mode::Pasta,
            &[],
            &host(),
            "nameserver 198.51.100.53\nsearch a.test\n",
        );
        let f = c.core.features;
        assert!(!f.advertise_dns && !f.advertise_search);
        // Still known, for forwarding.
        assert_eq!(
            c.core.ip4.as_ref().unwrap().dns_host,
            Some(Ipv4Addr::new(198, 51, 100, 53))
        );
        for t in [&c.fwd.tcp_in, &c.fwd.udp_in, &c.fwd.tcp_out, &c.fwd.udp_out] {
            assert_eq!(t.mode(), FwdMode::Auto);
        }
        assert_eq!(c.ns_ifname, "eth0");
        assert!(
            c.foreground && c.quiet,
            "spawning a command: foreground and quiet"
        );
        assert!(!c.no_splice);
        let c = cfg(
            Mode::Pasta,
            &["-d", "--dhcp-dns", "--dhcp-search", "-I", "ns1"],
            &host(),
            "",
        );
        assert!(!c.quiet && c.debug);
        assert!(c.core.features.advertise_dns && c.core.features.advertise_search);
        assert_eq!(c.ns_ifname, "ns1");
        let c = cfg(
            Mode::Pasta,
            &["-t", "22", "-U", "none", "1234"],
            &host(),
            "",
        );
        assert_eq!(c.fwd.tcp_in.mode(), FwdMode::Spec);
        assert_eq!(c.fwd.tcp_in.target(22), Some(22));
        assert_eq!(c.fwd.udp_in.mode(), FwdMode::Auto);
        assert_eq!(c.fwd.udp_out.mode(), FwdMode::None);
        // The explicit table becomes the core's forwards; `auto` does not.
        assert_eq!(c.core.forwards, vec![Forward::new(Proto::Tcp, 22, 22)]);
        assert!(!c.core.freebind);
        let f = cfg(Mode::Passt, &["--freebind", "-u", "53"], &host(), "");
        assert!(f.core.freebind);
        assert_eq!(f.core.forwards, vec![Forward::new(Proto::Udp, 53, 53)]);
        assert!(!c.foreground && !c.quiet, "joining a PID: neither");
        assert_eq!(c.userns, Some(PathBuf::from("/proc/1234/ns/user")));
        let c = cfg(Mode::Pasta, &["--netns-only", "1234"], &host(), "");
        assert_eq!(c.userns, None);
        let c = cfg(Mode::Pasta, &["--netns", "x"], &host(), "");
        assert!(c.netns_only && c.userns.is_none());
    }

    /// Splicing: on for pasta unless `--no-splice`, never for passt; `-T`
    /// ports become forwards of the namespace's loopback device;
    /// `--host-lo-to-ns-lo` needs splicing.
    #[test]
    fn splice_settings_and_outbound_forwards() {
        let h = host();
        let c = cfg(
            Mode::Pasta,
            &["-t", "none", "-T", "5000:5001", "1234"],
            &h,
            "",
        );
        assert!(c.core.splice && !c.core.host_lo_to_ns_lo);
        let f = c.core.forwards;
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].netns, passt_core::Netns::Guest);
        assert_eq!((f[0].first, f[0].target_port), (5000, 5001));
        assert_eq!((f[0].addr, f[0].ifindex), (None, Some(1)));
        let c = cfg(Mode::Pasta, &["--host-lo-to-ns-lo", "1234"], &h, "");
        assert!(c.core.splice && c.core.host_lo_to_ns_lo);
        let c = cfg(Mode::Pasta, &["--no-splice", "-T", "5000", "1234"], &h, "");
        assert!(!c.core.splice);
        assert!(c.core.forwards.is_empty(), "no -T without splicing");
        assert!(!cfg(Mode::Passt, &[], &h, "").core.splice);
        let e = build(
            Mode::Pasta,
            &opts(Mode::Pasta, &["--no-splice", "--host-lo-to-ns-lo", "1234"]),
            &h,
            &parse_resolv(""),
        )
        .map(|_| ())
        .expect_err("refused");
        assert!(e.contains("--host-lo-to-ns-lo"), "{e}");
    }

    #[test]
    fn dns_rules() {
        let h = host();
        // systemd-resolved: advertise the gateway, redirect to the stub.
        let c = cfg(Mode::Passt, &[], &h, "nameserver 127.0.0.53\n");
        let ip4 = c.core.ip4.unwrap();
        assert_eq!(ip4.dns.as_slice(), &[Ipv4Addr::new(192, 0, 2, 1)]);
        assert_eq!(ip4.dns_match, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(ip4.dns_host, Some(Ipv4Addr::new(127, 0, 0, 53)));
        // IPv6 loopback resolver.
        let c = cfg(Mode::Passt, &[], &h, "nameserver ::1\n");
        let ip6 = c.core.ip6.unwrap();
        assert_eq!(
            ip6.dns.as_slice(),
            &["fe80::1".parse::<Ipv6Addr>().unwrap()]
        );
        assert_eq!(ip6.dns_match, Some("fe80::1".parse().unwrap()));
        assert_eq!(ip6.dns_host, Some(Ipv6Addr::LOCALHOST));
        assert!(c.core.ip4.unwrap().dns.is_empty());
        // Scoped address.
        let c = cfg(Mode::Passt, &[], &h, "nameserver fe80::53%eth0\n");
        assert_eq!(
            c.core.ip6.unwrap().dns.as_slice(),
            &["fe80::53".parse::<Ipv6Addr>().unwrap()]
        );
        // Mapping off, but --dns-forward (Podman's defaults): the stub is
        // reached through the forwarding address, which is advertised.
        let c = cfg(
            Mode::Passt,
            &["--no-map-gw", "--dns-forward", "169.254.1.1"],
            &h,
            "nameserver 127.0.0.53\n",
        );
        let ip4 = c.core.ip4.unwrap();
        assert_eq!(ip4.dns.as_slice(), &[Ipv4Addr::new(169, 254, 1, 1)]);
        assert_eq!(ip4.dns_match, Some(Ipv4Addr::new(169, 254, 1, 1)));
        assert_eq!(ip4.dns_host, Some(Ipv4Addr::new(127, 0, 0, 53)));
        assert!(!c.warnings.iter().any(|w| w.contains("nameserver")));
        // Mapping off: loopback resolvers can't be used.
        let c = cfg(Mode::Passt, &["--no-map-gw"], &h, "nameserver 127.0.0.53\n");
        let ip4 = c.core.ip4.unwrap();
        assert!(ip4.dns.is_empty());
        assert_eq!(ip4.dns_match, None);
        assert!(c.warnings.iter().any(|w| w.contains("nameserver")));
        // Explicit mapping address.
        let c = cfg(
            Mode::Passt,
            &["--map-host-loopback", "192.0.2.99"],
            &h,
            "nameserver 127.0.0.1\n",
        );
        let ip4 = c.core.ip4.unwrap();
        assert_eq!(ip4.dns.as_slice(), &[Ipv4Addr::new(192, 0, 2, 99)]);
        assert_eq!(ip4.map_host_loopback, Some(Ipv4Addr::new(192, 0, 2, 99)));
        // The resolver is the gateway.
        let c = cfg(Mode::Passt, &[], &h, "nameserver 192.0.2.1\n");
        let ip4 = c.core.ip4.unwrap();
        assert_eq!(ip4.dns.as_slice(), &[Ipv4Addr::new(192, 0, 2, 1)]);
        assert_eq!(ip4.dns_match, Some(Ipv4Addr::new(192, 0, 2, 1)));
        // -D none: nothing at all.
        let c = cfg(
            Mode::Passt,
            &["-D", "none", "--dns-forward", "192.0.2.53"],
            &h,
            "nameserver 127.0.0.53\n",
        );
        let ip4 = c.core.ip4.unwrap();
        assert!(ip4.dns.is_empty() && ip4.dns_match.is_none() && ip4.dns_host.is_none());
        // -D verbatim, up to 3.
        let c = cfg(
            Mode::Passt,
            &[
                "-D",
                "127.0.0.1",
                "-D",
                "192.0.2.7",
                "-D",
                "192.0.2.8",
                "-D",
                "192.0.2.9",
                "-D",
                "2001:db8::53",
            ],
            &h,
            "nameserver 198.51.100.1\n",
        );
        let ip4 = c.core.ip4.unwrap();
        assert_eq!(ip4.dns.len(), 3);
        assert_eq!(ip4.dns[0], Ipv4Addr::LOCALHOST);
        assert_eq!(
            c.core.ip6.unwrap().dns.as_slice(),
            &["2001:db8::53".parse::<Ipv6Addr>().unwrap()]
        );
        // --dns-forward, host resolver from resolv.conf or --dns-host.
        let c = cfg(
            Mode::Pasta,
            &["--dns-forward", "169.254.1.1"],
            &h,
            "nameserver 198.51.100.1\nnameserver 198.51.100.2\n",
        );
        let ip4 = c.core.ip4.unwrap();
        assert_eq!(ip4.dns_match, Some(Ipv4Addr::new(169, 254, 1, 1)));
        assert_eq!(ip4.dns_host, Some(Ipv4Addr::new(198, 51, 100, 1)));
        let c = cfg(
            Mode::Pasta,
            &["--dns-forward", "169.254.1.1", "--dns-host", "198.51.100.9"],
            &h,
            "nameserver 127.0.0.53\n",
        );
        let ip4 = c.core.ip4.unwrap();
        assert_eq!(ip4.dns_match, Some(Ipv4Addr::new(169, 254, 1, 1)));
        assert_eq!(ip4.dns_host, Some(Ipv4Addr::new(198, 51, 100, 9)));
        // A remote resolver first, then a loopback one: both reachable, the
        // redirection goes to the first one.
        let c = cfg(
            Mode::Passt,
            &[],
            &h,
            "nameserver 198.51.100.1\nnameserver 127.0.0.53\nnameserver 127.0.0.54\n",
        );
        let ip4 = c.core.ip4.unwrap();
        assert_eq!(
            ip4.dns.as_slice(),
            &[Ipv4Addr::new(198, 51, 100, 1), Ipv4Addr::new(192, 0, 2, 1)]
        );
        assert_eq!(ip4.dns_match, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(ip4.dns_host, Some(Ipv4Addr::new(198, 51, 100, 1)));
        // With --dns-forward, a loopback resolver is advertised as the
        // forwarding address.
        let c = cfg(
            Mode::Passt,
            &["--dns-forward", "192.0.2.53"],
            &h,
            "nameserver 127.0.0.53\nnameserver 198.51.100.1\n",
        );
        let ip4 = c.core.ip4.unwrap();
        assert_eq!(
            ip4.dns.as_slice(),
            &[Ipv4Addr::new(192, 0, 2, 53), Ipv4Addr::new(198, 51, 100, 1)]
        );
        assert_eq!(ip4.dns_match, Some(Ipv4Addr::new(192, 0, 2, 53)));
        assert_eq!(ip4.dns_host, Some(Ipv4Addr::new(127, 0, 0, 53)));
        // Many resolvers: three advertised.
        let c = cfg(Mode::Passt, &[], &h, "nameserver 198.51.100.1\nnameserver 198.51.100.2\nnameserver 198.51.100.3\nnameserver 198.51.100.4\n");
        assert_eq!(c.core.ip4.unwrap().dns.len(), 3);
    }

    #[test]
    fn search_rules() {
        let r = "search a.test b.test c.test d.test e.test f.test g.test\n";
        let c = cfg(Mode::Passt, &[], &host(), r);
        assert_eq!(c.core.search.len(), MAX_SEARCH);
        let c = cfg(Mode::Passt, &["-S", "none"], &host(), r);
        assert!(c.core.search.is_empty());
        let c = cfg(Mode::Passt, &["-S", "x.test", "-S", "y.test"], &host(), r);
        assert_eq!(c.core.search, vec!["x.test", "y.test"]);
    }

    #[test]
    fn local_mode() {
        let h = HostInfo {
            ephemeral: (32768, 60999),
            ..HostInfo::default()
        };
        let c = cfg(Mode::Pasta, &["--config-net"], &h, "");
        assert!(c.local4 && c.local6);
        let ip4 = c.core.ip4.as_ref().unwrap();
        assert_eq!((ip4.addr, ip4.prefix_len), (LOCAL_ADDR4, LOCAL_PREFIX4));
        assert_eq!(ip4.gateway, Some(LOCAL_GW4));
        let ip6 = c.core.ip6.as_ref().unwrap();
        assert!(ip6.addr.is_unspecified());
        assert_eq!(ip6.gateway, Some(LOCAL_GW6));
        assert_eq!(ip6.our_ll, LOCAL_GW6);
        assert!(!c.core.features.dhcpv6 && c.core.features.dhcp && c.core.features.ndp);
        assert!(!c.core.features.ra, "--config-net implies --no-ra");
        assert_eq!(c.ns_ifname, LOCAL_IFNAME);
        let n = c.ns_net.clone().unwrap();
        assert_eq!(n.v4.as_ref().unwrap().addrs, vec![na("169.254.2.1", 16)]);
        assert_eq!(
            n.v4.as_ref().unwrap().routes,
            vec![rt("0.0.0.0", 0, Some("169.254.2.2"))]
        );
        assert!(n.v6.as_ref().unwrap().addrs.is_empty());
        assert_eq!(
            n.v6.as_ref().unwrap().routes,
            vec![rt("::", 0, Some("fe80::1"))]
        );
        let sum = summary(&c);
        assert!(
            sum.contains("IPv4: no usable host interface, local mode"),
            "{sum}"
        );
        assert!(
            sum.contains("IPv6: no usable host interface, local mode"),
            "{sum}"
        );
        assert!(!sum.contains("template"), "{sum}");
        assert!(n.v4.as_ref().unwrap().local && n.v6.as_ref().unwrap().local);

        // Only IPv6 usable on the host: IPv4 in local mode, IPv6 from the
        // template, the namespace interface named after it.
        let mut h = host();
        h.v4 = None;
        let c = cfg(Mode::Pasta, &["--config-net"], &h, "");
        assert!(c.local4 && !c.local6);
        let ip4 = c.core.ip4.as_ref().unwrap();
        assert_eq!((ip4.addr, ip4.prefix_len), (LOCAL_ADDR4, LOCAL_PREFIX4));
        assert_eq!(ip4.gateway, Some(LOCAL_GW4));
        assert_eq!(ip4.map_host_loopback, Some(LOCAL_GW4));
        assert!(c.core.features.dhcp);
        assert_eq!(c.core.ip6.as_ref().unwrap().addr, v6("2001:db8::2"));
        assert_eq!(c.ns_ifname, "eth0");
        assert_eq!(c.template4, None);
        assert_eq!(c.template6.as_deref(), Some("eth0"));
        let n = c.ns_net.clone().unwrap();
        let n4 = n.v4.as_ref().unwrap();
        assert!(n4.local);
        assert_eq!(n4.addrs, vec![na("169.254.2.1", 16)]);
        assert_eq!(n4.routes, vec![rt("0.0.0.0", 0, Some("169.254.2.2"))]);
        assert!(!n.v6.as_ref().unwrap().local);
        assert_eq!(n.v6.as_ref().unwrap().routes, h.v6.as_ref().unwrap().routes);
        let sum = summary(&c);
        assert!(
            sum.contains("Host interface used as template: eth0 (IPv6)"),
            "{sum}"
        );
        assert!(
            sum.contains("IPv4: no usable host interface, local mode"),
            "{sum}"
        );
        // --no-map-gw: no mapping in local mode either.
        let c = cfg(Mode::Pasta, &["--no-map-gw"], &h, "");
        assert_eq!(c.core.ip4.as_ref().unwrap().map_host_loopback, None);
        // -6: no IPv4 at all, local mode or not.
        let c = cfg(Mode::Passt, &["-6"], &h, "");
        assert!(!c.local4 && c.core.ip4.is_none());
        // -4 with only IPv6 on the host: IPv4 in local mode, no IPv6.
        let c = cfg(Mode::Passt, &["-4"], &h, "");
        assert!(c.local4 && c.core.ip6.is_none() && !c.local6);
        assert_eq!(c.core.ip4.as_ref().unwrap().addr, LOCAL_ADDR4);

        // Only IPv4 usable: IPv6 in local mode (no address, default via
        // fe80::1, NDP but no DHCPv6).
        let mut h = host();
        h.v6 = None;
        let c = cfg(Mode::Pasta, &["--config-net"], &h, "");
        assert!(!c.local4 && c.local6);
        let ip6 = c.core.ip6.as_ref().unwrap();
        assert!(ip6.addr.is_unspecified());
        assert_eq!((ip6.gateway, ip6.our_ll), (Some(LOCAL_GW6), LOCAL_GW6));
        assert_eq!(ip6.map_host_loopback, Some(LOCAL_GW6));
        assert!(c.core.features.ndp && !c.core.features.dhcpv6);
        assert_eq!(c.core.ip4.as_ref().unwrap().addr, v4("192.0.2.2"));
        let n = c.ns_net.clone().unwrap();
        let n6 = n.v6.as_ref().unwrap();
        assert!(n6.local && n6.addrs.is_empty());
        assert_eq!(n6.routes, vec![rt("::", 0, Some("fe80::1"))]);
        // An IPv6 template without any address is no template either.
        let mut h = host();
        h.v6.as_mut().unwrap().addrs.clear();
        assert!(cfg(Mode::Passt, &[], &h, "").local6);
        // A host without IPv6 at all: no IPv6 local mode.
        let mut h = host();
        h.v6 = None;
        h.no_ipv6 = true;
        let c = cfg(Mode::Pasta, &["--config-net"], &h, "");
        assert!(!c.local6 && c.core.ip6.is_none() && c.ns_net.unwrap().v6.is_none());
    }

    #[test]
    fn family_switches_and_overrides() {
        let h = host();
        let c = cfg(Mode::Passt, &["-4"], &h, "");
        assert!(
            c.core.ip6.is_none()
                && !c.core.features.ndp
                && !c.core.features.dhcpv6
                && !c.core.features.ra
        );
        let c = cfg(Mode::Passt, &["-6"], &h, "");
        assert!(c.core.ip4.is_none() && !c.core.features.dhcp);
        let c = cfg(Mode::Passt, &["-a", "10.9.8.7"], &h, "");
        assert_eq!(c.core.ip4.as_ref().unwrap().prefix_len, 8, "classful");
        let c = cfg(Mode::Passt, &["-a", "172.16.1.1"], &h, "");
        assert_eq!(c.core.ip4.as_ref().unwrap().prefix_len, 16, "classful");
        let c = cfg(Mode::Passt, &["-a", "192.0.2.2"], &h, "");
        assert_eq!(c.core.ip4.as_ref().unwrap().prefix_len, 24, "host's prefix");
        let c = cfg(
            Mode::Passt,
            &[
                "-a",
                "10.9.8.7",
                "-n",
                "255.255.255.0",
                "-g",
                "10.9.8.1",
                "-m",
                "0",
                "-M",
                "02:00:00:00:00:01",
            ],
            &h,
            "",
        );
        let ip4 = c.core.ip4.as_ref().unwrap();
        assert_eq!(
            (ip4.prefix_len, ip4.gateway),
            (24, Some(Ipv4Addr::new(10, 9, 8, 1)))
        );
        assert_eq!(ip4.map_host_loopback, Some(Ipv4Addr::new(10, 9, 8, 1)));
        assert_eq!(c.core.mtu, None);
        assert_eq!(c.core.our_mac, Mac([2, 0, 0, 0, 0, 1]));
        let c = cfg(Mode::Passt, &["-g", "2001:db8::1"], &h, "");
        let ip6 = c.core.ip6.as_ref().unwrap();
        assert_eq!(ip6.gateway, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(
            ip6.our_ll,
            "fe80::2".parse::<Ipv6Addr>().unwrap(),
            "host link-local"
        );
        let c = cfg(
            Mode::Passt,
            &["--no-map-gw", "--map-guest-addr", "192.0.2.33"],
            &h,
            "",
        );
        let ip4 = c.core.ip4.as_ref().unwrap();
        assert_eq!(ip4.map_host_loopback, None);
        assert_eq!(ip4.map_guest_addr, Some(Ipv4Addr::new(192, 0, 2, 33)));
        let c = cfg(Mode::Passt, &["--map-host-loopback", "none"], &h, "");
        assert_eq!(c.core.ip4.as_ref().unwrap().map_host_loopback, None);
        assert_eq!(c.core.ip6.as_ref().unwrap().map_host_loopback, None);
        let c = cfg(
            Mode::Passt,
            &[
                "--no-dhcp",
                "--no-ndp",
                "--no-tcp",
                "--no-udp",
                "--no-icmp",
                "--no-dhcp-dns",
            ],
            &h,
            "",
        );
        let f = c.core.features;
        assert!(!f.dhcp && !f.ndp && !f.ra && !f.tcp && !f.udp && !f.icmp && !f.advertise_dns);
        assert!(f.dhcpv6 && f.advertise_search);
        let mut nogw = host();
        nogw.v4.as_mut().unwrap().gateway = None;
        let c = cfg(Mode::Passt, &[], &nogw, "");
        assert!(!c.core.features.dhcp, "no IPv4 gateway: no DHCP");
        assert_eq!(c.core.ip4.as_ref().unwrap().map_host_loopback, None);
        let c = cfg(Mode::Passt, &["-F", "7", "-t", "192.0.2.2/80"], &h, "");
        assert!(c.one_off);
        assert!(build(
            Mode::Passt,
            &opts(Mode::Passt, &["-6", "-t", "192.0.2.2/80"]),
            &h,
            &Resolv::default()
        )
        .is_err());
        let c = cfg(Mode::Passt, &["--vhost-user"], &h, "");
        assert!(c.vhost_user);
    }

    #[test]
    fn config_net_contents() {
        let h = host();
        let c = cfg(
            Mode::Pasta,
            &[
                "--config-net",
                "-m",
                "1500",
                "--ns-mac-addr",
                "02:00:00:00:00:02",
            ],
            &h,
            "",
        );
        assert!(!c.core.features.ra);
        let n = c.ns_net.unwrap();
        assert_eq!(n.ifname, "eth0");
        assert_eq!(n.mtu, Some(1500));
        assert_eq!(n.mac, Some([2, 0, 0, 0, 0, 2]));
        let v4 = n.v4.unwrap();
        assert_eq!(v4.addrs, vec![na("192.0.2.2", 24), na("10.1.2.3", 8)]);
        assert_eq!(v4.routes, h.v4.as_ref().unwrap().routes);
        let v6 = n.v6.unwrap();
        assert_eq!(v6.addrs, vec![na("2001:db8::2", 64)]);
        assert_eq!(v6.routes, h.v6.as_ref().unwrap().routes);
        // -a and -g: one address, default route only, per family.
        let c = cfg(
            Mode::Pasta,
            &["--config-net", "-a", "192.0.2.50", "-g", "192.0.2.1"],
            &h,
            "",
        );
        let n = c.ns_net.unwrap();
        assert_eq!(n.v4.as_ref().unwrap().addrs, vec![na("192.0.2.50", 24)]);
        assert_eq!(
            n.v4.as_ref().unwrap().routes,
            vec![rt("0.0.0.0", 0, Some("192.0.2.1"))]
        );
        assert_eq!(n.v6.as_ref().unwrap().routes.len(), 2, "IPv6 still copied");
        let c = cfg(
            Mode::Pasta,
            &["--config-net", "--no-copy-addrs", "--no-copy-routes"],
            &h,
            "",
        );
        let n = c.ns_net.unwrap();
        assert_eq!(n.v4.as_ref().unwrap().addrs, vec![na("192.0.2.2", 24)]);
        assert_eq!(n.v6.as_ref().unwrap().addrs, vec![na("2001:db8::2", 64)]);
        assert_eq!(
            n.v6.as_ref().unwrap().routes,
            vec![rt("::", 0, Some("fe80::1"))]
        );
        let c = cfg(Mode::Pasta, &["--config-net", "-m", "0"], &h, "");
        assert_eq!(c.ns_net.unwrap().mtu, None);
        assert!(cfg(Mode::Pasta, &[], &h, "").ns_net.is_none());
    }

    #[test]
    fn summary_lines() {
        let c = cfg(
            Mode::Pasta,
            &["--dhcp-dns", "-o", "192.0.2.2", "--outbound-if4", "eth0"],
            &host(),
            "nameserver 127.0.0.53\nsearch s.test\n",
        );
        let s = summary(&c);
        for needle in [
            "Host interface used as template: eth0 (IPv4), eth0 (IPv6)",
            "Outbound interface: eth0 (IPv4)",
            "Outbound address: 192.0.2.2",
            "Namespace interface: eth0",
            "Our MAC address: 9a:55:9a:55:9a:55",
            "Reaches host's 127.0.0.1: 192.0.2.1",
            "    netmask: 255.255.255.0",
            "    router: 192.0.2.1",
            "DNS to 192.0.2.1 goes to 127.0.0.53",
            "NDP and DHCPv6:",
            "    our link-local: fe80::1",
            "DNS search list:\n    s.test",
            "Not advertised to the guest: search list",
        ] {
            assert!(s.contains(needle), "missing {needle:?} in:\n{s}");
        }
    }

    #[test]
    fn qemu_hints() {
        let h = socket_hints(std::path::Path::new("/tmp/passt_1.socket"), false);
        assert!(h.contains("addr.path=/tmp/passt_1.socket"), "{h}");
        let h = socket_hints(std::path::Path::new("/tmp/v.sock"), true);
        assert!(
            h.contains("-chardev socket,id=chr0,path=/tmp/v.sock"),
            "{h}"
        );
    }

    #[test]
    fn runas_resolution() {
        let c = cfg(Mode::Passt, &["--runas", "12345:0"], &host(), "");
        assert_eq!(c.runas, Some((12345, 0)));
        let c = cfg(Mode::Passt, &["--runas", "12345"], &host(), "");
        assert_eq!(c.runas.map(|r| r.0), Some(12345));
        assert!(build(
            Mode::Passt,
            &opts(Mode::Passt, &["--runas", "no-such-user-x"]),
            &host(),
            &Resolv::default()
        )
        .is_err());
    }

    #[test]
    fn random_and_time() {
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        random_bytes(&mut x).unwrap();
        random_bytes(&mut y).unwrap();
        assert_ne!(x, y);
        let t = duid_time_now();
        // 2026 is about 26 years after 2000.
        assert!(t > 25 * 365 * 86400 && t < 60 * 365 * 86400, "{t}");
        let (a, b) = read_ephemeral();
        assert!(a <= b && a > 0);
    }

    /// Discovery against real interfaces in a throw-away namespace.
    fn discover(args: &[&str]) -> io::Result<HostInfo> {
        discover_host(&opts(Mode::Pasta, args))
    }

    fn veth(name: &str, peer: &str) {
        ip(&format!("link add {name} type veth peer name {peer}"));
        ip(&format!("link set {peer} up"));
        ip(&format!("link set {name} up"));
    }

    #[test]
    fn discovery_default_route() {
        let Some(()) = in_netns(|| {
            veth("wan0", "wanp");
            veth("lan0", "lanp");
            ip("addr add 198.51.100.2/24 dev lan0");
            ip("addr add 10.0.0.2/8 dev wan0");
            ip("addr add 192.0.2.2/24 dev wan0");
            ip("addr add 192.0.2.9/30 dev wan0 preferred_lft 0");
            ip("route add default via 192.0.2.1 dev wan0");
            ip("-6 addr add 2001:db8::2/64 dev wan0 nodad");
            ip("-6 addr add 2001:db8:1::2/80 dev wan0 nodad preferred_lft 0");
            ip("-6 route add default via fe80::1 dev wan0");
            ip("-6 addr add fe80::2/64 dev wan0 nodad");
            let h = discover(&[]).unwrap();
            let v4 = h.v4.as_ref().unwrap();
            assert_eq!(v4.ifname, "wan0");
            assert_eq!(
                v4.addrs.first(),
                Some(&na("192.0.2.2", 24)),
                "most specific, not deprecated"
            );
            assert!(!v4.addrs.contains(&na("192.0.2.9", 30)));
            assert_eq!(v4.gateway, Some(a("192.0.2.1")));
            assert_eq!(v4.mtu, 1500);
            let plain: Vec<NsRoute> = v4
                .routes
                .iter()
                .map(|r| NsRoute {
                    metric: None,
                    ..r.clone()
                })
                .collect();
            assert!(plain.contains(&rt("0.0.0.0", 0, Some("192.0.2.1"))));
            assert!(plain.contains(&rt("192.0.2.0", 24, None)));
            assert!(
                !v4.routes.iter().any(|r| r.dst == a("198.51.100.0")),
                "other interface's routes"
            );
            let v6 = h.v6.as_ref().unwrap();
            assert_eq!(v6.ifname, "wan0");
            assert_eq!(v6.addrs, vec![na("2001:db8::2", 64)]);
            assert_eq!(v6.gateway, Some(a("fe80::1")));
            assert!(v6.link_local.is_some_and(netlink::is_link_local));
            assert!(!v6.routes.iter().any(|r| netlink::is_link_local(r.dst)));
            let c = build(Mode::Pasta, &opts(Mode::Pasta, &[]), &h, &Resolv::default()).unwrap();
            assert_eq!(
                c.core.ip6.as_ref().unwrap().our_ll,
                "fe80::1".parse::<Ipv6Addr>().unwrap()
            );
            assert_eq!(c.ns_ifname, "wan0");
            // -i chooses another one; a missing one is an error.
            let h = discover(&["-i", "lan0"]).unwrap();
            assert_eq!(h.v4.as_ref().unwrap().ifname, "lan0");
            assert_eq!(h.v4.as_ref().unwrap().gateway, None);
            let h = discover(&["--outbound-if4", "lan0"]).unwrap();
            assert_eq!(h.v4.as_ref().unwrap().ifname, "lan0");
            assert_eq!(h.v6.as_ref().unwrap().ifname, "wan0");
            assert!(discover(&["-i", "nope0"]).is_err());
            let h = discover(&["-4"]).unwrap();
            assert!(h.v6.is_none());
        }) else {
            return;
        };
    }

    #[test]
    fn discovery_without_default_route() {
        let Some(()) = in_netns(|| {
            veth("a0", "ap");
            ip("-6 addr flush dev a0");
            let h = discover(&[]).unwrap();
            assert!(h.v4.is_none(), "{h:?}");
            let c = build(Mode::Pasta, &opts(Mode::Pasta, &[]), &h, &Resolv::default()).unwrap();
            assert!(c.local4 && c.local6);
            veth("b0", "bp");
            ip("addr add 198.51.100.2/24 dev b0");
            let h = discover(&[]).unwrap();
            let v4 = h.v4.as_ref().unwrap();
            assert_eq!(v4.ifname, "b0");
            assert_eq!(v4.gateway, None);
            let c = build(Mode::Passt, &opts(Mode::Passt, &[]), &h, &Resolv::default()).unwrap();
            assert!(!c.local4);
            assert!(!c.core.features.dhcp);
        }) else {
            return;
        };
    }

    #[test]
    fn discovery_multipath() {
        let Some(()) = in_netns(|| {
            veth("m0", "mp0");
            veth("m1", "mp1");
            ip("addr add 192.0.2.2/24 dev m0");
            ip("addr add 198.51.100.2/24 dev m1");
            ip("route add default nexthop via 192.0.2.1 dev m0 weight 1 nexthop via 198.51.100.1 dev m1 weight 10");
            let h = discover(&[]).unwrap();
            let v4 = h.v4.as_ref().unwrap();
            assert_eq!(v4.ifname, "m1", "heaviest next hop");
            assert_eq!(v4.gateway, Some(a("198.51.100.1")));
            let h = discover(&["-i", "m0"]).unwrap();
            assert_eq!(h.v4.as_ref().unwrap().gateway, Some(a("192.0.2.1")));
        }) else {
            return;
        };
    }

    #[test]
    fn discovery_nexthop_objects() {
        let Some(()) = in_netns(|| {
            veth("n0", "np0");
            ip("addr add 192.0.2.2/24 dev n0");
            ip("-6 addr add 2001:db8::2/64 dev n0 nodad");
            ip("nexthop add id 7 via 192.0.2.1 dev n0");
            ip("route add default nhid 7");
            ip("nexthop add id 8 via 2001:db8::1 dev n0");
            ip("-6 route add default nhid 8");
            let h = discover(&[]).unwrap();
            assert_eq!(h.v4.as_ref().unwrap().ifname, "n0");
            assert_eq!(h.v4.as_ref().unwrap().gateway, Some(a("192.0.2.1")));
            assert_eq!(h.v6.as_ref().unwrap().gateway, Some(a("2001:db8::1")));
        }) else {
            return;
        };
    }

    /// Discovery in one namespace, --config-net in another: the namespace
    /// ends up with the host's addresses and routes.
    #[test]
    fn config_net_end_to_end() {
        let Some(ns) = in_netns(|| {
            veth("eth7", "peer7");
            ip("addr add 192.0.2.2/24 dev eth7");
            ip("route add default via 192.0.2.1");
            ip("route add 203.0.113.0/24 via 192.0.2.254");
            ip("-6 addr add 2001:db8::2/64 dev eth7 nodad");
            ip("-6 route add default via 2001:db8::1");
            let h = discover(&[]).unwrap();
            let c = build(
                Mode::Pasta,
                &opts(Mode::Pasta, &["--config-net", "-m", "4000"]),
                &h,
                &Resolv::default(),
            )
            .unwrap();
            c.ns_net.unwrap()
        }) else {
            return;
        };
        let Some(()) = in_netns(move || {
            veth(&ns.ifname, "tapp");
            ip(&format!("link set {} down", ns.ifname));
            netlink::configure_ns_interface(&ns).unwrap();
            let out = crate::netlink::testns::ip_out(&format!("-j addr show {}", ns.ifname));
            assert!(
                out.contains("\"local\":\"192.0.2.2\",\"prefixlen\":24"),
                "{out}"
            );
            assert!(
                out.contains("\"local\":\"2001:db8::2\",\"prefixlen\":64"),
                "{out}"
            );
            assert!(out.contains("\"mtu\":4000"), "{out}");
            let r = crate::netlink::testns::ip_out("-j route");
            assert!(
                r.contains("\"dst\":\"default\",\"gateway\":\"192.0.2.1\""),
                "{r}"
            );
            assert!(
                r.contains("\"dst\":\"203.0.113.0/24\",\"gateway\":\"192.0.2.254\""),
                "{r}"
            );
            let r6 = crate::netlink::testns::ip_out("-j -6 route");
            assert_eq!(
                r6.matches("\"dst\":\"2001:db8::/64\"").count(),
                1,
                "prefix route copied with its metric, not duplicated: {r6}"
            );
            assert!(
                r6.contains("\"dst\":\"default\",\"gateway\":\"2001:db8::1\""),
                "{r6}"
            );
        }) else {
            return;
        };
    }
}
