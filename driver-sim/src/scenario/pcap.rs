//! Reading captures (pcap and pcapng) for replays.

use super::*;

/// Reads a classic pcap file's frames with their timestamps. Records are
/// taken as stored (captures of offloaded traffic have records whose wire
/// length exceeds the snapshot length).
pub fn read_pcap(path: &Path) -> Result<Vec<(Duration, Vec<u8>)>, String> {
    use pcap_file::TsResolution;
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if data.get(0..4) == Some(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        return read_pcapng(path, &data);
    }
    let (mut rest, parser) =
        pcap_file::pcap::PcapParser::new(&data).map_err(|e| format!("{}: {e}", path.display()))?;
    let nanos = parser.header().ts_resolution == TsResolution::NanoSecond;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (r, p) = parser
            .next_raw_packet(rest)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let frac = if nanos {
            u64::from(p.ts_frac)
        } else {
            u64::from(p.ts_frac) * 1000
        };
        let ts =
            Duration::from_secs(u64::from(p.ts_sec)) + Duration::from_nanos(frac.min(999_999_999));
        out.push((ts, p.data.into_owned()));
        rest = r;
    }
    Ok(out)
}

/// The Ethernet frames of a pcapng file (enhanced and simple packet blocks).
pub(super) fn read_pcapng(path: &Path, data: &[u8]) -> Result<Vec<(Duration, Vec<u8>)>, String> {
    use pcap_file::pcapng::{Block, PcapNgParser};
    let err = |e: pcap_file::PcapError| format!("{}: {e}", path.display());
    let (mut rest, mut parser) = PcapNgParser::new(data).map_err(err)?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (r, block) = parser.next_block(rest).map_err(err)?;
        match block {
            Block::EnhancedPacket(p) => {
                // The raw count is in units of the interface's resolution
                // (microseconds unless it says otherwise).
                let units = p.timestamp.as_nanos();
                let resol = parser
                    .packet_interface(&p)
                    .and_then(|i| {
                        i.options.iter().find_map(|o| match o {
                            pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
                            _ => None,
                        })
                    })
                    .unwrap_or(6);
                let nanos = match resol {
                    r if r & 0x80 == 0 && r <= 9 => {
                        units.saturating_mul(10u128.pow(9 - u32::from(r)))
                    }
                    r if r & 0x80 == 0 => units / 10u128.pow(u32::from(r.min(38)) - 9),
                    _ => units, // powers of two: rare, taken as nanoseconds
                };
                let ts = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
                out.push((ts, p.data.into_owned()));
            }
            Block::SimplePacket(p) => out.push((
                out.last()
                    .map_or(Duration::ZERO, |l: &(Duration, Vec<u8>)| l.0),
                p.data.into_owned(),
            )),
            _ => {}
        }
        rest = r;
    }
    Ok(out)
}

/// The guest's MAC in a capture: the source of the first frame sent to a
/// broadcast or multicast address.
pub fn guess_guest_mac(frames: &[(Duration, Vec<u8>)]) -> Option<MacAddr> {
    frames
        .iter()
        .find(|f| f.1.first().is_some_and(|b| b & 1 == 1))
        .and_then(|f| f.1.get(6..12))
        .and_then(|m| <[u8; 6]>::try_from(m).ok())
}
