use super::*;
use crate::frame::{tcp_frame, tcp_options, GUEST_MAC};

const HOST_MAC: MacAddr = [0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55];

/// A request-response exchange with a pause: steps, dependencies and
/// think times come out as written.
#[test]
fn request_response_steps() {
    let g: SocketAddr = "10.77.0.2:40000".parse().unwrap();
    let r: SocketAddr = "10.77.0.1:80".parse().unwrap();
    let (gi, hi) = (1000u32, 5000u32);
    let seg = |t: u64, from_g: bool, seq: u32, ack: u32, fl, len: usize, o: &str| {
        let opts = tcp_options(o).unwrap();
        let f = if from_g {
            tcp_frame(
                GUEST_MAC,
                HOST_MAC,
                g,
                r,
                gi + seq,
                hi + ack,
                fl,
                512,
                &opts,
                &vec![0; len],
            )
        } else {
            tcp_frame(
                HOST_MAC,
                GUEST_MAC,
                r,
                g,
                hi + seq,
                gi + ack,
                fl,
                512,
                &opts,
                &vec![0; len],
            )
        };
        (Duration::from_millis(t), f)
    };
    let a = flags::ACK;
    let all = vec![
        seg(0, true, 0, 0, flags::SYN, 0, "mss 1460,sackOK,nop,wscale 7"),
        seg(1, false, 0, 1, flags::SYN | a, 0, "mss 1460,nop,wscale 8"),
        seg(2, true, 1, 1, a, 100, ""), // the request, 1 ms after the handshake
        seg(3, false, 1, 101, a, 0, ""),
        seg(5, false, 1, 101, a, 300, ""), // the answer, 2 ms after the request
        seg(5, false, 301, 101, a, 200, ""),
        seg(6, true, 101, 501, a, 0, ""),
        seg(56, true, 101, 501, a, 50, ""), // 51 ms after the answer
        seg(57, false, 501, 151, a, 0, ""),
        seg(58, true, 151, 501, a | flags::FIN, 0, ""),
        seg(59, false, 501, 152, a | flags::FIN, 0, ""),
        seg(60, true, 152, 502, a, 0, ""),
    ];
    let cap = Capture::from_frames("t", &all, Some(GUEST_MAC), &[]).unwrap();
    let d = derive(&cap, 200_000_000);
    assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    let c = &d.plan.tcp[0];
    assert_eq!(
        (c.opener, c.mss, c.wscale, c.sack),
        (Side::Guest, 1460, Some(7), true)
    );
    let st: Vec<(Side, Act, u64, bool, u64)> = c
        .steps
        .iter()
        .map(|s| (s.side, s.act, s.after, s.after_fin, s.think_ns / 1_000_000))
        .collect();
    assert_eq!(
        st,
        vec![
            (Side::Guest, Act::Send(100), 0, false, 1),
            (Side::Host, Act::Send(500), 100, false, 2),
            (Side::Guest, Act::Send(50), 500, false, 51),
            // From the ACK of its last bytes, not from sending them.
            (Side::Guest, Act::Close, 500, false, 1),
            (Side::Host, Act::Close, 150, true, 0),
        ]
    );
    let o = &d.original[&1];
    assert_eq!(o.bytes, [150, 500]);
    assert_eq!(o.end, End::Closed);
    assert!(o.stalls.is_empty());
    assert_eq!(o.retransmits, [0, 0]);
    assert_eq!(d.mtu, None);
}

/// Data sent again after a long silence: a retransmission and a stall in
/// the original; only acknowledged bytes are replayed, and the side
/// that never closed closes in the replay.
#[test]
fn stalls_retransmissions_and_undelivered_tails() {
    let g: SocketAddr = "10.77.0.2:40000".parse().unwrap();
    let r: SocketAddr = "10.77.0.1:5201".parse().unwrap();
    let ms = |x: u64| Duration::from_micros(x * 1000);
    let seg = |t, from_g: bool, seq: u32, ack: u32, fl, len: usize| {
        let (a, b, sm, dm, s0, a0) = if from_g {
            (g, r, GUEST_MAC, HOST_MAC, 0u32, 0u32)
        } else {
            (r, g, HOST_MAC, GUEST_MAC, 0, 0)
        };
        (
            ms(t),
            tcp_frame(sm, dm, a, b, s0 + seq, a0 + ack, fl, 64, &[], &vec![0; len]),
        )
    };
    let all = vec![
        seg(0, true, 0, 0, flags::SYN, 0),
        seg(0, false, 0, 1, flags::SYN | flags::ACK, 0),
        seg(0, true, 1, 1, flags::ACK, 1000),
        seg(0, true, 1001, 1, flags::ACK, 1000),
        seg(1, false, 1, 1001, flags::ACK, 0),
        seg(300, true, 1001, 1, flags::ACK, 1000), // retransmission after 299 ms
        seg(301, false, 1, 2001, flags::ACK, 0),
        seg(302, true, 2001, 1, flags::ACK, 1000), // never acknowledged
        seg(303, false, 1, 2001, flags::RST, 0),
    ];
    let cap = Capture::from_frames("t", &all, Some(GUEST_MAC), &[]).unwrap();
    let d = derive(&cap, 200_000_000);
    let o = &d.original[&1];
    assert_eq!(o.bytes, [2000, 0]);
    assert_eq!(o.undelivered, [1000, 0]);
    assert_eq!(o.retransmits, [1, 0]);
    assert_eq!(o.end, End::Reset(Side::Host));
    assert_eq!(o.stalls.len(), 1, "{:?}", o.stalls);
    assert_eq!(o.stalls[0].1 / 1_000_000, 300);
    let c = &d.plan.tcp[0];
    assert_eq!(c.bytes(Side::Guest), 2000);
    let closes: Vec<&Step> = c.steps.iter().filter(|s| s.act == Act::Close).collect();
    assert_eq!(closes.len(), 2);
    assert_eq!((closes[0].side, closes[0].after_fin), (Side::Guest, false));
    assert_eq!(
        (closes[1].side, closes[1].after, closes[1].after_fin),
        (Side::Host, 2000, true)
    );
    assert!(d.scenario_text("x.pcap").contains("`sim replay start`"));
}
