//! Replays of the reference captures: the same requests get the same
//! replies.

use super::*;

// --- replay of the reference captures --------------------------------

/// The frames of a capture (classic pcap, Ethernet).
fn pcap_frames(name: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/../tests/captures/{name}", env!("CARGO_MANIFEST_DIR"));
    let d = std::fs::read(&path).unwrap();
    let magic = u32::from_le_bytes(d[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        _ => panic!("{path}: not a pcap file"),
    };
    let rd = |o: usize| {
        let b: [u8; 4] = d[o..o + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    assert_eq!(rd(20), 1, "link type Ethernet");
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= d.len() {
        let incl = rd(off + 8) as usize;
        out.push(d[off + 16..off + 16 + incl].to_vec());
        off += 16 + incl;
    }
    out
}

/// Checks our reply to the captured request `req`.
fn check_replay(ours: &[u8], req: &[u8]) -> Out {
    let d = &req[14 + 28..];
    let mut chaddr = [0u8; 6];
    chaddr.copy_from_slice(&d[28..34]);
    check_for(ours, d[4..8].try_into().unwrap(), Mac(chaddr))
}

/// Offset of the UDP checksum in an IPv4 frame without IP options.
const UDP_CSUM: usize = 14 + 20 + 6;

#[test]
fn replay_upstream_capture() {
    let frames = pcap_frames("pasta-upstream-dhcp4.ns.pcap");
    assert_eq!(frames.len(), 4);
    // pasta's defaults: neither resolvers nor search list advertised.
    let mut core = core_with(|c| {
        c.features.advertise_dns = false;
        c.features.advertise_search = false;
    });
    for (req, theirs) in [(&frames[0], &frames[1]), (&frames[2], &frames[3])] {
        let ours = exchange(&mut core, Instant::ZERO, &[req]);
        assert_eq!(ours.len(), 1);
        let ours = &ours[0];
        check_replay(ours, req);
        // Byte for byte, except that upstream leaves the UDP checksum out.
        assert_eq!(ours.len(), theirs.len());
        assert_eq!(&ours[..UDP_CSUM], &theirs[..UDP_CSUM]);
        assert_eq!(&theirs[UDP_CSUM..UDP_CSUM + 2], &[0, 0]);
        assert_eq!(&ours[UDP_CSUM + 2..], &theirs[UDP_CSUM + 2..]);
    }
    assert_eq!(core.counters().replies(ReplyKind::Dhcp), 2);
}

#[test]
fn replay_debian_dns_capture() {
    // The 2023 version orders options by code only; compare the contents.
    let frames = pcap_frames("pasta-debian-dhcp4_dns.ns.pcap");
    let dns = Ipv4Addr::new(10, 255, 255, 53);
    let mut core = core_with(|c| {
        c.features.advertise_search = false;
        let ip4 = c.ip4.as_mut().unwrap();
        ip4.dns.clear();
        ip4.dns.push(dns).unwrap();
    });
    for (req, theirs) in [(&frames[0], &frames[1]), (&frames[2], &frames[3])] {
        let ours = exchange(&mut core, Instant::ZERO, &[req]);
        assert_eq!(ours.len(), 1);
        let ours = &ours[0];
        check_replay(ours, req);
        let (o, t) = (&ours[14 + 28..], &theirs[14 + 28..]);
        assert_eq!(o[..OPTS_OFF], t[..OPTS_OFF]);
        let mut oo = opts(o);
        let mut to = opts(t);
        oo.sort();
        to.sort();
        assert_eq!(oo, to);
        assert_eq!(get(&oo, OPT_DNS).unwrap(), dns.octets());
        assert_eq!(o.len(), t.len());
    }
}
