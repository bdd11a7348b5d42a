//! The start-up summary and the hints printed for connecting qemu.

use super::*;

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

pub(super) fn list<T: std::fmt::Display>(v: &[T]) -> String {
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
        ip4_lines(&mut s, c, ip4);
    }
    if let Some(ip6) = &c.ip6 {
        ip6_lines(&mut s, c, ip6);
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

/// The IPv4 part of [`summary`]: mappings, DHCP or the address, DNS.
fn ip4_lines(s: &mut String, c: &Config, ip4: &Ip4Config) {
    mapping_lines(
        s,
        "127.0.0.1",
        ip4.map_host_loopback,
        "own address",
        ip4.map_guest_addr,
    );
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
    dns_lines(s, "IPv4", &ip4.dns, ip4.dns_match, ip4.dns_host);
}

/// The IPv6 part of [`summary`]: mappings, NDP/DHCPv6, DNS.
fn ip6_lines(s: &mut String, c: &Config, ip6: &Ip6Config) {
    mapping_lines(
        s,
        "::1",
        ip6.map_host_loopback,
        "own IPv6 address",
        ip6.map_guest_addr,
    );
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
    dns_lines(s, "IPv6", &ip6.dns, ip6.dns_match, ip6.dns_host);
}

/// The address mappings of one family: what reaches the host's loopback
/// (`lo`) and its own address (`own`).
fn mapping_lines<A: std::fmt::Display>(
    s: &mut String,
    lo: &str,
    map_host_loopback: Option<A>,
    own: &str,
    map_guest_addr: Option<A>,
) {
    if let Some(m) = map_host_loopback {
        let _ = writeln!(s, "Reaches host's {lo}: {m}");
    }
    if let Some(m) = map_guest_addr {
        let _ = writeln!(s, "Reaches host's {own}: {m}");
    }
}

/// The nameservers of one family and its DNS redirection.
fn dns_lines<A: std::fmt::Display>(
    s: &mut String,
    fam: &str,
    dns: &[A],
    dns_match: Option<A>,
    dns_host: Option<A>,
) {
    if !dns.is_empty() {
        let _ = write!(s, "{fam} nameservers:\n{}", list(dns));
    }
    if let (Some(m), Some(h)) = (dns_match, dns_host) {
        let _ = writeln!(s, "DNS to {m} goes to {h}");
    }
}
