//! LAN neighbours with their real MACs: pasta, run as the unprivileged test
//! user, follows the host's neighbour table and gives the guest the real MAC
//! of each host on the host's LAN, as upstream does since 2025.
//!
//! The topology, all namespaces of the test:
//!
//! ```text
//!  guest (pasta's) ── tap ── pasta, in "host" ── lan0 (veth) ── peer
//!  10.77.0.2                 10.77.0.2/24                       10.77.0.9, 10.77.0.1
//!  fd77::2                   fd77::2/64                         fd77::9, fd77::1
//! ```
//!
//! The host's only link is the veth to the peer, which also holds the
//! gateway's addresses (the host's default routes go through it), with a
//! MAC the test sets. pasta copies the host's addresses and routes into the
//! guest (`--config-net`). What the guest must see:
//!
//! * the peer's addresses resolved (ARP, NDP) to the peer's MAC;
//! * the gateway resolved to pasta's MAC, although the host knows the
//!   gateway's address at the peer's MAC: the gateway stands for the host
//!   (`--map-gw`, the default);
//! * TCP, and echo replies, from the peer in frames whose Ethernet source is
//!   the peer's MAC (pasta's `--pcap`);
//! * an address the host learns later announced: the guest's entry for it,
//!   made while the host did not know it (pasta's MAC), changes to the
//!   peer's MAC without the guest asking.

mod ns_support;
mod pasta_support;
mod stream_support;

use ns_support::*;
use pasta_support::{Pasta, Ready};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

const PEER_MAC: &str = "02:5e:4e:00:00:09";
const OUR_MAC: &str = "9a:55:9a:55:9a:55";
const PEER4: &str = "10.77.0.9";
const PEER6: &str = "fd77::9";
/// An address the peer takes later.
const LATER4: &str = "10.77.0.20";

/// The host and peer namespaces, linked.
fn lan(tag: &str) -> (Netns, Netns) {
    let host = Netns::new(tag);
    let peer = Netns::new(&format!("{tag}p"));
    let (h, p) = (&host.name, &peer.name);
    let pid = std::process::id();
    let out = run_timeout(
        std::process::Command::new("sh").args([
            "-ec",
            &format!(
                "ip -n {h} link add hp{pid} type veth peer name ph{pid} netns {p}
                 ip -n {h} link set hp{pid} name lan0
                 ip -n {p} link set ph{pid} name lan0
                 ip -n {p} link set lan0 address {PEER_MAC}
                 ip -n {h} link set lan0 up
                 ip -n {p} link set lan0 up
                 ip -n {h} addr add {HOST_IP4}/24 dev lan0
                 ip -n {h} addr add {HOST_IP6}/64 dev lan0 nodad
                 ip -n {p} addr add {PEER4}/24 dev lan0
                 ip -n {p} addr add {GW_IP4}/24 dev lan0
                 ip -n {p} addr add {PEER6}/64 dev lan0 nodad
                 ip -n {p} addr add {GW_IP6}/64 dev lan0 nodad
                 ip -n {h} route add default via {GW_IP4} dev lan0
                 ip -n {h} -6 route add default via {GW_IP6} dev lan0
                 ip netns exec {h} sysctl -q -w net.ipv4.ping_group_range='0 2147483647'"
            ),
        ]),
        30,
    );
    ok_text(&out);
    host.resolv(&format!("nameserver {DNS4}\n"));
    // The host knows the peer and the gateway before pasta starts.
    host.sh(&format!(
        "for a in {PEER4} {GW_IP4}; do ping -c 1 -W 5 $a >/dev/null; done
         for a in {PEER6} {GW_IP6}; do ping -6 -c 1 -W 5 $a >/dev/null; done
         ip neigh show | grep -q {PEER_MAC}"
    ));
    (host, peer)
}

/// The guest's neighbour entry for `addr`. (`ip` fails a dump the kernel
/// reports as interrupted by a change: read again.)
fn guest_neigh(g: &Netns, addr: &str) -> String {
    for _ in 0..5 {
        let out = g.run(&["ip", "neigh", "show", addr], 30);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    String::new()
}

/// The link-layer address the guest's neighbour table holds for `addr`
/// (empty if none).
fn guest_lladdr(g: &Netns, addr: &str) -> String {
    guest_neigh(g, addr)
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or("")
        .to_string()
}

/// Pings `addr` from the guest (an answer is not required: resolving it
/// is what counts), then reads the guest's entry for it.
fn resolve_from_guest(g: &Netns, addr: &str) -> String {
    let v6 = if addr.contains(':') { "-6" } else { "-4" };
    g.sh(&format!("ping {v6} -c 1 -W 2 {addr} >/dev/null || true"));
    guest_lladdr(g, addr)
}

/// pasta in the host of [`lan`], capturing to `pcap`.
fn start(tag: &str, host: Netns, pcap: &str) -> Pasta {
    Pasta::start_in(host, tag, &[], &["--pcap", pcap], Ready::Dual)
}

fn mac_str(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Frames of the capture sent to the guest from IPv4 address `src` with IP
/// protocol `proto`: their Ethernet sources.
fn sources_of(pcap: &std::path::Path, src: &str, proto: u8) -> Vec<String> {
    let src: std::net::Ipv4Addr = src.parse().unwrap();
    let frames = passt_driver_sim::scenario::read_pcap(pcap).expect("capture");
    frames
        .iter()
        .map(|(_, f)| f)
        .filter(|f| {
            f.len() >= 34
                && f[12..14] == [0x08, 0x00]
                && f[23] == proto
                && f[26..30] == src.octets()
        })
        .map(|f| mac_str(&f[6..12]))
        .collect()
}

#[test]
fn guest_sees_lan_peer_with_its_real_mac_and_gateway_with_ours() {
    let (host, peer) = lan("nbr");
    let dir = Scratch::new("nbrcap");
    let pcap = dir.join("pasta.pcap");
    let p = start("nbr", host, &s(&pcap));
    let g: &Netns = &p.g;
    assert_eq!(resolve_from_guest(g, PEER4), PEER_MAC, "ARP for the peer");
    assert_eq!(resolve_from_guest(g, PEER6), PEER_MAC, "NDP for the peer");
    assert_eq!(
        resolve_from_guest(g, GW_IP4),
        OUR_MAC,
        "ARP for the gateway"
    );
    assert_eq!(
        resolve_from_guest(g, GW_IP6),
        OUR_MAC,
        "NDP for the gateway"
    );
    // Another address of the LAN the host does not know: ours.
    assert_eq!(resolve_from_guest(g, "10.77.0.33"), OUR_MAC);

    // TCP with a server on the peer: the frames from it carry its MAC.
    let listener: TcpListener = stream_support::in_ns(&peer, || {
        TcpListener::bind(SocketAddr::new(PEER4.parse().unwrap(), 7777)).expect("peer listener")
    });
    let server = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).expect("request");
        c.write_all(b"world").expect("answer");
    });
    let peer_sa = SocketAddr::new(IpAddr::V4(PEER4.parse().unwrap()), 7777);
    let mut c = p.connect_guest(peer_sa).expect("connect to the peer");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"hello").unwrap();
    let mut b = [0u8; 5];
    c.read_exact(&mut b).expect("answer from the peer");
    assert_eq!(&b, b"world");
    drop(c);
    server.join().unwrap();
    // An echo reply from the gateway (the host's loopback): ours.
    g.sh(&format!("ping -c 1 -W 5 {GW_IP4} >/dev/null"));

    let tcp = eventually(5, || {
        let v = sources_of(&pcap, PEER4, 6);
        (v.len() >= 3).then_some(v)
    })
    .unwrap_or_else(|| panic!("no TCP from the peer in the capture: {}", p.p.output()));
    assert!(
        tcp.iter().all(|m| m == PEER_MAC),
        "TCP from the peer: {tcp:?}"
    );
    let echo = sources_of(&pcap, PEER4, 1);
    assert!(
        !echo.is_empty() && echo.iter().all(|m| m == PEER_MAC),
        "echo replies: {echo:?}"
    );
    let gw = sources_of(&pcap, GW_IP4, 1);
    assert!(
        !gw.is_empty() && gw.iter().all(|m| m == OUR_MAC),
        "from the gateway: {gw:?}"
    );
}

#[test]
fn address_the_host_learns_later_is_announced_to_the_guest() {
    let (host, peer) = lan("nbl");
    let dir = Scratch::new("nblcap");
    let pcap = dir.join("pasta.pcap");
    let p = start("nbl", host, &s(&pcap));
    let g: &Netns = &p.g;
    // Nobody has the address yet: the guest resolves it to pasta's MAC.
    assert_eq!(resolve_from_guest(g, LATER4), OUR_MAC);
    // The peer takes it, and the host learns it.
    peer.sh(&format!("ip addr add {LATER4}/24 dev lan0"));
    // The guest's ping left the host's entry incomplete or failed: a ping
    // that waited in it may fail, the next one resolves the address.
    p.h.sh(&format!(
        "for i in 1 2 3 4 5 6 7 8 9 10; do
           ping -c 1 -W 2 {LATER4} >/dev/null && exit 0
           sleep 0.5
         done
         exit 1"
    ));
    // The guest's entry changes without the guest asking: it is not
    // resolved again here, only read.
    let learnt = eventually(5, || {
        let m = guest_lladdr(g, LATER4);
        (m == PEER_MAC).then_some(())
    });
    assert!(
        learnt.is_some(),
        "guest's entry: {} ({})",
        guest_neigh(g, LATER4),
        p.p.output()
    );
    // The announcement, in the capture: a gratuitous request from the
    // peer's MAC.
    let frames = passt_driver_sim::scenario::read_pcap(&pcap).expect("capture");
    let later: std::net::Ipv4Addr = LATER4.parse().unwrap();
    let garp = frames.iter().any(|(_, f)| {
        f.len() >= 42
            && f[..6] == [0xff; 6]
            && f[12..14] == [0x08, 0x06]
            && f[20..22] == [0, 1]
            && f[28..32] == later.octets()
            && f[38..42] == later.octets()
            && mac_str(&f[6..12]) == PEER_MAC
    });
    assert!(garp, "no gratuitous ARP for {LATER4} in the capture");
}
