//! Every kind of reply of the link services (ARP, NDP, DHCP, DHCPv6), for IPv4
//! and IPv6 clients: requests built here independently of the core (etherparse
//! and hand-written client messages), replies checked with etherparse and
//! recorded as snapshots under `snapshots/`.

use etherparse::PacketBuilder;
use passt_core::{Config, Core, FrameBatch, FrameRef, Instant, Ip4Config, Ip6Config, Mac};
use passt_tests::check::{describe, validate};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

const GUEST: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x05];
const GUEST_LL: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
const DUID_TIME: u32 = 0x3039_0000;

fn config(passt_defaults: bool) -> Config {
    let gw4 = Ipv4Addr::new(10, 77, 0, 1);
    let mut ip4 = Ip4Config::new(Ipv4Addr::new(10, 77, 0, 2), 24, Some(gw4));
    ip4.dns.push(Ipv4Addr::new(10, 77, 0, 53)).unwrap();
    let mut ip6 = Ip6Config::new(
        "fd77::2".parse().unwrap(),
        Some("fd77::1".parse().unwrap()),
        "fe80::1".parse().unwrap(),
    );
    ip6.dns.push("fd77::53".parse().unwrap()).unwrap();
    let mut cfg = Config {
        ip4: Some(ip4),
        ip6: Some(ip6),
        search: vec!["example.org".into(), "lab.example.org".into()],
        duid_time: DUID_TIME,
        seed: 3,
        ..Config::default()
    };
    // pasta does not advertise resolvers and search list unless asked; passt does.
    cfg.features.advertise_dns = passt_defaults;
    cfg.features.advertise_search = passt_defaults;
    cfg
}

/// Feeds one frame and returns the replies, each checked by etherparse.
fn ask(core: &mut Core, now: Instant, frame: &[u8]) -> Vec<Vec<u8>> {
    let refs = [FrameRef {
        offset: 0,
        len: frame.len() as u32,
    }];
    core.handle_tap_batch(now, &FrameBatch::new(frame, &refs));
    drain(core)
}

fn drain(core: &mut Core) -> Vec<Vec<u8>> {
    let mut tx = vec![0u8; 65536 + 14];
    let mut out = Vec::new();
    while let Some(n) = core.poll_frame(&mut tx) {
        let f = tx[..n].to_vec();
        if let Err(e) = validate(&f) {
            panic!("invalid reply: {e}\n{}", describe(&f));
        }
        out.push(f);
    }
    out
}

struct Transcript(String);

impl Transcript {
    fn case(&mut self, name: &str, replies: &[Vec<u8>]) {
        let _ = writeln!(
            self.0,
            "== {name}: {} repl{}",
            replies.len(),
            if replies.len() == 1 { "y" } else { "ies" }
        );
        for r in replies {
            self.0.push_str(&describe(r));
        }
    }
}

fn snapshot(name: &str, t: &Transcript) {
    insta::with_settings!({ snapshot_path => "../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(name, &t.0);
    });
}

// --- IPv4 clients ----------------------------------------------------------

fn arp_request(sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&GUEST);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&GUEST);
    f.extend_from_slice(&sender_ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip);
    f
}

/// A BOOTP/DHCP client message with `options` (code, value) after the cookie.
fn dhcp_msg(xid: u32, broadcast: bool, options: &[(u8, &[u8])]) -> Vec<u8> {
    let mut m = vec![1, 1, 6, 0];
    m.extend_from_slice(&xid.to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&(if broadcast { 0x8000u16 } else { 0 }).to_be_bytes());
    m.extend_from_slice(&[0; 16]); // ciaddr yiaddr siaddr giaddr
    m.extend_from_slice(&GUEST);
    m.extend_from_slice(&[0; 10 + 64 + 128]);
    m.extend_from_slice(&[99, 130, 83, 99]);
    for (code, value) in options {
        m.push(*code);
        m.push(value.len() as u8);
        m.extend_from_slice(value);
    }
    m.push(255);
    m
}

fn udp4(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(GUEST, [0xff; 6])
        .ipv4([0, 0, 0, 0], [255, 255, 255, 255], 64)
        .udp(68, 67);
    let mut f = Vec::new();
    b.write(&mut f, payload).unwrap();
    f
}

const PRL: &[u8] = &[1, 3, 6, 15, 26, 28, 51, 54, 58, 59, 119, 121];

#[test]
fn ipv4_client_replies() {
    let mut t = Transcript(String::new());
    let mut core = Core::new(config(false));
    let now = Instant::ZERO;

    let r = ask(&mut core, now, &arp_request([10, 77, 0, 2], [10, 77, 0, 1]));
    assert_eq!(r.len(), 1);
    t.case("ARP request for the gateway -> reply", &r);
    let r = ask(&mut core, now, &arp_request([10, 77, 0, 2], [10, 77, 0, 2]));
    assert!(r.is_empty(), "gratuitous ARP is ignored");
    t.case("gratuitous ARP -> nothing", &r);
    let r = ask(&mut core, now, &arp_request([0, 0, 0, 0], [10, 77, 0, 2]));
    assert!(r.is_empty(), "probe for the guest's own address is ignored");
    t.case("ARP probe for the guest's own address -> nothing", &r);

    let r = ask(
        &mut core,
        now,
        &udp4(&dhcp_msg(1, false, &[(53, &[1]), (55, PRL)])),
    );
    assert_eq!(r.len(), 1);
    t.case("DHCPDISCOVER -> OFFER", &r);
    let r = ask(
        &mut core,
        now,
        &udp4(&dhcp_msg(
            2,
            false,
            &[
                (53, &[3]),
                (50, &[10, 77, 0, 2]),
                (54, &[10, 77, 0, 1]),
                (55, PRL),
            ],
        )),
    );
    assert_eq!(r.len(), 1);
    t.case("DHCPREQUEST -> ACK", &r);
    let r = ask(
        &mut core,
        now,
        &udp4(&dhcp_msg(3, true, &[(53, &[1]), (55, PRL)])),
    );
    assert_eq!(r.len(), 1);
    assert_eq!(
        &r[0][30..34],
        &[255, 255, 255, 255],
        "broadcast flag: broadcast reply"
    );
    t.case(
        "DHCPDISCOVER, broadcast flag -> OFFER to 255.255.255.255",
        &r,
    );
    let r = ask(
        &mut core,
        now,
        &udp4(&dhcp_msg(4, false, &[(53, &[1]), (80, &[]), (55, PRL)])),
    );
    assert_eq!(r.len(), 1);
    t.case("DHCPDISCOVER with rapid commit -> ACK with option 80", &r);
    let r = ask(&mut core, now, &udp4(&dhcp_msg(5, false, &[])));
    assert_eq!(r.len(), 1);
    t.case("BOOTREQUEST (no option 53) -> BOOTREPLY", &r);
    let r = ask(&mut core, now, &udp4(&dhcp_msg(6, false, &[(53, &[7])])));
    assert!(r.is_empty());
    t.case("DHCPRELEASE -> nothing", &r);

    // passt's defaults: resolvers and search list advertised.
    let mut core = Core::new(config(true));
    let r = ask(
        &mut core,
        now,
        &udp4(&dhcp_msg(7, false, &[(53, &[1]), (55, PRL)])),
    );
    assert_eq!(r.len(), 1);
    t.case(
        "DHCPDISCOVER, DNS and search advertised -> OFFER with 6 and 119",
        &r,
    );

    // A gateway outside the assigned subnet: classless static routes.
    let mut cfg = config(false);
    let ip4 = cfg.ip4.as_mut().unwrap();
    ip4.prefix_len = 32;
    let mut core = Core::new(cfg);
    let r = ask(
        &mut core,
        now,
        &udp4(&dhcp_msg(8, false, &[(53, &[1]), (55, PRL)])),
    );
    assert_eq!(r.len(), 1);
    t.case(
        "DHCPDISCOVER, gateway off-subnet -> OFFER with option 121",
        &r,
    );

    snapshot("services_ipv4", &t);
}

// --- IPv6 clients ----------------------------------------------------------

fn icmp6(src: [u8; 16], dst: [u8; 16], dst_mac: [u8; 6], ty: u8, body: &[u8]) -> Vec<u8> {
    // Bytes 5..8 of the ICMPv6 header, then the rest of the message.
    let mut head = [0u8; 4];
    head.copy_from_slice(&body[..4]);
    let b = PacketBuilder::ethernet2(GUEST, dst_mac)
        .ipv6(src, dst, 255)
        .icmpv6_raw(ty, 0, head);
    let mut f = Vec::new();
    b.write(&mut f, &body[4..]).unwrap();
    f
}

fn ns_for(target: Ipv6Addr) -> Vec<u8> {
    let mut body = vec![0u8; 4];
    body.extend_from_slice(&target.octets());
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&GUEST);
    let t = target.octets();
    let snm = [
        0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
    ];
    icmp6(
        GUEST_LL,
        snm,
        [0x33, 0x33, 0xff, t[13], t[14], t[15]],
        135,
        &body,
    )
}

fn rs() -> Vec<u8> {
    let mut body = vec![0u8; 4];
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&GUEST);
    let all_routers = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    icmp6(GUEST_LL, all_routers, [0x33, 0x33, 0, 0, 0, 2], 133, &body)
}

fn our_duid() -> Vec<u8> {
    let mut d = vec![0, 1, 0, 1];
    d.extend_from_slice(&DUID_TIME.to_be_bytes());
    d.extend_from_slice(&Mac::OUR_DEFAULT.0);
    d
}

fn opt6(code: u16, value: &[u8]) -> Vec<u8> {
    let mut o = code.to_be_bytes().to_vec();
    o.extend_from_slice(&(value.len() as u16).to_be_bytes());
    o.extend_from_slice(value);
    o
}

/// A DHCPv6 client message: client id, option request (23, 24), and an IA_NA
/// asking for `addr` if given.
fn dhcp6_msg(ty: u8, xid: u32, server_id: bool, ia: Option<Option<Ipv6Addr>>) -> Vec<u8> {
    let mut m = vec![ty];
    m.extend_from_slice(&xid.to_be_bytes()[1..]);
    let mut client = vec![0, 3, 0, 1];
    client.extend_from_slice(&GUEST);
    m.extend(opt6(1, &client));
    if server_id {
        m.extend(opt6(2, &our_duid()));
    }
    m.extend(opt6(6, &[0, 23, 0, 24]));
    m.extend(opt6(8, &[0, 0]));
    if let Some(addr) = ia {
        let mut ia_na = vec![0, 0, 0, 5, 0, 0, 0x0e, 0x10, 0, 0, 0x15, 0x18];
        if let Some(a) = addr {
            let mut iaaddr = a.octets().to_vec();
            iaaddr.extend_from_slice(&[0, 0, 0x1c, 0x20, 0, 0, 0x2a, 0x30]);
            ia_na.extend(opt6(5, &iaaddr));
        }
        m.extend(opt6(3, &ia_na));
    }
    m
}

fn udp6(payload: &[u8]) -> Vec<u8> {
    let all_servers = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2];
    let b = PacketBuilder::ethernet2(GUEST, [0x33, 0x33, 0, 1, 0, 2])
        .ipv6(GUEST_LL, all_servers, 1)
        .udp(546, 547);
    let mut f = Vec::new();
    b.write(&mut f, payload).unwrap();
    f
}

#[test]
fn ipv6_client_replies() {
    let mut t = Transcript(String::new());
    let mut core = Core::new(config(true));
    let now = Instant::ZERO;

    let r = ask(&mut core, now, &ns_for("fd77::1".parse().unwrap()));
    assert_eq!(r.len(), 1);
    t.case("NS for the gateway -> NA", &r);
    let r = ask(&mut core, now, &rs());
    assert_eq!(r.len(), 1);
    t.case("RS -> RA (DNS and search advertised: RDNSS, DNSSL)", &r);

    let r = ask(
        &mut core,
        now,
        &udp6(&dhcp6_msg(1, 0x10, false, Some(None))),
    );
    assert_eq!(r.len(), 1);
    t.case("SOLICIT -> ADVERTISE", &r);
    let ours = Some(Some("fd77::2".parse().unwrap()));
    let r = ask(&mut core, now, &udp6(&dhcp6_msg(3, 0x11, true, ours)));
    assert_eq!(r.len(), 1);
    t.case("REQUEST -> REPLY", &r);
    let r = ask(&mut core, now, &udp6(&dhcp6_msg(5, 0x12, true, ours)));
    assert_eq!(r.len(), 1);
    t.case("RENEW -> REPLY", &r);
    let r = ask(&mut core, now, &udp6(&dhcp6_msg(6, 0x13, true, ours)));
    assert_eq!(r.len(), 1);
    t.case("REBIND (with our server id) -> REPLY", &r);
    let r = ask(&mut core, now, &udp6(&dhcp6_msg(4, 0x14, false, ours)));
    assert_eq!(r.len(), 1);
    t.case("CONFIRM of our address -> REPLY", &r);
    let other = Some(Some("fd99::7".parse().unwrap()));
    let r = ask(&mut core, now, &udp6(&dhcp6_msg(4, 0x15, false, other)));
    assert_eq!(r.len(), 1);
    t.case("CONFIRM of another address -> REPLY NotOnLink", &r);
    let r = ask(&mut core, now, &udp6(&dhcp6_msg(11, 0x16, false, None)));
    assert_eq!(r.len(), 1);
    t.case("INFORMATION-REQUEST -> REPLY", &r);
    let r = ask(&mut core, now, &udp6(&dhcp6_msg(8, 0x17, true, ours)));
    assert!(r.is_empty());
    t.case("RELEASE -> nothing", &r);

    // Unsolicited router advertisements: 200-600 s after the guest was seen.
    let deadline = core.poll_timeout().expect("an RA is scheduled");
    assert!(deadline >= Instant::from_millis(200_000) && deadline < Instant::from_millis(600_000));
    core.handle_timeout(deadline);
    let r = drain(&mut core);
    assert_eq!(r.len(), 1);
    t.case("timer -> unsolicited RA to ff02::1", &r);

    snapshot("services_ipv6", &t);
}
