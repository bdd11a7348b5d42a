//! A fixed-size byte ring of whole frames waiting to be handed to the driver.
//!
//! Control frames (ARP, NDP, DHCP replies, and later TCP flag segments) are built
//! in place here when an input is handled and copied out by
//! [`Core::poll_frame`](crate::Core::poll_frame). Memory is allocated once; a full
//! queue refuses new frames, and the caller counts the drop.

use std::collections::VecDeque;

#[derive(Debug)]
pub(crate) struct FrameQueue {
    buf: Box<[u8]>,
    /// (start, len) of queued frames, oldest first. Never grows past `max`.
    recs: VecDeque<(usize, usize)>,
    max: usize,
}

impl FrameQueue {
    pub(crate) fn new(bytes: usize, frames: usize) -> Self {
        FrameQueue {
            buf: vec![0; bytes].into_boxed_slice(),
            recs: VecDeque::with_capacity(frames),
            max: frames,
        }
    }

    /// Length of the oldest frame, if any.
    pub(crate) fn front_len(&self) -> Option<usize> {
        self.recs.front().map(|&(_, len)| len)
    }

    /// Frames queued (TCP numbers its frames for `handle_tap_sent`).
    pub(crate) fn len(&self) -> usize {
        self.recs.len()
    }

    /// Start of a free region of at least `need` bytes, if there is one.
    fn reserve(&self, need: usize) -> Option<usize> {
        let (Some(&(head, _)), Some(&(back, back_len))) = (self.recs.front(), self.recs.back())
        else {
            return (need <= self.buf.len()).then_some(0);
        };
        let tail = back + back_len;
        if back >= head {
            // Unwrapped: free space is [tail, end) and [0, head).
            if self.buf.len() - tail >= need {
                Some(tail)
            } else if head >= need {
                Some(0)
            } else {
                None
            }
        } else if head - tail >= need {
            // Wrapped: free space is [tail, head).
            Some(tail)
        } else {
            None
        }
    }

    /// Lends `max_len` bytes to `fill`, which writes a frame and returns its
    /// length (`None` to abandon it). Returns whether a frame was queued.
    pub(crate) fn push_with(
        &mut self,
        max_len: usize,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Result<bool, QueueFull> {
        if self.recs.len() >= self.max {
            return Err(QueueFull);
        }
        let start = self.reserve(max_len).ok_or(QueueFull)?;
        let region = &mut self.buf[start..start + max_len];
        match fill(region) {
            Some(n) if n > 0 && n <= max_len => {
                self.recs.push_back((start, n));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Copies the oldest frame into `out` and removes it. A frame larger than
    /// `out` is removed and reported as `Err(len)`.
    pub(crate) fn pop_into(&mut self, out: &mut [u8]) -> Option<Result<usize, usize>> {
        let (start, len) = self.recs.pop_front()?;
        match out.get_mut(..len) {
            Some(dst) => {
                dst.copy_from_slice(&self.buf[start..start + len]);
                Some(Ok(len))
            }
            None => Some(Err(len)),
        }
    }
}

/// The control-frame queue has no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueFull;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fifo_and_wrap() {
        let mut q = FrameQueue::new(100, 10);
        for i in 0..3u8 {
            assert_eq!(
                q.push_with(40, |b| {
                    b[..30].fill(i);
                    Some(30)
                }),
                Ok(true)
            );
        }
        // 90 bytes used, 10 left: a 40-byte reservation does not fit.
        assert_eq!(q.push_with(40, |_| Some(1)), Err(QueueFull));
        let mut out = [0u8; 64];
        assert_eq!(q.pop_into(&mut out), Some(Ok(30)));
        assert!(out[..30].iter().all(|&b| b == 0));
        // Head at 30: a frame now fits at the start.
        assert_eq!(
            q.push_with(30, |b| {
                b.fill(9);
                Some(30)
            }),
            Ok(true)
        );
        assert_eq!(q.pop_into(&mut out), Some(Ok(30)));
        assert_eq!(out[0], 1);
        assert_eq!(q.pop_into(&mut out), Some(Ok(30)));
        assert_eq!(out[0], 2);
        assert_eq!(q.pop_into(&mut out), Some(Ok(30)));
        assert_eq!(out[0], 9);
        assert_eq!(q.pop_into(&mut out), None);
    }

    #[test]
    fn abandoned_and_oversized() {
        let mut q = FrameQueue::new(100, 2);
        assert_eq!(q.push_with(10, |_| None), Ok(false));
        assert_eq!(q.push_with(10, |_| Some(11)), Ok(false));
        assert_eq!(q.push_with(101, |_| Some(1)), Err(QueueFull));
        assert_eq!(q.push_with(50, |_| Some(50)), Ok(true));
        assert_eq!(q.push_with(10, |_| Some(5)), Ok(true));
        assert_eq!(q.push_with(10, |_| Some(5)), Err(QueueFull)); // frame count limit
        let mut small = [0u8; 10];
        assert_eq!(q.pop_into(&mut small), Some(Err(50)));
        assert_eq!(q.pop_into(&mut small), Some(Ok(5)));
        assert_eq!(q.len(), 0);
    }

    proptest! {
        /// Random pushes and pops behave like a FIFO of byte strings.
        #[test]
        fn behaves_like_fifo(ops in proptest::collection::vec((any::<bool>(), 1usize..60, any::<u8>()), 1..200)) {
            let mut q = FrameQueue::new(256, 8);
            let mut model: std::collections::VecDeque<Vec<u8>> = Default::default();
            let mut out = [0u8; 64];
            for (push, len, val) in ops {
                if push {
                    let r = q.push_with(len, |b| { b[..len].fill(val); Some(len) });
                    if r == Ok(true) { model.push_back(vec![val; len]); }
                } else {
                    match (q.pop_into(&mut out), model.pop_front()) {
                        (Some(Ok(n)), Some(m)) => prop_assert_eq!(&out[..n], &m[..]),
                        (None, None) => {}
                        (a, b) => prop_assert!(false, "queue {:?} model {:?}", a, b),
                    }
                }
                prop_assert_eq!(q.len(), model.len());
            }
        }
    }
}
