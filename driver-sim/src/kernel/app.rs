//! The scripted host application's sockets, named by file descriptor.

use super::*;

impl Kernel {
    // --- the host application ---------------------------------------------------

    fn app_handle(&self, fd: i32) -> Result<usize, Errno> {
        self.by_fd.get(&fd).copied().ok_or(Errno::EBADF)
    }

    fn next_fd(&self) -> i32 {
        let mut fd = 3;
        while self.by_fd.contains_key(&fd) {
            fd += 1;
        }
        fd
    }

    /// `socket()` by the application; returns the fd.
    pub fn app_socket(&mut self, stream: bool, family: Family) -> i32 {
        self.app_socket_in(stream, family, Netns::Host)
    }

    /// `socket()` by an application in `netns` (pasta's guest namespace
    /// has applications too); returns the fd.
    pub fn app_socket_in(&mut self, stream: bool, family: Family, netns: Netns) -> i32 {
        let fd = self.next_fd();
        let kind = if stream { Kind::Stream } else { Kind::Udp };
        let h = self.new_sock(Owner::App(fd), kind, family, netns);
        self.by_fd.insert(fd, h);
        fd
    }

    /// `bind()` by the application.
    pub fn app_bind(&mut self, fd: i32, addr: SocketAddr) -> Result<(), Errno> {
        let h = self.app_handle(fd)?;
        self.bind_handle(h, addr, true)
    }

    /// `listen()` by the application.
    pub fn app_listen(&mut self, fd: i32, backlog: u32) -> Result<(), Errno> {
        let h = self.app_handle(fd)?;
        self.listen_handle(h, backlog)
    }

    /// `accept()` by the application; EAGAIN if nothing is pending.
    pub fn app_accept(&mut self, fd: i32) -> Result<i32, Errno> {
        let l = self.app_handle(fd)?;
        let Some(h) = self.sock_mut(l).and_then(|s| s.backlog.pop_front()) else {
            return err(Errno::EAGAIN);
        };
        let nfd = self.next_fd();
        if let Some(s) = self.sock_mut(h) {
            s.owner = Owner::App(nfd);
        }
        self.by_fd.insert(nfd, h);
        self.mutations += 1;
        Ok(nfd)
    }

    /// A blocking `connect()` by the application to a listener of the core in
    /// namespace `netns`.
    pub fn app_connect(&mut self, fd: i32, addr: SocketAddr, netns: Netns) -> Result<(), Errno> {
        let h = self.app_handle(fd)?;
        let family = self.sock(h).map_or(Family::V4, |s| s.family);
        let Some(l) = self.find_listener(netns, addr, true) else {
            return err(Errno::ECONNREFUSED);
        };
        if self
            .sock(l)
            .is_some_and(|s| s.backlog.len() >= s.backlog_max)
        {
            return err(Errno::ECONNREFUSED);
        }
        let pending = self.new_sock(Owner::Pending, Kind::Stream, family, netns);
        let local = self
            .sock(h)
            .and_then(|s| s.local)
            .unwrap_or(SocketAddr::new(
                if family == Family::V4 {
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99))
                } else {
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99))
                },
                (50000 + fd as u32 % 10000) as u16,
            ));
        if let Some(s) = self.sock_mut(h) {
            s.local = Some(local);
            s.remote = Some(addr);
        }
        if let Some(s) = self.sock_mut(pending) {
            s.local = Some(addr);
            s.remote = Some(local);
        }
        self.make_conn(pending, h);
        if let Some(s) = self.sock_mut(l) {
            s.backlog.push_back(pending);
            s.gen += 1;
        }
        Ok(())
    }

    /// `write()` of `n` pattern bytes by the application.
    pub fn app_write(&mut self, fd: i32, n: usize) -> Result<usize, Errno> {
        let h = self.app_handle(fd)?;
        let (ci, side) = self.conn_side(h)?;
        let (cid, off) = self
            .conns
            .get(ci)
            .and_then(Option::as_ref)
            .map_or((0, 0), |c| (c.id, c.pipes[side].log.len() as u64));
        let data: Vec<u8> = (0..n as u64)
            .map(|k| pattern(cid, side as u8, off + k))
            .collect();
        self.send_handle(h, &data)
    }

    /// `read()` of at most `n` bytes by the application; 0 at end of stream.
    pub fn app_read(&mut self, fd: i32, n: usize) -> Result<usize, Errno> {
        let h = self.app_handle(fd)?;
        let (ci, side) = self.conn_side(h)?;
        if let Some(e) = self.take_err(ci, side) {
            return Err(e);
        }
        let c = self.conn(ci)?;
        let p = &c.pipes[1 - side];
        if p.rcv.is_empty() {
            return if p.eof() || c.reset {
                Ok(0)
            } else {
                err(Errno::EAGAIN)
            };
        }
        self.consume_handle(h, n)
    }

    /// `shutdown(SHUT_WR)` by the application.
    pub fn app_shutdown(&mut self, fd: i32) -> Result<(), Errno> {
        let h = self.app_handle(fd)?;
        self.shutdown_handle(h)
    }

    /// `close()` by the application.
    pub fn app_close(&mut self, fd: i32) -> Result<(), Errno> {
        let h = self.app_handle(fd)?;
        self.by_fd.remove(&fd);
        self.close_handle(h, false);
        Ok(())
    }

    /// SO_RCVBUF / SO_SNDBUF by the application.
    pub fn app_setbuf(&mut self, fd: i32, snd: Option<u32>, rcv: Option<u32>) -> Result<(), Errno> {
        let h = self.app_handle(fd)?;
        self.set_buf(h, snd, rcv)
    }
}
