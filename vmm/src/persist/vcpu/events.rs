//! The events a vCPU has pending or injected (`struct kvm_vcpu_events`)
//! as saved in a snapshot: exception, interrupt, NMI and SMI state.

use kvm_bindings::kvm_vcpu_events;
use serde::{Deserialize, Serialize};

/// An exception KVM has injected or has pending.
#[allow(missing_docs)] // The fields are KVM's, named as in <asm/kvm.h>.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionEvent {
    pub injected: u8,
    pub nr: u8,
    pub has_error_code: u8,
    pub pending: u8,
    pub error_code: u32,
    pub has_payload: u8,
    pub payload: u64,
}

/// An external interrupt being injected.
#[allow(missing_docs)] // The fields are KVM's, named as in <asm/kvm.h>.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterruptEvent {
    pub injected: u8,
    pub nr: u8,
    pub soft: u8,
    pub shadow: u8,
}

/// Non-maskable interrupt state.
#[allow(missing_docs)] // The fields are KVM's, named as in <asm/kvm.h>.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NmiEvent {
    pub injected: u8,
    pub pending: u8,
    pub masked: u8,
}

/// System-management mode state.
#[allow(missing_docs)] // The fields are KVM's, named as in <asm/kvm.h>.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmiEvent {
    pub smm: u8,
    pub pending: u8,
    pub smm_inside_nmi: u8,
    pub latched_init: u8,
}

/// Events KVM has pending or in flight (`struct kvm_vcpu_events`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuEventsState {
    /// Exception state.
    pub exception: ExceptionEvent,
    /// Interrupt state.
    pub interrupt: InterruptEvent,
    /// NMI state.
    pub nmi: NmiEvent,
    /// The SIPI vector of an AP waiting for one.
    pub sipi_vector: u32,
    /// `KVM_VCPUEVENT_VALID_*`: which fields KVM filled.
    pub flags: u32,
    /// SMM state.
    pub smi: SmiEvent,
    /// A triple fault KVM has pending.
    pub triple_fault_pending: u8,
}

impl From<&kvm_vcpu_events> for VcpuEventsState {
    fn from(e: &kvm_vcpu_events) -> Self {
        VcpuEventsState {
            exception: ExceptionEvent {
                injected: e.exception.injected,
                nr: e.exception.nr,
                has_error_code: e.exception.has_error_code,
                pending: e.exception.pending,
                error_code: e.exception.error_code,
                has_payload: e.exception_has_payload,
                payload: e.exception_payload,
            },
            interrupt: InterruptEvent {
                injected: e.interrupt.injected,
                nr: e.interrupt.nr,
                soft: e.interrupt.soft,
                shadow: e.interrupt.shadow,
            },
            nmi: NmiEvent {
                injected: e.nmi.injected,
                pending: e.nmi.pending,
                masked: e.nmi.masked,
            },
            sipi_vector: e.sipi_vector,
            flags: e.flags,
            smi: SmiEvent {
                smm: e.smi.smm,
                pending: e.smi.pending,
                smm_inside_nmi: e.smi.smm_inside_nmi,
                latched_init: e.smi.latched_init,
            },
            triple_fault_pending: e.triple_fault.pending,
        }
    }
}

impl From<&VcpuEventsState> for kvm_vcpu_events {
    fn from(s: &VcpuEventsState) -> Self {
        let mut e = kvm_vcpu_events {
            sipi_vector: s.sipi_vector,
            flags: s.flags,
            exception_has_payload: s.exception.has_payload,
            exception_payload: s.exception.payload,
            ..Default::default()
        };
        e.exception.injected = s.exception.injected;
        e.exception.nr = s.exception.nr;
        e.exception.has_error_code = s.exception.has_error_code;
        e.exception.pending = s.exception.pending;
        e.exception.error_code = s.exception.error_code;
        e.interrupt.injected = s.interrupt.injected;
        e.interrupt.nr = s.interrupt.nr;
        e.interrupt.soft = s.interrupt.soft;
        e.interrupt.shadow = s.interrupt.shadow;
        e.nmi.injected = s.nmi.injected;
        e.nmi.pending = s.nmi.pending;
        e.nmi.masked = s.nmi.masked;
        e.smi.smm = s.smi.smm;
        e.smi.pending = s.smi.pending;
        e.smi.smm_inside_nmi = s.smi.smm_inside_nmi;
        e.smi.latched_init = s.smi.latched_init;
        e.triple_fault.pending = s.triple_fault_pending;
        e
    }
}
