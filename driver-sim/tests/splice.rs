//! Spliced TCP pairs in the simulator (pasta's loopback path): a client on
//! the host's loopback connects to a forwarded port, the core splices it to
//! a server in the guest's namespace, and the simulator's splicer model
//! moves the bytes. Each scenario checks every byte against the kernel's
//! logs, the ends (half-close, reset, close) carried to the other side,
//! that the flow and its sockets are gone afterwards, and that a slow or
//! stalled side leaves the event loop idle.

use passt_core::{Family, Forward, Netns, Proto, SpliceStats};
use passt_driver_sim::kernel::ConnView;
use passt_driver_sim::scenario::capture_config;
use passt_driver_sim::sim::{Sim, SimConfig};
use std::net::SocketAddr;
use std::time::Duration;

const PORT: u16 = 8080;
const TARGET: u16 = 80;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A started simulation with `-t 8080:80`, a server listening in the
/// guest's namespace on the guest's address, and a client on the host's
/// loopback connected to the forwarded port: (sim, client fd, server fd).
fn spliced_pair() -> (Sim, i32, i32) {
    let mut cfg = capture_config();
    cfg.splice = true;
    cfg.forwards = vec![Forward::new(Proto::Tcp, PORT, TARGET)];
    let mut sim = Sim::new(SimConfig::new(cfg));
    sim.start();
    let k = &mut sim.kernel;
    let l = k.app_socket_in(true, Family::V4, Netns::Guest);
    k.app_bind(l, sa("10.77.0.2:80")).unwrap();
    k.app_listen(l, 8).unwrap();
    let c = k.app_socket(true, Family::V4);
    k.app_bind(c, sa("127.0.0.1:41000")).unwrap();
    k.app_connect(c, sa("127.0.0.1:8080"), Netns::Host).unwrap();
    sim.app_did("client connects".into());
    sim.run_for(Duration::from_millis(10));
    let s = sim
        .kernel
        .app_accept(l)
        .expect("the far side reached the server");
    sim.app_did("server accepts".into());
    assert_eq!(sim.core.splice_stats().joined, 1, "spliced");
    assert_eq!(sim.splicer.len(), 1);
    (sim, c, s)
}

/// The two connections of the pair: (client's, server's).
fn views(sim: &Sim) -> (ConnView<'_>, ConnView<'_>) {
    let v = sim.kernel.conn_views();
    assert_eq!(v.len(), 2, "two connections");
    (v[0].1, v[1].1)
}

/// Every byte the client wrote reached the server's side and the other way
/// round, in order.
fn intact(sim: &Sim) -> (usize, usize) {
    let (a, b) = views(sim);
    // a: client <-> core's accepted socket; b: core's socket <-> server.
    assert_eq!(a.to_core, b.from_core, "client to server");
    assert_eq!(b.to_core, a.from_core, "server to client");
    (a.to_core.len(), b.to_core.len())
}

/// Writes up to `n` bytes from `fd` as room allows, moving time on.
fn write_all(sim: &mut Sim, fd: i32, mut n: usize, budget: Duration) {
    let end = sim.now().saturating_add(budget);
    while n > 0 && sim.now() < end {
        if let Ok(w) = sim.kernel.app_write(fd, n.min(16384)) {
            n -= w;
        }
        sim.app_did(format!("write {fd}"));
        sim.run_for(Duration::from_micros(100));
    }
    assert_eq!(n, 0, "all written");
}

/// Reads everything there is on `fd` (0 at end of stream): the bytes read,
/// and whether the stream ended.
fn read_all(sim: &mut Sim, fd: i32) -> (usize, bool) {
    let mut total = 0;
    loop {
        match sim.kernel.app_read(fd, 1 << 20) {
            Ok(0) => return (total, true),
            Ok(n) => total += n,
            Err(_) => return (total, false),
        }
    }
}

fn ended(stats: &SpliceStats) -> u64 {
    stats.ended + stats.reset
}

fn no_spin(sim: &Sim) {
    assert_eq!(sim.stats.spins, 0, "{:?}", sim.summary());
}

#[test]
fn bytes_both_ways_then_half_close_each_way() {
    let (mut sim, c, s) = spliced_pair();
    write_all(&mut sim, c, 300_000, Duration::from_secs(5));
    // The server reads as it comes (in the loop below); it answers too.
    let mut got = 0;
    for _ in 0..200 {
        got += read_all(&mut sim, s).0;
        sim.run_for(Duration::from_millis(1));
    }
    assert_eq!(got, 300_000);
    write_all(&mut sim, s, 100_000, Duration::from_secs(5));
    // The client half-closes with the answer still in flight.
    sim.kernel.app_shutdown(c).unwrap();
    sim.app_did("client shuts down".into());
    sim.run_for(Duration::from_millis(20));
    let (_, eof) = read_all(&mut sim, s);
    assert!(eof, "the server sees the client's FIN");
    let (n, eof) = read_all(&mut sim, c);
    assert_eq!(n, 100_000, "the answer arrived after the half-close");
    assert!(!eof, "the server's side is still open");
    // Now the other way, and the pair ends cleanly.
    write_all(&mut sim, s, 5000, Duration::from_secs(1));
    sim.kernel.app_shutdown(s).unwrap();
    sim.app_did("server shuts down".into());
    sim.run_for(Duration::from_millis(20));
    let (n, eof) = read_all(&mut sim, c);
    assert_eq!((n, eof), (5000, true));
    assert_eq!(intact(&sim), (300_000, 105_000));
    let st = *sim.core.splice_stats();
    assert_eq!((st.ended, st.reset), (1, 0));
    assert_eq!((st.bytes_out, st.bytes_in), (300_000, 105_000));
    assert_eq!(sim.core.flow_count(), 0);
    assert!(sim.splicer.is_empty());
    no_spin(&sim);
    assert!(sim.finish().is_empty());
}

#[test]
fn server_half_closes_first_with_data_in_flight() {
    let (mut sim, c, s) = spliced_pair();
    write_all(&mut sim, s, 200_000, Duration::from_secs(5));
    sim.kernel.app_shutdown(s).unwrap();
    sim.app_did("server shuts down".into());
    // The client still sends; it reads all, then the end of stream.
    write_all(&mut sim, c, 50_000, Duration::from_secs(5));
    let mut got = 0;
    let mut eof = false;
    for _ in 0..500 {
        let (n, e) = read_all(&mut sim, c);
        got += n;
        eof = e;
        if eof {
            break;
        }
        sim.run_for(Duration::from_millis(1));
    }
    assert_eq!((got, eof), (200_000, true));
    sim.kernel.app_close(c).unwrap();
    sim.app_did("client closes".into());
    sim.run_for(Duration::from_millis(50));
    let mut srv = 0;
    for _ in 0..100 {
        srv += read_all(&mut sim, s).0;
        sim.run_for(Duration::from_millis(1));
    }
    assert_eq!(srv, 50_000);
    assert_eq!(intact(&sim), (50_000, 200_000));
    assert_eq!(ended(sim.core.splice_stats()), 1);
    assert_eq!(sim.core.flow_count(), 0);
    no_spin(&sim);
}

#[test]
fn a_reset_on_either_side_resets_the_other() {
    for client_resets in [true, false] {
        let (mut sim, c, s) = spliced_pair();
        write_all(&mut sim, c, 20_000, Duration::from_secs(1));
        write_all(&mut sim, s, 20_000, Duration::from_secs(1));
        // The side that resets closes with unread data: a reset.
        let (resetter, other) = if client_resets { (c, s) } else { (s, c) };
        sim.kernel.app_close(resetter).unwrap();
        sim.app_did("close with unread data".into());
        sim.run_for(Duration::from_millis(20));
        let st = *sim.core.splice_stats();
        assert_eq!(st.reset, 1, "client resets: {client_resets}");
        let (a, b) = views(&sim);
        assert!(a.reset && b.reset, "both connections reset");
        let _ = read_all(&mut sim, other);
        assert_eq!(sim.core.flow_count(), 0);
        assert_eq!(sim.core.socket_count(), 1, "the listener only");
        no_spin(&sim);
    }
}

#[test]
fn a_slow_or_stalled_side_keeps_the_loop_idle() {
    for slow_server in [true, false] {
        let (mut sim, c, s) = spliced_pair();
        let (writer, reader) = if slow_server { (c, s) } else { (s, c) };
        // Fill everything: the reader reads nothing for a while.
        let mut written = 0;
        for _ in 0..200 {
            if let Ok(n) = sim.kernel.app_write(writer, 65536) {
                written += n;
            }
            sim.app_did("write".into());
            sim.run_for(Duration::from_millis(1));
        }
        let events = sim.splicer.events;
        let idle = sim.stats.idle_wakeups;
        // Stalled for a second of virtual time: nothing may happen.
        sim.run_for(Duration::from_secs(1));
        assert_eq!(sim.splicer.events, events, "no wake-up while stalled");
        assert_eq!(sim.stats.idle_wakeups, idle);
        // The reader drains a little at a time; everything arrives.
        let mut got = 0;
        for _ in 0..10_000 {
            if got >= written {
                break;
            }
            if let Ok(n) = sim.kernel.app_read(reader, 4096) {
                got += n;
            }
            sim.app_did("read".into());
            sim.run_for(Duration::from_millis(1));
        }
        assert_eq!(got, written, "slow server: {slow_server}");
        let (to_srv, to_cli) = intact(&sim);
        assert_eq!(to_srv + to_cli, written);
        no_spin(&sim);
    }
}

#[test]
fn a_far_side_that_refuses_resets_the_client() {
    let mut cfg = capture_config();
    cfg.splice = true;
    cfg.forwards = vec![Forward::new(Proto::Tcp, PORT, TARGET)];
    let mut sim = Sim::new(SimConfig::new(cfg));
    sim.start();
    // No server in the namespace.
    let c = sim.kernel.app_socket(true, Family::V4);
    sim.kernel.app_bind(c, sa("127.0.0.1:41001")).unwrap();
    sim.kernel
        .app_connect(c, sa("127.0.0.1:8080"), Netns::Host)
        .unwrap();
    sim.app_did("client connects".into());
    sim.run_for(Duration::from_millis(10));
    assert_eq!(sim.core.splice_stats().refused, 1);
    assert_eq!(sim.core.flow_count(), 0);
    let v = sim.kernel.conn_views();
    assert!(v.iter().all(|(_, v)| v.reset || v.core_closed), "{v:?}");
    no_spin(&sim);
}
