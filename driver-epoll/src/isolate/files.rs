//! Output files: the PID file (`-P`), the capture (`--pcap`) and the log file
//! (`-l`), all opened by one helper before privileges are dropped.
//!
//! Started as root, passt or pasta writes where an unprivileged user may
//! have prepared the way (`/tmp` is the usual place for all three), so:
//!
//! - the last component is never followed if it is a symbolic link
//!   (`O_NOFOLLOW`): `-P /tmp/x` with `/tmp/x -> /etc/shadow` fails instead
//!   of truncating the target;
//! - only a regular file with a single link is used: a FIFO, a device, a
//!   socket, a directory or a file hard-linked elsewhere is refused. The open
//!   itself does not block (`O_NONBLOCK`, cleared afterwards) and does not
//!   truncate: the file is cut to zero only once it passed the checks;
//! - a new file gets mode 0600 (as upstream passt: captures and logs show
//!   guest traffic and addresses).
//!
//! Upstream passt opens these with `O_CREAT | O_TRUNC` and no `O_EXCL`
//! (users point `-P` at the same path on every start); so does this, the
//! checks above replacing what `O_EXCL` would give.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Mode of a new output file.
pub(crate) const MODE: u32 = 0o600;

/// Creates or truncates the output file `path`, given with option `opt`.
/// Errors read "`what` `path` (`opt`): why" ("creating the PID file
/// /run/x.pid (-P): is a symbolic link, ..."). `read`: also open it for
/// reading (the log file reads itself back when it rotates).
pub(crate) fn create_output(what: &str, opt: &str, path: &Path, read: bool) -> io::Result<File> {
    let fail = |e: io::Error, why: &str| {
        io::Error::new(
            e.kind(),
            format!("{what} {} ({opt}): {why}", path.display()),
        )
    };
    let describe = super::describe;
    let f = std::fs::OpenOptions::new()
        .read(read)
        .write(true)
        .create(true)
        .mode(MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => fail(e, "is a symbolic link, refusing to follow it"),
            Some(libc::ENXIO) => fail(e, "is a FIFO or socket, not a regular file"),
            _ => {
                let m = describe(&e);
                fail(e, &m)
            }
        })?;
    let md = f.metadata().map_err(|e| {
        let m = describe(&e);
        fail(e, &m)
    })?;
    if !md.file_type().is_file() {
        return Err(fail(
            io::Error::from(io::ErrorKind::InvalidInput),
            "not a regular file",
        ));
    }
    if md.nlink() > 1 {
        return Err(fail(
            io::Error::from(io::ErrorKind::InvalidInput),
            "has other hard links, refusing to write it",
        ));
    }
    // SAFETY: F_SETFL on a descriptor we own, with plain flags.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, 0) } < 0 {
        let e = io::Error::last_os_error();
        let m = describe(&e);
        return Err(fail(e, &m));
    }
    f.set_len(0).map_err(|e| {
        let m = describe(&e);
        fail(e, &m)
    })?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    struct Dir(std::path::PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            let p =
                std::env::temp_dir().join(format!("passt-rs-files-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn new_file_is_private_existing_is_truncated() {
        let d = Dir::new("new");
        let p = d.0.join("out");
        let mut f = create_output("creating the PID file", "-P", &p, false).unwrap();
        f.write_all(b"hello").unwrap();
        drop(f);
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        assert_eq!(md.len(), 5);
        let f = create_output("creating the PID file", "-P", &p, false).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 0);
    }

    #[test]
    fn symlink_is_refused_target_untouched() {
        let d = Dir::new("link");
        let target = d.0.join("target");
        std::fs::write(&target, b"precious").unwrap();
        let link = d.0.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = create_output("creating the capture file", "--pcap", &link, false).unwrap_err();
        let m = e.to_string();
        assert!(
            m.starts_with(&format!(
                "creating the capture file {} (--pcap): ",
                link.display()
            )),
            "{m}"
        );
        assert!(m.contains("symbolic link"), "{m}");
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        // A dangling link is not created through either.
        let dangling = d.0.join("dangling");
        std::os::unix::fs::symlink(d.0.join("nothing"), &dangling).unwrap();
        assert!(create_output("opening the log file", "-l", &dangling, true).is_err());
        assert!(!d.0.join("nothing").exists());
    }

    #[test]
    fn fifo_directory_and_hard_link_are_refused() {
        let d = Dir::new("types");
        let fifo = d.0.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid path string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let m = create_output("creating the PID file", "-P", &fifo, false)
            .unwrap_err()
            .to_string();
        assert!(m.contains("not a regular file"), "{m}");
        assert!(create_output("creating the PID file", "-P", &d.0, false).is_err());
        let a = d.0.join("a");
        std::fs::write(&a, b"data").unwrap();
        std::fs::hard_link(&a, d.0.join("b")).unwrap();
        let m = create_output("creating the PID file", "-P", &a, false)
            .unwrap_err()
            .to_string();
        assert!(m.contains("hard links"), "{m}");
        assert_eq!(std::fs::read(&a).unwrap(), b"data");
    }
}
