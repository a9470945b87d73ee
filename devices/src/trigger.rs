//! An `EventFd` that devices can raise, as an interrupt line or a signal to
//! the VMM thread.

use std::io;
use std::ops::Deref;

use vmm_sys_util::eventfd::EventFd;

/// An [`EventFd`] implementing [`vm_superio::Trigger`]: writing 1 to it
/// raises an irqfd-backed interrupt or wakes the VMM's event loop.
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    /// Wraps `evt`.
    pub fn new(evt: EventFd) -> Self {
        EventFdTrigger(evt)
    }

    /// A second trigger on the same underlying event.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(EventFdTrigger(self.0.try_clone()?))
    }
}

impl vm_superio::Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

impl Deref for EventFdTrigger {
    type Target = EventFd;

    fn deref(&self) -> &EventFd {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_superio::Trigger;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn trigger_writes_the_eventfd() {
        let t = EventFdTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let c = t.try_clone().unwrap();
        c.trigger().unwrap();
        t.trigger().unwrap();
        assert_eq!(t.read().unwrap(), 2);
    }
}
