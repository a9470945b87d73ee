//! virtio-rng request handling over guest memory the fuzzer writes:
//! `devices::virtio::rng::process_requestq` with the queue's rings
//! wherever the input puts them, from an entropy source that may fail.
//!
//! Input: a flags byte (failing source, passes), the queue's layout (see
//! `podvm_fuzz::queue`), then guest memory.

#![no_main]

use devices::virtio::rng::{process_requestq, Entropy};
use devices::virtio::IrqLine;
use libfuzzer_sys::fuzz_target;
use podvm_fuzz::{guest_memory, queue, Input};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let flags = input.u8();
    let failing = flags & 1 != 0;
    let passes = 1 + (flags >> 6);
    let header: Vec<u8> = (0..11).map(|_| input.u8()).collect();
    let mem = guest_memory(input.rest());
    let Some(mut q) = queue(&mut Input(&header), 256, &mem) else {
        return;
    };
    let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"));
    let mut entropy = Entropy::new(Box::new(move |buf: &mut [u8]| {
        if failing {
            return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
        }
        buf.fill(0xa5);
        Ok(())
    }));
    for _ in 0..passes {
        if process_requestq(&mut q, &mem, &mut entropy, &irq).is_err() {
            break;
        }
    }
});
