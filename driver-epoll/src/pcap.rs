//! `-p`/`--pcap`: a capture of the guest link, both directions.
//!
//! Classic libpcap format (magic 0xa1b2c3d4, version 2.4, snaplen 65535,
//! link type 1 = Ethernet), microsecond `CLOCK_REALTIME` timestamps. Each
//! record is written with one `writev` of its 16-byte header and the frame.
//! Frames to the guest are recorded only once the link accepted them. The file
//! is created (mode 0600, truncated) at start-up, before privileges are
//! dropped (see `isolate::files`: no symbolic links, regular files only). A
//! write error stops the capture, not the program.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::path::Path;

/// System calls of the capture while running (see `isolate::seccomp`).
pub(crate) const SYSCALLS: &[crate::isolate::Syscall] = crate::isolate::syscalls![
    // Record header and frame in one call; the rest of a short write.
    SYS_writev, SYS_write,
];

/// Snapshot length in the file header: frames are never longer.
pub(crate) const SNAPLEN: u32 = 65535;

/// An open capture file.
#[derive(Debug)]
pub(crate) struct Pcap {
    file: Option<File>,
}

fn file_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_ne_bytes());
    h[4..6].copy_from_slice(&2u16.to_ne_bytes());
    h[6..8].copy_from_slice(&4u16.to_ne_bytes());
    // thiszone, sigfigs: 0.
    h[16..20].copy_from_slice(&SNAPLEN.to_ne_bytes());
    h[20..24].copy_from_slice(&1u32.to_ne_bytes());
    h
}

fn record_header(len: usize) -> [u8; 16] {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&(now.as_secs() as u32).to_ne_bytes());
    h[4..8].copy_from_slice(&now.subsec_micros().to_ne_bytes());
    h[8..12].copy_from_slice(&len.min(SNAPLEN).to_ne_bytes());
    h[12..16].copy_from_slice(&len.to_ne_bytes());
    h
}

impl Pcap {
    /// Creates `path` and writes the file header.
    pub(crate) fn create(path: &Path) -> io::Result<Self> {
        let mut file = crate::isolate::files::create_output(
            "creating the capture file",
            "--pcap",
            path,
            false,
        )?;
        file.write_all(&file_header())?;
        Ok(Pcap { file: Some(file) })
    }

    /// Appends one frame.
    pub(crate) fn write_frame(&mut self, frame: &[u8]) {
        let Some(f) = &mut self.file else { return };
        let frame = frame.get(..SNAPLEN as usize).unwrap_or(frame);
        let hdr = record_header(frame.len());
        let want = hdr.len() + frame.len();
        let r = f.write_vectored(&[IoSlice::new(&hdr), IoSlice::new(frame)]);
        match r {
            Ok(n) if n == want => {}
            Ok(n) => {
                // Rare: finish the record so the file stays readable.
                let rest: Vec<u8> = hdr.iter().chain(frame.iter()).skip(n).copied().collect();
                if f.write_all(&rest).is_err() {
                    self.stop();
                }
            }
            Err(e) => {
                log::error!("pcap write: {e}; capture stopped");
                self.stop();
            }
        }
    }

    fn stop(&mut self) {
        self.file = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_classic_pcap() {
        let dir = std::env::temp_dir();
        let p = dir.join(format!("passt-rs-pcap-{}.pcap", std::process::id()));
        let mut c = Pcap::create(&p).unwrap();
        c.write_frame(&[0xaa; 60]);
        c.write_frame(&[0xbb; 1514]);
        drop(c);
        let b = std::fs::read(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        assert_eq!(b.len(), 24 + 16 + 60 + 16 + 1514);
        let u32at = |o: usize| u32::from_ne_bytes(b[o..o + 4].try_into().unwrap());
        assert_eq!(u32at(0), 0xa1b2_c3d4);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), 2);
        assert_eq!(u16::from_ne_bytes([b[6], b[7]]), 4);
        assert_eq!(u32at(16), 65535);
        assert_eq!(u32at(20), 1);
        // First record: recent timestamp, µs < 1e6, lengths 60.
        let secs = u64::from(u32at(24));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now - secs < 60);
        assert!(u32at(28) < 1_000_000);
        assert_eq!((u32at(32), u32at(36)), (60, 60));
        assert!(b[40..100].iter().all(|&x| x == 0xaa));
        assert_eq!((u32at(100 + 8), u32at(100 + 12)), (1514, 1514));
    }

    #[test]
    fn tcpdump_reads_it() {
        let path = which("tcpdump").expect("tcpdump is needed (tests/run.sh installs it)");
        let p = std::env::temp_dir().join(format!("passt-rs-pcap2-{}.pcap", std::process::id()));
        let mut c = Pcap::create(&p).unwrap();
        let mut arp = vec![0xffu8; 6];
        arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1]);
        arp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
        c.write_frame(&arp);
        drop(c);
        let out = std::process::Command::new(path)
            .args(["-n", "-r"])
            .arg(&p)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&p);
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(s.contains("ARP, Request who-has 10.0.0.2"), "{s}");
    }

    fn which(name: &str) -> Result<std::path::PathBuf, ()> {
        for d in ["/usr/bin", "/usr/sbin", "/bin", "/sbin"] {
            let p = Path::new(d).join(name);
            if p.exists() {
                return Ok(p);
            }
        }
        Err(())
    }
}
