//! The fuzz target's logic, shared with `cargo test` (which replays the corpus).
//!
//! Input layout: byte 0 selects the configuration (families, services, MTU);
//! then frames follow, each as a big-endian u16 length and that many bytes, in
//! batches split where a length's top bit is set. Every frame the core emits
//! must re-parse with valid checksums, and the counters must add up.

use crate::check::validate;
use passt_core::{Config, Core, FrameBatch, FrameRef, Instant, Ip4Config, Ip6Config};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A configuration chosen by `sel`: every combination of IPv4/IPv6 and service
/// switches is reachable.
pub fn config(sel: u8) -> Config {
    let mut cfg = Config {
        seed: u64::from(sel),
        secret: [sel; 16],
        duid_time: 1,
        search: vec!["example.org".into(), "a.b.example.org".into()],
        ..Config::default()
    };
    if sel & 0x03 != 0x02 {
        let gw = (sel & 0x40 == 0).then_some(Ipv4Addr::new(10, 77, 0, 1));
        let mut ip4 = Ip4Config::new(Ipv4Addr::new(10, 77, 0, 2), 24, gw);
        let _ = ip4.dns.push(Ipv4Addr::new(10, 77, 0, 1));
        cfg.ip4 = Some(ip4);
    }
    if sel & 0x03 != 0x01 {
        let mut ip6 = Ip6Config::new(
            Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2),
            Some(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1)),
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
        );
        let _ = ip6.dns.push(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1));
        cfg.ip6 = Some(ip6);
    }
    let f = &mut cfg.features;
    f.dhcp = sel & 0x04 == 0;
    f.ndp = sel & 0x08 == 0;
    f.dhcpv6 = sel & 0x10 == 0;
    f.ra = sel & 0x20 == 0;
    if sel & 0x80 != 0 {
        cfg.mtu = None;
    }
    cfg.limits.out_queue_bytes = 64 << 10;
    cfg.limits.out_queue_frames = 64;
    cfg.limits.batch_frames = 256;
    cfg
}

/// Runs one fuzz input. Panics (the fuzzer's finding) if an emitted frame is
/// invalid or the counters do not add up.
pub fn tap_batch(data: &[u8]) {
    let Some((&sel, mut rest)) = data.split_first() else {
        return;
    };
    let mut core = Core::new(config(sel));
    let mut now = Instant::ZERO;
    let mut tx = vec![0u8; 65536 + 14];
    let mut total_frames = 0u64;
    while !rest.is_empty() {
        let mut buf = Vec::new();
        let mut refs = Vec::new();
        while let [hi, lo, tail @ ..] = rest {
            let last = hi & 0x80 != 0;
            let len = usize::from(u16::from_be_bytes([hi & 0x7f, *lo]));
            let take = len.min(tail.len());
            refs.push(FrameRef {
                offset: buf.len() as u32,
                len: take as u32,
            });
            buf.extend_from_slice(&tail[..take]);
            rest = &tail[take..];
            if last {
                break;
            }
        }
        if refs.is_empty() {
            break;
        }
        total_frames += refs.len() as u64;
        // Both families either way: with `sel & 3 == 3` (otherwise the same
        // configuration as 0) each frame starts with a virtio-net header, as
        // from pasta's tap with offloads.
        let batch = FrameBatch::new(&buf, &refs);
        let batch = if sel & 0x03 == 0x03 {
            batch.with_virtio_hdr(passt_core::VIRTIO_NET_HDR_V1_LEN)
        } else {
            batch
        };
        core.handle_tap_batch(now, &batch);
        while core.poll_action().is_some() {}
        while let Some(n) = core.poll_frame(&mut tx) {
            if let Err(e) = validate(&tx[..n]) {
                panic!(
                    "invalid frame emitted: {e}\n{}",
                    crate::check::describe(&tx[..n])
                );
            }
        }
        now = Instant::from_nanos(now.as_nanos() + 700_000_000_000);
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now);
        }
    }
    let c = core.counters();
    assert_eq!(c.frames_in, total_frames, "every frame counted");
}

/// Encodes frames as one batch in the input layout (for building corpora).
pub fn encode(sel: u8, frames: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![sel];
    for (i, f) in frames.iter().enumerate() {
        let len = f.len().min(0x7fff) as u16;
        let mut hi = (len >> 8) as u8;
        if i + 1 == frames.len() {
            hi |= 0x80;
        }
        out.push(hi);
        out.push(len as u8);
        out.extend_from_slice(&f[..usize::from(len)]);
    }
    out
}
