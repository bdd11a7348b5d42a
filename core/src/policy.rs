//! The choices of TCP translation that decide its throughput and how it
//! copes with loss, as one documented policy: how large a window the guest
//! is offered and when a closed one is offered again, when the guest's data
//! is acknowledged, and how data to the guest is sent again.
//!
//! [`TcpPolicy::default`] is what the drivers ship (`TcpPolicy::SHIPPED`);
//! the named variants ([`TcpPolicy::named`]) exist to be compared in the
//! simulator (`passt-sim table --policies`, `docs/research.md`).

use core::time::Duration;

/// When a window that had closed is offered to the guest again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reopen {
    /// As soon as one of the guest's segments fits (what ships): a window
    /// update goes out at once.
    Segment,
    /// Only once half the send buffer is free (receiver-side silly window
    /// avoidance, RFC 1122 4.2.3.3): fewer, larger windows; smaller ones
    /// reach the guest only with other ACKs.
    HalfBuffer,
}

/// How TCP translation treats the guest (see the module's notes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpPolicy {
    /// The window offered is the send buffer's free space in the kernel's
    /// accounting less `1 / window_headroom` of it (for the per-buffer
    /// overhead the kernel charges on top of the payload); 0 keeps nothing
    /// back.
    pub window_headroom: u32,
    /// Held back from the window besides: `1 / queue_reserve` of what the
    /// buffer already holds (0: nothing). The kernel splits queued buffers
    /// as the peer's window lets them out, each piece charged its own
    /// overhead, so a full queue grows while the guest's data is on its
    /// way; a write that then does not fit drops the rest of the guest's
    /// flight, which it resends only after its retransmission timeout.
    pub queue_reserve: u32,
    /// When a closed window is offered again.
    pub reopen: Reopen,
    /// Interval of send-buffer queries while the window is closed and the
    /// kernel's `EPOLLOUT` wake-up is armed (a safety net).
    pub window_poll_armed: Duration,
    /// Interval of send-buffer queries while the window is closed and the
    /// socket still counts as writable (no wake-up will come).
    pub window_poll_writable: Duration,
    /// Delay of a deferred ACK of the guest's data.
    pub ack_delay: Duration,
    /// Request-response traffic with a local peer (whose data is otherwise
    /// acknowledged at once): the ACK of less than a segment of the guest's
    /// data waits this long for the peer's answer to carry it, so that an
    /// exchange costs one frame to the guest, not two. Traffic counts as
    /// request-response once data goes to the guest within this delay of
    /// the guest's last data (as Linux's "pingpong" mode), and stops
    /// counting when an answer does not come within it.
    pub ack_delay_local: Duration,
    /// Send buffers smaller than this get their guest data acknowledged at
    /// once (upstream's `SNDBUF_SMALL`).
    pub ack_at_once_below: u32,
    /// Acknowledge at once when the guest has used half the window offered.
    pub ack_half_window: bool,
    /// First retransmission timeout of data, FIN or SYN to the guest.
    pub rto: Duration,
    /// Factor the timeout grows by with each retransmission in a row (1:
    /// fixed).
    pub rto_backoff: u32,
    /// Largest timeout.
    pub rto_max: Duration,
    /// Retransmissions in a row before the connection is reset.
    pub max_retrans: u8,
    /// Duplicate ACKs from the guest that send data again at once.
    pub dup_ack_threshold: u8,
}

impl TcpPolicy {
    /// What the drivers ship.
    pub const SHIPPED: TcpPolicy = TcpPolicy {
        window_headroom: 16,
        queue_reserve: 8,
        reopen: Reopen::Segment,
        window_poll_armed: Duration::from_millis(100),
        window_poll_writable: Duration::from_millis(1),
        ack_delay: Duration::from_millis(10),
        ack_delay_local: Duration::from_millis(1),
        ack_at_once_below: 128 << 10,
        ack_half_window: true,
        // RFC 6298's first timeout, doubled with every retransmission in a
        // row up to Linux's default `tcp_rto_max_ms` (as upstream): a
        // silent guest is retried at 1, 3, 7, 15, 31, 63 and 127 s and reset
        // when the last of those also goes unanswered.
        rto: Duration::from_secs(1),
        rto_backoff: 2,
        rto_max: Duration::from_secs(120),
        max_retrans: 7,
        dup_ack_threshold: 2,
    };

    /// Names of the variants of [`Self::named`].
    pub const NAMES: [&'static str; 6] = [
        "shipped",
        "reopen-half",
        "window-whole",
        "ack-at-once",
        "rto-fixed",
        "dupack-3",
    ];

    /// A named variant of the shipped policy:
    ///
    /// * `shipped`: as the drivers ship it;
    /// * `reopen-half`: a closed window is offered again only once half the
    ///   send buffer is free ([`Reopen::HalfBuffer`]);
    /// * `window-whole`: the whole free space is offered (no headroom);
    /// * `ack-at-once`: every write to the socket is acknowledged at once;
    /// * `rto-fixed`: retransmission every 2 s, without back-off (what was
    ///   shipped before the back-off);
    /// * `dupack-3`: fast retransmission after three duplicate ACKs, not two.
    pub fn named(name: &str) -> Option<TcpPolicy> {
        let s = TcpPolicy::SHIPPED;
        Some(match name {
            "shipped" | "default" => s,
            "reopen-half" => TcpPolicy {
                reopen: Reopen::HalfBuffer,
                ..s
            },
            "window-whole" => TcpPolicy {
                window_headroom: 0,
                queue_reserve: 0,
                ..s
            },
            "ack-at-once" => TcpPolicy {
                ack_at_once_below: u32::MAX,
                ..s
            },
            "rto-fixed" => TcpPolicy {
                rto: Duration::from_secs(2),
                rto_backoff: 1,
                ..s
            },
            "dupack-3" => TcpPolicy {
                dup_ack_threshold: 3,
                ..s
            },
            _ => return None,
        })
    }

    /// The retransmission timeout after `retrans` retransmissions in a row.
    pub fn rto_after(&self, retrans: u8) -> Duration {
        let mut t = self.rto;
        for _ in 0..retrans {
            if t >= self.rto_max || self.rto_backoff <= 1 {
                break;
            }
            t = t.saturating_mul(self.rto_backoff);
        }
        if self.rto_backoff > 1 {
            t.min(self.rto_max)
        } else {
            t
        }
    }

    /// The window for a send buffer of `sndbuf` bytes with `queued` bytes
    /// in it (kernel accounting), or `None` if its size is unknown (0).
    pub fn window(&self, sndbuf: u32, queued: u32) -> Option<u32> {
        if sndbuf == 0 {
            return None;
        }
        let free = sndbuf.saturating_sub(queued);
        let free = match self.window_headroom {
            0 => free,
            h => free - free / h,
        };
        Some(match self.queue_reserve {
            0 => free,
            r => free.saturating_sub(queued / r),
        })
    }
}

impl Default for TcpPolicy {
    fn default() -> Self {
        TcpPolicy::SHIPPED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_and_timeouts() {
        assert_eq!(TcpPolicy::default(), TcpPolicy::SHIPPED);
        for n in TcpPolicy::NAMES {
            assert!(TcpPolicy::named(n).is_some(), "{n}");
        }
        assert!(TcpPolicy::named("nope").is_none());
        let s = TcpPolicy::SHIPPED;
        assert_eq!(s.rto_after(0), Duration::from_secs(1));
        assert_eq!(s.rto_after(3), Duration::from_secs(8));
        assert_eq!(s.rto_after(6), Duration::from_secs(64));
        assert_eq!(s.rto_after(20), Duration::from_secs(120), "capped");
        let f = TcpPolicy::named("rto-fixed").unwrap();
        assert_eq!(f.rto_after(0), Duration::from_secs(2));
        assert_eq!(f.rto_after(6), Duration::from_secs(2), "fixed");
        assert_eq!(s.window(0, 0), None);
        assert_eq!(s.window(16384, 0), Some(16384 - 1024));
        assert_eq!(
            TcpPolicy::named("window-whole").unwrap().window(16384, 384),
            Some(16000)
        );
        assert_eq!(s.window(100, 200), Some(0));
        // A queue of 1 MiB keeps 128 KiB back.
        assert_eq!(
            s.window(4 << 20, 1 << 20),
            Some((3 << 20) - (3 << 16) - (1 << 17))
        );
    }
}
