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
//! [`Core::peek_into`], [`Core::recv_into`], [`Core::flush_ring`]), so the
//! rules live here once:
//!
//! * frames queued by the core (control segments, ARP, DHCP...) go into the
//!   ring before the frames of a peek or a receive, so they reach the guest
//!   first;
//! * a ring short of slots is flushed before a reservation is given up;
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

use crate::{Core, Errno, FrameMeta, Instant, RxDatagram, SockId, TxSlot};
use std::io::IoSliceMut;
use std::net::SocketAddr;

/// Largest Ethernet frame to the guest (`ETH_MAX_MTU` + header).
pub const MAX_FRAME: usize = 65535 + 14;

/// Fewest bytes a slot holds (more than any frame's headers).
pub const MIN_SLOT: usize = 128;

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
    /// (or its staging area, until it is flushed) has no room.
    fn reserve(&mut self, n: usize, len: usize, how: SlotUse) -> usize;

    /// The frame areas of the slots reserved since the last commit, in
    /// order. An area may be longer than asked for; with
    /// [`SlotUse::Filled`] it may also be shorter, but never shorter than
    /// [`MIN_SLOT`].
    fn reserved(&mut self) -> Vec<&mut [u8]>;

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

/// What a [`Action::Peek`](crate::Action::Peek) asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeekRequest {
    /// Bytes to skip (without `SO_PEEK_OFF`).
    pub skip: u32,
    /// Most bytes to peek.
    pub len: u32,
    /// Payload per frame.
    pub mss: u16,
    /// Header room in front of each payload.
    pub room: u16,
}

impl Core {
    /// Reserves `n` slots of `len` bytes, flushing the ring once if it is
    /// short and holds frames. Returns how many were reserved.
    fn reserve_flushing<R: TxRing + ?Sized>(
        &mut self,
        now: Instant,
        ring: &mut R,
        n: usize,
        len: usize,
        how: SlotUse,
    ) -> usize {
        let k = ring.reserve(n, len, how);
        if k >= n || ring.pending() == 0 {
            return k;
        }
        ring.commit(&[]);
        self.flush_ring(now, ring);
        ring.reserve(n, len, how)
    }

    /// Sends what `ring` holds and reports it with
    /// [`Core::handle_tap_sent`]. Returns the frames the link took.
    pub fn flush_ring<R: TxRing + ?Sized>(&mut self, now: Instant, ring: &mut R) -> usize {
        let pending = ring.pending();
        if pending == 0 {
            return 0;
        }
        let sent = ring.flush().min(pending);
        self.handle_tap_sent(now, sent);
        if sent < pending {
            self.link_refused = true;
        }
        sent
    }

    /// Moves the frames the core queued ([`Core::poll_frame`]) into `ring`,
    /// flushing it when it is full. Frames the link has no room for stay
    /// queued, and [`Core::tap_blocked`] says so until
    /// [`Core::handle_tap_writable`]. Returns whether any frame moved.
    pub fn transmit_queued<R: TxRing + ?Sized>(&mut self, now: Instant, ring: &mut R) -> bool {
        let mut any = false;
        while let Some(len) = self.out.front_len() {
            // Room for the padding of a short frame too (`poll_frame` pads).
            let len = len.max(crate::wire::headers::ETH_ZLEN);
            if self.reserve_flushing(now, ring, 1, len, SlotUse::Exact) == 0 {
                ring.commit(&[]);
                self.link_refused = true;
                return any;
            }
            let n = {
                let mut slots = ring.reserved();
                match slots.first_mut() {
                    Some(buf) if buf.len() >= len => self.poll_frame(buf).unwrap_or(0),
                    _ => 0,
                }
            };
            ring.commit(&[n]);
            if n == 0 {
                return any;
            }
            any = true;
        }
        any
    }

    /// The link has no room for `sock`'s datagrams: they are read into
    /// empty buffers (the kernel drops what does not fit) and counted in
    /// [`Counters::link_full_dropped`](crate::Counters::link_full_dropped), so that the
    /// socket does not stay readable while the link is full; the driver is
    /// told to wait for room ([`Core::tap_blocked`]).
    fn discard_datagrams<F>(
        &mut self,
        now: Instant,
        sock: SockId,
        max: u16,
        room: u16,
        got: &mut Vec<(usize, SocketAddr)>,
        read: F,
    ) where
        F: FnOnce(&mut [&mut [u8]], usize, &mut Vec<(usize, SocketAddr)>) -> Result<(), Errno>,
    {
        const MAX: usize = 64;
        let mut empty: [&mut [u8]; MAX] = std::array::from_fn(|_| <&mut [u8]>::default());
        let n = usize::from(max).clamp(1, MAX);
        self.link_refused = true;
        match read(&mut empty[..n], usize::from(room), got) {
            Ok(()) => {}
            Err(e) if e == Errno::EAGAIN || e == Errno::EINTR => {}
            Err(e) => {
                got.clear();
                self.handle_sock_event(now, sock, crate::SockEvent::Error(e));
            }
        }
        for _ in got.drain(..) {
            self.counters.link_full_dropped += 1;
        }
    }

    /// Carries out an [`Action::Peek`](crate::Action::Peek) through `ring`:
    /// the queued frames go in first; then slots are reserved for the
    /// payload, `read` peeks into their payload areas (one area per slot,
    /// `read(skip, areas)`), the core writes the frames around it
    /// ([`Core::handle_peeked`]) and they are committed. A link with no
    /// room leaves the data in the socket until
    /// [`Core::handle_tap_writable`].
    pub fn peek_into<R, F>(
        &mut self,
        now: Instant,
        ring: &mut R,
        sock: SockId,
        p: PeekRequest,
        read: F,
    ) where
        R: TxRing + ?Sized,
        F: FnOnce(u32, &mut [IoSliceMut<'_>]) -> Result<usize, Errno>,
    {
        let (mss, room, len) = (usize::from(p.mss), usize::from(p.room), p.len as usize);
        if mss == 0 || room + mss > MAX_FRAME {
            self.handle_peeked(now, sock, Err(Errno::EINVAL), &mut []);
            return;
        }
        self.transmit_queued(now, ring);
        let needed = len.div_ceil(mss).max(1);
        let mut k = 0;
        if self.out.front_len().is_none() {
            k = self.reserve_flushing(now, ring, needed, room + mss, SlotUse::Filled);
        }
        if k == 0 {
            // Queued frames still waiting, or no slot: the link is full.
            ring.commit(&[]);
            self.tcp_link_full(sock);
            return;
        }
        let mut bufs = ring.reserved();
        let result = {
            let mut left = len;
            let mut iov: Vec<IoSliceMut<'_>> = Vec::with_capacity(bufs.len());
            for b in bufs.iter_mut() {
                let want = mss.min(b.len().saturating_sub(room)).min(left);
                if want == 0 {
                    break;
                }
                left -= want;
                iov.push(IoSliceMut::new(&mut b[room..room + want]));
            }
            read(p.skip, &mut iov)
        };
        let mut slots: Vec<TxSlot<'_>> = bufs.into_iter().map(TxSlot::new).collect();
        self.handle_peeked(now, sock, result, &mut slots);
        let lens: Vec<usize> = slots.iter().map(|s| s.frame_len).collect();
        let meta: Vec<FrameMeta> = slots.iter().map(|s| s.meta).collect();
        drop(slots);
        ring.commit_meta(&lens, &meta);
    }

    /// Carries out an [`Action::Recv`](crate::Action::Recv) through `ring`:
    /// the queued frames go in first; then up to `max` slots are reserved,
    /// `read` receives datagrams into them (payload at `buf[room..]`, one
    /// `(length, peer)` pushed to `got` per datagram, in slot order), the
    /// core writes the frames ([`Core::handle_datagrams`]), a frame that
    /// starts past its slot's front is moved there, and they are committed.
    /// An error of `read` other than `EAGAIN`/`EINTR` is reported as
    /// [`SockEvent::Error`](crate::SockEvent::Error) afterwards.
    #[allow(clippy::too_many_arguments)]
    pub fn recv_into<R, F>(
        &mut self,
        now: Instant,
        ring: &mut R,
        sock: SockId,
        max: u16,
        room: u16,
        got: &mut Vec<(usize, SocketAddr)>,
        read: F,
    ) where
        R: TxRing + ?Sized,
        F: FnOnce(&mut [&mut [u8]], usize, &mut Vec<(usize, SocketAddr)>) -> Result<(), Errno>,
    {
        self.transmit_queued(now, ring);
        let k = self.reserve_flushing(
            now,
            ring,
            usize::from(max).max(1),
            MAX_FRAME,
            SlotUse::Datagrams,
        );
        got.clear();
        if k == 0 {
            ring.commit(&[]);
            self.discard_datagrams(now, sock, max, room, got, read);
            return;
        }
        let mut bufs = ring.reserved();
        let bufs_len = bufs.len().min(k);
        let err = match read(&mut bufs[..bufs_len], usize::from(room), got) {
            Ok(()) => None,
            Err(e) if e == Errno::EAGAIN || e == Errno::EINTR => None,
            Err(e) => Some(e),
        };
        let n = if err.is_none() {
            got.len().min(bufs_len)
        } else {
            0
        };
        let mut dgrams: Vec<RxDatagram<'_>> = bufs
            .into_iter()
            .zip(got.iter())
            .take(n)
            .map(|(b, &(len, peer))| RxDatagram::new(b, len, peer))
            .collect();
        self.handle_datagrams(now, sock, &mut dgrams);
        let lens: Vec<usize> = dgrams
            .iter_mut()
            .map(|d| {
                let (start, len) = (d.frame_start, d.frame_len);
                if len == 0 || start.checked_add(len).is_none_or(|e| e > d.buf.len()) {
                    return 0;
                }
                if start > 0 {
                    d.buf.copy_within(start..start + len, 0);
                }
                len
            })
            .collect();
        drop(dgrams);
        ring.commit(&lens);
        if let Some(e) = err {
            self.handle_sock_event(now, sock, crate::SockEvent::Error(e));
        }
    }

    /// The guest link has room again (a tap or socket writable, receive
    /// buffers added): the queued frames go out and the flows that waited
    /// for room ask for their data again. Calling it when nothing waits is
    /// harmless. Counts as an input: drain the outputs afterwards.
    pub fn handle_tap_writable(&mut self, now: Instant) {
        self.link_refused = false;
        self.tcp_link_ready(now);
    }

    /// Whether the link refused frames or had no room since the last
    /// [`Core::handle_tap_writable`]: the driver should call it when the
    /// link has room again.
    pub fn tap_blocked(&self) -> bool {
        self.link_refused || self.tcp_waiting_for_link()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring of `cap` slots of 2 KiB that sends nothing (for the checks
    /// of the helpers' bookkeeping).
    struct Slots {
        bufs: Vec<Vec<u8>>,
        reserved: usize,
        committed: Vec<Vec<u8>>,
        cap: usize,
        take: usize,
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
        fn reserved(&mut self) -> Vec<&mut [u8]> {
            self.bufs.iter_mut().map(|b| b.as_mut_slice()).collect()
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
        let mut ring = Slots {
            bufs: Vec::new(),
            reserved: 0,
            committed: Vec::new(),
            cap: 1,
            take: 0,
        };
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

    /// Datagrams that find no room on the link are read into empty
    /// buffers and counted, not left in the socket (where they would keep
    /// it readable and the loop busy); the core waits for room.
    #[test]
    fn datagrams_without_room_are_read_and_dropped() {
        let mut core = Core::new(crate::Config::default());
        let mut ring = Slots {
            bufs: Vec::new(),
            reserved: 0,
            committed: Vec::new(),
            cap: 0,
            take: 0,
        };
        let peer: SocketAddr = "192.0.2.1:7".parse().unwrap();
        let mut got = Vec::new();
        let mut seen = None;
        core.recv_into(
            Instant::ZERO,
            &mut ring,
            SockId(1),
            8,
            42,
            &mut got,
            |bufs, room, got| {
                seen = Some((
                    bufs.len(),
                    bufs.iter().map(|b| b.len()).sum::<usize>(),
                    room,
                ));
                got.push((0, peer));
                got.push((0, peer));
                Ok(())
            },
        );
        assert_eq!(seen, Some((8, 0, 42)), "eight empty buffers");
        assert_eq!(core.counters().link_full_dropped, 2);
        assert!(ring.committed.is_empty());
        assert!(core.tap_blocked());
        // With room, nothing is dropped.
        core.handle_tap_writable(Instant::ZERO);
        ring.cap = 4;
        core.recv_into(
            Instant::ZERO,
            &mut ring,
            SockId(1),
            8,
            42,
            &mut got,
            |bufs, _, _| {
                seen = Some((bufs.len(), bufs.iter().map(|b| b.len()).sum::<usize>(), 0));
                Ok(())
            },
        );
        assert_eq!(seen.map(|s| s.0), Some(4));
        assert_eq!(core.counters().link_full_dropped, 2);
    }
}
