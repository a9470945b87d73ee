//! The entropy device model.

use std::io::{self, Write};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemory;

use crate::virtio::state::DeviceState;
use crate::virtio::{
    device_type, ActivateError, Activation, IrqLine, VirtioDevice, INT_VRING, VIRTIO_F_VERSION_1,
};

/// Size of the one request queue.
pub const RNG_QUEUE_SIZE: u16 = 256;
/// Most bytes given for one request: bounds the work one guest request can
/// cause.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

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

/// The virtio-rng device.
pub struct Rng {
    pub(super) state: DeviceState,
    source: EntropySource,
    acked_features: u64,
}

impl Rng {
    /// An entropy device reading from the host's `getrandom`.
    pub fn new() -> io::Result<Self> {
        Self::with_source(Box::new(host_entropy))
    }

    /// An entropy device reading from `source` (tests use a fake).
    pub fn with_source(source: EntropySource) -> io::Result<Self> {
        Ok(Rng {
            state: DeviceState::new()?,
            source,
            acked_features: 0,
        })
    }

    /// Serves every pending request.
    pub(super) fn process(&mut self) {
        let Some(Activation {
            mem, queues, irq, ..
        }) = self.state.active()
        else {
            return;
        };
        if let Err(e) = process_requestq(&mut queues[0], mem, &mut self.source, irq) {
            log::warn!("virtio-rng: {e}");
        }
    }
}

/// Fills each pending request's writable buffers from `source` and returns
/// it to the driver, interrupting when the driver wants to know.
pub fn process_requestq<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    source: &mut EntropySource,
    irq: &IrqLine,
) -> Result<(), virtio_queue::Error> {
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut used_any = false;
    while let Some(chain) = queue.iter(mem)?.next() {
        let head = chain.head_index();
        let written = match chain.writer(mem) {
            Ok(mut writer) => {
                let len = writer.available_bytes().min(MAX_REQUEST_BYTES);
                match (source)(&mut buf[..len]) {
                    Ok(()) => writer.write(&buf[..len]).unwrap_or(0),
                    Err(e) => {
                        log::warn!("virtio-rng: host entropy source failed: {e}");
                        0
                    }
                }
            }
            Err(e) => {
                log::warn!("virtio-rng: malformed request: {e}");
                0
            }
        };
        queue.add_used(mem, head, written as u32)?;
        used_any = true;
    }
    if used_any && queue.needs_notification(mem)? {
        if let Err(e) = irq.trigger(INT_VRING) {
            log::warn!("virtio-rng: cannot interrupt the guest: {e}");
        }
    }
    Ok(())
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_type::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[RNG_QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        // No configuration space (spec §5.4.4).
        data.fill(0);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        self.state.activate(activation, 1)
    }

    fn reset(&mut self) -> bool {
        self.state.reset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor as RawDescriptor, RawDescriptor as Raw};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    const WRITE: u16 = 2;

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
        let mut src = counting_source();
        process_requestq(&mut q, &mem, &mut src, &irq).unwrap();
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
    fn read_only_buffers_get_nothing_and_a_failing_source_is_survived() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let descs = [
            Raw::from(RawDescriptor::new(0x8000, 16, 0, 0)),
            Raw::from(RawDescriptor::new(0x9000, 8, WRITE, 0)),
        ];
        vq.add_desc_chains(&descs, 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut failing: EntropySource =
            Box::new(|_: &mut [u8]| Err(io::Error::other("no entropy")));
        process_requestq(&mut q, &mem, &mut failing, &irq).unwrap();
        assert_eq!(vq.used().idx().load(), 2);
        assert_eq!(vq.used().ring().ref_at(0).unwrap().load().len(), 0);
        assert_eq!(vq.used().ring().ref_at(1).unwrap().load().len(), 0);
    }

    #[test]
    fn descriptors_outside_memory_are_answered_not_fatal() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let descs = [Raw::from(RawDescriptor::new(0x4000_0000, 64, WRITE, 0))];
        vq.add_desc_chains(&descs, 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        process_requestq(&mut q, &mem, &mut counting_source(), &irq).unwrap();
        assert_eq!(vq.used().idx().load(), 1);
        assert_eq!(vq.used().ring().ref_at(0).unwrap().load().len(), 0);
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
