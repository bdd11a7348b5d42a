//! Spliced TCP pairs in the simulator: the model of the epoll driver's
//! splicer (`driver-epoll/src/splice.rs`) on the simulated kernel.
//!
//! When the core joins two connected sockets (`Action::Splice`), this module
//! takes both over and moves their bytes the way the epoll driver does, with
//! a bounded buffer standing for each direction's pipe:
//!
//! * read from a socket (peek, then consume what was taken) only while the
//!   direction it feeds is not at its end and its pipe has room and is not
//!   waiting for the other socket; write the pipe to the other socket, and
//!   wait for it to be writable when it takes less;
//! * the same interest rule: readable only where a read can make progress,
//!   writable only while bytes wait for that socket, and out of the
//!   readiness set (no interest at all) otherwise, so that a slow side costs
//!   no wake-ups;
//! * end of stream read from one side, once its pipe is empty, becomes a
//!   `shutdown(SHUT_WR)` of the other; both directions shut: the pair
//!   reports `SpliceEnded(Ok)` with the byte counts; an error on either side
//!   (a reset, a write to a closed peer) reports `SpliceEnded(Err)` at once.
//!   Either is reported once, and the pair then waits for the core's `Close`.
//!
//! The simulator's spin detector then tells whether a slow or stalled side
//! makes the loop busy, and its byte logs whether every byte arrived.

use crate::kernel::Kernel;
use passt_core::{Errno, Interest, SockEvent, SockId, SpliceTotals};
use std::collections::BTreeMap;

/// Capacity of each direction's pipe (the epoll driver's smallest pipe).
pub const PIPE_SIZE: usize = 64 << 10;

#[derive(Debug, Default)]
struct Dir {
    /// Bytes in the pipe.
    pipe: Vec<u8>,
    eof: bool,
    shut: bool,
    blocked: bool,
    total: u64,
}

#[derive(Debug)]
struct Pair {
    socks: [SockId; 2],
    dirs: [Dir; 2],
    /// The interest in place (`None`: out of the readiness set).
    masks: [Option<Interest>; 2],
    ended: bool,
}

/// The spliced pairs of a run.
#[derive(Debug, Default)]
pub struct SimSplicer {
    pairs: BTreeMap<SockId, Pair>,
    owner: BTreeMap<SockId, SockId>,
    /// Pairs joined so far.
    pub joined: u64,
    /// Readiness events handled for pairs.
    pub events: u64,
}

/// Moves what can be moved in one direction.
fn pump(d: &mut Dir, k: &mut Kernel, src: SockId, dst: SockId) -> Result<(), Errno> {
    loop {
        let mut moved = false;
        if !d.eof && !d.blocked && d.pipe.len() < PIPE_SIZE {
            match k.peek(src, 0, PIPE_SIZE - d.pipe.len()) {
                Ok(v) if v.is_empty() => d.eof = true,
                Ok(v) => {
                    k.consume(src, v.len())?;
                    d.pipe.extend_from_slice(&v);
                    moved = true;
                }
                Err(e) if e == Errno::EAGAIN => {}
                Err(e) => return Err(e),
            }
        }
        if !d.pipe.is_empty() {
            match k.send(dst, &d.pipe) {
                Ok(n) => {
                    d.pipe.drain(..n);
                    d.total += n as u64;
                    moved |= n > 0;
                    d.blocked = !d.pipe.is_empty();
                }
                Err(e) if e == Errno::EAGAIN => d.blocked = true,
                Err(e) => return Err(e),
            }
        }
        if d.eof && d.pipe.is_empty() && !d.shut {
            k.shutdown_write(dst)?;
            d.shut = true;
        }
        if !moved {
            return Ok(());
        }
    }
}

impl SimSplicer {
    /// Whether `sock` belongs to a pair.
    pub fn owns(&self, sock: SockId) -> bool {
        self.owner.contains_key(&sock)
    }

    /// Pairs joined and not yet closed.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether no pair is open.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// `Action::Splice`: takes `a` and `b` over and moves what is there.
    pub fn join(&mut self, k: &mut Kernel, a: SockId, b: SockId) -> Option<(SockId, SockEvent)> {
        if !k.core_ids().contains(&a) || !k.core_ids().contains(&b) {
            return Some((a, SockEvent::SpliceEnded(Err(Errno::EBADF))));
        }
        for s in [a, b] {
            k.clear_interest(s);
        }
        self.pairs.insert(
            a,
            Pair {
                socks: [a, b],
                dirs: [Dir::default(), Dir::default()],
                masks: [None; 2],
                ended: false,
            },
        );
        self.owner.insert(a, a);
        self.owner.insert(b, a);
        self.joined += 1;
        self.run(k, a, [true, true])
    }

    /// Readiness of a socket of a pair.
    pub fn event(
        &mut self,
        k: &mut Kernel,
        sock: SockId,
        ev: SockEvent,
    ) -> Option<(SockId, SockEvent)> {
        let key = *self.owner.get(&sock)?;
        let pair = self.pairs.get_mut(&key)?;
        if pair.ended {
            return None;
        }
        self.events += 1;
        let side = usize::from(pair.socks[1] == sock);
        let mut run = [false; 2];
        match ev {
            SockEvent::Error(e) => return self.end(k, key, Err(e)),
            SockEvent::Writable => {
                pair.dirs[1 - side].blocked = false;
                run[1 - side] = true;
            }
            SockEvent::HangUp => run = [true, true],
            _ => run[side] = true,
        }
        self.run(k, key, run)
    }

    fn run(
        &mut self,
        k: &mut Kernel,
        key: SockId,
        which: [bool; 2],
    ) -> Option<(SockId, SockEvent)> {
        let pair = self.pairs.get_mut(&key)?;
        for (i, go) in which.into_iter().enumerate() {
            if !go {
                continue;
            }
            let (src, dst) = (pair.socks[i], pair.socks[1 - i]);
            if let Err(e) = pump(&mut pair.dirs[i], k, src, dst) {
                return self.end(k, key, Err(e));
            }
        }
        if pair.dirs.iter().all(|d| d.shut) {
            let (to_peer, from_peer) = (pair.dirs[0].total, pair.dirs[1].total);
            return self.end(k, key, Ok(SpliceTotals { to_peer, from_peer }));
        }
        for side in 0..2 {
            let from = &pair.dirs[side];
            let readable = !from.eof && !from.blocked && from.pipe.len() < PIPE_SIZE;
            let writable = pair.dirs[1 - side].blocked;
            let m = (readable || writable).then_some(Interest {
                readable,
                writable,
                ..Interest::default()
            });
            if m != pair.masks[side] {
                match m {
                    Some(i) => {
                        let _ = k.set_interest(pair.socks[side], i);
                    }
                    None => k.clear_interest(pair.socks[side]),
                }
                pair.masks[side] = m;
            }
        }
        None
    }

    fn end(
        &mut self,
        k: &mut Kernel,
        key: SockId,
        r: Result<SpliceTotals, Errno>,
    ) -> Option<(SockId, SockEvent)> {
        let pair = self.pairs.get_mut(&key)?;
        pair.ended = true;
        for s in pair.socks {
            k.clear_interest(s);
        }
        pair.masks = [None; 2];
        Some((pair.socks[0], SockEvent::SpliceEnded(r)))
    }

    /// The core closes `sock`: its pair is forgotten.
    pub fn forget(&mut self, sock: SockId) {
        let Some(key) = self.owner.remove(&sock) else {
            return;
        };
        if let Some(p) = self.pairs.remove(&key) {
            for s in p.socks {
                self.owner.remove(&s);
            }
        }
    }
}
