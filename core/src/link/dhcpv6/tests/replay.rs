//! Replays of the reference captures: the same requests get the same
//! replies.

use super::*;

// --- replay of the reference capture ------------------------------------

/// The frames of a classic little-endian pcap file.
fn pcap_frames(b: &[u8]) -> Vec<Vec<u8>> {
    assert_eq!(&b[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "pcap magic");
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let incl = u32::from_le_bytes(b[off + 8..off + 12].try_into().unwrap()) as usize;
        out.push(b[off + 16..off + 16 + incl].to_vec());
        off += 16 + incl;
    }
    assert_eq!(off, b.len(), "trailing bytes in the capture");
    out
}

/// UDP ports of an IPv6 frame without extension headers.
fn udp6_ports(f: &[u8]) -> Option<(u16, u16)> {
    (be16(f, 12)? == 0x86dd && *f.get(20)? == 17).then_some((be16(f, 54)?, be16(f, 56)?))
}

fn capture() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/captures/pasta-upstream-dhcpv6.ns.pcap"
    );
    let frames = pcap_frames(&std::fs::read(path).unwrap());
    let requests: Vec<_> = frames
        .iter()
        .filter(|f| udp6_ports(f).is_some_and(|p| p.1 == 547))
        .cloned()
        .collect();
    let replies: Vec<_> = frames
        .iter()
        .filter(|f| udp6_ports(f).is_some_and(|p| p.0 == 547))
        .cloned()
        .collect();
    assert_eq!(requests.len(), 2);
    assert_eq!(replies.len(), 2);
    (requests, replies)
}

/// Upstream's server DUID time in the capture.
const CAPTURE_DUID_TIME: u32 = 0x329b_7669;

fn replay(cfg: Config, requests: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut core = Core::new(cfg);
    let mut ours = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let out = exchange(&mut core, Instant::from_millis(1000 * i as u64), &[r]);
        let mut dhcp: Vec<_> = out
            .into_iter()
            .filter(|f| udp6_ports(f).is_some_and(|p| p.0 == 547))
            .collect();
        assert_eq!(dhcp.len(), 1, "one reply per request");
        ours.push(dhcp.remove(0));
    }
    assert_eq!(core.counters().dropped(DropReason::ServiceMalformed), 0);
    ours
}

/// With DNS and search advertising off (pasta's default, as in the
/// capture), replies equal upstream's byte for byte: addresses, flow
/// label, checksum, option order and every field.
#[test]
fn capture_replay_matches_upstream_exactly() {
    let (requests, replies) = capture();
    let mut cfg = capture_config();
    cfg.duid_time = CAPTURE_DUID_TIME;
    cfg.features.advertise_dns = false;
    cfg.features.advertise_search = false;
    let ours = replay(cfg, &requests);
    for (o, u) in ours.iter().zip(&replies) {
        let (so, su) = (reparse(o), reparse(u));
        let (mo, mu) = (
            Message::parse(&so.payload).unwrap(),
            Message::parse(&su.payload).unwrap(),
        );
        assert_eq!(mo.msg_type, mu.msg_type);
        assert_eq!(mo.xid, mu.xid);
        assert_eq!(codes(&mo), codes(&mu));
        assert_eq!(mo.server_id, mu.server_id);
        assert_eq!(mo.client_id, mu.client_id);
        assert_eq!(lease(&mo), lease(&mu));
        assert_eq!(
            (so.eth_dst, so.src, so.dst, so.flow_label),
            (su.eth_dst, su.src, su.dst, su.flow_label)
        );
        assert_eq!(o, u, "whole frame");
    }
}

/// With advertising on, the replies carry upstream's options first, then
/// the resolvers and the search list.
#[test]
fn capture_replay_with_dns_and_search() {
    let (requests, replies) = capture();
    let mut cfg = capture_config();
    cfg.duid_time = CAPTURE_DUID_TIME;
    let ours = replay(cfg, &requests);
    for (o, u) in ours.iter().zip(&replies) {
        let (po, pu) = (reparse(o).payload, reparse(u).payload);
        assert_eq!(&po[..pu.len()], &pu[..]);
        let m = Message::parse(&po).unwrap();
        let tail: Vec<_> = m.options().map(|o| o.code).skip(3).collect();
        assert_eq!(tail, [OPT_DNS_SERVERS, OPT_DOMAIN_LIST]);
        assert_eq!(
            decode_names(m.option(OPT_DOMAIN_LIST).unwrap()),
            ["example.org", "test.example.org"]
        );
    }
}
