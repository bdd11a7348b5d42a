//! Replays the guest side of the reference captures through the core.
//!
//! Each guest frame is fed in capture order; what the core answers is checked
//! with an independent parser (valid checksums, consistent lengths), compared
//! with what upstream passt answered in the same capture where the capture is
//! from upstream 2025, and recorded as a snapshot under `snapshots/`.

use passt_core::{Config, Core, FrameBatch, FrameRef, Instant, Ip4Config, Ip6Config};
use passt_tests::check::{describe, validate};
use passt_tests::pcap::{captures_dir, read_frames};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The set-up the captures were taken with: host 10.77.0.2/24 and fd77::2/64,
/// gateway 10.77.0.1 and fd77::1; pasta's defaults (DNS and search list not
/// advertised unless asked for).
fn capture_config() -> Config {
    let gw4 = Ipv4Addr::new(10, 77, 0, 1);
    let mut ip4 = Ip4Config::new(Ipv4Addr::new(10, 77, 0, 2), 24, Some(gw4));
    ip4.dns.push(gw4).unwrap();
    let gw6: Ipv6Addr = "fd77::1".parse().unwrap();
    let mut ip6 = Ip6Config::new(
        "fd77::2".parse().unwrap(),
        Some(gw6),
        "fe80::f0d8:fdff:fe4c:e225".parse().unwrap(),
    );
    ip6.dns.push(gw6).unwrap();
    let mut cfg = Config {
        ip4: Some(ip4),
        ip6: Some(ip6),
        duid_time: 0x329b_7669,
        seed: 1,
        ..Config::default()
    };
    cfg.features.advertise_dns = false;
    cfg.features.advertise_search = false;
    cfg
}

/// Our replies and the reference's replies to one guest frame.
type ReplyPair = (Vec<Vec<u8>>, Vec<Vec<u8>>);

struct Replay {
    transcript: String,
    /// (our replies, the reference's replies) per guest frame.
    pairs: Vec<ReplyPair>,
}

fn replay(file: &str, cfg: Config) -> Replay {
    let frames = read_frames(&captures_dir().join(file));
    assert!(!frames.is_empty(), "{file}: empty capture");
    let guest_mac = frames[0][6..12].to_vec();
    let mut core = Core::new(cfg);
    let mut tx = vec![0u8; 65536 + 14];
    let mut transcript = String::new();
    let mut pairs: Vec<ReplyPair> = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        if f[6..12] != guest_mac[..] {
            if let Some(last) = pairs.last_mut() {
                last.1.push(f.clone());
            }
            continue;
        }
        let refs = [FrameRef {
            offset: 0,
            len: f.len() as u32,
        }];
        let now = Instant::from_millis(i as u64);
        core.handle_tap_batch(now, &FrameBatch::new(f, &refs));
        assert!(
            core.poll_action().is_none(),
            "{file}: link services need no sockets"
        );
        let mut ours = Vec::new();
        while let Some(n) = core.poll_frame(&mut tx) {
            let reply = tx[..n].to_vec();
            if let Err(e) = validate(&reply) {
                panic!(
                    "{file}: reply to frame {} invalid: {e}\n{}",
                    i + 1,
                    describe(&reply)
                );
            }
            ours.push(reply);
        }
        let _ = writeln!(
            transcript,
            "guest frame {}: {}",
            i + 1,
            describe(f).lines().next().unwrap_or("")
        );
        for r in &ours {
            let _ = write!(transcript, "reply:\n{}", describe(r));
        }
        pairs.push((ours, Vec::new()));
    }
    let _ = writeln!(transcript, "counters: {}", core.counters());
    Replay { transcript, pairs }
}

fn snapshot(name: &str, transcript: &str) {
    insta::with_settings!({ snapshot_path => "../snapshots", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(name, transcript);
    });
}

/// Offset of the UDP checksum in an IPv4 frame without options, if `f` is one.
fn udp4_checksum_offset(f: &[u8]) -> Option<usize> {
    (f.get(12..14) == Some(&[0x08, 0x00][..]) && f.get(14) == Some(&0x45) && f.get(23) == Some(&17))
        .then_some(14 + 20 + 6)
}

/// Our replies must be those of upstream 2025, byte for byte, with one
/// difference: upstream leaves the UDP checksum of its IPv4 DHCP replies at
/// zero ("no checksum"), we always fill it in (docs/differences.md).
fn assert_same_as_reference(file: &str, r: &Replay) {
    for (i, (ours, theirs)) in r.pairs.iter().enumerate() {
        let ours: Vec<String> = ours
            .iter()
            .zip(theirs.iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(f, t)| {
                let mut f = f.clone();
                if let (Some(o), Some(t)) = (udp4_checksum_offset(&f), t) {
                    if t.get(o..o + 2) == Some(&[0, 0][..]) {
                        f[o] = 0;
                        f[o + 1] = 0;
                    }
                }
                describe(&f)
            })
            .collect();
        let theirs: Vec<String> = theirs.iter().map(|f| describe(f)).collect();
        assert_eq!(ours, theirs, "{file}: replies to guest frame #{i} differ");
    }
}

#[test]
fn upstream_dhcp4() {
    let file = "pasta-upstream-dhcp4.ns.pcap";
    let r = replay(file, capture_config());
    assert_same_as_reference(file, &r);
    snapshot("upstream_dhcp4", &r.transcript);
}

#[test]
fn upstream_dhcpv6() {
    let file = "pasta-upstream-dhcpv6.ns.pcap";
    let r = replay(file, capture_config());
    assert_same_as_reference(file, &r);
    snapshot("upstream_dhcpv6", &r.transcript);
}

#[test]
fn upstream_slaac() {
    let file = "pasta-upstream-slaac.ns.pcap";
    let r = replay(file, capture_config());
    assert_same_as_reference(file, &r);
    snapshot("upstream_slaac", &r.transcript);
}

#[test]
fn debian_dhcp4_dns() {
    // Debian's 2023 pasta with --dhcp-dns: its MAC was the host's, so only
    // our replies are recorded, with DNS advertised.
    let mut cfg = capture_config();
    cfg.features.advertise_dns = true;
    let r = replay("pasta-debian-dhcp4_dns.ns.pcap", cfg);
    assert!(r.transcript.contains("reply:"), "no DHCP reply");
    snapshot("debian_dhcp4_dns", &r.transcript);
}

#[test]
fn slirp4netns_dhcp4_client() {
    // The same udhcpc requests as seen by slirp4netns: our answers to them.
    let r = replay("slirp4netns-dhcp4.ns.pcap", capture_config());
    assert!(r.transcript.contains("reply:"), "no DHCP reply");
    snapshot("slirp4netns_dhcp4", &r.transcript);
}
