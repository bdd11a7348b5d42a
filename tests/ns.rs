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

#[path = "ns/leases.rs"]
mod leases;
mod ns_support;
#[path = "ns/passt.rs"]
mod passt;
mod relay_support;

use ns_support::*;
use relay_support::*;
use std::path::PathBuf;
use std::process::Command;

/// `pasta --config-net`: the tap is named after the template interface, has
/// its addresses, MTU 65520, is up, and has the template's default routes.
#[test]
fn config_net_copies_template() {
    let h = Netns::host("cfg");
    let out = h.user_pasta(
        &["--config-net"],
        &[
            "sh",
            "-c",
            "ip -j addr show; echo @@; ip -j -4 route show; echo @@; ip -j -6 route show",
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
    let out = h.user_pasta(&[], &["sh", "-c", "exit 7"], 30);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let out = h.user_pasta(&[], &["sh", "-c", "kill -TERM $$"], 30);
    assert_eq!(out.status.code(), Some(128 + 15), "{out:?}");
    // The command runs in its own network namespace with loopback up and
    // the tap device (down without --config-net).
    let out = h.user_pasta(&[], &["sh", "-c", "ip -o link show"], 30);
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
    let mut p = h.pasta_joining(&g, &dir);
    let pid = read_pid(&dir.join("pasta.pid"));
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
    tcp_host_to_guest(&h, &dir, &data, &v);
    tcp_guest_to_host(&h, &dir, &data, &v);
    tcp_inbound_forward(&h, &dir, &data, &v);
}

/// [`pasta_tcp_both_directions`]: the guest fetches `data` from a host server.
fn tcp_host_to_guest(h: &Netns, dir: &Scratch, data: &std::path::Path, v: &[u8]) {
    let got = dir.join("to_guest.bin");
    let _srv = socat_server(
        h,
        dir.join("srv1.log"),
        format!("OPEN:{}", data.display()),
        "TCP-LISTEN:5601,reuseaddr".into(),
    );
    pasta_config_net_run(
        h,
        &[
            "socat".into(),
            "-u".into(),
            format!("TCP:{GW_IP4}:5601"),
            format!("OPEN:{},creat,trunc", got.display()),
        ],
    );
    assert!(
        std::fs::read(&got).unwrap() == v,
        "host to guest: data differs"
    );
}

/// [`pasta_tcp_both_directions`]: the guest sends `data` to a host server.
fn tcp_guest_to_host(h: &Netns, dir: &Scratch, data: &std::path::Path, v: &[u8]) {
    let put = dir.join("to_host.bin");
    let _srv = socat_server(
        h,
        dir.join("srv2.log"),
        "TCP-LISTEN:5602,reuseaddr".into(),
        format!("OPEN:{},creat,trunc", put.display()),
    );
    // The command waits so that the guest's kernel can finish sending after
    // socat closes.
    pasta_config_net_run(
        h,
        &[
            "sh".into(),
            "-c".into(),
            format!(
                "socat -u OPEN:{} TCP:{GW_IP4}:5602,shut-down && sleep 1",
                data.display()
            ),
        ],
    );
    let same = eventually(10, || (std::fs::read(&put).ok()? == v).then_some(()));
    assert!(same.is_some(), "guest to host: data differs");
}

/// `socat -u FROM TO` in the host namespace, given a moment to listen.
fn socat_server(h: &Netns, log: std::path::PathBuf, from: String, to: String) -> Proc {
    let p = Proc::spawn(
        h.cmd(&["socat".into(), "-u".into(), from, to]),
        "socat server",
        log,
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    p
}

/// `pasta --config-net -- CMD...` as the test user; it must succeed.
fn pasta_config_net_run(h: &Netns, cmd: &[String]) {
    let mut args = vec![s(&pasta()), "--config-net".into(), "--".into()];
    args.extend(cmd.iter().cloned());
    ok_text(&h.user_run(&args, 60));
}

/// [`pasta_tcp_both_directions`]: a host client fetches `data` from the guest's server through a forwarded port.
fn tcp_inbound_forward(h: &Netns, dir: &Scratch, data: &std::path::Path, v: &[u8]) {
    // Inbound (-t): a host client connects to a forwarded port and the
    // guest's server speaks first.
    let fwd = dir.join("forwarded.bin");
    let mut p = h.start_pasta(
        as_test_user(),
        dir,
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
