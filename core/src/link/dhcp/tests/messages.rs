//! Which message gets which reply, and the fixed fields of the reply.

use super::*;

// --- message types --------------------------------------------------

#[test]
fn discover_gets_offer() {
    let mut core = Core::new(capture_config());
    let o = one(&mut core, &msg(Some(DISCOVER), 0, UDHCPC_PRL, &[]));
    assert_eq!(o.eth_dst, CLIENT.0);
    assert_eq!((o.src, o.dst), (GW, ADDR));
    let pkt = DhcpPacket::new_checked(&o.dhcp[..]).unwrap();
    let r = DhcpRepr::parse(&pkt).unwrap();
    assert_eq!(r.message_type, DhcpMessageType::Offer);
    assert_eq!(r.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
    assert_eq!(r.router, Some(GW));
    assert_eq!(r.server_identifier, Some(GW));
    assert_eq!(r.lease_duration, Some(u32::MAX));
    assert_eq!(r.dns_servers.unwrap().as_slice(), &[GW]);
    assert!(!r.broadcast);
    let o = opts(&o.dhcp);
    // 53, then the client's order (1 3 6 26 119; no 121: gateway on-link),
    // then the rest by code.
    assert_eq!(codes(&o), [53, 1, 3, 6, 26, 119, 51, 54]);
    assert_eq!(get(&o, OPT_MTU).unwrap(), 65520u16.to_be_bytes());
    assert_eq!(core.counters().replies(ReplyKind::Dhcp), 1);
    assert_eq!(core.counters().dropped_total(), 0);
}

#[test]
fn request_gets_ack_without_checks() {
    let mut core = Core::new(capture_config());
    // A foreign requested address and server identifier: still ACKed.
    let extra: &[(u8, &[u8])] = &[(50, &[192, 168, 1, 1]), (54, &[192, 168, 1, 254])];
    let o = one(&mut core, &msg(Some(REQUEST), 0, UDHCPC_PRL, extra));
    let pkt = DhcpPacket::new_checked(&o.dhcp[..]).unwrap();
    let r = DhcpRepr::parse(&pkt).unwrap();
    assert_eq!(r.message_type, DhcpMessageType::Ack);
    assert_eq!(r.your_ip, ADDR);
    assert_eq!(r.server_identifier, Some(GW));
    assert_eq!(get(&opts(&o.dhcp), OPT_RAPID_COMMIT), None);
}

#[test]
fn rapid_commit() {
    let mut core = Core::new(capture_config());
    let rc: &[(u8, &[u8])] = &[(OPT_RAPID_COMMIT, &[])];
    let o = one(&mut core, &msg(Some(DISCOVER), 0, &[1, 3], rc));
    let pkt = DhcpPacket::new_checked(&o.dhcp[..]).unwrap();
    assert_eq!(
        DhcpRepr::parse(&pkt).unwrap().message_type,
        DhcpMessageType::Ack
    );
    let o = opts(&o.dhcp);
    assert_eq!(get(&o, OPT_RAPID_COMMIT), Some(vec![]));
    assert_eq!(codes(&o), [53, 1, 3, 6, 26, 51, 54, 80, 119]);
    // A REQUEST with option 80 is a plain ACK without it.
    let o = one(&mut core, &msg(Some(REQUEST), 0, &[1, 3], rc));
    let pkt = DhcpPacket::new_checked(&o.dhcp[..]).unwrap();
    assert_eq!(
        DhcpRepr::parse(&pkt).unwrap().message_type,
        DhcpMessageType::Ack
    );
    assert_eq!(get(&opts(&o.dhcp), OPT_RAPID_COMMIT), None);
    assert_eq!(core.counters().replies(ReplyKind::Dhcp), 2);
}

#[test]
fn bootp_gets_configuration_options_only() {
    let mut core = core_with(|c| c.search.clear());
    let o = one(&mut core, &msg(None, 0, &[], &[]));
    assert_eq!((o.src, o.dst), (GW, ADDR));
    let op = opts(&o.dhcp);
    assert_eq!(codes(&op), [1, 3, 6, 26]);
    // A classic 300-byte BOOTP message: 64-byte vendor area.
    assert_eq!(o.dhcp.len(), 300);
    // Even if the request names DHCP options, none are sent.
    let o = one(&mut core, &msg(None, 0, &[53, 54, 51, 80, 3], &[]));
    assert_eq!(codes(&opts(&o.dhcp)), [3, 1, 6, 26]);
    assert_eq!(core.counters().replies(ReplyKind::Dhcp), 2);
}

#[test]
fn other_messages_are_ignored() {
    let mut core = Core::new(capture_config());
    for t in [2u8, 4, 6, 7, 8, 9, 18, 200] {
        assert!(ask(&mut core, &msg(Some(t), 0, UDHCPC_PRL, &[])).is_empty());
    }
    // A BOOTREPLY sent to us.
    let mut m = msg(Some(DISCOVER), 0, &[], &[]);
    m[0] = BOOTREPLY;
    assert!(ask(&mut core, &m).is_empty());
    assert_eq!(core.counters().dropped(DropReason::ServiceIgnored), 9);
    assert_eq!(core.counters().replies(ReplyKind::Dhcp), 0);
}

#[test]
fn switched_off_or_no_gateway() {
    let m = msg(Some(DISCOVER), 0, UDHCPC_PRL, &[]);
    let mut core = core_with(|c| c.features.dhcp = false);
    assert!(ask(&mut core, &m).is_empty());
    assert_eq!(core.counters().dropped(DropReason::ServiceIgnored), 1);
    let mut core = core_with(|c| c.ip4.as_mut().unwrap().gateway = None);
    assert!(ask(&mut core, &m).is_empty());
    assert_eq!(core.counters().dropped(DropReason::ServiceIgnored), 1);
    // Without our_addr, the gateway is the server.
    let mut core = core_with(|c| c.ip4.as_mut().unwrap().our_addr = None);
    let o = one(&mut core, &m);
    assert_eq!(o.src, GW);
    assert_eq!(get(&opts(&o.dhcp), OPT_SERVER_ID).unwrap(), GW.octets());
}

// --- header and addressing ------------------------------------------

#[test]
fn broadcast_flag() {
    let mut core = Core::new(capture_config());
    let o = one(&mut core, &msg(Some(DISCOVER), 0x8000, &[], &[]));
    assert_eq!(o.dst, Ipv4Addr::BROADCAST);
    // Ethernet still goes to the guest's MAC, as upstream.
    assert_eq!(o.eth_dst, CLIENT.0);
    let pkt = DhcpPacket::new_checked(&o.dhcp[..]).unwrap();
    assert!(DhcpRepr::parse(&pkt).unwrap().broadcast);
    let o = one(&mut core, &msg(Some(REQUEST), 0x0001, &[], &[]));
    assert_eq!(o.dst, ADDR);
    assert_eq!(&o.dhcp[10..12], &[0x00, 0x01]);
}

#[test]
fn header_fields() {
    let mut core = Core::new(capture_config());
    let mut m = msg(Some(REQUEST), 0x8000, &[], &[]);
    m[3] = 4; // hops
    m[8..10].copy_from_slice(&[0, 9]); // secs
    m[12..16].copy_from_slice(&[10, 77, 0, 2]); // ciaddr
    m[16..20].copy_from_slice(&[1, 1, 1, 1]); // yiaddr
    m[20..24].copy_from_slice(&[2, 2, 2, 2]); // siaddr
    m[24..28].copy_from_slice(&[10, 1, 0, 1]); // giaddr
    m[34..44].fill(0xaa); // chaddr padding
    m[44..236].fill(b'x'); // sname, file
    let o = one(&mut core, &m);
    let d = &o.dhcp;
    assert_eq!(&d[..4], &[BOOTREPLY, 1, 6, 0]);
    assert_eq!(&d[4..8], &XID);
    assert_eq!(&d[8..10], &[0, 0]);
    assert_eq!(&d[10..12], &[0x80, 0]);
    assert_eq!(&d[12..16], &[10, 77, 0, 2]);
    assert_eq!(&d[16..20], &ADDR.octets());
    assert_eq!(&d[20..24], &[0; 4]);
    assert_eq!(&d[24..28], &[10, 1, 0, 1]);
    assert_eq!(&d[28..44], &m[28..44]);
    assert!(d[44..236].iter().all(|&b| b == 0));
    assert_eq!(&d[236..240], &COOKIE);
}

// --- options --------------------------------------------------------

#[test]
fn option_order_follows_request_list() {
    let mut core = Core::new(capture_config());
    let o = one(&mut core, &msg(Some(DISCOVER), 0, &[54, 3, 1], &[]));
    assert_eq!(codes(&opts(&o.dhcp)), [53, 54, 3, 1, 6, 26, 51, 119]);
    // 53 listed: it takes its place in the list.
    let o = one(&mut core, &msg(Some(DISCOVER), 0, &[1, 53, 3], &[]));
    assert_eq!(codes(&opts(&o.dhcp)), [1, 53, 3, 6, 26, 51, 54, 119]);
    // Duplicates, unknown codes, pad and end in the list: each option once.
    let o = one(
        &mut core,
        &msg(Some(DISCOVER), 0, &[3, 3, 200, 0, 255, 1, 3], &[]),
    );
    assert_eq!(codes(&opts(&o.dhcp)), [53, 3, 1, 6, 26, 51, 54, 119]);
    // Two list instances are concatenated (RFC 3396).
    let o = one(
        &mut core,
        &msg(Some(DISCOVER), 0, &[26], &[(OPT_PRL, &[6, 1])]),
    );
    assert_eq!(codes(&opts(&o.dhcp)), [53, 26, 6, 1, 3, 51, 54, 119]);
    // No list at all: by code.
    let o = one(&mut core, &msg(Some(DISCOVER), 0, &[], &[]));
    assert_eq!(codes(&opts(&o.dhcp)), [53, 1, 3, 6, 26, 51, 54, 119]);
}

#[test]
fn padding_to_sixty_bytes() {
    let mut core = core_with(|c| {
        c.search.clear();
        c.mtu = None;
    });
    let o = one(&mut core, &msg(Some(DISCOVER), 0, &[], &[]));
    // 3 + 6 + 6 + 6 + 6 + 6 + 1 = 34 bytes of options, padded to 60.
    assert_eq!(o.dhcp.len(), OPTS_OFF + OPT_MIN);
    assert_eq!(o.dhcp[OPTS_OFF + 33], OPT_END);
    opts(&o.dhcp);
    // A long reply is not padded.
    let mut core = core_with(|c| {
        c.search = (0..6).map(|i| format!("domain{i}.example")).collect();
    });
    let o = one(&mut core, &msg(Some(DISCOVER), 0, &[], &[]));
    assert!(o.dhcp.len() > OPTS_OFF + OPT_MIN);
    assert_eq!(o.dhcp[o.dhcp.len() - 2..], [OPT_END, OPT_PAD]);
    opts(&o.dhcp);
}
