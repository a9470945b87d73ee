//! The virtio-mmio register interface: `MmioTransport` reads and writes
//! of any width at any offset of its 4 KiB window, in any order, in front
//! of a real block or entropy device. Nothing may panic, and whatever
//! state the driver left, the transport's snapshot state must restore into
//! a fresh transport and save the same again (as a snapshot/restore
//! does).
//!
//! Input: a byte picking the device, then accesses: an op byte (bit 0
//! write, bits 1-2 the width 1/2/4/8), a u16 offset (below 0x1000), and
//! for a write its `width` bytes.

#![no_main]

use std::sync::{Arc, Mutex};

use devices::virtio::block::Block;
use devices::virtio::rng::Rng;
use devices::virtio::{IrqLine, MmioTransport, VirtioDevice, MMIO_REGION_SIZE};
use devices::BusDevice;
use libfuzzer_sys::fuzz_target;
use podvm_fuzz::{guest_memory, CheckedDisk, Input};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

fn device(kind: u8) -> Arc<Mutex<dyn VirtioDevice>> {
    match kind % 3 {
        0 => Arc::new(Mutex::new(
            Block::with_backend("fuzz".into(), Box::new(CheckedDisk::new(false, false)), false)
                .expect("a block device"),
        )),
        1 => Arc::new(Mutex::new(
            Block::with_backend("fuzz-ro".into(), Box::new(CheckedDisk::new(true, false)), true)
                .expect("a block device"),
        )),
        _ => Arc::new(Mutex::new(
            Rng::with_source(Box::new(|b: &mut [u8]| {
                b.fill(7);
                Ok(())
            }))
            .expect("an entropy device"),
        )),
    }
}

fn transport(kind: u8, mem: &vm_memory::GuestMemoryMmap) -> MmioTransport {
    let dev = device(kind);
    let queues = dev.lock().unwrap().queue_max_sizes().len();
    let evts = (0..queues)
        .map(|_| EventFd::new(EFD_NONBLOCK).expect("eventfd"))
        .collect();
    let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"));
    MmioTransport::new(dev, mem.clone(), irq, evts)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let kind = input.u8();
    // Rings the driver points at are checked against this memory.
    let mem = guest_memory(&[]);
    let mut t = transport(kind, &mem);
    let mut ops = 0;
    while !input.0.is_empty() && ops < 4096 {
        ops += 1;
        let op = input.u8();
        let width = 1usize << ((op >> 1) & 3);
        let offset = u64::from(input.u16()) % MMIO_REGION_SIZE;
        if op & 1 == 0 {
            let mut buf = [0u8; 8];
            t.read(offset, &mut buf[..width]);
        } else {
            let value = input.u64().to_le_bytes();
            t.write(offset, &value[..width]);
        }
    }
    let saved = t.save_state();
    let mut fresh = transport(kind, &mem);
    if let Err(e) = fresh.restore_state(&saved) {
        panic!("a transport's own state does not restore: {e}\n{saved:?}");
    }
    assert_eq!(fresh.save_state(), saved, "restored state differs");
});
