//! pasta as rootlesskit starts it: by PID, joining the child's user and
//! network namespaces, and the version probes it makes first.

use super::*;

// --- rootlesskit -------------------------------------------------------------------

/// rootlesskit's arguments (10.0.2.0/24: the child .100, the gateway .2,
/// DNS .3).
fn rootlesskit_args(no_map_gw: bool, ipv4_only: bool, auto: bool) -> Vec<String> {
    let mut v: Vec<String> = [
        "--stderr",
        "--ns-ifname=tap0",
        "--mtu=65520",
        "--config-net",
        "--address=10.0.2.100",
        "--netmask=24",
        "--gateway=10.0.2.2",
        "--dns-forward=10.0.2.3",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    if no_map_gw {
        v.push("--no-map-gw".into());
    }
    if ipv4_only {
        v.push("--ipv4-only".into());
    }
    let mode = if auto { "auto" } else { "none" };
    v.push(format!("--tcp-ports={mode}"));
    v.push(format!("--udp-ports={mode}"));
    v
}

/// Runs pasta as rootlesskit's parent does (as the test user in the host
/// namespace, waiting for it to return) and returns the daemon.
fn rootlesskit_run(h: &Netns, args: &[String], find_by: &str) -> (Output, Daemon) {
    let mut v = vec![s(&pasta())];
    v.extend(args.iter().cloned());
    let out = h.user_run(&v, 60);
    assert_eq!(out.status.code(), Some(0), "pasta {args:?}: {}", text(&out));
    let pids: Vec<u32> = pids_with_arg(find_by)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"--ns-ifname=tap0"))
        })
        .collect();
    assert_eq!(pids.len(), 1, "one pasta daemon: {pids:?}");
    (out, Daemon { pid: pids[0] })
}

/// What rootlesskit's child finds: tap0 with 10.0.2.100/24, MTU 65520,
/// the default route via 10.0.2.2; DNS through 10.0.2.3.
fn check_rootlesskit_child(g: &Netns, ipv4_only: bool) {
    let a = g.sh(
        "ip -o addr show dev tap0; ip -4 route show default; ip -o link show dev tap0; \
         ip -6 route show default",
    );
    for want in ["inet 10.0.2.100/24", "default via 10.0.2.2", "mtu 65520"] {
        assert!(a.contains(want), "no {want}: {a}");
    }
    let v6 = format!("inet6 {HOST_IP6}/64");
    if ipv4_only {
        assert!(!a.contains(&v6), "--ipv4-only: {a}");
    } else {
        assert!(
            a.contains(&v6) && a.contains(&format!("default via {GW_IP6}")),
            "{a}"
        );
    }
    let out = g.run(
        &[
            "dig",
            "+short",
            "+tries=2",
            "+time=3",
            "@10.0.2.3",
            "example.org",
        ],
        30,
    );
    assert!(
        text(&out).contains("192.0.2.1"),
        "DNS via 10.0.2.3: {}",
        text(&out)
    );
}

/// `--tcp-ports=auto --udp-ports=auto`: a TCP listener and a UDP socket
/// opened in the namespace after pasta returned are reachable from the
/// host's loopback within 2 s.
fn check_auto_picks_up(h: &Netns, g: &Netns, dir: &Scratch, tcp_port: u16, udp_port: u16) {
    let _t = echo(g, dir, "tcp", "0.0.0.0", tcp_port);
    let _u = echo(g, dir, "udp", "0.0.0.0", udp_port);
    let opened = Instant::now();
    let probe = format!(
        "import socket, sys, time\n\
         end = time.time() + 2.0\n\
         ok = set()\n\
         while time.time() < end and len(ok) < 2:\n\
         \x20   try:\n\
         \x20       c = socket.create_connection(('127.0.0.1', {tcp_port}), timeout=0.2)\n\
         \x20       c.sendall(b'x'); c.settimeout(0.5)\n\
         \x20       if c.recv(1) == b'x': ok.add('tcp')\n\
         \x20       c.close()\n\
         \x20   except OSError: pass\n\
         \x20   u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(0.1)\n\
         \x20   try:\n\
         \x20       u.sendto(b'y', ('127.0.0.1', {udp_port}))\n\
         \x20       if u.recv(16) == b'y': ok.add('udp')\n\
         \x20   except OSError: pass\n\
         \x20   u.close(); time.sleep(0.05)\n\
         print(sorted(ok))\n"
    );
    let out = h.run(&["python3", "-c", &probe], 20);
    let t = text(&out);
    assert!(
        t.contains("['tcp', 'udp']"),
        "auto forwarding after {:?}: {t}",
        opened.elapsed()
    );
}

/// rootlesskit's PID form, as Docker's rootless mode runs it
/// (`--disable-host-loopback`: `--no-map-gw`), with automatic forwarding.
#[test]
fn rootlesskit_pid_form() {
    let h = Netns::host("rlkpid");
    let dir = Scratch::new("rlkpid");
    h.sh(&format!("ip addr add {DNS4}/24 dev dummy0"));
    let _dns = service(&h, &dir, "dns_srv.py", &[DNS4, "53", "60", "192.0.2.1"]);
    let child = UserNetns::new("rlkpidc");
    let mut args = rootlesskit_args(true, false, true);
    // Added once `pasta --host-lo-to-ns-lo --version` succeeded.
    args.push("--host-lo-to-ns-lo".into());
    let pid = child.pid().to_string();
    args.push(pid.clone());
    let (out, d) = rootlesskit_run(&h, &args, &pid);
    let t = text(&out);
    assert!(
        t.contains("--stderr") && t.contains("dropped soon"),
        "deprecation: {t}"
    );
    check_rootlesskit_child(&child, false);
    check_auto_picks_up(&h, &child, &dir, 7400, 7401);
    let _srv = echo(&h, &dir, "tcp", HOST_IP4, 7402);
    transfer(
        &child,
        &dir,
        "tcp",
        HOST_IP4,
        7402,
        "child to host",
        &|| String::new(),
    );
    // The child going away ends pasta.
    drop(child);
    assert!(d.exits_within(2.0).is_some(), "pasta gone with its child");
}

/// rootlesskit's `--userns --netns` form (detached network namespace),
/// with `--ipv4-only` and automatic forwarding.
#[test]
fn rootlesskit_userns_netns_ipv4_only() {
    let h = Netns::host("rlkns");
    let dir = Scratch::new("rlkns");
    h.sh(&format!("ip addr add {DNS4}/24 dev dummy0"));
    let _dns = service(&h, &dir, "dns_srv.py", &[DNS4, "53", "60", "192.0.2.1"]);
    let child = PodmanNetns::new("rlknsc", &dir);
    let mut args = rootlesskit_args(false, true, true);
    args.push(format!("--userns=/proc/{}/ns/user", child.user.pid()));
    args.push(format!("--netns={}", child.file.display()));
    let (_out, d) = rootlesskit_run(&h, &args, &format!("--netns={}", child.file.display()));
    let g: &Netns = &child.user;
    check_rootlesskit_child(g, true);
    check_auto_picks_up(&h, g, &dir, 7410, 7411);
    child.remove();
    assert!(
        d.exits_within(2.0).is_some(),
        "pasta gone with the namespace"
    );
}

/// rootlesskit's feature probes.
#[test]
fn rootlesskit_version_probes() {
    for args in [&["--version"][..], &["--host-lo-to-ns-lo", "--version"]] {
        let out = run_timeout(Command::new(pasta()).args(args), 10);
        assert_eq!(out.status.code(), Some(0), "pasta {args:?}: {}", text(&out));
        let first = String::from_utf8_lossy(&out.stdout);
        let first = first.lines().next().unwrap_or_default();
        assert!(first.starts_with("pasta "), "{args:?}: {first}");
    }
}
