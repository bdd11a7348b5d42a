//! The transmit side of the guest link, one way for every link.
//!
//! Frames for the guest are built in slots the link lends ([`TxRing`]), in
//! the spirit of smoltcp's `TxToken`: no slot, no frame. A tap device or
//! qemu's stream socket lends slots of a staging arena and sends them on
//! `flush`; vhost-user lends the guest's own receive buffers, so the socket
//! data lands where the guest reads it; the simulator lends slots of its
//! model link, which may take only part of what it is given, or nothing for
//! a while.
//!
//! The core drives every ring the same way ([`Core::transmit_queued`],
//! [`Core::peek_into`], [`Core::recv_into`], [`Core::flush_ring`], all of
//! them a [`Transmit`] here), so the rules live here once:
//!
//! * frames queued by the core (control segments, ARP, DHCP...) go into the
//!   ring before the frames of a peek or a receive, so they reach the guest
//!   first;
//! * a ring short of slots is flushed before a reservation is given up;
//! * no reservation asks for more than [`MAX_RESERVE`] slots, so the lists
//!   of slots (their areas, the read's `iovec`s, the slots the core fills)
//!   are made once with that capacity and kept by the core: each use lends
//!   them emptied (see `recycle`), so nothing is allocated per frame and
//!   no list takes room on the stack (as arrays of `MAX_RESERVE` entries
//!   they took some 72 KiB of it per peek);
//! * the payload of a peek goes into each slot after the room for the
//!   headers, at most one MSS per slot (with TCP segmentation offload, see
//!   [`crate::LinkOffload`], up to a 64 KiB frame's worth, in whole MSS) and
//!   no more than the slot holds; the core writes the headers in front of
//!   it, and hands the frames' offload metadata over with
//!   [`TxRing::commit_meta`];
//! * a datagram's frame that starts past its slot's front (an IPv4 frame of
//!   a dual-stack listener) is moved to the front before it is committed;
//! * every flush is reported with [`Core::handle_tap_sent`]: the frames the
//!   link refused are sent again (TCP) or lost (datagrams);
//! * a link with no room at all leaves TCP data in the socket: the flow
//!   waits, and [`Core::handle_tap_writable`] brings it back once the link
//!   has room again; datagrams are read into empty buffers and dropped (as
//!   a full link would), so that no socket stays readable meanwhile.
//!
//! [`Core`]: crate::Core
//! [`Core::transmit_queued`]: crate::Core::transmit_queued
//! [`Core::peek_into`]: crate::Core::peek_into
//! [`Core::recv_into`]: crate::Core::recv_into
//! [`Core::flush_ring`]: crate::Core::flush_ring
//! [`Core::handle_tap_sent`]: crate::Core::handle_tap_sent
//! [`Core::handle_tap_writable`]: crate::Core::handle_tap_writable

use crate::action::{Errno, PeekRequest, RecvRequest, RxDatagram, SockId, TxSlot};
use crate::offload::FrameMeta;
use crate::time::Instant;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};

/// Largest Ethernet frame to the guest (`ETH_MAX_MTU` + header).
pub const MAX_FRAME: usize = 65535 + 14;

/// Fewest bytes a slot holds (more than any frame's headers).
pub const MIN_SLOT: usize = 128;

/// Most slots the core asks for in one reservation (the most descriptors of
/// a virtqueue: no link lends more at once).
pub const MAX_RESERVE: usize = 1024;

/// The frame areas of a reservation, in order (see [`TxRing::reserved`]):
/// a list of at most [`MAX_RESERVE`] areas that the core lends. It keeps
/// one and lends it again for every reservation, so that listing the
/// areas allocates nothing; [`Reserved::new`] allocates (tests, one-off
/// uses).
#[derive(Debug)]
pub struct Reserved<'a> {
    areas: Vec<&'a mut [u8]>,
}

impl Reserved<'_> {
    /// An empty list with room for [`MAX_RESERVE`] areas.
    pub fn new() -> Self {
        Reserved {
            areas: Vec::with_capacity(MAX_RESERVE),
        }
    }

    /// How many more areas it takes.
    pub fn remaining_capacity(&self) -> usize {
        MAX_RESERVE.saturating_sub(self.areas.len())
    }
}

impl Default for Reserved<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Extend<&'a mut [u8]> for Reserved<'a> {
    /// Appends areas, as many as it has room for (the rest are ignored).
    fn extend<I: IntoIterator<Item = &'a mut [u8]>>(&mut self, iter: I) {
        let room = self.remaining_capacity();
        self.areas.extend(iter.into_iter().take(room));
    }
}

impl<'a> Deref for Reserved<'a> {
    type Target = [&'a mut [u8]];
    fn deref(&self) -> &Self::Target {
        &self.areas
    }
}

impl DerefMut for Reserved<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.areas
    }
}

/// `v` emptied, its allocation kept for elements of the same layout that
/// borrow for another lifetime: how the core lends its lists of slots
/// again and again without allocating. (Collecting a `vec::IntoIter` into
/// a `Vec` of an element of the same size and alignment reuses its
/// buffer; `lists_are_lent_without_allocating` checks that it does.)
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// What reserved slots will hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotUse {
    /// Frames cut to their slots: one frame per slot, every slot but the
    /// last filled to what it holds (TCP segments of a peek). A link may
    /// lend slots shorter than asked for.
    Filled,
    /// One frame of exactly the length asked for (a queued frame).
    Exact,
    /// Datagrams of unknown lengths: each slot must hold the largest frame
    /// asked for, and any of them may stay unused.
    Datagrams,
}

/// The transmit side of a guest link: slots lent for frames, then sent.
///
/// A reservation lasts until the next [`TxRing::commit`], which ends it:
/// the slots that got a frame are queued for [`TxRing::flush`], the others
/// go back to the link.
pub trait TxRing {
    /// Reserves up to `n` more slots for frames of up to `len` bytes and
    /// returns how many it could: fewer than `n`, or none, while the link
    /// (or its staging area, until it is flushed) has no room. The core
    /// never asks for more than [`MAX_RESERVE`].
    fn reserve(&mut self, n: usize, len: usize, how: SlotUse) -> usize;

    /// Appends the frame areas of the slots reserved since the last commit,
    /// in order, to `areas` (as many as it holds). An area may be longer
    /// than asked for; with [`SlotUse::Filled`] it may also be shorter, but
    /// never shorter than [`MIN_SLOT`].
    fn reserved<'a>(&'a mut self, areas: &mut Reserved<'a>);

    /// Ends the reservation: the first `lens.len()` reserved slots hold
    /// frames of these lengths at their front (0: no frame); the rest go
    /// back. With [`SlotUse::Filled`], no frame follows a slot without one.
    fn commit(&mut self, lens: &[usize]);

    /// Like [`TxRing::commit`], with the offload metadata of each frame
    /// (`meta[i]` belongs to `lens[i]`). The core calls it for the frames
    /// of a peek; they carry metadata other than
    /// [`FrameMeta::PLAIN`] only with
    /// [`Config::link_offload`](crate::Config::link_offload) set, so a ring
    /// of a link without offloads keeps this default, which drops it.
    fn commit_meta(&mut self, lens: &[usize], meta: &[FrameMeta]) {
        let _ = meta;
        self.commit(lens);
    }

    /// Frames committed and not sent yet.
    fn pending(&self) -> usize;

    /// Sends the committed frames, in order, and returns how many the link
    /// took (the first ones); the others are gone.
    fn flush(&mut self) -> usize;
}

/// The transmit path's own state, kept by the core between calls.
#[derive(Debug)]
pub(crate) struct TxState {
    /// The guest link refused frames, or had no room for queued ones, since
    /// the last `handle_tap_writable`.
    pub(crate) refused: bool,
    /// Frame lengths of a commit (capacity [`MAX_RESERVE`], kept).
    lens: Vec<usize>,
    /// Offload metadata of a commit (capacity [`MAX_RESERVE`], kept).
    meta: Vec<FrameMeta>,
    /// The lists lent for each use (capacity [`MAX_RESERVE`], kept empty
    /// between uses; see [`recycle`]): a reservation's areas, ...
    areas: Vec<&'static mut [u8]>,
    /// ... the `iovec`s of a peek, ...
    iov: Vec<IoSliceMut<'static>>,
    /// ... the slots of a peek, ...
    slots: Vec<TxSlot<'static>>,
    /// ... and the datagrams of a receive.
    dgrams: Vec<RxDatagram<'static>>,
}

impl Default for TxState {
    fn default() -> Self {
        TxState {
            refused: false,
            lens: Vec::with_capacity(MAX_RESERVE),
            meta: Vec::with_capacity(MAX_RESERVE),
            areas: Vec::with_capacity(MAX_RESERVE),
            iov: Vec::with_capacity(MAX_RESERVE),
            slots: Vec::with_capacity(MAX_RESERVE),
            dgrams: Vec::with_capacity(MAX_RESERVE),
        }
    }
}

impl TxState {
    /// The list of areas, lent for one reservation.
    fn lend_areas<'a>(&mut self) -> Reserved<'a> {
        Reserved {
            areas: recycle(core::mem::take(&mut self.areas)),
        }
    }

    /// The list of areas back, emptied.
    fn return_areas(&mut self, r: Reserved<'_>) {
        self.areas = recycle(r.areas);
    }

    /// Where the lists' buffers are (tests: they stay put).
    #[cfg(test)]
    pub(crate) fn list_buffers(&self) -> [usize; 4] {
        [
            self.areas.as_ptr() as usize,
            self.iov.as_ptr() as usize,
            self.slots.as_ptr() as usize,
            self.dgrams.as_ptr() as usize,
        ]
    }
}

/// What the transmit path needs of the core: the frames it queued, the
/// handlers of what came of a peek, a receive and a flush, and its own
/// state. The engine implements it.
pub(crate) trait TxCore {
    /// The transmit path's state.
    fn tx_state(&mut self) -> &mut TxState;
    /// Length of the first frame the core queued, if any.
    fn queued_len(&self) -> Option<usize>;
    /// Writes the first queued frame into `buf` (`Core::poll_frame`).
    fn poll_frame(&mut self, buf: &mut [u8]) -> Option<usize>;
    /// The link took the first `accepted` frames (`Core::handle_tap_sent`).
    fn tap_sent(&mut self, now: Instant, accepted: usize);
    /// What came of a use of the ring for `sock` (see [`Outcome`]).
    fn outcome(&mut self, now: Instant, sock: SockId, what: Outcome<'_, '_>);
    /// Counts `n` datagrams read into empty buffers for want of room.
    fn dropped_for_room(&mut self, n: usize);
}

/// What came of a use of the ring for a socket, for the core's handlers.
pub(crate) enum Outcome<'s, 'b> {
    /// The result of a peek into the slots (`Core::handle_peeked`).
    Peeked(Result<usize, Errno>, &'s mut [TxSlot<'b>]),
    /// Datagrams received (`Core::handle_datagrams`).
    Datagrams(&'s mut [RxDatagram<'b>]),
    /// A receive failed.
    Error(Errno),
    /// The link had no slot for a peek: the data stays in the socket.
    LinkFull,
}

/// One use of a ring by the core, at time `now`.
pub(crate) struct Transmit<'a, C: ?Sized, R: ?Sized> {
    pub(crate) core: &'a mut C,
    pub(crate) ring: &'a mut R,
    pub(crate) now: Instant,
}

/// Most datagrams read into empty buffers at once when the link has no
/// room.
const DISCARD_MAX: usize = 64;

/// An error that ends a receive (anything but `EAGAIN`/`EINTR`).
fn fatal(r: Result<(), Errno>) -> Option<Errno> {
    match r {
        Err(e) if e != Errno::EAGAIN && e != Errno::EINTR => Some(e),
        _ => None,
    }
}

impl<C: TxCore + ?Sized, R: TxRing + ?Sized> Transmit<'_, C, R> {
    /// Reserves `n` slots (at most [`MAX_RESERVE`]) of `len` bytes,
    /// flushing the ring once if it is short and holds frames. Returns how
    /// many were reserved.
    fn reserve_flushing(&mut self, n: usize, len: usize, how: SlotUse) -> usize {
        let n = n.min(MAX_RESERVE);
        let k = self.ring.reserve(n, len, how);
        if k >= n || self.ring.pending() == 0 {
            return k;
        }
        self.ring.commit(&[]);
        self.flush();
        self.ring.reserve(n, len, how)
    }

    /// Gives the reservation back and notes that the link had no room.
    fn no_room(&mut self) {
        self.ring.commit(&[]);
        self.core.tx_state().refused = true;
    }

    /// Sends what the ring holds and reports it. Returns the frames the
    /// link took.
    pub(crate) fn flush(&mut self) -> usize {
        let pending = self.ring.pending();
        if pending == 0 {
            return 0;
        }
        let sent = self.ring.flush().min(pending);
        self.core.tap_sent(self.now, sent);
        if sent < pending {
            self.core.tx_state().refused = true;
        }
        sent
    }

    /// Moves the frames the core queued into the ring, flushing it when it
    /// is full. Frames the link has no room for stay queued. Returns
    /// whether any frame moved.
    pub(crate) fn queued(&mut self) -> bool {
        let mut any = false;
        while let Some(len) = self.core.queued_len() {
            // Room for the padding of a short frame too (`poll_frame` pads).
            let len = len.max(crate::wire::headers::ETH_ZLEN);
            if self.reserve_flushing(1, len, SlotUse::Exact) == 0 {
                self.no_room();
                return any;
            }
            let n = {
                let mut areas = self.core.tx_state().lend_areas();
                self.ring.reserved(&mut areas);
                let n = match areas.first_mut() {
                    Some(buf) if buf.len() >= len => self.core.poll_frame(buf).unwrap_or(0),
                    _ => 0,
                };
                self.core.tx_state().return_areas(areas);
                n
            };
            self.ring.commit(&[n]);
            if n == 0 {
                return any;
            }
            any = true;
        }
        any
    }

    /// Carries out a peek (see `Core::peek_into`).
    pub(crate) fn peek<F>(&mut self, sock: SockId, p: PeekRequest, read: F)
    where
        F: FnOnce(u32, &mut [IoSliceMut<'_>]) -> Result<usize, Errno>,
    {
        let (mss, room, len) = (usize::from(p.mss), usize::from(p.room), p.len as usize);
        if mss == 0 || room + mss > MAX_FRAME {
            let what = Outcome::Peeked(Err(Errno::EINVAL), &mut []);
            self.core.outcome(self.now, sock, what);
            return;
        }
        self.queued();
        let needed = len.div_ceil(mss).max(1);
        let mut k = 0;
        if self.core.queued_len().is_none() {
            k = self.reserve_flushing(needed, room + mss, SlotUse::Filled);
        }
        if k == 0 {
            // Queued frames still waiting, or no slot: the link is full.
            self.ring.commit(&[]);
            self.core.outcome(self.now, sock, Outcome::LinkFull);
            return;
        }
        let st = self.core.tx_state();
        let mut areas = st.lend_areas();
        let mut iov: Vec<IoSliceMut<'_>> = recycle(core::mem::take(&mut st.iov));
        let mut slots: Vec<TxSlot<'_>> = recycle(core::mem::take(&mut st.slots));
        self.ring.reserved(&mut areas);
        let result = {
            let mut left = len;
            for b in areas.iter_mut() {
                let want = mss.min(b.len().saturating_sub(room)).min(left);
                if want == 0 {
                    break;
                }
                left -= want;
                iov.push(IoSliceMut::new(&mut b[room..room + want]));
            }
            let r = read(p.skip, &mut iov);
            self.core.tx_state().iov = recycle(iov);
            r
        };
        slots.extend(areas.areas.drain(..).map(TxSlot::new));
        self.core.tx_state().return_areas(areas);
        self.core
            .outcome(self.now, sock, Outcome::Peeked(result, &mut slots));
        let st = self.core.tx_state();
        st.lens.clear();
        st.meta.clear();
        for s in &slots {
            st.lens.push(s.frame_len);
            st.meta.push(s.meta);
        }
        st.slots = recycle(slots);
        self.ring.commit_meta(&st.lens, &st.meta);
    }

    /// Carries out a receive (see `Core::recv_into`).
    pub(crate) fn recv<F>(
        &mut self,
        sock: SockId,
        r: RecvRequest,
        got: &mut Vec<(usize, SocketAddr)>,
        read: F,
    ) where
        F: FnOnce(&mut [&mut [u8]], usize, &mut Vec<(usize, SocketAddr)>) -> Result<(), Errno>,
    {
        let RecvRequest { max, room } = r;
        self.queued();
        let k = self.reserve_flushing(usize::from(max).max(1), MAX_FRAME, SlotUse::Datagrams);
        got.clear();
        let err = if k == 0 {
            // The link has no room: the datagrams are read into empty
            // buffers (the kernel drops what does not fit) and counted, so
            // that the socket does not stay readable while the link is full.
            self.no_room();
            let mut empty: [&mut [u8]; DISCARD_MAX] =
                std::array::from_fn(|_| <&mut [u8]>::default());
            let n = usize::from(max).clamp(1, DISCARD_MAX);
            let err = fatal(read(&mut empty[..n], usize::from(room), got));
            if err.is_none() {
                self.core.dropped_for_room(got.len());
            }
            got.clear();
            err
        } else {
            let st = self.core.tx_state();
            let mut areas = st.lend_areas();
            let mut dgrams: Vec<RxDatagram<'_>> = recycle(core::mem::take(&mut st.dgrams));
            self.ring.reserved(&mut areas);
            areas.areas.truncate(k);
            let err = fatal(read(&mut areas, usize::from(room), got));
            let n = if err.is_none() {
                got.len().min(areas.len())
            } else {
                0
            };
            dgrams.extend(
                areas
                    .areas
                    .drain(..)
                    .zip(got.iter())
                    .take(n)
                    .map(|(b, &(len, peer))| RxDatagram::new(b, len, peer)),
            );
            self.core.tx_state().return_areas(areas);
            self.core
                .outcome(self.now, sock, Outcome::Datagrams(&mut dgrams));
            let st = self.core.tx_state();
            st.lens.clear();
            st.lens.extend(dgrams.iter_mut().map(to_front));
            st.dgrams = recycle(dgrams);
            self.ring.commit(&st.lens);
            err
        };
        if let Some(e) = err {
            self.core.outcome(self.now, sock, Outcome::Error(e));
        }
    }
}

/// A datagram's frame moved to the front of its slot; its length (0: none,
/// or one that does not fit).
fn to_front(d: &mut RxDatagram<'_>) -> usize {
    let (start, len) = (d.frame_start, d.frame_len);
    if len == 0 || start.checked_add(len).is_none_or(|e| e > d.buf.len()) {
        return 0;
    }
    if start > 0 {
        d.buf.copy_within(start..start + len, 0);
    }
    len
}

#[cfg(test)]
mod tests;
