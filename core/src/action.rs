//! Socket work the core asks of the driver, and what the driver reports back.
//!
//! The core names every socket with a [`SockId`] it chooses; the driver maps ids
//! to file descriptors (the epoll driver) or to simulated sockets (the simulator)
//! and uses the id as the epoll token. Results of actions come back through
//! [`Core::handle_sock_event`](crate::Core::handle_sock_event) as [`SockEvent`]s.
//! `docs/architecture.md` describes the full data-path contract.

use core::fmt;
use core::net::{IpAddr, SocketAddr};

/// A socket, named by the core.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SockId(pub u32);

impl fmt::Debug for SockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sock#{}", self.0)
    }
}

/// Address family of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// AF_INET
    V4,
    /// AF_INET6
    V6,
}

/// What kind of socket to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SockKind {
    /// A TCP socket that will connect or has been accepted.
    TcpStream,
    /// A listening TCP socket (port forwarding).
    TcpListener,
    /// A UDP socket.
    Udp,
    /// An unprivileged ICMP/ICMPv6 echo ("ping") socket.
    Ping,
}

/// Which network namespace a socket belongs in (pasta has two).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Netns {
    /// The namespace passt/pasta was started in.
    Host,
    /// The guest's namespace (pasta only: `-T`/`-U` listeners, spliced flows).
    Guest,
}

/// Readiness the core wants to hear about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[allow(clippy::struct_excessive_bools)]
pub struct Interest {
    /// EPOLLIN
    pub readable: bool,
    /// EPOLLOUT
    pub writable: bool,
    /// EPOLLRDHUP
    pub read_hangup: bool,
    /// EPOLLET: report only changes. Level-triggered otherwise.
    pub edge: bool,
}

/// Options for binding a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BindOpts {
    /// SO_REUSEADDR
    pub reuse_addr: bool,
    /// IP_FREEBIND / IPV6_FREEBIND
    pub freebind: bool,
    /// IPV6_V6ONLY
    pub v6_only: bool,
    /// SO_BINDTODEVICE, by interface index.
    pub device: Option<u32>,
}

/// A socket option to set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SockOpt {
    /// TCP_MAXSEG
    TcpMaxSeg(u16),
    /// SO_PEEK_OFF
    PeekOffset(u32),
    /// SO_BROADCAST: allow sending to broadcast addresses.
    Broadcast(bool),
    /// SO_LINGER with a zero timeout: the next `Close` resets the
    /// connection (RST) instead of ending it with a FIN.
    ResetOnClose,
    /// TCP_NODELAY: no Nagle delay (spliced connections, as upstream).
    NoDelay,
    /// IP_TTL (IPv4) or IPV6_UNICAST_HOPS (IPv6): the TTL or hop limit of
    /// datagrams sent on the socket, the guest's own (traceroute).
    HopLimit {
        /// The socket's family, which names the option.
        family: Family,
        /// TTL or hop limit.
        hops: u8,
    },
}

/// A run of bytes inside the batch buffer of the current
/// [`FrameBatch`](crate::FrameBatch): guest payload to write to a socket as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    /// Offset in the batch buffer.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

/// Indices of a list of [`Span`]s, read with [`Core::spans`](crate::Core::spans).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SpanList {
    /// First span.
    pub start: u32,
    /// Number of spans.
    pub count: u32,
}

/// Work for the driver. Carry actions out in the order they are polled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Create a non-blocking socket; report failure as `SockEvent::OpenFailed`.
    Open {
        /// Name for the new socket.
        sock: SockId,
        /// Kind of socket.
        kind: SockKind,
        /// Address family.
        family: Family,
        /// Namespace to create it in.
        netns: Netns,
    },
    /// Bind to a local address.
    Bind {
        /// The socket.
        sock: SockId,
        /// Local address and port.
        addr: SocketAddr,
        /// Options applied before `bind()`.
        opts: BindOpts,
    },
    /// Start a non-blocking connect; the outcome comes as `SockEvent::Connected`.
    Connect {
        /// The socket.
        sock: SockId,
        /// Remote address.
        addr: SocketAddr,
    },
    /// Listen for connections.
    Listen {
        /// The socket.
        sock: SockId,
        /// Backlog (upstream: 128).
        backlog: u32,
    },
    /// Accept one connection from `listener`, naming it `sock`; the result comes
    /// as `SockEvent::Accepted` on `sock`.
    Accept {
        /// The listening socket.
        listener: SockId,
        /// Name for the accepted socket.
        sock: SockId,
    },
    /// Change the epoll interest of a socket (registers it on first use).
    SetInterest {
        /// The socket.
        sock: SockId,
        /// New interest.
        interest: Interest,
    },
    /// Set a socket option.
    SetOption {
        /// The socket.
        sock: SockId,
        /// Option and value.
        opt: SockOpt,
    },
    /// Write guest payload to a stream socket with one `sendmsg` over the spans
    /// (no copy); the result comes as `SockEvent::StreamSent`, together with
    /// the state of the send buffer right after the write (`SO_MEMINFO`), so
    /// that no separate query is needed to size the window.
    Send {
        /// The socket.
        sock: SockId,
        /// Payload spans in the batch buffer, in stream order.
        spans: SpanList,
    },
    /// Send one datagram per span (one `sendmmsg`), on a connected socket or
    /// to `to`; the
    /// number of datagrams sent comes back as `SockEvent::Sent`. For ping
    /// sockets each span is a whole ICMP/ICMPv6 echo request (the kernel sets
    /// the id and the checksum).
    SendDatagrams {
        /// The socket.
        sock: SockId,
        /// One span per datagram.
        spans: SpanList,
        /// Destination of every datagram, for a socket that is not connected
        /// (flows to a multicast or broadcast group); `None`: connected.
        to: Option<SocketAddr>,
    },
    /// Receive up to `max` datagrams (one `recvmmsg`) straight into transmit
    /// slots, each at `buf[room..]` of its [`RxDatagram`], with the peer
    /// address of each; answer with one
    /// [`Core::handle_datagrams`](crate::Core::handle_datagrams) (no datagrams
    /// on `EAGAIN`; other errors as `SockEvent::Error`). `room` depends only
    /// on the socket (the exact header length of its frames, at most
    /// [`DATAGRAM_ROOM`]). Before carrying it out, send the frames already
    /// queued by `poll_frame`.
    Recv {
        /// The socket.
        sock: SockId,
        /// Most datagrams wanted.
        max: u16,
        /// Header room before the payload in each slot.
        room: u16,
    },
    /// Peek stream data into transmit slots, straight into frame payloads; answer
    /// with exactly one [`Core::handle_peeked`](crate::Core::handle_peeked).
    ///
    /// Skip `skip` bytes of the receive queue (0 when the socket's SO_PEEK_OFF
    /// already points past them), then `recvmsg(MSG_PEEK)` at most `len` bytes
    /// into consecutive [`TxSlot`]s: slot `i` receives up to `mss` bytes at
    /// `buf[room..room + mss]`. Fewer slots than needed simply mean fewer bytes.
    Peek {
        /// The socket.
        sock: SockId,
        /// Bytes to skip before the first byte wanted.
        skip: u32,
        /// Most bytes wanted.
        len: u32,
        /// Payload bytes per slot.
        mss: u16,
        /// Header room before the payload in each slot.
        room: u16,
    },
    /// Discard `len` bytes the guest acknowledged from the receive queue
    /// (`recv(MSG_TRUNC)`).
    Consume {
        /// The socket.
        sock: SockId,
        /// Bytes to discard.
        len: u32,
    },
    /// Read TCP_INFO (plus the send buffer's state, `SO_MEMINFO`) and report
    /// `SockEvent::TcpInfo`.
    QueryTcpInfo {
        /// The socket.
        sock: SockId,
    },
    /// Read the send buffer's state (one `getsockopt(SO_MEMINFO)`) and report
    /// `SockEvent::SendSpace`.
    QuerySendSpace {
        /// The socket.
        sock: SockId,
    },
    /// `shutdown(SHUT_WR)`.
    ShutdownWrite {
        /// The socket.
        sock: SockId,
    },
    /// Join two connected TCP sockets (pasta's loopback path): the driver
    /// moves the bytes between them itself, both ways (`splice()` through
    /// pipes in the epoll driver), and the core sees no readiness of either
    /// socket any more. When a side reaches end of stream and everything
    /// read from it was written, the other side is shut down for writing;
    /// once both directions are done, or either socket fails, the driver
    /// reports `SockEvent::SpliceEnded` on `sock` (and nothing else on the
    /// pair). Both ids stay open until the core's `Close`.
    Splice {
        /// The socket the connection arrived on.
        sock: SockId,
        /// The socket the driver connected in the other namespace.
        peer: SockId,
    },
    /// Look at the next datagram queued on a UDP socket without taking it
    /// (`recvmsg(MSG_PEEK)`, with `IP_PKTINFO`/`IPV6_PKTINFO` for the
    /// address it was sent to): answer `SockEvent::DatagramPeer`, nothing if
    /// none is queued, `SockEvent::Error` on another error. pasta's
    /// listeners that may splice are read this way first, so that the core
    /// can choose each datagram's path before anything is read.
    PeekPeer {
        /// The socket.
        sock: SockId,
    },
    /// Receive up to `max` datagrams from `from` (one `recvmmsg`) and send
    /// them on the connected socket `to` (one `sendmmsg`); with `to`
    /// `None`, or a socket the driver does not hold, they are discarded.
    /// Nothing is reported: a datagram that does not go out is lost, as
    /// UDP allows. The bytes never reach the core.
    ForwardDatagrams {
        /// The socket to read.
        from: SockId,
        /// The socket to write, or `None` to discard.
        to: Option<SockId>,
        /// Most datagrams.
        max: u16,
    },
    /// Join two connected UDP sockets (pasta's loopback path): from now on
    /// the driver moves every datagram either socket receives to the other
    /// (`recvmmsg`, `sendmmsg`), and the core sees no readiness of either.
    /// A fatal error on either socket is reported once as
    /// `SockEvent::SpliceEnded(Err)` on `sock`; errors that ICMP reports
    /// (a refused port) are not fatal. Both ids stay open until the core's
    /// `Close`. Answer `QuerySpliced` with the datagrams moved so far.
    SpliceDatagrams {
        /// The socket on the side the flow came from.
        sock: SockId,
        /// The socket in the other namespace.
        peer: SockId,
    },
    /// Report the datagrams a pair joined by `SpliceDatagrams` (named by its
    /// `sock`) moved so far, as `SockEvent::Spliced`.
    QuerySpliced {
        /// The pair's `sock`.
        sock: SockId,
    },
    /// Close the socket and forget the id; the core may reuse it afterwards.
    Close {
        /// The socket.
        sock: SockId,
    },
}

impl Action {
    /// The socket and the request of an [`Action::Peek`], as
    /// [`Core::peek_into`](crate::Core::peek_into) takes them.
    pub fn peek_request(&self) -> Option<(SockId, PeekRequest)> {
        match *self {
            Action::Peek {
                sock,
                skip,
                len,
                mss,
                room,
            } => Some((
                sock,
                PeekRequest {
                    skip,
                    len,
                    mss,
                    room,
                },
            )),
            _ => None,
        }
    }

    /// The socket and the request of an [`Action::Recv`], as
    /// [`Core::recv_into`](crate::Core::recv_into) takes them.
    pub fn recv_request(&self) -> Option<(SockId, RecvRequest)> {
        match *self {
            Action::Recv { sock, max, room } => Some((sock, RecvRequest { max, room })),
            _ => None,
        }
    }
}

/// What an [`Action::Peek`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeekRequest {
    /// Bytes to skip (without `SO_PEEK_OFF`).
    pub skip: u32,
    /// Most bytes to peek.
    pub len: u32,
    /// Payload per frame.
    pub mss: u16,
    /// Header room in front of each payload.
    pub room: u16,
}

/// What an [`Action::Recv`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvRequest {
    /// Most datagrams wanted.
    pub max: u16,
    /// Header room before the payload in each slot.
    pub room: u16,
}

/// An errno value reported by the driver.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// Operation not permitted.
    pub const EPERM: Errno = Errno(1);
    /// Interrupted.
    pub const EINTR: Errno = Errno(4);
    /// Bad file descriptor.
    pub const EBADF: Errno = Errno(9);
    /// Try again.
    pub const EAGAIN: Errno = Errno(11);
    /// Invalid argument.
    pub const EINVAL: Errno = Errno(22);
    /// Permission denied.
    pub const EACCES: Errno = Errno(13);
    /// Too many open files in the process.
    pub const EMFILE: Errno = Errno(24);
    /// Too many open files in the system.
    pub const ENFILE: Errno = Errno(23);
    /// Out of memory.
    pub const ENOMEM: Errno = Errno(12);
    /// Broken pipe.
    pub const EPIPE: Errno = Errno(32);
    /// Address in use.
    pub const EADDRINUSE: Errno = Errno(98);
    /// Network unreachable.
    pub const ENETUNREACH: Errno = Errno(101);
    /// Connection reset by peer.
    pub const ECONNRESET: Errno = Errno(104);
    /// No buffer space.
    pub const ENOBUFS: Errno = Errno(105);
    /// Timed out.
    pub const ETIMEDOUT: Errno = Errno(110);
    /// Message too long.
    pub const EMSGSIZE: Errno = Errno(90);
    /// Protocol error.
    pub const EPROTO: Errno = Errno(71);
    /// Connection refused.
    pub const ECONNREFUSED: Errno = Errno(111);
    /// Host unreachable.
    pub const EHOSTUNREACH: Errno = Errno(113);
    /// Operation in progress.
    pub const EINPROGRESS: Errno = Errno(115);
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "errno {}", self.0)
    }
}

/// What the kernel's TCP_INFO (and friends) say about a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpInfo {
    /// `tcpi_bytes_acked`: bytes the peer acknowledged.
    pub bytes_acked: u64,
    /// `tcpi_snd_wnd`: the peer's receive window.
    pub snd_wnd: u32,
    /// `tcpi_snd_wscale`.
    pub snd_wscale: u8,
    /// `tcpi_snd_mss`.
    pub snd_mss: u32,
    /// `tcpi_min_rtt` in microseconds.
    pub min_rtt_us: u32,
    /// The send buffer's size in the kernel's accounting
    /// (`SK_MEMINFO_SNDBUF`); 0 if unknown.
    pub sndbuf: u32,
    /// What the queued data (unsent and unacknowledged) costs in the same
    /// accounting (`SK_MEMINFO_WMEM_QUEUED`): payload plus per-buffer
    /// overhead.
    pub queued: u32,
}

impl TcpInfo {
    /// The send buffer part of the answer.
    pub fn space(&self) -> SendSpace {
        SendSpace {
            sndbuf: self.sndbuf,
            queued: self.queued,
        }
    }
}

/// A stream socket's send buffer as the kernel accounts it (`SO_MEMINFO`).
///
/// Linux accepts more data while `queued < sndbuf` (checked for each new
/// buffer, so one write may overshoot by a buffer), and reports the socket
/// writable (`EPOLLOUT`) only while `queued` is at most two thirds of
/// `sndbuf`. A socket found not writable when its readiness is polled
/// (`epoll_ctl`, or a wake-up) or a write that did not fit arms a wake-up for
/// the moment it is writable again; nothing else does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SendSpace {
    /// `SK_MEMINFO_SNDBUF` (what `SO_SNDBUF` reports); 0 if unknown.
    pub sndbuf: u32,
    /// `SK_MEMINFO_WMEM_QUEUED`.
    pub queued: u32,
}

impl SendSpace {
    /// Whether epoll reports the socket writable in this state.
    pub fn writable(&self) -> bool {
        u64::from(self.queued) * 3 <= u64::from(self.sndbuf) * 2
    }
}

/// Most bytes of the datagram an ICMP error was about that
/// [`IcmpError`] carries: an echo header and the first 8 bytes after it, or
/// the first 16 bytes of a UDP payload.
pub const ICMP_QUOTE_MAX: usize = 16;

/// An error that an ICMP or ICMPv6 message reported on a datagram socket
/// (the socket's error queue with `IP_RECVERR`: `sock_extended_err` with
/// origin `SO_EE_ORIGIN_ICMP` or `SO_EE_ORIGIN_ICMP6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpError {
    /// The errno the kernel made of it (`ee_errno`).
    pub errno: Errno,
    /// Whether the message was ICMPv6.
    pub v6: bool,
    /// ICMP type (`ee_type`).
    pub icmp_type: u8,
    /// ICMP code (`ee_code`).
    pub code: u8,
    /// `ee_info`: the next-hop MTU of "fragmentation needed" and "packet too
    /// big".
    pub info: u32,
    /// The node that sent the message (`SO_EE_OFFENDER`), if known.
    pub offender: Option<SocketAddr>,
    /// Length of `quote` in use.
    pub quote_len: u8,
    /// The start of what the socket had sent (the UDP payload, or for a ping
    /// socket the echo header and what follows), as the message quoted it.
    pub quote: [u8; ICMP_QUOTE_MAX],
}

impl IcmpError {
    /// An error of ICMP `icmp_type`/`code` (ICMPv6 if `v6`) from
    /// `offender`, quoting the start of `data`.
    pub fn new(
        errno: Errno,
        v6: bool,
        (icmp_type, code, info): (u8, u8, u32),
        offender: Option<SocketAddr>,
        data: &[u8],
    ) -> Self {
        let n = data.len().min(ICMP_QUOTE_MAX);
        let mut quote = [0; ICMP_QUOTE_MAX];
        quote[..n].copy_from_slice(&data[..n]);
        IcmpError {
            errno,
            v6,
            icmp_type,
            code,
            info,
            offender,
            quote_len: n as u8,
            quote,
        }
    }

    /// The quoted bytes.
    pub fn quote(&self) -> &[u8] {
        &self.quote[..usize::from(self.quote_len).min(ICMP_QUOTE_MAX)]
    }
}

/// Readiness of, and results from, a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SockEvent {
    /// EPOLLIN (and, level-triggered, still readable).
    Readable,
    /// EPOLLOUT
    Writable,
    /// EPOLLRDHUP: the peer shut down its sending side.
    ReadHangUp,
    /// EPOLLHUP
    HangUp,
    /// EPOLLERR, with the pending SO_ERROR; for datagram sockets, one event
    /// per error drained from the error queue (IP_RECVERR) that no ICMP
    /// message reported.
    Error(Errno),
    /// An error drained from a datagram socket's error queue that an ICMP or
    /// ICMPv6 message reported: UDP and echo relay it to the guest.
    Icmp(IcmpError),
    /// An `Open`, `Bind` or `Listen` failed; the socket is closed and forgotten.
    OpenFailed(Errno),
    /// Outcome of a `Connect`.
    Connected(Result<(), Errno>),
    /// Outcome of an `Accept`: the peer and local addresses of the new socket.
    Accepted(Result<(SocketAddr, SocketAddr), Errno>),
    /// Outcome of a `SendDatagrams`: datagrams written.
    Sent(Result<usize, Errno>),
    /// Answer to `QueryTcpInfo`.
    TcpInfo(TcpInfo),
    /// Outcome of a `Send` on a stream socket: bytes written, and the send
    /// buffer's state after the write.
    StreamSent {
        /// Bytes written, or the error.
        sent: Result<usize, Errno>,
        /// The send buffer after the write (zeros if it could not be read,
        /// or was left out after a small write taken whole: the core then
        /// estimates it, or asks with `QuerySendSpace`).
        space: SendSpace,
    },
    /// Answer to `QuerySendSpace`.
    SendSpace(SendSpace),
    /// A pair joined by `Action::Splice` is done: `Ok` after both
    /// directions ended with a FIN and everything was written; the error of
    /// the side that failed (a reset, a write to a closed peer) otherwise.
    SpliceEnded(Result<SpliceTotals, Errno>),
    /// Answer to `PeekPeer`: where the next queued datagram comes from, and
    /// the address it was sent to (`None` if the driver could not tell).
    DatagramPeer {
        /// The datagram's source.
        peer: SocketAddr,
        /// Its destination address.
        local: Option<IpAddr>,
    },
    /// Answer to `QuerySpliced`: datagrams moved by the pair so far (in
    /// datagrams, not bytes).
    Spliced(SpliceTotals),
}

/// Bytes a spliced pair moved, per direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SpliceTotals {
    /// From the `sock` of `Action::Splice` to its `peer`.
    pub to_peer: u64,
    /// From the `peer` to `sock`.
    pub from_peer: u64,
}

/// The most header room an [`Action::Recv`] asks for in front of each
/// datagram: the largest Ethernet + IP + UDP header (IPv6: 14 + 40 + 8 bytes).
/// Only datagrams of IPv4 peers on dual-stack listeners leave part of the
/// room unused (their frames start at `frame_start` > 0).
pub const DATAGRAM_ROOM: u16 = 62;

/// One datagram received for [`Action::Recv`], in a transmit buffer lent by
/// the driver. The driver places the payload at `buf[room..room + len]` and
/// sets `peer`; the core writes the headers in front of it and sets
/// `frame_start` and `frame_len` (0: dropped): the frame to send is
/// `buf[frame_start..frame_start + frame_len]`.
#[derive(Debug)]
pub struct RxDatagram<'a> {
    /// The frame buffer. With room for 60 bytes from the frame's start, a
    /// short frame is padded to 60 (802.3); with less it goes out short.
    pub buf: &'a mut [u8],
    /// Bytes of the datagram (UDP payload; for ping sockets the ICMP message).
    /// A length beyond the buffer means the datagram was truncated: dropped.
    pub len: usize,
    /// Where the datagram came from.
    pub peer: SocketAddr,
    /// First byte of the finished frame, set by the core.
    pub frame_start: usize,
    /// Length of the finished frame, set by the core (0: no frame).
    pub frame_len: usize,
}

impl<'a> RxDatagram<'a> {
    /// A received datagram of `len` bytes from `peer`, in `buf`.
    pub fn new(buf: &'a mut [u8], len: usize, peer: SocketAddr) -> Self {
        RxDatagram {
            buf,
            len,
            peer,
            frame_start: 0,
            frame_len: 0,
        }
    }

    /// The finished frame, if any.
    pub fn frame(&self) -> Option<&[u8]> {
        if self.frame_len == 0 {
            return None;
        }
        self.buf
            .get(self.frame_start..self.frame_start.checked_add(self.frame_len)?)
    }
}

/// One transmit buffer lent by the driver for [`Action::Peek`]: a whole frame's
/// worth of bytes. The driver peeks payload into `buf[room..]`; the core writes
/// the headers in front of it and sets `frame_len` (0: slot unused) and, on a
/// link that takes offloads ([`Config::link_offload`](crate::Config::link_offload)),
/// `meta`.
#[derive(Debug)]
pub struct TxSlot<'a> {
    /// The frame buffer.
    pub buf: &'a mut [u8],
    /// Length of the finished frame, set by the core.
    pub frame_len: usize,
    /// What the link must finish (a partial checksum, segmentation), set
    /// by the core; [`FrameMeta::PLAIN`](crate::FrameMeta::PLAIN) on a link
    /// without offloads.
    pub meta: crate::FrameMeta,
}

impl<'a> TxSlot<'a> {
    /// An empty slot over `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        TxSlot {
            buf,
            frame_len: 0,
            meta: crate::FrameMeta::PLAIN,
        }
    }
}
