//! From the command line, the host's interfaces and its resolver
//! configuration to a [`RuntimeConfig`]: the core's [`Config`] plus what the
//! driver itself needs (socket, namespaces, logging, `--config-net`).
//!
//! [`discover_host`] looks at the host through netlink; [`build`] is pure
//! (apart from the random secret and the clock for the DHCPv6 DUID, and user
//! name look-ups for `--runas`) so that the rules can be tested with made-up
//! hosts.

use crate::cli::{self, v4_of, v6_of, IdOrName, Mode, Options, PastaTarget};
use crate::fwd::{Forwarding, FwdMode, FwdTable, SpecKind, EPHEMERAL_DEFAULT};
use crate::netlink::{self, AddrInfo, LinkInfo, RouteInfo, IFA_F_DEPRECATED, IFF_LOOPBACK};
use crate::resolv::Resolv;
use passt_core::Proto;
use passt_core::{Config, Ip4Config, Ip6Config, Mac, DEFAULT_MTU, MAX_DNS, MAX_SEARCH};
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

mod host;
mod nsnet;
pub mod resolv;
mod summary;

pub use host::*;
pub use nsnet::*;
pub use summary::*;

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

/// Everything a run needs: the core's configuration and the driver's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// passt or pasta.
    pub mode: Mode,
    /// The core's configuration.
    pub core: Config,
    /// The forwarding tables (`-t`, `-u`, `-T`, `-U`); the explicit and
    /// `all` ones of `-t` and `-u` are in `core.forwards` too.
    pub fwd: Forwarding,
    /// `-s`: the UNIX domain socket (passt); `None` probes a free one.
    pub socket_path: Option<PathBuf>,
    /// passt `--vhost-user`: the socket speaks vhost-user.
    pub vhost_user: bool,
    /// `-F`: pre-opened descriptor.
    pub fd: Option<i32>,
    /// Exit when the client goes away (`-1`, implied by `--fd` for passt).
    pub one_off: bool,
    /// What pasta connects to.
    pub target: Option<PastaTarget>,
    /// Don't create or join a user namespace.
    pub netns_only: bool,
    /// User namespace to join: `--userns`, or that of the target PID.
    pub userns: Option<PathBuf>,
    /// `--no-netns-quit`.
    pub no_netns_quit: bool,
    /// `--splice-only`: no tap device in the namespace.
    pub splice_only: bool,
    /// `--no-splice` (always set for passt).
    pub no_splice: bool,
    /// `--host-lo-to-ns-lo` (implied by `--splice-only`).
    pub host_lo_to_ns_lo: bool,
    /// Name of the tap interface in the namespace (pasta).
    pub ns_ifname: String,
    /// What `--config-net` applies (pasta with `--config-net` only).
    pub ns_net: Option<NsNetConfig>,
    /// pasta `--no-tap-offload`: a plain tap, without virtio-net headers.
    pub no_tap_offload: bool,
    /// No usable host interface for IPv4: link-local defaults (local mode).
    pub local4: bool,
    /// Name of the host's IPv4 template interface, for messages.
    pub template4: Option<String>,
    /// `-o` for IPv4.
    pub outbound4: Option<Ipv4Addr>,
    /// `--outbound-if4`.
    pub outbound_if4: Option<String>,
    /// No usable host interface for IPv6: link-local defaults (local mode).
    pub local6: bool,
    /// Name of the host's IPv6 template interface, for messages.
    pub template6: Option<String>,
    /// Index of the IPv6 template interface: the scope of link-local
    /// destinations on the host side.
    pub ifindex6: Option<u32>,
    /// `-o` for IPv6.
    pub outbound6: Option<Ipv6Addr>,
    /// `--outbound-if6`.
    pub outbound_if6: Option<String>,
    /// `--runas`, resolved to (uid, gid). `None`: keep the current ids (the
    /// driver drops root to nobody by itself).
    pub runas: Option<(u32, u32)>,
    /// `--seccomp-log`: log system calls outside the allowlist instead of
    /// killing the process.
    pub seccomp_log: bool,
    /// Don't daemonise.
    pub foreground: bool,
    /// `-P`.
    pub pid_file: Option<PathBuf>,
    /// Warnings and errors only.
    pub quiet: bool,
    /// Debug messages.
    pub debug: bool,
    /// Per-packet messages.
    pub trace: bool,
    /// Things to log at start-up (remapped ports, no nameserver, ...).
    pub warnings: Vec<String>,
    /// `-l`.
    pub log_file: Option<PathBuf>,
    /// `--log-size` (default 1 MiB).
    pub log_size: u64,
    /// `-p`.
    pub pcap: Option<PathBuf>,
    /// `--stats`: seconds between event count lines.
    pub stats: Option<u32>,
}

fn classful(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        192..=223 => 24,
        _ => 32,
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

/// Applies §DNS rules for one family: `of` picks the family's addresses
/// from the options (`-D`, the last `--dns-forward` and `--dns-host`);
/// `map`: the host-loopback mapping.
fn dns_family<A: Copy + PartialEq + Into<IpAddr>>(
    opts: &Options,
    of: fn(IpAddr) -> Option<A>,
    from_resolv: &[A],
    map: Option<A>,
) -> Dns<A> {
    let last = |v: &[IpAddr]| cli::last_of(v, of);
    let given = dns_given(opts, of);
    let mut d = Dns {
        list: Vec::new(),
        dns_match: last(&opts.dns_forward),
        dns_host: last(&opts.dns_host),
    };
    if opts.dns_disabled() {
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
            push(&mut d.list, a);
        }
        return d;
    }
    for ns in from_resolv {
        if (*ns).into().is_loopback() || Some(*ns) == map {
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

/// The addresses of each family: from the template interfaces and the
/// options, or local mode for a family without a usable host interface.
struct Families<'a> {
    t4: Option<&'a HostFamily>,
    t6: Option<&'a HostFamily>,
    usable4: bool,
    usable6: bool,
    local4: bool,
    local6: bool,
    ip4: Option<Ip4Config>,
    ip6: Option<Ip6Config>,
}

/// The IPv4 configuration: local mode, or the template's address, prefix
/// and gateway unless the options give them.
fn ip4_config(
    opts: &Options,
    t4: Option<&HostFamily>,
    addr4: Option<Ipv4Addr>,
    local4: bool,
) -> Result<Ip4Config, String> {
    let map4 = cli::map_v4(&opts.map_host_loopback);
    let guest4 = cli::map_v4(&opts.map_guest_addr).flatten();
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
    Ok(c)
}

/// First step of [`build`]: the families, their addresses and gateways.
fn families<'a>(opts: &Options, host: &'a HostInfo) -> Result<Families<'a>, String> {
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

    let map6 = cli::map_v6(&opts.map_host_loopback);
    let guest6 = cli::map_v6(&opts.map_guest_addr).flatten();

    let ip4 = if v4_on {
        Some(ip4_config(opts, t4, addr4, local4)?)
    } else {
        None
    };

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

    Ok(Families {
        t4,
        t6,
        usable4,
        usable6,
        local4,
        local6,
        ip4,
        ip6,
    })
}

/// The `-D` addresses of one family.
fn dns_given<A>(opts: &Options, of: fn(IpAddr) -> Option<A>) -> Vec<A> {
    opts.dns
        .iter()
        .filter_map(|d| match d {
            cli::AddrOrNone::Addr(a) => of(*a),
            cli::AddrOrNone::None => None,
        })
        .collect()
}

/// [`build`]'s DNS step: nameservers, the DNS redirection and the host's
/// resolver of each family.
fn apply_dns(
    opts: &Options,
    resolv: &Resolv,
    ip4: &mut Option<Ip4Config>,
    ip6: &mut Option<Ip6Config>,
    warnings: &mut Vec<String>,
) {
    if let Some(c) = ip4.as_mut() {
        let d = dns_family(opts, v4_of, &resolv.v4, c.map_host_loopback);
        for a in d.list {
            let _ = c.dns.push(a);
        }
        (c.dns_match, c.dns_host) = (d.dns_match, d.dns_host);
    }
    if let Some(c) = ip6.as_mut() {
        let d = dns_family(opts, v6_of, &resolv.v6, c.map_host_loopback);
        for a in d.list {
            let _ = c.dns.push(a);
        }
        (c.dns_match, c.dns_host) = (d.dns_match, d.dns_host);
    }
    let disabled = opts.dns_disabled();
    let no_dns = ip4.as_ref().is_none_or(|c| c.dns.is_empty())
        && ip6.as_ref().is_none_or(|c| c.dns.is_empty());
    if !disabled && no_dns {
        warnings.push("no nameserver address to advertise".into());
    }
}

/// The search list: `-S`, else the host's.
fn search_list(opts: &Options, resolv: &Resolv) -> Vec<String> {
    if opts.search_disabled() {
        Vec::new()
    } else if !opts.search.is_empty() {
        opts.search.clone()
    } else {
        resolv.search.clone()
    }
    .into_iter()
    .take(MAX_SEARCH)
    .collect()
}

/// [`build`]'s services step: the core's configuration without forwarding
/// and secrets.
fn core_config(
    mode: Mode,
    opts: &Options,
    search: Vec<String>,
    ip4: Option<Ip4Config>,
    ip6: Option<Ip6Config>,
) -> Config {
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
    // `--splice-only` has no guest link: no ICMP (as upstream).
    f.icmp = !opts.no_icmp && !opts.splice_only;
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

    core
}

/// [`build`]'s forwarding step: the `-t -u -T -U` tables, their checks
/// against the families in use, and splicing.
fn forwarding(
    mode: Mode,
    opts: &Options,
    host: &HostInfo,
    core: &mut Config,
    warnings: &mut Vec<String>,
) -> Result<Forwarding, String> {
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
            warnings,
        )?,
        udp_in: fwd_table(
            &opts.udp_ports,
            kind_in,
            eph,
            default_in,
            opts.no_udp,
            "-u",
            warnings,
        )?,
        tcp_out: fwd_table(
            &opts.tcp_ns,
            SpecKind::PastaOutbound,
            eph,
            default_out,
            opts.no_tcp,
            "-T",
            warnings,
        )?,
        udp_out: fwd_table(
            &opts.udp_ns,
            SpecKind::PastaOutbound,
            eph,
            default_out,
            opts.no_udp,
            "-U",
            warnings,
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
    if mode == Mode::Pasta && opts.splice_only && opts.no_splice {
        return Err("--splice-only is incompatible with --no-splice".into());
    }
    if mode == Mode::Pasta && opts.host_lo_to_ns_lo && opts.no_splice {
        return Err("--host-lo-to-ns-lo is incompatible with --no-splice".into());
    }
    core.splice = mode == Mode::Pasta && !opts.no_splice;
    core.splice_only = core.splice && opts.splice_only;
    core.host_lo_to_ns_lo = core.splice && (opts.host_lo_to_ns_lo || opts.splice_only);
    if core.splice {
        core.forwards.extend(
            fwd.tcp_out
                .forwards(Proto::Tcp)
                .into_iter()
                .chain(fwd.udp_out.forwards(Proto::Udp))
                .map(crate::fwd::outbound_forward),
        );
    }

    Ok(fwd)
}

/// [`build`]'s secrets step: the flow-hash secret, the seed and the DUID time.
fn secrets(core: &mut Config) -> Result<(), String> {
    random_bytes(&mut core.secret).map_err(|e| format!("no random source: {e}"))?;
    let mut seed = [0u8; 8];
    random_bytes(&mut seed).map_err(|e| format!("no random source: {e}"))?;
    core.seed = u64::from_ne_bytes(seed);
    core.duid_time = duid_time_now();

    Ok(())
}

/// Builds the configuration of a run, in steps: families, DNS, services,
/// forwarding, secrets, then what the driver itself needs.
pub fn build(
    mode: Mode,
    opts: &Options,
    host: &HostInfo,
    resolv: &Resolv,
) -> Result<RuntimeConfig, String> {
    let mut warnings: Vec<String> = host.notes.clone();
    let mut fam = families(opts, host)?;
    apply_dns(opts, resolv, &mut fam.ip4, &mut fam.ip6, &mut warnings);
    let search = search_list(opts, resolv);
    let mut core = core_config(mode, opts, search, fam.ip4, fam.ip6);
    let (t4, t6, local4, local6) = (fam.t4, fam.t6, fam.local4, fam.local6);
    let fwd = forwarding(mode, opts, host, &mut core, &mut warnings)?;
    secrets(&mut core)?;

    let template4 = t4.filter(|_| fam.usable4).map(|t| t.ifname.clone());
    let template6 = t6.filter(|_| fam.usable6).map(|t| t.ifname.clone());
    let ns_ifname = opts
        .ns_ifname
        .clone()
        .or_else(|| template4.clone())
        .or_else(|| template6.clone())
        .unwrap_or_else(|| LOCAL_IFNAME.to_string());

    // `--splice-only`: no interface to configure.
    let ns_net = (mode == Mode::Pasta && opts.config_net && !opts.splice_only)
        .then(|| ns_net_config(opts, &core, t4, t6, (local4, local6), &ns_ifname));

    let spawn = matches!(opts.target, Some(PastaTarget::Spawn(_)));
    let runas = opts.runas.as_ref().map(resolve_runas).transpose()?;

    Ok(RuntimeConfig {
        mode,
        ns_ifname,
        ns_net,
        template4,
        template6,
        ifindex6: t6.filter(|_| fam.usable6).map(|t| t.ifindex),
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
        host_lo_to_ns_lo: opts.host_lo_to_ns_lo || (mode == Mode::Pasta && opts.splice_only),
        splice_only: mode == Mode::Pasta && opts.splice_only,
        outbound4: opts.outbound4(),
        outbound6: opts.outbound6(),
        outbound_if4: opts.outbound_if4.clone(),
        outbound_if6: opts.outbound_if6.clone(),
        warnings,
        core,
        fwd,
    })
}

#[cfg(test)]
mod tests;
