//! `build`: defaults per mode, splicing, DNS and search lists, local
//! mode, family switches, `--config-net` contents, summary, `--runas`.

use super::*;

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
    let c = pasta(&["-t", "none", "-T", "5000:5001", "1234"]);
    assert!(c.core.splice && !c.core.host_lo_to_ns_lo);
    let f = c.core.forwards;
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].netns, passt_core::Netns::Guest);
    assert_eq!((f[0].first, f[0].target_port), (5000, 5001));
    assert_eq!((f[0].addr, f[0].ifindex), (None, Some(1)));
    let c = pasta(&["--host-lo-to-ns-lo", "1234"]);
    assert!(c.core.splice && c.core.host_lo_to_ns_lo);
    let c = pasta(&["--no-splice", "-T", "5000", "1234"]);
    assert!(!c.core.splice);
    assert!(c.core.forwards.is_empty(), "no -T without splicing");
    assert!(!cfg(Mode::Passt, &[], &h, "").core.splice);
    let e = refused(
        Mode::Pasta,
        &["--no-splice", "--host-lo-to-ns-lo", "1234"],
        &h,
    );
    assert!(e.contains("--host-lo-to-ns-lo"), "{e}");
}

/// `--splice-only`: splicing with `--host-lo-to-ns-lo`, no ICMP, no
/// interface to configure; refused with `--no-splice` and for passt.
#[test]
fn splice_only_settings() {
    let h = host();
    let c = pasta(&["--splice-only", "--config-net", "-U", "53", "1234"]);
    assert!(c.splice_only && c.core.splice_only && c.core.splice);
    assert!(c.core.host_lo_to_ns_lo && c.host_lo_to_ns_lo);
    assert!(!c.core.features.icmp);
    assert_eq!(c.ns_net, None, "no interface to configure");
    let f: Vec<_> = c
        .core
        .forwards
        .iter()
        .filter(|f| f.proto == Proto::Udp)
        .collect();
    assert!(f
        .iter()
        .any(|f| f.netns == passt_core::Netns::Guest && f.first == 53));
    let c = pasta(&["1234"]);
    assert!(!c.splice_only && !c.core.splice_only && c.core.features.icmp);
    let e = refused(Mode::Pasta, &["--splice-only", "--no-splice", "1234"], &h);
    assert!(e.contains("--splice-only"), "{e}");
}

/// An IPv4 DNS case: mode, options and resolv.conf, then what the guest
/// is told: the nameservers advertised, the address whose queries are
/// redirected (`dns_match`), and where they go (`dns_host`).
type Dns4Case = (
    Mode,
    &'static [&'static str],
    &'static str,
    &'static [&'static str],
    Option<&'static str>,
    Option<&'static str>,
);

/// The IPv4 DNS rules case by case: loopback resolvers, mapping off,
/// --map-host-loopback, the gateway as resolver, -D none, --dns-forward,
/// --dns-host, several resolvers.
#[test]
fn dns_rules_ipv4() {
    let lo = "nameserver 127.0.0.53\n";
    let cases: &[Dns4Case] = &[
        // systemd-resolved: advertise the gateway, redirect to the stub.
        (Mode::Passt, &[], lo, &["192.0.2.1"], Some("192.0.2.1"), Some("127.0.0.53")),
        // Mapping off, but --dns-forward (Podman's defaults): the stub is
        // reached through the forwarding address, which is advertised.
        (
            Mode::Passt,
            &["--no-map-gw", "--dns-forward", "169.254.1.1"],
            lo,
            &["169.254.1.1"],
            Some("169.254.1.1"),
            Some("127.0.0.53"),
        ),
        // Mapping off: loopback resolvers can't be used.
        (Mode::Passt, &["--no-map-gw"], lo, &[], None, Some("127.0.0.53")),
        // Explicit mapping address.
        (
            Mode::Passt,
            &["--map-host-loopback", "192.0.2.99"],
            "nameserver 127.0.0.1\n",
            &["192.0.2.99"],
            Some("192.0.2.99"),
            Some("127.0.0.1"),
        ),
        // The resolver is the gateway.
        (
            Mode::Passt,
            &[],
            "nameserver 192.0.2.1\n",
            &["192.0.2.1"],
            Some("192.0.2.1"),
            Some("192.0.2.1"),
        ),
        // -D none: nothing at all.
        (Mode::Passt, &["-D", "none", "--dns-forward", "192.0.2.53"], lo, &[], None, None),
        // --dns-forward, host resolver from resolv.conf or --dns-host.
        (
            Mode::Pasta,
            &["--dns-forward", "169.254.1.1"],
            "nameserver 198.51.100.1\nnameserver 198.51.100.2\n",
            &["198.51.100.1", "198.51.100.2"],
            Some("169.254.1.1"),
            Some("198.51.100.1"),
        ),
        (
            Mode::Pasta,
            &["--dns-forward", "169.254.1.1", "--dns-host", "198.51.100.9"],
            lo,
            &["169.254.1.1"],
            Some("169.254.1.1"),
            Some("198.51.100.9"),
        ),
        // A remote resolver first, then a loopback one: both reachable, the
        // redirection goes to the first one.
        (
            Mode::Passt,
            &[],
            "nameserver 198.51.100.1\nnameserver 127.0.0.53\nnameserver 127.0.0.54\n",
            &["198.51.100.1", "192.0.2.1"],
            Some("192.0.2.1"),
            Some("198.51.100.1"),
        ),
        // With --dns-forward, a loopback resolver is advertised as the
        // forwarding address.
        (
            Mode::Passt,
            &["--dns-forward", "192.0.2.53"],
            "nameserver 127.0.0.53\nnameserver 198.51.100.1\n",
            &["192.0.2.53", "198.51.100.1"],
            Some("192.0.2.53"),
            Some("127.0.0.53"),
        ),
        // Many resolvers: three advertised.
        (
            Mode::Passt,
            &[],
            "nameserver 198.51.100.1\nnameserver 198.51.100.2\nnameserver 198.51.100.3\nnameserver 198.51.100.4\n",
            &["198.51.100.1", "198.51.100.2", "198.51.100.3"],
            None,
            Some("198.51.100.1"),
        ),
    ];
    for &(mode, args, resolv, dns, dns_match, dns_host) in cases {
        let ip4 = cfg(mode, args, &host(), resolv).core.ip4.unwrap();
        let want: Vec<Ipv4Addr> = dns.iter().map(|a| v4(a)).collect();
        assert_eq!(ip4.dns.as_slice(), &want[..], "{args:?} {resolv:?}");
        assert_eq!(ip4.dns_match, dns_match.map(v4), "{args:?} {resolv:?}");
        assert_eq!(ip4.dns_host, dns_host.map(v4), "{args:?} {resolv:?}");
    }
}

/// The rest of the DNS rules: IPv6 and scoped resolvers, warnings, the
/// mapping address, -D verbatim.
#[test]
fn dns_rules() {
    let h = host();
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
    // A loopback resolver without mapping: warned about, unless
    // --dns-forward reaches it.
    let lo = "nameserver 127.0.0.53\n";
    let forward = ["--no-map-gw", "--dns-forward", "169.254.1.1"];
    let c = cfg(Mode::Passt, &forward, &h, lo);
    assert!(!c.warnings.iter().any(|w| w.contains("nameserver")));
    let c = cfg(Mode::Passt, &["--no-map-gw"], &h, lo);
    assert!(c.warnings.iter().any(|w| w.contains("nameserver")));
    // Explicit mapping address.
    let c = cfg(
        Mode::Passt,
        &["--map-host-loopback", "192.0.2.99"],
        &h,
        "nameserver 127.0.0.1\n",
    );
    let ip4 = c.core.ip4.unwrap();
    assert_eq!(ip4.map_host_loopback, Some(Ipv4Addr::new(192, 0, 2, 99)));
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
// Over 100 lines on purpose: local mode case after case (both families,
// one family, with options), each a few assertions, read side by side.
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
    assert_contains(
        &sum,
        &[
            "IPv4: no usable host interface, local mode",
            "IPv6: no usable host interface, local mode",
        ],
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
    assert_contains(
        &sum,
        &[
            "Host interface used as template: eth0 (IPv6)",
            "IPv4: no usable host interface, local mode",
        ],
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
    refused(Mode::Passt, &["-6", "-t", "192.0.2.2/80"], &h);
    let c = cfg(Mode::Passt, &["--vhost-user"], &h, "");
    assert!(c.vhost_user);
}

#[test]
fn config_net_contents() {
    let h = host();
    let c = pasta(&[
        "--config-net",
        "-m",
        "1500",
        "--ns-mac-addr",
        "02:00:00:00:00:02",
    ]);
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
    let c = pasta(&["--config-net", "-a", "192.0.2.50", "-g", "192.0.2.1"]);
    let n = c.ns_net.unwrap();
    assert_eq!(n.v4.as_ref().unwrap().addrs, vec![na("192.0.2.50", 24)]);
    assert_eq!(
        n.v4.as_ref().unwrap().routes,
        vec![rt("0.0.0.0", 0, Some("192.0.2.1"))]
    );
    assert_eq!(n.v6.as_ref().unwrap().routes.len(), 2, "IPv6 still copied");
    let c = pasta(&["--config-net", "--no-copy-addrs", "--no-copy-routes"]);
    let n = c.ns_net.unwrap();
    assert_eq!(n.v4.as_ref().unwrap().addrs, vec![na("192.0.2.2", 24)]);
    assert_eq!(n.v6.as_ref().unwrap().addrs, vec![na("2001:db8::2", 64)]);
    assert_eq!(
        n.v6.as_ref().unwrap().routes,
        vec![rt("::", 0, Some("fe80::1"))]
    );
    let c = pasta(&["--config-net", "-m", "0"]);
    assert_eq!(c.ns_net.unwrap().mtu, None);
    assert!(pasta(&[]).ns_net.is_none());
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
    refused(Mode::Passt, &["--runas", "no-such-user-x"], &host());
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
