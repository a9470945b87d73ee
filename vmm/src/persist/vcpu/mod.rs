//! The KVM state of one vCPU: registers, FPU/XSAVE, XCRs, debug
//! registers, every MSR KVM can save, the LAPIC, MP state, pending events,
//! CPUID and TSC frequency.
//!
//! [`save_vcpu_state`] and [`restore_vcpu_state`] run the ioctls in the
//! order KVM needs (see their bodies); `Vcpu::save_state` and
//! `Vcpu::restore_state` in [`crate::vstate::vcpu`] call them on the
//! thread that owns the vCPU. What a host's KVM can save is probed once
//! per VM into a [`VcpuStateSupport`].

use kvm_bindings::{
    kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_xcrs, kvm_xsave, CpuId, Msrs, Xsave,
    KVM_MAX_CPUID_ENTRIES, KVM_MAX_MSR_ENTRIES,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};
use vmm_sys_util::fam::FamStructWrapper;

use super::blob::Blob;
use crate::arch::x86_64::msr::{MSR_IA32_MISC_ENABLE, MSR_MTRR_DEF_TYPE};

mod events;
mod regs;

pub use events::{ExceptionEvent, InterruptEvent, NmiEvent, SmiEvent, VcpuEventsState};
pub use regs::{
    DebugRegsState, DtableState, FloatState, FpuState, RegsState, SegmentState, SregsState,
    XcrState, XcrsState,
};

/// IA32_TSC_DEADLINE: restored after IA32_TSC, because KVM arms the
/// deadline timer relative to the TSC it has when the MSR is written.
pub const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// IA32_PAT (Intel SDM Vol. 3A §11.12).
pub const MSR_IA32_CR_PAT: u32 = 0x277;

/// MSRs KVM emulates and the guest may change, but that
/// `KVM_GET_MSR_INDEX_LIST` does not list: the MTRRs (variable pairs
/// 0x200–0x20f, the fixed ranges, the default type; Intel SDM Vol. 3A
/// §11.11), PAT and MISC_ENABLE. Saved too, where KVM lets them be read.
const UNLISTED_MSRS: &[u32] = &[
    0x200,
    0x201,
    0x202,
    0x203,
    0x204,
    0x205,
    0x206,
    0x207,
    0x208,
    0x209,
    0x20a,
    0x20b,
    0x20c,
    0x20d,
    0x20e,
    0x20f,
    0x250,
    0x258,
    0x259,
    0x268,
    0x269,
    0x26a,
    0x26b,
    0x26c,
    0x26d,
    0x26e,
    0x26f,
    MSR_MTRR_DEF_TYPE,
    MSR_IA32_CR_PAT,
    MSR_IA32_MISC_ENABLE,
];

/// The size of `struct kvm_xsave` without its flexible array.
const XSAVE_LEGACY_SIZE: usize = std::mem::size_of::<kvm_xsave>();
/// Bytes of the LAPIC register page.
const LAPIC_SIZE: usize = std::mem::size_of::<kvm_lapic_state>();

/// KVM's TSC frequency may differ from a snapshot's by this many parts
/// per million before a restore scales it (the calibration noise between
/// boots of one host, as QEMU tolerates).
const TSC_KHZ_TOLERANCE_PPM: u64 = 250;

/// A vCPU's state could not be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum VcpuStateError {
    /// A `KVM_GET_*` ioctl failed.
    #[error("cannot read the vCPU's {what}: {source}")]
    Get {
        /// What was being read.
        what: &'static str,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A `KVM_SET_*` ioctl failed.
    #[error("cannot restore the vCPU's {what}: {source}")]
    Set {
        /// What was being restored.
        what: &'static str,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM refused a saved MSR.
    #[error("KVM refused to restore MSR {index:#x} (value {data:#x})")]
    MsrRefused {
        /// The MSR.
        index: u32,
        /// The saved value.
        data: u64,
    },
    /// The saved TSC frequency cannot be given to the vCPU.
    #[error("cannot run the vCPU's TSC at the snapshot's {saved_khz} kHz (this host: {host_khz} kHz): {source}")]
    TscScaling {
        /// The snapshot's frequency.
        saved_khz: u32,
        /// This host's.
        host_khz: u32,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A variable-size KVM structure could not be built.
    #[error("cannot build KVM's {what}: {source}")]
    Fam {
        /// The structure.
        what: &'static str,
        /// The error.
        #[source]
        source: vmm_sys_util::fam::Error,
    },
    /// The saved state does not have the shape KVM's structures need.
    #[error("saved vCPU state is malformed: {what} is {found} bytes, {expected}")]
    Malformed {
        /// The field.
        what: &'static str,
        /// Its size.
        found: usize,
        /// What it must be.
        expected: &'static str,
    },
}

/// What this host's KVM can save and restore for a vCPU: probed once per
/// VM ([`VcpuStateSupport::probe`]) and handed to every capture and
/// restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuStateSupport {
    /// The MSRs to try to save, in this order: those KVM lists
    /// (`KVM_GET_MSR_INDEX_LIST`), then [`UNLISTED_MSRS`].
    pub msrs: Vec<u32>,
    /// The size of the XSAVE area (`KVM_CAP_XSAVE2`, 4096 bytes where only
    /// `KVM_CAP_XSAVE` exists); `None` where KVM has no XSAVE, and the
    /// legacy FPU state is saved instead.
    pub xsave_size: Option<usize>,
    /// Whether KVM saves the extended control registers (`KVM_CAP_XCRS`).
    pub xcrs: bool,
}

impl VcpuStateSupport {
    /// Asks KVM what it can save for the vCPUs of `vm`.
    pub fn probe(kvm: &Kvm, vm: &VmFd) -> Result<VcpuStateSupport, VcpuStateError> {
        let listed = kvm
            .get_msr_index_list()
            .map_err(|source| VcpuStateError::Get {
                what: "MSR index list",
                source,
            })?;
        let mut msrs = listed.as_slice().to_vec();
        for &index in UNLISTED_MSRS {
            if !msrs.contains(&index) {
                msrs.push(index);
            }
        }
        let xsave_size = if vm.check_extension(Cap::Xsave) {
            // 0 where KVM predates KVM_CAP_XSAVE2; never below the legacy size.
            let size = vm.check_extension_int(Cap::Xsave2).max(0) as usize;
            Some(size.max(XSAVE_LEGACY_SIZE))
        } else {
            None
        };
        Ok(VcpuStateSupport {
            msrs,
            xsave_size,
            xcrs: vm.check_extension(Cap::Xcrs),
        })
    }
}

/// One CPUID leaf as the vCPU reports it (`struct kvm_cpuid_entry2`).
#[allow(missing_docs)] // The fields are KVM's, named as in <asm/kvm.h>.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidEntryState {
    pub function: u32,
    pub index: u32,
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// One MSR and its value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsrState {
    /// The MSR's index.
    pub index: u32,
    /// Its value.
    pub data: u64,
}

/// Everything KVM holds for one paused vCPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuState {
    /// The CPUID the vCPU was created with (`KVM_GET_CPUID2`).
    pub cpuid: Vec<CpuidEntryState>,
    /// Every MSR KVM let podvm read, in the order KVM lists them.
    pub msrs: Vec<MsrState>,
    /// General-purpose registers.
    pub regs: RegsState,
    /// Segment, control and system registers.
    pub sregs: SregsState,
    /// Floating-point and vector registers.
    pub float: FloatState,
    /// Extended control registers, where KVM saves them.
    pub xcrs: Option<XcrsState>,
    /// Debug registers.
    pub debug_regs: DebugRegsState,
    /// The LAPIC register page (`struct kvm_lapic_state`, 1 KiB).
    pub lapic: Blob,
    /// `KVM_MP_STATE_*`: running, halted, waiting for INIT/SIPI.
    pub mp_state: u32,
    /// Pending and in-flight events.
    pub events: VcpuEventsState,
    /// The TSC frequency in kHz, where KVM reports it.
    pub tsc_khz: Option<u32>,
}

impl VcpuState {
    /// The value of MSR `index`, if it was saved.
    pub fn msr(&self, index: u32) -> Option<u64> {
        self.msrs.iter().find(|m| m.index == index).map(|m| m.data)
    }
}

/// Reads `candidates` with `get` (`KVM_GET_MSRS`), [`KVM_MAX_MSR_ENTRIES`]
/// at a time. KVM stops at the first MSR of a batch it refuses and says
/// how many it read: that MSR is left out and the rest are asked again.
/// Returns the MSRs read and those refused.
fn read_msrs(
    candidates: &[u32],
    mut get: impl FnMut(&mut Msrs) -> Result<usize, kvm_ioctls::Error>,
) -> Result<(Vec<MsrState>, Vec<u32>), VcpuStateError> {
    let mut saved = Vec::with_capacity(candidates.len());
    let mut refused = Vec::new();
    let mut rest = candidates;
    while !rest.is_empty() {
        let batch = &rest[..rest.len().min(KVM_MAX_MSR_ENTRIES)];
        let entries: Vec<kvm_msr_entry> = batch
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|source| VcpuStateError::Fam {
            what: "MSR list",
            source,
        })?;
        let read = get(&mut msrs)
            .map_err(|source| VcpuStateError::Get {
                what: "MSRs",
                source,
            })?
            .min(batch.len());
        saved.extend(msrs.as_slice()[..read].iter().map(|e| MsrState {
            index: e.index,
            data: e.data,
        }));
        if read < batch.len() {
            refused.push(batch[read]);
            rest = &rest[read + 1..];
        } else {
            rest = &rest[batch.len()..];
        }
    }
    Ok((saved, refused))
}

/// The order in which `msrs` are restored: IA32_TSC_DEADLINE after
/// everything else (after IA32_TSC in particular), the rest as saved.
fn msr_restore_order(msrs: &[MsrState]) -> Vec<MsrState> {
    let (late, early): (Vec<MsrState>, Vec<MsrState>) = msrs
        .iter()
        .cloned()
        .partition(|m| m.index == MSR_IA32_TSC_DEADLINE);
    early.into_iter().chain(late).collect()
}

fn words_to_bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn bytes_to_words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn get_xsave(fd: &VcpuFd, size: usize) -> Result<Blob, VcpuStateError> {
    let get = |source| VcpuStateError::Get {
        what: "XSAVE area",
        source,
    };
    if size <= XSAVE_LEGACY_SIZE {
        let xsave = fd.get_xsave().map_err(get)?;
        return Ok(Blob(words_to_bytes(&xsave.region)));
    }
    let extra = (size - XSAVE_LEGACY_SIZE).div_ceil(4);
    let mut xsave = Xsave::new(extra).map_err(|source| VcpuStateError::Fam {
        what: "XSAVE area",
        source,
    })?;
    // SAFETY: `xsave` has room for `size` bytes, the size KVM reported for
    // this VM's XSAVE area (KVM_CAP_XSAVE2), so KVM writes within it.
    unsafe { fd.get_xsave2(&mut xsave) }.map_err(get)?;
    let mut bytes = words_to_bytes(&xsave.as_fam_struct_ref().xsave.region);
    bytes.extend(words_to_bytes(xsave.as_slice()));
    Ok(Blob(bytes))
}

fn set_xsave(fd: &VcpuFd, saved: &Blob, size: usize) -> Result<(), VcpuStateError> {
    let bytes = &saved.0;
    if bytes.len() < XSAVE_LEGACY_SIZE || !bytes.len().is_multiple_of(4) {
        return Err(VcpuStateError::Malformed {
            what: "the XSAVE area",
            found: bytes.len(),
            expected: "a multiple of 4 bytes, at least 4096",
        });
    }
    // KVM reads as many bytes as its own XSAVE area has: pass at least that
    // much (zeros beyond what was saved: components the snapshot's guest
    // did not have are in their initial state).
    let total = bytes.len().max(size);
    let words = bytes_to_words(bytes);
    let (region, extra) = words.split_at(XSAVE_LEGACY_SIZE / 4);
    let mut xsave = Xsave::new((total - XSAVE_LEGACY_SIZE).div_ceil(4)).map_err(|source| {
        VcpuStateError::Fam {
            what: "XSAVE area",
            source,
        }
    })?;
    // SAFETY: only the fixed `region` array of the header is written; the
    // FAM length stays what `Xsave::new` allocated.
    unsafe { xsave.as_mut_fam_struct() }
        .xsave
        .region
        .copy_from_slice(region);
    xsave.as_mut_slice()[..extra.len()].copy_from_slice(extra);
    // SAFETY: `xsave` holds at least the VM's XSAVE size (KVM_CAP_XSAVE2),
    // which is what KVM_SET_XSAVE reads.
    unsafe { fd.set_xsave2(&xsave) }.map_err(|source| VcpuStateError::Set {
        what: "XSAVE area",
        source,
    })
}

/// The CPUID of `fd`, without the zeroed entries past the end that some
/// kernels leave in a larger buffer.
fn get_cpuid(fd: &VcpuFd) -> Result<Vec<CpuidEntryState>, VcpuStateError> {
    let cpuid = fd
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(|source| VcpuStateError::Get {
            what: "CPUID",
            source,
        })?;
    Ok(cpuid
        .as_slice()
        .iter()
        // Leaf 0 always has a non-zero EAX (the highest leaf).
        .filter(|e| !(e.function == 0 && e.index == 0 && e.flags == 0 && e.eax == 0))
        .map(|e| CpuidEntryState {
            function: e.function,
            index: e.index,
            flags: e.flags,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
        })
        .collect())
}

/// Reads the whole state of `fd`, a vCPU that is out of `KVM_RUN` with no
/// I/O pending (see `Vcpu::save_state`), while every vCPU of its VM is
/// paused.
pub fn save_vcpu_state(
    fd: &VcpuFd,
    support: &VcpuStateSupport,
) -> Result<VcpuState, VcpuStateError> {
    let get = |what| move |source| VcpuStateError::Get { what, source };
    // The order follows what KVM's getters do to the state:
    // - KVM_GET_MP_STATE first: it makes the LAPIC accept pending INIT/SIPI
    //   events, which changes the MP state and registers read after it.
    // - KVM_GET_VCPU_EVENTS last: other getters may still move state into
    //   the pending events (sregs, for one, carries a pending interrupt).
    let mp_state = fd.get_mp_state().map_err(get("MP state"))?.mp_state;
    let regs = fd.get_regs().map_err(get("registers"))?;
    let sregs = fd.get_sregs().map_err(get("special registers"))?;
    let float = match support.xsave_size {
        Some(size) => FloatState::Xsave(get_xsave(fd, size)?),
        None => FloatState::Fpu(Box::new((&fd.get_fpu().map_err(get("FPU"))?).into())),
    };
    let xcrs = if support.xcrs {
        Some((&fd.get_xcrs().map_err(get("XCRs"))?).into())
    } else {
        None
    };
    let debug_regs = fd.get_debug_regs().map_err(get("debug registers"))?;
    let lapic = fd.get_lapic().map_err(get("LAPIC"))?;
    let tsc_khz = match fd.get_tsc_khz() {
        Ok(khz) => Some(khz),
        Err(e) => {
            log::debug!("vCPU TSC frequency unknown ({e}): a restore will not scale it");
            None
        }
    };
    let cpuid = get_cpuid(fd)?;
    let (msrs, refused) = read_msrs(&support.msrs, |msrs| fd.get_msrs(msrs))?;
    if !refused.is_empty() {
        log::debug!("MSRs KVM would not read, left out of the snapshot: {refused:#x?}");
    }
    let events = fd.get_vcpu_events().map_err(get("pending events"))?;
    Ok(VcpuState {
        cpuid,
        msrs,
        regs: (&regs).into(),
        sregs: (&sregs).into(),
        float,
        xcrs,
        debug_regs: (&debug_regs).into(),
        lapic: Blob(lapic.regs.iter().map(|&b| b as u8).collect()),
        mp_state,
        events: (&events).into(),
        tsc_khz,
    })
}

/// What a restore gives KVM, checked and converted before the first ioctl
/// so that a malformed state changes nothing.
struct KvmVcpuState {
    cpuid: CpuId,
    msrs: Vec<Msrs>,
    lapic: kvm_lapic_state,
    xcrs: Option<kvm_xcrs>,
}

impl KvmVcpuState {
    fn new(state: &VcpuState) -> Result<Self, VcpuStateError> {
        let fam = |what| move |source| VcpuStateError::Fam { what, source };
        let entries: Vec<_> = state
            .cpuid
            .iter()
            .map(|e| kvm_bindings::kvm_cpuid_entry2 {
                function: e.function,
                index: e.index,
                flags: e.flags,
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
                ..Default::default()
            })
            .collect();
        let cpuid = CpuId::from_entries(&entries).map_err(fam("CPUID"))?;
        let msrs = msr_restore_order(&state.msrs)
            .chunks(KVM_MAX_MSR_ENTRIES)
            .map(|chunk| {
                let entries: Vec<_> = chunk
                    .iter()
                    .map(|m| kvm_msr_entry {
                        index: m.index,
                        data: m.data,
                        ..Default::default()
                    })
                    .collect();
                FamStructWrapper::from_entries(&entries).map_err(fam("MSR list"))
            })
            .collect::<Result<Vec<Msrs>, _>>()?;
        if state.lapic.0.len() != LAPIC_SIZE {
            return Err(VcpuStateError::Malformed {
                what: "the LAPIC page",
                found: state.lapic.0.len(),
                expected: "1024 bytes",
            });
        }
        let mut lapic = kvm_lapic_state::default();
        for (reg, &b) in lapic.regs.iter_mut().zip(&state.lapic.0) {
            *reg = b as _;
        }
        let xcrs = state.xcrs.as_ref().map(XcrsState::to_kvm).transpose()?;
        Ok(KvmVcpuState {
            cpuid,
            msrs,
            lapic,
            xcrs,
        })
    }
}

/// Whether `host_khz` is further from `saved_khz` than calibration noise.
fn tsc_needs_scaling(saved_khz: u32, host_khz: u32) -> bool {
    let diff = u64::from(saved_khz.abs_diff(host_khz));
    diff * 1_000_000 > u64::from(saved_khz) * TSC_KHZ_TOLERANCE_PPM
}

/// Gives `fd`, a vCPU that was created but has not run, the state
/// `state`. Create every vCPU of the VM before restoring any (KVM builds
/// its APIC map when each LAPIC is set).
pub fn restore_vcpu_state(
    fd: &VcpuFd,
    state: &VcpuState,
    support: &VcpuStateSupport,
) -> Result<(), VcpuStateError> {
    let kvm = KvmVcpuState::new(state)?;
    let set = |what| move |source| VcpuStateError::Set { what, source };
    // The order is KVM's:
    // - CPUID first: KVM derives which registers, MSRs and XSAVE components
    //   are valid from it.
    // - The TSC frequency before the MSRs, so that IA32_TSC is set in the
    //   guest's units.
    // - KVM_SET_REGS clears pending exceptions and KVM_SET_SREGS sets the
    //   APIC base, so both come before the LAPIC and the events.
    // - The LAPIC before the MSRs: IA32_TSC_DEADLINE is only taken by a
    //   configured LAPIC, and after IA32_TSC (see `msr_restore_order`).
    // - The MP state and the events last: they refer to the LAPIC's
    //   pending INIT/SIPI, and the events restore what KVM_SET_REGS cleared.
    fd.set_cpuid2(&kvm.cpuid).map_err(set("CPUID"))?;
    if let Some(saved_khz) = state.tsc_khz {
        match fd.get_tsc_khz() {
            Ok(host_khz) if tsc_needs_scaling(saved_khz, host_khz) => {
                fd.set_tsc_khz(saved_khz)
                    .map_err(|source| VcpuStateError::TscScaling {
                        saved_khz,
                        host_khz,
                        source,
                    })?;
            }
            Ok(_) => {}
            Err(e) => log::warn!(
                "cannot read this host's TSC frequency ({e}); the guest's TSC stays unscaled"
            ),
        }
    }
    fd.set_regs(&(&state.regs).into())
        .map_err(set("registers"))?;
    fd.set_sregs(&(&state.sregs).into())
        .map_err(set("special registers"))?;
    match &state.float {
        FloatState::Xsave(area) => set_xsave(fd, area, support.xsave_size.unwrap_or(0))?,
        FloatState::Fpu(fpu) => fd.set_fpu(&fpu.as_ref().into()).map_err(set("FPU"))?,
    }
    if let Some(xcrs) = &kvm.xcrs {
        fd.set_xcrs(xcrs).map_err(set("XCRs"))?;
    }
    fd.set_debug_regs(&(&state.debug_regs).into())
        .map_err(set("debug registers"))?;
    fd.set_lapic(&kvm.lapic).map_err(set("LAPIC"))?;
    for msrs in &kvm.msrs {
        let written = fd.set_msrs(msrs).map_err(set("MSRs"))?;
        if let Some(refused) = msrs.as_slice().get(written) {
            return Err(VcpuStateError::MsrRefused {
                index: refused.index,
                data: refused.data,
            });
        }
    }
    fd.set_mp_state(kvm_mp_state {
        mp_state: state.mp_state,
    })
    .map_err(set("MP state"))?;
    fd.set_vcpu_events(&(&state.events).into())
        .map_err(set("pending events"))?;
    // Tell a guest using kvmclock that it was stopped, so that its soft
    // lockup watchdog does not fire on the jump. EINVAL when the guest has
    // not enabled kvmclock: nothing to tell then.
    if let Err(e) = fd.kvmclock_ctrl() {
        log::debug!("KVM_KVMCLOCK_CTRL: {e} (the guest does not use kvmclock)");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
