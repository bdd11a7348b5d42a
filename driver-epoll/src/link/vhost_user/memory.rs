//! The guest's memory, mapped from the file descriptors of `SET_MEM_TABLE`.
//!
//! Each region the front-end describes (guest physical address, size, the
//! front-end's own virtual address of it, offset in the file) is mapped
//! shared and read-write with `vm-memory` (`MmapRegion::from_file`). Ring
//! addresses arrive as front-end virtual addresses and are translated to
//! guest physical addresses through the same table; descriptor addresses are
//! guest physical already.

use std::fs::File;
use std::sync::Arc;
use vhost::vhost_user::message::VhostUserMemoryRegion;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MmapRegion,
};

/// Most regions one table may hold (`VHOST_MEMORY_BASELINE_NREGIONS`).
pub(crate) const MAX_REGIONS: usize = 8;

/// One region as the front-end described it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RegionDesc {
    /// Guest physical address of the first byte.
    gpa: u64,
    /// Length in bytes.
    size: u64,
    /// The front-end's virtual address of the first byte.
    user_addr: u64,
    /// Where the region starts in its file.
    mmap_offset: u64,
}

impl From<&VhostUserMemoryRegion> for RegionDesc {
    fn from(r: &VhostUserMemoryRegion) -> Self {
        RegionDesc {
            gpa: r.guest_phys_addr,
            size: r.memory_size,
            user_addr: r.user_addr,
            mmap_offset: r.mmap_offset,
        }
    }
}

/// The mapped guest memory and the table that produced it.
#[derive(Debug)]
pub(crate) struct GuestMem {
    pub(crate) mem: Arc<GuestMemoryMmap>,
    regions: Vec<RegionDesc>,
}

impl GuestMem {
    /// Maps every region from its file. Regions must not overlap, must be
    /// page-aligned in their file and fit the address space.
    pub(crate) fn map(descs: &[RegionDesc], files: Vec<File>) -> Result<GuestMem, String> {
        if descs.is_empty() || descs.len() > MAX_REGIONS {
            return Err(format!("{} memory regions", descs.len()));
        }
        if files.len() != descs.len() {
            return Err(format!(
                "{} memory regions but {} file descriptors",
                descs.len(),
                files.len()
            ));
        }
        // SAFETY: sysconf has no side effects.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        let mut order: Vec<usize> = (0..descs.len()).collect();
        order.sort_by_key(|&i| descs[i].gpa);
        let mut files: Vec<Option<File>> = files.into_iter().map(Some).collect();
        let mut regions = Vec::with_capacity(descs.len());
        for i in order {
            let d = descs[i];
            if d.size == 0 || !d.mmap_offset.is_multiple_of(page) {
                return Err(format!(
                    "region at {:#x}: size {:#x}, file offset {:#x}",
                    d.gpa, d.size, d.mmap_offset
                ));
            }
            if d.gpa.checked_add(d.size).is_none() || d.user_addr.checked_add(d.size).is_none() {
                return Err(format!("region at {:#x}: size {:#x} wraps", d.gpa, d.size));
            }
            let size = usize::try_from(d.size).map_err(|_| "region too large".to_string())?;
            let file = files[i].take().ok_or("file descriptor missing")?;
            let map = MmapRegion::from_file(FileOffset::new(file, d.mmap_offset), size)
                .map_err(|e| format!("mapping region at {:#x} ({size} bytes): {e}", d.gpa))?;
            let r = GuestRegionMmap::new(map, GuestAddress(d.gpa))
                .ok_or_else(|| format!("region at {:#x} wraps", d.gpa))?;
            regions.push(r);
        }
        let mem = GuestMemoryMmap::from_regions(regions).map_err(|e| format!("{e}"))?;
        Ok(GuestMem {
            mem: Arc::new(mem),
            regions: descs.to_vec(),
        })
    }

    /// The guest physical address of a front-end virtual address (ring
    /// addresses), if some region holds it.
    pub(crate) fn va_to_gpa(&self, va: u64) -> Option<u64> {
        self.regions
            .iter()
            .find(|r| va >= r.user_addr && va - r.user_addr < r.size)
            .map(|r| r.gpa + (va - r.user_addr))
    }
}

/// Where a guest physical range lies in our mapping: the index of its region
/// (in address order) and its offset in that region, if the whole range is
/// inside one region.
pub(crate) fn locate(mem: &GuestMemoryMmap, gpa: u64, len: u64) -> Option<(usize, u64)> {
    let end = gpa.checked_add(len)?;
    mem.iter().enumerate().find_map(|(i, r)| {
        let start = r.start_addr().0;
        let off = gpa.checked_sub(start)?;
        (off < r.len() && end - start <= r.len()).then_some((i, off))
    })
}

/// The bytes of region `i` of the mapping.
///
/// The memory is shared with the guest, which may write to it at any time;
/// the device reads only buffers the guest has handed over (available
/// descriptors), which a well-behaved driver leaves alone until they are
/// returned. A driver that writes to them anyway changes only the bytes we
/// read: every offset taken from them is checked against this slice's
/// bounds before use.
pub(crate) fn region_bytes(mem: &GuestMemoryMmap, i: usize) -> Option<&[u8]> {
    let r = mem.iter().nth(i)?;
    let len = usize::try_from(r.len()).ok()?;
    let ptr = r.as_ptr();
    if ptr.is_null() || len == 0 {
        return None;
    }
    // SAFETY: the region maps `len` readable bytes at `ptr` (MmapRegion
    // created it with PROT_READ | PROT_WRITE) and stays mapped as long as
    // `mem`, which the returned borrow cannot outlive. See above for
    // concurrent writes by the guest.
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    /// A memfd of `len` bytes, as qemu's `memory-backend-memfd`.
    pub(crate) fn memfd(len: u64) -> File {
        let name = c"vu-test";
        // SAFETY: memfd_create takes a C string and flags, returns a new fd.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create");
        // SAFETY: a fresh descriptor owned by no one else.
        let f = unsafe { File::from_raw_fd(fd) };
        f.set_len(len).unwrap();
        f
    }

    #[test]
    fn maps_regions_and_translates() {
        let f = memfd(0x40000);
        let descs = [
            RegionDesc {
                gpa: 0x100000,
                size: 0x20000,
                user_addr: 0x7f00_0010_0000,
                mmap_offset: 0x20000,
            },
            RegionDesc {
                gpa: 0,
                size: 0xa000,
                user_addr: 0x7f00_0000_0000,
                mmap_offset: 0,
            },
        ];
        let g = GuestMem::map(&descs, vec![f.try_clone().unwrap(), f]).unwrap();
        assert_eq!(g.va_to_gpa(0x7f00_0010_0010), Some(0x100010));
        assert_eq!(g.va_to_gpa(0x7f00_0000_9fff), Some(0x9fff));
        assert_eq!(g.va_to_gpa(0x7f00_0000_a000), None);
        // Regions come out in address order.
        assert_eq!(locate(&g.mem, 0x100, 16), Some((0, 0x100)));
        assert_eq!(locate(&g.mem, 0x100010, 16), Some((1, 0x10)));
        assert_eq!(locate(&g.mem, 0x9ff0, 32), None, "crosses the end");
        assert_eq!(locate(&g.mem, 0xb000, 1), None, "in the hole");
        let a = region_bytes(&g.mem, 1).unwrap();
        assert_eq!(a.len(), 0x20000);
        // Both regions share the file: region 1 starts at file offset 0x20000.
        use vm_memory::Bytes;
        g.mem.write_slice(b"hello", GuestAddress(0x100000)).unwrap();
        assert_eq!(&region_bytes(&g.mem, 1).unwrap()[..5], b"hello");
    }

    #[test]
    fn refuses_bad_tables() {
        let d = RegionDesc {
            gpa: 0,
            size: 0x1000,
            user_addr: 0,
            mmap_offset: 0x10,
        };
        assert!(GuestMem::map(&[d], vec![memfd(0x2000)]).is_err());
        assert!(GuestMem::map(&[], vec![]).is_err());
        let d = RegionDesc {
            mmap_offset: 0,
            ..d
        };
        assert!(GuestMem::map(&[d, d], vec![memfd(0x2000), memfd(0x2000)]).is_err());
        assert!(GuestMem::map(&[d], vec![]).is_err());
    }
}
