//! A small logger behind the `log` facade.
//!
//! Destinations, as in upstream passt: before the command line is read everything goes
//! to standard error. Afterwards, either a log file (`-l`, rotated at
//! `--log-size` by cutting the oldest ~30 %), or, with `-d` and no log file,
//! standard error with relative timestamps, or syslog (`/dev/log`, facility
//! daemon). Syslog is used only if `/dev/log` exists, and a failure to send is
//! dropped without a word. Standard error also stays on while in the
//! foreground, until the process daemonises.
//!
//! Levels: info by default, warnings and errors with `-q`, debug with `-d`,
//! per-packet traces with `--trace`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// System calls of logging while running (see `isolate::seccomp`).
pub(crate) const SYSCALLS: &[crate::isolate::Syscall] = crate::isolate::syscalls![
    // Standard error and the log file.
    SYS_write,
    // Syslog datagrams on the socket connected at start-up.
    SYS_sendto,
    // Rotating the log file: read it back, rewrite it, cut it.
    SYS_lseek,
    SYS_read,
    SYS_ftruncate,
];

/// Default `--log-size`: 1 MiB.
pub(crate) const LOG_SIZE_DEFAULT: u64 = 1 << 20;
/// Smallest `--log-size` accepted (upstream passt: 5 × max(BUFSIZ, page size)).
pub(crate) const LOG_SIZE_MIN: u64 = 5 * 8192;
/// Share of the file cut when it is full, in percent.
const CUT_PERCENT: u64 = 30;

/// Where log lines go, decided once the options are known.
#[derive(Debug, Default, Clone)]
pub(crate) struct LogSettings {
    /// Name in syslog and in the log file header (`passt` or `pasta`).
    pub(crate) ident: &'static str,
    /// `-l`: log file.
    pub(crate) file: Option<std::path::PathBuf>,
    /// `--log-size`.
    pub(crate) file_size: Option<u64>,
    /// `-q`
    pub(crate) quiet: bool,
    /// `-d`
    pub(crate) debug: bool,
    /// `--trace`
    pub(crate) trace: bool,
    /// Keep standard error on (foreground).
    pub(crate) stderr: bool,
}

struct LogFile {
    file: File,
    size: u64,
    max: u64,
    header: String,
}

struct Inner {
    ident: &'static str,
    /// Our PID as the host sees it, for syslog (read once: a daemon may be
    /// PID 1 of its own PID namespace, and the filter has no `getpid`).
    pid: u32,
    stderr: bool,
    timestamps: bool,
    file: Option<LogFile>,
    syslog: Option<UnixDatagram>,
}

struct Logger {
    start: std::time::Instant,
    inner: Mutex<Inner>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

fn logger() -> &'static Logger {
    LOGGER.get_or_init(|| Logger {
        start: std::time::Instant::now(),
        inner: Mutex::new(Inner {
            ident: "passt",
            pid: std::process::id(),
            stderr: true,
            timestamps: false,
            file: None,
            syslog: None,
        }),
    })
}

/// Installs the logger: standard error only, level info.
pub(crate) fn init(ident: &'static str) {
    let l = logger();
    if let Ok(mut i) = l.inner.lock() {
        i.ident = ident;
    }
    if log::set_logger(l).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Applies the command line's logging options.
pub(crate) fn configure(s: &LogSettings) -> std::io::Result<()> {
    let level = if s.trace {
        log::LevelFilter::Trace
    } else if s.debug {
        log::LevelFilter::Debug
    } else if s.quiet {
        log::LevelFilter::Warn
    } else {
        log::LevelFilter::Info
    };
    let file = match &s.file {
        Some(p) => Some(LogFile::open(
            p,
            s.ident,
            s.file_size.unwrap_or(LOG_SIZE_DEFAULT).max(LOG_SIZE_MIN),
        )?),
        None => None,
    };
    let syslog = if file.is_none() && !s.debug {
        open_syslog()
    } else {
        None
    };
    let l = logger();
    if let Ok(mut i) = l.inner.lock() {
        i.ident = s.ident;
        i.stderr = (s.stderr || s.debug) && file.is_none();
        i.timestamps = s.debug;
        i.file = file;
        i.syslog = syslog;
    }
    log::set_max_level(level);
    Ok(())
}

/// Sets the PID shown in syslog lines (a daemon's, as its parent saw it).
pub(crate) fn set_pid(pid: u32) {
    if let Ok(mut i) = logger().inner.lock() {
        i.pid = pid;
    }
}

/// Stops writing to standard error (after daemonising).
pub(crate) fn stderr_off() {
    if let Ok(mut i) = logger().inner.lock() {
        i.stderr = false;
    }
}

fn open_syslog() -> Option<UnixDatagram> {
    open_syslog_at(Path::new("/dev/log"))
}

/// Connects to a syslog socket; `None` (and no message about it) if there is
/// none.
fn open_syslog_at(path: &Path) -> Option<UnixDatagram> {
    if !path.exists() {
        return None;
    }
    let s = UnixDatagram::unbound().ok()?;
    s.connect(path).ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

fn prefix(l: log::Level) -> &'static str {
    match l {
        log::Level::Error => "ERROR:   ",
        log::Level::Warn => "WARNING: ",
        log::Level::Info => "info:    ",
        _ => "         ",
    }
}

fn severity(l: log::Level) -> u8 {
    match l {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        _ => 7,
    }
}

/// One syslog datagram: priority (facility LOG_DAEMON), tag with our PID,
/// message.
fn syslog_line(level: log::Level, ident: &str, pid: u32, msg: &str) -> String {
    let pri = 3 * 8 + severity(level);
    format!("<{pri}>{ident}[{pid}]: {msg}")
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let e = self.start.elapsed();
        let ts = format!("{}.{:04}", e.as_secs(), e.subsec_micros() / 100);
        let Ok(mut i) = self.inner.lock() else { return };
        if i.stderr {
            let mut err = std::io::stderr().lock();
            let _ = if i.timestamps {
                writeln!(err, "{ts}: {}", r.args())
            } else {
                writeln!(err, "{}", r.args())
            };
        }
        if let Some(f) = &mut i.file {
            f.write_line(&format!("{ts}: {}{}\n", prefix(r.level()), r.args()));
        }
        let ident = i.ident;
        if let Some(s) = &i.syslog {
            let msg = syslog_line(r.level(), ident, i.pid, &r.args().to_string());
            let _ = s.send(msg.as_bytes());
        }
    }

    fn flush(&self) {}
}

impl LogFile {
    fn open(path: &Path, ident: &str, max: u64) -> std::io::Result<Self> {
        let mut file =
            crate::isolate::files::create_output("opening the log file", "-l", path, true)?;
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let header = format!(
            "{ident} {}: {exe} ({})",
            env!("CARGO_PKG_VERSION"),
            std::process::id()
        );
        file.write_all(format!("{header}\n").as_bytes())
            .map_err(|e| {
                crate::isolate::step(&format!("writing the log file {} (-l)", path.display()), e)
            })?;
        let size = header.len() as u64 + 1;
        Ok(LogFile {
            file,
            size,
            max,
            header,
        })
    }

    fn write_line(&mut self, line: &str) {
        let len = line.len() as u64;
        if self.size + len > self.max && self.rotate().is_err() {
            return;
        }
        if self.file.write_all(line.as_bytes()).is_ok() {
            self.size += len;
        }
    }

    /// Cuts the oldest ~30 % of the lines after the header and notes it in
    /// the header line.
    fn rotate(&mut self) -> std::io::Result<()> {
        let f = &mut self.file;
        f.seek(SeekFrom::Start(0))?;
        // The size is known: read exactly that (`read_to_end` would ask the
        // kernel for the file's size first, a call the filter does not allow).
        let mut all = vec![0u8; usize::try_from(self.size).unwrap_or(0)];
        f.read_exact(&mut all)?;
        let body_start = all.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1);
        let body = all.get(body_start..).unwrap_or(&[]);
        let cut = (self.max * CUT_PERCENT / 100) as usize;
        let cut = body
            .iter()
            .skip(cut.min(body.len()))
            .position(|&b| b == b'\n')
            .map_or(body.len(), |p| cut.min(body.len()) + p + 1);
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let head = format!("{} - log truncated at {secs}\n", self.header);
        let rest = body.get(cut..).unwrap_or(&[]);
        f.seek(SeekFrom::Start(0))?;
        f.write_all(head.as_bytes())?;
        f.write_all(rest)?;
        let size = (head.len() + rest.len()) as u64;
        f.set_len(size)?;
        f.seek(SeekFrom::Start(size))?;
        self.size = size;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_file_rotates_within_its_size() {
        let p = std::env::temp_dir().join(format!("passt-rs-log-{}.log", std::process::id()));
        let max = LOG_SIZE_MIN;
        let mut f = LogFile::open(&p, "pasta", max).unwrap();
        for n in 0..5000 {
            f.write_line(&format!("0.0000: info:    line number {n}\n"));
            assert!(f.size <= max);
        }
        drop(f);
        let s = std::fs::read_to_string(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        assert!(s.len() as u64 <= max);
        let first = s.lines().next().unwrap();
        assert!(first.starts_with("pasta "), "{first}");
        assert!(first.contains("log truncated at"), "{first}");
        assert!(s.ends_with("line number 4999\n"));
        assert!(!s.contains("line number 0\n"));
        // Every line after the header is whole.
        for l in s.lines().skip(1) {
            assert!(l.starts_with("0.0000: info:    line number "), "{l}");
        }
    }

    #[test]
    fn syslog_socket_and_format() {
        let dir = std::env::temp_dir().join(format!("passt-rs-syslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        assert!(open_syslog_at(&path).is_none(), "no socket, no syslog");
        let server = UnixDatagram::bind(&path).unwrap();
        let client = open_syslog_at(&path).expect("connects");
        let line = syslog_line(log::Level::Warn, "pasta", std::process::id(), "hello");
        client.send(line.as_bytes()).unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert_eq!(got, format!("<28>pasta[{}]: hello", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn levels_and_syslog_frames() {
        assert_eq!(severity(log::Level::Error), 3);
        assert_eq!(prefix(log::Level::Warn), "WARNING: ");
        assert_eq!(prefix(log::Level::Debug).trim(), "");
    }
}
