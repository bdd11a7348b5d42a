//! The guest link: pasta's tap device, passt's qemu stream socket, or
//! vhost-user virtqueues in the guest's memory, behind one [`Link`].

pub(crate) mod qemu;
pub(crate) mod tap;
pub(crate) mod txring;
pub(crate) mod vhost_user;

use crate::event_loop::TxArena;
use nix::sys::epoll::Epoll;
use qemu::QemuLink;
use tap::TapDevice;
use vhost_user::VuLink;

/// The guest link.
#[derive(Debug)]
pub(crate) enum Link {
    /// pasta: a tap device in the guest namespace.
    Tap(TapDevice),
    /// passt: qemu's stream socket.
    Qemu(QemuLink),
    /// passt `--vhost-user`: virtqueues in the guest's memory.
    VhostUser(Box<VuLink>),
}

impl Link {
    /// Asks (or stops asking) to be told when the link can take frames
    /// again. The qemu socket watches for `EPOLLOUT`; vhost-user hears it
    /// from the receive queue's kicks, which it always watches; a tap
    /// device drops what it cannot take and never needs it.
    pub(crate) fn want_writable(&mut self, epoll: &Epoll, on: bool) {
        if let Link::Qemu(q) = self {
            q.want_writable(epoll, on);
        }
    }

    /// Part of a frame waits for room on the link (the qemu socket).
    pub(crate) fn tail_pending(&self) -> bool {
        matches!(self, Link::Qemu(q) if q.tail_pending())
    }

    /// Sends the arena's frames; returns how many the link accepted.
    pub(crate) fn send(&mut self, arena: &mut TxArena) -> usize {
        match self {
            Link::Tap(t) => t.send(arena),
            Link::Qemu(q) => q.send(arena),
            Link::VhostUser(v) => v.send(arena),
        }
    }
}
