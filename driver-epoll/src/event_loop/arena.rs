//! The transmit arena: fixed full-size slots that frames from the core and
//! peeked TCP payload share, flushed to the guest link in order.

use super::*;

/// Bytes before each frame in a transmit slot: room for qemu's length prefix.
pub(crate) const TAP_HDR: usize = 4;
/// Largest Ethernet frame on the guest link (`ETH_MAX_MTU` + header).
pub(crate) const MAX_FRAME: usize = 65535 + 14;
/// Bytes before each frame in a transmit slot: room for qemu's length
/// prefix ([`TAP_HDR`]) or a tap's virtio-net header, written in place.
pub(crate) const FRAME_ROOM: usize = passt_core::VIRTIO_NET_HDR_V1_LEN;
/// Size of one transmit slot.
pub(crate) const SLOT_LEN: usize = FRAME_ROOM + MAX_FRAME + 1;
/// Bytes at the start of a transmit slot touched at start-up: room for the
/// largest control frame the core builds (a DHCP reply).
const CONTROL_FRAME_ROOM: usize = 2048;
/// Slots in the transmit arena (upstream passt uses 128 TCP frames per flush).
pub(crate) const TX_SLOTS: usize = 128;
/// Bytes of the receive batch buffer (passt: 8 MiB per read from qemu).
pub(crate) const RX_BYTES: usize = 8 << 20;

/// The transmit arena: fixed slots, each a full-size frame with room for the
/// qemu length prefix or a virtio-net header in front. Control frames from `poll_frame` and peeked
/// TCP payload share it, so frames leave in the order the core produced them.
#[derive(Debug)]
pub(crate) struct TxArena {
    pub(super) buf: Vec<u8>,
    /// Next unused slot.
    next: usize,
    /// Finished frames in order: (slot, frame length).
    frames: Vec<(usize, usize)>,
    /// The offload metadata of each of `frames`.
    metas: Vec<FrameMeta>,
    /// Slots from `next` on lent for frames and not committed yet.
    reserved: usize,
}

impl TxArena {
    pub(crate) fn new(slots: usize) -> Self {
        let mut buf = vec![0; slots.max(1) * SLOT_LEN];
        // The first pages of every slot, where control frames (resets,
        // ARP, DHCP replies) go, are touched now: a burst of them (a SYN
        // flood refused with resets) then costs no memory it did not have
        // at start. The rest of a slot is touched by the first full-size
        // frame through it, as any bulk transfer does.
        for slot in buf.chunks_mut(SLOT_LEN) {
            let head = FRAME_ROOM + CONTROL_FRAME_ROOM;
            for i in (0..head.min(slot.len())).step_by(4096).chain([head - 1]) {
                if let Some(b) = slot.get_mut(i) {
                    // SAFETY: a valid, aligned pointer to a byte of `slot`;
                    // volatile so that the store of a zero to zeroed memory
                    // is kept.
                    unsafe { std::ptr::write_volatile(b, 0) };
                }
            }
        }
        TxArena {
            buf,
            next: 0,
            frames: Vec::with_capacity(slots.max(1)),
            metas: Vec::with_capacity(slots.max(1)),
            reserved: 0,
        }
    }

    pub(crate) fn slots(&self) -> usize {
        self.buf.len() / SLOT_LEN
    }

    pub(crate) fn free(&self) -> usize {
        self.slots().saturating_sub(self.next)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }

    pub(crate) fn clear(&mut self) {
        self.next = 0;
        self.frames.clear();
        self.metas.clear();
        self.reserved = 0;
    }

    /// Lends up to `n` more free slots; returns how many.
    pub(crate) fn reserve(&mut self, n: usize) -> usize {
        let k = n.min(self.free().saturating_sub(self.reserved));
        self.reserved += k;
        k
    }

    /// Slots lent and not committed yet.
    pub(crate) fn reserved(&self) -> usize {
        self.reserved
    }

    /// The frame areas of the lent slots, in order.
    pub(crate) fn reserved_areas(&mut self) -> Vec<&mut [u8]> {
        let (first, k) = (self.next, self.reserved);
        self.buf
            .chunks_mut(SLOT_LEN)
            .skip(first)
            .take(k)
            .map(|c| &mut c[FRAME_ROOM..])
            .collect()
    }

    /// Ends the loan: the lent slots hold frames of `lens` bytes (0: none).
    pub(crate) fn commit_reserved(&mut self, lens: &[usize]) {
        self.commit_reserved_meta(lens, &[]);
    }

    /// Ends the loan like [`Self::commit_reserved`], with each frame's
    /// offload metadata (missing ones: plain).
    pub(crate) fn commit_reserved_meta(&mut self, lens: &[usize], metas: &[FrameMeta]) {
        let n = lens.len().min(self.reserved);
        self.commit_slots(&lens[..n], metas);
        self.reserved = 0;
    }

    #[cfg(test)]
    fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        let start = i * SLOT_LEN;
        &mut self.buf[start..start + SLOT_LEN]
    }

    /// The frame area of the next free slot (`None` if full).
    #[cfg(test)]
    pub(crate) fn next_frame_buf(&mut self) -> Option<&mut [u8]> {
        if self.free() == 0 {
            return None;
        }
        let i = self.next;
        Some(&mut self.slot_mut(i)[FRAME_ROOM..])
    }

    /// Marks the next free slot as holding a frame of `len` bytes.
    #[cfg(test)]
    pub(crate) fn commit(&mut self, len: usize) {
        if self.free() > 0 && len > 0 && len <= MAX_FRAME {
            self.frames.push((self.next, len));
            self.metas.push(FrameMeta::PLAIN);
            self.next += 1;
        }
    }

    /// Frame `i` in send order.
    pub(crate) fn frame(&self, i: usize) -> Option<&[u8]> {
        let &(slot, len) = self.frames.get(i)?;
        let start = slot * SLOT_LEN + FRAME_ROOM;
        self.buf.get(start..start + len)
    }

    /// Frame `i` behind its offload metadata written as a virtio-net header
    /// of `hdr_len` bytes (at most [`FRAME_ROOM`]).
    pub(crate) fn vnet_frame(&mut self, i: usize, hdr_len: usize) -> Option<&[u8]> {
        let &(slot, len) = self.frames.get(i)?;
        let meta = self.metas.get(i).copied().unwrap_or_default();
        let start = (slot * SLOT_LEN + FRAME_ROOM).checked_sub(hdr_len)?;
        let s = self.buf.get_mut(start..start + hdr_len + len)?;
        meta.write_virtio(&mut s[..hdr_len])?;
        Some(s)
    }

    /// Frame `i` with its 4-byte big-endian length prefix written in front.
    pub(crate) fn prefixed_frame(&mut self, i: usize) -> Option<&[u8]> {
        let &(slot, len) = self.frames.get(i)?;
        let start = slot * SLOT_LEN + FRAME_ROOM - TAP_HDR;
        let s = self.buf.get_mut(start..start + TAP_HDR + len)?;
        s[..TAP_HDR].copy_from_slice(&u32::try_from(len).ok()?.to_be_bytes());
        Some(s)
    }

    /// Every frame with its length prefix, for one `sendmsg`.
    pub(crate) fn prefixed_iovecs(&mut self) -> Vec<IoSlice<'_>> {
        for i in 0..self.frames.len() {
            let _ = self.prefixed_frame(i);
        }
        let buf = &self.buf;
        self.frames
            .iter()
            .map(|&(slot, len)| {
                let start = slot * SLOT_LEN + FRAME_ROOM - TAP_HDR;
                IoSlice::new(&buf[start..start + TAP_HDR + len])
            })
            .collect()
    }

    /// Records the frames the core finished in the next `lens.len()` slots.
    fn commit_slots(&mut self, lens: &[usize], metas: &[FrameMeta]) {
        let mut last_used = None;
        for (n, &len) in lens.iter().enumerate() {
            if len > 0 && len <= MAX_FRAME {
                self.frames.push((self.next + n, len));
                self.metas
                    .push(metas.get(n).copied().unwrap_or(FrameMeta::PLAIN));
                last_used = Some(n);
            }
        }
        if let Some(n) = last_used {
            self.next += n + 1;
        }
    }
}
