//! Taking chains off a split virtqueue (spec §2.7), the same way in every
//! device: entries that name no chain are skipped and counted, and a pass
//! never ends with the driver told not to notify unless the device comes
//! back by itself.

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemory;

use super::{log_this, should_interrupt, IrqLine, INT_VRING};

/// One entry of the available ring.
pub(crate) enum Avail<C> {
    /// A chain to serve.
    Chain(C),
    /// A head index past the queue size: the entry names no chain, so there
    /// is nothing to serve and nothing to return. virtio-queue 0.18 hands
    /// such a head out as a chain that yields no descriptor, and its
    /// `add_used` refuses it.
    BadHead(u16),
}

/// Takes the next entry the driver made available; `None` when there is
/// none. Fails only when the available ring is broken (its index claims
/// more new entries than the queue holds).
pub(crate) fn take<'a, M: GuestMemory>(
    queue: &mut Queue,
    mem: &'a M,
) -> Result<Option<Avail<DescriptorChain<&'a M>>>, virtio_queue::Error> {
    let Some(chain) = queue.iter(mem)?.next() else {
        return Ok(None);
    };
    let head = chain.head_index();
    if head >= queue.size() {
        return Ok(Some(Avail::BadHead(head)));
    }
    Ok(Some(Avail::Chain(chain)))
}

/// Counts an entry whose head index `head` lies past the queue (in
/// `counter`, the device's count of malformed chains) and logs it now and
/// then. `device` names the device and queue.
pub(crate) fn skip_bad_head(counter: &mut u64, head: u16, queue: &Queue, device: &str) {
    if log_this(counter) {
        log::warn!(
            "{device}: skipped an available-ring entry naming descriptor {head} of a {}-entry \
             queue ({counter} malformed so far)",
            queue.size()
        );
    }
}

/// The next chain of a draining pass, which runs with notifications
/// disabled: entries that name no chain are skipped ([`skip_bad_head`]).
/// At the end of the ring, notifications are enabled again and the ring
/// looked at once more, as the driver may have posted a chain without
/// notifying in between. `None`: the ring is empty and notifications are
/// on.
pub(crate) fn next_to_serve<'a, M: GuestMemory>(
    queue: &mut Queue,
    mem: &'a M,
    malformed: &mut u64,
    device: &str,
) -> Result<Option<DescriptorChain<&'a M>>, virtio_queue::Error> {
    loop {
        match take(queue, mem)? {
            Some(Avail::Chain(chain)) => return Ok(Some(chain)),
            Some(Avail::BadHead(head)) => skip_bad_head(malformed, head, queue, device),
            None => {
                if !queue.enable_notification(mem)? {
                    return Ok(None);
                }
                queue.disable_notification(mem)?;
            }
        }
    }
}

/// Runs `batch`, one bounded pass of a device over `queue` that serves
/// chains taken with [`next_to_serve`] and says whether it stopped at its
/// budget. Notifications are disabled while it drains the ring (the driver
/// need not notify then) and are on again afterwards however `batch`
/// ended — at its budget excepted, where the device comes back by itself —
/// so that a pass cut short by a broken ring never leaves the driver
/// unable to notify.
pub(crate) fn drain<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    batch: impl FnOnce(&mut Queue) -> Result<bool, virtio_queue::Error>,
) -> Result<bool, virtio_queue::Error> {
    let result = queue.disable_notification(mem).and_then(|()| batch(queue));
    if !matches!(result, Ok(true)) {
        // After a failure the ring may come right; after a normal end this
        // changes nothing (`next_to_serve` enabled them already).
        let _ = queue.enable_notification(mem);
    }
    result
}

/// Interrupts the guest once for a pass that returned chains (`used_any`)
/// when the driver wants it. `device` names the device for logs.
pub(crate) fn interrupt_if_wanted<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    irq: &IrqLine,
    used_any: bool,
    device: &str,
) -> Result<(), virtio_queue::Error> {
    if used_any && should_interrupt(queue, mem)? {
        if let Err(e) = irq.trigger(INT_VRING) {
            log::warn!("{device}: cannot interrupt the guest: {e}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    /// The used ring's `flags` (VRING_USED_F_NO_NOTIFY is 1).
    fn used_flags(mem: &GuestMemoryMmap, vq: &MockSplitQueue<GuestMemoryMmap>) -> u16 {
        u16::from_le(mem.read_obj(vq.used_addr()).unwrap())
    }

    /// A queue of 16 whose ring holds `heads`, each naming a one-descriptor
    /// chain when it is below 16.
    fn queue_with<'a>(
        mem: &'a GuestMemoryMmap,
        heads: &[u16],
    ) -> MockSplitQueue<'a, GuestMemoryMmap> {
        let vq = MockSplitQueue::new(mem, 16);
        for i in 0..16 {
            let d = RawDescriptor::from(Descriptor::new(0x8000, 16, 0, 0));
            vq.desc_table().store(i, d).unwrap();
        }
        for (i, &head) in heads.iter().enumerate() {
            vq.avail().ring().ref_at(i).unwrap().store(head);
        }
        vq.avail().idx().store(heads.len() as u16);
        vq
    }

    #[test]
    fn heads_past_the_queue_are_told_apart_from_chains() {
        let m = mem();
        let vq = queue_with(&m, &[15, 16, 0xffff]);
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(matches!(take(&mut q, &m), Ok(Some(Avail::Chain(c))) if c.head_index() == 15));
        assert!(matches!(take(&mut q, &m), Ok(Some(Avail::BadHead(16)))));
        assert!(matches!(take(&mut q, &m), Ok(Some(Avail::BadHead(0xffff)))));
        assert!(matches!(take(&mut q, &m), Ok(None)));
    }

    #[test]
    fn next_to_serve_skips_and_counts_bad_heads_and_ends_with_notifications_on() {
        let m = mem();
        let vq = queue_with(&m, &[16, 3, 20, 21]);
        let mut q: Queue = vq.create_queue().unwrap();
        q.disable_notification(&m).unwrap();
        let mut bad = 0;
        let chain = next_to_serve(&mut q, &m, &mut bad, "test").unwrap();
        assert_eq!(chain.map(|c| c.head_index()), Some(3));
        assert_eq!(bad, 1);
        assert_eq!(used_flags(&m, &vq), 1, "still draining");
        assert!(next_to_serve(&mut q, &m, &mut bad, "test")
            .unwrap()
            .is_none());
        assert_eq!(bad, 3);
        assert_eq!(used_flags(&m, &vq), 0);
    }

    #[test]
    fn drain_leaves_notifications_on_unless_the_budget_ran_out() {
        let m = mem();
        let vq = queue_with(&m, &[]);
        let mut q: Queue = vq.create_queue().unwrap();
        let mut flags_inside = None;
        let done = drain(&mut q, &m, |_| {
            flags_inside = Some(used_flags(&m, &vq));
            Err(virtio_queue::Error::InvalidAvailRingIndex)
        });
        assert!(done.is_err());
        assert_eq!(flags_inside, Some(1), "disabled while draining");
        assert_eq!(used_flags(&m, &vq), 0, "on again after a failure");
        assert!(!drain(&mut q, &m, |_| Ok(false)).unwrap());
        assert_eq!(used_flags(&m, &vq), 0);
        assert!(drain(&mut q, &m, |_| Ok(true)).unwrap());
        assert_eq!(used_flags(&m, &vq), 1, "the device comes back by itself");
    }

    #[test]
    fn interrupts_only_for_used_chains_the_driver_wants_to_hear_of() {
        let m = mem();
        let vq = queue_with(&m, &[]);
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        interrupt_if_wanted(&mut q, &m, &irq, false, "test").unwrap();
        assert_eq!(irq.status(), 0);
        // VRING_AVAIL_F_NO_INTERRUPT.
        m.write_obj(1u16.to_le(), vq.avail_addr()).unwrap();
        interrupt_if_wanted(&mut q, &m, &irq, true, "test").unwrap();
        assert_eq!(irq.status(), 0);
        m.write_obj(0u16, vq.avail_addr()).unwrap();
        interrupt_if_wanted(&mut q, &m, &irq, true, "test").unwrap();
        assert_eq!(irq.status(), INT_VRING);
    }
}
