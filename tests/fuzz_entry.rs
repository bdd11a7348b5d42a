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

/// The `sim_flows` target: the input is a program of guest and host events
/// ([`passt_driver_sim::fuzz`]) run on the simulator with every invariant
/// checked (frames valid, byte streams whole and in order, no ACK for data
/// the host socket did not take, closes mapped, model endpoints converged,
/// resources released). Panics with the violations, the program and the end
/// of the timeline.
pub fn sim_flows(data: &[u8]) {
    if let Err(e) = passt_driver_sim::fuzz::run(data) {
        panic!("{e}");
    }
}

/// The `qemu_stream` target: a qemu stream (length-prefixed frames, bad
/// lengths, raw bytes) cut into reads of the input's choosing, reassembled
/// by [`passt_driver_epoll::framing`] in the qemu link's call order into
/// batches of a few frames. The frames handed over must be exactly those a
/// plain sequential decoder finds, each as soon as the read that completes
/// it is done, and a bad length must reset the stream right after the
/// frames before it.
///
/// Layout: byte 0 picks the batch size (1 to 16 frames) and buffer size;
/// then records, each a tag byte: `..00` a frame of 14 + (next u16) bytes;
/// `..01` a length prefix of the next 4 bytes (good or bad), no payload;
/// `..10` the next byte's count of raw bytes; `..11` a read of up to the
/// next u16 bytes (0: all) of what was written so far.
///
/// One function on purpose: the reads, the reassembler's state and the
/// reference decoder share the input's cursor and the stream written so
/// far (closures over them), and the fuzzer's findings are easiest to read
/// against one sequence of steps.
pub fn qemu_stream(data: &[u8]) {
    use passt_driver_epoll::framing::{RxBuf, StreamRx, MAX_FRAME_LEN, MIN_FRAME};
    let Some((&sel, mut rest)) = data.split_first() else {
        return;
    };
    let frames_per_batch = 1 + usize::from(sel & 15);
    let bytes = [64, 4096, 70000, 1 << 20][usize::from(sel >> 4) & 3];
    let mut rx = RxBuf::with_frames(bytes, frames_per_batch);
    let max_rounds = rx.buf.len() / 14;
    let mut st = StreamRx::default();
    let mut stream: Vec<u8> = Vec::new();
    let mut read_pos = 0usize;
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut reset = false;
    let mut n_frames = 0u32;
    let take = |rest: &mut &[u8], n: usize| -> Vec<u8> {
        let k = n.min(rest.len());
        let (a, b) = rest.split_at(k);
        *rest = b;
        let mut v = a.to_vec();
        v.resize(n, 0);
        v
    };
    // One read of up to `cap` bytes (the socket's queue is `stream` from
    // `read_pos`), then the batches it completes, as the event loop does.
    let read = |cap: usize,
                stream: &[u8],
                read_pos: &mut usize,
                rx: &mut RxBuf,
                st: &mut StreamRx,
                got: &mut Vec<Vec<u8>>|
     -> bool {
        st.begin(rx);
        let space = rx.buf.len() - rx.fill;
        assert!(
            space > 0,
            "no room in the receive buffer: the read would see EOF"
        );
        let n = (stream.len() - *read_pos).min(space).min(cap);
        rx.buf[rx.fill..rx.fill + n].copy_from_slice(&stream[*read_pos..*read_pos + n]);
        rx.fill += n;
        *read_pos += n;
        st.reparse(rx);
        let mut rounds = 0;
        while !rx.refs.is_empty() {
            assert!(rx.refs.len() <= frames_per_batch, "batch over capacity");
            for r in &rx.refs {
                let f = &rx.buf[r.offset as usize..][..r.len as usize];
                got.push(f.to_vec());
            }
            rx.refs.clear();
            st.keep_partial(rx);
            rounds += 1;
            if st.is_broken() || rounds > max_rounds {
                break;
            }
            st.reparse(rx);
        }
        let broken = st.take_broken();
        st.keep_partial(rx);
        broken
    };
    while !rest.is_empty() && !reset {
        let tag = take(&mut rest, 1)[0];
        match tag & 3 {
            0 => {
                let h = take(&mut rest, 2);
                let len =
                    (MIN_FRAME + usize::from(u16::from_be_bytes([h[0], h[1]]))).min(MAX_FRAME_LEN);
                stream.extend_from_slice(&(len as u32).to_be_bytes());
                let start = stream.len();
                stream.resize(start + len, 0);
                for (i, b) in stream[start..].iter_mut().enumerate() {
                    *b = (i as u32 ^ n_frames) as u8;
                }
                n_frames += 1;
            }
            1 => stream.extend_from_slice(&take(&mut rest, 4)),
            2 => {
                let n = usize::from(take(&mut rest, 1)[0]);
                stream.extend_from_slice(&take(&mut rest, n));
            }
            _ => {
                let h = take(&mut rest, 2);
                let cap = match usize::from(u16::from_be_bytes([h[0], h[1]])) {
                    0 => usize::MAX,
                    c => c,
                };
                while read_pos < stream.len() && !reset {
                    reset = read(cap, &stream, &mut read_pos, &mut rx, &mut st, &mut got);
                    if cap != usize::MAX {
                        break;
                    }
                }
                if !reset {
                    check_prompt(&stream[..read_pos], &got);
                }
            }
        }
    }
    while read_pos < stream.len() && !reset {
        reset = read(
            usize::MAX,
            &stream,
            &mut read_pos,
            &mut rx,
            &mut st,
            &mut got,
        );
    }
    // The reference: a plain sequential decoder over what was read.
    let (want, bad) = decode(&stream[..read_pos]);
    if reset {
        assert!(bad, "a reset without a bad length");
        assert_eq!(got.len(), want.len(), "frames before the bad length");
    } else {
        assert!(!bad, "a bad length was read and the stream not reset");
    }
    assert!(got == want, "frames differ from the sequential decoder's");
}

/// The frames of `s` in order, and whether a bad length ends them.
fn decode(s: &[u8]) -> (Vec<Vec<u8>>, bool) {
    use passt_driver_epoll::framing::{MAX_FRAME_LEN, MIN_FRAME};
    let mut out = Vec::new();
    let mut off = 0;
    while let Some(h) = s.get(off..off + 4) {
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if !(MIN_FRAME..=MAX_FRAME_LEN).contains(&len) {
            return (out, true);
        }
        match s.get(off + 4..off + 4 + len) {
            Some(f) => out.push(f.to_vec()),
            None => break,
        }
        off += 4 + len;
    }
    (out, false)
}

/// After a read with no reset, every frame complete in what was read has
/// been handed over (none waits in the buffer, where no readiness would
/// report it).
fn check_prompt(read: &[u8], got: &[Vec<u8>]) {
    let (want, bad) = decode(read);
    assert!(!bad, "a bad length was read and the stream not reset");
    assert_eq!(got.len(), want.len(), "complete frames left in the buffer");
}
