//! virtio-blk request parsing and descriptor-chain walking over guest
//! memory the fuzzer writes: `devices::virtio::block::process_requestq`
//! with the queue's rings wherever the input puts them, served from
//! either a checking memory disk (the bounce-buffer path; it panics on an
//! access past its end or a write when read-only) or an in-memory file
//! (the production `File` backend, straight into guest memory; checked
//! afterwards for its size and, when read-only, its contents).
//!
//! Input: a flags byte (read-only, backend, failing disk), the queue's
//! layout (see `podvm_fuzz::queue`), then guest memory.

#![no_main]

use std::os::unix::fs::FileExt;

use devices::virtio::block::{process_requestq, Disk};
use devices::virtio::IrqLine;
use libfuzzer_sys::fuzz_target;
use podvm_fuzz::{guest_memory, memfd_disk, pattern, queue, CheckedDisk, Input, DISK_LEN};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let flags = input.u8();
    let read_only = flags & 1 != 0;
    let use_file = flags & 2 != 0;
    let failing = flags & 4 != 0;
    let passes = 1 + (flags >> 6);
    let header: Vec<u8> = (0..11).map(|_| input.u8()).collect();
    let mem = guest_memory(input.rest());
    let Some(mut q) = queue(&mut Input(&header), 256, &mem) else {
        return;
    };
    let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"));
    let file = use_file.then(memfd_disk);
    let backend: Box<dyn devices::virtio::block::DiskBackend> = match &file {
        Some(f) => Box::new(f.try_clone().expect("dup the memfd")),
        None => Box::new(CheckedDisk::new(read_only, failing)),
    };
    let mut disk = Disk::new("fuzz".into(), backend, read_only).expect("a disk");
    assert_eq!(disk.capacity_sectors(), (DISK_LEN / 512) as u64);
    // The guest may notify again: the device comes back to the same ring.
    for _ in 0..passes {
        if process_requestq(&mut q, &mem, &mut disk, &irq).is_err() {
            break;
        }
    }
    if let Some(f) = file {
        let len = f.metadata().expect("stat the memfd").len();
        assert_eq!(len, DISK_LEN as u64, "the device grew or shrank the disk");
        if read_only {
            let mut now = vec![0u8; DISK_LEN];
            f.read_exact_at(&mut now, 0).expect("read the memfd");
            assert!(now == pattern(), "a read-only disk was written");
        }
    }
});
