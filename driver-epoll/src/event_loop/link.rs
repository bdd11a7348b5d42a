//! The loop's events on the guest link (tap device, qemu socket or
//! vhost-user): frames in, resets, room again, queue kicks.

use super::*;

pub(crate) use crate::framing::RxBuf;

impl Runtime {
    pub(super) fn link_event(&mut self, flags: EpollFlags) -> Option<Exit> {
        if flags.contains(EpollFlags::EPOLLOUT) {
            // The qemu socket has room again: first for the rest of a frame
            // it took part of, then for frames it refused.
            let done = match &mut self.io.link {
                Link::Qemu(q) => q.flush_tail(),
                _ => true,
            };
            if done {
                self.io.link.want_writable(&self.io.epoll, false);
                self.link_writable();
            }
        }
        let rx = &mut self.rx;
        let r = match &mut self.io.link {
            Link::Tap(t) => t.read_batch(rx),
            Link::Qemu(q) => q.read_batch(rx, flags),
            Link::VhostUser(v) => {
                if v.control(&self.io.epoll) == crate::link::vhost_user::Control::Reset {
                    return self.link_reset();
                }
                // A queue may have started: frames may wait on either side.
                self.vu_tx();
                self.link_writable();
                return None;
            }
        };
        match r {
            crate::link::tap::ReadOutcome::Frames => {
                // A read from qemu may hold more frames than one batch takes:
                // the rest is already in the buffer, where no epoll event
                // would report it, so it is handed over at once.
                let mut rounds = 0;
                while !rx.refs.is_empty() {
                    log::trace!("guest link: {} frames in", rx.refs.len());
                    let t = now();
                    let vnet = match &self.io.link {
                        Link::Tap(tap) => tap.vnet_hdr_len(),
                        _ => 0,
                    };
                    let batch = FrameBatch::new(&rx.buf, &rx.refs).with_virtio_hdr(vnet);
                    if let Some(p) = &mut self.io.pcap {
                        for i in 0..batch.len() {
                            if let Some(f) = batch.frame(i) {
                                p.write_frame(f);
                            }
                        }
                    }
                    self.io.core.handle_tap_batch(t, &batch);
                    self.io.drain(t, &rx.buf);
                    rx.refs.clear();
                    let Link::Qemu(q) = &mut self.io.link else {
                        break;
                    };
                    // The batch is done with: keep only what follows it.
                    q.keep_partial(rx);
                    rounds += 1;
                    if q.is_broken() || rounds > RX_BYTES / 14 {
                        break;
                    }
                    q.reparse(rx);
                }
                if let Link::Qemu(q) = &mut self.io.link {
                    if q.take_broken() {
                        return self.link_reset();
                    }
                    q.keep_partial(rx);
                }
                None
            }
            crate::link::tap::ReadOutcome::Reset => self.link_reset(),
        }
    }

    /// The guest link went away: tell the core, then wait for the next qemu
    /// client, or exit.
    pub(super) fn link_reset(&mut self) -> Option<Exit> {
        self.rx.refs.clear();
        self.rx.fill = 0;
        let t = now();
        self.io.core.handle_tap_reset(t);
        self.io.drain(t, &[]);
        match &mut self.io.link {
            Link::Qemu(q) if !q.one_off() => {
                if let Err(e) = q.register(&self.io.epoll) {
                    log::error!("listening again: {e}");
                    return Some(Exit::Code(1));
                }
                None
            }
            Link::Qemu(_) => {
                log::info!("client closed the connection, exiting (one-off)");
                Some(Exit::Code(0))
            }
            Link::VhostUser(v) => {
                if v.reset(&self.io.epoll) {
                    None
                } else {
                    log::info!("vhost-user front-end gone, exiting (one-off)");
                    Some(Exit::Code(0))
                }
            }
            Link::Tap(_) => {
                log::error!("tap device closed or failed");
                Some(Exit::Code(1))
            }
        }
    }

    pub(super) fn listen_event(&mut self) -> Option<Exit> {
        match &mut self.io.link {
            Link::Qemu(q) => {
                let before = q.connected();
                q.accept(&self.io.epoll);
                if !before && q.connected() {
                    // A (new) client: ask for its guest's MAC.
                    let t = now();
                    self.io.core.handle_tap_connected(t);
                    self.io.drain(t, &[]);
                }
            }
            Link::VhostUser(v) => v.accept(&self.io.epoll),
            Link::Tap(_) => {}
        }
        None
    }

    /// A vhost-user queue was kicked: the guest sent frames (transmit
    /// queue) or added receive buffers.
    pub(super) fn kick_event(&mut self, q: usize) {
        let Link::VhostUser(v) = &mut self.io.link else {
            return;
        };
        v.ack_kick(q);
        if q == crate::link::vhost_user::device::TX {
            self.vu_tx();
        } else {
            // New receive buffers.
            self.link_writable();
        }
    }

    /// The guest link has room again: if the core waits for it, it sends.
    pub(super) fn link_writable(&mut self) {
        if self.io.core.tap_blocked() {
            let t = now();
            self.io.core.handle_tap_writable(t);
            self.io.drain(t, &[]);
        }
    }

    /// Hands the frames of the vhost-user transmit queue to the core, one
    /// batch at a time, straight from guest memory; each batch's chains go
    /// back to the guest once its actions are carried out.
    pub(super) fn vu_tx(&mut self) {
        let Link::VhostUser(v) = &mut self.io.link else {
            return;
        };
        let Some(mem) = v.tx_memory() else { return };
        let mut batch =
            std::mem::replace(&mut v.tx, crate::link::vhost_user::virtq::TxBatch::new(0));
        let mut frames = 0usize;
        let mut returned = false;
        while let Link::VhostUser(v) = &mut self.io.link {
            let fill = v.fill_tx(&mem, &mut batch);
            if !batch.refs.is_empty() {
                let t = now();
                let buf = batch.buffer(&mem);
                if let Some(p) = &mut self.io.pcap {
                    let b = FrameBatch::new(buf, &batch.refs);
                    for i in 0..b.len() {
                        if let Some(f) = b.frame(i) {
                            p.write_frame(f);
                        }
                    }
                }
                log::trace!("vhost-user: {} frames in", batch.refs.len());
                self.io
                    .core
                    .handle_tap_batch(t, &FrameBatch::new(buf, &batch.refs));
                self.io.drain(t, buf);
                frames += batch.refs.len();
            }
            let Link::VhostUser(v) = &mut self.io.link else {
                break;
            };
            if batch.has_chains() {
                v.complete_tx(&mem, &mut batch);
                returned = true;
            }
            if fill == crate::link::vhost_user::virtq::Fill::Empty {
                break;
            }
            if frames >= crate::link::vhost_user::TX_PER_KICK {
                // Other events get their turn; a kick of our own brings
                // the loop back here.
                v.rekick_tx();
                break;
            }
        }
        if let Link::VhostUser(v) = &mut self.io.link {
            if returned {
                v.notify_tx(&mem);
            }
            v.tx = batch;
        }
    }
}
