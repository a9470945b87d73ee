//! The snapshot state file (`vmm::persist::decode_state_file`) and its
//! payload (`vmm::snapshot::SnapshotPayload`), then each virtio device's
//! saved transport state restored into a transport of that kind of device
//! (`MmioTransport::restore_state`), as `PUT /snapshot/load` does before
//! any vCPU runs.
//!
//! Input: byte 0 even: the rest is a whole state file (header checks);
//! odd: the rest is a payload, wrapped in a valid header so that the
//! fuzzer reaches the JSON and the restore.

#![no_main]

use std::sync::{Arc, Mutex};

use devices::virtio::block::Block;
use devices::virtio::rng::Rng;
use devices::virtio::{device_type, IrqLine, MmioTransport, VirtioDevice};
use libfuzzer_sys::fuzz_target;
use podvm_fuzz::{guest_memory, CheckedDisk};
use vmm::persist::crc64::Crc64;
use vmm::persist::state_file::{STATE_FILE_HEADER_LEN, STATE_FILE_MAGIC, STATE_FILE_VERSION};
use vmm::persist::{decode_state_file, HostCpu};
use vmm::snapshot::SnapshotPayload;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const HOST: HostCpu = HostCpu {
    vendor: *b"GenuineIntel",
    cpuid_digest: 0x0123_4567_89ab_cdef,
};

/// `payload` in a state file whose header is right for [`HOST`].
fn wrap(payload: &[u8]) -> Vec<u8> {
    let mut file = vec![0u8; STATE_FILE_HEADER_LEN];
    file[..8].copy_from_slice(&STATE_FILE_MAGIC);
    file[8..12].copy_from_slice(&STATE_FILE_VERSION.to_le_bytes());
    file[12..24].copy_from_slice(&HOST.vendor);
    file[24..29].copy_from_slice(b"0.1.0");
    file[56..64].copy_from_slice(&HOST.cpuid_digest.to_le_bytes());
    file[64..72].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    let mut crc = Crc64::new();
    crc.update(&file[..72]);
    crc.update(payload);
    let sum = crc.finish();
    file[72..80].copy_from_slice(&sum.to_le_bytes());
    file.extend_from_slice(payload);
    file
}

fn device(kind: u32) -> Option<Arc<Mutex<dyn VirtioDevice>>> {
    match kind {
        device_type::BLOCK => Some(Arc::new(Mutex::new(
            Block::with_backend("fuzz".into(), Box::new(CheckedDisk::new(false, false)), false)
                .expect("a block device"),
        ))),
        device_type::RNG => Some(Arc::new(Mutex::new(
            Rng::with_source(Box::new(|b: &mut [u8]| {
                b.fill(7);
                Ok(())
            }))
            .expect("an entropy device"),
        ))),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = if mode & 1 == 0 { rest.to_vec() } else { wrap(rest) };
    let payload: SnapshotPayload = match decode_state_file(&file, &HOST) {
        Ok((header, payload)) => {
            assert_eq!(header.payload_len as usize, file.len() - STATE_FILE_HEADER_LEN);
            payload
        }
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = payload.spec.validate(32);
    let mem = guest_memory(&[]);
    for state in &payload.devices.virtio {
        let Some(dev) = device(state.device_type) else {
            continue;
        };
        let queues = dev.lock().unwrap().queue_max_sizes().len();
        let evts = (0..queues)
            .map(|_| EventFd::new(EFD_NONBLOCK).expect("eventfd"))
            .collect();
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"));
        let mut t = MmioTransport::new(dev, mem.clone(), irq, evts);
        if t.restore_state(state).is_ok() {
            // What restored saves again as it was, but for the queues'
            // fields the device keeps to itself.
            let again = t.save_state();
            assert_eq!(again.status, state.status);
            assert_eq!(again.device_type, state.device_type);
        }
    }
});
