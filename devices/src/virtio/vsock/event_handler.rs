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
use crate::virtio::state::{BACKEND_EVENT, STATE_EVENT};

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
    /// Consumes the notification of queue `index`.
    fn consume_queue_event(&mut self, index: usize) {
        if let Some(a) = self.state.active() {
            let _ = a.queue_evts[index].read();
        }
    }

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

impl MutEventSubscriber for Vsock {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            STATE_EVENT => {
                let listener = (self.muxer.listener_fd(), listener_events());
                if self.state.sync(ops, Some(listener)) {
                    // Work queued before activation was noticed.
                    self.process_tx();
                    self.process_rx();
                    self.process_events();
                }
            }
            // The driver posted receive buffers (or a pass rescheduled
            // itself).
            data if data == RX_QUEUE as u32 => {
                self.consume_queue_event(RX_QUEUE);
                self.process_rx();
            }
            data if data == TX_QUEUE as u32 => {
                self.consume_queue_event(TX_QUEUE);
                self.process_tx();
                // Answers, credit updates, and data that credit unblocked.
                self.process_rx();
            }
            data if data == EVENT_QUEUE as u32 => {
                self.consume_queue_event(EVENT_QUEUE);
                self.process_events();
            }
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
                self.muxer.on_fd_event(token, readiness(events.event_set()));
                self.process_rx();
            }
        }
        self.apply_fd_ops(ops);
        self.arm_timer();
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.state.init(ops);
        if let Err(e) = ops.add(Events::with_data(&self.timer, TIMER_EVENT, EventSet::IN)) {
            log::error!("virtio-vsock: cannot watch the timer: {e:?}");
        }
    }
}

#[cfg(test)]
#[path = "event_handler_tests.rs"]
mod tests;
