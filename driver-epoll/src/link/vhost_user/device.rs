//! The virtio-net device as the vhost-user front-end (qemu) configures it.
//!
//! `vhost`'s `BackendReqHandler` parses the protocol and calls the methods
//! of [`VhostUserBackendReqHandlerMut`] implemented here: features, the
//! memory table, and per queue its size, ring addresses, base index, kick
//! and call eventfds and enable state. Two queues: 0 receives (passt →
//! guest), 1 transmits (guest → passt); no multiqueue, no control queue.
//!
//! The event loop reads the results: which queues are ready
//! ([`Device::ready`]) and which kick eventfds changed
//! ([`Device::take_kick_changes`]); a kick eventfd that is replaced or
//! dropped stays open in [`Device::retired`] until the loop has taken it out
//! of its epoll set (the front-end holds the same open file, so closing our
//! descriptor alone would leave it registered).

use super::memory::{GuestMem, RegionDesc};
use std::fs::File;
use std::sync::atomic::Ordering;
use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{
    Error, GpuBackend, VhostUserBackendReqHandlerMut, VhostUserVirtioFeatures,
};
use vhost::VhostUserMemoryRegionBase;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_MRG_RXBUF};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};

type Result<T> = std::result::Result<T, Error>;

/// The receive queue (frames to the guest).
pub(crate) const RX: usize = 0;
/// The transmit queue (frames from the guest).
pub(crate) const TX: usize = 1;
/// Queues of the device.
pub(crate) const QUEUES: usize = 2;
/// Largest queue size accepted (`VIRTQUEUE_MAX_SIZE`).
pub(crate) const QUEUE_MAX: u16 = 1024;

/// The virtio features offered: virtio 1.0, mergeable receive buffers (a
/// frame may span several guest buffers) and the checksum flag
/// `DATA_VALID` on received frames (every frame passt builds carries a
/// correct checksum, so the guest may skip checking it). No dirty page
/// logging (`VHOST_F_LOG_ALL`): without it qemu keeps migration blocked,
/// which is right until guest memory writes are logged.
pub(crate) const FEATURES: u64 = 1 << VIRTIO_F_VERSION_1
    | 1 << VIRTIO_NET_F_MRG_RXBUF
    | 1 << VIRTIO_NET_F_GUEST_CSUM
    | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

/// One virtqueue.
#[derive(Debug)]
pub(crate) struct Vring {
    pub(crate) queue: Queue,
    /// Ring addresses as the front-end gave them (its virtual addresses):
    /// descriptors, used, available.
    addrs: Option<(u64, u64, u64)>,
    pub(crate) kick: Option<File>,
    pub(crate) call: Option<File>,
    err: Option<File>,
    /// A kick eventfd was set since the last `GET_VRING_BASE` (or reset).
    started: bool,
    /// `SET_VRING_ENABLE` (or implied without protocol features).
    enabled: bool,
}

impl Vring {
    fn new() -> Vring {
        Vring {
            // QUEUE_MAX is a power of two: new() cannot fail.
            queue: Queue::new(QUEUE_MAX).unwrap_or_else(|_| unreachable!()),
            addrs: None,
            kick: None,
            call: None,
            err: None,
            started: false,
            enabled: false,
        }
    }
}

/// The device state.
#[derive(Debug)]
pub(crate) struct Device {
    /// Features the front-end acknowledged.
    pub(crate) features: u64,
    protocol: u64,
    pub(crate) mem: Option<GuestMem>,
    pub(crate) vrings: [Vring; QUEUES],
    /// Kick eventfds no longer in use, still in the loop's epoll set.
    pub(crate) retired: Vec<File>,
    kick_changed: [bool; QUEUES],
}

impl Default for Device {
    fn default() -> Self {
        Device {
            features: 0,
            protocol: 0,
            mem: None,
            vrings: [Vring::new(), Vring::new()],
            retired: Vec::new(),
            kick_changed: [false; QUEUES],
        }
    }
}

impl Device {
    /// Length of the virtio-net header in front of every frame.
    pub(crate) fn hdr_len(&self) -> usize {
        let v1 = 1u64 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_NET_F_MRG_RXBUF;
        if self.features & v1 != 0 {
            12
        } else {
            10
        }
    }

    /// Whether frames may span several receive buffers.
    pub(crate) fn mergeable(&self) -> bool {
        self.features & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0
    }

    /// Whether received frames may carry `DATA_VALID`.
    pub(crate) fn guest_csum(&self) -> bool {
        self.features & (1 << VIRTIO_NET_F_GUEST_CSUM) != 0
    }

    /// Whether queue `q` may be used: memory mapped, rings set and valid in
    /// it, a kick eventfd received, enabled.
    pub(crate) fn ready(&self, q: usize) -> bool {
        let Some(v) = self.vrings.get(q) else {
            return false;
        };
        match &self.mem {
            Some(m) => v.started && v.enabled && v.queue.ready() && v.queue.is_valid(&*m.mem),
            None => false,
        }
    }

    /// Queues whose kick eventfd changed since the last call.
    pub(crate) fn take_kick_changes(&mut self) -> [bool; QUEUES] {
        std::mem::take(&mut self.kick_changed)
    }

    fn vring(&mut self, index: u32) -> Result<&mut Vring> {
        self.vrings
            .get_mut(index as usize)
            .ok_or(Error::InvalidParam)
    }

    /// Sets the ring addresses of queue `q` in the queue, translated to guest
    /// physical addresses through the current memory table, and picks up
    /// the used index the guest's ring holds.
    fn apply_addrs(&mut self, q: usize) -> Result<()> {
        let Some(mem) = &self.mem else { return Ok(()) };
        let Some(v) = self.vrings.get_mut(q) else {
            return Err(Error::InvalidParam);
        };
        let Some((desc, used, avail)) = v.addrs else {
            return Ok(());
        };
        let tr = |va: u64| mem.va_to_gpa(va).ok_or(Error::InvalidParam);
        let (desc, used, avail) = (tr(desc)?, tr(used)?, tr(avail)?);
        v.queue
            .try_set_desc_table_address(GuestAddress(desc))
            .map_err(|_| Error::InvalidParam)?;
        v.queue
            .try_set_used_ring_address(GuestAddress(used))
            .map_err(|_| Error::InvalidParam)?;
        v.queue
            .try_set_avail_ring_address(GuestAddress(avail))
            .map_err(|_| Error::InvalidParam)?;
        // The used index the guest last saw (nonzero when a running
        // device is set up again without a reset).
        let idx = GuestAddress(used)
            .checked_add(2)
            .ok_or(Error::InvalidParam)?;
        let used_idx: u16 = mem
            .mem
            .load(idx, Ordering::Acquire)
            .map_err(|_| Error::InvalidParam)?;
        v.queue.set_next_used(u16::from_le(used_idx));
        Ok(())
    }

    /// Stops queue `q`: kick eventfd retired, call eventfd closed, ring
    /// forgotten (the front-end sets it up again before restarting it).
    fn stop(&mut self, q: usize) {
        let Some(v) = self.vrings.get_mut(q) else {
            return;
        };
        if let Some(k) = v.kick.take() {
            self.retired.push(k);
            self.kick_changed[q] = true;
        }
        v.call = None;
        v.err = None;
        v.started = false;
        v.addrs = None;
        v.queue.reset();
    }

    /// Forgets everything (the front-end went away or asked for a reset).
    pub(crate) fn reset(&mut self) {
        for q in 0..QUEUES {
            self.stop(q);
            if let Some(v) = self.vrings.get_mut(q) {
                v.enabled = false;
            }
        }
        self.features = 0;
        self.protocol = 0;
        self.mem = None;
    }

    /// Whether the protocol features were negotiated (rings then start
    /// disabled, until `SET_VRING_ENABLE`).
    pub(crate) fn protocol_negotiated(&self) -> bool {
        self.features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0
    }
}

fn unsupported<T>(what: &'static str) -> Result<T> {
    Err(Error::InvalidOperation(what))
}

impl VhostUserBackendReqHandlerMut for Device {
    fn set_owner(&mut self) -> Result<()> {
        Ok(())
    }

    fn reset_owner(&mut self) -> Result<()> {
        self.reset();
        Ok(())
    }

    fn reset_device(&mut self) -> Result<()> {
        self.reset();
        Ok(())
    }

    fn get_features(&mut self) -> Result<u64> {
        Ok(FEATURES)
    }

    fn set_features(&mut self, features: u64) -> Result<()> {
        if features & !FEATURES != 0 {
            return Err(Error::InvalidParam);
        }
        self.features = features;
        if !self.protocol_negotiated() {
            // Without protocol features, rings are enabled as they start.
            for v in &mut self.vrings {
                v.enabled = true;
            }
        }
        Ok(())
    }

    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy_listening: Option<bool>,
    ) -> Result<Option<Vec<VhostUserMemoryRegionBase>>> {
        let descs: Vec<RegionDesc> = ctx.iter().map(RegionDesc::from).collect();
        let mem = GuestMem::map(&descs, files).map_err(|e| {
            log::error!("vhost-user: memory table: {e}");
            Error::ReqHandlerError(std::io::Error::other(e))
        })?;
        log::debug!(
            "vhost-user: {} memory regions, {} MiB",
            descs.len(),
            ctx.iter().map(|r| r.memory_size).sum::<u64>() >> 20
        );
        self.mem = Some(mem);
        for q in 0..QUEUES {
            self.apply_addrs(q)?;
        }
        Ok(None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> Result<()> {
        let v = self.vring(index)?;
        let n = u16::try_from(num).map_err(|_| Error::InvalidParam)?;
        v.queue.try_set_size(n).map_err(|_| Error::InvalidParam)
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> Result<()> {
        self.vring(index)?.addrs = Some((descriptor, used, available));
        self.apply_addrs(index as usize)
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> Result<()> {
        let v = self.vring(index)?;
        let b = u16::try_from(base).map_err(|_| Error::InvalidParam)?;
        v.queue.set_next_avail(b);
        v.queue.set_next_used(b);
        Ok(())
    }

    fn get_vring_base(&mut self, index: u32) -> Result<VhostUserVringState> {
        let next = self.vring(index)?.queue.next_avail();
        self.stop(index as usize);
        log::debug!("vhost-user: queue {index} stopped at {next}");
        Ok(VhostUserVringState::new(index, u32::from(next)))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        let q = usize::from(index);
        let protocol = self.protocol_negotiated();
        let v = self.vring(u32::from(index))?;
        if let Some(old) = v.kick.take() {
            self.retired.push(old);
        }
        let v = &mut self.vrings[q];
        if fd.is_none() {
            log::warn!("vhost-user: queue {q} without a kick eventfd (polling is not supported)");
        }
        v.kick = fd;
        v.started = true;
        if !protocol {
            v.enabled = true;
        }
        v.queue.set_ready(true);
        self.kick_changed[q] = true;
        Ok(())
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        self.vring(u32::from(index))?.call = fd;
        Ok(())
    }

    fn set_vring_err(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        self.vring(u32::from(index))?.err = fd;
        Ok(())
    }

    fn get_protocol_features(&mut self) -> Result<VhostUserProtocolFeatures> {
        // REPLY_ACK is added by the library.
        Ok(VhostUserProtocolFeatures::empty())
    }

    fn set_protocol_features(&mut self, features: u64) -> Result<()> {
        self.protocol = features;
        Ok(())
    }

    fn get_queue_num(&mut self) -> Result<u64> {
        Ok(1)
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> Result<()> {
        self.vring(index)?.enabled = enable;
        log::debug!("vhost-user: queue {index} enabled: {enable}");
        Ok(())
    }

    fn get_config(&mut self, _: u32, _: u32, _: VhostUserConfigFlags) -> Result<Vec<u8>> {
        unsupported("GET_CONFIG")
    }

    fn set_config(&mut self, _: u32, _: &[u8], _: VhostUserConfigFlags) -> Result<()> {
        unsupported("SET_CONFIG")
    }

    fn set_gpu_socket(&mut self, _: GpuBackend) -> Result<()> {
        unsupported("GPU_SET_SOCKET")
    }

    fn get_shared_object(&mut self, _: VhostUserSharedMsg) -> Result<File> {
        unsupported("GET_SHARED_OBJECT")
    }

    fn get_inflight_fd(&mut self, _: &VhostUserInflight) -> Result<(VhostUserInflight, File)> {
        unsupported("GET_INFLIGHT_FD")
    }

    fn set_inflight_fd(&mut self, _: &VhostUserInflight, _: File) -> Result<()> {
        unsupported("SET_INFLIGHT_FD")
    }

    fn get_max_mem_slots(&mut self) -> Result<u64> {
        unsupported("GET_MAX_MEM_SLOTS")
    }

    fn add_mem_region(
        &mut self,
        _: &VhostUserSingleMemoryRegion,
        _: File,
        _: Option<bool>,
    ) -> Result<Option<VhostUserMemoryRegionBase>> {
        unsupported("ADD_MEM_REG")
    }

    fn remove_mem_region(&mut self, _: &VhostUserSingleMemoryRegion) -> Result<()> {
        unsupported("REM_MEM_REG")
    }

    fn set_device_state_fd(
        &mut self,
        _: VhostTransferStateDirection,
        _: VhostTransferStatePhase,
        _: File,
    ) -> Result<Option<File>> {
        unsupported("SET_DEVICE_STATE_FD")
    }

    fn check_device_state(&mut self) -> Result<()> {
        unsupported("CHECK_DEVICE_STATE")
    }

    fn get_shmem_config(&mut self) -> Result<VhostUserShMemConfig> {
        unsupported("GET_SHMEM_CONFIG")
    }

    fn set_log_base(&mut self, _: &VhostUserLog, _: File) -> Result<()> {
        unsupported("SET_LOG_BASE")
    }
}
