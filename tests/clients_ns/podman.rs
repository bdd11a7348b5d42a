//! pasta as Podman 5 starts it for a rootless container: the namespace
//! file, the argument list, the daemon left behind, port forwards and DNS.

use super::*;

/// One `-p` mapping of Podman: `[HOSTIP:]HOSTPORT[-END]:CPORT/PROTO`.
struct PortMapping {
    host_ip: &'static str,
    host_port: u16,
    container_port: u16,
    range: u16,
    proto: &'static str,
}

/// pasta's arguments as Podman 5 builds them: `--config-net`, the port
/// mappings, containers.conf's and the user's options, then each default
/// that the user did not give, `--quiet --netns PATH --map-guest-addr
/// 169.254.1.2`.
fn podman_args(ports: &[PortMapping], opts: &[&str], netns: &Path) -> Vec<String> {
    let mut v: Vec<String> = vec!["--config-net".into()];
    let (mut t, mut u, mut big_t, mut big_u, mut map_gw) = (true, true, true, true, true);
    for p in ports {
        v.push(if p.proto == "tcp" { "-t" } else { "-u" }.into());
        let addr = if p.host_ip.is_empty() {
            String::new()
        } else {
            format!("{}/", p.host_ip)
        };
        v.push(format!(
            "{addr}{}-{}:{}-{}",
            p.host_port,
            p.host_port + p.range - 1,
            p.container_port,
            p.container_port + p.range - 1
        ));
    }
    v.extend(opts.iter().map(|o| o.to_string()));
    v.retain(|a| {
        if a == "--map-gw" {
            map_gw = false;
            false
        } else {
            true
        }
    });
    let mut dns_forward = false;
    for a in &v {
        match a.as_str() {
            "-t" | "--tcp-ports" => t = false,
            "-u" | "--udp-ports" => u = false,
            "-T" | "--tcp-ns" => big_t = false,
            "-U" | "--udp-ns" => big_u = false,
            "--dns-forward" => dns_forward = true,
            _ => {}
        }
    }
    if !dns_forward {
        v.extend(["--dns-forward".into(), "169.254.1.1".into()]);
    }
    for (def, opt) in [(t, "-t"), (u, "-u"), (big_t, "-T"), (big_u, "-U")] {
        if def {
            v.extend([opt.into(), "none".into()]);
        }
    }
    if map_gw {
        v.push("--no-map-gw".into());
    }
    v.extend([
        "--quiet".into(),
        "--netns".into(),
        s(netns),
        "--map-guest-addr".into(),
        "169.254.1.2".into(),
    ]);
    v
}

/// Runs pasta as Podman does: inside the rootless user namespace, as the
/// test user, waiting for it to return; its combined output and status.
fn podman_run(h: &Netns, ns: &PodmanNetns, args: &[String]) -> Output {
    let mut v = ns.user.inside();
    v.push(s(&pasta()));
    v.extend(args.iter().cloned());
    h.run(&v, 60)
}

/// [`podman_run`] with [`podman_args`] of `ports` and `opts`, which must
/// succeed; pasta's output.
fn podman_start(h: &Netns, ns: &PodmanNetns, ports: &[PortMapping], opts: &[&str]) -> Output {
    let args = podman_args(ports, opts, &ns.file);
    let out = podman_run(h, ns, &args);
    assert_eq!(out.status.code(), Some(0), "pasta {args:?}: {}", text(&out));
    out
}

/// The pasta daemon serving `ns` (found by its `--netns` argument).
fn podman_daemon(ns: &PodmanNetns) -> Daemon {
    let pids = pids_with_arg(&s(&ns.file));
    assert_eq!(
        pids.len(),
        1,
        "one pasta for {}: {pids:?}",
        ns.file.display()
    );
    let pid = pids[0];
    assert_eq!(uid_of(pid), test_user().0, "pasta runs as the test user");
    Daemon { pid }
}

/// What the container must find the moment pasta returns: the host's
/// addresses (not tentative), its default routes, MTU 65520.
fn check_configured_now(g: &Netns, what: &str) {
    let a = g.sh(
        "ip -o addr show dev dummy0; ip -4 route show default; ip -6 route show default; \
         ip -o link show dev dummy0",
    );
    for want in [
        format!("inet {HOST_IP4}/24"),
        format!("inet6 {HOST_IP6}/64"),
        format!("default via {GW_IP4}"),
        format!("default via {GW_IP6}"),
        "mtu 65520".to_string(),
    ] {
        assert!(
            a.contains(&want),
            "{what}: no {want} when pasta returned: {a}"
        );
    }
    assert!(!a.contains("tentative"), "{what}: {a}");
}

/// Podman's `-p` forwards: translated ranges, address-bound ones on IPv4
/// and IPv6, UDP on the wildcard and on `::1`. The moment pasta returns,
/// the namespace is configured and every forwarded port is bound; then 10
/// MiB go each way through each forward, intact.
#[test]
fn podman_port_forwards() {
    let h = Netns::host("podfwd");
    let dir = Scratch::new("podfwd");
    let ns = PodmanNetns::new("podfwdg", &dir);
    let m = |host_ip, host_port, container_port, range, proto| PortMapping {
        host_ip,
        host_port,
        container_port,
        range,
        proto,
    };
    let ports = [
        m("", 5080, 8080, 3, "tcp"),
        m("127.0.0.1", 5090, 80, 1, "tcp"),
        m("::1", 5091, 81, 1, "tcp"),
        m("", 5570, 5570, 1, "udp"),
        m("::1", 5571, 5571, 1, "udp"),
        m("127.0.0.1", 5572, 53, 1, "udp"),
    ];
    let out = podman_start(&h, &ns, &ports, &[]);
    let g: &Netns = &ns.user;
    check_configured_now(g, "podman");
    let (tcp, udp) = (bound(&h, "tcp"), bound(&h, "udp"));
    for (socks, addr, port) in [
        (&tcp, "*", 5080),
        (&tcp, "*", 5081),
        (&tcp, "*", 5082),
        (&tcp, "127.0.0.1", 5090),
        (&tcp, "::1", 5091),
        (&udp, "*", 5570),
        (&udp, "::1", 5571),
        (&udp, "127.0.0.1", 5572),
    ] {
        assert!(
            has_port(socks, addr, port),
            "port {port} on {addr} not bound when pasta returned: {socks:?}"
        );
    }
    assert!(
        text(&out).trim().is_empty(),
        "--quiet: nothing printed: {}",
        text(&out)
    );
    let d = podman_daemon(&ns);
    let log = || format!("pasta PID {}", d.pid);
    let _servers = [
        echo(g, &dir, "tcp", "::", 8081),
        echo(g, &dir, "tcp", "::", 8082),
        echo(g, &dir, "tcp", "::", 80),
        echo(g, &dir, "tcp", "::", 81),
        echo(g, &dir, "udp", "::", 5570),
        echo(g, &dir, "udp", "::", 5571),
        echo(g, &dir, "udp", "0.0.0.0", 53),
    ];
    for (proto, addr, port) in [
        ("tcp", "127.0.0.1", 5081),
        ("tcp", "::1", 5082),
        ("tcp", HOST_IP4, 5081),
        ("tcp", "127.0.0.1", 5090),
        ("tcp", "::1", 5091),
        ("udp", "127.0.0.1", 5570),
        ("udp", "::1", 5570),
        ("udp", "::1", 5571),
        ("udp", "127.0.0.1", 5572),
    ] {
        transfer(&h, &dir, proto, addr, port, "podman -p", &log);
    }
    // What is not forwarded is not reachable.
    let out = h.run(
        &[
            "python3",
            &script(&dir, "xfer.py"),
            "tcp",
            "127.0.0.1",
            "8081",
            "10",
        ],
        30,
    );
    assert!(!text(&out).starts_with("ok"), "port 8081 is not forwarded");
}

/// Podman's defaults: DNS to 169.254.1.1 answered by the host's resolver
/// (over UDP and TCP), 169.254.1.2 reaching the host's own address; pasta
/// gone within 2 s of the namespace file going away.
#[test]
fn podman_dns_host_address_and_netns_removal() {
    let h = Netns::host("poddns");
    allow_ping(&h);
    let dir = Scratch::new("poddns");
    h.sh(&format!("ip addr add {DNS4}/24 dev dummy0"));
    let _dns = service(&h, &dir, "dns_srv.py", &[DNS4, "53", "60", "192.0.2.1"]);
    let _host_echo = echo(&h, &dir, "tcp", HOST_IP4, 7300);
    let ns = PodmanNetns::new("poddnsg", &dir);
    podman_start(&h, &ns, &[], &[]);
    let d = podman_daemon(&ns);
    let g: &Netns = &ns.user;
    let out = g.run(&["sh", "-c", &dig_udp_tcp("169.254.1.1")], 30);
    let t = text(&out);
    assert_eq!(
        t.matches("192.0.2.1").count(),
        2,
        "DNS to 169.254.1.1 over UDP and TCP: {t}"
    );
    // 169.254.1.2 is the host's address (which the container shadows).
    transfer(
        g,
        &dir,
        "tcp",
        "169.254.1.2",
        7300,
        "--map-guest-addr",
        &|| String::new(),
    );
    // The gateway is not the host (--no-map-gw): nothing answers there.
    let out = g.run(
        &[
            "python3",
            &script(&dir, "xfer.py"),
            "tcp",
            GW_IP4,
            "7300",
            "10",
        ],
        30,
    );
    assert!(!text(&out).starts_with("ok"), "--no-map-gw: {}", text(&out));
    ns.remove();
    let t = d.exits_within(2.0);
    assert!(
        t.is_some(),
        "pasta still running 2 s after the namespace file went"
    );
}

/// `--map-gw`, Podman's own option, taken out of the list: no
/// `--no-map-gw` then, and the gateway address reaches the host's loopback.
#[test]
fn podman_map_gw() {
    let h = Netns::host("podgw");
    let dir = Scratch::new("podgw");
    let _e = echo(&h, &dir, "tcp", "127.0.0.1", 7310);
    let ns = PodmanNetns::new("podgwg", &dir);
    let args = podman_args(&[], &["--map-gw"], &ns.file);
    assert!(!args.iter().any(|a| a.contains("map-gw")), "{args:?}");
    podman_start(&h, &ns, &[], &["--map-gw"]);
    let _d = podman_daemon(&ns);
    transfer(
        &ns.user,
        &dir,
        "tcp",
        GW_IP4,
        7310,
        "gateway to host loopback",
        &String::new,
    );
}

/// A host port already taken: pasta exits 1 with a message naming the
/// port before it returns, and leaves nothing running; the same for a
/// second container asking for a port the first one's pasta holds, which
/// keeps working.
#[test]
fn podman_port_in_use() {
    let h = Netns::host("podbusy");
    let dir = Scratch::new("podbusy");
    let _tcp_holder = service(&h, &dir, "hold.py", &["tcp", "0.0.0.0", "5180", "120"]);
    let _udp_holder = service(&h, &dir, "hold.py", &["udp", "::", "5181", "120"]);
    let m = |host_port, proto| PortMapping {
        host_ip: "",
        host_port,
        container_port: 80,
        range: 1,
        proto,
    };
    for (port, proto) in [(5180, "tcp"), (5181, "udp")] {
        let ns = PodmanNetns::new("podbusyg", &dir);
        let args = podman_args(&[m(port, proto)], &[], &ns.file);
        let start = Instant::now();
        let out = podman_run(&h, &ns, &args);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{proto} {port} taken: {t}");
        assert!(
            t.contains(&port.to_string()),
            "the message names port {port}: {t}"
        );
        assert!(
            pids_with_arg(&s(&ns.file)).is_empty(),
            "nothing left running ({:?})",
            start.elapsed()
        );
    }
    // Two containers, one port.
    let first = PodmanNetns::new("podbusy1", &dir);
    let out = podman_run(
        &h,
        &first,
        &podman_args(&[m(5190, "tcp")], &[], &first.file),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let d = podman_daemon(&first);
    let second = PodmanNetns::new("podbusy2", &dir);
    let out = podman_run(
        &h,
        &second,
        &podman_args(&[m(5190, "tcp")], &[], &second.file),
    );
    let t = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "second container, port 5190: {t}"
    );
    assert!(t.contains("5190"), "the message names port 5190: {t}");
    assert!(pids_with_arg(&s(&second.file)).is_empty());
    assert!(!gone(d.pid), "the first container's pasta keeps running");
    let g: &Netns = &first.user;
    let _srv = echo(g, &dir, "tcp", "::", 80);
    transfer(
        &h,
        &dir,
        "tcp",
        "127.0.0.1",
        5190,
        "first container",
        &|| String::new(),
    );
}

/// The rootless network namespace of Podman's bridge networks: pasta with
/// `--pid FILE`, the file holding the daemon's PID when pasta returns.
#[test]
fn podman_rootless_netns_pid_file() {
    let h = Netns::host("podpid");
    let dir = Scratch::new("podpid");
    let ns = PodmanNetns::new("podpidg", &dir);
    let pidf = dir.join("rootless-netns.pid");
    let args = podman_args(&[], &["--pid", &s(&pidf)], &ns.file);
    let out = podman_run(&h, &ns, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let pid: u32 = std::fs::read_to_string(&pidf)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .expect("the PID file is written before pasta returns");
    assert_eq!(
        pids_with_arg(&s(&ns.file)),
        vec![pid],
        "the PID file names the daemon"
    );
    let d = Daemon { pid };
    assert_eq!(uid_of(pid), test_user().0);
    check_configured_now(&ns.user, "rootless netns");
    ns.remove();
    assert!(d.exits_within(2.0).is_some(), "pasta gone within 2 s");
}

// --- DNS -----------------------------------------------------------------------------

/// Podman's defaults with the host's resolver on its loopback
/// (systemd-resolved's 127.0.0.53): `--dns-forward 169.254.1.1` still
/// reaches it although `--no-map-gw` turns the general mapping off.
#[test]
fn podman_dns_to_resolver_on_host_loopback() {
    let h = Netns::host("podstub");
    h.resolv("nameserver 127.0.0.53\n");
    let dir = Scratch::new("podstub");
    let _dns = service(
        &h,
        &dir,
        "dns_srv.py",
        &["127.0.0.53", "53", "60", "192.0.2.1"],
    );
    let ns = PodmanNetns::new("podstubg", &dir);
    podman_start(&h, &ns, &[], &[]);
    let _d = podman_daemon(&ns);
    let g: &Netns = &ns.user;
    let out = g.run(&["sh", "-c", &dig_udp_tcp("169.254.1.1")], 30);
    let t = text(&out);
    assert_eq!(t.matches("192.0.2.1").count(), 2, "via 169.254.1.1: {t}");
}
