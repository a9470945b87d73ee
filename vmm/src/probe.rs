//! Host probing for `podvm doctor`: does KVM run guests on hardware
//! virtualization, or through its instruction emulator (HOST.md)?
//!
//! A tiny 64-bit guest, booted through the same path as any podvm guest,
//! counts down a loop between two port writes; the time between the two
//! exits gives the guest's instruction rate. It then runs one SSE
//! instruction, which KVM's emulator cannot execute.

use std::time::{Duration, Instant};

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit};
use vm_memory::{Bytes, GuestAddress};

use crate::arch::x86_64::cpuid::{filter_cpuid, Topology};
use crate::arch::x86_64::layout::HIGH_MEMORY_START;
use crate::arch::x86_64::regs::{
    boot_fpu, boot_regs, boot_sregs, setup_gdt_idt, setup_page_tables, BootEntry,
};
use crate::memory::{create_guest_memory, MemoryError};
use crate::vstate::vm::{Vm, VmError};

/// Loop iterations of the probe guest (two instructions each).
pub const PROBE_LOOP_ITERATIONS: u32 = 20_000;
/// Instructions per second above which guests clearly run on hardware:
/// KVM's emulator manages about a million, hardware thousands of millions.
pub const HARDWARE_THRESHOLD_IPS: f64 = 50e6;

/// Port the probe guest writes before its loop.
const PORT_START: u16 = 0x7f;
/// Port it writes after the loop.
const PORT_LOOP_DONE: u16 = 0x80;
/// Port it writes after the SSE instruction.
const PORT_SSE_DONE: u16 = 0x81;
/// CR4.OSFXSR: the OS supports FXSAVE and SSE (else SSE raises #UD).
const X86_CR4_OSFXSR: u64 = 1 << 9;
/// Most exits the probe guest can cause before it is declared stuck.
const MAX_EXITS: usize = 1000;

/// The probe guest's code, loaded at 1 MiB.
fn probe_code() -> Vec<u8> {
    let mut code = vec![0xe6, PORT_START as u8]; // out 0x7f, al
    code.push(0xb9); // mov ecx, imm32
    code.extend_from_slice(&PROBE_LOOP_ITERATIONS.to_le_bytes());
    code.extend_from_slice(&[0xff, 0xc9]); // 1: dec ecx
    code.extend_from_slice(&[0x75, 0xfc]); //    jnz 1b
    code.extend_from_slice(&[0xe6, PORT_LOOP_DONE as u8]); // out 0x80, al
    code.extend_from_slice(&[0x66, 0x0f, 0xd4, 0xc1]); // paddq xmm0, xmm1
    code.extend_from_slice(&[0xe6, PORT_SSE_DONE as u8]); // out 0x81, al
    code.extend_from_slice(&[0xeb, 0xfe]); // 2: jmp 2b
    code
}

/// The probe could not run.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Guest memory could not be created.
    #[error("{0}")]
    Memory(#[from] MemoryError),
    /// The VM could not be created.
    #[error("{0}")]
    Vm(#[from] VmError),
    /// A KVM call failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// The call.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Writing the guest failed.
    #[error("cannot write the probe guest: {0}")]
    GuestMemory(#[from] vm_memory::GuestMemoryError),
    /// The guest did something unexpected before finishing its loop.
    #[error("the probe guest stopped unexpectedly: {0}")]
    Guest(String),
}

/// What the probe found.
#[derive(Clone, Copy, Debug)]
pub struct ProbeResult {
    /// Time the loop took.
    pub loop_time: Duration,
    /// Guest instructions per second in the loop.
    pub instructions_per_sec: f64,
    /// Whether an SSE instruction ran.
    pub sse_works: bool,
}

impl ProbeResult {
    /// Whether guests run on hardware virtualization rather than KVM's
    /// instruction emulator.
    pub fn hardware_accelerated(&self) -> bool {
        self.sse_works && self.instructions_per_sec >= HARDWARE_THRESHOLD_IPS
    }
}

/// Boots the probe guest and measures it.
pub fn probe_guest_speed(kvm: &Kvm) -> Result<ProbeResult, ProbeError> {
    let kvm_err = |what| move |source| ProbeError::Kvm { what, source };
    let mem = create_guest_memory(16 << 20)?;
    mem.write_slice(&probe_code(), GuestAddress(HIGH_MEMORY_START))?;
    let entry = BootEntry::Linux64 {
        entry: HIGH_MEMORY_START,
    };
    setup_page_tables(&mem)?;
    setup_gdt_idt(&mem, entry)?;

    let vm = Vm::new(kvm)?;
    vm.register_memory(&mem)?;
    vm.setup_irqchip()?;
    let mut vcpu = vm.fd().create_vcpu(0).map_err(kvm_err("KVM_CREATE_VCPU"))?;
    let mut cpuid: CpuId = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    filter_cpuid(&mut cpuid, 0, Topology::new(1, false));
    vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
    let mut sregs = boot_sregs(vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?, entry);
    sregs.cr4 |= X86_CR4_OSFXSR;
    vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
    vcpu.set_regs(&boot_regs(entry))
        .map_err(kvm_err("KVM_SET_REGS"))?;
    vcpu.set_fpu(&boot_fpu()).map_err(kvm_err("KVM_SET_FPU"))?;

    let mut start = None;
    let mut loop_time = None;
    for _ in 0..MAX_EXITS {
        let exit = vcpu.run();
        let now = Instant::now();
        match exit {
            Ok(VcpuExit::IoOut(PORT_START, _)) => start = Some(now),
            Ok(VcpuExit::IoOut(PORT_LOOP_DONE, _)) => {
                loop_time = start.map(|s| now - s);
            }
            Ok(VcpuExit::IoOut(PORT_SSE_DONE, _)) => return finish(loop_time, true),
            // The emulator cannot run SSE (internal error); a CPU without
            // SSE would raise #UD, which with no IDT is a triple fault.
            Ok(VcpuExit::InternalError) | Ok(VcpuExit::Shutdown) if loop_time.is_some() => {
                return finish(loop_time, false)
            }
            Ok(VcpuExit::IoOut(..)) | Ok(VcpuExit::Intr) => {}
            Ok(other) => return Err(ProbeError::Guest(format!("{other:?}"))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(source) => {
                return Err(ProbeError::Kvm {
                    what: "KVM_RUN",
                    source,
                })
            }
        }
    }
    Err(ProbeError::Guest(format!(
        "no result after {MAX_EXITS} exits"
    )))
}

fn finish(loop_time: Option<Duration>, sse_works: bool) -> Result<ProbeResult, ProbeError> {
    let loop_time =
        loop_time.ok_or_else(|| ProbeError::Guest("the loop did not complete".into()))?;
    let instructions = 2.0 * f64::from(PROBE_LOOP_ITERATIONS);
    let secs = loop_time.as_secs_f64().max(1e-9);
    Ok(ProbeResult {
        loop_time,
        instructions_per_sec: instructions / secs,
        sse_works,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_code_loops_back_onto_dec() {
        let code = probe_code();
        // jnz rel8 -4 lands on the `dec ecx` two bytes before it.
        let jnz = code.windows(2).position(|w| w == [0x75, 0xfc]).unwrap();
        assert_eq!(&code[jnz - 2..jnz], &[0xff, 0xc9]);
    }

    #[test]
    fn classification_needs_speed_and_sse() {
        let r = |ips, sse| ProbeResult {
            loop_time: Duration::from_millis(1),
            instructions_per_sec: ips,
            sse_works: sse,
        };
        assert!(r(1e9, true).hardware_accelerated());
        assert!(!r(1e6, false).hardware_accelerated());
        assert!(!r(1e6, true).hardware_accelerated());
        assert!(!r(1e9, false).hardware_accelerated());
    }

    #[test]
    fn finish_computes_the_rate() {
        let r = finish(Some(Duration::from_millis(40)), false).unwrap();
        assert!((r.instructions_per_sec - 1e6).abs() < 1.0);
        assert!(finish(None, true).is_err());
    }
}
