//! The transmit path's bookkeeping, over a ring that sends nothing.

use super::*;
use crate::Core;

/// A ring of `cap` slots of 2 KiB that sends nothing (for the checks
/// of the helpers' bookkeeping).
struct Slots {
    bufs: Vec<Vec<u8>>,
    reserved: usize,
    committed: Vec<Vec<u8>>,
    cap: usize,
    take: usize,
}

impl Slots {
    fn new(cap: usize) -> Self {
        Slots {
            bufs: Vec::new(),
            reserved: 0,
            committed: Vec::new(),
            cap,
            take: 0,
        }
    }
}

impl TxRing for Slots {
    fn reserve(&mut self, n: usize, len: usize, _: SlotUse) -> usize {
        let free = self
            .cap
            .saturating_sub(self.committed.len() + self.reserved);
        let k = n.min(free);
        for _ in 0..k {
            self.bufs.push(vec![0; len.min(2048)]);
        }
        self.reserved += k;
        k
    }
    fn reserved<'a>(&'a mut self, areas: &mut Reserved<'a>) {
        areas.extend(self.bufs.iter_mut().map(|b| b.as_mut_slice()));
    }
    fn commit(&mut self, lens: &[usize]) {
        for (b, &l) in self.bufs.iter().zip(lens) {
            if l > 0 {
                self.committed.push(b[..l].to_vec());
            }
        }
        self.bufs.clear();
        self.reserved = 0;
    }
    fn pending(&self) -> usize {
        self.committed.len()
    }
    fn flush(&mut self) -> usize {
        let n = self.take.min(self.committed.len());
        self.committed.clear();
        n
    }
}

#[test]
fn queued_frames_wait_for_room() {
    let mut core = Core::new(crate::Config::default());
    // Two frames queued by hand.
    for b in [1u8, 2] {
        let _ = core.out.push_with(60, |f| {
            f.fill(b);
            Some(60)
        });
    }
    let mut ring = Slots::new(1);
    let t = Instant::ZERO;
    assert!(core.transmit_queued(t, &mut ring));
    // The first went in; the ring was flushed (and refused it) to make
    // room for the second, which went in then.
    assert_eq!(ring.committed.len(), 1);
    assert_eq!(ring.committed[0][0], 2);
    assert!(core.tap_blocked(), "a refusal is remembered");
    core.handle_tap_writable(t);
    assert!(!core.tap_blocked());
    assert_eq!(core.out.front_len(), None);
    // A ring that stays full keeps frames queued, and the core waits
    // for the link to have room again.
    let _ = core.out.push_with(60, |f| {
        f.fill(3);
        Some(60)
    });
    ring.cap = 0;
    ring.committed.clear();
    assert!(!core.transmit_queued(t, &mut ring));
    assert_eq!(core.out.front_len(), Some(60));
    assert!(core.tap_blocked());
}

/// A receive of up to 8 datagrams with 42 bytes of room on `ring`, whose
/// read reports `n` empty datagrams: the number of buffers the read was
/// given, their total length and the room.
fn recv8(core: &mut Core, ring: &mut Slots, n: usize) -> (usize, usize, usize) {
    let peer: SocketAddr = "192.0.2.1:7".parse().unwrap();
    let mut got = Vec::new();
    let mut seen = None;
    core.recv_into(
        Instant::ZERO,
        ring,
        SockId(1),
        RecvRequest { max: 8, room: 42 },
        &mut got,
        |bufs, room, got| {
            seen = Some((bufs.len(), bufs.iter().map(|b| b.len()).sum(), room));
            got.extend(std::iter::repeat_n((0, peer), n));
            Ok(())
        },
    );
    seen.expect("read called")
}

/// Datagrams that find no room on the link are read into empty
/// buffers and counted, not left in the socket (where they would keep
/// it readable and the loop busy); the core waits for room.
#[test]
fn datagrams_without_room_are_read_and_dropped() {
    let mut core = Core::new(crate::Config::default());
    let mut ring = Slots::new(0);
    assert_eq!(
        recv8(&mut core, &mut ring, 2),
        (8, 0, 42),
        "eight empty buffers"
    );
    assert_eq!(core.counters().link_full_dropped, 2);
    assert!(ring.committed.is_empty());
    assert!(core.tap_blocked());
    // With room, nothing is dropped.
    core.handle_tap_writable(Instant::ZERO);
    ring.cap = 4;
    assert_eq!(recv8(&mut core, &mut ring, 0).0, 4);
    assert_eq!(core.counters().link_full_dropped, 2);
}

/// The lists a peek, a receive and a queued frame use are the core's own,
/// lent again each time: their buffers stay where they are (nothing is
/// allocated per use, nothing sits on the stack).
#[test]
fn lists_are_lent_without_allocating() {
    let mut core = Core::new(crate::Config::default());
    let before = TxCore::tx_state(&mut core).list_buffers();
    let mut ring = Slots::new(8);
    for _ in 0..3 {
        let p = PeekRequest {
            skip: 0,
            len: 4000,
            mss: 1000,
            room: 54,
        };
        let mut iovs = 0;
        core.peek_into(Instant::ZERO, &mut ring, SockId(1), p, |_, iov| {
            iovs = iov.len();
            Err(Errno::EAGAIN)
        });
        assert_eq!(iovs, 4, "one slot per MSS");
        core.handle_tap_writable(Instant::ZERO);
        assert_eq!(recv8(&mut core, &mut ring, 2).0, 8);
        let _ = core.out.push_with(60, |f| {
            f.fill(1);
            Some(60)
        });
        assert!(core.transmit_queued(Instant::ZERO, &mut ring));
        ring.committed.clear();
    }
    assert_eq!(TxCore::tx_state(&mut core).list_buffers(), before);
}

/// `recycle` keeps the buffer of a list whose elements change lifetime.
#[test]
fn recycle_keeps_the_buffer() {
    let mut a = [1u8; 4];
    let mut v: Vec<&mut [u8]> = Vec::with_capacity(16);
    let at = v.as_ptr() as usize;
    v.push(&mut a[..]);
    let w: Vec<&'static mut [u8]> = recycle(v);
    assert_eq!((w.as_ptr() as usize, w.capacity(), w.len()), (at, 16, 0));
}
