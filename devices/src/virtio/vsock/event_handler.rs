//! Event-loop glue of the vsock device.
//!
//! Besides the state event and the three queue events (event data 0..2),
//! the device watches:
//! - its timer ([`TIMER_EVENT`]), from `init` on;
//! - the Unix listener (`BACKEND_EVENT`), edge-triggered, while active;
//! - every connection's Unix stream, edge-triggered for in and out, with
//!   the connection's own token as event data, added and removed as the
//!   muxer asks ([`FdOp`]).
//!
//! Edge triggering is what lets a stalled connection cost nothing: a host
//! socket whose guest has no credit or no receive buffers is simply not
//! read, and wakes the loop only when more bytes arrive (until its socket
//! buffer is full and the host's writes block). The muxer keeps each
//! stream's readiness until a read or write would block, so a credit
//! update or new receive buffers resume it without another event.

use event_manager::{EventOps, Events, MutEventSubscriber};
use std::time::Duration;
use vmm_sys_util::epoll::EventSet;

use super::muxer::{FdOp, Readiness};
use super::{Vsock, EVENT_QUEUE, RX_QUEUE, TX_QUEUE};
use crate::virtio::state::{handle_event, QueueHandler, BACKEND_EVENT};

/// Event data of the device's timer.
pub const TIMER_EVENT: u32 = u32::MAX - 2;

/// How a connection's stream is watched.
fn stream_events() -> EventSet {
    EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED
}

/// How the listener is watched.
fn listener_events() -> EventSet {
    EventSet::IN | EventSet::EDGE_TRIGGERED
}

/// What an event set says about a stream.
pub(super) fn readiness(set: EventSet) -> Readiness {
    Readiness {
        readable: set.intersects(EventSet::IN | EventSet::ERROR),
        writable: set.intersects(EventSet::OUT | EventSet::ERROR),
        read_closed: set.contains(EventSet::READ_HANG_UP),
        hup: set.contains(EventSet::HANG_UP),
    }
}

impl Vsock {
    /// Applies the muxer's watch-list changes. A stream that cannot be
    /// watched ends its connection (which only removes, so this ends).
    fn apply_fd_ops(&mut self, ops: &mut EventOps) {
        loop {
            let changes = self.muxer.take_fd_ops();
            if changes.is_empty() {
                return;
            }
            for change in changes {
                match change {
                    FdOp::Add { fd, token } => {
                        if let Err(e) = ops.add(Events::with_data_raw(fd, token, stream_events())) {
                            log::warn!("virtio-vsock: cannot watch a connection: {e:?}");
                            self.muxer.registration_failed(token);
                        }
                    }
                    FdOp::Remove(stream) => {
                        // Before the stream closes: epoll forgets a
                        // registration only through an open descriptor.
                        let _ = ops.remove(Events::empty(&stream));
                        drop(stream);
                    }
                }
            }
        }
    }

    /// Sets the timer for the muxer's earliest deadline, unless it is set
    /// for that or earlier (an early wake-up only finds nothing to do).
    fn arm_timer(&mut self) {
        let Some(next) = self.muxer.next_deadline() else {
            return;
        };
        if self.timer_armed.is_some_and(|armed| armed <= next) {
            return;
        }
        // A zero duration would disarm the timer.
        let wait = next
            .saturating_duration_since(self.muxer.now())
            .max(Duration::from_millis(1));
        match self.timer.reset(wait, None) {
            Ok(()) => self.timer_armed = Some(next),
            Err(e) => log::warn!("virtio-vsock: cannot set the timer: {e}"),
        }
    }
}

impl QueueHandler for Vsock {
    fn process_queue(&mut self, index: usize, _ops: &mut EventOps) {
        match index {
            // The driver posted receive buffers (or a pass rescheduled
            // itself).
            RX_QUEUE => self.process_rx(),
            TX_QUEUE => {
                self.process_tx();
                // Answers, credit updates, and data that credit unblocked.
                self.process_rx();
            }
            EVENT_QUEUE => self.process_events(),
            other => log::warn!("virtio-vsock: no queue {other}"),
        }
    }

    fn activated(&mut self, ops: &mut EventOps) {
        let listener = self.muxer.listener_fd();
        if let Err(e) = self
            .common
            .watch(ops, listener, BACKEND_EVENT, listener_events())
        {
            log::error!("virtio-vsock: cannot watch the Unix listener: {e}");
        }
        // Work queued before activation was noticed.
        self.process_tx();
        self.process_rx();
        self.process_events();
    }

    fn process_event(&mut self, data: u32, events: EventSet, ops: &mut EventOps) {
        match data {
            BACKEND_EVENT => {
                if self.muxer.accept_host_connections() {
                    // Re-arming an edge-triggered fd reports it again
                    // while connections still wait.
                    let again = Events::with_data_raw(
                        self.muxer.listener_fd(),
                        BACKEND_EVENT,
                        listener_events(),
                    );
                    if let Err(e) = ops.modify(again) {
                        log::warn!("virtio-vsock: cannot re-arm the listener: {e:?}");
                    }
                }
            }
            TIMER_EVENT => {
                // Non-blocking: after a re-arm there may be nothing to read.
                let _ = self.timer.wait();
                self.timer_armed = None;
                self.muxer.expire();
                self.process_rx();
            }
            token => {
                self.muxer.on_fd_event(token, readiness(events));
                self.process_rx();
            }
        }
    }
}

impl MutEventSubscriber for Vsock {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        handle_event(self, events, ops);
        self.apply_fd_ops(ops);
        self.arm_timer();
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.common.init(ops);
        if let Err(e) = ops.add(Events::with_data(&self.timer, TIMER_EVENT, EventSet::IN)) {
            log::error!("virtio-vsock: cannot watch the timer: {e:?}");
        }
    }
}

#[cfg(test)]
#[path = "event_handler_tests.rs"]
mod tests;
