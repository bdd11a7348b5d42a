//! Automatic port forwarding (`-t auto` and `-u auto`, pasta's default):
//! which ports are listening in the guest namespace.
//!
//! `/proc/net/tcp` and `/proc/net/tcp6` of the namespace (and, for UDP,
//! `/proc/net/udp` and `/proc/net/udp6`) are opened once,
//! from a thread inside it (`/proc/thread-self/net/...`: a file opened there
//! keeps showing that namespace), and read again with `pread` from offset 0 on
//! every scan (once a second). TCP sockets in state `LISTEN` (0x0A) give the
//! TCP ports; UDP sockets in state `CLOSE` (0x07: bound, not connected) give
//! the UDP ports, together with the listening TCP ports (as upstream passt
//! does, for tools that announce a UDP port over a TCP one); ports that
//! pasta itself bound in the namespace (outbound forwards) are excluded by
//! the caller's mask. [`PortSet::changes`] tells which ports
//! appeared and which went away since the previous scan.

use crate::fwd::{Forwarding, FwdMode, FwdTable};
use passt_core::{Forward, Instant, Proto};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::Duration;

/// System calls of the port scans while running (see `isolate::seccomp`).
pub(crate) const SYSCALLS: &[crate::isolate::Syscall] = crate::isolate::syscalls![
    // The tables opened at start-up, read from offset 0 on every scan.
    SYS_pread64,
];

/// Number of TCP ports.
const PORTS: usize = 1 << 16;
/// State `TCP_LISTEN` in `/proc/net/tcp`.
const ST_LISTEN: u8 = 0x0a;
/// State of a bound, unconnected UDP socket in `/proc/net/udp`
/// (`TCP_CLOSE`).
const ST_UDP_BOUND: u8 = 0x07;
/// Upper bound of one table's size (a namespace with a huge number of
/// sockets is scanned in part rather than without limit).
const MAX_TABLE_BYTES: usize = 64 << 20;
/// Bytes of a table read at once. Tables are parsed a buffer of whole lines
/// at a time, so memory stays at this size however many sockets the
/// namespace holds (thousands of connections make a table of megabytes).
const SCAN_BUF: usize = 32 << 10;

/// A set of ports, as a bitmap.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PortSet {
    bits: Box<[u64; PORTS / 64]>,
}

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl Default for PortSet {
    fn default() -> Self {
        PortSet {
            bits: Box::new([0; PORTS / 64]),
        }
    }
}

impl PortSet {
    pub(crate) fn insert(&mut self, port: u16) {
        let p = usize::from(port);
        if let Some(w) = self.bits.get_mut(p / 64) {
            *w |= 1 << (p % 64);
        }
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, port: u16) -> bool {
        let p = usize::from(port);
        self.bits
            .get(p / 64)
            .is_some_and(|w| w & (1 << (p % 64)) != 0)
    }

    pub(crate) fn clear(&mut self) {
        self.bits.fill(0);
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.bits.iter().all(|&w| w == 0)
    }

    /// The ports in ascending order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.bits.iter().enumerate().flat_map(|(i, &w)| {
            (0..64u32)
                .filter(move |b| w & (1u64 << b) != 0)
                .filter_map(move |b| u16::try_from(i * 64 + b as usize).ok())
        })
    }

    /// Adds every port of `other`.
    pub(crate) fn add_all(&mut self, other: &PortSet) {
        for (a, b) in self.bits.iter_mut().zip(other.bits.iter()) {
            *a |= b;
        }
    }

    /// Removes every port of `other`.
    pub(crate) fn remove_all(&mut self, other: &PortSet) {
        for (a, b) in self.bits.iter_mut().zip(other.bits.iter()) {
            *a &= !b;
        }
    }

    /// Ports in `new` but not in `self` (appeared), and in `self` but not in
    /// `new` (went away).
    pub(crate) fn changes(&self, new: &PortSet) -> (Vec<u16>, Vec<u16>) {
        let mut added = Vec::new();
        let mut removed = Vec::new();
        for (i, (&o, &n)) in self.bits.iter().zip(new.bits.iter()).enumerate() {
            if o == n {
                continue;
            }
            for b in 0..64usize {
                let Ok(port) = u16::try_from(i * 64 + b) else {
                    continue;
                };
                match ((o >> b) & 1, (n >> b) & 1) {
                    (0, 1) => added.push(port),
                    (1, 0) => removed.push(port),
                    _ => {}
                }
            }
        }
        (added, removed)
    }
}

/// Parses one hexadecimal field.
fn hex(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 8 {
        return None;
    }
    let mut v: u32 = 0;
    for &c in s {
        let d = (c as char).to_digit(16)?;
        v = v.checked_mul(16)?.checked_add(d)?;
    }
    Some(v)
}

/// Adds the local ports of listening sockets in one `/proc/net/tcp` or
/// `/proc/net/tcp6` table to `out`. Lines that do not parse (the header
/// among them) are skipped.
pub(crate) fn parse_listening(table: &[u8], out: &mut PortSet) {
    parse_state(table, ST_LISTEN, out);
}

/// Adds the local ports of sockets in state `want` in one `/proc/net`
/// socket table (`tcp`, `udp` and their `6` twins share the layout) to
/// `out`. Lines that do not parse are skipped.
fn parse_state(table: &[u8], want: u8, out: &mut PortSet) {
    for line in table.split(|&c| c == b'\n') {
        let mut f = line
            .split(|c| c.is_ascii_whitespace())
            .filter(|f| !f.is_empty());
        // "sl" ("0:"), local "ADDR:PORT", remote "ADDR:PORT", state.
        let (Some(sl), Some(local), Some(_), Some(st)) = (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if sl.last() != Some(&b':') {
            continue;
        }
        let Some(colon) = local.iter().rposition(|&c| c == b':') else {
            continue;
        };
        let (Some(port), Some(state)) = (local.get(colon + 1..).and_then(hex), hex(st)) else {
            continue;
        };
        if state == u32::from(want) {
            if let Ok(p) = u16::try_from(port) {
                out.insert(p);
            }
        }
    }
}

/// Opens `/proc/thread-self/net/{name}` for each name; a missing table
/// (IPv6 disabled) is skipped, none present is an error.
fn open_tables(names: [&str; 2]) -> io::Result<Vec<File>> {
    let mut files = Vec::new();
    let mut last = None;
    for name in names {
        match File::open(format!("/proc/thread-self/net/{name}")) {
            Ok(f) => files.push(f),
            Err(e) => last = Some(e),
        }
    }
    if files.is_empty() {
        return Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)));
    }
    Ok(files)
}

/// The listening TCP ports (and, if opened, the bound UDP ports) of one
/// network namespace.
#[derive(Debug)]
pub(crate) struct PortScanner {
    files: Vec<File>,
    udp_files: Vec<File>,
    buf: Box<[u8]>,
}

impl PortScanner {
    /// Opens the TCP tables of the namespace the calling thread is in,
    /// and its UDP tables too if `udp`. A missing table (IPv6 disabled) is
    /// skipped; neither of a pair present is an error.
    pub(crate) fn open_here(udp: bool) -> io::Result<PortScanner> {
        let files = open_tables(["tcp", "tcp6"])?;
        let udp_files = if udp {
            open_tables(["udp", "udp6"])?
        } else {
            Vec::new()
        };
        Ok(PortScanner {
            files,
            udp_files,
            buf: vec![0; SCAN_BUF].into_boxed_slice(),
        })
    }

    /// Reads the tables again: the listening ports, less `exclude`.
    pub(crate) fn scan(&mut self, exclude: &PortSet, out: &mut PortSet) -> io::Result<()> {
        out.clear();
        for f in &self.files {
            read_lines_at(f, &mut self.buf, |lines| parse_listening(lines, out))?;
        }
        out.remove_all(exclude);
        Ok(())
    }

    /// Reads the UDP tables again: the bound UDP ports, less `exclude`,
    /// added to `out` (not cleared first). Nothing if they were not opened.
    pub(crate) fn scan_udp(&mut self, exclude: &PortSet, out: &mut PortSet) -> io::Result<()> {
        let mut bound = PortSet::default();
        for f in &self.udp_files {
            read_lines_at(f, &mut self.buf, |lines| {
                parse_state(lines, ST_UDP_BOUND, &mut bound)
            })?;
        }
        bound.remove_all(exclude);
        out.add_all(&bound);
        Ok(())
    }
}

/// Time between two scans.
pub(crate) const SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// The ports outbound forwarding binds in the namespace (when explicit).
fn outbound_ports(table: &FwdTable, out: &mut PortSet) {
    if matches!(table.mode(), FwdMode::Spec | FwdMode::All) {
        for r in table.rules() {
            for port in r.first..=r.last {
                if table.is_forwarded(port) {
                    out.insert(port);
                }
            }
        }
    }
}

/// One side's automatic forwarding: that namespace's tables, which of them
/// are in `auto` mode, the ports pasta itself holds there, the ports
/// forwarded from there now and the latest scan.
#[derive(Debug, Default)]
struct Side {
    /// The side's tables.
    scanner: Option<PortScanner>,
    /// TCP is in `auto` mode.
    tcp_on: bool,
    /// UDP is in `auto` mode (and the side's UDP tables are open).
    udp_on: bool,
    /// TCP ports pasta listens on there whatever the scan finds: the
    /// explicit forwards of the other direction.
    exclude: PortSet,
    /// The same for UDP.
    udp_exclude: PortSet,
    /// TCP ports forwarded from there now.
    current: PortSet,
    /// UDP ports forwarded from there now.
    udp_current: PortSet,
    /// Scratch set of the latest TCP scan.
    fresh: PortSet,
    /// Scratch set of the latest UDP scan.
    udp_fresh: PortSet,
}

impl Side {
    /// Whether the side scans at all.
    fn on(&self) -> bool {
        self.tcp_on || self.udp_on
    }

    /// Reads the side's tables into the scratch sets. The ports pasta
    /// listens on there for the `other` side's automatic forwards are not
    /// the side's own.
    fn scan(&mut self, other: &Side) -> io::Result<()> {
        if !self.on() {
            return Ok(());
        }
        let Some(sc) = self.scanner.as_mut() else {
            return Ok(());
        };
        let mut ex = self.exclude.clone();
        ex.add_all(&other.current);
        sc.scan(&ex, &mut self.fresh)?;
        if self.udp_on {
            // Listening TCP ports count for UDP too.
            self.udp_fresh.clone_from(&self.fresh);
            let mut ex = self.udp_exclude.clone();
            ex.add_all(&other.udp_current);
            sc.scan_udp(&ex, &mut self.udp_fresh)?;
        }
        Ok(())
    }

    /// Takes the latest scans as the current sets; whether either changed
    /// (logged as `auto WHAT forwarding`, `what`: TCP's name, UDP's).
    fn take(&mut self, what: [&str; 2]) -> bool {
        let tcp = self.tcp_on && take_fresh(&mut self.current, &mut self.fresh, what[0]);
        let udp = self.udp_on && take_fresh(&mut self.udp_current, &mut self.udp_fresh, what[1]);
        tcp || udp
    }

    /// The ports forwarded now, TCP then UDP, as forwards of a port to the
    /// same port.
    fn found(&self) -> Vec<Forward> {
        let tcp = self.current.iter().filter(|_| self.tcp_on);
        let udp = self.udp_current.iter().filter(|_| self.udp_on);
        tcp.map(|port| Forward::new(Proto::Tcp, port, port))
            .chain(udp.map(|port| Forward::new(Proto::Udp, port, port)))
            .collect()
    }
}

/// `-t auto` and `-u auto`: the host listeners follow the namespace's
/// listening ports; `-T auto` and `-U auto`: the listeners on the
/// namespace's loopback follow the host's listening ports. Ports pasta itself listens on (on the
/// other side) are left out both ways, so that neither scan picks up the
/// other's listeners.
#[derive(Debug)]
pub(crate) struct AutoForward {
    /// The namespace's side (`-t auto`, `-u auto`).
    inbound: Side,
    /// The host's side (`-T auto`, `-U auto`).
    outbound: Side,
    /// Forwards that stay whatever the scan finds (`Config::forwards`: the
    /// explicit ones of the tables not in `auto` mode).
    base: Vec<Forward>,
    /// When the next scan is due (`None`: at once).
    next: Option<Instant>,
    /// The previous scan failed (logged once until one succeeds).
    failing: bool,
}

impl AutoForward {
    /// Automatic forwarding over `scanner`'s namespace, if inbound TCP or
    /// UDP forwarding is in `auto` mode; `base` forwards are always kept.
    #[cfg(test)]
    pub(crate) fn new(
        scanner: PortScanner,
        fwd: &Forwarding,
        base: &[Forward],
    ) -> Option<AutoForward> {
        Self::build(Some(scanner), None, fwd, base)
    }

    /// Automatic forwarding over the namespace's tables (`scanner`: `-t
    /// auto`, `-u auto`) and the host's (`host_scanner`: `-T auto`), for
    /// the tables in `auto` mode whose scanner is there; `base` forwards
    /// are always kept. `None` if nothing is automatic.
    pub(crate) fn build(
        scanner: Option<PortScanner>,
        host_scanner: Option<PortScanner>,
        fwd: &Forwarding,
        base: &[Forward],
    ) -> Option<AutoForward> {
        let side = |scanner: Option<PortScanner>, tcp: &FwdTable, udp: &FwdTable| Side {
            tcp_on: scanner.is_some() && tcp.mode() == FwdMode::Auto,
            udp_on: udp.mode() == FwdMode::Auto
                && scanner.as_ref().is_some_and(|s| !s.udp_files.is_empty()),
            scanner,
            ..Side::default()
        };
        let mut inbound = side(scanner, &fwd.tcp_in, &fwd.udp_in);
        let mut outbound = side(host_scanner, &fwd.tcp_out, &fwd.udp_out);
        if !inbound.on() && !outbound.on() {
            return None;
        }
        outbound_ports(&fwd.tcp_out, &mut inbound.exclude);
        outbound_ports(&fwd.udp_out, &mut inbound.udp_exclude);
        for f in base {
            if f.netns != passt_core::Netns::Host {
                continue;
            }
            let set = match f.proto {
                Proto::Tcp => &mut outbound.exclude,
                Proto::Udp => &mut outbound.udp_exclude,
            };
            for port in f.first..=f.last {
                set.insert(port);
            }
        }
        Some(AutoForward {
            inbound,
            outbound,
            base: base.to_vec(),
            next: None,
            failing: false,
        })
    }

    /// When the next scan is due (`None`: now).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.next
    }

    /// Scans if a scan is due. Returns the complete list of forwards (for
    /// `Core::set_forwards`) if the set of ports changed, `None` if not.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<Vec<Forward>> {
        if self.next.is_some_and(|n| now < n) {
            return None;
        }
        self.next = Some(now.saturating_add(SCAN_INTERVAL));
        let r = self.scan_all();
        if let Err(e) = r {
            if !self.failing {
                log::warn!("scanning listening ports: {e}");
            }
            self.failing = true;
            return None;
        }
        self.failing = false;
        let inbound = self.inbound.take(["TCP", "UDP"]);
        let outbound = self.outbound.take(["-T", "-U"]);
        (inbound || outbound).then(|| self.forwards())
    }

    /// Reads the tables of both sides into the scratch sets.
    fn scan_all(&mut self) -> io::Result<()> {
        self.inbound.scan(&self.outbound)?;
        self.outbound.scan(&self.inbound)
    }

    /// The complete list: the fixed forwards, then the ports found.
    fn forwards(&self) -> Vec<Forward> {
        let mut out = self.base.clone();
        out.extend(self.inbound.found());
        out.extend(
            self.outbound
                .found()
                .into_iter()
                .map(crate::fwd::outbound_forward),
        );
        out
    }
}

/// Takes the latest scan (`fresh`) as the `current` set of one table;
/// whether it changed (logged as `auto WHAT forwarding`).
fn take_fresh(current: &mut PortSet, fresh: &mut PortSet, what: &str) -> bool {
    if fresh == current {
        return false;
    }
    if log::log_enabled!(log::Level::Debug) {
        let (added, removed) = current.changes(fresh);
        log::debug!("auto {what} forwarding: new ports {added:?}, gone {removed:?}");
    }
    std::mem::swap(current, fresh);
    true
}

/// Reads a proc file from offset 0 through `buf`, handing `parse` whole
/// lines a bufferful at a time (and the rest at the end); at most
/// [`MAX_TABLE_BYTES`] are read. A line longer than `buf` is skipped.
fn read_lines_at(f: &File, buf: &mut [u8], mut parse: impl FnMut(&[u8])) -> io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    let mut fill = 0usize;
    let mut off: u64 = 0;
    let mut skipping = false;
    while off < MAX_TABLE_BYTES as u64 {
        let Some(free) = buf.get_mut(fill..).filter(|b| !b.is_empty()) else {
            // No line end in a full buffer: drop that line.
            fill = 0;
            skipping = true;
            continue;
        };
        let n = match f.read_at(free, off) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        off = off.saturating_add(n as u64);
        fill += n;
        let Some(end) = buf[..fill].iter().rposition(|&c| c == b'\n') else {
            continue;
        };
        let start = if skipping {
            skipping = false;
            buf[..=end]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(0, |i| i + 1)
        } else {
            0
        };
        parse(&buf[start..=end]);
        buf.copy_within(end + 1..fill, 0);
        fill -= end + 1;
    }
    if !skipping {
        parse(&buf[..fill]);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
