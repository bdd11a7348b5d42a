//! passt probes the guest whenever its link comes up: at the first qemu
//! connection and again when qemu (or a restarted guest) connects anew, as
//! libvirt's stream netdev with reconnect does. The probe is an ARP request
//! for the guest's address (and a neighbour solicitation): a guest that says
//! nothing first still answers, so passt learns its MAC, and the guest's
//! kernel, asked for its own address, learns passt's.
//!
//! The guest is a tap device in a namespace of the test's, relayed to passt's
//! socket in qemu's framing; it is configured before it connects and sends
//! nothing of its own (IPv6 off, a static address, no DHCP). passt runs as the
//! test user with the sandbox on.

mod ns_support;
mod relay_support;

use ns_support::*;
use relay_support::TapRelay;
use std::os::unix::net::UnixStream;

/// A guest namespace with the tap device `vnet0` made and configured before
/// any relay attaches to it: static address, IPv6 off, up.
fn silent_guest(tag: &str) -> Netns {
    let g = Netns::new(tag);
    g.sh(
        "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 && \
         ip tuntap add dev vnet0 mode tap && \
         ip addr add 10.77.0.50/24 dev vnet0 && \
         ip link set vnet0 up",
    );
    g
}

/// The guest kernel's neighbour entry for the gateway, if any.
fn gateway_neighbour(g: &Netns) -> Option<String> {
    let out = g.sh(&format!("ip neigh show {GW_IP4} dev vnet0"));
    out.contains("lladdr").then_some(out)
}

#[test]
fn passt_probes_the_guest_on_every_connection() {
    let h = Netns::host("recon");
    h.sh("sysctl -qw net.ipv4.ping_group_range='0 2147483647'");
    let dir = Scratch::new("recon");
    let sock = dir.join("passt.socket");
    let args = [
        bin("passt").display().to_string(),
        "-f".into(),
        "-4".into(),
        "--socket".into(),
        sock.display().to_string(),
        "--address".into(),
        "10.77.0.50".into(),
        "--netmask".into(),
        "24".into(),
    ];
    let mut p = Proc::spawn(h.user_cmd(&args), "passt", dir.join("passt.log"));
    for round in 0..2 {
        let g = silent_guest(&format!("recong{round}"));
        assert_eq!(gateway_neighbour(&g), None, "a fresh namespace");
        let stream = eventually(10, || UnixStream::connect(&sock).ok())
            .unwrap_or_else(|| panic!("connect (round {round}): {}", p.output()));
        let relay = TapRelay::start(&g, "vnet0", stream);
        let seen = eventually(5, || gateway_neighbour(&g));
        assert!(
            seen.is_some(),
            "round {round}: no ARP request from passt reached the silent guest: {}\n{}",
            g.sh("ip -s link show vnet0"),
            p.output()
        );
        // The guest answered the probe: passt reaches it by its MAC. A ping
        // of the gateway is answered (passt's ICMP to the host's stack).
        let ping = g.run(&["ping", "-c", "1", "-W", "3", GW_IP4], 10);
        assert!(
            ping.status.success(),
            "round {round}: ping of the gateway: {}\n{}",
            String::from_utf8_lossy(&ping.stdout),
            p.output()
        );
        drop(relay);
        p.assert_running();
    }
}
