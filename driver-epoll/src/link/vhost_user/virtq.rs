//! Frames in and out of the split virtqueues.
//!
//! * **Guest → passt** ([`fill_tx`]): each available chain of the transmit
//!   queue holds a virtio-net header and a frame. A frame that lies in one
//!   piece of guest memory (one descriptor, or descriptors that follow each
//!   other in memory) is handed to the core where it is: the batch buffer is
//!   the guest memory region itself and the descriptor an offset into it.
//!   Only a frame scattered over separate pieces is copied, into a bounce
//!   buffer that forms a batch of its own. The chains go back to the guest
//!   ([`TxBatch::complete`]) after the core has carried out the batch.
//! * **passt → guest** ([`RxFill`]): each frame, behind a virtio-net header,
//!   is written into the receive queue's buffers; with mergeable buffers a
//!   frame spans as many chains as it needs and the header says how many.
//!   The used ring is published once per flush, so the guest never sees a
//!   frame whose later buffers are still missing.
//! * **Notifications**: the guest is signalled on the queue's call eventfd
//!   after each flush, unless it asked not to be (`VRING_AVAIL_F_NO_INTERRUPT`).

use super::memory::{locate, region_bytes};
use passt_core::FrameRef;
use std::fs::File;
use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};
use virtio_bindings::virtio_net::VIRTIO_NET_HDR_F_DATA_VALID;
use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryRegion;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Longest frame accepted from the guest (`ETH_MAX_MTU` + Ethernet header).
pub(crate) const MAX_FRAME: usize = 65535 + 14;
/// Most descriptors of one chain looked at.
const MAX_CHAIN: usize = 64;

/// Where the frames of a batch lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    /// In guest memory region `idx`, offsets counted from `base`.
    Region { idx: usize, base: u64 },
    /// In the bounce buffer.
    Bounce,
}

/// Where one frame lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    /// In one piece of region `region`, `off` bytes into it.
    Region { region: usize, off: u64, len: u32 },
    /// Scattered: copied.
    Bounce { len: u32 },
    /// Not a frame (shorter than the header, longer than any frame, or
    /// outside guest memory).
    Drop,
}

/// A batch of frames from the transmit queue, and the chains that held them.
#[derive(Debug)]
pub(crate) struct TxBatch {
    /// The frames, as offsets into [`TxBatch::buffer`].
    pub(crate) refs: Vec<FrameRef>,
    /// Heads of the chains to return once the batch is done.
    heads: Vec<u16>,
    src: Option<Src>,
    bounce: Vec<u8>,
    /// A chain popped that did not fit the batch: first in the next one.
    carry: Option<(u16, Loc)>,
    carry_descs: Vec<(u64, u32)>,
    descs: Vec<(u64, u32)>,
    /// Chains dropped (not frames), counted.
    pub(crate) dropped: u64,
}

impl TxBatch {
    pub(crate) fn new(max_frames: usize) -> TxBatch {
        TxBatch {
            refs: Vec::with_capacity(max_frames.max(1)),
            heads: Vec::with_capacity(max_frames.max(1) + 1),
            src: None,
            bounce: Vec::new(),
            carry: None,
            carry_descs: Vec::with_capacity(MAX_CHAIN),
            descs: Vec::with_capacity(MAX_CHAIN),
            dropped: 0,
        }
    }

    /// Whether chains are waiting to be returned.
    pub(crate) fn has_chains(&self) -> bool {
        !self.heads.is_empty()
    }

    /// The batch buffer the refs point into.
    pub(crate) fn buffer<'a>(&'a self, mem: &'a GuestMemoryMmap) -> &'a [u8] {
        match self.src {
            Some(Src::Region { idx, base }) => region_bytes(mem, idx)
                .and_then(|r| {
                    let start = usize::try_from(base).ok()?;
                    let end = start.saturating_add(u32::MAX as usize).min(r.len());
                    r.get(start..end)
                })
                .unwrap_or(&[]),
            Some(Src::Bounce) => &self.bounce,
            None => &[],
        }
    }

    fn start(&mut self) {
        self.refs.clear();
        self.heads.clear();
        self.bounce.clear();
        self.src = None;
    }

    /// Adds a frame if it belongs with the batch's others; false otherwise.
    fn add(
        &mut self,
        mem: &GuestMemoryMmap,
        hdr_len: usize,
        head: u16,
        loc: Loc,
        descs: &[(u64, u32)],
    ) -> bool {
        match loc {
            Loc::Drop => {
                self.dropped += 1;
                self.heads.push(head);
                true
            }
            Loc::Region { region, off, len } => {
                let src = match self.src {
                    None => {
                        let rlen = mem.iter().nth(region).map_or(0, |r| r.len());
                        // Offsets are 32 bits: a larger region is seen
                        // through a window starting at the first frame.
                        let base = if rlen <= u64::from(u32::MAX) { 0 } else { off };
                        let s = Src::Region { idx: region, base };
                        self.src = Some(s);
                        s
                    }
                    Some(s) => s,
                };
                let Src::Region { idx, base } = src else {
                    return false;
                };
                let rel = off.wrapping_sub(base);
                if idx != region || off < base || rel + u64::from(len) > u64::from(u32::MAX) {
                    return false;
                }
                self.refs.push(FrameRef {
                    offset: rel as u32,
                    len,
                });
                self.heads.push(head);
                true
            }
            Loc::Bounce { len } => {
                match self.src {
                    None => self.src = Some(Src::Bounce),
                    Some(Src::Bounce) => {}
                    Some(_) => return false,
                }
                let start = self.bounce.len();
                self.bounce.resize(start + len as usize, 0);
                let ok = gather(mem, descs, hdr_len, &mut self.bounce[start..]);
                if ok {
                    self.refs.push(FrameRef {
                        offset: start as u32,
                        len,
                    });
                } else {
                    self.bounce.truncate(start);
                    self.dropped += 1;
                }
                self.heads.push(head);
                true
            }
        }
    }

    /// Returns the batch's chains to the guest (used, nothing written).
    pub(crate) fn complete(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) {
        let heads = std::mem::take(&mut self.heads);
        push_used(q, mem, heads.iter().map(|&h| (h, 0)));
        self.heads = heads;
        self.heads.clear();
    }
}

/// Copies the frame after the `hdr_len`-byte header out of `descs` into `out`.
fn gather(mem: &GuestMemoryMmap, descs: &[(u64, u32)], hdr_len: usize, out: &mut [u8]) -> bool {
    let n = out.len();
    walk(descs, hdr_len as u64, n, |a, r| {
        mem.read_slice(&mut out[r], a).is_ok()
    })
}

/// Walks `n` bytes of the area made of `descs` from byte `pos` on: calls
/// `copy` with the guest address and the range of the caller's `n` bytes of
/// each descriptor's share, in order. Returns whether all `n` bytes were
/// covered (not if an address overflows, a copy fails or the area ends).
fn walk(
    descs: &[(u64, u32)],
    mut pos: u64,
    n: usize,
    mut copy: impl FnMut(GuestAddress, core::ops::Range<usize>) -> bool,
) -> bool {
    let mut done = 0usize;
    for &(addr, len) in descs {
        let len = u64::from(len);
        if pos >= len {
            pos -= len;
            continue;
        }
        let k = ((len - pos) as usize).min(n - done);
        let Some(a) = addr.checked_add(pos) else {
            return false;
        };
        if !copy(GuestAddress(a), done..done + k) {
            return false;
        }
        done += k;
        pos = 0;
        if done == n {
            break;
        }
    }
    done == n
}

/// Where the frame after the header of a chain made of `descs` lies.
fn classify(mem: &GuestMemoryMmap, hdr_len: usize, descs: &[(u64, u32)]) -> Loc {
    let total: u64 = descs.iter().map(|&(_, l)| u64::from(l)).sum();
    let hdr = hdr_len as u64;
    if total <= hdr || total - hdr > MAX_FRAME as u64 {
        return Loc::Drop;
    }
    let len = (total - hdr) as u32;
    // The descriptor where the frame starts, and the offset in it.
    let mut skip = hdr;
    let mut i = 0;
    while let Some(&(_, l)) = descs.get(i) {
        if skip < u64::from(l) {
            break;
        }
        skip -= u64::from(l);
        i += 1;
    }
    let Some(&(addr, l)) = descs.get(i) else {
        return Loc::Drop;
    };
    // Descriptors that follow each other in memory form one piece.
    let mut end = addr.saturating_add(u64::from(l));
    for &(a, l) in &descs[i + 1..] {
        if a != end {
            break;
        }
        end = end.saturating_add(u64::from(l));
    }
    let start = addr.saturating_add(skip);
    if end - start >= u64::from(len) {
        if let Some((region, off)) = locate(mem, start, u64::from(len)) {
            return Loc::Region { region, off, len };
        }
    }
    // Every piece must be guest memory; `gather` checks as it copies.
    Loc::Bounce { len }
}

/// What [`fill_tx`] left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// The queue has no more chains.
    Empty,
    /// The batch is full or the next frame lies elsewhere: call again after
    /// this batch is done.
    More,
}

/// Pops transmit chains into `b` (emptied first) until the queue is empty,
/// `max` frames are in, or a frame lies elsewhere than the batch's others.
pub(crate) fn fill_tx(
    q: &mut Queue,
    mem: &GuestMemoryMmap,
    hdr_len: usize,
    b: &mut TxBatch,
    max: usize,
) -> Fill {
    b.start();
    if let Some((head, loc)) = b.carry.take() {
        let descs = std::mem::take(&mut b.carry_descs);
        b.add(mem, hdr_len, head, loc, &descs);
        b.carry_descs = descs;
    }
    while b.refs.len() < max {
        let Some(chain) = q.pop_descriptor_chain(mem) else {
            return Fill::Empty;
        };
        let head = chain.head_index();
        let mut descs = std::mem::take(&mut b.descs);
        descs.clear();
        descs.extend(
            chain
                .readable()
                .take(MAX_CHAIN)
                .map(|d| (d.addr().raw_value(), d.len())),
        );
        let loc = classify(mem, hdr_len, &descs);
        let fits = b.add(mem, hdr_len, head, loc, &descs);
        if !fits {
            b.carry = Some((head, loc));
            b.carry_descs.clear();
            b.carry_descs.extend_from_slice(&descs);
            b.descs = descs;
            return Fill::More;
        }
        b.descs = descs;
    }
    Fill::More
}

/// Writes used elements `(head, bytes written)` and publishes them with one
/// update of the used index.
pub(crate) fn push_used(
    q: &mut Queue,
    mem: &GuestMemoryMmap,
    elems: impl Iterator<Item = (u16, u32)>,
) {
    let size = q.size();
    if size == 0 {
        return;
    }
    let used = GuestAddress(q.used_ring());
    let mut next = Wrapping(q.next_used());
    let mut any = false;
    for (id, len) in elems {
        let slot = u64::from(next.0 % size);
        let Some(a) = used.checked_add(4 + slot * 8) else {
            return;
        };
        let elem = (u64::from(len) << 32 | u64::from(id)).to_le();
        if mem.write_obj(elem, a).is_err() {
            return;
        }
        next += Wrapping(1);
        any = true;
    }
    if !any {
        return;
    }
    let Some(idx) = used.checked_add(2) else {
        return;
    };
    // The elements are visible before the index that publishes them.
    if mem.store(next.0.to_le(), idx, Ordering::Release).is_ok() {
        q.set_next_used(next.0);
    }
}

/// Signals the guest on `call`, unless it suppressed interrupts for `q`.
pub(crate) fn notify(q: &Queue, mem: &GuestMemoryMmap, call: Option<&File>) {
    let Some(call) = call else { return };
    // The used index is written before the guest's flag is read (it clears
    // the flag, then checks the index).
    fence(Ordering::SeqCst);
    let flags: u16 = mem
        .load(GuestAddress(q.avail_ring()), Ordering::Acquire)
        .map(u16::from_le)
        .unwrap_or(0);
    if u32::from(flags) & VRING_AVAIL_F_NO_INTERRUPT != 0 {
        return;
    }
    let _ = nix::unistd::write(call, &1u64.to_ne_bytes());
}

/// How frames are written into the receive queue.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RxOpts {
    /// Bytes of the virtio-net header (10 or 12).
    pub(crate) hdr_len: usize,
    /// A frame may span several chains (`num_buffers` in the header).
    pub(crate) mergeable: bool,
    /// Mark frames `DATA_VALID`.
    pub(crate) csum_valid: bool,
}

/// Frames written into the receive queue, before they are published.
#[derive(Debug, Default)]
pub(crate) struct RxFill {
    used: Vec<(u16, u32)>,
    /// The descriptors the current frame's header went into.
    first: Vec<(u64, u32)>,
    /// Frames dropped because one chain could not hold them (without
    /// mergeable buffers).
    pub(crate) dropped: u64,
}

/// Writes `data` at byte `pos` of the area made of `descs`.
fn scatter(mem: &GuestMemoryMmap, descs: &[(u64, u32)], pos: u64, data: &[u8]) -> bool {
    walk(descs, pos, data.len(), |a, r| {
        mem.write_slice(&data[r], a).is_ok()
    })
}

impl RxFill {
    /// Writes one frame into the next chains of `q`. Returns false if the
    /// queue ran out of buffers (nothing is taken from it then); a frame one
    /// chain cannot hold without mergeable buffers is dropped (counted) and
    /// true returned.
    pub(crate) fn push(
        &mut self,
        q: &mut Queue,
        mem: &GuestMemoryMmap,
        o: RxOpts,
        frame: &[u8],
    ) -> bool {
        let start_avail = q.next_avail();
        let start_used = self.used.len();
        let mut hdr = [0u8; 12];
        if o.csum_valid {
            hdr[0] = VIRTIO_NET_HDR_F_DATA_VALID as u8;
        }
        let hdr = &hdr[..o.hdr_len.min(12)];
        let need = (hdr.len() + frame.len()) as u64;
        let mut written = 0u64;
        let mut chains = 0u16;
        self.first.clear();
        while written < need {
            let Some(chain) = q.pop_descriptor_chain(mem) else {
                q.set_next_avail(start_avail);
                self.used.truncate(start_used);
                return false;
            };
            let head = chain.head_index();
            chains = chains.wrapping_add(1);
            let mut in_chain = 0u64;
            for d in chain.writable().take(MAX_CHAIN) {
                let (addr, cap) = (d.addr().raw_value(), u64::from(d.len()));
                let take = cap.min(need - written);
                if take == 0 {
                    continue;
                }
                if chains == 1 && self.first.len() < 4 {
                    self.first.push((addr, d.len()));
                }
                if !write_part(mem, addr, written, take, hdr, frame) {
                    break;
                }
                written += take;
                in_chain += take;
                if written == need {
                    break;
                }
            }
            self.used.push((head, in_chain as u32));
            if written < need && !o.mergeable {
                // One chain per frame, and this one is too small.
                q.set_next_avail(start_avail);
                self.used.truncate(start_used);
                // Skip the chain: returned unused, so the queue moves on.
                if let Some(c) = q.pop_descriptor_chain(mem) {
                    self.used.push((c.head_index(), 0));
                }
                self.dropped += 1;
                return true;
            }
        }
        if o.mergeable && o.hdr_len >= 12 {
            let first = std::mem::take(&mut self.first);
            scatter(mem, &first, 10, &chains.to_le_bytes());
            self.first = first;
        }
        true
    }

    /// Whether frames are waiting to be published.
    pub(crate) fn is_empty(&self) -> bool {
        self.used.is_empty()
    }

    /// Publishes the frames written so far.
    pub(crate) fn publish(&mut self, q: &mut Queue, mem: &GuestMemoryMmap) {
        push_used(q, mem, self.used.drain(..));
    }
}

/// Writes bytes `[pos, pos + len)` of `hdr ++ frame` at guest address `addr`.
fn write_part(
    mem: &GuestMemoryMmap,
    addr: u64,
    pos: u64,
    len: u64,
    hdr: &[u8],
    frame: &[u8],
) -> bool {
    let h = hdr.len() as u64;
    let (mut pos, end) = (pos, pos + len);
    let mut a = addr;
    while pos < end {
        let (src, n) = if pos < h {
            let n = (h - pos).min(end - pos);
            (&hdr[pos as usize..(pos + n) as usize], n)
        } else {
            let p = (pos - h) as usize;
            let n = end - pos;
            match frame.get(p..p + n as usize) {
                Some(s) => (s, n),
                None => return false,
            }
        };
        if mem.write_slice(src, GuestAddress(a)).is_err() {
            return false;
        }
        pos += n;
        a += n;
    }
    true
}

/// How many of `want` frames of `need` bytes (header included) the
/// available chains of `q` hold, filled in order as [`RxFill::push`] would.
/// Reads the chains without taking them.
#[cfg(test)]
pub(crate) fn rx_room(
    q: &mut Queue,
    mem: &GuestMemoryMmap,
    need: usize,
    mergeable: bool,
    want: usize,
) -> usize {
    let start = q.next_avail();
    let need = need as u64;
    let (mut frames, mut have) = (0usize, 0u64);
    while frames < want {
        let Some(chain) = q.pop_descriptor_chain(mem) else {
            break;
        };
        let cap: u64 = chain
            .writable()
            .take(MAX_CHAIN)
            .map(|d| u64::from(d.len()))
            .sum();
        if mergeable {
            have += cap;
            if have >= need {
                frames += 1;
                have = 0;
            }
        } else if cap >= need {
            frames += 1;
        }
    }
    q.set_next_avail(start);
    frames
}
