use super::*;
use crate::frame::parse_tcp;

/// Frames with the checksum from prefix sums are the frames the
/// simulator's builder makes, at every offset and length.
#[test]
fn summed_checksums_match() {
    let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
    let b: SocketAddr = "[fd00::2]:2000".parse().unwrap();
    let c: SocketAddr = "10.0.0.2:2000".parse().unwrap();
    let m = TcpModel::listen(a, [1; 6], [2; 6], opts(3));
    for (rel, len) in [
        (1, 1),
        (2, 7),
        (65520, 3),
        (65521, 65535),
        (131_042, 2),
        (5, 0),
    ] {
        let p = m.payload(rel, len);
        for dst in [b, c] {
            let src = if dst.is_ipv4() {
                a
            } else {
                "[fd00::1]:1000".parse().unwrap()
            };
            let want = frame::tcp_frame(
                [1; 6],
                [2; 6],
                src,
                dst,
                9,
                8,
                flags::ACK,
                7,
                &[1, 1, 1, 1],
                &p,
            );
            let got = tcp_frame_summed(
                ([1; 6], [2; 6]),
                (src, dst),
                9,
                8,
                flags::ACK,
                7,
                &[1, 1, 1, 1],
                &p,
                m.payload_sum(rel, len),
            );
            assert_eq!(got, want, "rel {rel} len {len}");
        }
    }
}
use passt_core::Rng as SimRng;

fn opts(seed: u64) -> TcpOpts {
    TcpOpts {
        mss: 1000,
        wscale: Some(7),
        sack: true,
        rcvbuf: 200_000,
        delay: 10_000,
        seed,
    }
}

/// Two model endpoints over a channel that loses and delays frames:
/// both directions arrive whole, both FINs go through, and the losses
/// show up as retransmissions.
#[test]
fn two_endpoints_converge_over_a_lossy_channel() {
    for seed in 0..12 {
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:2000".parse().unwrap();
        let mut rng = SimRng::new(seed);
        let mut x = TcpModel::connect(0, a, b, [1; 6], [2; 6], opts(1));
        let mut y = TcpModel::listen(b, [2; 6], [1; 6], opts(2));
        let mut wire: Vec<(u64, bool, Vec<u8>)> = Vec::new();
        let mut now = 0;
        let (mut wx, mut wy) = (false, false);
        for _ in 0..200_000 {
            let mut out = Vec::new();
            x.take_frames(now, &mut out);
            for f in out.drain(..) {
                if !rng.chance(0.05) {
                    wire.push((now + 1_000_000 + rng.below(500_000), true, f));
                }
            }
            y.take_frames(now, &mut out);
            for f in out.drain(..) {
                if !rng.chance(0.05) {
                    wire.push((now + 1_000_000 + rng.below(500_000), false, f));
                }
            }
            if x.state == TcpState::Established && !wx {
                x.write(now, 300_000);
                x.close(now);
                wx = true;
            }
            if y.state == TcpState::Established && !wy && y.received() >= 1000 {
                y.write(now, 50_000);
                wy = true;
            }
            if wy && y.peer_fin() && y.received() == 300_000 {
                y.close(now);
            }
            if x.done() && y.done() && wire.is_empty() {
                break;
            }
            let next = wire
                .iter()
                .map(|w| w.0)
                .chain(x.deadline())
                .chain(y.deadline())
                .min()
                .expect("something to do");
            now = next;
            let (due, rest): (Vec<_>, Vec<_>) = wire.into_iter().partition(|w| w.0 <= now);
            wire = rest;
            for (_, to_y, f) in due {
                let t = parse_tcp(&f).unwrap();
                if to_y {
                    assert!(y.claims(&t) || y.remote.is_some());
                    y.on_segment(now, &t);
                } else {
                    x.on_segment(now, &t);
                }
            }
            x.on_timer(now);
            y.on_timer(now);
        }
        assert!(x.done() && y.done(), "seed {seed}: {x:?} {y:?}");
        assert_eq!(
            (y.received(), x.received()),
            (300_000, 50_000),
            "seed {seed}"
        );
        assert!(x.stats.retransmits > 0, "seed {seed}: losses retransmitted");
    }
}

/// A closed window is probed, with back-off, until it opens.
#[test]
fn closed_window_is_probed() {
    let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:2000".parse().unwrap();
    let mut x = TcpModel::connect(0, a, b, [1; 6], [2; 6], opts(1));
    let s = TcpSeg {
        src: b,
        dst: a,
        seq: 5000,
        ack: x.iss.wrapping_add(1),
        flags: flags::SYN | flags::ACK,
        win: 0,
        opts: "mss 1000".into(),
        payload: Vec::new(),
    };
    x.on_segment(10, &s);
    assert_eq!(x.state, TcpState::Established);
    x.write(10, 5000);
    let mut out = Vec::new();
    x.take_frames(u64::MAX, &mut out);
    assert_eq!(
        out.len(),
        2,
        "SYN and the ACK of the SYN-ACK: the window is closed"
    );
    let p1 = x.deadline().unwrap();
    x.on_timer(p1);
    x.take_frames(u64::MAX, &mut out);
    assert_eq!(x.stats.probes, 1);
    let p2 = x.deadline().unwrap();
    x.on_timer(p2);
    assert_eq!(x.stats.probes, 2);
    assert!(p2 - p1 > RTO_INIT, "backed off: {} then {}", p1, p2);
}

/// An ACK older than what was acknowledged, arriving late, is ignored, window
/// included (RFC 9293's `SND.WL2` check, Linux's old-ACK path): it does not
/// reopen a window a newer ACK closed.
#[test]
fn old_ack_does_not_reopen_the_window() {
    let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:2000".parse().unwrap();
    let mut x = TcpModel::connect(0, a, b, [1; 6], [2; 6], opts(1));
    let from_b = |ack: u32, fl, win| TcpSeg {
        src: b,
        dst: a,
        seq: 5001,
        ack,
        flags: fl,
        win,
        opts: String::new(),
        payload: Vec::new(),
    };
    let isn = x.iss.wrapping_add(1);
    let syn_ack = TcpSeg {
        seq: 5000,
        opts: "mss 1000".into(),
        ..from_b(isn, flags::SYN | flags::ACK, 4000)
    };
    x.on_segment(10, &syn_ack);
    x.write(10, 20_000);
    let mut out = Vec::new();
    x.take_frames(u64::MAX, &mut out);
    x.on_segment(20, &from_b(isn + 4000, flags::ACK, 0));
    out.clear();
    x.take_frames(u64::MAX, &mut out);
    assert!(out.is_empty(), "closed: {} frames", out.len());
    x.on_segment(21, &from_b(isn + 1000, flags::ACK, 65535));
    assert_eq!(x.peer_wnd, 0, "an old ACK moved the window");
    x.take_frames(u64::MAX, &mut out);
    assert!(out.is_empty(), "sent into a window an old ACK offered");
}
