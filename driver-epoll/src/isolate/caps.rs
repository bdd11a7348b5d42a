//! Capabilities: the effective, permitted, inheritable, bounding and ambient
//! sets of the calling thread (capabilities belong to threads, not to
//! processes: a thread started later copies them from its creator).

use std::io;

/// A set of capabilities, one bit per capability number.
pub(crate) type CapSet = u64;

/// The capability numbers used here (`linux/capability.h`).
pub(crate) mod cap {
    pub(crate) const DAC_OVERRIDE: u32 = 1;
    pub(crate) const SETGID: u32 = 6;
    pub(crate) const SETUID: u32 = 7;
    pub(crate) const SETPCAP: u32 = 8;
    pub(crate) const NET_BIND_SERVICE: u32 = 10;
    pub(crate) const NET_ADMIN: u32 = 12;
    pub(crate) const SYS_PTRACE: u32 = 19;
    pub(crate) const SYS_ADMIN: u32 = 21;
    pub(crate) const SETFCAP: u32 = 31;
}

/// The set holding `caps`.
pub(crate) const fn set_of(caps: &[u32]) -> CapSet {
    let mut s = 0;
    let mut i = 0;
    while i < caps.len() {
        s |= 1 << caps[i];
        i += 1;
    }
    s
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Effective, permitted and inheritable sets of the calling thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Caps {
    pub(crate) effective: CapSet,
    pub(crate) permitted: CapSet,
    pub(crate) inheritable: CapSet,
}

fn header() -> Header {
    Header {
        version: VERSION_3,
        pid: 0,
    }
}

/// The calling thread's capabilities.
pub(crate) fn get() -> io::Result<Caps> {
    let hdr = header();
    let mut d = [Data::default(); 2];
    // SAFETY: capget (version 3) writes two data structs into `d`.
    if unsafe { libc::syscall(libc::SYS_capget, &hdr, d.as_mut_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok(Caps {
        effective: join(d[0].effective, d[1].effective),
        permitted: join(d[0].permitted, d[1].permitted),
        inheritable: join(d[0].inheritable, d[1].inheritable),
    })
}

fn set(c: Caps) -> io::Result<()> {
    let hdr = header();
    let d = [
        Data {
            effective: c.effective as u32,
            permitted: c.permitted as u32,
            inheritable: c.inheritable as u32,
        },
        Data {
            effective: (c.effective >> 32) as u32,
            permitted: (c.permitted >> 32) as u32,
            inheritable: (c.inheritable >> 32) as u32,
        },
    ];
    // SAFETY: capset (version 3) reads one header and two data structs.
    if unsafe { libc::syscall(libc::SYS_capset, &hdr, d.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `c` is in the calling thread's effective set.
pub(crate) fn has(c: u32) -> bool {
    get().is_ok_and(|s| s.effective & (1 << c) != 0)
}

/// Keeps only `keep` in the effective and permitted sets (nothing is
/// gained: what is not permitted now stays out). Inheritable follows.
pub(crate) fn keep_only(keep: CapSet) -> io::Result<()> {
    set_kept(keep, true)
}

/// After a switch of user with `PR_SET_KEEPCAPS`: makes the kept permitted
/// capabilities in `keep` effective again (the switch cleared the effective
/// set) and drops the rest.
pub(crate) fn raise_kept(keep: CapSet) -> io::Result<()> {
    set_kept(keep, false)
}

/// Makes the permitted capabilities in `keep` the effective and permitted
/// sets; the inheritable set keeps those of `keep` if `inheritable`, else
/// is emptied.
fn set_kept(keep: CapSet, inheritable: bool) -> io::Result<()> {
    let now = get()?;
    let permitted = now.permitted & keep;
    set(Caps {
        effective: permitted,
        permitted,
        inheritable: if inheritable {
            now.inheritable & keep
        } else {
            0
        },
    })
}

/// Empties the bounding, inheritable and ambient sets, so that nothing
/// executed later (nothing is) could gain a capability, even from file
/// capabilities. Dropping from the bounding set needs `CAP_SETPCAP`; without
/// it the bounding set stays (reported as an error).
pub(crate) fn clamp() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let mut denied = None;
    for c in 0..64 {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c, 0, 0, 0) } < 0 {
            let e = io::Error::last_os_error();
            // EINVAL: no such capability on this kernel.
            if e.raw_os_error() != Some(libc::EINVAL) {
                denied.get_or_insert(e);
            }
        }
    }
    let now = get()?;
    set(Caps {
        inheritable: 0,
        ..now
    })?;
    match denied {
        Some(e) => Err(super::step("clearing the capability bounding set", e)),
        None => Ok(()),
    }
}

/// The calling thread's bounding set.
#[cfg(test)]
pub(crate) fn bounding() -> CapSet {
    let mut s = 0;
    for c in 0..64u32 {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, c, 0, 0, 0) } == 1 {
            s |= 1 << c;
        }
    }
    s
}
