//! The virtqueue side of the vhost-user link on rings built by hand in
//! guest memory: frames from transmit chains (in place, adjacent
//! descriptors, scattered, malformed), frames into mergeable receive
//! buffers (copied and as slots), and what goes back to the used rings.

use super::rxslots::{Grow, Reserved};
use super::virtq::{self, push_used, Fill, RxFill, RxOpts, TxBatch};
use passt_core::FrameRef;
use std::sync::Arc;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const HDR: usize = 12;

/// A split ring in guest memory, driven as a guest driver would.
pub(crate) struct Ring {
    pub(crate) desc: u64,
    pub(crate) avail: u64,
    pub(crate) used: u64,
    size: u16,
    next_desc: u16,
    avail_idx: u16,
}

impl Ring {
    pub(crate) fn new(base: u64, size: u16) -> Ring {
        let desc = base;
        let avail = desc + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size)).next_multiple_of(4);
        Ring {
            desc,
            avail,
            used,
            size,
            next_desc: 0,
            avail_idx: 0,
        }
    }

    /// Adds one receive buffer (a device-writable chain of one) at each
    /// of `addrs`, of `len` bytes.
    fn add_rx(&mut self, mem: &GuestMemoryMmap, addrs: impl IntoIterator<Item = u64>, len: u32) {
        for a in addrs {
            self.add(mem, &[(a, len, true)]);
        }
    }

    /// Adds a chain of (address, length, device-writable) buffers.
    pub(crate) fn add(&mut self, mem: &GuestMemoryMmap, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, w)) in bufs.iter().enumerate() {
            let idx = self.next_desc;
            self.next_desc = (self.next_desc + 1) % self.size;
            let last = i + 1 == bufs.len();
            let flags = if last { 0 } else { F_NEXT } | if w { F_WRITE } else { 0 };
            let a = GuestAddress(self.desc + 16 * u64::from(idx));
            mem.write_obj(addr, a).unwrap();
            mem.write_obj(len, GuestAddress(a.0 + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(a.0 + 12)).unwrap();
            mem.write_obj(self.next_desc, GuestAddress(a.0 + 14))
                .unwrap();
        }
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % self.size);
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
        head
    }

    fn queue(&self) -> Queue {
        let mut q = Queue::new(self.size).unwrap();
        q.set_size(self.size);
        q.try_set_desc_table_address(GuestAddress(self.desc))
            .unwrap();
        q.try_set_avail_ring_address(GuestAddress(self.avail))
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(self.used))
            .unwrap();
        q.set_ready(true);
        q
    }

    /// The used index and the used elements (id, len) so far.
    pub(crate) fn used(&self, mem: &GuestMemoryMmap) -> (u16, Vec<(u32, u32)>) {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        let v = (0..idx)
            .map(|i| {
                let a = self.used + 4 + 8 * u64::from(i % self.size);
                let id: u32 = mem.read_obj(GuestAddress(a)).unwrap();
                let len: u32 = mem.read_obj(GuestAddress(a + 4)).unwrap();
                (id, len)
            })
            .collect();
        (idx, v)
    }
}

fn memory() -> Arc<GuestMemoryMmap> {
    Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap())
}

/// Guest memory, a ring of 16 at 0 offering receive buffers of `len`
/// bytes at `addrs`, and its queue.
fn rx_ring(addrs: impl IntoIterator<Item = u64>, len: u32) -> (Arc<GuestMemoryMmap>, Ring, Queue) {
    let mem = memory();
    let mut ring = Ring::new(0, 16);
    ring.add_rx(&mem, addrs, len);
    let q = ring.queue();
    (mem, ring, q)
}

/// A frame of `len` bytes whose bytes count from `seed`.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

/// A virtio-net header followed by `f`, written at `addr`.
fn put(mem: &GuestMemoryMmap, addr: u64, f: &[u8]) {
    mem.write_slice(&[0u8; HDR], GuestAddress(addr)).unwrap();
    mem.write_slice(f, GuestAddress(addr + HDR as u64)).unwrap();
}

fn batch_frames(b: &TxBatch, mem: &GuestMemoryMmap) -> Vec<Vec<u8>> {
    let buf = b.buffer(mem);
    b.refs
        .iter()
        .map(|r: &FrameRef| buf[r.offset as usize..][..r.len as usize].to_vec())
        .collect()
}

#[test]
fn transmit_chains_in_place_bounced_and_dropped() {
    let mem = memory();
    let mut ring = Ring::new(0, 16);
    let (a, b, c, d) = (frame(60, 1), frame(1514, 2), frame(300, 3), frame(100, 4));
    // One descriptor: header and frame.
    put(&mem, 0x10000, &a);
    ring.add(&mem, &[(0x10000, (HDR + a.len()) as u32, false)]);
    // Header and frame in two descriptors that follow each other.
    put(&mem, 0x20000, &b);
    ring.add(
        &mem,
        &[
            (0x20000, HDR as u32, false),
            (0x20000 + HDR as u64, b.len() as u32, false),
        ],
    );
    // Scattered: header and the frame's two halves apart.
    mem.write_slice(&[0u8; HDR], GuestAddress(0x30000)).unwrap();
    mem.write_slice(&c[..100], GuestAddress(0x31000)).unwrap();
    mem.write_slice(&c[100..], GuestAddress(0x32000)).unwrap();
    ring.add(
        &mem,
        &[
            (0x30000, HDR as u32, false),
            (0x31000, 100, false),
            (0x32000, 200, false),
        ],
    );
    // Shorter than the header: not a frame.
    ring.add(&mem, &[(0x40000, 8, false)]);
    // Outside guest memory.
    ring.add(&mem, &[(0x4000_0000, 200, false)]);
    // In place again.
    put(&mem, 0x50000, &d);
    ring.add(&mem, &[(0x50000, (HDR + d.len()) as u32, false)]);

    let mut q = ring.queue();
    let mut batch = TxBatch::new(64);
    // The first two are handed over where they are; the scattered one
    // starts a batch of its own.
    assert_eq!(
        virtq::fill_tx(&mut q, &mem, HDR, &mut batch, 64),
        Fill::More
    );
    assert_eq!(batch_frames(&batch, &mem), vec![a.clone(), b.clone()]);
    assert_eq!(batch.refs[0].offset, 0x10000 + HDR as u32, "no copy");
    batch.complete(&mut q, &mem);
    assert_eq!(ring.used(&mem), (2, vec![(0, 0), (1, 0)]));

    assert_eq!(
        virtq::fill_tx(&mut q, &mem, HDR, &mut batch, 64),
        Fill::More
    );
    assert_eq!(batch_frames(&batch, &mem), vec![c.clone()]);
    batch.complete(&mut q, &mem);

    assert_eq!(
        virtq::fill_tx(&mut q, &mem, HDR, &mut batch, 64),
        Fill::Empty
    );
    assert_eq!(batch_frames(&batch, &mem), vec![d.clone()]);
    assert_eq!(
        batch.dropped, 2,
        "the short chain and the one outside memory"
    );
    batch.complete(&mut q, &mem);
    let (idx, used) = ring.used(&mem);
    assert_eq!(idx, 6, "every chain went back");
    let ids: Vec<u32> = used.iter().map(|u| u.0).collect();
    assert_eq!(ids, vec![0, 1, 3, 6, 7, 8]);
}

#[test]
fn transmit_batch_limit_carries_over() {
    let mem = memory();
    let mut ring = Ring::new(0, 16);
    for i in 0..5u64 {
        let f = frame(64, i as u8);
        put(&mem, 0x10000 + i * 0x1000, &f);
        ring.add(&mem, &[(0x10000 + i * 0x1000, (HDR + 64) as u32, false)]);
    }
    let mut q = ring.queue();
    let mut batch = TxBatch::new(2);
    let mut got = Vec::new();
    loop {
        let fill = virtq::fill_tx(&mut q, &mem, HDR, &mut batch, 2);
        got.extend(batch_frames(&batch, &mem));
        batch.complete(&mut q, &mem);
        if fill == Fill::Empty {
            break;
        }
    }
    let want: Vec<Vec<u8>> = (0..5).map(|i| frame(64, i)).collect();
    assert_eq!(got, want);
    assert_eq!(ring.used(&mem).0, 5);
}

fn opts() -> RxOpts {
    RxOpts {
        hdr_len: HDR,
        mergeable: true,
        csum_valid: true,
    }
}

#[test]
fn receive_copy_spans_mergeable_buffers() {
    let (mem, ring, mut q) = rx_ring((0..4).map(|i| 0x10000 + i * 0x1000), 100);
    let mut rx = RxFill::default();
    let f = frame(250, 7);
    assert!(rx.push(&mut q, &mem, opts(), &f));
    // Three buffers taken, one left: a second frame does not fit and
    // nothing is taken for it.
    assert!(!rx.push(&mut q, &mem, opts(), &f));
    assert_eq!(ring.used(&mem).0, 0, "nothing published yet");
    rx.publish(&mut q, &mem);
    let (idx, used) = ring.used(&mem);
    assert_eq!(idx, 3);
    assert_eq!(used, vec![(0, 100), (1, 100), (2, 62)]);
    let mut hdr = [0u8; HDR];
    mem.read_slice(&mut hdr, GuestAddress(0x10000)).unwrap();
    assert_eq!(hdr[0], 2, "DATA_VALID");
    assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 3, "num_buffers");
    let mut back = vec![0u8; 250];
    mem.read_slice(&mut back[..88], GuestAddress(0x10000 + HDR as u64))
        .unwrap();
    mem.read_slice(&mut back[88..188], GuestAddress(0x11000))
        .unwrap();
    mem.read_slice(&mut back[188..], GuestAddress(0x12000))
        .unwrap();
    assert_eq!(back, f);
    // The fourth buffer is still available.
    assert_eq!(virtq::rx_room(&mut q, &mem, HDR + 50, true, 8), 1);
    assert_eq!(virtq::rx_room(&mut q, &mem, HDR + 250, true, 8), 0);
}

#[test]
fn receive_without_mergeable_buffers_drops_what_one_buffer_cannot_hold() {
    let mem = memory();
    let mut ring = Ring::new(0, 16);
    ring.add(&mem, &[(0x10000, 100, true)]);
    ring.add(&mem, &[(0x11000, 400, true)]);
    let mut q = ring.queue();
    let mut rx = RxFill::default();
    let o = RxOpts {
        mergeable: false,
        ..opts()
    };
    // Too large for the first buffer: dropped, the buffer returned empty.
    assert!(rx.push(&mut q, &mem, o, &frame(200, 1)));
    assert_eq!(rx.dropped, 1);
    assert!(rx.push(&mut q, &mem, o, &frame(200, 1)));
    rx.publish(&mut q, &mem);
    assert_eq!(ring.used(&mem), (2, vec![(0, 0), (1, 212)]));
}

/// What [`peek_like_core`] returns: frame lengths, used elements (head,
/// bytes) and frames (guest address, length).
type Peeked = (Vec<usize>, Vec<(u16, u32)>, Vec<(u64, usize)>);

/// Lends slots for `len` bytes of payload in frames of `room` + `mss`,
/// writes what the core would into them (`room` bytes of headers, then as
/// much payload as each slot takes, at most `mss`, `data` in all) and
/// commits. Returns the frame lengths, the used elements and the frames.
fn peek_like_core(
    q: &mut Queue,
    mem: &Arc<GuestMemoryMmap>,
    n: usize,
    room: usize,
    mss: usize,
    data: usize,
) -> Result<Peeked, Grow> {
    let mut r = Reserved::new(q, Arc::clone(mem), opts());
    match r.grow(q, n, room + mss) {
        Grow::Added(_) => {}
        g => return Err(g),
    }
    let mut left = data;
    let mut lens = Vec::new();
    for (i, s) in r.slices().enumerate() {
        let chunk = left.min(mss).min(s.len().saturating_sub(room));
        if chunk == 0 {
            lens.push(0);
            continue;
        }
        s[..room].fill(0xee);
        s[room..room + chunk].fill(i as u8 + 1);
        left -= chunk;
        lens.push(room + chunk);
    }
    let (mut used, mut frames) = (Vec::new(), Vec::new());
    r.commit(q, &lens, &mut used, &mut frames);
    Ok((lens, used, frames))
}

#[test]
fn receive_slots_are_runs_of_adjacent_buffers() {
    // Three buffers that follow each other, then two apart.
    let (mem, ring, mut q) = rx_ring([0x10000, 0x10400, 0x10800, 0x20000, 0x30000], 0x400);
    let (room, mss) = (54, 1460);
    let (lens, used, frames) = peek_like_core(&mut q, &mem, 3, room, mss, 3000).unwrap();
    // Run 1: two buffers (a frame of 1460 bytes of payload needs 1526);
    // run 2: the third (adjacent, but run 1 was full); run 3: the fourth.
    assert_eq!(lens, vec![room + 1460, 1024 - HDR, room + 582]);
    assert_eq!(
        used,
        vec![
            (0, 1024),
            (1, (HDR + room + 1460 - 1024) as u32),
            (2, 1024),
            (3, (HDR + room + 582) as u32)
        ]
    );
    assert_eq!(frames[1], (0x10800 + HDR as u64, 1024 - HDR));
    // Nothing is published before the flush.
    assert_eq!(ring.used(&mem).0, 0);
    push_used(&mut q, &mem, used.into_iter());
    assert_eq!(ring.used(&mem).0, 4);
    let mut hdr = [0u8; HDR];
    mem.read_slice(&mut hdr, GuestAddress(0x10000)).unwrap();
    assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 2, "num_buffers");
    assert_eq!(hdr[0], 2, "DATA_VALID");
    mem.read_slice(&mut hdr, GuestAddress(0x10800)).unwrap();
    assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 1);
    // The payload landed after the headers, across the buffer boundary.
    let mut p = vec![0u8; 1460];
    mem.read_slice(&mut p, GuestAddress(0x10000 + (HDR + room) as u64))
        .unwrap();
    assert!(p.iter().all(|&b| b == 1));
    // The fifth buffer was not needed: still available.
    assert_eq!(virtq::rx_room(&mut q, &mem, 100, true, 8), 1);
}

#[test]
fn receive_slots_give_back_what_a_short_peek_left() {
    let (mem, _ring, mut q) = rx_ring((0..6).map(|i| 0x10000 + i * 0x400), 0x400);
    let (room, mss) = (54, 4000);
    // The socket had only 100 bytes: one short frame in the first buffer.
    let (lens, used, _) = peek_like_core(&mut q, &mem, 2, room, mss, 100).unwrap();
    assert_eq!(lens, vec![room + 100, 0]);
    assert_eq!(used, vec![(0, (HDR + room + 100) as u32)]);
    assert_eq!(
        virtq::rx_room(&mut q, &mem, 100, true, 8),
        5,
        "the rest is back"
    );
}

#[test]
fn receive_slots_refuse_small_or_overlapping_buffers() {
    let mem = memory();
    // Ring base, receive buffers (address, length), bytes to peek, the
    // refusal, and the buffers then left in the queue (all: none taken).
    type Case = (u64, &'static [(u64, u32)], usize, Grow, Option<usize>);
    let cases: [Case; 3] = [
        // Buffers too small for a slot: the copying path takes them.
        (0, &[(0x10000, 40)], 1000, Grow::Unusable, Some(1)),
        // The same buffer posted twice.
        (
            0x1000,
            &[(0x10000, 2000), (0x10000, 2000)],
            3000,
            Grow::Unusable,
            Some(2),
        ),
        // An empty queue.
        (0x2000, &[], 3000, Grow::Empty, None),
    ];
    for (base, bufs, data, refusal, left) in cases {
        let mut ring = Ring::new(base, 16);
        for &(a, len) in bufs {
            ring.add_rx(&mem, [a], len);
        }
        let mut q = ring.queue();
        let g = peek_like_core(&mut q, &mem, 8, 54, 1460, data).unwrap_err();
        assert_eq!(g, refusal);
        if let Some(left) = left {
            assert_eq!(
                virtq::rx_room(&mut q, &mem, 10, true, 8),
                left,
                "nothing taken"
            );
        }
    }
}
