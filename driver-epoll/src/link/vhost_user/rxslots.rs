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
//! When the core is done, each run's first buffer gets the virtio-net
//! header (with the number of buffers the frame took), and the buffers and
//! the bytes each got are kept for the used ring, which is written and
//! published on the next flush. Buffers no frame needed (after the last
//! frame) are put back: they were taken last, so stepping the queue's
//! position back returns exactly them.

use super::memory::locate;
use super::virtq::RxOpts;
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

/// What the receive queue offered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Grow {
    /// This many more slots.
    Added(usize),
    /// No buffers at all: the link is full.
    Empty,
    /// Buffers these slots cannot use (too small for the headers, posted
    /// twice): frames go the copying way.
    Unusable,
}

/// Receive buffers taken from the queue and not committed yet.
#[derive(Debug)]
pub(crate) struct Reserved {
    mem: Arc<GuestMemoryMmap>,
    /// Taken buffers in order: head, guest address (0: not a buffer),
    /// length.
    chains: Vec<(u16, u64, u32)>,
    runs: Vec<Run>,
    /// The queue's position before the first buffer was taken.
    start_avail: u16,
    opts: RxOpts,
}

/// Host address and length of region `i`.
fn region_ptr(mem: &GuestMemoryMmap, i: usize) -> Option<(*mut u8, u64)> {
    let r = mem.iter().nth(i)?;
    Some((r.as_ptr(), vm_memory::GuestMemoryRegion::len(r)))
}

impl Reserved {
    /// An empty reservation at the queue's current position.
    pub(crate) fn new(q: &Queue, mem: Arc<GuestMemoryMmap>, opts: RxOpts) -> Reserved {
        Reserved {
            mem,
            chains: Vec::new(),
            runs: Vec::new(),
            start_avail: q.next_avail(),
            opts,
        }
    }

    /// Slots reserved.
    pub(crate) fn len(&self) -> usize {
        self.runs.len()
    }

    /// Takes buffers from `q` for up to `n` more slots of up to `frame`
    /// bytes (virtio-net header not included).
    pub(crate) fn grow(&mut self, q: &mut Queue, n: usize, frame: usize) -> Grow {
        let hdr = self.opts.hdr_len as u64;
        let need = hdr + frame as u64;
        // The core's promise to its callers: a slot holds at least this.
        let min = hdr + passt_core::MIN_SLOT as u64;
        let before = self.runs.len();
        let mut cur: Option<Run> = None;
        let mut unusable = false;
        let mem = Arc::clone(&self.mem);
        while self.runs.len() - before < n {
            let Some(chain) = q.pop_descriptor_chain(&*mem) else {
                break;
            };
            let head = chain.head_index();
            // A mergeable buffer is one writable descriptor; a chain without
            // one, or outside guest memory, is not a buffer.
            let buf = chain.writable().next().and_then(|d| {
                let (gpa, blen) = (d.addr().0, d.len());
                locate(&mem, gpa, u64::from(blen)).map(|(region, off)| (gpa, blen, region, off))
            });
            if let (Some(r), Some((gpa, blen, region, off))) = (cur.as_mut(), buf) {
                if r.region == region && r.off + r.len == off && r.len < need {
                    r.count += 1;
                    r.len += u64::from(blen);
                    self.chains.push((head, gpa, blen));
                    continue;
                }
            }
            // The current run ends before this chain.
            if let Some(r) = cur.take() {
                if r.len < min {
                    // Too small for a frame: it and this chain go back.
                    unusable = true;
                    self.chains.truncate(r.first);
                    q.set_next_avail(q.next_avail().wrapping_sub(r.count as u16 + 1));
                    break;
                }
                self.runs.push(r);
                if self.runs.len() - before >= n {
                    // This chain is not needed after all.
                    q.set_next_avail(q.next_avail().wrapping_sub(1));
                    break;
                }
            }
            match buf {
                None => self.chains.push((head, 0, 0)),
                Some((gpa, blen, region, off)) => {
                    cur = Some(Run {
                        first: self.chains.len(),
                        count: 1,
                        region,
                        off,
                        len: u64::from(blen),
                    });
                    self.chains.push((head, gpa, blen));
                }
            }
        }
        if let Some(r) = cur.take() {
            if r.len >= min {
                self.runs.push(r);
            } else {
                unusable = true;
                self.chains.truncate(r.first);
                q.set_next_avail(q.next_avail().wrapping_sub(r.count as u16));
            }
        }
        if overlapping(&self.runs) {
            unusable = true;
            while self.runs.len() > before {
                self.runs.pop();
            }
        }
        let added = self.runs.len() - before;
        if added > 0 {
            return Grow::Added(added);
        }
        // Nothing new: what this call took goes back.
        let keep = self.runs.last().map_or(0, |r| r.first + r.count);
        let back = self.chains.len().saturating_sub(keep);
        let back_avail = self.start_avail.wrapping_add(keep as u16);
        self.chains.truncate(keep);
        let taken = q.next_avail().wrapping_sub(back_avail);
        q.set_next_avail(back_avail);
        if unusable || back > 0 || taken > 0 {
            Grow::Unusable
        } else {
            Grow::Empty
        }
    }

    /// The runs as byte slices of guest memory, after the virtio-net header.
    pub(crate) fn slices(&mut self) -> Vec<&mut [u8]> {
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
                // live. Runs do not overlap (checked by `grow`), so the
                // slices are disjoint. The memory is shared with the guest,
                // which handed these buffers to the device and leaves them
                // alone until they are returned; one that writes anyway
                // only changes the bytes it will receive.
                Some(unsafe { std::slice::from_raw_parts_mut(base.add(start), len) })
            })
            .collect()
    }

    /// Ends the reservation: the first runs hold frames of `lens` bytes
    /// (0: none, and none after it). Writes each frame's virtio-net header,
    /// appends the used elements to `used` and, for capture, each frame's
    /// guest address and length to `frames`; puts back the buffers no frame
    /// took. Returns the number of frames.
    pub(crate) fn commit(
        self,
        q: &mut Queue,
        lens: &[usize],
        used: &mut Vec<(u16, u32)>,
        frames: &mut Vec<(u64, usize)>,
    ) -> usize {
        let hdr = self.opts.hdr_len;
        let mut n = 0;
        let mut last_used_chain = 0usize;
        for (r, &l) in self.runs.iter().zip(lens) {
            if l == 0 {
                break;
            }
            // Chains before this run that are not buffers go back unused,
            // in order.
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
                frames.push((gpa + hdr as u64, l));
            }
            n += 1;
        }
        // Everything after the last buffer used goes back to the queue.
        q.set_next_avail(self.start_avail.wrapping_add(last_used_chain as u16));
        n
    }
}

/// Whether two runs share bytes (a guest that posted one buffer twice).
fn overlapping(runs: &[Run]) -> bool {
    let mut v: Vec<(usize, u64, u64)> = runs.iter().map(|r| (r.region, r.off, r.len)).collect();
    v.sort_unstable();
    v.windows(2)
        .any(|w| w[0].0 == w[1].0 && w[0].1 + w[0].2 > w[1].1)
}
