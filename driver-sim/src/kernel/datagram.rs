//! UDP and ping sockets: datagrams out and in, echoes and errors.

use super::*;

impl Kernel {
    /// Datagrams sent by the core on a UDP or ping socket, to `to` or, if
    /// `None`, to the connected peer. An echo peer (and, for ping sockets, the
    /// pinged host) answers each; a refusing destination queues
    /// ECONNREFUSED on the error queue (an ICMP port unreachable). Returns
    /// how many were sent.
    pub fn send_datagrams(
        &mut self,
        id: SockId,
        dgrams: &[&[u8]],
        to: Option<SocketAddr>,
    ) -> Result<usize, Errno> {
        let h = self.core_handle(id)?;
        let s = self.sock(h).ok_or(Errno::EBADF)?;
        let Some(dst) = to.or(s.remote) else {
            return err(Errno::EPERM); // EDESTADDRREQ, really
        };
        let kind = s.kind;
        if kind != Kind::Udp && kind != Kind::Ping {
            return err(Errno::EPERM);
        }
        let spec = self.cfg.peer_for(dst);
        let Some(s) = self.sock_mut(h) else {
            return err(Errno::EBADF);
        };
        // A ping socket writes its own identifier (its port) into each request.
        let id = s.local.map_or(0, |l| l.port());
        let id = if id == 0 { ping_id(h) } else { id };
        for d in dgrams {
            if kind == Kind::Ping {
                let mut req = d.to_vec();
                if let Some(f) = req.get_mut(4..6) {
                    f.copy_from_slice(&id.to_be_bytes());
                }
                if let Some(reply) = echo_reply(&req, dst.is_ipv4()) {
                    if s.dgrams.len() < 256 {
                        s.dgrams.push_back((dst, reply));
                    }
                }
            } else {
                match spec.model {
                    PeerModel::Echo if s.dgrams.len() < 256 => {
                        s.dgrams.push_back((dst, d.to_vec()))
                    }
                    PeerModel::Refuse | PeerModel::Unreachable if s.errq.len() < 64 => {
                        s.errq.push_back(if spec.model == PeerModel::Refuse {
                            Errno::ECONNREFUSED
                        } else {
                            Errno::EHOSTUNREACH
                        })
                    }
                    _ => {}
                }
            }
            s.gen += 1;
        }
        self.mutations += 1;
        Ok(dgrams.len())
    }

    /// `recvmmsg()` of at most `max` datagrams with their sources; empty when
    /// nothing is queued.
    pub fn recv_datagrams(
        &mut self,
        id: SockId,
        max: usize,
    ) -> Result<Vec<(SocketAddr, Vec<u8>)>, Errno> {
        let h = self.core_handle(id)?;
        let s = self.sock_mut(h).ok_or(Errno::EBADF)?;
        if s.kind != Kind::Udp && s.kind != Kind::Ping {
            return err(Errno::EPERM);
        }
        let n = max.min(s.dgrams.len());
        let out: Vec<_> = s.dgrams.drain(..n).collect();
        if n > 0 {
            self.mutations += 1;
        }
        Ok(out)
    }
}
