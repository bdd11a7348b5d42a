use super::*;
use crate::scenario::capture_config;
use passt_core::{Family, Interest, Netns, SockId, SockKind};

fn sim() -> Sim {
    Sim::new(SimConfig::new(capture_config()))
}

/// Opens a TCP socket `sock`, as the core would.
fn open_tcp(s: &mut Sim, sock: SockId) {
    s.exec(
        Action::Open {
            sock,
            kind: SockKind::TcpStream,
            family: Family::V4,
            netns: Netns::Host,
        },
        &[],
    );
}

/// Opens a TCP socket `sock` and sets its interest, as the core would.
fn open_stream(s: &mut Sim, sock: SockId) {
    open_tcp(s, sock);
    s.exec(
        Action::SetInterest {
            sock,
            interest: Interest::default(),
        },
        &[],
    );
}

#[test]
fn actions_on_unknown_sockets_are_violations() {
    let mut s = sim();
    s.exec(Action::Close { sock: SockId(99) }, &[]);
    assert!(
        s.violations.iter().any(|v| v.contains("socket ids")),
        "{:?}",
        s.violations
    );

    let mut s = sim();
    let sock = SockId(1);
    open_stream(&mut s, sock);
    s.exec(Action::Close { sock }, &[]);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    // Used after close.
    s.exec(Action::QueryTcpInfo { sock }, &[]);
    assert_eq!(s.violations.len(), 1, "{:?}", s.violations);

    // Set-up queued behind a failed open is tolerated.
    let mut cfg = SimConfig::new(capture_config());
    cfg.kernel.fd_limit = 0;
    let mut s = Sim::new(cfg);
    open_stream(&mut s, sock);
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

#[test]
fn broken_frames_from_the_core_are_violations() {
    let mut s = sim();
    let dhcp = |payload: &[u8]| {
        crate::frame::udp_frame(
            crate::frame::GUEST_MAC,
            crate::frame::BROADCAST,
            "10.77.0.1:67".parse().unwrap(),
            "10.77.0.2:68".parse().unwrap(),
            payload,
        )
    };
    let mut f = dhcp(b"payload, long enough for a 60-byte frame");
    s.emit(&f.clone());
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    // A short frame the core did not pad is one too.
    let short = dhcp(b"short");
    s.emit(&short);
    assert!(
        s.violations.iter().any(|v| v.contains("802.3 minimum")),
        "{:?}",
        s.violations
    );
    s.violations.clear();
    let n = f.len();
    f[n - 1] ^= 1;
    s.emit(&f);
    assert!(
        s.violations.iter().any(|v| v.contains("frame check")),
        "{:?}",
        s.violations
    );
    assert_eq!(s.stats.frames_from_core, 3);
}

/// TCP and UDP forwards open listeners in the simulated kernel, and
/// those that cannot be opened are reported the way the epoll driver
/// reads them.
#[test]
fn forwards_open_listeners_and_failures_are_reported() {
    use passt_core::{Forward, Proto};
    let mut cfg = SimConfig::new(capture_config());
    cfg.core.forwards = vec![
        Forward::new(Proto::Tcp, 8080, 80),
        Forward::new(Proto::Udp, 5353, 53),
    ];
    let mut s = Sim::new(cfg.clone());
    s.start();
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!(s.core.failed_forwards().count(), 0);
    assert_eq!(s.core.socket_count(), 2);
    assert_eq!(s.kernel.core_ids().len(), 2);

    // No descriptors left: neither listener opens.
    cfg.kernel.fd_limit = 0;
    let mut s = Sim::new(cfg);
    s.start();
    let failed: Vec<_> = s
        .core
        .failed_forwards()
        .map(|f| (f.forward.proto, f.forward.first, f.error.is_some()))
        .collect();
    assert_eq!(
        failed,
        vec![(Proto::Tcp, 8080, true), (Proto::Udp, 5353, true)]
    );
    assert_eq!(s.core.socket_count(), 0);
    assert!(s
        .timeline
        .iter()
        .any(|l| l.contains("UDP port 5353 not forwarded")));
}

#[test]
fn consume_beyond_the_queue_is_a_violation() {
    let mut s = sim();
    let sock = SockId(1);
    open_tcp(&mut s, sock);
    s.exec(Action::Consume { sock, len: 10 }, &[]);
    assert!(
        s.violations.iter().any(|v| v.contains("consume")),
        "{:?}",
        s.violations
    );
}
