use super::*;
use proptest::strategy::Strategy as _;

fn parse(mode: Mode, args: &[&str]) -> Result<Options, CliError> {
    let v: Vec<OsString> = args.iter().map(OsString::from).collect();
    parse_args(mode, &v)
}
fn ok(mode: Mode, args: &[&str]) -> Options {
    parse(mode, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}
/// The error message, which must name `needle`.
fn bad(mode: Mode, args: &[&str], needle: &str) {
    match parse(mode, args) {
        Err(e @ CliError::Usage(_)) => {
            assert_eq!(e.exit_code(), 1);
            let m = e.to_string();
            assert!(!m.contains('\n'), "{args:?}: {m}");
            assert!(m.contains(needle), "{args:?}: '{m}' should name '{needle}'");
        }
        other => panic!("{args:?}: expected a usage error, got {other:?}"),
    }
}

#[test]
fn argv0() {
    for (n, m) in [
        ("pasta", Some(Mode::Pasta)),
        ("/usr/bin/pasta.avx2", Some(Mode::Pasta)),
        ("passt", Some(Mode::Passt)),
        ("./passt.avx2", Some(Mode::Passt)),
        ("/opt/passt/bin/pasta", Some(Mode::Pasta)),
        ("qrap", None),
        ("", None),
    ] {
        assert_eq!(mode_from_argv0(OsStr::new(n)), m, "{n}");
    }
}

#[test]
fn defaults() {
    let o = ok(Mode::Passt, &[]);
    assert_eq!(o.mode, Mode::Passt);
    assert!(!o.debug && !o.quiet && !o.foreground && !o.one_off);
    assert_eq!(o.mtu, None);
    assert!(o.tcp_ports.is_empty());
    assert_eq!(o.target, None);
    let o = ok(Mode::Pasta, &[]);
    assert_eq!(o.target, Some(PastaTarget::Spawn(vec![])));
}

#[test]
// Over 100 lines on purpose: a list with a line per option form, so that
// an option missing here stands out.
fn every_option_parses() {
    let common: &[&[&str]] = &[
        &["-d"],
        &["--debug"],
        &["--trace"],
        &["-q"],
        &["--quiet"],
        &["-f"],
        &["--foreground"],
        &["-e"],
        &["--stderr"],
        &["-l", "/tmp/x.log"],
        &["--log-file", "/tmp/x.log"],
        &["--log-size", "100000"],
        &["--runas", "1000"],
        &["--runas", "1000:1000"],
        &["--runas", "nobody"],
        &["--runas", "nobody:nogroup"],
        &["-F", "3"],
        &["--fd", "10"],
        &["-p", "/tmp/x.pcap"],
        &["--pcap", "/tmp/x.pcap"],
        &["-P", "/tmp/x.pid"],
        &["--pid", "/tmp/x.pid"],
        &["-m", "1500"],
        &["--mtu", "0"],
        &["--mtu", "65535"],
        &["--mtu", "68"],
        &["-a", "192.0.2.2"],
        &["--address", "2001:db8::2"],
        &["-n", "24"],
        &["--netmask", "255.255.255.0"],
        &["-M", "02:00:00:00:00:01"],
        &["--mac-addr", "9a:55:9a:55:9a:56"],
        &["-g", "192.0.2.1"],
        &["--gateway", "fe80::1"],
        &["-i", "eth0"],
        &["--interface", "eth0"],
        &["-o", "192.0.2.2"],
        &["--outbound", "2001:db8::2"],
        &["--outbound-if4", "eth0"],
        &["--outbound-if6", "eth1"],
        &["-D", "192.0.2.53"],
        &["--dns", "none"],
        &["-S", "example.org"],
        &["--search", "none"],
        &["--dns-forward", "192.0.2.53"],
        &["--dns-host", "127.0.0.53"],
        &["--no-tcp"],
        &["--no-udp"],
        &["--no-icmp"],
        &["--no-dhcp"],
        &["--no-ndp"],
        &["--no-dhcpv6"],
        &["--no-ra"],
        &["--freebind"],
        &["--map-host-loopback", "192.0.2.1"],
        &["--map-host-loopback", "none"],
        &["--no-map-gw"],
        &["--map-guest-addr", "192.0.2.3"],
        &["--map-guest-addr", "none"],
        &["-4"],
        &["--ipv4-only"],
        &["-6"],
        &["--ipv6-only"],
        &["-t", "22"],
        &["--tcp-ports", "none"],
        &["-u", "53"],
        &["--udp-ports", "1000-2000:3000-4000"],
    ];
    let passt: &[&[&str]] = &[
        &["-s", "/tmp/s.sock"],
        &["--socket", "/tmp/s.sock"],
        &["--socket-path", "/tmp/s.sock"],
        &["--vhost-user"],
        &["-1"],
        &["--one-off"],
        &["--no-dhcp-dns"],
        &["--no-dhcp-search"],
        &["-t", "all"],
        &["-u", "~53"],
    ];
    let pasta: &[&[&str]] = &[
        &["-I", "tap0"],
        &["--ns-ifname", "eth0"],
        &["-T", "auto"],
        &["--tcp-ns", "8080:80"],
        &["-U", "none"],
        &["--udp-ns", "53"],
        &["--host-lo-to-ns-lo"],
        &["--netns", "foo"],
        &["--netns-only"],
        &["--no-netns-quit"],
        &["--config-net"],
        &["--config-net", "--no-copy-routes"],
        &["--config-net", "--no-copy-addrs"],
        &["--ns-mac-addr", "02:00:00:00:00:02"],
        &["--no-splice"],
        &["--no-tap-offload"],
        &["--dhcp-dns"],
        &["--dhcp-search"],
        &["-t", "auto"],
        &["--userns", "/proc/1/ns/user", "1"],
    ];
    for a in common {
        ok(Mode::Passt, a);
        ok(Mode::Pasta, a);
    }
    for a in passt {
        ok(Mode::Passt, a);
    }
    for a in pasta {
        ok(Mode::Pasta, a);
    }
}

#[test]
fn typed_values() {
    let o = ok(
        Mode::Pasta,
        &[
            "-a",
            "192.0.2.2",
            "-a",
            "2001:db8::2",
            "-a",
            "192.0.2.3",
            "-n",
            "255.255.0.0",
            "-g",
            "192.0.2.1",
            "-m",
            "1500",
            "-M",
            "02:00:00:00:00:01",
            "--log-size",
            "50000",
            "--runas",
            "1000:100",
            "-F",
            "5",
            "-D",
            "192.0.2.53",
            "-D",
            "2001:db8::53",
            "-S",
            "a.test",
            "-S",
            "b.test",
        ],
    );
    assert_eq!(o.addr4(), Some("192.0.2.3".parse().unwrap()));
    assert_eq!(o.addr6(), Some("2001:db8::2".parse().unwrap()));
    assert_eq!(o.netmask, Some(16));
    assert_eq!(o.gateway4(), Some("192.0.2.1".parse().unwrap()));
    assert_eq!(o.gateway6(), None);
    assert_eq!(o.mtu, Some(1500));
    assert_eq!(o.mac_addr, Some(Mac([2, 0, 0, 0, 0, 1])));
    assert_eq!(o.log_size, Some(50000));
    assert_eq!(
        o.runas,
        Some(RunAs {
            user: IdOrName::Id(1000),
            group: Some(IdOrName::Id(100))
        })
    );
    assert_eq!(o.fd, Some(5));
    assert_eq!(o.dns.len(), 2);
    assert_eq!(o.search, vec!["a.test", "b.test"]);
    assert!(!o.one_off);
    let o = ok(Mode::Passt, &["-S", "x.test  y.test", "-S", "z.test"]);
    assert_eq!(o.search, vec!["x.test", "y.test", "z.test"]);
    assert!(!o.search_disabled());
    assert!(ok(Mode::Passt, &["-S", ""]).search_disabled());
    assert!(ok(Mode::Passt, &["-S", "none"]).search_disabled());
    let o = ok(Mode::Passt, &["-F", "5"]);
    assert!(o.one_off, "--fd implies --one-off");
    let o = ok(Mode::Passt, &["--trace"]);
    assert!(o.debug && o.trace);
}

#[test]
fn upstream_2026_forms() {
    let o = ok(Mode::Passt, &["-a", "192.0.2.2/20", "-a", "2001:db8::2/56"]);
    assert_eq!(o.addr4(), Some("192.0.2.2".parse().unwrap()));
    assert_eq!(o.addr6(), Some("2001:db8::2".parse().unwrap()));
    assert_eq!(o.netmask, Some(20), "the IPv4 prefix is the netmask");
    // As upstream: any prefix given with -a makes -n redundant.
    bad(
        Mode::Pasta,
        &["-a", "2001:db8::2/56", "-n", "24"],
        "redundant",
    );
    let o = ok(Mode::Pasta, &["-a", "2001:db8::2", "-n", "24"]);
    assert_eq!(o.netmask, Some(24));
    let o = ok(Mode::Passt, &["--fd", "0"]);
    assert_eq!(o.fd, Some(0));
    assert!(o.one_off);
    let o = ok(Mode::Passt, &["-H", "vm1", "--fqdn", "vm1.example.org"]);
    assert_eq!(o.hostname.as_deref(), Some("vm1"));
    assert_eq!(o.fqdn.as_deref(), Some("vm1.example.org"));
    let o = ok(Mode::Pasta, &["--hostname", "c1"]);
    assert_eq!(o.hostname.as_deref(), Some("c1"));
    // Deprecated, still accepted.
    let o = ok(
        Mode::Pasta,
        &[
            "--stderr",
            "--config-net",
            "--no-copy-routes",
            "--no-copy-addrs",
        ],
    );
    assert!(o.stderr && o.no_copy_routes && o.no_copy_addrs);
}

#[test]
fn version_in_upstream_shape() {
    let mut lines = VERSION_BLOB.lines();
    let first = lines.next().unwrap_or_default();
    assert!(first.starts_with(env!("CARGO_PKG_VERSION")), "{first}");
    assert!(lines.next().unwrap_or_default().starts_with("Copyright "));
    let v = command(Mode::Pasta).render_long_version();
    assert!(v.starts_with("pasta 0."), "{v}");
}

#[test]
fn last_one_wins() {
    let o = ok(Mode::Passt, &["-m", "1500", "-m", "9000"]);
    assert_eq!(o.mtu, Some(9000));
    let o = ok(Mode::Passt, &["-l", "/a", "--log-file", "/b"]);
    assert_eq!(o.log_file, Some(PathBuf::from("/b")));
    let o = ok(
        Mode::Passt,
        &["-p", "/a", "-p", "/b", "-P", "/c", "-P", "/d"],
    );
    assert_eq!(o.pcap, Some(PathBuf::from("/b")));
    assert_eq!(o.pid_file, Some(PathBuf::from("/d")));
    let o = ok(Mode::Passt, &["-d", "-q"]);
    assert!(o.quiet && !o.debug);
    let o = ok(Mode::Passt, &["-q", "-d"]);
    assert!(!o.quiet && o.debug);
    let o = ok(Mode::Passt, &["--trace", "-q"]);
    assert!(o.quiet && !o.debug && !o.trace);
    let o = ok(Mode::Passt, &["-i", "a", "-i", "b", "-f", "-f"]);
    assert_eq!(o.interface.as_deref(), Some("b"));
    let o = ok(Mode::Passt, &["-a", "192.0.2.2", "-a", "192.0.2.9"]);
    assert_eq!(o.addr4(), Some("192.0.2.9".parse().unwrap()));
    let o = ok(Mode::Pasta, &["-I", "a", "-I", "b"]);
    assert_eq!(o.ns_ifname.as_deref(), Some("b"));
    // Repeatable ones accumulate.
    let o = ok(
        Mode::Passt,
        &["-t", "22", "-t", "80", "-u", "53", "-u", "54"],
    );
    assert_eq!(o.tcp_ports, vec!["22", "80"]);
    assert_eq!(o.udp_ports, vec!["53", "54"]);
}

#[test]
fn real_world_command_lines() {
    // As container engines start pasta.
    let o = ok(
        Mode::Pasta,
        &[
            "--config-net",
            "--pid",
            "/run/user/1000/pasta.pid",
            "--dns-forward",
            "169.254.1.1",
            "-t",
            "none",
            "-u",
            "none",
            "-T",
            "none",
            "-U",
            "none",
            "--no-map-gw",
            "--quiet",
            "--netns",
            "/run/user/1000/netns/netns-1234",
            "--map-guest-addr",
            "169.254.1.2",
        ],
    );
    assert!(o.config_net && o.quiet && o.no_map_gw && o.netns_only);
    assert_eq!(o.dns_forward, [IpAddr::from([169, 254, 1, 1])]);
    assert_eq!(
        map_v4(&o.map_guest_addr),
        Some(Some(Ipv4Addr::new(169, 254, 1, 2)))
    );
    // A slirp4netns-like set-up.
    let o = ok(
        Mode::Pasta,
        &[
            "-a",
            "10.0.2.0",
            "-n",
            "24",
            "-g",
            "10.0.2.2",
            "--dns-forward",
            "10.0.2.3",
            "-m",
            "1500",
            "--ipv4-only",
            "-f",
            "--config-net",
            "4242",
        ],
    );
    assert_eq!(o.target, Some(PastaTarget::Pid(4242)));
    assert_eq!(o.netmask, Some(24));
    // The test set-ups of passt.
    let o = ok(
        Mode::Passt,
        &[
            "-f",
            "-s",
            "/tmp/passt.sock",
            "-t",
            "10001",
            "-u",
            "10001",
            "-P",
            "/tmp/passt.pid",
        ],
    );
    assert_eq!(o.socket, Some(PathBuf::from("/tmp/passt.sock")));
    let o = ok(
        Mode::Pasta,
        &[
            "--config-net",
            "-t",
            "10001,10002,10011,10012",
            "-T",
            "10003,10013",
            "--map-host-loopback",
            "192.0.2.1",
            "--map-host-loopback",
            "2001:db8:9a55::1",
        ],
    );
    assert_eq!(
        map_v6(&o.map_host_loopback),
        Some(Some("2001:db8:9a55::1".parse().unwrap()))
    );
}

#[test]
fn abbreviated_long_options() {
    // Unique prefixes work as with getopt_long; exact names win.
    let o = ok(Mode::Pasta, &["--config", "--fore", "--dns", "192.0.2.53"]);
    assert!(o.config_net && o.foreground);
    assert_eq!(o.dns.len(), 1);
    let o = ok(Mode::Passt, &["--one", "--vhost"]);
    assert!(o.one_off && o.vhost_user);
    let o = ok(Mode::Passt, &["--no-dhcp"]);
    assert!(o.no_dhcp && !o.no_dhcpv6);
    bad(Mode::Passt, &["--no-d"], "--no-d");
    bad(
        Mode::Pasta,
        &["--bogus-opt"],
        "unrecognized option '--bogus-opt'",
    );
    bad(
        Mode::Pasta,
        &["--bogus-opt=3"],
        "unrecognized option '--bogus-opt'",
    );
}

#[test]
fn bad_values() {
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], "--bogus"),
        (&["-x"], "-x"),
        (&["-m"], "--mtu"),
        (&["-m", "67"], "--mtu"),
        (&["-m", "65536"], "--mtu"),
        (&["-m", "abc"], "--mtu"),
        (&["-a", "0.0.0.0"], "--address"),
        (&["-a", "127.0.0.1"], "--address"),
        (&["-a", "224.0.0.1"], "--address"),
        (&["-a", "255.255.255.255"], "--address"),
        (&["-a", "::"], "--address"),
        (&["-a", "::1"], "--address"),
        (&["-a", "ff02::1"], "--address"),
        (&["-a", "::ffff:192.0.2.1"], "--address"),
        (&["-a", "foo"], "--address"),
        (&["-g", "127.0.0.1"], "--gateway"),
        (&["-g", "0.0.0.0"], "--gateway"),
        (&["-n", "33"], "--netmask"),
        (&["-n", "255.0.255.0"], "--netmask"),
        (&["-n", "x"], "--netmask"),
        (&["-M", "02:00:00:00:00"], "--mac-addr"),
        (&["-M", "zz:00:00:00:00:00"], "--mac-addr"),
        (&["-F", "2"], "--fd"),
        (&["-F", "1"], "--fd"),
        (&["-a", "192.0.2.2/33"], "--address"),
        (&["-a", "2001:db8::2/129"], "--address"),
        (&["-a", "192.0.2.2/x"], "--address"),
        (
            &["-a", "192.0.2.2/24", "-n", "16"],
            "redundant prefix length",
        ),
        (
            &["-n", "16", "-a", "192.0.2.2/24"],
            "redundant prefix length",
        ),
        (&["-H", ""], "--hostname"),
        (&["--fqdn", "a b"], "--fqdn"),
        (&["-F", "-1"], "--fd"),
        (&["-F", "x"], "--fd"),
        (&["--log-size", "100"], "--log-size"),
        (&["--log-size", "1k"], "--log-size"),
        (&["--runas", "root"], "--runas"),
        (&["--runas", "0"], "--runas"),
        (&["--runas", "0:1000"], "--runas"),
        (&["--runas", "1000:"], "--runas"),
        (&["--runas", ""], "--runas"),
        (&["-D", "0.0.0.0"], "--dns"),
        (&["-D", "foo"], "--dns"),
        (&["--dns-forward", "127.0.0.1"], "--dns-forward"),
        (&["--dns-host", "0.0.0.0"], "--dns-host"),
        (&["--map-host-loopback", "127.0.0.1"], "--map-host-loopback"),
        (&["--map-guest-addr", "::"], "--map-guest-addr"),
        (&["-o", "0.0.0.0"], "--outbound"),
        (&["-i", "abcdefghijklmnop"], "--interface"),
        (&["-i", ""], "--interface"),
        (&["--outbound-if4", "a/b"], "--outbound-if4"),
        (&["-t", "65536"], "-t/--tcp-ports"),
        (&["-t", "22", "-t", "none"], "-t/--tcp-ports"),
        (&["-u", "10-5"], "-u/--udp-ports"),
        (&["--no-tcp", "-t", "22"], "-t/--tcp-ports"),
        (&["-4", "-6"], "--ipv4-only"),
        (
            &["-4", "--map-host-loopback", "fd00::1"],
            "--map-host-loopback",
        ),
    ];
    for (args, needle) in cases {
        bad(Mode::Passt, args, needle);
        bad(Mode::Pasta, args, needle);
    }
}

#[test]
fn mode_specific() {
    for (args, needle) in [
        (&["-I", "x"][..], "--ns-ifname"),
        (&["--ns-ifname", "x"], "--ns-ifname"),
        (&["-T", "22"], "--tcp-ns"),
        (&["-U", "22"], "--udp-ns"),
        (&["--config-net"], "--config-net"),
        (&["--netns", "x"], "--netns"),
        (&["--userns", "x"], "--userns"),
        (&["--dhcp-dns"], "--dhcp-dns"),
        (&["--no-splice"], "--no-splice"),
        (&["-t", "auto"], "auto"),
        (&["ls"], "'ls'"),
        (&["1234"], "'1234'"),
    ] {
        bad(Mode::Passt, args, needle);
    }
    for (args, needle) in [
        (&["-s", "/tmp/x"][..], "--socket"),
        (&["--socket-path", "/tmp/x"], "--socket"),
        (&["-1"], "--one-off"),
        (&["--vhost-user"], "--vhost-user"),
        (&["--no-dhcp-dns"], "--no-dhcp-dns"),
        (&["--print-capabilities"], "--print-capabilities"),
        (&["-t", "all"], "all"),
        (&["-T", "192.0.2.1/22"], "-T/--tcp-ns"),
        (&["--no-copy-routes"], "--config-net"),
        (&["--no-copy-addrs"], "--config-net"),
        (&["--netns", "x", "ls"], "--netns"),
        (&["--netns", "x", "123"], "--netns"),
        (&["--userns", "/x"], "--userns"),
        (&["--userns", "/x", "ls"], "--userns"),
        (&["0"], "PID"),
    ] {
        bad(Mode::Pasta, args, needle);
    }
}

#[test]
fn pasta_positionals() {
    let o = ok(Mode::Pasta, &["-f", "ls", "-l", "--color", "-t", "22"]);
    assert!(o.foreground);
    assert!(
        o.tcp_ports.is_empty(),
        "options after the command are its own"
    );
    assert_eq!(
        o.target,
        Some(PastaTarget::Spawn(
            ["ls", "-l", "--color", "-t", "22"]
                .iter()
                .map(OsString::from)
                .collect()
        ))
    );
    let o = ok(Mode::Pasta, &["--", "-weird", "x"]);
    assert_eq!(
        o.target,
        Some(PastaTarget::Spawn(vec!["-weird".into(), "x".into()]))
    );
    let o = ok(Mode::Pasta, &["-t", "22", "4242"]);
    assert_eq!(o.target, Some(PastaTarget::Pid(4242)));
    let o = ok(Mode::Pasta, &["4242", "x"]);
    assert!(matches!(o.target, Some(PastaTarget::Spawn(_))));
    let o = ok(Mode::Pasta, &["--netns", "foo"]);
    assert_eq!(
        o.target,
        Some(PastaTarget::Netns(PathBuf::from("/run/netns/foo")))
    );
    assert!(o.netns_only);
    let o = ok(
        Mode::Pasta,
        &["--netns", "/proc/1/ns/net", "--userns", "/u"],
    );
    assert_eq!(
        o.target,
        Some(PastaTarget::Netns(PathBuf::from("/proc/1/ns/net")))
    );
    assert!(!o.netns_only);
}

#[test]
fn help_and_version() {
    for m in [Mode::Passt, Mode::Pasta] {
        for a in ["-h", "--help", "--version"] {
            assert_eq!(parse(m, &[a]), Err(CliError::Exit(0)), "{a}");
        }
    }
    let h = command(Mode::Passt).render_long_help().to_string();
    assert!(h.contains("--socket"));
    assert!(!h.contains("--ns-ifname"));
    let h = command(Mode::Pasta).render_long_help().to_string();
    assert!(h.contains("--ns-ifname"));
    assert!(!h.contains("--vhost-user"));
    assert!(h.contains("COMMAND"));
}

proptest::proptest! {
    /// No command line makes the parser panic; errors are one line.
    #[test]
    fn no_panic(args in proptest::collection::vec(
        proptest::prop_oneof![
            proptest::sample::select(vec![
                "-t", "-u", "-T", "-U", "-a", "-g", "-m", "-n", "-D", "-S", "-F", "-I",
                "--netns", "--userns", "--config-net", "--no-copy-routes", "-4", "-6",
                "--map-host-loopback", "--runas", "--log-size", "-s", "-1", "-d", "-q",
                "--", "none", "auto", "all", "0", "22", "::1",
            ]).prop_map(String::from),
            "[-a-z0-9:.,~/%\\[\\]]{0,12}",
        ],
        0..8,
    )) {
        for mode in [Mode::Passt, Mode::Pasta] {
            let v: Vec<OsString> = args.iter().map(OsString::from).collect();
            if let Err(CliError::Usage(m)) = parse_args(mode, &v) {
                proptest::prop_assert!(!m.contains('\n'), "{m}");
            }
        }
    }

    /// Every prefix length survives netmask formatting and parsing.
    #[test]
    fn netmask_round_trip(p in 0u8..=32) {
        let m = Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0));
        proptest::prop_assert_eq!(parse_netmask(&m.to_string()), Ok(p));
        proptest::prop_assert_eq!(parse_netmask(&p.to_string()), Ok(p));
    }
}

#[test]
fn netmask_forms() {
    for (s, p) in [
        ("0", 0),
        ("32", 32),
        ("8", 8),
        ("255.255.255.0", 24),
        ("255.255.255.255", 32),
        ("0.0.0.0", 0),
        ("255.255.254.0", 23),
    ] {
        assert_eq!(parse_netmask(s), Ok(p), "{s}");
    }
    for s in ["33", "-1", "255.0.255.0", "0.255.255.255", "", "+8"] {
        assert!(parse_netmask(s).is_err(), "{s}");
    }
}

#[test]
fn map_per_family() {
    use AddrOrNone::*;
    let v = [
        Addr("192.0.2.1".parse().unwrap()),
        Addr("fd00::1".parse().unwrap()),
    ];
    assert_eq!(map_v4(&v), Some(Some("192.0.2.1".parse().unwrap())));
    assert_eq!(map_v6(&v), Some(Some("fd00::1".parse().unwrap())));
    assert_eq!(map_v4(&[]), Option::None);
    assert_eq!(map_v6(&[v[0], None]), Some(Option::None));
}
