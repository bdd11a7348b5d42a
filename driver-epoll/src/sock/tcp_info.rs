//! TCP_INFO and the send buffer's state of a stream socket, and the probe
//! for `SO_PEEK_OFF`.

use super::*;

/// The kernel's `struct tcp_info` (uapi `linux/tcp.h`) up to `tcpi_snd_wnd`;
/// libc's copy for glibc stops earlier. Fields the kernel does not fill stay 0.
#[repr(C)]
#[derive(Default)]
pub(super) struct KernelTcpInfo {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    /// snd_wscale (low 4 bits), rcv_wscale (high 4 bits).
    wscale: u8,
    rate_flags: u8,
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
    sacked: u32,
    lost: u32,
    retrans: u32,
    fackets: u32,
    last_data_sent: u32,
    last_ack_sent: u32,
    last_data_recv: u32,
    last_ack_recv: u32,
    pmtu: u32,
    rcv_ssthresh: u32,
    rtt: u32,
    rttvar: u32,
    snd_ssthresh: u32,
    snd_cwnd: u32,
    advmss: u32,
    reordering: u32,
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
    pacing_rate: u64,
    max_pacing_rate: u64,
    bytes_acked: u64,
    bytes_received: u64,
    segs_out: u32,
    segs_in: u32,
    notsent_bytes: u32,
    min_rtt: u32,
    data_segs_in: u32,
    data_segs_out: u32,
    delivery_rate: u64,
    busy_time: u64,
    rwnd_limited: u64,
    sndbuf_limited: u64,
    delivered: u32,
    delivered_ce: u32,
    bytes_sent: u64,
    bytes_retrans: u64,
    dsack_dups: u32,
    reord_seen: u32,
    rcv_ooopack: u32,
    snd_wnd: u32,
}

/// Whether the kernel supports `SO_PEEK_OFF` on TCP sockets (Linux 6.9 and
/// later): set on a fresh, unconnected socket.
pub(crate) fn probe_peek_offset() -> bool {
    match open(SockKind::TcpStream, Family::V4).or_else(|_| open(SockKind::TcpStream, Family::V6)) {
        Ok(fd) => setsockopt_int(fd.as_fd(), libc::SOL_SOCKET, SO_PEEK_OFF, 0).is_ok(),
        Err(_) => false,
    }
}

/// TCP_INFO and the send buffer's state (`SO_MEMINFO`) of a socket: two
/// system calls.
pub(crate) fn tcp_info(fd: BorrowedFd<'_>) -> Result<TcpInfo, Errno> {
    let mut ti = KernelTcpInfo::default();
    let mut len = std::mem::size_of::<KernelTcpInfo>() as libc::socklen_t;
    // SAFETY: `ti` is valid for `len` bytes of writes; the kernel writes at
    // most `len` bytes and every bit pattern is a valid KernelTcpInfo.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut ti as *mut KernelTcpInfo).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(last_errno());
    }
    let space = send_space(fd)?;
    Ok(TcpInfo {
        bytes_acked: ti.bytes_acked,
        snd_wnd: ti.snd_wnd,
        snd_wscale: ti.wscale & 0x0f,
        snd_mss: ti.snd_mss,
        min_rtt_us: ti.min_rtt,
        sndbuf: space.sndbuf,
        queued: space.queued,
    })
}

/// The send buffer's size and what its queue costs, in the kernel's own
/// accounting (`SO_MEMINFO`, one system call).
pub(crate) fn send_space(fd: BorrowedFd<'_>) -> Result<SendSpace, Errno> {
    let mut mem = [0u32; SK_MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&mem) as libc::socklen_t;
    // SAFETY: `mem` is valid for `len` bytes of writes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_MEMINFO,
            mem.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(last_errno());
    }
    Ok(SendSpace {
        sndbuf: mem[SK_MEMINFO_SNDBUF],
        queued: mem[SK_MEMINFO_WMEM_QUEUED],
    })
}
