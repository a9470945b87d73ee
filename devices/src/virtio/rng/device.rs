//! The entropy device model.

use std::io;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

use crate::virtio::queue::{drain, interrupt_if_wanted, log_this, next_to_serve, Chain};
use crate::virtio::{
    device_type, ChainError, IrqLine, VirtioCommon, VirtioDevice, VIRTIO_F_VERSION_1,
};

/// Size of the one request queue.
pub const RNG_QUEUE_SIZE: u16 = 256;
/// Most bytes given for one request: bounds the work one guest request can
/// cause.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Most requests served in one call, so that a driver that keeps refilling
/// the queue cannot hold the event loop.
const REQUEST_BUDGET: usize = 256;

/// Fills a buffer with random bytes.
pub type EntropySource = Box<dyn FnMut(&mut [u8]) -> io::Result<()> + Send>;

/// The host's `getrandom(2)`.
pub fn host_entropy(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

/// Where requests get their bytes: the source, buffers allocated once, and
/// counters for rate-limited logs.
pub struct Entropy {
    source: EntropySource,
    buf: Vec<u8>,
    /// The writable buffers of the request being served; a chain has at
    /// most [`RNG_QUEUE_SIZE`] descriptors, so this never grows.
    segments: Vec<(GuestAddress, usize)>,
    /// Chains returned empty: no writable bytes, indirect descriptors or
    /// buffers outside guest memory; and available-ring entries that name
    /// no chain.
    pub malformed: u64,
    /// Times the source failed.
    pub failures: u64,
}

impl Entropy {
    /// Requests served from `source`.
    pub fn new(source: EntropySource) -> Self {
        Entropy {
            source,
            buf: vec![0; MAX_REQUEST_BYTES],
            segments: Vec::with_capacity(usize::from(RNG_QUEUE_SIZE)),
            malformed: 0,
            failures: 0,
        }
    }
}

/// The virtio-rng device.
pub struct Rng {
    pub(super) common: VirtioCommon,
    entropy: Entropy,
}

impl Rng {
    /// An entropy device reading from the host's `getrandom`.
    pub fn new() -> io::Result<Self> {
        Self::with_source(Box::new(host_entropy))
    }

    /// An entropy device reading from `source` (tests use a fake). It has
    /// no configuration space (spec §5.4.4): reads return zeros.
    pub fn with_source(source: EntropySource) -> io::Result<Self> {
        Ok(Rng {
            common: VirtioCommon::new(
                "virtio-rng".to_string(),
                device_type::RNG,
                &[RNG_QUEUE_SIZE],
                1 << VIRTIO_F_VERSION_1,
                Vec::new(),
            )?,
            entropy: Entropy::new(source),
        })
    }

    /// What it has counted so far: `(malformed, failures)` as in
    /// [`Entropy`].
    pub fn counters(&self) -> (u64, u64) {
        (self.entropy.malformed, self.entropy.failures)
    }

    /// Serves pending requests, up to the budget; with more left, kicks
    /// its own queue event so that the event loop comes back to them after
    /// other work.
    pub(super) fn process(&mut self) {
        let entropy = &mut self.entropy;
        self.common.run_pass(0, |queue, mem, irq| {
            process_requestq(queue, mem, entropy, irq)
        });
    }
}

/// Fills pending requests' writable buffers from the entropy source, up to
/// [`REQUEST_BUDGET`], and returns them to the driver, interrupting when
/// the driver wants to know. Returns true when it stopped at its budget
/// with requests possibly left: the caller must call again later.
///
/// A chain with no writable bytes is malformed and returned empty. When the
/// source fails, the request stays in the queue and the pass ends: it is
/// retried on the next notification rather than answered with nothing
/// (spec §5.4.7.2), which would only make the driver ask again at once.
pub fn process_requestq<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    entropy: &mut Entropy,
    irq: &IrqLine,
) -> Result<bool, virtio_queue::Error> {
    let mut used_any = false;
    let result = drain(queue, mem, |queue| {
        serve_batch(queue, mem, entropy, &mut used_any)
    });
    interrupt_if_wanted(queue, mem, irq, used_any, "virtio-rng")?;
    result
}

/// The loop of [`process_requestq`]: sets `used_any` when a request was
/// returned, and says whether the budget ran out.
fn serve_batch<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    entropy: &mut Entropy,
    used_any: &mut bool,
) -> Result<bool, virtio_queue::Error> {
    let mut served = 0;
    while let Some(chain) = next_to_serve(
        queue,
        mem,
        usize::from(RNG_QUEUE_SIZE),
        &mut entropy.malformed,
        "virtio-rng",
    )? {
        let head = chain.head_index();
        let written = match writable_buffers(chain, mem, &mut entropy.segments) {
            Ok(available) => {
                let len = available.min(MAX_REQUEST_BYTES);
                if let Err(e) = (entropy.source)(&mut entropy.buf[..len]) {
                    if log_this(&mut entropy.failures) {
                        log::warn!(
                            "virtio-rng: host entropy source failed: {e} ({} times)",
                            entropy.failures
                        );
                    }
                    // Give the chain back to the queue, untouched.
                    queue.set_next_avail(queue.next_avail().wrapping_sub(1));
                    return Ok(false);
                }
                scatter(mem, &entropy.segments, &entropy.buf[..len])
            }
            Err(e) => {
                malformed(entropy, &e);
                0
            }
        };
        // `written` ≤ MAX_REQUEST_BYTES fits a u32.
        queue.add_used(mem, head, written as u32)?;
        *used_any = true;
        served += 1;
        if served == REQUEST_BUDGET {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Why a request was returned empty.
#[derive(Debug, thiserror::Error)]
enum BadRequest {
    #[error("it has no writable bytes")]
    NothingWritable,
    #[error("a buffer lies outside guest memory")]
    OutsideMemory,
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// Records the non-empty device-writable buffers of `chain` in `segments`
/// (device-readable ones are passed over) and returns their size.
fn writable_buffers<M: GuestMemory>(
    chain: Chain<'_, M>,
    mem: &M,
    segments: &mut Vec<(GuestAddress, usize)>,
) -> Result<usize, BadRequest> {
    segments.clear();
    let mut total = 0usize;
    for desc in chain {
        let desc = desc?;
        let len = desc.len() as usize;
        if !desc.is_write_only() || len == 0 {
            continue;
        }
        if !mem.check_range(desc.addr(), len, Permissions::Write) {
            return Err(BadRequest::OutsideMemory);
        }
        segments.push((desc.addr(), len));
        // The chain holds less than 4 GiB.
        total += len;
    }
    if total == 0 {
        return Err(BadRequest::NothingWritable);
    }
    Ok(total)
}

/// Writes `bytes` over `segments` in order; returns how many were written.
fn scatter<M: GuestMemory>(mem: &M, segments: &[(GuestAddress, usize)], bytes: &[u8]) -> usize {
    let mut done = 0;
    for &(addr, len) in segments {
        let n = len.min(bytes.len() - done);
        if n == 0 {
            break;
        }
        if let Err(e) = mem.write_slice(&bytes[done..done + n], addr) {
            // Cannot happen: the range was checked and guest memory does
            // not change under a running device.
            log::warn!("virtio-rng: cannot write a request's buffer: {e}");
            break;
        }
        done += n;
    }
    done
}

/// Counts a request returned empty as malformed, and logs it now and then.
fn malformed(entropy: &mut Entropy, why: &dyn std::fmt::Display) {
    if log_this(&mut entropy.malformed) {
        log::warn!(
            "virtio-rng: returned a malformed request empty: {why} ({} so far)",
            entropy.malformed
        );
    }
}

impl VirtioDevice for Rng {
    fn common(&self) -> &VirtioCommon {
        &self.common
    }

    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::{Activation, INT_VRING};
    use virtio_queue::desc::{split::Descriptor as RawDescriptor, RawDescriptor as Raw};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    const WRITE: u16 = 2;
    /// Descriptor flag: the buffer is a table of descriptors.
    const INDIRECT: u16 = 4;

    fn counting_source() -> EntropySource {
        let mut n = 0u8;
        Box::new(move |buf: &mut [u8]| {
            for b in buf {
                n = n.wrapping_add(1);
                *b = n;
            }
            Ok(())
        })
    }

    #[test]
    fn fills_writable_buffers_and_interrupts() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let descs = [
            Raw::from(RawDescriptor::new(0x8000, 16, WRITE, 0)),
            Raw::from(RawDescriptor::new(0x9000, 4, WRITE, 0)),
        ];
        vq.add_desc_chains(&descs, 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut src = Entropy::new(counting_source());
        assert!(!process_requestq(&mut q, &mem, &mut src, &irq).unwrap());
        assert_eq!(vq.used().idx().load(), 2);
        let used0 = vq.used().ring().ref_at(0).unwrap().load();
        assert_eq!(used0.len(), 16);
        let mut got = [0u8; 16];
        mem.read_slice(&mut got, GuestAddress(0x8000)).unwrap();
        assert_eq!(got, std::array::from_fn::<u8, 16, _>(|i| i as u8 + 1));
        assert_eq!(vq.used().ring().ref_at(1).unwrap().load().len(), 4);
        assert_eq!(irq.status(), INT_VRING);
    }

    #[test]
    fn a_chain_without_writable_bytes_is_returned_empty_and_counted() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let descs = [
            Raw::from(RawDescriptor::new(0x8000, 16, 0, 0)),
            Raw::from(RawDescriptor::new(0x9000, 8, WRITE, 0)),
        ];
        vq.add_desc_chains(&descs, 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = calls.clone();
        let mut src = Entropy::new(Box::new(move |buf: &mut [u8]| {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            buf.fill(7);
            Ok(())
        }));
        process_requestq(&mut q, &mem, &mut src, &irq).unwrap();
        assert_eq!(vq.used().idx().load(), 2);
        assert_eq!(vq.used().ring().ref_at(0).unwrap().load().len(), 0);
        assert_eq!(vq.used().ring().ref_at(1).unwrap().load().len(), 8);
        assert_eq!(src.malformed, 1);
        // The source is not asked for nothing.
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    #[test]
    fn a_failing_source_leaves_the_request_queued_and_ends_the_pass() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let descs = [
            Raw::from(RawDescriptor::new(0x8000, 16, WRITE, 0)),
            Raw::from(RawDescriptor::new(0x9000, 8, WRITE, 0)),
        ];
        vq.add_desc_chains(&descs, 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut failing =
            Entropy::new(Box::new(|_: &mut [u8]| Err(io::Error::other("no entropy"))));
        assert!(!process_requestq(&mut q, &mem, &mut failing, &irq).unwrap());
        assert_eq!(failing.failures, 1, "one try per pass");
        assert_eq!(vq.used().idx().load(), 0);
        assert_eq!(q.next_avail(), 0, "the request is still queued");
        assert_eq!(irq.status(), 0);
        // Once the source works again, both are served.
        let mut src = Entropy::new(counting_source());
        process_requestq(&mut q, &mem, &mut src, &irq).unwrap();
        assert_eq!(vq.used().idx().load(), 2);
        assert_eq!(vq.used().ring().ref_at(0).unwrap().load().len(), 16);
    }

    #[test]
    fn a_pass_serves_at_most_the_budget() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 512);
        let descs = [Raw::from(RawDescriptor::new(0x8000, 16, WRITE, 0))];
        vq.add_desc_chains(&descs, 0).unwrap();
        // The same chain, made available again and again.
        let n = REQUEST_BUDGET as u16 + 10;
        for i in 0..n {
            vq.avail().ring().ref_at(usize::from(i)).unwrap().store(0);
        }
        vq.avail().idx().store(n);
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut src = Entropy::new(counting_source());
        assert!(process_requestq(&mut q, &mem, &mut src, &irq).unwrap());
        assert_eq!(usize::from(vq.used().idx().load()), REQUEST_BUDGET);
        assert!(!process_requestq(&mut q, &mem, &mut src, &irq).unwrap());
        assert_eq!(vq.used().idx().load(), n);
    }

    #[test]
    fn no_interrupt_when_the_driver_asks_for_none() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let descs = [Raw::from(RawDescriptor::new(0x8000, 16, WRITE, 0))];
        vq.add_desc_chains(&descs, 0).unwrap();
        // VRING_AVAIL_F_NO_INTERRUPT (spec §2.7.7).
        mem.write_obj(1u16.to_le(), vq.avail_addr()).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut src = Entropy::new(counting_source());
        process_requestq(&mut q, &mem, &mut src, &irq).unwrap();
        assert_eq!(vq.used().idx().load(), 1);
        assert_eq!(irq.status(), 0);
    }

    #[test]
    fn descriptors_outside_memory_are_answered_not_fatal() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let descs = [Raw::from(RawDescriptor::new(0x4000_0000, 64, WRITE, 0))];
        vq.add_desc_chains(&descs, 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut src = Entropy::new(counting_source());
        process_requestq(&mut q, &mem, &mut src, &irq).unwrap();
        assert_eq!(src.malformed, 1);
        assert_eq!(vq.used().idx().load(), 1);
        assert_eq!(vq.used().ring().ref_at(0).unwrap().load().len(), 0);
    }

    #[test]
    fn a_head_index_past_the_queue_is_counted_and_skipped() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        // An entry naming descriptor 16 of a 16-entry table, then a request.
        vq.avail().ring().ref_at(0).unwrap().store(16);
        vq.avail().idx().store(1);
        let descs = [Raw::from(RawDescriptor::new(0x8000, 16, WRITE, 0))];
        vq.add_desc_chains(&descs, 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut src = Entropy::new(counting_source());
        assert!(!process_requestq(&mut q, &mem, &mut src, &irq).unwrap());
        assert_eq!(vq.used().idx().load(), 1);
        let used = vq.used().ring().ref_at(0).unwrap().load();
        assert_eq!((used.id(), used.len()), (0, 16));
        let flags: u16 = mem.read_obj(vq.used_addr()).unwrap();
        assert_eq!(u16::from_le(flags), 0, "the driver may notify again");
        assert_eq!(src.malformed, 1);
        assert_eq!(irq.status(), INT_VRING);
    }

    #[test]
    fn chains_with_an_indirect_descriptor_are_returned_empty() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        // A table of one writable buffer: the device never offered
        // VIRTIO_F_INDIRECT_DESC.
        let table = Raw::from(RawDescriptor::new(0x8000, 16, WRITE, 0));
        mem.write_obj(table, GuestAddress(0x7000)).unwrap();
        let descs = [
            Raw::from(RawDescriptor::new(0x7000, 16, INDIRECT, 0)),
            Raw::from(RawDescriptor::new(0x9000, 8, WRITE, 0)),
        ];
        vq.add_desc_chains(&descs, 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut src = Entropy::new(counting_source());
        process_requestq(&mut q, &mem, &mut src, &irq).unwrap();
        assert_eq!(vq.used().idx().load(), 2);
        assert_eq!(vq.used().ring().ref_at(0).unwrap().load().len(), 0);
        assert_eq!(vq.used().ring().ref_at(1).unwrap().load().len(), 8);
        assert_eq!(src.malformed, 1);
        let mut got = [0xffu8; 16];
        mem.read_slice(&mut got, GuestAddress(0x8000)).unwrap();
        assert_eq!(got, [0; 16], "nothing went into the table's buffer");
    }

    #[test]
    fn a_chain_longer_than_the_queue_is_returned_empty() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        // A ring larger than the device's, so that a chain can exceed the
        // cap without looping.
        let vq = MockSplitQueue::new(&mem, 512);
        let n = usize::from(RNG_QUEUE_SIZE) + 1;
        let descs: Vec<Raw> = (0..n)
            .map(|i| {
                let (flags, next) = if i + 1 < n {
                    (WRITE | 1, i as u16 + 1)
                } else {
                    (WRITE, 0)
                };
                Raw::from(RawDescriptor::new(0x8000 + i as u64, 1, flags, next))
            })
            .collect();
        vq.add_desc_chains(&descs, 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut src = Entropy::new(counting_source());
        process_requestq(&mut q, &mem, &mut src, &irq).unwrap();
        assert_eq!(vq.used().idx().load(), 1);
        assert_eq!(vq.used().ring().ref_at(0).unwrap().load().len(), 0);
        assert_eq!(src.malformed, 1);
    }

    #[test]
    fn identity_features_and_an_empty_config_space() {
        let rng = Rng::with_source(counting_source()).unwrap();
        assert_eq!(rng.device_type(), 4);
        assert_eq!(rng.queue_max_sizes(), &[256]);
        assert_eq!(rng.avail_features(), 1 << 32);
        let mut b = [0xffu8; 4];
        rng.read_config(0, &mut b);
        assert_eq!(b, [0; 4]);
    }

    #[test]
    fn a_request_gets_at_most_64_kib_across_its_buffers() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        // 60 KiB, then 8 KiB of which only 4 KiB can be filled.
        let descs = [
            Raw::from(RawDescriptor::new(0x1_0000, 0xf000, WRITE | 1, 1)),
            Raw::from(RawDescriptor::new(0x2_0000, 0x2000, WRITE, 0)),
        ];
        vq.add_desc_chains(&descs, 0).unwrap();
        mem.write_slice(&[0xee; 0x2000], GuestAddress(0x2_0000))
            .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut src = Entropy::new(Box::new(|buf: &mut [u8]| {
            buf.fill(0x11);
            Ok(())
        }));
        process_requestq(&mut q, &mem, &mut src, &irq).unwrap();
        let used = vq.used().ring().ref_at(0).unwrap().load();
        assert_eq!(used.len(), 0x1_0000);
        let mut tail = vec![0u8; 0x2000];
        mem.read_slice(&mut tail, GuestAddress(0x2_0000)).unwrap();
        assert_eq!(tail[..0x1000], [0x11; 0x1000]);
        assert_eq!(tail[0x1000..], [0xee; 0x1000], "beyond 64 KiB: untouched");
    }

    #[test]
    fn the_device_serves_its_queue_once_active() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let descs = [Raw::from(RawDescriptor::new(0x8000, 16, WRITE, 0))];
        vq.add_desc_chains(&descs, 0).unwrap();
        let mut rng = Rng::with_source(counting_source()).unwrap();
        rng.process();
        assert_eq!(vq.used().idx().load(), 0, "not active yet");
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        rng.activate(Activation {
            mem: mem.clone(),
            queues: vec![vq.create_queue().unwrap()],
            queue_evts: vec![EventFd::new(EFD_NONBLOCK).unwrap()],
            irq: irq.clone(),
        })
        .unwrap();
        rng.process();
        assert_eq!(vq.used().idx().load(), 1);
        assert_eq!(irq.status(), INT_VRING);
    }

    #[test]
    fn host_entropy_is_not_constant() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        host_entropy(&mut a).unwrap();
        host_entropy(&mut b).unwrap();
        assert_ne!(a, b);
    }
}
