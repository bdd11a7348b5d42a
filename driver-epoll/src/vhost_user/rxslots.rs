//! The receive queue's buffers as transmit slots: socket data is peeked
//! straight into guest memory and the core writes the headers in front of
//! it there, so TCP data reaches the guest with the one copy the kernel makes.
//!
//! With mergeable buffers the guest posts buffers of at most a page, and a
//! large frame spans several. The core wants each slot in one piece, so a
//! slot is a *run* of buffers that follow each other in guest memory (the
//! guest carves its buffers from 32 KiB pages in order, so most do): a run
//! grows until it holds a whole frame (virtio-net header, frame headers,
//! one MSS of payload) or the next buffer is elsewhere. The core makes each
//! frame as long as its slot allows, so frames follow the runs.
//!
//! After the core has written the frames, each run's first buffer gets the
//! virtio-net header (with the number of buffers the frame took), the
//! buffers go to the used ring with the bytes each got, and the ring's index
//! is published once. Buffers no frame needed (after the last frame) are put
//! back: they were taken last, so stepping the queue's position back
//! returns exactly them.

use super::memory::locate;
use super::virtq::{push_used, RxOpts};
use passt_core::TxSlot;
use std::io::IoSliceMut;
use std::sync::Arc;
use virtio_bindings::virtio_net::VIRTIO_NET_HDR_F_DATA_VALID;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// One run: buffers `chains[first..first + count]`, in one piece of region
/// `region` starting `off` bytes into it, `len` bytes long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    first: usize,
    count: usize,
    region: usize,
    off: u64,
    len: u64,
}

/// Receive buffers taken from the queue for one peek.
#[derive(Debug)]
pub(crate) struct Reserved {
    mem: Arc<GuestMemoryMmap>,
    /// Taken buffers in order: head, guest address, length.
    chains: Vec<(u16, u64, u32)>,
    runs: Vec<Run>,
    /// The queue's position before the first buffer was taken.
    start_avail: u16,
    opts: RxOpts,
    /// The slots' frame lengths, set by the core.
    lens: Vec<usize>,
}

/// What the receive queue offers for a peek.
#[derive(Debug)]
pub(crate) enum Reserve {
    /// Slots in guest memory.
    Slots(Reserved),
    /// No buffers at all: the data waits.
    Empty,
    /// Buffers these slots cannot use (without mergeable buffers, or too
    /// small for the headers): frames go the copying way.
    Unusable,
}

/// Host address and length of region `i`.
fn region_ptr(mem: &GuestMemoryMmap, i: usize) -> Option<(*mut u8, u64)> {
    let r = mem.iter().nth(i)?;
    Some((r.as_ptr(), vm_memory::GuestMemoryRegion::len(r)))
}

/// What a peek asks for: up to `k` slots whose payloads (at most `mss`
/// each, after `room` bytes of frame headers) add up to at most `len`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Want {
    pub(crate) k: usize,
    pub(crate) room: usize,
    pub(crate) mss: usize,
    pub(crate) len: usize,
}

/// Storage of a reservation, kept between peeks so none allocates.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub(crate) chains: Vec<(u16, u64, u32)>,
    pub(crate) runs: Vec<Run>,
}

/// Takes buffers from `q` for the slots `w` asks for.
pub(crate) fn reserve(
    q: &mut Queue,
    mem: &Arc<GuestMemoryMmap>,
    o: RxOpts,
    w: Want,
    store: Store,
) -> Reserve {
    let Want { k, room, mss, len } = w;
    let Store {
        mut chains,
        mut runs,
    } = store;
    chains.clear();
    runs.clear();
    if !o.mergeable {
        return Reserve::Unusable;
    }
    let start_avail = q.next_avail();
    let hdr = o.hdr_len as u64;
    let need = hdr + (room + mss) as u64;
    let min = hdr + room as u64 + 1;
    let payload = |r: &Run| (r.len.saturating_sub(hdr + room as u64)).min(mss as u64);
    let mut covered = 0u64;
    let mut cur: Option<Run> = None;
    let mut unusable = false;
    while runs.len() < k && covered < len as u64 {
        let Some(chain) = q.pop_descriptor_chain(&**mem) else {
            break;
        };
        let head = chain.head_index();
        // A mergeable buffer is one writable descriptor; a chain without
        // one, or outside guest memory, is not a buffer.
        let buf = chain.writable().next().and_then(|d| {
            let (gpa, blen) = (d.addr().0, d.len());
            locate(mem, gpa, u64::from(blen)).map(|(region, off)| (gpa, blen, region, off))
        });
        if let (Some(r), Some((_, blen, region, off))) = (cur.as_mut(), buf) {
            // A run grows to one frame, or to what is left to peek.
            let left = (len as u64).saturating_sub(covered);
            let want = need.min(hdr + room as u64 + left);
            if r.region == region && r.off + r.len == off && r.len < want {
                r.count += 1;
                r.len += u64::from(blen);
                chains.push((head, buf.map_or(0, |b| b.0), blen));
                continue;
            }
        }
        // The current run ends before this chain.
        if let Some(r) = cur.take() {
            if r.len < min {
                // Too small for a frame: it and this chain go back.
                unusable = true;
                chains.truncate(r.first);
                q.set_next_avail(q.next_avail().wrapping_sub(r.count as u16 + 1));
                break;
            }
            covered += payload(&r);
            runs.push(r);
            if runs.len() >= k || covered >= len as u64 {
                // This chain is not needed after all.
                q.set_next_avail(q.next_avail().wrapping_sub(1));
                break;
            }
        }
        match buf {
            None => chains.push((head, 0, 0)),
            Some((gpa, blen, region, off)) => {
                cur = Some(Run {
                    first: chains.len(),
                    count: 1,
                    region,
                    off,
                    len: u64::from(blen),
                });
                chains.push((head, gpa, blen));
            }
        }
    }
    if let Some(r) = cur.take() {
        if r.len >= min {
            runs.push(r);
        } else {
            unusable = true;
            chains.truncate(r.first);
            q.set_next_avail(q.next_avail().wrapping_sub(r.count as u16));
        }
    }
    if runs.is_empty() {
        // Nothing usable: everything taken goes back.
        q.set_next_avail(start_avail);
        let taken = chains.len();
        return if taken == 0 && !unusable {
            Reserve::Empty
        } else {
            Reserve::Unusable
        };
    }
    if overlapping(&runs) {
        q.set_next_avail(start_avail);
        return Reserve::Unusable;
    }
    Reserve::Slots(Reserved {
        mem: Arc::clone(mem),
        chains,
        runs,
        start_avail,
        opts: o,
        lens: Vec::new(),
    })
}

/// Whether two runs share bytes (a guest that posted one buffer twice).
fn overlapping(runs: &[Run]) -> bool {
    let mut v: Vec<(usize, u64, u64)> = runs.iter().map(|r| (r.region, r.off, r.len)).collect();
    v.sort_unstable();
    v.windows(2)
        .any(|w| w[0].0 == w[1].0 && w[0].1 + w[0].2 > w[1].1)
}

impl Reserved {
    /// The runs as byte slices of guest memory, after the virtio-net header.
    fn run_slices(&mut self) -> Vec<&mut [u8]> {
        let hdr = self.opts.hdr_len as u64;
        let mem = &self.mem;
        self.runs
            .iter()
            .filter_map(|r| {
                let (base, rlen) = region_ptr(mem, r.region)?;
                if r.off + r.len > rlen || r.len <= hdr {
                    return None;
                }
                let start = usize::try_from(r.off + hdr).ok()?;
                let len = usize::try_from(r.len - hdr).ok()?;
                // SAFETY: the range lies inside region `r.region` (checked
                // just above and by `locate`), which `self.mem` keeps
                // mapped for as long as the returned borrows of `self`
                // live. Runs do not overlap (checked by `reserve`), so the
                // slices are disjoint. The memory is shared with the guest,
                // which handed these buffers to the device and leaves them
                // alone until they are returned; one that writes anyway
                // only changes the bytes it will receive.
                Some(unsafe { std::slice::from_raw_parts_mut(base.add(start), len) })
            })
            .collect()
    }

    /// Payload areas for the peek: after `room` bytes of each slot, at most
    /// `mss` bytes each, `len` in all; what the core will make of each slot.
    pub(crate) fn payload_iovecs(
        &mut self,
        room: usize,
        mss: usize,
        len: usize,
    ) -> Vec<IoSliceMut<'_>> {
        let mut left = len;
        let mut out = Vec::with_capacity(self.runs.len());
        for s in self.run_slices() {
            let want = mss.min(s.len().saturating_sub(room)).min(left);
            if want == 0 {
                break;
            }
            left -= want;
            out.push(IoSliceMut::new(&mut s[room..room + want]));
        }
        out
    }

    /// The slots for the core.
    pub(crate) fn tx_slots(&mut self) -> Vec<TxSlot<'_>> {
        self.run_slices()
            .into_iter()
            .map(|buf| TxSlot { buf, frame_len: 0 })
            .collect()
    }

    /// Records the frame lengths the core set.
    pub(crate) fn set_lens(&mut self, lens: impl Iterator<Item = usize>) {
        self.lens.clear();
        self.lens.extend(lens);
    }

    /// The frames written, for capture.
    pub(crate) fn frames(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        let hdr = self.opts.hdr_len as u64;
        self.runs
            .iter()
            .zip(self.lens.iter())
            .filter(|(_, &l)| l > 0)
            .filter_map(move |(r, &l)| {
                let gpa = self.chains.get(r.first)?.1;
                let mut v = vec![0u8; l];
                self.mem.read_slice(&mut v, GuestAddress(gpa + hdr)).ok()?;
                Some(v)
            })
    }

    /// Gives the buffers to the guest: headers, used ring, index. Returns
    /// the number of frames, and the pieces to keep for the next peek.
    pub(crate) fn commit(self, q: &mut Queue) -> (usize, Store) {
        let hdr = self.opts.hdr_len;
        let mut used: Vec<(u16, u32)> = Vec::with_capacity(self.chains.len());
        let mut frames = 0;
        let mut last_used_chain = 0usize;
        for (i, r) in self.runs.iter().enumerate() {
            let l = self.lens.get(i).copied().unwrap_or(0);
            if l == 0 {
                break;
            }
            // Buffers before this run that are not receive buffers (no
            // address) go back unused, in order.
            for c in &self.chains[last_used_chain..r.first] {
                used.push((c.0, 0));
            }
            let mut left = (hdr + l) as u64;
            let mut nb = 0u16;
            for c in &self.chains[r.first..r.first + r.count] {
                if left == 0 {
                    break;
                }
                let take = left.min(u64::from(c.2));
                used.push((c.0, take as u32));
                left -= take;
                nb += 1;
            }
            last_used_chain = r.first + usize::from(nb);
            let mut h = [0u8; 12];
            if self.opts.csum_valid {
                h[0] = VIRTIO_NET_HDR_F_DATA_VALID as u8;
            }
            h[10..12].copy_from_slice(&nb.to_le_bytes());
            if let Some(&(_, gpa, _)) = self.chains.get(r.first) {
                let _ = self.mem.write_slice(&h[..hdr.min(12)], GuestAddress(gpa));
            }
            frames += 1;
        }
        // Everything after the last buffer used goes back to the queue.
        q.set_next_avail(self.start_avail.wrapping_add(last_used_chain as u16));
        push_used(q, &self.mem, used.into_iter());
        let Reserved { chains, runs, .. } = self;
        (frames, Store { chains, runs })
    }
}
