//! The cost of a batch is linear in its frames: a batch of guest data for
//! many established connections, interleaved so that each connection's
//! segments fall into many groups (more connections than the grouper keeps
//! apart), is counted in units of work ([`crate::work`]: frames
//! looked at, segments parsed, queued actions visited, spans copied or
//! summed) at 16384 and at 32768 frames. Twice the frames may cost at most
//! about twice the work.

use crate::testutil::{capture_config, feed, GUEST_MAC};
use crate::wire::Mac;
use crate::work;
use crate::{Action, Core, Instant, SendSpace, SockEvent, SockId, TcpInfo};
use core::net::Ipv4Addr;
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use std::collections::HashMap;

const GUEST: [u8; 4] = [10, 77, 0, 2];
const PEER: [u8; 4] = [192, 0, 2, 80];
const ISN: u32 = 1000;

fn seg(sport: u16, seq: u32, ack: Option<u32>, syn: bool, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(GUEST_MAC.0, Mac::OUR_DEFAULT.0)
        .ipv4(GUEST, PEER, 64)
        .tcp(sport, 80, seq, 65535);
    if syn {
        b = b.syn();
    }
    if let Some(a) = ack {
        b = b.ack(a);
    }
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn batch(core: &mut Core, frames: &[Vec<u8>]) {
    feed(core, Instant::from_millis(1000), frames);
}

/// Drains the actions, answering queries of an idle socket with 1 MiB of
/// send buffer; returns the sockets asked to connect.
fn drain(core: &mut Core) -> Vec<SockId> {
    let now = Instant::from_millis(1000);
    let mut connects = Vec::new();
    while let Some(a) = core.poll_action() {
        match a {
            Action::Connect { sock, .. } => connects.push(sock),
            Action::QueryTcpInfo { sock } => {
                let info = TcpInfo {
                    sndbuf: 1 << 20,
                    snd_mss: 1460,
                    snd_wnd: 65535,
                    ..TcpInfo::default()
                };
                core.handle_sock_event(now, sock, SockEvent::TcpInfo(info));
            }
            Action::QuerySendSpace { sock } => {
                let space = SendSpace {
                    sndbuf: 1 << 20,
                    queued: 0,
                };
                core.handle_sock_event(now, sock, SockEvent::SendSpace(space));
            }
            _ => {}
        }
    }
    connects
}

/// `flows` connections established through a core whose batches take up
/// to `batch_frames`; returns it and our next sequence number per guest port.
fn established(flows: u16, batch_frames: usize) -> (Core, HashMap<u16, u32>) {
    let mut cfg = capture_config();
    cfg.guest_mac = Some(GUEST_MAC);
    cfg.limits.batch_frames = batch_frames;
    cfg.limits.actions = 16384;
    let mut core = Core::new(cfg);
    let now = Instant::from_millis(1000);
    let syns: Vec<_> = (0..flows)
        .map(|i| seg(20000 + i, ISN, None, true, &[]))
        .collect();
    batch(&mut core, &syns);
    for sock in drain(&mut core) {
        core.handle_sock_event(now, sock, SockEvent::Connected(Ok(())));
        drain(&mut core);
    }
    // Our ISN for each guest port, from the SYN-ACKs.
    let mut ours = HashMap::new();
    let mut tx = vec![0u8; 70000];
    while let Some(n) = core.poll_frame(&mut tx) {
        let p = SlicedPacket::from_ethernet(&tx[..n]).unwrap();
        if let Some(TransportSlice::Tcp(t)) = p.transport {
            assert!(t.syn() && t.ack());
            ours.insert(t.destination_port(), t.sequence_number().wrapping_add(1));
        }
    }
    assert_eq!(ours.len(), usize::from(flows), "every connection answered");
    let acks: Vec<_> = (0..flows)
        .map(|i| seg(20000 + i, ISN + 1, Some(ours[&(20000 + i)]), false, &[]))
        .collect();
    batch(&mut core, &acks);
    drain(&mut core);
    while core.poll_frame(&mut tx).is_some() {}
    (core, ours)
}

/// `frames` data segments of 16 bytes spread round-robin over the `flows`
/// connections of `ours`.
fn round_robin(flows: u16, frames: usize, ours: &HashMap<u16, u32>) -> Vec<Vec<u8>> {
    let payload = [0x5a; 16];
    (0..frames)
        .map(|k| {
            let i = (k % usize::from(flows)) as u16;
            let n = (k / usize::from(flows)) as u32;
            let seq = ISN + 1 + n * payload.len() as u32;
            seg(20000 + i, seq, Some(ours[&(20000 + i)]), false, &payload)
        })
        .collect()
}

/// The work of one batch of `frames` data segments spread round-robin
/// over `flows` established connections.
fn batch_work(flows: u16, frames: usize) -> u64 {
    let (mut core, ours) = established(flows, 32768);
    let data = round_robin(flows, frames, &ours);
    let _ = work::take();
    batch(&mut core, &data);
    let units = work::take();
    assert!(
        core.counters().l4_segments >= frames as u64,
        "every segment reached TCP"
    );
    units
}

#[test]
fn batch_work_is_linear_in_frames() {
    // As many connections as the batch has frames / 64, so each one's 64
    // segments are split over groups and the connections grow with the
    // batch (with a fixed count, a scan of the queued actions per group
    // would look linear too).
    let small = batch_work(256, 16384);
    let large = batch_work(512, 32768);
    let ratio = large as f64 / small as f64;
    eprintln!("16384 frames: {small} units, 32768 frames: {large} units (x{ratio:.2})");
    assert!(
        ratio < 2.3,
        "16384 frames: {small} units, 32768 frames: {large} units (x{ratio:.2})"
    );
    // And the work per frame is a small constant.
    assert!(large < 32768 * 16, "{large} units for 32768 frames");
}

#[test]
fn one_connection_per_batch_is_linear_too() {
    let small = batch_work(1, 16384);
    let large = batch_work(1, 32768);
    assert!(
        (large as f64) < small as f64 * 2.3,
        "16384 frames: {small} units, 32768 frames: {large} units"
    );
}

/// Extending queued `Send`s never takes the room of other frames' spans:
/// a batch of interleaved TCP segments and datagrams leaves the span list
/// at the size it was allocated with, and every datagram is sent.
#[test]
fn span_list_never_grows() {
    let (mut core, ours) = established(300, 16384);
    let cap = core.spans.capacity();
    let mut frames = Vec::new();
    for (k, tcp) in round_robin(300, 8192, &ours).into_iter().enumerate() {
        frames.push(tcp);
        let mut udp = Vec::new();
        PacketBuilder::ethernet2(GUEST_MAC.0, Mac::OUR_DEFAULT.0)
            .ipv4(GUEST, PEER, 64)
            .udp(30000 + (k % 50) as u16, 53)
            .write(&mut udp, &[1, 2, 3])
            .unwrap();
        frames.push(udp);
    }
    batch(&mut core, &frames);
    assert_eq!(core.spans.capacity(), cap, "the span list grew");
    let mut sent = 0;
    while let Some(a) = core.poll_action() {
        if let Action::SendDatagrams { spans, .. } = a {
            sent += core.spans(spans).len();
        }
    }
    assert_eq!(sent, 8192, "every datagram sent");
}

/// `GUEST` and `PEER` are the addresses of the capture configuration.
#[test]
fn addresses_match_the_configuration() {
    let cfg = capture_config();
    assert_eq!(cfg.ip4.unwrap().addr, Ipv4Addr::from(GUEST));
}
