//! The guest link's transmit side as the core's [`TxRing`].
//!
//! A tap device and qemu's stream socket lend slots of the transmit arena
//! (each a full-size frame with room for qemu's length prefix in front) and
//! send them on `flush`: one `write()` per frame to the tap (behind its
//! virtio-net header, written in the room in front, when the tap has
//! them: the frames' offload metadata is kept with them), one `sendmsg`
//! for all of them to qemu. vhost-user lends the guest's receive buffers
//! themselves where it can (see `vhost_user/rxslots.rs`), and otherwise
//! stages frames in the arena and copies them into the receive queue on
//! `flush`. Captured frames are written as they are sent.

use crate::event_loop::{Link, TxArena, MAX_FRAME};
use crate::pcap::Pcap;
use passt_core::{FrameMeta, Reserved, SlotUse, TxRing};

/// The transmit side of the event loop's guest link.
pub(crate) struct LinkTx<'a> {
    pub(crate) arena: &'a mut TxArena,
    pub(crate) link: &'a mut Link,
    pub(crate) pcap: &'a mut Option<Pcap>,
}

impl TxRing for LinkTx<'_> {
    fn reserve(&mut self, n: usize, len: usize, how: SlotUse) -> usize {
        if len > MAX_FRAME {
            return 0;
        }
        match &mut *self.link {
            Link::VhostUser(v) => v.reserve(self.arena, n, len, how),
            _ => self.arena.reserve(n),
        }
    }

    fn reserved<'a>(&'a mut self, areas: &mut Reserved<'a>) {
        let room = areas.remaining_capacity();
        let lent = match &mut *self.link {
            Link::VhostUser(v) if v.guest_reserved() => v.reserved_slices(),
            _ => self.arena.reserved_areas(),
        };
        areas.extend(lent.into_iter().take(room));
    }

    fn commit(&mut self, lens: &[usize]) {
        match &mut *self.link {
            Link::VhostUser(v) if v.guest_reserved() => v.commit_guest(lens),
            _ => self.arena.commit_reserved(lens),
        }
    }

    fn commit_meta(&mut self, lens: &[usize], meta: &[FrameMeta]) {
        match &mut *self.link {
            Link::VhostUser(v) if v.guest_reserved() => v.commit_guest(lens),
            _ => self.arena.commit_reserved_meta(lens, meta),
        }
    }

    fn pending(&self) -> usize {
        match &*self.link {
            Link::VhostUser(v) => v.guest_pending() + self.arena.len(),
            _ => self.arena.len(),
        }
    }

    fn flush(&mut self) -> usize {
        if let Link::VhostUser(v) = &mut *self.link {
            return v.flush_rx(self.arena, self.pcap);
        }
        if self.arena.is_empty() {
            return 0;
        }
        let sent = self.link.send(self.arena).min(self.arena.len());
        if let Some(p) = self.pcap.as_mut() {
            for i in 0..sent {
                if let Some(f) = self.arena.frame(i) {
                    p.write_frame(f);
                }
            }
        }
        log::trace!("guest link took {sent} of {} frames", self.arena.len());
        self.arena.clear();
        sent
    }
}
