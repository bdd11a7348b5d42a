//! One step of the simulation: what happens next in virtual time, frames
//! through the link into the core, and the core's frames onto the wire.

use super::*;

impl Sim {
    // Long by design: one step in the fixed order of a turn (frames into the core,
    // socket events, the core's timers, the turn-end checks, frames to the guest and
    // its models' replies, draining actions), kept in one place so the order reads.
    pub(super) fn step(&mut self) {
        let now = self.now;
        self.kernel.set_now(now.as_nanos());
        let arrived = self.to_core.take_arrived(now);
        if !arrived.is_empty() {
            for (f, corrupted) in &arrived {
                if *corrupted {
                    self.checker.on_corrupted(f);
                }
            }
            self.deliver_batch(arrived.into_iter().map(|f| f.0).collect());
        }
        self.ring.now = now;
        if self.core.tap_blocked() && now >= self.ring.busy_until {
            self.note("link", "core> room again");
            self.core.handle_tap_writable(now);
            self.drain();
        }
        let events = self.kernel.advance(now.as_nanos());
        self.kernel_notes();
        for (sock, ev) in events {
            self.note("host", format!("{sock:?} {ev:?}"));
            self.event(sock, ev);
            self.drain();
        }
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
            self.drain();
            // A deadline still due right after handling it would make an event
            // loop spin: tolerated a few times (timers that fire in steps),
            // then a violation, and the clock moves on.
            if self.core.poll_timeout().is_some_and(|t| t <= now) {
                self.stuck_timer += 1;
                if self.stuck_timer == 100 {
                    self.violation(
                        "timers: poll_timeout stays in the past after handle_timeout".into(),
                    );
                }
            } else {
                self.stuck_timer = 0;
            }
        }
        self.settle_now();
        // Window stalls are a matter of the core reacting to the socket: on
        // an impaired link the guest also waits for its own retransmissions,
        // which the check cannot tell apart.
        // Frames lost before the links healed leave the guest waiting for
        // its retransmission timeout (the model's is 200 ms) too: the check
        // starts a second after the last loss.
        let losses = self.to_core.stats.lost
            + self.to_core.stats.too_big
            + self.to_guest.stats.lost
            + self.to_guest.stats.too_big;
        // A paused guest loses the frames for it too (a window update among
        // them): the check starts a second after it resumes (the pause is
        // cleared later in the step that resumes it).
        let paused_now = self.guest_paused_until.is_some();
        if losses != self.link_losses.0 || paused_now {
            self.link_losses = (losses, now);
        }
        let settled = !paused_now
            && ((losses == 0 && self.link_losses.1 == Instant::ZERO)
                || now >= self.link_losses.1.saturating_add(Duration::from_secs(1)));
        if settled
            && self.to_core.profile.is_clean()
            && self.to_guest.profile.is_clean()
            && self.ring.profile.is_clean()
        {
            let on_links = self.to_core.frames().chain(self.to_guest.frames());
            for v in self
                .checker
                .on_turn_end(now.as_nanos(), &self.kernel, on_links)
            {
                self.violation(v);
            }
        }
        let mut replies = Vec::new();
        let paused = self.guest_paused_until.is_some_and(|p| now < p);
        if !paused && self.guest_paused_until.take().is_some() {
            let lost = std::mem::take(&mut self.guest_paused_lost);
            self.note(
                "sim",
                format!("guest resumes: {lost} frames for it were lost"),
            );
        }
        for (f, corrupted) in self.to_guest.take_arrived(now) {
            if corrupted {
                self.note("link", "core> frame corrupted on the way to the guest");
            }
            let seg = frame::parse_tcp(&f).filter(|_| frame::check_frame(&f, usize::MAX).is_ok());
            match seg.and_then(|t| {
                self.guests
                    .iter()
                    .position(|g| g.claims(&t))
                    .map(|i| (i, t))
            }) {
                Some(_) if paused => self.guest_paused_lost += 1,
                Some((i, t)) => self.guests[i].on_segment(now.as_nanos(), &t, &mut replies),
                None => {
                    let replayed = self
                        .replay
                        .as_mut()
                        .is_some_and(|r| r.on_frame(now.as_nanos(), &f));
                    if !replayed {
                        self.guest_inbox.push((now, f));
                    }
                }
            }
        }
        if paused {
            return;
        }
        for g in &mut self.guests {
            g.on_timer(now.as_nanos(), &mut replies);
            g.mark_done(now.as_nanos());
        }
        let mut touched = false;
        if let Some(r) = self.replay.as_mut() {
            touched = r.poll(now.as_nanos(), &mut self.kernel, &mut replies);
            for n in r.take_notes() {
                self.timeline
                    .push(format!("{} {:<6} {}", ts(now), "replay", n));
            }
        }
        for f in replies {
            self.guest_send(&f);
        }
        if touched {
            // The host application did something: readiness for the core.
            self.settle_now();
        }
    }

    /// Delivers readiness until nothing changes at this instant.
    pub fn settle_now(&mut self) {
        self.kernel.run_peers(self.now.as_nanos());
        self.kernel_notes();
        let mut idle = 0;
        for _ in 0..MAX_ROUNDS {
            let events = self.kernel.ready_events();
            if events.is_empty() {
                return;
            }
            // Progress: the kernel changed or a frame went out. Actions alone
            // (a peek that finds nothing new) are not.
            let before = (self.kernel.mutations, self.stats.frames_from_core);
            let what: Vec<String> = events.iter().map(|(s, e)| format!("{s:?} {e:?}")).collect();
            for (sock, ev) in events {
                // Errors and hang-ups are worth a line; readiness is not.
                if matches!(
                    ev,
                    SockEvent::Error(_) | SockEvent::HangUp | SockEvent::ReadHangUp
                ) {
                    self.note("host", format!("{sock:?} {ev:?}"));
                }
                self.event(sock, ev);
                self.drain();
            }
            self.kernel.run_peers(self.now.as_nanos());
            self.kernel_notes();
            let after = (self.kernel.mutations, self.stats.frames_from_core);
            if before != after {
                idle = 0;
                continue;
            }
            self.stats.idle_wakeups += 1;
            idle += 1;
            if idle >= SPIN_ROUNDS {
                // Readiness keeps being reported and nothing changes: on real
                // epoll the event loop would spin here until something else
                // happens.
                self.stats.spins += 1;
                self.note(
                    "spin",
                    format!(
                        "readiness without progress {idle} times: {}",
                        what.join(", ")
                    ),
                );
                return;
            }
        }
        self.stats.spins += 1;
    }

    pub(super) fn kernel_notes(&mut self) {
        for n in std::mem::take(&mut self.kernel.notes) {
            self.note("host", n);
        }
    }

    fn deliver_batch(&mut self, frames: Vec<Vec<u8>>) {
        let now = self.now;
        let mut buf = Vec::new();
        let mut refs = Vec::new();
        let mut malformed_ok = 0u64;
        for (i, f) in frames.iter().enumerate() {
            self.wire
                .push((now, f.get(..self.wire_snaplen).unwrap_or(f).to_vec()));
            if self.keep_delivered {
                self.delivered.push((now, self.stats.batches, f.clone()));
            }
            if !frame::well_formed(f) {
                malformed_ok += 1;
            }
            let mut len = f.len() as u32;
            if i == 1 && self.planted == Some(PlantedBug::TruncateSecondOfBatch) {
                len = len.saturating_sub(1);
            }
            refs.push(FrameRef {
                offset: buf.len() as u32,
                len,
            });
            buf.extend_from_slice(f);
        }
        self.stats.batches += 1;
        self.stats.frames_to_core += frames.len() as u64;
        let before: u64 = MALFORMED
            .iter()
            .map(|r| self.core.counters().dropped(*r))
            .sum();
        let total_before = self.core.counters().dropped_total();
        self.core
            .handle_tap_batch(now, &FrameBatch::new(&buf, &refs));
        let after: u64 = MALFORMED
            .iter()
            .map(|r| self.core.counters().dropped(*r))
            .sum();
        let total_after = self.core.counters().dropped_total();
        if total_after > total_before {
            let reasons: Vec<String> = self
                .core
                .counters()
                .drop_reasons()
                .map(|(r, n)| format!("{r}={n}"))
                .collect();
            self.note(
                "core",
                format!(
                    "dropped {} (totals: {})",
                    total_after - total_before,
                    reasons.join(" ")
                ),
            );
        }
        if after - before > malformed_ok {
            self.violation(format!(
                "malformed drops: core dropped {} frames as malformed in a batch of {} with {} malformed",
                after - before,
                frames.len(),
                malformed_ok
            ));
        }
        self.drain_with(&buf);
    }

    pub(super) fn drain(&mut self) {
        self.drain_with(&[]);
    }

    /// Carries out every action, then sends every frame, as the call order
    /// requires. `batch` is the buffer of the last batch (send spans).
    fn drain_with(&mut self, batch: &[u8]) {
        for _ in 0..1_000_000 {
            let Some(a) = self.core.poll_action() else {
                break;
            };
            self.stats.actions += 1;
            self.exec(a, batch);
        }
        self.ring.now = self.now;
        self.core.transmit_queued(self.now, &mut self.ring);
        self.flush();
    }

    /// Sends what the ring holds, then puts what the link took on the wire.
    pub(super) fn flush(&mut self) {
        self.core.flush_ring(self.now, &mut self.ring);
        self.put_on_wire();
    }

    /// The frames the link took, in order; a line for those it refused.
    fn put_on_wire(&mut self) {
        for f in std::mem::take(&mut self.ring.sent) {
            self.emit(&f);
        }
        let refused = std::mem::take(&mut self.ring.refused);
        if !refused.is_empty() {
            self.note(
                "link",
                format!(
                    "core> {} frames refused, no room until {}",
                    refused.len(),
                    ts(self.ring.busy_until).trim()
                ),
            );
        }
        // To the invariants a refused frame is one the link lost: the
        // core made it, the guest never saw it.
        for f in refused {
            self.stats.frames_from_core += 1;
            self.stats.frames_refused += 1;
            let s = frame::summarize(&f, &mut self.seqs);
            self.note("core>", format!("{s} (refused)"));
            if let Err(e) = frame::check_frame(&f, self.max_frame) {
                self.violation(format!("frame check: {e}"));
            }
            for v in self.checker.on_core_frame(&f, &self.kernel) {
                self.violation(v);
            }
        }
    }

    pub(super) fn emit(&mut self, f: &[u8]) {
        self.stats.frames_from_core += 1;
        let s = frame::summarize(f, &mut self.seqs);
        self.note("core>", s);
        if let Err(e) = frame::check_core_frame(f, self.max_frame) {
            self.violation(format!("frame check: {e}"));
        }
        for v in self.checker.on_core_frame(f, &self.kernel) {
            self.violation(v);
        }
        self.wire
            .push((self.now, f.get(..self.wire_snaplen).unwrap_or(f).to_vec()));
        match self.to_guest.send(self.now, f) {
            Fate::Sent => {}
            fate => self.note("link", format!("core> frame {fate:?}")),
        }
    }

    pub(super) fn event(&mut self, sock: passt_core::SockId, ev: SockEvent) {
        if self.splicer.owns(sock) {
            if let Some((s, ev)) = self.splicer.event(&mut self.kernel, sock, ev) {
                self.note("host", format!("{s:?} {ev:?}"));
                self.core.handle_sock_event(self.now, s, ev);
            }
            return;
        }
        self.core.handle_sock_event(self.now, sock, ev);
    }
}
