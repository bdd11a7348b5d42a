//! Frames with offload metadata: completing and splitting them as a NIC would.

use super::*;

/// What a link with offloads does with a frame the core gave it with
/// `meta`, as the kernel does with a frame written to a tap with virtio-net
/// headers: checks the metadata against the frame (the checksum field must
/// hold the pseudo-header sum at the TCP header; a GSO frame's headers and
/// family must match), then completes the checksum and, for a GSO frame,
/// splits it into segments of `gso.size` bytes (sequence numbers moved on,
/// PSH and FIN on the last only, lengths and checksums rewritten). A frame
/// without metadata is returned as it is. `Err` names what was wrong.
// Long by design: validation, checksum completion and GSO splitting share the parsed
// headers; it follows the order a NIC works in.
pub fn finish_offloaded(
    frame: &[u8],
    meta: &passt_core::FrameMeta,
) -> Result<Vec<Vec<u8>>, String> {
    use passt_core::{Csum, GsoKind};
    let (start, offset) = match meta.csum {
        Csum::Complete | Csum::Valid if meta.gso.is_none() => return Ok(vec![frame.to_vec()]),
        Csum::Partial { start, offset } => (usize::from(start), usize::from(offset)),
        _ => return Err(format!("GSO without a partial checksum: {meta:?}")),
    };
    let (v6, l4_off, ip_end) = match frame.get(12..14) {
        Some([0x08, 0x00]) => {
            let ihl = usize::from(frame.get(14).map_or(0, |b| b & 0x0f)) * 4;
            let total = frame
                .get(16..18)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            (false, 14 + ihl, 14 + usize::from(total))
        }
        Some([0x86, 0xdd]) => {
            let plen = frame
                .get(18..20)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            (true, 54, 54 + usize::from(plen))
        }
        _ => return Err("offload metadata on a frame that is not IP".into()),
    };
    if ip_end > frame.len() || frame.get(if v6 { 20 } else { 23 }) != Some(&6) {
        return Err("offload metadata on a frame that is not TCP, or truncated".into());
    }
    if start != l4_off || offset != 16 {
        return Err(format!(
            "checksum at {start}+{offset}, TCP header at {l4_off}"
        ));
    }
    let Some(t) = parse_tcp(frame) else {
        return Err("TCP segment does not parse".into());
    };
    let (src, dst) = (t.src.ip(), t.dst.ip());
    let l4 = &frame[l4_off..ip_end];
    let seed = u16::from_be_bytes([l4[16], l4[17]]);
    let want = fold(pseudo_sum(src, dst, 6, l4.len()));
    if seed != want {
        return Err(format!(
            "partial checksum {seed:#06x}, pseudo-header sum {want:#06x}"
        ));
    }
    let doff = usize::from(l4[12] >> 4) * 4;
    let payload = &l4[doff..];
    let (size, hdr_len) = match meta.gso {
        None => (payload.len().max(1), l4_off + doff),
        Some(g) => {
            let kind = if v6 { GsoKind::Tcp6 } else { GsoKind::Tcp4 };
            if g.kind != kind || usize::from(g.hdr_len) != l4_off + doff || g.size == 0 {
                return Err(format!(
                    "GSO metadata {g:?} for a frame with {} bytes of headers",
                    l4_off + doff
                ));
            }
            if payload.len() <= usize::from(g.size) {
                return Err(format!(
                    "GSO frame of {} bytes, segments of {}",
                    payload.len(),
                    g.size
                ));
            }
            (usize::from(g.size), usize::from(g.hdr_len))
        }
    };
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![payload]
    } else {
        payload.chunks(size).collect()
    };
    let n = chunks.len();
    let mut out = Vec::with_capacity(n);
    let mut seq = t.seq;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut f = Vec::with_capacity(hdr_len + chunk.len());
        f.extend_from_slice(&frame[..hdr_len]);
        f.extend_from_slice(chunk);
        let l4_len = f.len() - l4_off;
        if v6 {
            f[18..20].copy_from_slice(&(l4_len as u16).to_be_bytes());
        } else {
            f[16..18].copy_from_slice(&((l4_len + l4_off - 14) as u16).to_be_bytes());
            f[24..26].fill(0);
            let c = !fold(sum16(&f[14..l4_off], 0));
            f[24..26].copy_from_slice(&c.to_be_bytes());
        }
        let l4 = &mut f[l4_off..];
        l4[4..8].copy_from_slice(&seq.to_be_bytes());
        if i + 1 < n {
            l4[13] &= !(flags::PSH | flags::FIN);
        }
        fill_l4_checksum(src, dst, 6, l4, 16);
        seq = seq.wrapping_add(chunk.len() as u32);
        // Short frames padded as the core pads its own.
        if f.len() < 60 {
            f.resize(60, 0);
        }
        out.push(f);
    }
    Ok(out)
}
