//! Byte pipes of a connection: send and receive queues with their
//! capacities, and how bytes move between them along a path's round trip.

use super::*;

/// One direction of a connection: the sender's send queue and the receiver's
/// receive queue.
#[derive(Debug, Default)]
pub(super) struct Pipe {
    pub(super) snd: VecDeque<u8>,
    pub(super) snd_cap: usize,
    pub(super) rcv: VecDeque<u8>,
    pub(super) rcv_cap: usize,
    /// Round-trip time of the path (0: bytes move at once).
    pub(super) rtt: u64,
    /// Chunks on their way to the receiver: (arrival time, bytes).
    pub(super) flights: VecDeque<(u64, usize)>,
    /// Bytes in `flights`.
    pub(super) in_flight: usize,
    /// Chunks that arrived, waiting for their acknowledgement to reach the
    /// sender: (time, bytes). They are the first `arrived` bytes of `snd`.
    pub(super) acks: VecDeque<(u64, usize)>,
    pub(super) arrived: usize,
    /// The sender shut down (FIN queued after the data).
    pub(super) fin: bool,
    /// Every byte the sender wrote, for the checkers.
    pub(super) log: Vec<u8>,
    /// Bytes moved into the receive queue (acknowledged by the receiver).
    pub(super) delivered: u64,
    /// Bytes the receiver read or discarded.
    pub(super) consumed: u64,
}

/// What the kernel charges per buffer of queued data on top of the payload
/// (`sizeof(struct sk_buff)` and shared info, roughly), and the payload one
/// buffer holds (the GSO size of a bulk write).
pub(super) const SKB_OVERHEAD: usize = 768;
pub(super) const SKB_PAYLOAD: usize = 65536;

/// What `n` queued bytes cost in the kernel's accounting.
pub(super) fn queued_cost(n: usize) -> usize {
    n + n.div_ceil(SKB_PAYLOAD) * SKB_OVERHEAD
}

impl Pipe {
    pub(super) fn eof(&self) -> bool {
        self.fin && self.snd.is_empty()
    }
    /// What the send queue costs (`SK_MEMINFO_WMEM_QUEUED`).
    pub(super) fn queued(&self) -> usize {
        queued_cost(self.snd.len())
    }
    /// Free room in the kernel's accounting; writes are taken while it is
    /// positive (a buffer at a time, so a write may overshoot).
    pub(super) fn snd_free(&self) -> usize {
        self.snd_cap.saturating_sub(self.queued())
    }
    /// Bytes a write of `want` bytes may queue now: whole buffers while
    /// the accounting has room for their start (a buffer holds at most half
    /// the send buffer, as Linux bounds its size goal).
    pub(super) fn snd_take(&self, want: usize) -> usize {
        let mut q = self.snd.len();
        let mut taken = 0;
        let skb = SKB_PAYLOAD.min(self.snd_cap / 2).max(1);
        while taken < want && queued_cost(q) < self.snd_cap {
            let n = (want - taken).min(skb);
            q += n;
            taken += n;
        }
        taken
    }
    /// Whether epoll reports the sender writable: at most two thirds of the
    /// buffer used.
    pub(super) fn writable(&self) -> bool {
        self.queued() * 3 <= self.snd_cap * 2
    }
    /// Moves bytes towards the receiver at time `now`. Returns whether bytes
    /// reached the receive queue, and whether the send queue shrank.
    pub(super) fn pump(&mut self, now: u64) -> (bool, bool) {
        if self.rtt == 0 {
            let room = self.rcv_cap.saturating_sub(self.rcv.len());
            let n = room.min(self.snd.len());
            if n == 0 {
                return (false, false);
            }
            self.rcv.extend(self.snd.drain(..n));
            self.delivered += n as u64;
            return (true, true);
        }
        let (mut moved, mut freed) = (false, false);
        while let Some(&(t, n)) = self.acks.front() {
            if t > now {
                break;
            }
            self.acks.pop_front();
            let n = n.min(self.snd.len());
            self.snd.drain(..n);
            self.arrived -= n.min(self.arrived);
            freed = true;
        }
        while let Some(&(t, n)) = self.flights.front() {
            if t > now {
                break;
            }
            self.flights.pop_front();
            let start = self.arrived;
            self.rcv.extend(self.snd.iter().skip(start).take(n));
            self.arrived += n;
            self.in_flight -= n.min(self.in_flight);
            self.delivered += n as u64;
            self.acks.push_back((t + self.rtt / 2, n));
            moved = true;
        }
        let unsent = self.snd.len() - self.arrived - self.in_flight;
        let wnd = self.rcv_cap.saturating_sub(self.rcv.len() + self.in_flight);
        let n = unsent.min(wnd);
        if n > 0 {
            self.flights.push_back((now + self.rtt / 2, n));
            self.in_flight += n;
        }
        (moved, freed)
    }
    pub(super) fn next_deadline(&self) -> Option<u64> {
        let a = self.flights.front().map(|f| f.0);
        let b = self.acks.front().map(|f| f.0);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) id: u64,
    /// `pipes[s]` carries data from side `s` to side `1 - s`.
    pub(super) pipes: [Pipe; 2],
    /// Socket handle of each side, `None` once closed.
    pub(super) ends: [Option<usize>; 2],
    /// The connection was reset; the error each side still has to see.
    pub(super) reset: bool,
    pub(super) err: [Option<Errno>; 2],
    /// Wake-ups of each side's socket (data or a FIN arrived, a reset, a
    /// close): epoll reports an edge-triggered socket again only after one.
    pub(super) gen: [u64; 2],
}
