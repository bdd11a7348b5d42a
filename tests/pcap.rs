//! Reading the reference captures.

use std::path::{Path, PathBuf};

/// The folder holding the reference captures.
pub fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("captures")
}

/// Every frame of a classic pcap file, in order.
pub fn read_frames(path: &Path) -> Vec<Vec<u8>> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = pcap_file::pcap::PcapReader::new(file)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.push(pkt.data.into_owned());
    }
    out
}

/// Splits a capture taken on the guest side into the guest's frames and the
/// translator's, by source MAC: the guest is whoever sent the first frame.
pub fn split_by_sender(frames: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let Some(first) = frames.first() else {
        return (Vec::new(), Vec::new());
    };
    let guest_mac = first.get(6..12).map(<[u8]>::to_vec);
    frames
        .iter()
        .cloned()
        .partition(|f| f.get(6..12).map(<[u8]>::to_vec) == guest_mac)
}
