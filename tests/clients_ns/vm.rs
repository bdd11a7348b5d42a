//! passt as VM managers start it: qemu's `-netdev stream`, libvirt's
//! domain interface, and an inetd-style socket on descriptor 0.

use super::*;

/// udhcpc on `ifname` in `g`, applying its lease; the lease's variables.
fn udhcpc(g: &Netns, ifname: &str, dir: &Scratch, log: &dyn Fn() -> String) -> String {
    let (script, lease) = udhcpc_apply_script(dir, true);
    let out = run_udhcpc(g, ifname, &["mtu"], &script);
    std::fs::read_to_string(&lease)
        .unwrap_or_else(|_| panic!("no DHCP lease: {}\n{}", text(&out), log()))
}

// --- QEMU ----------------------------------------------------------------------------

/// QEMU's `-netdev passt`: passt spawned with QEMU's flags and one end of a
/// socketpair on descriptor 3, the PID file created empty beforehand.
/// passt returns, the PID file names the daemon; DHCP configures the guest,
/// 10 MiB go each way to the host through the gateway and through a `-t`
/// forward; passt exits when QEMU's end closes.
#[test]
fn qemu_netdev_passt() {
    use std::os::unix::process::CommandExt;
    let h = Netns::host("qemu");
    let g = Netns::new("qemug");
    let dir = Scratch::new("qemu");
    // g_file_open_tmp("passt-XXXXXX.pid"): created, empty, the user's.
    let pidf = dir.join("passt-Ab12Cd.pid");
    std::fs::write(&pidf, b"").expect("pid file");
    let (uid, gid) = test_user();
    std::os::unix::fs::chown(&pidf, Some(uid), Some(gid)).expect("chown");
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut v: Vec<String> = vec![s(&passt())];
    v.extend(
        [
            "--quiet",
            "--mtu",
            "1500",
            "--dns",
            "10.77.0.53",
            "--search",
            "a.test b.test",
            "--tcp-ports",
            "5200,5201",
            "--udp-ports",
            "5202",
            "--pid",
        ]
        .iter()
        .map(|a| a.to_string()),
    );
    v.push(s(&pidf));
    v.extend(["--fd".into(), "3".into()]);
    let mut cmd = h.user_cmd(&v);
    let t = theirs.as_raw_fd();
    // SAFETY: descriptor calls in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            let t = libc::fcntl(t, libc::F_DUPFD_CLOEXEC, 100);
            if t < 0 || libc::dup2(t, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = run_timeout(&mut cmd, 60);
    drop(theirs);
    assert_eq!(out.status.code(), Some(0), "passt {v:?}: {}", text(&out));
    assert!(text(&out).trim().is_empty(), "--quiet: {}", text(&out));
    let pid: u32 = std::fs::read_to_string(&pidf)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .expect("PID file written before passt returned");
    let d = Daemon { pid };
    assert!(!gone(pid), "passt runs");
    assert_eq!(uid_of(pid), uid);
    let relay = TapRelay::start(&g, "qtap0", ours);
    let log = || format!("passt PID {pid}");
    let lease = udhcpc(&g, "qtap0", &dir, &log);
    assert_eq!(
        env_value(&lease, "ip").as_deref(),
        Some(HOST_IP4),
        "{lease}"
    );
    assert_eq!(
        env_value(&lease, "router").as_deref(),
        Some(GW_IP4),
        "{lease}"
    );
    assert_eq!(env_value(&lease, "mtu").as_deref(), Some("1500"), "{lease}");
    assert_eq!(
        env_value(&lease, "dns").as_deref(),
        Some("10.77.0.53"),
        "{lease}"
    );
    let _host = echo(&h, &dir, "tcp", "::", 7500);
    transfer(
        &g,
        &dir,
        "tcp",
        GW_IP4,
        7500,
        "guest to host loopback",
        &log,
    );
    let _guest = echo(&g, &dir, "tcp", "0.0.0.0", 5201);
    transfer(&h, &dir, "tcp", "127.0.0.1", 5201, "-t 5201", &log);
    // QEMU's end closes: passt (one-off through --fd) exits.
    drop(relay);
    assert!(
        d.exits_within(5.0).is_some(),
        "passt exits when QEMU closes"
    );
}

// --- libvirt -----------------------------------------------------------------------

/// libvirt's passt back-end: `--one-off --socket DIR/DOM-ALIAS.socket --pid
/// FILE` and the domain's settings, port forwards in its grammar; qemu
/// connects to the socket. The guest gets its address and MTU by DHCP;
/// forwards work, with translated ranges, bound to an address and an
/// interface, exclusions; passt exits when qemu disconnects.
#[test]
fn libvirt_domain_interface() {
    let h = Netns::host("virt");
    let g = Netns::new("virtg");
    let dir = Scratch::new("virt");
    let sock_dir = dir.join("passt");
    std::fs::create_dir_all(&sock_dir).expect("dir");
    let (uid, gid) = test_user();
    std::os::unix::fs::chown(&sock_dir, Some(uid), Some(gid)).expect("chown");
    let sock = sock_dir.join("1-prs-dom-net0.socket");
    let pidf = sock_dir.join("1-prs-dom-net0-passt.pid");
    let logf = dir.join("passt.log");
    let mut v: Vec<String> = vec![s(&passt())];
    v.extend(
        [
            "--one-off",
            "--socket",
            &s(&sock),
            "--pid",
            &s(&pidf),
            "--mtu",
            "1500",
            "--interface",
            "dummy0",
            "--log-file",
            &s(&logf),
            "--hostname",
            "prs-dom",
            "--fqdn",
            "prs-dom.example.org",
            "--address",
            "10.77.0.50",
            "--netmask",
            "24",
            "--address",
            "fd77::50",
            "--tcp-ports",
            "5300-5301:6300-6301",
            "--tcp-ports",
            "127.0.0.1/5302:6302",
            "--tcp-ports",
            "::1%lo/5303:6303",
            "--udp-ports",
            "~1-5303,~5306-65535",
        ]
        .iter()
        .map(|a| a.to_string()),
    );
    let out = h.user_run(&v, 60);
    assert_eq!(out.status.code(), Some(0), "passt {v:?}: {}", text(&out));
    let pid: u32 = std::fs::read_to_string(&pidf)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .expect("PID file written before passt returned");
    let d = Daemon { pid };
    let log = || std::fs::read_to_string(&logf).unwrap_or_default();
    let udp = bound(&h, "udp");
    for port in [5304, 5305] {
        assert!(has_port(&udp, "*", port), "UDP {port}: {udp:?}");
    }
    assert!(
        !has_port(&udp, "*", 5303) && !has_port(&udp, "*", 5306),
        "{udp:?}"
    );
    let stream = eventually(10, || UnixStream::connect(&sock).ok()).expect("connect");
    let relay = TapRelay::start(&g, "vnet0", stream);
    let lease = udhcpc(&g, "vnet0", &dir, &log);
    assert_eq!(
        env_value(&lease, "ip").as_deref(),
        Some("10.77.0.50"),
        "{lease}"
    );
    assert_eq!(env_value(&lease, "mask").as_deref(), Some("24"), "{lease}");
    assert_eq!(env_value(&lease, "mtu").as_deref(), Some("1500"), "{lease}");
    // The IPv6 address DHCPv6 would give (--address fd77::50).
    g.sh("ip -6 addr add fd77::50/64 dev vnet0 nodad");
    let _a = echo(&g, &dir, "tcp", "::", 6301);
    let _b = echo(&g, &dir, "tcp", "::", 6302);
    let _c = echo(&g, &dir, "tcp", "::", 6303);
    let _u = echo(&g, &dir, "udp", "0.0.0.0", 5305);
    transfer(&h, &dir, "tcp", HOST_IP4, 5301, "5300-5301:6300-6301", &log);
    transfer(
        &h,
        &dir,
        "tcp",
        "127.0.0.1",
        5302,
        "127.0.0.1/5302:6302",
        &log,
    );
    transfer(&h, &dir, "tcp", "::1", 5303, "::1%lo/5303:6303", &log);
    transfer(
        &h,
        &dir,
        "udp",
        "127.0.0.1",
        5305,
        "~1-5303,~5306-65535",
        &log,
    );
    // qemu goes: --one-off ends passt.
    drop(relay);
    assert!(
        d.exits_within(5.0).is_some(),
        "passt exits with --one-off: {}",
        log()
    );
    assert!(!log().is_empty(), "the log file has passt's messages");
}

// --- other ways of starting ------------------------------------------------------

/// inetd style (`--fd 0`, as s6-ipcserver starts it): the connected socket
/// is standard input; frames flow over it and passt exits when the other
/// end closes.
#[test]
fn passt_fd_zero_inetd_style() {
    use std::os::unix::process::CommandExt;
    let h = Netns::host("fd0");
    let dir = Scratch::new("fd0");
    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let mut cmd = h.user_cmd(&[s(&passt()), "-f".into(), "--fd".into(), "0".into()]);
    let t = theirs.as_raw_fd();
    // SAFETY: descriptor calls in the child before exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(t, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut p = Proc::spawn(cmd, "passt", dir.join("passt.log"));
    drop(theirs);
    let mut c = StreamClient::from_stream(ours);
    let gw = [10, 77, 0, 1];
    c.send_raw(&StreamClient::encode(&[arp_request(gw, 60)]));
    let got = c.collect(10, 1, |f| is_arp_reply_for(f, gw));
    assert!(
        got.iter().any(|f| is_arp_reply_for(f, gw)),
        "ARP over standard input: {}",
        p.output()
    );
    drop(c);
    assert_eq!(p.wait_exit(10).code(), Some(0), "{}", p.output());
}
