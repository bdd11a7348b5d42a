//! Addresses from the translators' services to real clients: busybox
//! udhcpc, dhclient -6, the kernel's SLAAC, and a lease through qemu.

use super::*;

/// pasta on an existing namespace (by PID, joining the process's user
/// namespace first, as with rootlesskit), no --config-net: busybox udhcpc
/// gets address, router, DNS, search domain and MTU, and the `-H` and
/// `--fqdn` names (options 12 and 81).
#[test]
fn pasta_udhcpc_lease() {
    let h = Netns::host("dhcp4");
    let g = UserNetns::new("dhcp4g");
    let dir = Scratch::new("dhcp4");
    let mut p = h.start_pasta(
        as_test_user(),
        &dir,
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
    let p = h.start_pasta(
        as_test_user(),
        &dir,
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
    let mut p = h.pasta_joining(&g, &dir);
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
    let mut p = h.start_passt(&sock, &pidf, dir.join("passt.log"), &["-p", &s(&pcap)]);
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
