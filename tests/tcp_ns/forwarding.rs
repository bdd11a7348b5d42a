//! Port forwarding: the `-t` specifications, a port that cannot be bound,
//! automatic forwarding, and forwards bound to an address or interface.

use super::*;

// --- port forwarding -------------------------------------------------------------

/// Which of `ports` the host reaches, and the port the guest saw the
/// connection on (its listener).
fn reach(t: &Pasta, port: u16) -> bool {
    match t.connect_host(lo4(port)) {
        Ok(mut c) => {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = [0u8; 2];
            c.read_exact(&mut b).is_ok()
        }
        Err(_) => false,
    }
}

/// `-t 18080:80`, a range and a range with an exclusion: the host's ports
/// reach the guest's listeners as specified, and nothing else is forwarded.
#[test]
fn forward_specs() {
    let t = Pasta::start(
        "fwd",
        &[
            "-t",
            "18080:80",
            "-t",
            "19000-19002",
            "-t",
            "19100-19104,~19102",
        ],
    );
    let guest_ports: Vec<u16> = [80u16, 18080]
        .into_iter()
        .chain(19000..=19003)
        .chain(19100..=19104)
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let servers = guest_servers(&t, &guest_ports, &stop);
    let port_of = |port: u16| -> Option<u16> {
        let mut c = t.connect_host(lo4(port)).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut b = [0u8; 2];
        c.read_exact(&mut b).ok()?;
        Some(u16::from_be_bytes(b))
    };
    assert_eq!(port_of(18080), Some(80), "18080:80");
    assert_eq!(port_of(80), None, "80 is not forwarded");
    for p in 19000..=19002 {
        assert_eq!(port_of(p), Some(p));
    }
    assert_eq!(port_of(19003), None);
    for p in [19100, 19101, 19103, 19104] {
        assert_eq!(port_of(p), Some(p));
    }
    assert_eq!(port_of(19102), None, "excluded");
    assert!(!reach(&t, 19105));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in servers {
        s.join().unwrap();
    }
}

/// A port that cannot be bound is a start-up error naming it.
#[test]
fn unbindable_port_is_a_startup_error() {
    let h = Netns::host("busy");
    let g = UserNetns::new("busyg");
    let _taken = in_ns(&h, || TcpListener::bind(any6(6400)).expect("listener"));
    let out = h.user_run(
        &[
            s(&pasta()),
            "-f".into(),
            "--config-net".into(),
            "-t".into(),
            "6400".into(),
            "--userns".into(),
            s(&g.userns_path()),
            "--netns".into(),
            g.name.clone(),
        ],
        20,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("6400"), "{err}");
}

/// `-t auto` (the default): a listener started in the guest is forwarded
/// within 2 s, and its forwarding goes away with it.
#[test]
fn auto_forwarding_follows_guest_listeners() {
    let t = Pasta::start("auto", &[]);
    assert!(!reach(&t, 6500));
    let l = t.listen_guest(any4(6500));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let srv = std::thread::spawn(move || {
        l.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(30);
        while !st.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
            match l.accept() {
                Ok((mut c, _)) => {
                    let _ = c.write_all(b"ok");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let t0 = Instant::now();
    let seen = eventually(3, || reach(&t, 6500).then_some(()));
    assert!(seen.is_some(), "not forwarded");
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t0.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    srv.join().unwrap();
    let gone = eventually(4, || (!reach(&t, 6500)).then_some(()));
    assert!(gone.is_some(), "listener of a vanished port stays");
}

/// Serves `ports` in the guest (dual-stack listeners) until `stop`: each
/// accepted connection is told the port it reached.
fn guest_servers(
    t: &Pasta,
    ports: &[u16],
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    ports
        .iter()
        .map(|&p| {
            let l = t.listen_guest(any6(p));
            l.set_nonblocking(true).unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(60);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < end {
                    match l.accept() {
                        Ok((mut c, _)) => {
                            let _ = c.write_all(&p.to_be_bytes());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        })
        .collect()
}

/// The guest port a host connection to `addr` reaches, if any.
fn reached(t: &Pasta, addr: SocketAddr) -> Option<u16> {
    let mut c = t.connect_host(addr).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut b = [0u8; 2];
    c.read_exact(&mut b).ok()?;
    Some(u16::from_be_bytes(b))
}

/// A port without address listens on both families; `ADDR/PORT` only on
/// that address.
#[test]
fn forward_dual_stack_and_address() {
    let t = Pasta::start("fwda", &["-t", "6800", "-t", &format!("{HOST_IP4}/6801")]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let servers = guest_servers(&t, &[6800, 6801], &stop);
    let host4: Ipv4Addr = HOST_IP4.parse().unwrap();
    let host6: Ipv6Addr = HOST_IP6.parse().unwrap();
    assert_eq!(reached(&t, lo4(6800)), Some(6800), "IPv4 loopback");
    assert_eq!(reached(&t, lo6(6800)), Some(6800), "IPv6 loopback");
    assert_eq!(reached(&t, SocketAddr::from((host6, 6800))), Some(6800));
    assert_eq!(reached(&t, SocketAddr::from((host4, 6801))), Some(6801));
    assert_eq!(reached(&t, lo4(6801)), None, "bound to {HOST_IP4} only");
    assert_eq!(reached(&t, SocketAddr::from((host6, 6801))), None);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in servers {
        s.join().unwrap();
    }
}

/// `%IFNAME/PORT` binds the listener to the interface (`ss` shows it so),
/// and connections through loopback do not reach it.
#[test]
fn forward_interface_binding() {
    let t = Pasta::start("fwdi", &["-t", "%dummy0/6900"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let servers = guest_servers(&t, &[6900], &stop);
    let ss = t.h.sh("ss -Htln 'sport = :6900'");
    assert!(
        ss.contains("%dummy0:6900"),
        "listener bound to dummy0: {ss}"
    );
    assert_eq!(reached(&t, lo4(6900)), None, "not on loopback");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in servers {
        s.join().unwrap();
    }
}
