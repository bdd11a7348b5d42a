use super::pipe::queued_cost;
use super::*;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Level-triggered interest in reading.
fn readable() -> Interest {
    Interest {
        readable: true,
        ..Default::default()
    }
}

/// An application socket listening on 0.0.0.0:8080 with a backlog of 4.
fn app_listener(k: &mut Kernel) -> i32 {
    let lfd = k.app_socket(true, Family::V4);
    k.app_bind(lfd, sa("0.0.0.0:8080")).unwrap();
    k.app_listen(lfd, 4).unwrap();
    lfd
}

/// Peers on port `port` (any address) behave as `model`.
fn port_rule(port: u16, model: PeerModel) -> PeerRule {
    PeerRule {
        addr: None,
        port: Some(port),
        spec: PeerSpec::new(model),
    }
}

/// A kernel whose port 80 peers behave as `model`.
pub(crate) fn kernel_with(model: PeerModel) -> Kernel {
    let mut cfg = KernelConfig::default();
    cfg.peers.push(port_rule(80, model));
    Kernel::new(cfg)
}

fn connected(k: &mut Kernel, id: u32, port: u16) -> SockId {
    connected_to(k, id, SocketAddr::new([192, 0, 2, 1].into(), port))
}

/// The core's TCP socket `id`, connected to `to` at once.
fn connected_to(k: &mut Kernel, id: u32, to: SocketAddr) -> SockId {
    let s = SockId(id);
    k.open(s, SockKind::TcpStream, Family::V4, Netns::Host)
        .unwrap();
    k.connect(s, to, 0).unwrap();
    let ev = k.advance(0);
    assert_eq!(ev, vec![(s, SockEvent::Connected(Ok(())))]);
    s
}

#[test]
fn partial_writes_eagain_and_tcp_info() {
    let mut k = kernel_with(PeerModel::SlowReader(1000));
    k.cfg.rcvbuf = 4096;
    let s = connected(&mut k, 1, 80);
    // The peer's socket was made before the rcvbuf change: set it now.
    let big = vec![7u8; 100_000];
    let mut n = k.send(s, &big).unwrap();
    assert!(n > 0 && n < big.len(), "partial write: {n}");
    while let Ok(m) = k.send(s, &big) {
        n += m;
    }
    // A write is taken a buffer (at most half the send buffer) at a time
    // while the accounting has room for its start: one overshoot.
    assert_eq!(
        n,
        4096 + 16384 + 4096,
        "receive buffer, send buffer, one overshoot"
    );
    assert_eq!(k.send(s, &big), Err(Errno::EAGAIN));
    let info = k.tcp_info(s).unwrap();
    assert_eq!(info.sndbuf, 16384);
    assert_eq!(info.bytes_acked, 4096, "the peer's receive buffer");
    assert_eq!(info.queued as usize, queued_cost(n - 4096));
    assert!(!info.space().writable());
    // The slow reader drains 1000 bytes per ms.
    k.run_peers(0);
    let before = k.tcp_info(s).unwrap();
    for ms in 1..=50 {
        k.advance(ms * 1_000_000);
    }
    let after = k.tcp_info(s).unwrap();
    assert!(after.queued < before.queued);
    assert!(after.bytes_acked > before.bytes_acked);
    assert!(k.send(s, &big).is_ok());
}

#[test]
fn peek_offset_and_consume() {
    let mut k = kernel_with(PeerModel::Source(10_000));
    let s = connected(&mut k, 1, 80);
    k.run_peers(0);
    k.set_peek_off(s, 0).unwrap();
    let a = k.peek(s, 0, 1000).unwrap();
    let b = k.peek(s, 0, 1000).unwrap();
    assert_eq!(a.len(), 1000);
    assert_eq!(b.len(), 1000);
    assert_ne!(a, b, "the peek offset advanced");
    assert_eq!(a[0], pattern(1, 1, 0));
    assert_eq!(b[0], pattern(1, 1, 1000));
    // Consuming 1500 moves the offset back to 500 past the new head.
    assert_eq!(k.consume(s, 1500).unwrap(), 1500);
    let c = k.peek(s, 0, 10).unwrap();
    assert_eq!(c[0], pattern(1, 1, 2000));
    // Without SO_PEEK_OFF, `skip` says where to start.
    let mut k2 = kernel_with(PeerModel::Source(100));
    let s2 = connected(&mut k2, 1, 80);
    k2.run_peers(0);
    assert_eq!(k2.peek(s2, 40, 1000).unwrap().len(), 60);
    assert_eq!(k2.peek(s2, 40, 1000).unwrap().len(), 60);
    // End of stream: the source shut down after its bytes.
    assert_eq!(k2.consume(s2, 100).unwrap(), 100);
    assert_eq!(k2.peek(s2, 0, 1000).unwrap(), Vec::<u8>::new());
}

#[test]
fn echo_roundtrip_and_close() {
    let mut k = kernel_with(PeerModel::Echo);
    let s = connected(&mut k, 1, 80);
    k.set_interest(
        s,
        Interest {
            readable: true,
            read_hangup: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(k.send(s, b"hello").unwrap(), 5);
    k.run_peers(0);
    assert_eq!(k.peek(s, 0, 100).unwrap(), b"hello".to_vec());
    assert!(k.ready_events().contains(&(s, SockEvent::Readable)));
    k.consume(s, 5).unwrap();
    k.shutdown_write(s).unwrap();
    k.run_peers(0);
    // The echo peer saw EOF and closed: the core reads EOF and RDHUP.
    assert_eq!(k.peek(s, 0, 100).unwrap(), Vec::<u8>::new());
    let ev = k.ready_events();
    assert!(ev.contains(&(s, SockEvent::ReadHangUp)), "{ev:?}");
    assert!(ev.contains(&(s, SockEvent::HangUp)), "{ev:?}");
    k.close(s).unwrap();
    assert_eq!(k.core_sockets(), 0);
    let v = k.conn_views();
    assert_eq!(v.len(), 1);
    assert!(v[0].1.core_closed && v[0].1.host_closed && !v[0].1.reset);
    assert_eq!(v[0].1.from_core, b"hello");
}

#[test]
fn refuse_timeout_unreachable_and_delay() {
    let mut cfg = KernelConfig::default();
    cfg.peers.push(port_rule(1, PeerModel::Blackhole));
    cfg.peers.push(port_rule(2, PeerModel::Unreachable));
    cfg.peers.push(PeerRule {
        addr: None,
        port: Some(3),
        spec: PeerSpec {
            connect_delay_ns: 5_000_000,
            ..PeerSpec::new(PeerModel::Sink)
        },
    });
    let mut k = Kernel::new(cfg);
    for (i, port) in [1u16, 2, 3, 4].iter().enumerate() {
        let s = SockId(i as u32);
        k.open(s, SockKind::TcpStream, Family::V4, Netns::Host)
            .unwrap();
        k.connect(s, SocketAddr::new([192, 0, 2, 1].into(), *port), 0)
            .unwrap();
    }
    let ev = k.advance(0);
    assert_eq!(
        ev,
        vec![
            (SockId(1), SockEvent::Connected(Err(Errno::EHOSTUNREACH))),
            (SockId(3), SockEvent::Connected(Err(Errno::ECONNREFUSED))),
        ]
    );
    assert_eq!(k.next_deadline(), Some(5_000_000));
    assert_eq!(
        k.advance(5_000_000),
        vec![(SockId(2), SockEvent::Connected(Ok(())))]
    );
    assert_eq!(
        k.advance(2_000_000_000),
        vec![(SockId(0), SockEvent::Connected(Err(Errno::ETIMEDOUT)))]
    );
    assert_eq!(k.send(SockId(2), b""), Ok(0));
}

#[test]
fn reset_on_close_with_unread_data_and_reset_after() {
    let mut k = Kernel::new(KernelConfig::default());
    let lfd = app_listener(&mut k);
    let s = connected(&mut k, 9, 8080);
    let fd = k.app_accept(lfd).unwrap();
    assert_eq!(fd, 4);
    assert_eq!(k.app_accept(lfd), Err(Errno::EAGAIN));
    k.send(s, &[1; 1000]).unwrap();
    assert_eq!(k.app_read(fd, 100).unwrap(), 100);
    k.app_close(fd).unwrap();
    // 900 bytes unread: the core sees a reset.
    k.set_interest(s, readable()).unwrap();
    let ev = k.ready_events();
    assert!(
        ev.contains(&(s, SockEvent::Error(Errno::ECONNRESET))),
        "{ev:?}"
    );
    assert_eq!(k.peek(s, 0, 10), Err(Errno::ECONNRESET));
    assert_eq!(k.send(s, b"x"), Err(Errno::EPIPE));
    assert!(k.conn_views()[0].1.reset);

    let mut k = kernel_with(PeerModel::ResetAfter(10));
    let s = connected(&mut k, 1, 80);
    k.send(s, &[0; 50]).unwrap();
    k.run_peers(0);
    assert_eq!(k.peek(s, 0, 10), Err(Errno::ECONNRESET));
}

#[test]
fn half_close_and_app_side() {
    let mut k = Kernel::new(KernelConfig::default());
    let lfd = app_listener(&mut k);
    let s = connected_to(&mut k, 1, sa("127.0.0.1:8080"));
    let fd = k.app_accept(lfd).unwrap();
    k.shutdown_write(s).unwrap();
    assert_eq!(k.app_read(fd, 10), Ok(0), "EOF after the core's FIN");
    assert_eq!(
        k.app_write(fd, 300),
        Ok(300),
        "the other direction still works"
    );
    assert_eq!(k.peek(s, 0, 1000).unwrap().len(), 300);
    assert_eq!(k.send(s, b"x"), Err(Errno::EPIPE));
}

#[test]
fn listeners_accept_and_emfile() {
    let cfg = KernelConfig {
        fd_limit: 2,
        ..Default::default()
    };
    let mut k = Kernel::new(cfg);
    let l = SockId(1);
    k.open(l, SockKind::TcpListener, Family::V4, Netns::Host)
        .unwrap();
    k.bind(l, sa("0.0.0.0:8080"), true).unwrap();
    k.listen(l, 128).unwrap();
    // Address in use for a second listener.
    k.open(SockId(2), SockKind::TcpListener, Family::V4, Netns::Host)
        .unwrap();
    assert_eq!(
        k.bind(SockId(2), sa("0.0.0.0:8080"), true),
        Err(Errno::EADDRINUSE)
    );
    assert_eq!(
        k.open(SockId(3), SockKind::Udp, Family::V4, Netns::Host),
        Err(Errno::EMFILE)
    );
    k.close(SockId(2)).unwrap();
    k.set_interest(
        l,
        Interest {
            edge: true,
            ..readable()
        },
    )
    .unwrap();
    assert_eq!(k.ready_events(), vec![]);
    let fd = k.app_socket(true, Family::V4);
    k.app_connect(fd, sa("10.77.0.2:8080"), Netns::Host)
        .unwrap();
    assert_eq!(k.ready_events(), vec![(l, SockEvent::Readable)]);
    // Edge-triggered: not again until something changes.
    assert_eq!(k.ready_events(), vec![]);
    let (peer, local) = k.accept(l, SockId(4)).unwrap();
    assert_eq!(local, sa("10.77.0.2:8080"));
    assert_eq!(peer.port(), 50003);
    assert_eq!(k.accept(l, SockId(5)), Err(Errno::EAGAIN));
    assert_eq!(k.app_write(fd, 10), Ok(10));
    assert_eq!(k.peek(SockId(4), 0, 100).unwrap().len(), 10);
    let fd2 = k.app_socket(true, Family::V4);
    assert_eq!(
        k.app_connect(fd2, sa("10.77.0.2:9999"), Netns::Host),
        Err(Errno::ECONNREFUSED)
    );
    // A third connection is pending; accepting it hits the fd limit.
    k.app_connect(fd2, sa("10.77.0.2:8080"), Netns::Host)
        .unwrap();
    assert_eq!(k.accept(l, SockId(6)), Err(Errno::EMFILE));
    k.close(l).unwrap();
    k.close(SockId(4)).unwrap();
    assert_eq!(k.core_sockets(), 0);
}

/// A peer whose receive buffer holds less than what waits for it reads on
/// at the same instant, as a reader woken by every arrival does: the kernel
/// has a deadline now until the data ran out.
#[test]
fn small_receive_buffer_is_read_on_at_the_same_instant() {
    let mut k = kernel_with(PeerModel::Sink);
    k.cfg.rcvbuf = 2304;
    k.cfg.sndbuf = 1 << 20;
    let s = connected(&mut k, 1, 80);
    assert_eq!(k.send(s, &[5u8; 100_000]), Ok(100_000));
    k.run_peers(0);
    let mut steps = 0;
    while k.next_deadline() == Some(0) && steps < 1000 {
        k.advance(0);
        steps += 1;
    }
    assert_eq!(k.tcp_info(s).unwrap().bytes_acked, 100_000, "{steps} steps");
    assert_eq!(k.next_deadline(), None);
}

#[test]
fn buffer_sizes_set_the_payload_capacity() {
    let mut k = kernel_with(PeerModel::SlowReader(0));
    let s = connected(&mut k, 1, 80);
    k.set_sndbuf(s, 5000).unwrap();
    k.set_rcvbuf(s, 7000).unwrap();
    let info = k.tcp_info(s).unwrap();
    // Linux doubles SO_SNDBUF for its accounting.
    assert_eq!(info.sndbuf, 10000);
    // The peer's receive buffer (default 131072) fills first, then ours
    // (a buffer at a time).
    let mut n = 0;
    while let Ok(m) = k.send(s, &[0; 65536]) {
        n += m;
    }
    let info = k.tcp_info(s).unwrap();
    assert!(n > 131072 + 10000, "{n}");
    assert!(info.queued >= info.sndbuf, "{info:?}");
    assert_eq!(k.tcp_info(s).unwrap().snd_wnd, 0);
    assert_eq!(k.set_sndbuf(SockId(77), 1), Err(Errno::EBADF));
}

#[test]
fn peer_connects_to_a_core_listener() {
    let mut k = Kernel::new(KernelConfig::default());
    let l = SockId(1);
    k.open(l, SockKind::TcpListener, Family::V6, Netns::Host)
        .unwrap();
    k.bind(l, sa("[::]:8080"), true).unwrap();
    k.listen(l, 128).unwrap();
    assert_eq!(
        k.peer_connect(sa("10.77.0.2:9"), PeerModel::Sink, Netns::Host),
        Err(Errno::ECONNREFUSED)
    );
    k.peer_connect(sa("10.77.0.2:8080"), PeerModel::Source(5000), Netns::Host)
        .unwrap();
    assert_eq!(
        k.app_sockets(),
        0,
        "the peer's socket is not the application's"
    );
    let (_, local) = k.accept(l, SockId(2)).unwrap();
    assert_eq!(local, sa("10.77.0.2:8080"));
    k.run_peers(0);
    assert_eq!(k.peek(SockId(2), 0, 10_000).unwrap().len(), 5000);
}

#[test]
fn level_triggered_repeats_edge_does_not() {
    let mut k = kernel_with(PeerModel::Source(10));
    let s = connected(&mut k, 1, 80);
    k.run_peers(0);
    k.set_interest(s, readable()).unwrap();
    assert_eq!(k.ready_events(), vec![(s, SockEvent::Readable)]);
    assert_eq!(k.ready_events(), vec![(s, SockEvent::Readable)]);
    k.set_interest(
        s,
        Interest {
            edge: true,
            ..readable()
        },
    )
    .unwrap();
    assert_eq!(k.ready_events(), vec![(s, SockEvent::Readable)]);
    assert_eq!(k.ready_events(), vec![]);
}

#[test]
fn udp_and_ping_echo() {
    let mut cfg = KernelConfig::default();
    cfg.peers.push(port_rule(53, PeerModel::Echo));
    let mut k = Kernel::new(cfg);
    let u = SockId(1);
    k.open(u, SockKind::Udp, Family::V4, Netns::Host).unwrap();
    k.connect(u, sa("192.0.2.1:53"), 0).unwrap();
    assert_eq!(k.send_datagrams(u, &[b"a", b"bc"], None), Ok(2));
    let readable = readable();
    k.set_interest(u, readable).unwrap();
    assert_eq!(k.ready_events(), vec![(u, SockEvent::Readable)]);
    let got = k.recv_datagrams(u, 10).unwrap();
    assert_eq!(
        got,
        vec![
            (sa("192.0.2.1:53"), b"a".to_vec()),
            (sa("192.0.2.1:53"), b"bc".to_vec())
        ]
    );
    assert_eq!(k.recv_datagrams(u, 10).unwrap(), vec![]);
    // Unconnected, to a refusing port: one error from the error queue.
    let v = SockId(3);
    k.open(v, SockKind::Udp, Family::V4, Netns::Host).unwrap();
    k.set_interest(v, readable).unwrap();
    assert_eq!(k.send_datagrams(v, &[b"q"], Some(sa("192.0.2.1:9"))), Ok(1));
    assert_eq!(
        k.ready_events(),
        vec![(v, SockEvent::Error(Errno::ECONNREFUSED))]
    );
    assert_eq!(k.ready_events(), vec![]);
    // Ping sockets: no destination, no send; a request gets its reply.
    let p = SockId(2);
    k.open(p, SockKind::Ping, Family::V6, Netns::Host).unwrap();
    assert_eq!(k.send_datagrams(p, &[b"x"], None), Err(Errno::EPERM));
    let p4 = SockId(4);
    k.open(p4, SockKind::Ping, Family::V4, Netns::Host).unwrap();
    let req = [8u8, 0, 0, 0, 0, 1, 0, 2, 0xaa, 0xbb];
    assert_eq!(
        k.send_datagrams(p4, &[&req], Some(sa("192.0.2.7:0"))),
        Ok(1)
    );
    let got = k.recv_datagrams(p4, 1).unwrap();
    assert_eq!(got[0].1[0], 0, "an echo reply");
    let kid = u16::from_be_bytes([got[0].1[4], got[0].1[5]]);
    assert_ne!(kid, 1, "the kernel's identifier, not the request's");
    assert!(kid & 0x8000 != 0);
    assert_eq!(&got[0].1[6..], &req[6..]);
    // Bound to a port: that port is the identifier.
    let p5 = SockId(5);
    k.open(p5, SockKind::Ping, Family::V4, Netns::Host).unwrap();
    k.bind(p5, sa("0.0.0.0:4321"), false).unwrap();
    k.send_datagrams(p5, &[&req], Some(sa("192.0.2.7:0")))
        .unwrap();
    let got = k.recv_datagrams(p5, 1).unwrap();
    assert_eq!(&got[0].1[4..6], &4321u16.to_be_bytes());
    assert_eq!(k.recv_datagrams(SockId(9), 1), Err(Errno::EBADF));
    assert_eq!(
        PeerModel::parse(&["slow", "10"]),
        Ok(PeerModel::SlowReader(10))
    );
    assert!(PeerModel::parse(&["slow"]).is_err());
    assert!(PeerModel::parse(&["nope"]).is_err());
}
