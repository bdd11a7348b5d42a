//! The qemu stream framing, apart from any socket: each frame is preceded
//! by its length as a 32-bit big-endian number. [`split_frames`] finds the
//! complete frames in a buffer; [`StreamRx`] keeps the state between reads
//! (the bytes the current batch uses, a bad length seen) and moves a trailing
//! partial frame to the front of [`RxBuf`] for the next read. The qemu link
//! (`link/qemu.rs`) reads the socket into the buffer and calls these in the
//! order [`StreamRx`] documents; the `qemu_stream` fuzz target drives the
//! same calls over arbitrary byte streams cut into arbitrary reads.

use crate::event_loop::{FRAME_ROOM, MAX_FRAME, TAP_HDR};
use passt_core::FrameRef;

/// Shortest frame accepted (an Ethernet header).
pub const MIN_FRAME: usize = 14;
/// Longest frame accepted (`ETH_MAX_MTU`).
pub const MAX_FRAME_LEN: usize = 65535;

/// A frame length outside 14..=65535.
#[derive(Debug, PartialEq, Eq)]
pub struct BadLength(pub u32);

/// Finds the complete frames in `buf`, appending a descriptor for each to
/// `refs`; returns how many bytes they use (the rest is a partial frame). On a
/// bad length, `refs` keeps the good frames before it.
pub fn split_frames(buf: &[u8], refs: &mut Vec<FrameRef>) -> Result<usize, BadLength> {
    let mut off = 0usize;
    while refs.len() < refs.capacity().max(1) {
        let Some(hdr) = buf.get(off..off + TAP_HDR) else {
            break;
        };
        let len = u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let l = len as usize;
        if !(MIN_FRAME..=MAX_FRAME_LEN).contains(&l) {
            return Err(BadLength(len));
        }
        let end = off + TAP_HDR + l;
        if end > buf.len() {
            break;
        }
        refs.push(FrameRef {
            offset: (off + TAP_HDR) as u32,
            len,
        });
        off = end;
    }
    Ok(off)
}

/// The receive batch buffer with its frame descriptors. For passt, `fill`
/// bytes are valid and a partial frame may be kept at the front between reads.
#[derive(Debug)]
pub struct RxBuf {
    /// The bytes read.
    pub buf: Vec<u8>,
    /// The frames of the current batch.
    pub refs: Vec<FrameRef>,
    /// Bytes of `buf` that are valid.
    pub fill: usize,
}

impl RxBuf {
    /// A buffer for a batch of `bytes` (16384 frames at most).
    pub fn new(bytes: usize) -> Self {
        Self::with_frames(bytes, 16384)
    }

    /// A buffer whose batches hold at most `frames` frames.
    pub fn with_frames(bytes: usize, frames: usize) -> Self {
        RxBuf {
            // Room for a whole batch plus one partial frame carried over.
            buf: vec![0; bytes + MAX_FRAME + FRAME_ROOM],
            refs: Vec::with_capacity(frames.max(1)),
            fill: 0,
        }
    }
}

/// The reassembly state of one client's stream. After a read into
/// `rx.buf[rx.fill..]` (preceded by [`Self::begin`]): [`Self::reparse`];
/// then, while `rx.refs` holds frames, hand them over, clear `rx.refs` and
/// call [`Self::keep_partial`], stop if [`Self::is_broken`], else
/// [`Self::reparse`] again (the rest of a read larger than one batch is
/// already in the buffer, where no readiness would report it); finally
/// [`Self::take_broken`] (true: reset the client) and
/// [`Self::keep_partial`].
#[derive(Debug, Default)]
pub struct StreamRx {
    /// Bytes of the receive buffer used by the frames of the current batch.
    consumed: usize,
    /// A bad frame length was read: reset once the frames before it are done.
    broken: bool,
}

impl StreamRx {
    /// Before a read: no frames, nothing used.
    pub fn begin(&mut self, rx: &mut RxBuf) {
        rx.refs.clear();
        self.consumed = 0;
    }

    /// Finds complete frames in `rx.buf[..rx.fill]`, up to the capacity of
    /// `rx.refs`. A bad length marks the stream broken: the frames before it
    /// are still handed over.
    pub fn reparse(&mut self, rx: &mut RxBuf) {
        rx.refs.clear();
        match split_frames(rx.buf.get(..rx.fill).unwrap_or(&[]), &mut rx.refs) {
            Ok(used) => self.consumed = used,
            Err(BadLength(l)) => {
                log::info!("bad frame size {l}");
                self.broken = true;
                self.consumed = rx.refs.last().map_or(0, |r| (r.offset + r.len) as usize);
            }
        }
    }

    /// Whether a bad length was seen.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Whether a bad length was seen; forgets it (the client is reset).
    pub fn take_broken(&mut self) -> bool {
        std::mem::take(&mut self.broken)
    }

    /// Moves a trailing partial frame to the front of the buffer.
    pub fn keep_partial(&mut self, rx: &mut RxBuf) {
        let used = self.consumed.min(rx.fill);
        rx.buf.copy_within(used..rx.fill, 0);
        rx.fill -= used;
        self.consumed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut v = Vec::new();
        for f in frames {
            v.extend_from_slice(&(f.len() as u32).to_be_bytes());
            v.extend_from_slice(f);
        }
        v
    }

    /// Feeds `stream` in chunks of the given sizes through split/keep, the way
    /// the loop does, and collects every frame.
    fn feed(stream: &[u8], cuts: &[usize]) -> Result<Vec<Vec<u8>>, BadLength> {
        let mut buf = vec![0u8; stream.len() + 8];
        let mut fill = 0;
        let mut out = Vec::new();
        let mut refs = Vec::with_capacity(64);
        let mut pos = 0;
        let mut cuts = cuts.iter().copied().cycle();
        while pos < stream.len() {
            let n = cuts.next().unwrap_or(1).max(1).min(stream.len() - pos);
            buf[fill..fill + n].copy_from_slice(&stream[pos..pos + n]);
            fill += n;
            pos += n;
            loop {
                refs.clear();
                let used = split_frames(&buf[..fill], &mut refs)?;
                for r in &refs {
                    out.push(buf[r.offset as usize..][..r.len as usize].to_vec());
                }
                buf.copy_within(used..fill, 0);
                fill -= used;
                if refs.len() < refs.capacity() {
                    break;
                }
            }
        }
        assert_eq!(fill, 0, "nothing left over");
        Ok(out)
    }

    #[test]
    fn split_many_and_partial() {
        let frames = vec![vec![1u8; 14], vec![2u8; 60], vec![3u8; 1514]];
        let s = encode(&frames);
        let mut refs = Vec::with_capacity(8);
        assert_eq!(split_frames(&s, &mut refs), Ok(s.len()));
        assert_eq!(refs.len(), 3);
        assert_eq!(
            refs[1],
            FrameRef {
                offset: 4 + 14 + 4,
                len: 60
            }
        );
        refs.clear();
        assert_eq!(
            split_frames(&s[..s.len() - 1], &mut refs),
            Ok(4 + 14 + 4 + 60)
        );
        assert_eq!(refs.len(), 2);
        refs.clear();
        assert_eq!(split_frames(&s[..3], &mut refs), Ok(0));
        assert!(refs.is_empty());
    }

    #[test]
    fn bad_lengths_reset() {
        let mut refs = Vec::with_capacity(8);
        assert_eq!(
            split_frames(&13u32.to_be_bytes(), &mut refs),
            Err(BadLength(13))
        );
        assert_eq!(
            split_frames(&65536u32.to_be_bytes(), &mut refs),
            Err(BadLength(65536))
        );
        assert_eq!(
            split_frames(&0u32.to_be_bytes(), &mut refs),
            Err(BadLength(0))
        );
        let mut s = encode(&[vec![0u8; 65535]]);
        assert_eq!(split_frames(&s, &mut refs), Ok(s.len()));
        s.extend_from_slice(&u32::MAX.to_be_bytes());
        refs.clear();
        assert_eq!(split_frames(&s, &mut refs), Err(BadLength(u32::MAX)));
    }

    #[test]
    fn every_byte_boundary() {
        let frames = vec![vec![9u8; 60], vec![8u8; 42], vec![7u8; 100]];
        let s = encode(&frames);
        assert_eq!(feed(&s, &[1]).unwrap(), frames);
        for cut in 1..s.len() {
            assert_eq!(feed(&s, &[cut, s.len()]).unwrap(), frames, "cut at {cut}");
        }
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_frames(
            lens in proptest::collection::vec(14usize..3000, 1..12),
            cuts in proptest::collection::vec(1usize..5000, 1..20),
        ) {
            let frames: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(i, &l)| vec![i as u8; l])
                .collect();
            let s = encode(&frames);
            prop_assert_eq!(feed(&s, &cuts).unwrap(), frames);
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut refs = Vec::with_capacity(16);
            if let Ok(used) = split_frames(&data, &mut refs) {
                prop_assert!(used <= data.len());
                for r in &refs {
                    prop_assert!((r.offset + r.len) as usize <= data.len());
                }
            }
        }
    }
}
