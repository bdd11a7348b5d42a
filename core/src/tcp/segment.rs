//! TCP headers: parsing the guest's, writing ours.

use crate::tap::FlowKey;
use crate::wire::{be16, be32, put, put16, put32};

pub(crate) const FIN: u8 = 0x01;
pub(crate) const SYN: u8 = 0x02;
pub(crate) const RST: u8 = 0x04;
pub(crate) const PSH: u8 = 0x08;
pub(crate) const ACK: u8 = 0x10;

/// Length of a TCP header without options.
pub(crate) const TCP_HLEN: usize = 20;
/// Length of our SYN options: MSS (4), NOP (1), window scale (3).
pub(crate) const SYN_OPTS_LEN: usize = 8;
/// Length of the timestamps option as we write it: two NOPs, then kind 8,
/// length 10, TSval and TSecr (RFC 7323 §3, Appendix A's layout).
pub(crate) const TS_OPT_LEN: usize = 12;

/// A guest segment, with its payload located in the batch buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Seg {
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    pub(crate) flags: u8,
    pub(crate) win: u16,
    /// MSS option, if present.
    pub(crate) mss: Option<u16>,
    /// Window-scale option, if present.
    pub(crate) ws: Option<u8>,
    /// Timestamps option (TSval, TSecr), if present, on any segment.
    pub(crate) ts: Option<(u32, u32)>,
    /// Offset of the payload in the batch buffer.
    pub(crate) payload_off: u32,
    /// Payload length.
    pub(crate) len: u32,
}

impl Seg {
    pub(crate) fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// Parses the TCP header at the start of `l4` (header and payload, already
/// cut to the IP length), which lies at `l4_off` in the batch buffer.
/// Options are walked with bounds checks; a malformed option list ends the
/// walk (the options seen so far count). MSS and window scale count only on
/// a SYN; timestamps on any segment.
pub(crate) fn parse(l4: &[u8], l4_off: u32) -> Option<Seg> {
    let doff = usize::from(*l4.get(12)? >> 4) * 4;
    if doff < TCP_HLEN || doff > l4.len() {
        return None;
    }
    let mut s = Seg {
        seq: be32(l4, 4)?,
        ack: be32(l4, 8)?,
        flags: *l4.get(13)? & 0x3f,
        win: be16(l4, 14)?,
        mss: None,
        ws: None,
        ts: None,
        payload_off: l4_off.checked_add(doff as u32)?,
        len: (l4.len() - doff) as u32,
    };
    let opts = l4.get(TCP_HLEN..doff)?;
    let syn = s.has(SYN);
    // The layout every stack that sends timestamps uses on data segments.
    if opts.get(..4) == Some(&[1, 1, 8, 10]) && opts.len() >= TS_OPT_LEN {
        s.ts = be32(opts, 4).zip(be32(opts, 8));
        if !syn {
            return Some(s);
        }
    }
    let mut i = 0;
    while let Some(&kind) = opts.get(i) {
        match kind {
            0 => break,
            1 => i += 1,
            _ => {
                let Some(&len) = opts.get(i + 1) else { break };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    break;
                }
                match (kind, len) {
                    (2, 4) if syn => s.mss = be16(opts, i + 2),
                    (3, 3) if syn => s.ws = opts.get(i + 2).copied(),
                    (8, 10) => s.ts = be32(opts, i + 2).zip(be32(opts, i + 6)),
                    _ => {}
                }
                i += len;
            }
        }
    }
    Some(s)
}

/// A header to write.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hdr {
    /// Source and destination ports.
    pub(crate) ports: (u16, u16),
    pub(crate) seq: u32,
    pub(crate) ack: u32,
    pub(crate) flags: u8,
    pub(crate) win: u16,
    /// MSS and window scale for SYN segments (window scale only if `Some`).
    pub(crate) syn_opts: Option<(u16, Option<u8>)>,
    /// Timestamps (TSval, TSecr), on a connection that uses them.
    pub(crate) ts: Option<(u32, u32)>,
}

impl Hdr {
    /// A reset to the guest on `key`'s flow: no window, no options.
    pub(crate) fn reset(key: &FlowKey, seq: u32, ack: u32, flags: u8) -> Hdr {
        Hdr {
            ports: key.reply_ports(),
            seq,
            ack,
            flags,
            win: 0,
            syn_opts: None,
            ts: None,
        }
    }

    /// Header length including options.
    pub(crate) fn len(&self) -> usize {
        let syn = match self.syn_opts {
            Some((_, Some(_))) => SYN_OPTS_LEN,
            Some((_, None)) => 4,
            None => 0,
        };
        TCP_HLEN + syn + if self.ts.is_some() { TS_OPT_LEN } else { 0 }
    }

    /// Writes the header (checksum zero) at `b[0..]`; returns its length.
    pub(crate) fn write(&self, b: &mut [u8]) -> Option<usize> {
        let n = self.len();
        let h = b.get_mut(..n)?;
        put16(h, 0, self.ports.0)?;
        put16(h, 2, self.ports.1)?;
        put32(h, 4, self.seq)?;
        put32(h, 8, if self.flags & ACK != 0 { self.ack } else { 0 })?;
        h[12] = ((n / 4) as u8) << 4;
        h[13] = self.flags;
        put16(h, 14, self.win)?;
        put32(h, 16, 0)?; // checksum, urgent pointer
        let mut at = TCP_HLEN;
        if let Some((mss, ws)) = self.syn_opts {
            put(h, at, &[2, 4])?;
            put16(h, at + 2, mss)?;
            at += 4;
            if let Some(ws) = ws {
                put(h, at, &[1, 3, 3, ws])?;
                at += 4;
            }
        }
        if let Some((val, ecr)) = self.ts {
            put(h, at, &[1, 1, 8, 10])?;
            put32(h, at + 4, val)?;
            put32(h, at + 8, ecr)?;
        }
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(doff: u8, flags: u8, opts: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 20];
        b[4..8].copy_from_slice(&100u32.to_be_bytes());
        b[12] = doff << 4;
        b[13] = flags;
        b[14..16].copy_from_slice(&1000u16.to_be_bytes());
        b.extend_from_slice(opts);
        b.extend_from_slice(b"data");
        b
    }

    #[test]
    fn options_parsed_only_when_well_formed() {
        let b = hdr(8, SYN, &[2, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 0, 0]);
        let s = parse(&b, 1000).unwrap();
        assert_eq!(
            (s.mss, s.ws, s.len, s.payload_off),
            (Some(1460), Some(7), 4, 1032)
        );
        // Length 0 and 1 options end the walk without panicking.
        for bad in [[2u8, 0, 0, 0], [2, 1, 0, 0], [3, 9, 0, 0], [2, 4, 5, 0]] {
            let b = hdr(6, SYN, &bad);
            let s = parse(&b, 0).unwrap();
            assert_eq!(s.ws, None);
            let _ = s.mss;
        }
        // Bad data offsets.
        assert!(parse(&hdr(4, ACK, &[]), 0).is_none());
        assert!(parse(&hdr(15, ACK, &[]), 0).is_none());
        assert!(parse(&[0u8; 10], 0).is_none());
        // Options ignored without SYN.
        let s = parse(&hdr(6, ACK, &[2, 4, 1, 1]), 0).unwrap();
        assert_eq!(s.mss, None);
    }

    #[test]
    fn write_then_parse() {
        let h = Hdr {
            ports: (1, 2),
            seq: 3,
            ack: 4,
            flags: SYN | ACK,
            win: 5,
            syn_opts: Some((1400, Some(8))),
            ts: None,
        };
        let mut b = [0u8; 40];
        assert_eq!(h.write(&mut b), Some(28));
        let s = parse(&b[..28], 0).unwrap();
        assert_eq!((s.seq, s.ack, s.flags, s.win), (3, 4, SYN | ACK, 5));
        assert_eq!((s.mss, s.ws), (Some(1400), Some(8)));
        assert_eq!(h.write(&mut b[..27]), None);
    }

    #[test]
    fn timestamps_parsed_on_every_segment_and_written_after_syn_options() {
        // Linux's SYN: MSS, SACK permitted, timestamps, NOP, window scale.
        let syn = [
            2, 4, 0xff, 0xd7, 4, 2, 8, 10, 0, 0, 0, 7, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let s = parse(&hdr(10, SYN, &syn), 0).unwrap();
        assert_eq!((s.mss, s.ws, s.ts), (Some(65495), Some(7), Some((7, 0))));
        // A data segment: the usual layout, and the option elsewhere.
        let data = [1, 1, 8, 10, 0, 0, 1, 0, 0, 0, 0, 9];
        let s = parse(&hdr(8, ACK, &data), 0).unwrap();
        assert_eq!((s.ts, s.len, s.payload_off), (Some((256, 9)), 4, 32));
        let odd = [8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0];
        assert_eq!(parse(&hdr(8, ACK, &odd), 0).unwrap().ts, Some((1, 2)));
        // Cut short: no timestamps, no panic.
        let cut = [1, 1, 8, 10, 0, 0, 1, 0];
        assert_eq!(parse(&hdr(7, ACK, &cut), 0).unwrap().ts, None);
        for (syn_opts, len) in [(None, 32), (Some((1460, Some(7))), 40)] {
            let h = Hdr {
                ports: (1, 2),
                seq: 3,
                ack: 4,
                flags: ACK | if syn_opts.is_some() { SYN } else { 0 },
                win: 5,
                syn_opts,
                ts: Some((0x0102_0304, 0x0506_0708)),
            };
            let mut b = [0u8; 60];
            assert_eq!(h.write(&mut b), Some(len));
            assert_eq!(h.len(), len);
            let s = parse(&b[..len], 0).unwrap();
            assert_eq!(s.ts, Some((0x0102_0304, 0x0506_0708)));
            assert_eq!(s.mss, syn_opts.map(|o| o.0));
        }
    }
}
