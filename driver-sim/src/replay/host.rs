//! The host application's end of a replayed connection, on the simulated
//! kernel's application interface (file descriptors): it accepts or
//! connects, writes what its steps say, reads everything (at most at its
//! observed rate), shuts down its side and closes once the other side's
//! FIN arrived.

use crate::kernel::Kernel;
use passt_core::Errno;

/// Largest write handed to the kernel at once (the kernel takes what fits).
const WRITE_CHUNK: u64 = 64 << 10;
/// A rate-limited reader waits until it may take at least this much.
const READ_CHUNK: u64 = 64 << 10;

/// One host application socket.
#[derive(Clone, Debug, Default)]
pub struct HostEnd {
    /// Its descriptor, once connected or accepted.
    pub fd: Option<i32>,
    /// Bytes read.
    pub read: u64,
    /// The other side's FIN was read (end of stream).
    pub eof: bool,
    /// The connection was reset.
    pub reset: bool,
    /// Bytes the kernel took.
    pub written: u64,
    /// Bytes of writes not taken yet.
    pub to_write: u64,
    /// Shut down for writing (after its writes).
    pub shut: bool,
    /// Asked to shut down once its writes are taken.
    pub shut_pending: bool,
    /// Descriptor closed.
    pub closed: bool,
    /// Reading rate (bytes per ms), if limited.
    pub rate: Option<u64>,
    tokens: u64,
    refilled: u64,
    /// When a rate-limited read may go on.
    pub wake_at: Option<u64>,
}

impl HostEnd {
    /// A host end reading at most `rate` bytes per millisecond.
    pub fn new(rate: Option<u64>) -> Self {
        HostEnd {
            rate: rate.filter(|r| *r > 0),
            ..HostEnd::default()
        }
    }

    /// Tokens saved up at most: a millisecond's worth.
    fn burst(&self) -> u64 {
        self.rate.map_or(u64::MAX, |r| r.max(1))
    }

    fn refill(&mut self, now: u64) {
        if let Some(r) = self.rate {
            let dt = now.saturating_sub(self.refilled);
            let add = (u128::from(dt) * u128::from(r) / 1_000_000) as u64;
            if add > 0 {
                self.tokens = self.tokens.saturating_add(add).min(self.burst());
                // Keep the remainder: time is only spent for whole bytes.
                self.refilled += (u128::from(add) * 1_000_000 / u128::from(r)) as u64;
            }
            if self.tokens >= self.burst() {
                self.refilled = now;
            }
        }
    }

    /// Does what it can now; returns whether it touched the kernel's state.
    pub fn poll(&mut self, now: u64, k: &mut Kernel) -> bool {
        let Some(fd) = self.fd.filter(|_| !self.closed) else {
            return false;
        };
        let mut did = false;
        // Read.
        self.wake_at = None;
        self.refill(now);
        while !self.eof && !self.reset {
            let budget = if self.rate.is_some() {
                self.tokens
            } else {
                u64::MAX
            };
            if budget == 0 {
                // Out of tokens while data came: come back when a chunk's
                // worth is there.
                if let Some(r) = self.rate {
                    let need = READ_CHUNK.min(self.burst()).saturating_sub(self.tokens);
                    let wait = (u128::from(need) * 1_000_000).div_ceil(u128::from(r)) as u64;
                    self.wake_at = Some(now + wait.max(1));
                }
                break;
            }
            match k.app_read(fd, usize::try_from(budget).unwrap_or(usize::MAX)) {
                Ok(0) => {
                    self.eof = true;
                    did = true;
                }
                Ok(n) => {
                    self.read += n as u64;
                    if self.rate.is_some() {
                        self.tokens -= (n as u64).min(self.tokens);
                    }
                    did = true;
                }
                Err(Errno::ECONNRESET) | Err(Errno::EPIPE) => {
                    self.reset = true;
                    did = true;
                }
                // Nothing to read (EAGAIN): the next step looks again.
                Err(_) => break,
            }
        }
        // Write.
        while self.to_write > 0 && !self.reset {
            let n = self.to_write.min(WRITE_CHUNK) as usize;
            match k.app_write(fd, n) {
                Ok(w) if w > 0 => {
                    self.written += w as u64;
                    self.to_write -= w as u64;
                    did = true;
                    if w < n {
                        break;
                    }
                }
                Ok(_) | Err(Errno::EAGAIN) => break,
                Err(_) => {
                    self.reset = true;
                    did = true;
                }
            }
        }
        if self.shut_pending && self.to_write == 0 && !self.shut && !self.reset {
            let _ = k.app_shutdown(fd);
            self.shut = true;
            did = true;
        }
        // Close once both directions are over.
        if (self.shut && self.eof) || self.reset {
            let _ = k.app_close(fd);
            self.closed = true;
            did = true;
        }
        did
    }
}
