//! The Virtual Machine Generation ID (Microsoft's "Virtual Machine
//! Generation ID" specification, as QEMU and Firecracker provide it; the
//! guest side is Linux's `drivers/virt/vmgenid.c`): 16 random bytes in
//! guest memory that change whenever the VM may have been duplicated —
//! restored from a snapshot, cloned — followed by an interrupt that the
//! guest's ACPI firmware turns into `Notify(VGEN, 0x80)`. A Linux guest
//! then mixes the new id into its RNG (`add_vmfork_randomness`), so that
//! clones restored from one snapshot stop sharing random state.
//!
//! The model knows nothing of ACPI or KVM: it owns the id and its guest
//! physical address, and raises an [`EventFdTrigger`] (an irqfd on the
//! Generic Event Device's line) when the id changes. Where the id lives and
//! how the guest finds it are the VMM's business.

use std::io;

use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemory};
use vm_superio::Trigger;

use crate::EventFdTrigger;

/// Size of the generation id: a 128-bit integer (spec, "Generation ID").
pub const VMGENID_LEN: usize = 16;

/// The spec requires the id to be 8-byte aligned, so that a guest can read
/// it with two naturally aligned 64-bit loads.
const VMGENID_ALIGN: u64 = 8;

/// The generation id cannot be made, written or announced.
#[derive(Debug, thiserror::Error)]
pub enum VmGenIdError {
    /// The address is not 8-byte aligned.
    #[error("the VM generation id address {0:#x} is not 8-byte aligned")]
    Misaligned(u64),
    /// The host could not give random bytes.
    #[error("cannot get random bytes for the VM generation id: {0}")]
    Random(#[source] io::Error),
    /// The id could not be written into guest memory.
    #[error("cannot write the VM generation id at {addr:#x}: {source}")]
    Write {
        /// The id's guest physical address.
        addr: u64,
        /// The memory error.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// The interrupt that tells the guest could not be raised.
    #[error("cannot raise the VM generation id interrupt: {0}")]
    Notify(#[source] io::Error),
}

/// Snapshot state of the device: where the id lives and what it was.
/// A restore keeps the address and never the id (see
/// [`VmGenId::restore_from_state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmGenIdState {
    /// Guest physical address of the id.
    pub addr: u64,
    /// The id the snapshotted VM had.
    pub id: [u8; VMGENID_LEN],
}

/// The generation id of one VM and the interrupt that announces a change.
#[derive(Debug)]
pub struct VmGenId {
    addr: GuestAddress,
    id: [u8; VMGENID_LEN],
    irq: EventFdTrigger,
}

impl VmGenId {
    /// Writes a fresh random id at `addr` in `mem`; `irq` is raised when
    /// the id changes later. No interrupt is raised now: a booting guest
    /// reads the id when its driver starts.
    pub fn new<M: GuestMemory>(
        mem: &M,
        addr: GuestAddress,
        irq: EventFdTrigger,
    ) -> Result<Self, VmGenIdError> {
        check_aligned(addr)?;
        let id = random_id(None)?;
        write_id(mem, addr, &id)?;
        log_id(&id);
        Ok(VmGenId { addr, id, irq })
    }

    /// The current id, as the guest reads it (bytes in memory order).
    pub fn id(&self) -> [u8; VMGENID_LEN] {
        self.id
    }

    /// Guest physical address of the id.
    pub fn addr(&self) -> GuestAddress {
        self.addr
    }

    /// Writes a new random id (never the current one) into `mem`, then
    /// raises the interrupt so that the guest rereads it. The id is in
    /// memory before the interrupt: the eventfd write is a system call, a
    /// full barrier.
    pub fn regenerate<M: GuestMemory>(&mut self, mem: &M) -> Result<(), VmGenIdError> {
        let id = random_id(Some(&self.id))?;
        write_id(mem, self.addr, &id)?;
        self.id = id;
        log_id(&id);
        self.notify()
    }

    /// Raises the interrupt that makes the guest reread the id.
    pub fn notify(&self) -> Result<(), VmGenIdError> {
        self.irq.trigger().map_err(VmGenIdError::Notify)
    }

    /// The snapshot state.
    pub fn state(&self) -> VmGenIdState {
        VmGenIdState {
            addr: self.addr.0,
            id: self.id,
        }
    }

    /// The device of a VM restored from `state`: the id stays at the same
    /// address (the guest's mapping of it is in the restored memory) but
    /// is a fresh random one, never `state.id`, written into `mem` (which
    /// holds the snapshot's copy of the old id).
    ///
    /// No interrupt is raised here. Call [`VmGenId::notify`] once the
    /// VM's irqchip and every vCPU's local APIC are restored (restoring
    /// them overwrites an interrupt raised before) and before the vCPUs
    /// run again; the guest then rereads the id.
    pub fn restore_from_state<M: GuestMemory>(
        state: &VmGenIdState,
        mem: &M,
        irq: EventFdTrigger,
    ) -> Result<Self, VmGenIdError> {
        let addr = GuestAddress(state.addr);
        check_aligned(addr)?;
        let id = random_id(Some(&state.id))?;
        write_id(mem, addr, &id)?;
        log_id(&id);
        Ok(VmGenId { addr, id, irq })
    }
}

/// The id as 32 lowercase hex digits, two per byte in memory order (as
/// the test guest prints it).
pub fn vmgenid_hex(id: &[u8; VMGENID_LEN]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every id a VM gets is logged, so that a test (or a person) can match
/// it with what the guest reads.
fn log_id(id: &[u8; VMGENID_LEN]) {
    log::info!("vmgenid: {}", vmgenid_hex(id));
}

fn check_aligned(addr: GuestAddress) -> Result<(), VmGenIdError> {
    if addr.0.is_multiple_of(VMGENID_ALIGN) {
        Ok(())
    } else {
        Err(VmGenIdError::Misaligned(addr.0))
    }
}

fn write_id<M: GuestMemory>(
    mem: &M,
    addr: GuestAddress,
    id: &[u8; VMGENID_LEN],
) -> Result<(), VmGenIdError> {
    mem.write_slice(id, addr)
        .map_err(|source| VmGenIdError::Write {
            addr: addr.0,
            source,
        })
}

/// 16 random bytes from the host's `getrandom(2)`, different from `old`.
/// (Equal ones are a 2^-128 event, but a clone that kept its parent's id
/// would be exactly the failure this device exists to prevent.)
fn random_id(old: Option<&[u8; VMGENID_LEN]>) -> Result<[u8; VMGENID_LEN], VmGenIdError> {
    random_id_from(old, fill_random)
}

/// [`random_id`] with its source of random bytes given.
fn random_id_from(
    old: Option<&[u8; VMGENID_LEN]>,
    mut fill: impl FnMut(&mut [u8]) -> io::Result<()>,
) -> Result<[u8; VMGENID_LEN], VmGenIdError> {
    loop {
        let mut id = [0u8; VMGENID_LEN];
        fill(&mut id).map_err(VmGenIdError::Random)?;
        if old != Some(&id) {
            return Ok(id);
        }
    }
}

/// Fills `buf` from `getrandom(2)`, as the entropy device does.
fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    crate::virtio::rng::host_entropy(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    const ADDR: GuestAddress = GuestAddress(0xef000);

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn irq() -> (EventFdTrigger, EventFd) {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let watch = evt.try_clone().unwrap();
        (EventFdTrigger::new(evt), watch)
    }

    fn in_memory(mem: &GuestMemoryMmap, addr: GuestAddress) -> [u8; VMGENID_LEN] {
        let mut id = [0u8; VMGENID_LEN];
        mem.read_slice(&mut id, addr).unwrap();
        id
    }

    /// Interrupts raised since the last call (0 when none).
    fn raised(evt: &EventFd) -> u64 {
        evt.read().unwrap_or(0)
    }

    #[test]
    fn a_new_device_writes_a_random_id_at_its_address_without_an_interrupt() {
        let mem = memory();
        let (t, evt) = irq();
        let g = VmGenId::new(&mem, ADDR, t).unwrap();
        assert_eq!(g.addr(), ADDR);
        assert_eq!(in_memory(&mem, ADDR), g.id());
        assert_ne!(g.id(), [0; VMGENID_LEN]);
        // Nothing around the id is touched.
        assert_eq!(mem.read_obj::<u64>(GuestAddress(ADDR.0 - 8)).unwrap(), 0);
        assert_eq!(mem.read_obj::<u64>(GuestAddress(ADDR.0 + 16)).unwrap(), 0);
        assert_eq!(raised(&evt), 0);
        // Two devices (two VMs) get different ids.
        let (t2, _) = irq();
        let other = VmGenId::new(&memory(), ADDR, t2).unwrap();
        assert_ne!(other.id(), g.id());
    }

    #[test]
    fn regenerate_writes_a_different_id_then_raises_the_interrupt() {
        let mem = memory();
        let (t, evt) = irq();
        let mut g = VmGenId::new(&mem, ADDR, t).unwrap();
        let mut seen = vec![g.id()];
        for n in 1..=3 {
            g.regenerate(&mem).unwrap();
            assert_eq!(in_memory(&mem, ADDR), g.id());
            assert!(!seen.contains(&g.id()), "regeneration {n} reused an id");
            seen.push(g.id());
            assert_eq!(raised(&evt), 1, "one interrupt per regeneration");
        }
    }

    #[test]
    fn a_restored_device_keeps_the_address_and_never_the_id() {
        let mem = memory();
        let (t, _) = irq();
        let g = VmGenId::new(&mem, ADDR, t).unwrap();
        let state = g.state();
        assert_eq!(
            state,
            VmGenIdState {
                addr: 0xef000,
                id: g.id()
            }
        );
        // The restored memory holds the snapshot's copy of the old id.
        let restored_mem = memory();
        restored_mem.write_slice(&state.id, ADDR).unwrap();
        let (t, evt) = irq();
        let r = VmGenId::restore_from_state(&state, &restored_mem, t).unwrap();
        assert_eq!(r.addr(), ADDR);
        assert_ne!(r.id(), state.id);
        assert_eq!(in_memory(&restored_mem, ADDR), r.id());
        // Announcing it is the restorer's step, after the irqchip.
        assert_eq!(raised(&evt), 0);
        r.notify().unwrap();
        assert_eq!(raised(&evt), 1);
        // Two clones of one snapshot differ from each other too.
        let (t, _) = irq();
        let r2 = VmGenId::restore_from_state(&state, &memory(), t).unwrap();
        assert_ne!(r2.id(), r.id());
    }

    #[test]
    fn a_misaligned_or_unbacked_address_is_refused() {
        let mem = memory();
        let (t, _) = irq();
        assert!(matches!(
            VmGenId::new(&mem, GuestAddress(0xef004), t),
            Err(VmGenIdError::Misaligned(0xef004))
        ));
        let (t, _) = irq();
        let err = VmGenId::new(&mem, GuestAddress(0x10_0000), t).unwrap_err();
        assert!(
            matches!(
                err,
                VmGenIdError::Write {
                    addr: 0x10_0000,
                    ..
                }
            ),
            "{err:?}"
        );
        // Past the end by part of the id: no partial write passes.
        let (t, _) = irq();
        assert!(VmGenId::new(&mem, GuestAddress(0xffff8), t).is_err());
        let state = VmGenIdState {
            addr: 0x7,
            id: [0; VMGENID_LEN],
        };
        let (t, _) = irq();
        assert!(matches!(
            VmGenId::restore_from_state(&state, &mem, t),
            Err(VmGenIdError::Misaligned(7))
        ));
    }

    #[test]
    fn the_hex_form_is_two_digits_per_byte_in_memory_order() {
        let mut id = [0u8; VMGENID_LEN];
        id[0] = 0x0a;
        id[15] = 0xf1;
        assert_eq!(vmgenid_hex(&id), "0a0000000000000000000000000000f1");
    }

    #[test]
    fn a_fresh_id_is_never_the_old_one() {
        // A source that first repeats the old id: the next draw is taken.
        let old = [7u8; VMGENID_LEN];
        let mut draws = 0;
        let id = random_id_from(Some(&old), |buf| {
            draws += 1;
            buf.fill(if draws == 1 { 7 } else { 9 });
            Ok(())
        })
        .unwrap();
        assert_eq!((id, draws), ([9; VMGENID_LEN], 2));
        // Without an old id the first draw is used, and a failing source
        // is an error, not an id of zeros.
        let sevens = |b: &mut [u8]| {
            b.fill(7);
            Ok(())
        };
        assert_eq!(random_id_from(None, sevens).unwrap(), old);
        let err = random_id_from(None, |_| Err(io::Error::from_raw_os_error(libc::ENOSYS)));
        assert!(matches!(err, Err(VmGenIdError::Random(_))));
    }

    #[test]
    fn getrandom_fills_the_whole_buffer() {
        let mut big = [0u8; 4096];
        fill_random(&mut big).unwrap();
        // Unfilled bytes would stay zero; about 16 of 4096 random ones are.
        assert!(big.iter().filter(|b| **b == 0).count() < 100);
        assert!(big[4000..].iter().any(|b| *b != 0), "the tail is filled");
    }
}
