//! The register files of a vCPU as saved in a snapshot: general-purpose,
//! segment and control registers, the FPU (legacy or XSAVE), XCRs and
//! debug registers, each convertible to and from KVM's struct.

use kvm_bindings::{
    kvm_debugregs, kvm_dtable, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs, kvm_xcr, kvm_xcrs,
};
use serde::{Deserialize, Serialize};

use super::VcpuStateError;
use crate::persist::blob::Blob;

/// General-purpose registers (`struct kvm_regs`).
#[allow(missing_docs)] // The fields are the x86 registers of the same name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegsState {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

impl From<&kvm_regs> for RegsState {
    fn from(r: &kvm_regs) -> Self {
        RegsState {
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            rsp: r.rsp,
            rbp: r.rbp,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            rip: r.rip,
            rflags: r.rflags,
        }
    }
}

impl From<&RegsState> for kvm_regs {
    fn from(r: &RegsState) -> Self {
        kvm_regs {
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            rsp: r.rsp,
            rbp: r.rbp,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            rip: r.rip,
            rflags: r.rflags,
        }
    }
}

/// A segment register's hidden part (`struct kvm_segment`).
#[allow(missing_docs)] // The fields are KVM's, named as in <asm/kvm.h>.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentState {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    #[serde(rename = "type")]
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    pub db: u8,
    pub s: u8,
    pub l: u8,
    pub g: u8,
    pub avl: u8,
    pub unusable: u8,
}

impl From<&kvm_segment> for SegmentState {
    fn from(s: &kvm_segment) -> Self {
        SegmentState {
            base: s.base,
            limit: s.limit,
            selector: s.selector,
            type_: s.type_,
            present: s.present,
            dpl: s.dpl,
            db: s.db,
            s: s.s,
            l: s.l,
            g: s.g,
            avl: s.avl,
            unusable: s.unusable,
        }
    }
}

impl From<&SegmentState> for kvm_segment {
    fn from(s: &SegmentState) -> Self {
        kvm_segment {
            base: s.base,
            limit: s.limit,
            selector: s.selector,
            type_: s.type_,
            present: s.present,
            dpl: s.dpl,
            db: s.db,
            s: s.s,
            l: s.l,
            g: s.g,
            avl: s.avl,
            unusable: s.unusable,
            padding: 0,
        }
    }
}

/// A descriptor table register (`struct kvm_dtable`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtableState {
    /// Linear base address.
    pub base: u64,
    /// Limit in bytes, minus one.
    pub limit: u16,
}

impl From<&kvm_dtable> for DtableState {
    fn from(d: &kvm_dtable) -> Self {
        DtableState {
            base: d.base,
            limit: d.limit,
        }
    }
}

impl From<&DtableState> for kvm_dtable {
    fn from(d: &DtableState) -> Self {
        kvm_dtable {
            base: d.base,
            limit: d.limit,
            padding: [0; 3],
        }
    }
}

/// Segment, control and system registers (`struct kvm_sregs`).
#[allow(missing_docs)] // The fields are the x86 registers of the same name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SregsState {
    pub cs: SegmentState,
    pub ds: SegmentState,
    pub es: SegmentState,
    pub fs: SegmentState,
    pub gs: SegmentState,
    pub ss: SegmentState,
    pub tr: SegmentState,
    pub ldt: SegmentState,
    pub gdt: DtableState,
    pub idt: DtableState,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
    /// The external interrupt KVM has pending (one bit per vector).
    pub interrupt_bitmap: [u64; 4],
}

impl From<&kvm_sregs> for SregsState {
    fn from(s: &kvm_sregs) -> Self {
        SregsState {
            cs: (&s.cs).into(),
            ds: (&s.ds).into(),
            es: (&s.es).into(),
            fs: (&s.fs).into(),
            gs: (&s.gs).into(),
            ss: (&s.ss).into(),
            tr: (&s.tr).into(),
            ldt: (&s.ldt).into(),
            gdt: (&s.gdt).into(),
            idt: (&s.idt).into(),
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            cr8: s.cr8,
            efer: s.efer,
            apic_base: s.apic_base,
            interrupt_bitmap: s.interrupt_bitmap,
        }
    }
}

impl From<&SregsState> for kvm_sregs {
    fn from(s: &SregsState) -> Self {
        kvm_sregs {
            cs: (&s.cs).into(),
            ds: (&s.ds).into(),
            es: (&s.es).into(),
            fs: (&s.fs).into(),
            gs: (&s.gs).into(),
            ss: (&s.ss).into(),
            tr: (&s.tr).into(),
            ldt: (&s.ldt).into(),
            gdt: (&s.gdt).into(),
            idt: (&s.idt).into(),
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            cr8: s.cr8,
            efer: s.efer,
            apic_base: s.apic_base,
            interrupt_bitmap: s.interrupt_bitmap,
        }
    }
}

/// The x87/SSE state (`struct kvm_fpu`), saved where KVM has no XSAVE.
#[allow(missing_docs)] // The fields are KVM's, named as in <asm/kvm.h>.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FpuState {
    pub fpr: [[u8; 16]; 8],
    pub fcw: u16,
    pub fsw: u16,
    pub ftwx: u8,
    pub last_opcode: u16,
    pub last_ip: u64,
    pub last_dp: u64,
    pub xmm: [[u8; 16]; 16],
    pub mxcsr: u32,
}

impl From<&kvm_fpu> for FpuState {
    fn from(f: &kvm_fpu) -> Self {
        FpuState {
            fpr: f.fpr,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm,
            mxcsr: f.mxcsr,
        }
    }
}

impl From<&FpuState> for kvm_fpu {
    fn from(f: &FpuState) -> Self {
        kvm_fpu {
            fpr: f.fpr,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm,
            mxcsr: f.mxcsr,
            ..Default::default()
        }
    }
}

/// The floating-point and vector state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FloatState {
    /// The XSAVE area (`KVM_GET_XSAVE`/`KVM_GET_XSAVE2`): x87, SSE, AVX and
    /// every other component the guest enabled, in the standard format.
    Xsave(Blob),
    /// The legacy x87/SSE state (`KVM_GET_FPU`), where KVM has no XSAVE.
    Fpu(Box<FpuState>),
}

/// One extended control register (`struct kvm_xcr`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XcrState {
    /// Which XCR (0 is XCR0).
    pub xcr: u32,
    /// Its value.
    pub value: u64,
}

/// The extended control registers (`struct kvm_xcrs`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XcrsState {
    /// KVM's flags.
    pub flags: u32,
    /// The registers KVM reported.
    pub xcrs: Vec<XcrState>,
}

impl XcrsState {
    pub(super) fn to_kvm(&self) -> Result<kvm_xcrs, VcpuStateError> {
        let mut x = kvm_xcrs {
            flags: self.flags,
            ..Default::default()
        };
        if self.xcrs.len() > x.xcrs.len() {
            return Err(VcpuStateError::Malformed {
                what: "the XCR list",
                found: self.xcrs.len(),
                expected: "at most 16 entries",
            });
        }
        x.nr_xcrs = self.xcrs.len() as u32;
        for (kvm, saved) in x.xcrs.iter_mut().zip(&self.xcrs) {
            *kvm = kvm_xcr {
                xcr: saved.xcr,
                reserved: 0,
                value: saved.value,
            };
        }
        Ok(x)
    }
}

impl From<&kvm_xcrs> for XcrsState {
    fn from(x: &kvm_xcrs) -> Self {
        let count = (x.nr_xcrs as usize).min(x.xcrs.len());
        XcrsState {
            flags: x.flags,
            xcrs: x.xcrs[..count]
                .iter()
                .map(|e| XcrState {
                    xcr: e.xcr,
                    value: e.value,
                })
                .collect(),
        }
    }
}

/// The debug registers (`struct kvm_debugregs`).
#[allow(missing_docs)] // The fields are the x86 registers of the same name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugRegsState {
    pub db: [u64; 4],
    pub dr6: u64,
    pub dr7: u64,
    /// KVM's flags.
    pub flags: u64,
}

impl From<&kvm_debugregs> for DebugRegsState {
    fn from(d: &kvm_debugregs) -> Self {
        DebugRegsState {
            db: d.db,
            dr6: d.dr6,
            dr7: d.dr7,
            flags: d.flags,
        }
    }
}

impl From<&DebugRegsState> for kvm_debugregs {
    fn from(d: &DebugRegsState) -> Self {
        kvm_debugregs {
            db: d.db,
            dr6: d.dr6,
            dr7: d.dr7,
            flags: d.flags,
            ..Default::default()
        }
    }
}
