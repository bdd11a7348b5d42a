//! Namespace tests of the `passt` and `pasta` binaries, run as the
//! unprivileged test user (the tests themselves run as root).
//!
//! Each test makes its own namespaces (a "host" with a dummy uplink, see
//! `ns_support.rs`, and guest namespaces as needed, owned by a user namespace
//! of the test user as a rootless container's are), runs the binaries in them
//! and checks what real clients see: `ip`, busybox `udhcpc`, `dhclient -6`, the
//! kernel's SLAAC, and qemu bridging passt's socket to a tap device. Traffic
//! stays inside these namespaces. Everything is removed afterwards, processes
//! by the PID the test started.

mod ns_support;
mod relay_support;

use ns_support::*;
use relay_support::qemu_hub;
use std::path::PathBuf;
use std::process::Command;

fn pasta() -> PathBuf {
    bin("pasta")
}

fn passt() -> PathBuf {
    bin("passt")
}

fn s(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// `pasta --config-net`: the tap is named after the template interface, has
/// its addresses, MTU 65520, is up, and has the template's default routes.
#[test]
fn config_net_copies_template() {
    let h = Netns::host("cfg");
    let out = h.user_run(
        &[
            s(&pasta()),
            "--config-net".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            "ip -j addr show; echo @@; ip -j -4 route show; echo @@; ip -j -6 route show".into(),
        ],
        30,
    );
    let text = ok_text(&out);
    let parts: Vec<&str> = text.split("@@").collect();
    assert_eq!(parts.len(), 3, "{text}");
    let tap = r#".[] | select(.ifname=="dummy0")"#;
    assert_eq!(jq(parts[0], &format!("{tap} | .mtu")), "65520", "{text}");
    assert_eq!(
        jq(parts[0], &format!("{tap} | .flags | index(\"UP\") != null")),
        "true"
    );
    assert_eq!(
        jq(
            parts[0],
            &format!(
                r#"{tap} | .addr_info[] | select(.family=="inet") | "\(.local)/\(.prefixlen)""#
            )
        ),
        format!("{HOST_IP4}/24")
    );
    assert_eq!(
        jq(
            parts[0],
            &format!(
                r#"{tap} | .addr_info[] | select(.family=="inet6" and .scope=="global") | "\(.local)/\(.prefixlen)""#
            )
        ),
        format!("{HOST_IP6}/64")
    );
    assert_eq!(
        jq(
            parts[1],
            r#".[] | select(.dst=="default") | "\(.gateway) \(.dev)""#
        ),
        format!("{GW_IP4} dummy0")
    );
    assert_eq!(
        jq(
            parts[2],
            r#".[] | select(.dst=="default") | "\(.gateway) \(.dev)""#
        ),
        format!("{GW_IP6} dummy0")
    );
    // The host side was not touched.
    let host = h.sh("ip -o -4 addr show dev dummy0");
    assert!(host.contains(&format!("{HOST_IP4}/24")), "{host}");
}

/// The README's main job as root (its second form; the unprivileged one is
/// in `rootless_ns.rs`), run in the test's host namespace.
#[test]
fn readme_as_root_config_net_ip_address_show() {
    let h = Netns::host("readme");
    let out = h.run(
        &[
            s(&pasta()),
            "--config-net".into(),
            "ip".into(),
            "address".into(),
            "show".into(),
        ],
        30,
    );
    let text = ok_text(&out);
    assert!(text.contains("dummy0"), "{text}");
    assert!(text.contains(&format!("inet {HOST_IP4}/24")), "{text}");
    assert!(text.contains("mtu 65520"), "{text}");
}

/// About root: `--runas` as root. pasta sets the namespace up as root, then
/// runs as the given user, keeping what it needs to enter the namespace
/// (the command's sockets, forwarded ports, the guest side all work).
#[test]
fn runas_as_root() {
    let h = Netns::host("runas");
    // Ping sockets for every group: pasta answers echo requests with them.
    h.sh("sysctl -q -w net.ipv4.ping_group_range='0 2147483647'");
    let (uid, gid) = test_user();
    let out = h.run(
        &[
            s(&pasta()),
            "--config-net".into(),
            "--runas".into(),
            format!("{uid}:{gid}"),
            "--".into(),
            "sh".into(),
            "-c".into(),
            format!(
                "grep '^Uid:' /proc/$PPID/status; ip -o addr show dev dummy0; \
                 ping -c 1 -W 5 {GW_IP4} >/dev/null && echo pinged"
            ),
        ],
        30,
    );
    let text = ok_text(&out);
    let pasta_uid = text
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default();
    assert_eq!(pasta_uid, uid.to_string(), "pasta runs as --runas: {text}");
    assert!(text.contains(&format!("inet {HOST_IP4}/24")), "{text}");
    assert!(text.contains("pinged"), "{text}");
}

/// pasta's exit status is the command's, 128 + N for a signal.
#[test]
fn exit_status_of_the_command() {
    let h = Netns::host("exit");
    let out = h.user_run(
        &[
            s(&pasta()),
            "--".into(),
            "sh".into(),
            "-c".into(),
            "exit 7".into(),
        ],
        30,
    );
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let out = h.user_run(
        &[
            s(&pasta()),
            "--".into(),
            "sh".into(),
            "-c".into(),
            "kill -TERM $$".into(),
        ],
        30,
    );
    assert_eq!(out.status.code(), Some(128 + 15), "{out:?}");
    // The command runs in its own network namespace with loopback up and
    // the tap device (down without --config-net).
    let out = h.user_run(
        &[
            s(&pasta()),
            "--".into(),
            "sh".into(),
            "-c".into(),
            "ip -o link show".into(),
        ],
        30,
    );
    let text = ok_text(&out);
    assert!(text.contains("lo: <LOOPBACK,UP"), "{text}");
    assert!(text.contains("dummy0:"), "{text}");
    assert!(
        !text.contains("type dummy"),
        "not the host's interface: {text}"
    );
}

/// Joining by `--netns NAME` from inside the user namespace that owns it (as
/// Podman does), pasta exits when the namespace is deleted.
#[test]
fn netns_quit_when_namespace_goes() {
    let h = Netns::host("quit");
    let g = UserNetns::new("quitg");
    let dir = Scratch::new("quit");
    let pidf = dir.join("pasta.pid");
    let mut p = h.start_ready(
        g.inside(),
        &pasta(),
        &pidf,
        dir.join("pasta.log"),
        &["-f", "--netns", &g.name],
    );
    let pid: u32 = std::fs::read_to_string(&pidf)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, p.pid(), "foreground: our own PID in the PID file");
    let links = g.sh("ip -o link show");
    assert!(links.contains("dummy0:"), "{links}");
    drop(g);
    let t = std::time::Instant::now();
    let st = p.wait_exit(10);
    assert_eq!(st.code(), Some(0), "{}", p.output());
    assert!(
        t.elapsed() < std::time::Duration::from_millis(900),
        "at once, not by polling"
    );
}

/// pasta on an existing namespace (by PID, joining the process's user
/// namespace first, as with rootlesskit), no --config-net: busybox udhcpc
/// gets address, router, DNS, search domain and MTU, and the `-H` and
/// `--fqdn` names (options 12 and 81).
#[test]
fn pasta_udhcpc_lease() {
    let h = Netns::host("dhcp4");
    let g = UserNetns::new("dhcp4g");
    let dir = Scratch::new("dhcp4");
    let pidf = dir.join("pasta.pid");
    let mut p = h.start_ready(
        as_test_user(),
        &pasta(),
        &pidf,
        dir.join("pasta.log"),
        &[
            "-f",
            "--dhcp-dns",
            "--dhcp-search",
            "-H",
            "myhost",
            "--fqdn",
            "myhost.example",
            &g.pid().to_string(),
        ],
    );
    g.sh("ip link set dummy0 up");
    let (script, lease) = udhcpc_script(&dir);
    let out = run_udhcpc(&g, "dummy0", &["mtu", "search", "81"], &script);
    ok_text(&out);
    p.assert_running();
    let env = std::fs::read_to_string(&lease).expect("udhcpc recorded a lease");
    assert_eq!(env_value(&env, "ip").as_deref(), Some(HOST_IP4), "{env}");
    assert_eq!(env_value(&env, "router").as_deref(), Some(GW_IP4), "{env}");
    assert_eq!(env_value(&env, "subnet").as_deref(), Some("255.255.255.0"));
    assert_eq!(env_value(&env, "dns").as_deref(), Some(DNS4), "{env}");
    assert_eq!(env_value(&env, "mtu").as_deref(), Some("65520"), "{env}");
    assert_eq!(env_value(&env, "search").as_deref(), Some(SEARCH), "{env}");
    assert_eq!(env_value(&env, "hostname").as_deref(), Some("myhost"));
    // busybox knows no option 81: the raw bytes, flags E, RCODEs 255.
    assert_eq!(
        env_value(&env, "opt81").as_deref(),
        Some("04ffff066d79686f7374076578616d706c6500"),
        "{env}"
    );
    // The process whose namespaces pasta joined exits: so does pasta.
    drop(g);
    let t = std::time::Instant::now();
    assert_eq!(p.wait_exit(5).code(), Some(0), "{}", p.output());
    assert!(
        t.elapsed() < std::time::Duration::from_millis(900),
        "at once, not by polling"
    );
}

/// pasta on `--userns PATH --netns PATH`: dhclient -6 gets the host's
/// address as a /128, the resolver, and the `--fqdn` name (option 39).
#[test]
fn pasta_dhclient6_lease() {
    let h = Netns::host("dhcp6");
    h.resolv(&format!(
        "nameserver {DNS4}\nnameserver fd77::53\nsearch {SEARCH}\n"
    ));
    let g = UserNetns::new("dhcp6g");
    // dhclient may touch /etc/resolv.conf: give the namespace its own.
    g.resolv("");
    let dir = Scratch::new("dhcp6");
    let pidf = dir.join("pasta.pid");
    let p = h.start_ready(
        as_test_user(),
        &pasta(),
        &pidf,
        dir.join("pasta.log"),
        &[
            "-f",
            "--dhcp-dns",
            "--fqdn",
            "myhost.example",
            "--userns",
            &s(&g.userns_path()),
            "--netns",
            &s(&g.path()),
        ],
    );
    g.sh("ip link set dummy0 up");
    // dhclient needs a usable link-local address.
    eventually(10, || {
        let a = g.sh("ip -6 addr show dev dummy0 scope link");
        (a.contains("fe80::") && !a.contains("tentative")).then_some(())
    })
    .expect("link-local address");
    let script = dir.join("dhclient.sh");
    let envf = dir.join("lease6.env");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$reason\" in BOUND6|RENEW6|REBIND6|REBOOT6)\n  env > {e}.tmp && mv {e}.tmp {e}\n  ip -6 addr add \"$new_ip6_address/$new_ip6_prefixlen\" dev \"$interface\" nodad ;;\nesac\nexit 0\n",
            e = envf.display()
        ),
    )
    .unwrap();
    let _ = Command::new("chmod").arg("755").arg(&script).status();
    let _client = Proc::spawn(
        g.cmd(&[
            "dhclient".into(),
            "-6".into(),
            "-d".into(),
            "-v".into(),
            "-lf".into(),
            s(&dir.join("dhclient6.leases")),
            "-pf".into(),
            s(&dir.join("dhclient6.pid")),
            "-sf".into(),
            s(&script),
            "dummy0".into(),
        ]),
        "dhclient",
        dir.join("dhclient.log"),
    );
    let addrs = eventually(20, || {
        let a = g.sh("ip -6 -o addr show dev dummy0 scope global");
        a.contains("fd77::2/128").then_some(a)
    });
    assert!(
        addrs.is_some(),
        "no /128 from DHCPv6; dhclient: {}\npasta: {}",
        std::fs::read_to_string(dir.join("dhclient.log")).unwrap_or_default(),
        p.output()
    );
    let env = std::fs::read_to_string(&envf).expect("lease recorded");
    assert_eq!(
        env_value(&env, "new_ip6_address").as_deref(),
        Some(HOST_IP6)
    );
    assert_eq!(env_value(&env, "new_ip6_prefixlen").as_deref(), Some("128"));
    assert_eq!(
        env_value(&env, "new_dhcp6_name_servers").as_deref(),
        Some("fd77::53"),
        "{env}"
    );
    // `--fqdn`: option 39, as dhclient decodes it.
    assert_eq!(
        env_value(&env, "new_fqdn_fqdn").as_deref(),
        Some("myhost.example"),
        "{env}"
    );
    assert_eq!(
        env_value(&env, "new_fqdn_hostname").as_deref(),
        Some("myhost")
    );
}

/// The kernel's SLAAC: pasta's router advertisement gives an address in the
/// host's /64 (EUI-64 of the tap's MAC) and a default route via pasta's
/// link-local address.
#[test]
fn pasta_slaac() {
    let h = Netns::host("slaac");
    let g = UserNetns::new("slaacg");
    let dir = Scratch::new("slaac");
    let pidf = dir.join("pasta.pid");
    let mut p = h.start_ready(
        g.inside(),
        &pasta(),
        &pidf,
        dir.join("pasta.log"),
        &["-f", "--netns", &g.name],
    );
    let mac = jq(&g.sh("ip -j link show dev dummy0"), ".[0].address");
    let m: Vec<u8> = mac
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    assert_eq!(m.len(), 6, "{mac}");
    let want = format!(
        "fd77::{:x}:{:x}:{:x}:{:x}/64",
        u16::from_be_bytes([m[0] ^ 2, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]])
    );
    g.sh("sysctl -qw net.ipv6.conf.dummy0.accept_ra=1; sysctl -qw net.ipv6.conf.dummy0.addr_gen_mode=0; ip link set dummy0 up");
    let addr = eventually(20, || {
        let a = g.sh("ip -6 -o addr show dev dummy0 scope global");
        a.contains(&want).then_some(a)
    });
    assert!(
        addr.is_some(),
        "no SLAAC address {want}; pasta: {}",
        p.output()
    );
    let route = eventually(10, || {
        let r = g.sh("ip -6 route show default");
        (r.contains("via fe80::") && r.contains("dev dummy0")).then_some(r)
    });
    assert!(route.is_some(), "no default route from the RA");
    p.assert_running();
}

/// passt serving qemu, which bridges its socket to a tap in a test namespace:
/// udhcpc gets its lease through qemu and passt, and the `-p` capture shows
/// the DHCP exchange to tshark and tcpdump.
#[test]
fn passt_qemu_udhcpc_and_pcap() {
    let h = Netns::host("qemu");
    let g = Netns::new("qemug");
    let dir = Scratch::new("qemu");
    let sock = dir.join("passt.socket");
    let pidf = dir.join("passt.pid");
    let pcap = dir.join("passt.pcap");
    let mut p = h.start_ready(
        as_test_user(),
        &passt(),
        &pidf,
        dir.join("passt.log"),
        &["-f", "-s", &s(&sock), "-p", &s(&pcap)],
    );
    let q = qemu_hub(&g, &sock, "qtap0", dir.join("qemu.log"));
    g.sh("ip link set qtap0 up");
    let (script, lease) = udhcpc_script(&dir);
    let out = run_udhcpc(&g, "qtap0", &["mtu"], &script);
    let text = ok_text(&out);
    let env = std::fs::read_to_string(&lease)
        .unwrap_or_else(|_| panic!("no lease: {text}\npasst: {}", p.output()));
    assert_eq!(env_value(&env, "ip").as_deref(), Some(HOST_IP4), "{env}");
    assert_eq!(env_value(&env, "router").as_deref(), Some(GW_IP4), "{env}");
    assert_eq!(env_value(&env, "dns").as_deref(), Some(DNS4), "{env}");
    assert_eq!(env_value(&env, "mtu").as_deref(), Some("65520"), "{env}");
    p.assert_running();
    drop(q);
    drop(p);

    let out = run_timeout(
        Command::new("tshark").args([
            "-r",
            &s(&pcap),
            "-Y",
            "dhcp",
            "-T",
            "fields",
            "-e",
            "dhcp.option.dhcp",
        ]),
        60,
    );
    let types: Vec<String> = ok_text(&out)
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    for t in ["1", "2", "3", "5"] {
        assert!(
            types.iter().any(|x| x == t),
            "DHCP message type {t} in {types:?}"
        );
    }
    let out = run_timeout(Command::new("tcpdump").args(["-n", "-r", &s(&pcap)]), 30);
    let text = ok_text(&out);
    assert!(text.contains("BOOTP/DHCP, Request"), "{text}");
    assert!(text.contains("BOOTP/DHCP, Reply"), "{text}");
}

/// A passt in a test host namespace, with its socket.
fn passt_in_host(tag: &str) -> (Netns, Scratch, PathBuf, Proc) {
    let h = Netns::host(tag);
    let dir = Scratch::new(tag);
    let sock = dir.join("passt.socket");
    let pidf = dir.join("passt.pid");
    let p = h.start_ready(
        as_test_user(),
        &passt(),
        &pidf,
        dir.join("passt.log"),
        &["-f", "-s", &s(&sock)],
    );
    (h, dir, sock, p)
}

const GW: [u8; 4] = [10, 77, 0, 1];

/// qemu pads frames shorter than 60 bytes: the padding is ignored (an ARP
/// request padded to 60 bytes gets its reply), as is the IP length, not the
/// frame length, for IP (covered by the core's tests).
#[test]
fn passt_accepts_padded_short_frames() {
    let (_h, _dir, sock, mut p) = passt_in_host("pad");
    let mut c = StreamClient::connect(&sock);
    c.send_raw(&StreamClient::encode(&[arp_request(GW, 60)]));
    let got = c.collect(5, 1, |f| is_arp_reply_for(f, GW));
    assert!(
        got.iter().any(|f| is_arp_reply_for(f, GW)),
        "no ARP reply to a padded request; got {got:?}; passt: {}",
        p.output()
    );
    p.assert_running();
}

/// The same frames split at every byte boundary give the same replies; a
/// length over 65535 resets the client, and the next client is served.
#[test]
fn passt_stream_split_and_reset() {
    let (_h, _dir, sock, mut p) = passt_in_host("split");
    let frames = vec![
        arp_request(GW, 60),
        arp_request(GW, 42),
        arp_request(GW, 64),
    ];
    let stream = StreamClient::encode(&frames);

    let mut c = StreamClient::connect(&sock);
    c.send_raw(&stream);
    let whole: Vec<Vec<u8>> = c
        .collect(5, 3, |f| is_arp_reply_for(f, GW))
        .into_iter()
        .filter(|f| is_arp_reply_for(f, GW))
        .collect();
    assert_eq!(
        whole.len(),
        3,
        "replies to the unsplit stream; passt: {}",
        p.output()
    );

    // One byte per write, with a pause now and then so that passt sees the
    // stream in pieces of every size and at every offset.
    for (i, b) in stream.iter().enumerate() {
        c.send_raw(&[*b]);
        if i % 3 == 0 {
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
    }
    let split: Vec<Vec<u8>> = c
        .collect(5, 3, |f| is_arp_reply_for(f, GW))
        .into_iter()
        .filter(|f| is_arp_reply_for(f, GW))
        .collect();
    assert_eq!(split, whole, "split stream, same replies");

    // Every split point of the first frame, one connection.
    for cut in 1..stream.len() {
        c.send_raw(&stream[..cut]);
        std::thread::sleep(std::time::Duration::from_micros(200));
        c.send_raw(&stream[cut..]);
    }
    let n = c
        .collect(10, 3 * (stream.len() - 1), |f| is_arp_reply_for(f, GW))
        .iter()
        .filter(|f| is_arp_reply_for(f, GW))
        .count();
    assert_eq!(
        n,
        3 * (stream.len() - 1),
        "a reply to every frame at every cut"
    );

    // Too long: the client is reset.
    c.send_raw(&65536u32.to_be_bytes());
    assert!(c.closed_by_peer(5), "oversized frame must reset the client");
    p.assert_running();

    // The next client is served.
    let mut c2 = StreamClient::connect(&sock);
    c2.send_raw(&StreamClient::encode(&[arp_request(GW, 60)]));
    let got = c2.collect(5, 1, |f| is_arp_reply_for(f, GW));
    assert!(
        got.iter().any(|f| is_arp_reply_for(f, GW)),
        "second client served"
    );

    // A length below 14 resets too.
    c2.send_raw(&13u32.to_be_bytes());
    assert!(
        c2.closed_by_peer(5),
        "undersized frame must reset the client"
    );
    p.assert_running();
}

/// Only one client at a time: a second connection is closed at once, the
/// first keeps working.
#[test]
fn passt_one_client_at_a_time() {
    let (_h, _dir, sock, mut p) = passt_in_host("one");
    let mut a = StreamClient::connect(&sock);
    a.send_raw(&StreamClient::encode(&[arp_request(GW, 60)]));
    assert!(!a.collect(5, 1, |f| is_arp_reply_for(f, GW)).is_empty());
    let mut b = StreamClient::connect(&sock);
    assert!(b.closed_by_peer(5), "second client refused");
    a.send_raw(&StreamClient::encode(&[arp_request(GW, 60)]));
    let got = a.collect(5, 1, |f| is_arp_reply_for(f, GW));
    assert!(
        got.iter().any(|f| is_arp_reply_for(f, GW)),
        "first client still served"
    );
    p.assert_running();
}

/// `-1`: passt exits 0 when its client goes away.
#[test]
fn passt_one_off_exits_with_client() {
    let h = Netns::host("oneoff");
    let dir = Scratch::new("oneoff");
    let sock = dir.join("passt.socket");
    let pidf = dir.join("passt.pid");
    let mut p = h.start_ready(
        as_test_user(),
        &passt(),
        &pidf,
        dir.join("passt.log"),
        &["-f", "-1", "-s", &s(&sock)],
    );
    let c = StreamClient::connect(&sock);
    drop(c);
    assert_eq!(p.wait_exit(10).code(), Some(0), "{}", p.output());
}

/// SIGTERM ends passt with status 0; in the background, the PID file holds the
/// daemon's PID. About root: passt started by root switches to nobody.
#[test]
fn passt_daemon_pid_file_and_sigterm() {
    let h = Netns::host("daemon");
    let dir = Scratch::new("daemon");
    let sock = dir.join("passt.socket");
    let pidf = dir.join("passt.pid");
    let out = h.run(
        &[
            s(&passt()),
            "-q".into(),
            "-s".into(),
            s(&sock),
            "-P".into(),
            s(&pidf),
        ],
        20,
    );
    assert!(out.status.success(), "{out:?}");
    let pid: i32 = std::fs::read_to_string(&pidf)
        .expect("PID file")
        .trim()
        .parse()
        .expect("a PID");
    // The daemon is ours (we started it through the parent that exited).
    let alive = |pid: i32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive(pid));
    // Started as root in the initial user namespace: it runs as nobody.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
    assert_eq!(
        uid.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65534"; 4],
        "{uid}"
    );
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    assert!(st.is_ok_and(|s| s.success()));
    assert!(
        eventually(10, || (!alive(pid)).then_some(())).is_some(),
        "daemon did not exit on SIGTERM"
    );
}

/// `-l`: the log goes to the file (header line first, mode 0600), nothing
/// about syslog shows up when there is no syslog socket, and standard error
/// stays quiet.
#[test]
fn passt_log_file() {
    use std::os::unix::fs::PermissionsExt;
    let h = Netns::host("log");
    let dir = Scratch::new("log");
    let sock = dir.join("passt.socket");
    let pidf = dir.join("passt.pid");
    let logf = dir.join("passt.log");
    let p = h.start_ready(
        as_test_user(),
        &passt(),
        &pidf,
        dir.join("passt.stderr"),
        &["-f", "-l", &s(&logf), "-s", &s(&sock)],
    );
    let text = eventually(5, || {
        let t = std::fs::read_to_string(&logf).ok()?;
        t.contains("UNIX domain socket bound at").then_some(t)
    })
    .expect("log file written");
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with("passt "), "header: {first}");
    assert!(
        first.contains(&format!("({})", p.pid())),
        "header names the PID: {first}"
    );
    let mode = std::fs::metadata(&logf).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    drop(p);
    let err = std::fs::read_to_string(dir.join("passt.stderr")).unwrap_or_default();
    assert!(!err.to_lowercase().contains("syslog"), "{err}");
    assert!(
        !err.contains("UNIX domain socket"),
        "log lines only in the file: {err}"
    );
}

/// TCP through pasta both ways, to a server on the host's loopback reached
/// through the gateway address: every byte arrives, in order.
#[test]
fn pasta_tcp_both_directions() {
    let h = Netns::host("tcp");
    let dir = Scratch::new("tcp");
    let data = dir.join("data.bin");
    // 4 MiB of varied bytes.
    let mut v = Vec::with_capacity(4 << 20);
    let mut x: u32 = 1;
    while v.len() < 4 << 20 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        v.push((x >> 16) as u8);
    }
    std::fs::write(&data, &v).unwrap();

    // Host → guest.
    let got = dir.join("to_guest.bin");
    let _srv = Proc::spawn(
        h.cmd(&[
            "socat".into(),
            "-u".into(),
            format!("OPEN:{}", data.display()),
            "TCP-LISTEN:5601,reuseaddr".into(),
        ]),
        "socat server",
        dir.join("srv1.log"),
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = h.user_run(
        &[
            s(&pasta()),
            "--config-net".into(),
            "--".into(),
            "socat".into(),
            "-u".into(),
            format!("TCP:{GW_IP4}:5601"),
            format!("OPEN:{},creat,trunc", got.display()),
        ],
        60,
    );
    ok_text(&out);
    assert!(
        std::fs::read(&got).unwrap() == v,
        "host to guest: data differs"
    );

    // Guest → host (the command waits so that the guest's kernel can finish
    // sending after socat closes).
    let put = dir.join("to_host.bin");
    let _srv = Proc::spawn(
        h.cmd(&[
            "socat".into(),
            "-u".into(),
            "TCP-LISTEN:5602,reuseaddr".into(),
            format!("OPEN:{},creat,trunc", put.display()),
        ]),
        "socat server",
        dir.join("srv2.log"),
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = h.user_run(
        &[
            s(&pasta()),
            "--config-net".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            format!(
                "socat -u OPEN:{} TCP:{GW_IP4}:5602,shut-down && sleep 1",
                data.display()
            ),
        ],
        60,
    );
    ok_text(&out);
    let same = eventually(10, || (std::fs::read(&put).ok()? == v).then_some(()));
    assert!(same.is_some(), "guest to host: data differs");

    // Inbound (-t): a host client connects to a forwarded port and the
    // guest's server speaks first.
    let fwd = dir.join("forwarded.bin");
    let pidf = dir.join("pasta.pid");
    let mut p = h.start_ready(
        as_test_user(),
        &pasta(),
        &pidf,
        dir.join("pasta.log"),
        &[
            "--config-net",
            "-t",
            "5603",
            "--",
            "sh",
            "-c",
            &// The wait lets the guest's kernel finish sending after socat
            // exits (pasta ends with its command).
            format!(
                "socat -u OPEN:{} TCP-LISTEN:5603 && sleep 2",
                data.display()
            ),
        ],
    );
    let got = eventually(10, || {
        let out = h.run(
            &[
                "socat".into(),
                "-u".into(),
                "TCP:127.0.0.1:5603".into(),
                format!("OPEN:{},creat,trunc", fwd.display()),
            ],
            30,
        );
        (out.status.success() && std::fs::read(&fwd).ok()? == v).then_some(())
    });
    assert!(
        got.is_some(),
        "forwarded port: data differs; pasta: {}",
        p.output()
    );
    assert_eq!(p.wait_exit(10).code(), Some(0), "the command's status");
}
