//! Taking chains off a split virtqueue (spec §2.7), the same way in every
//! device: entries that name no chain are skipped and counted, every
//! descriptor is read once and checked as it is read, and a pass never
//! ends with the driver told not to notify unless the device comes back by
//! itself.

use std::mem::size_of;
use std::sync::atomic::{fence, Ordering};

use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

use super::guest_mem::read_obj_guest;
use super::{IrqLine, INT_VRING};

/// Counts one more occurrence of something a guest caused and says whether
/// to log it: the 1st, 2nd, 4th, 8th… time, so that a misbehaving guest
/// cannot flood the host's log.
pub(crate) fn log_this(counter: &mut u64) -> bool {
    *counter += 1;
    counter.is_power_of_two()
}

/// Acts on the result of a bounded pass over a queue: a pass that stopped
/// at its budget kicks the queue's own event, so the event loop comes back
/// to it after other work; a broken ring is logged, rate-limited through
/// `errors`. `device` names the device and queue, and is only built when
/// something is logged.
pub(crate) fn finish_pass(
    result: Result<bool, virtio_queue::Error>,
    queue_evt: &vmm_sys_util::eventfd::EventFd,
    errors: &mut u64,
    device: impl FnOnce() -> String,
) {
    match result {
        Ok(false) => {}
        Ok(true) => {
            if let Err(e) = queue_evt.write(1) {
                log::warn!("{}: cannot reschedule the queue: {e}", device());
            }
        }
        Err(e) => {
            if log_this(errors) {
                log::warn!("{}: {e}", device());
            }
        }
    }
}

/// Whether the driver wants an interrupt for the chains just used. With
/// VIRTIO_F_EVENT_IDX that is `Queue::needs_notification`; without it the
/// driver may set VRING_AVAIL_F_NO_INTERRUPT in the available ring's
/// `flags` (spec §2.7.7), which virtio-queue 0.18 does not look at.
pub(crate) fn should_interrupt<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
) -> Result<bool, virtio_queue::Error> {
    if queue.event_idx_enabled() {
        return queue.needs_notification(mem);
    }
    // The used ring writes must be visible before the driver's flags are
    // read (spec §2.7.7.1), as `needs_notification` does.
    fence(Ordering::SeqCst);
    // `flags` is the available ring's first field.
    let flags: u16 = mem
        .load(GuestAddress(queue.avail_ring()), Ordering::Acquire)
        .map_err(virtio_queue::Error::GuestMemory)?;
    Ok(u32::from(u16::from_le(flags)) & VRING_AVAIL_F_NO_INTERRUPT == 0)
}

/// Why a descriptor chain was refused part-way. The rest of the chain is
/// not read, so where it ends (and, for a block request, where its status
/// byte lies) is not known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// An indirect descriptor: no device offers VIRTIO_F_INDIRECT_DESC, so
    /// the driver must not use them (spec §2.7.5.3.1). Following one would
    /// let a chain hold up to 65535 descriptors.
    #[error("descriptor {index} refers to an indirect table (VIRTIO_F_INDIRECT_DESC was not negotiated)")]
    Indirect {
        /// Its index in the descriptor table.
        index: u16,
    },
    /// More descriptors than the device takes in one chain (or than the
    /// queue has: the chain loops).
    #[error("it has more than {max} descriptors")]
    TooLong {
        /// The most the device takes.
        max: usize,
    },
    /// A `next` field past the descriptor table.
    #[error("descriptor {index} links to descriptor {next}, past the {size}-entry table")]
    NextOutOfRange {
        /// The descriptor with the bad link.
        index: u16,
        /// Where it links to.
        next: u16,
        /// The queue size.
        size: u16,
    },
    /// The descriptor table is not in guest memory (the transport checked
    /// it was at activation; a driver cannot move it since).
    #[error("cannot read descriptor {index}")]
    ReadDescriptor {
        /// Its index in the descriptor table.
        index: u16,
    },
    /// The buffers add up to 4 GiB or more (spec §2.7.5.2: drivers MUST
    /// NOT).
    #[error("its buffers add up to 4 GiB or more")]
    TooManyBytes,
}

/// The descriptors of one chain, read one at a time from the queue's
/// table. Unlike virtio-queue's `DescriptorChain`, which follows indirect
/// tables without a word and ends a bad chain as if it were complete, it
/// yields an error where the chain goes wrong, and nothing after it.
pub(crate) struct Chain<'a, M> {
    mem: &'a M,
    desc_table: GuestAddress,
    size: u16,
    head: u16,
    /// The descriptor to read next, with the one that linked to it.
    next: Option<(u16, Option<u16>)>,
    /// Descriptors read so far, and the most the chain may have.
    read: usize,
    max: usize,
    /// Bytes in the descriptors read so far.
    bytes: u32,
}

impl<'a, M: GuestMemory> Chain<'a, M> {
    /// The chain starting at `head` (below `size`) in the table at
    /// `desc_table`, of at most `max` descriptors (and never more than the
    /// queue has).
    fn new(mem: &'a M, desc_table: GuestAddress, size: u16, head: u16, max: usize) -> Self {
        Chain {
            mem,
            desc_table,
            size,
            head,
            next: Some((head, None)),
            read: 0,
            max: max.min(usize::from(size)),
            bytes: 0,
        }
    }

    /// The index of the chain's first descriptor, by which it is returned.
    pub(crate) fn head_index(&self) -> u16 {
        self.head
    }

    fn read(&mut self, index: u16, from: Option<u16>) -> Result<Descriptor, ChainError> {
        if self.read == self.max {
            return Err(ChainError::TooLong { max: self.max });
        }
        if index >= self.size {
            return Err(ChainError::NextOutOfRange {
                // Only a link can be out of range: `take` checked the head.
                index: from.unwrap_or(index),
                next: index,
                size: self.size,
            });
        }
        // `index` < 2^16 descriptors of 16 bytes: no overflow before the
        // checked add.
        let desc: Descriptor = self
            .desc_table
            .checked_add(u64::from(index) * size_of::<Descriptor>() as u64)
            .and_then(|addr| read_obj_guest(self.mem, addr).ok())
            .ok_or(ChainError::ReadDescriptor { index })?;
        if desc.refers_to_indirect_table() {
            return Err(ChainError::Indirect { index });
        }
        self.bytes = self
            .bytes
            .checked_add(desc.len())
            .ok_or(ChainError::TooManyBytes)?;
        self.read += 1;
        if desc.has_next() {
            self.next = Some((desc.next(), Some(index)));
        }
        Ok(desc)
    }
}

impl<M: GuestMemory> Iterator for Chain<'_, M> {
    type Item = Result<Descriptor, ChainError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (index, from) = self.next.take()?;
        Some(self.read(index, from))
    }
}

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

/// Takes the next entry the driver made available, as a chain of at most
/// `max` descriptors; `None` when there is none. Fails only when the
/// available ring is broken (its index claims more new entries than the
/// queue holds).
pub(crate) fn take<'a, M: GuestMemory>(
    queue: &mut Queue,
    mem: &'a M,
    max: usize,
) -> Result<Option<Avail<Chain<'a, M>>>, virtio_queue::Error> {
    // As virtio-queue's `iter().next()` does, without building its chain:
    // the index, then the entry it covers.
    if !queue.ready() || queue.avail_ring() == 0 {
        return Err(virtio_queue::Error::QueueNotReady);
    }
    let next = queue.next_avail();
    let pending = queue
        .avail_idx(mem, Ordering::Acquire)?
        .0
        .wrapping_sub(next);
    // A driver never offers an entry twice: more new entries than the
    // queue holds is a broken ring.
    if pending > queue.size() {
        return Err(virtio_queue::Error::InvalidAvailRingIndex);
    }
    let Some(slot) = next.checked_rem(queue.size()).filter(|_| pending > 0) else {
        return Ok(None);
    };
    // The ring's header (flags, idx) is 4 bytes, each entry 2. The entry
    // is read after the index (its load above is Acquire).
    let entry = GuestAddress(queue.avail_ring())
        .checked_add(4 + 2 * u64::from(slot))
        .and_then(|addr| read_obj_guest::<u16, _>(mem, addr).ok());
    let Some(head) = entry.map(u16::from_le) else {
        return Ok(None);
    };
    queue.set_next_avail(next.wrapping_add(1));
    if head >= queue.size() {
        return Ok(Some(Avail::BadHead(head)));
    }
    let table = GuestAddress(queue.desc_table());
    Ok(Some(Avail::Chain(Chain::new(
        mem,
        table,
        queue.size(),
        head,
        max,
    ))))
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

/// The next chain, of at most `max` descriptors, of a draining pass, which
/// runs with notifications disabled: entries that name no chain are
/// skipped ([`skip_bad_head`], counted in `malformed`).
/// At the end of the ring, notifications are enabled again and the ring
/// looked at once more, as the driver may have posted a chain without
/// notifying in between. `None`: the ring is empty and notifications are
/// on.
///
/// A ring whose index goes back and forth under the device fails with
/// `InvalidAvailRingIndex` instead of being looked at again and again: a
/// driver can lay its used ring over its available ring, so that the
/// device's own writes of the used ring's flags move the available
/// index, and "empty" and "not empty" would then alternate for ever,
/// holding the event loop.
pub(crate) fn next_to_serve<'a, M: GuestMemory>(
    queue: &mut Queue,
    mem: &'a M,
    max: usize,
    malformed: &mut u64,
    device: &str,
) -> Result<Option<Chain<'a, M>>, virtio_queue::Error> {
    // Where the device was in the ring when it last looked again.
    let mut looked_again_at = None;
    loop {
        match take(queue, mem, max)? {
            Some(Avail::Chain(chain)) => return Ok(Some(chain)),
            Some(Avail::BadHead(head)) => skip_bad_head(malformed, head, queue, device),
            None => {
                if !queue.enable_notification(mem)? {
                    return Ok(None);
                }
                // A driver that posted between the two looks is found by the
                // next `take`; finding nothing again, at the same place,
                // means the index moved back.
                if looked_again_at == Some(queue.next_avail()) {
                    return Err(virtio_queue::Error::InvalidAvailRingIndex);
                }
                looked_again_at = Some(queue.next_avail());
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

    const NEXT: u16 = 1;
    const WRITE: u16 = 2;
    const INDIRECT: u16 = 4;

    /// Stores `(addr, len, flags, next)` descriptors at index 0 onwards.
    fn table(vq: &MockSplitQueue<GuestMemoryMmap>, descs: &[(u64, u32, u16, u16)]) {
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            let d = RawDescriptor::from(Descriptor::new(addr, len, flags, next));
            vq.desc_table().store(i as u16, d).unwrap();
        }
    }

    /// The chain at `head` of `vq`'s table, of at most `max` descriptors.
    fn walk(
        m: &GuestMemoryMmap,
        vq: &MockSplitQueue<GuestMemoryMmap>,
        head: u16,
        max: usize,
    ) -> Vec<Result<(u64, u32, u16), ChainError>> {
        Chain::new(m, vq.desc_table_addr(), 16, head, max)
            .map(|d| d.map(|d| (d.addr().0, d.len(), d.flags())))
            .collect()
    }

    #[test]
    fn a_chain_yields_its_descriptors_in_link_order() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        table(
            &vq,
            &[(0x1000, 16, NEXT, 2), (0, 0, 0, 0), (0x2000, 8, WRITE, 0)],
        );
        assert_eq!(
            walk(&m, &vq, 0, 16),
            [Ok((0x1000, 16, NEXT)), Ok((0x2000, 8, WRITE))]
        );
        assert_eq!(
            Chain::new(&m, vq.desc_table_addr(), 16, 2, 16).head_index(),
            2
        );
    }

    #[test]
    fn an_indirect_descriptor_ends_the_chain_with_an_error() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        // A table at 0x8000 holding a valid descriptor: never followed.
        let inner = RawDescriptor::from(Descriptor::new(0x3000, 8, WRITE, 0));
        m.write_obj(inner, GuestAddress(0x8000)).unwrap();
        table(
            &vq,
            &[
                (0x8000, 16, INDIRECT, 0),
                (0x1000, 16, NEXT, 2),
                (0x8000, 16, INDIRECT | NEXT, 0),
            ],
        );
        assert_eq!(
            walk(&m, &vq, 0, 16),
            [Err(ChainError::Indirect { index: 0 })]
        );
        assert_eq!(
            walk(&m, &vq, 1, 16),
            [
                Ok((0x1000, 16, NEXT)),
                Err(ChainError::Indirect { index: 2 })
            ]
        );
    }

    #[test]
    fn a_chain_longer_than_its_cap_or_the_queue_ends_with_an_error() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        // 0 -> 1 -> 2 -> 3.
        table(
            &vq,
            &[
                (0x1000, 1, NEXT, 1),
                (0x1000, 1, NEXT, 2),
                (0x1000, 1, NEXT, 3),
                (0x1000, 1, 0, 0),
            ],
        );
        assert_eq!(walk(&m, &vq, 0, 4).len(), 4);
        assert!(walk(&m, &vq, 0, 4).iter().all(Result::is_ok));
        let capped = walk(&m, &vq, 0, 3);
        assert_eq!(capped.len(), 4);
        assert_eq!(capped[3], Err(ChainError::TooLong { max: 3 }));
        // A loop stops at the queue size, whatever the cap.
        table(&vq, &[(0x1000, 1, NEXT, 0)]);
        let looped = walk(&m, &vq, 0, 1000);
        assert_eq!(looped.len(), 17);
        assert_eq!(looped[16], Err(ChainError::TooLong { max: 16 }));
    }

    #[test]
    fn bad_links_unreadable_tables_and_4_gib_end_the_chain_with_an_error() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        table(&vq, &[(0x1000, 1, NEXT, 16)]);
        assert_eq!(
            walk(&m, &vq, 0, 16)[1],
            Err(ChainError::NextOutOfRange {
                index: 0,
                next: 16,
                size: 16
            })
        );
        table(&vq, &[(0x1000, u32::MAX, NEXT, 1), (0x1000, 1, 0, 0)]);
        assert_eq!(walk(&m, &vq, 0, 16)[1], Err(ChainError::TooManyBytes));
        let outside = Chain::new(&m, GuestAddress(0x10_0000), 16, 3, 16);
        assert_eq!(
            outside.map(|d| d.map(|d| d.len())).collect::<Vec<_>>(),
            [Err(ChainError::ReadDescriptor { index: 3 })]
        );
    }

    #[test]
    fn heads_past_the_queue_are_told_apart_from_chains() {
        let m = mem();
        let vq = queue_with(&m, &[15, 16, 0xffff]);
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(matches!(take(&mut q, &m, 16), Ok(Some(Avail::Chain(c))) if c.head_index() == 15));
        assert!(matches!(take(&mut q, &m, 16), Ok(Some(Avail::BadHead(16)))));
        assert!(matches!(
            take(&mut q, &m, 16),
            Ok(Some(Avail::BadHead(0xffff)))
        ));
        assert!(matches!(take(&mut q, &m, 16), Ok(None)));
    }

    #[test]
    fn next_to_serve_skips_and_counts_bad_heads_and_ends_with_notifications_on() {
        let m = mem();
        let vq = queue_with(&m, &[16, 3, 20, 21]);
        let mut q: Queue = vq.create_queue().unwrap();
        q.disable_notification(&m).unwrap();
        let mut bad = 0;
        let chain = next_to_serve(&mut q, &m, 16, &mut bad, "test").unwrap();
        assert_eq!(chain.map(|c| c.head_index()), Some(3));
        assert_eq!(bad, 1);
        assert_eq!(used_flags(&m, &vq), 1, "still draining");
        assert!(next_to_serve(&mut q, &m, 16, &mut bad, "test")
            .unwrap()
            .is_none());
        assert_eq!(bad, 3);
        assert_eq!(used_flags(&m, &vq), 0);
    }

    /// Found by the `block_requestq` fuzz target: the used ring's flags
    /// lie on the available ring's index, so disabling notifications
    /// makes one entry available and enabling them takes it away again.
    #[test]
    fn an_available_index_that_the_device_itself_moves_back_ends_the_pass() {
        let m = mem();
        let mut q = Queue::new(16).unwrap();
        q.try_set_size(1).unwrap();
        q.try_set_desc_table_address(GuestAddress(0x1000)).unwrap();
        // avail: flags at 0x2002, idx at 0x2004; used: flags at 0x2004.
        q.try_set_avail_ring_address(GuestAddress(0x2002)).unwrap();
        q.try_set_used_ring_address(GuestAddress(0x2004)).unwrap();
        q.set_ready(true);
        assert!(q.is_valid(&m));
        // One chain was served already: the device is at entry 1.
        q.set_next_avail(1);
        let mut bad = 0;
        q.disable_notification(&m).unwrap();
        assert!(matches!(
            next_to_serve(&mut q, &m, 16, &mut bad, "test"),
            Err(virtio_queue::Error::InvalidAvailRingIndex)
        ));
        assert_eq!(bad, 0);
        // A driver that posts between the device's two looks is served.
        let vq = queue_with(&m, &[]);
        let mut q: Queue = vq.create_queue().unwrap();
        q.disable_notification(&m).unwrap();
        assert!(next_to_serve(&mut q, &m, 16, &mut bad, "test")
            .unwrap()
            .is_none());
        vq.avail().ring().ref_at(0).unwrap().store(2);
        vq.avail().idx().store(1);
        q.disable_notification(&m).unwrap();
        let chain = next_to_serve(&mut q, &m, 16, &mut bad, "test").unwrap();
        assert_eq!(chain.map(|c| c.head_index()), Some(2));
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

    #[test]
    fn no_interrupt_flag_suppresses_interrupts_without_event_idx() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(should_interrupt(&mut q, &mem).unwrap());
        mem.write_obj(1u16.to_le(), vq.avail_addr()).unwrap();
        assert!(!should_interrupt(&mut q, &mem).unwrap());
        mem.write_obj(0u16, vq.avail_addr()).unwrap();
        assert!(should_interrupt(&mut q, &mem).unwrap());
    }
}
