//! Timestamps (RFC 7323): taken up when the guest's SYN offers them, on
//! every segment after, echoing the guest's TSval by the rule of §4.3; the
//! option's 12 bytes come out of each segment's payload.

use super::*;

fn ts_of(o: &Out) -> Option<(u32, u32)> {
    o.opts.iter().find_map(|o| match o {
        TcpOptionElement::Timestamp(v, e) => Some((*v, *e)),
        _ => None,
    })
}

/// A connection whose guest offered timestamps (TSval 1000 on its SYN,
/// 1001 on the ACK that completes the handshake): returns it and our
/// TSval on the SYN-ACK.
fn connect_ts() -> (Conn, u32) {
    let mut h = H::new(capture_config());
    h.k.sndbuf = 1 << 20;
    let g = G::new(v4(GUEST4), v4(PEER4), 40000, 80);
    let opts = vec![
        TcpOptionElement::MaximumSegmentSize(1460),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::Timestamp(1000, 0),
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(7),
    ];
    h.guest(&[g.clone().seq(GISN).syn().opts(opts)]);
    let sock = h.only_sock();
    h.event(sock, SockEvent::Connected(Ok(())));
    let f = h.take_frames();
    assert_eq!(f.len(), 1);
    assert!(f[0].syn && f[0].ackf);
    let (val, ecr) = ts_of(&f[0]).expect("timestamps on the SYN-ACK");
    assert_eq!(ecr, 1000, "the SYN's TSval echoed");
    assert!(f[0].mss.is_some());
    let our = f[0].seq.wrapping_add(1);
    let their = GISN.wrapping_add(1);
    let ack = g.clone().seq(their).ack(our);
    h.guest(&[ack.opts(vec![
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Timestamp(1001, val),
    ])]);
    assert!(h.take_frames().is_empty());
    h.take_actions();
    let c = Conn {
        h,
        sock,
        g,
        our,
        their,
    };
    (c, val)
}

fn with_ts(g: G, val: u32, ecr: u32) -> G {
    g.opts(vec![
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Timestamp(val, ecr),
    ])
}

#[test]
fn timestamps_echo_the_guest_and_shorten_segments() {
    let (mut c, val) = connect_ts();
    // The guest's data: the ACK echoes its TSval, ours moves with the clock.
    c.h.now = c.h.now.saturating_add(Duration::from_millis(25));
    let seg = with_ts(c.seg(c.their).data(b"hello"), 2000, val);
    c.h.guest(&[seg]);
    let f = c.h.frames_after(50);
    assert_eq!(f.len(), 1);
    let (v, e) = ts_of(&f[0]).expect("timestamps on the ACK");
    assert_eq!(e, 2000);
    // Sent 25 ms after the SYN-ACK, plus the ACK's delay.
    let ms = v.wrapping_sub(val);
    assert!((25..=75).contains(&ms), "TSval counts milliseconds: {ms}");
    c.their = c.their.wrapping_add(5);

    // An older TSval does not replace the one to echo, nor does one on a
    // segment past the last byte acknowledged.
    let old = with_ts(c.seg(c.their).data(b"x"), 1999, v);
    c.h.guest(&[old]);
    let f = c.h.frames_after(50);
    assert_eq!(ts_of(&f[0]).map(|t| t.1), Some(2000));
    c.their = c.their.wrapping_add(1);

    // Data to the guest: every segment carries the option, and its payload
    // makes room for it within the guest's MSS (1460).
    c.host_sends(vec![7u8; 4000]);
    let f = c.h.take_frames();
    assert!(f.len() >= 3, "{}", f.len());
    for o in &f {
        assert!(o.payload.len() <= 1460 - 12, "{}", o.payload.len());
        assert_eq!(ts_of(o).map(|t| t.1), Some(2000));
    }
    assert_eq!(f[0].payload.len(), 1448);
    let total: usize = f.iter().map(|o| o.payload.len()).sum();
    assert_eq!(total, 4000);
}

#[test]
fn no_timestamps_unless_the_guest_offers_them() {
    let mut c = connect4();
    c.host_sends(vec![7u8; 3000]);
    let f = c.h.take_frames();
    assert!(f.iter().all(|o| ts_of(o).is_none()));
    assert_eq!(f[0].payload.len(), 1460);
}

/// Connections from the host: our SYN offers timestamps, and the guest's
/// SYN-ACK decides whether the connection keeps them.
#[test]
fn inbound_syn_offers_timestamps_and_the_guest_decides() {
    for guest_ts in [true, false] {
        let peer = SocketAddr::new("192.0.2.9".parse().unwrap(), 5555);
        let (mut h, sock, syn) = inbound(peer);
        let (val, ecr) = ts_of(&syn).expect("timestamps offered");
        assert_eq!(ecr, 0);
        let g = G::new(syn.dst, syn.src, 80, 5555);
        let mut opts = vec![
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::WindowScale(7),
        ];
        if guest_ts {
            opts.push(TcpOptionElement::Timestamp(4242, val));
        }
        let sa = g.clone().seq(777).ack(syn.seq.wrapping_add(1)).syn();
        h.guest(&[sa.opts(opts)]);
        let f = h.take_frames();
        assert_eq!(f.len(), 1, "the handshake's ACK");
        assert_eq!(ts_of(&f[0]).map(|t| t.1), guest_ts.then_some(4242));
        h.sock(sock).rx = vec![1u8; 3000];
        h.event(sock, SockEvent::Readable);
        let f = h.take_frames();
        assert_eq!(f.iter().map(|o| o.payload.len()).sum::<usize>(), 3000);
        let first = if guest_ts { 1448 } else { 1460 };
        assert_eq!(f[0].payload.len(), first);
        assert!(f.iter().all(|o| ts_of(o).is_some() == guest_ts));
    }
}
