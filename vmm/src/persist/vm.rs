//! VM-wide KVM state: the two 8259 PICs and the IOAPIC of the in-kernel
//! irqchip, the PIT, and the KVM clock.
//!
//! The state types are plain data with every field named after its
//! `<asm/kvm.h>` counterpart; [`save_vm_state`] and [`restore_vm_state`]
//! move them in and out of a VM file descriptor.

use kvm_bindings::{
    kvm_clock_data, kvm_ioapic_state, kvm_irqchip, kvm_pic_state, kvm_pit_channel_state,
    kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

/// Redirection entries of KVM's IOAPIC (`KVM_IOAPIC_NUM_PINS`).
pub const IOAPIC_PINS: usize = 24;
/// Channels of the 8254 PIT.
pub const PIT_CHANNELS: usize = 3;

/// Reading or writing the VM's KVM state failed.
#[derive(Debug, thiserror::Error)]
pub enum VmStateError {
    /// A `KVM_GET_*` ioctl failed.
    #[error("cannot read the VM's {what}: {source}")]
    Get {
        /// What was being read.
        what: &'static str,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A `KVM_SET_*` ioctl failed.
    #[error("cannot restore the VM's {what}: {source}")]
    Set {
        /// What was being restored.
        what: &'static str,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The saved state does not have the shape KVM's structures need.
    #[error("saved VM state is malformed: {what} has {found} entries, KVM has {expected}")]
    Malformed {
        /// The field.
        what: &'static str,
        /// Entries saved.
        found: usize,
        /// Entries KVM has.
        expected: usize,
    },
}

/// One 8259 PIC (`struct kvm_pic_state`).
#[allow(missing_docs)] // The fields are KVM's, named as in <asm/kvm.h>.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PicState {
    pub last_irr: u8,
    pub irr: u8,
    pub imr: u8,
    pub isr: u8,
    pub priority_add: u8,
    pub irq_base: u8,
    pub read_reg_select: u8,
    pub poll: u8,
    pub special_mask: u8,
    pub init_state: u8,
    pub auto_eoi: u8,
    pub rotate_on_auto_eoi: u8,
    pub special_fully_nested_mode: u8,
    pub init4: u8,
    pub elcr: u8,
    pub elcr_mask: u8,
}

impl From<&kvm_pic_state> for PicState {
    fn from(p: &kvm_pic_state) -> Self {
        PicState {
            last_irr: p.last_irr,
            irr: p.irr,
            imr: p.imr,
            isr: p.isr,
            priority_add: p.priority_add,
            irq_base: p.irq_base,
            read_reg_select: p.read_reg_select,
            poll: p.poll,
            special_mask: p.special_mask,
            init_state: p.init_state,
            auto_eoi: p.auto_eoi,
            rotate_on_auto_eoi: p.rotate_on_auto_eoi,
            special_fully_nested_mode: p.special_fully_nested_mode,
            init4: p.init4,
            elcr: p.elcr,
            elcr_mask: p.elcr_mask,
        }
    }
}

impl From<&PicState> for kvm_pic_state {
    fn from(p: &PicState) -> Self {
        kvm_pic_state {
            last_irr: p.last_irr,
            irr: p.irr,
            imr: p.imr,
            isr: p.isr,
            priority_add: p.priority_add,
            irq_base: p.irq_base,
            read_reg_select: p.read_reg_select,
            poll: p.poll,
            special_mask: p.special_mask,
            init_state: p.init_state,
            auto_eoi: p.auto_eoi,
            rotate_on_auto_eoi: p.rotate_on_auto_eoi,
            special_fully_nested_mode: p.special_fully_nested_mode,
            init4: p.init4,
            elcr: p.elcr,
            elcr_mask: p.elcr_mask,
        }
    }
}

/// The IOAPIC (`struct kvm_ioapic_state`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoapicState {
    /// Guest physical address of its registers.
    pub base_address: u64,
    /// The selected register.
    pub ioregsel: u32,
    /// Its APIC id.
    pub id: u32,
    /// Interrupt request register.
    pub irr: u32,
    /// The redirection table, one raw 64-bit entry per pin.
    pub redirtbl: Vec<u64>,
}

impl From<&kvm_ioapic_state> for IoapicState {
    fn from(s: &kvm_ioapic_state) -> Self {
        IoapicState {
            base_address: s.base_address,
            ioregsel: s.ioregsel,
            id: s.id,
            irr: s.irr,
            redirtbl: s
                .redirtbl
                .iter()
                // SAFETY: `bits` covers the whole 8-byte union and any bit
                // pattern is a valid u64.
                .map(|entry| unsafe { entry.bits })
                .collect(),
        }
    }
}

impl IoapicState {
    fn to_kvm(&self) -> Result<kvm_ioapic_state, VmStateError> {
        if self.redirtbl.len() != IOAPIC_PINS {
            return Err(VmStateError::Malformed {
                what: "the IOAPIC redirection table",
                found: self.redirtbl.len(),
                expected: IOAPIC_PINS,
            });
        }
        let mut s = kvm_ioapic_state {
            base_address: self.base_address,
            ioregsel: self.ioregsel,
            id: self.id,
            irr: self.irr,
            ..Default::default()
        };
        for (entry, &bits) in s.redirtbl.iter_mut().zip(&self.redirtbl) {
            entry.bits = bits;
        }
        Ok(s)
    }
}

/// One PIT channel (`struct kvm_pit_channel_state`).
#[allow(missing_docs)] // The fields are KVM's, named as in <asm/kvm.h>.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitChannelState {
    pub count: u32,
    pub latched_count: u16,
    pub count_latched: u8,
    pub status_latched: u8,
    pub status: u8,
    pub read_state: u8,
    pub write_state: u8,
    pub write_latch: u8,
    pub rw_mode: u8,
    pub mode: u8,
    pub bcd: u8,
    pub gate: u8,
    /// Host time of the last count load. KVM ignores it on restore: it
    /// reloads the count at the time of `KVM_SET_PIT2`.
    pub count_load_time: i64,
}

impl From<&kvm_pit_channel_state> for PitChannelState {
    fn from(c: &kvm_pit_channel_state) -> Self {
        PitChannelState {
            count: c.count,
            latched_count: c.latched_count,
            count_latched: c.count_latched,
            status_latched: c.status_latched,
            status: c.status,
            read_state: c.read_state,
            write_state: c.write_state,
            write_latch: c.write_latch,
            rw_mode: c.rw_mode,
            mode: c.mode,
            bcd: c.bcd,
            gate: c.gate,
            count_load_time: c.count_load_time,
        }
    }
}

impl From<&PitChannelState> for kvm_pit_channel_state {
    fn from(c: &PitChannelState) -> Self {
        kvm_pit_channel_state {
            count: c.count,
            latched_count: c.latched_count,
            count_latched: c.count_latched,
            status_latched: c.status_latched,
            status: c.status,
            read_state: c.read_state,
            write_state: c.write_state,
            write_latch: c.write_latch,
            rw_mode: c.rw_mode,
            mode: c.mode,
            bcd: c.bcd,
            gate: c.gate,
            count_load_time: c.count_load_time,
        }
    }
}

/// The PIT (`struct kvm_pit_state2`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PitState {
    /// Its three channels.
    pub channels: Vec<PitChannelState>,
    /// `KVM_PIT_FLAGS_*`.
    pub flags: u32,
}

impl From<&kvm_pit_state2> for PitState {
    fn from(p: &kvm_pit_state2) -> Self {
        PitState {
            channels: p.channels.iter().map(PitChannelState::from).collect(),
            flags: p.flags,
        }
    }
}

impl PitState {
    fn to_kvm(&self) -> Result<kvm_pit_state2, VmStateError> {
        if self.channels.len() != PIT_CHANNELS {
            return Err(VmStateError::Malformed {
                what: "the PIT",
                found: self.channels.len(),
                expected: PIT_CHANNELS,
            });
        }
        let mut p = kvm_pit_state2 {
            flags: self.flags,
            ..Default::default()
        };
        for (kvm, saved) in p.channels.iter_mut().zip(&self.channels) {
            *kvm = saved.into();
        }
        Ok(p)
    }
}

/// The KVM clock (`struct kvm_clock_data`): what the guest's kvmclock
/// reads, in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockState {
    /// The clock at the time it was saved.
    pub clock: u64,
    /// `KVM_CLOCK_*` flags KVM reported with it (informational: a restore
    /// passes none, so the clock resumes from `clock`).
    pub flags: u32,
}

/// The VM-wide KVM state of a paused VM.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmState {
    /// The master 8259 PIC.
    pub pic_master: PicState,
    /// The slave 8259 PIC.
    pub pic_slave: PicState,
    /// The IOAPIC.
    pub ioapic: IoapicState,
    /// The PIT.
    pub pit: PitState,
    /// The KVM clock.
    pub clock: ClockState,
}

fn get_chip(fd: &VmFd, chip_id: u32, what: &'static str) -> Result<kvm_irqchip, VmStateError> {
    let mut chip = kvm_irqchip {
        chip_id,
        ..Default::default()
    };
    fd.get_irqchip(&mut chip)
        .map_err(|source| VmStateError::Get { what, source })?;
    Ok(chip)
}

fn get_pic(fd: &VmFd, chip_id: u32, what: &'static str) -> Result<PicState, VmStateError> {
    let chip = get_chip(fd, chip_id, what)?;
    // SAFETY: for a PIC chip id KVM fills the `pic` member of the union,
    // and any bit pattern is a valid `kvm_pic_state` (all u8).
    Ok(PicState::from(unsafe { &chip.chip.pic }))
}

/// Reads the VM-wide state of `fd`, which has an in-kernel irqchip and
/// PIT. Every vCPU must be paused.
pub fn save_vm_state(fd: &VmFd) -> Result<VmState, VmStateError> {
    let pic_master = get_pic(fd, KVM_IRQCHIP_PIC_MASTER, "master PIC")?;
    let pic_slave = get_pic(fd, KVM_IRQCHIP_PIC_SLAVE, "slave PIC")?;
    let ioapic = get_chip(fd, KVM_IRQCHIP_IOAPIC, "IOAPIC")?;
    // SAFETY: for the IOAPIC chip id KVM fills the `ioapic` member, and
    // any bit pattern is a valid `kvm_ioapic_state` (integers only).
    let ioapic = IoapicState::from(unsafe { &ioapic.chip.ioapic });
    let pit = fd.get_pit2().map_err(|source| VmStateError::Get {
        what: "PIT",
        source,
    })?;
    let clock = fd.get_clock().map_err(|source| VmStateError::Get {
        what: "KVM clock",
        source,
    })?;
    Ok(VmState {
        pic_master,
        pic_slave,
        ioapic,
        pit: PitState::from(&pit),
        clock: ClockState {
            clock: clock.clock,
            flags: clock.flags,
        },
    })
}

/// Restores `state` into `fd`, a new VM whose irqchip and PIT exist
/// (`Vm::setup_irqchip`). Checks the whole state before the first ioctl.
pub fn restore_vm_state(fd: &VmFd, state: &VmState) -> Result<(), VmStateError> {
    let ioapic = state.ioapic.to_kvm()?;
    let pit = state.pit.to_kvm()?;
    let set = |what| move |source| VmStateError::Set { what, source };
    for (chip_id, pic, what) in [
        (KVM_IRQCHIP_PIC_MASTER, &state.pic_master, "master PIC"),
        (KVM_IRQCHIP_PIC_SLAVE, &state.pic_slave, "slave PIC"),
    ] {
        let mut chip = kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        chip.chip.pic = pic.into();
        fd.set_irqchip(&chip).map_err(set(what))?;
    }
    let mut chip = kvm_irqchip {
        chip_id: KVM_IRQCHIP_IOAPIC,
        ..Default::default()
    };
    chip.chip.ioapic = ioapic;
    fd.set_irqchip(&chip).map_err(set("IOAPIC"))?;
    fd.set_pit2(&pit).map_err(set("PIT"))?;
    // No flags: KVM then sets the clock to exactly `clock` now, so the
    // guest's clock goes on from the saved value without a jump (the time
    // the VM spent saved is not added; KVM_CLOCK_REALTIME would add it).
    let clock = kvm_clock_data {
        clock: state.clock.clock,
        ..Default::default()
    };
    fd.set_clock(&clock).map_err(set("KVM clock"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::vm::Vm;
    use kvm_ioctls::Kvm;

    fn vm(kvm: &Kvm) -> Vm {
        let vm = Vm::new(kvm).unwrap();
        vm.setup_irqchip().unwrap();
        vm
    }

    #[test]
    fn malformed_tables_are_refused_before_any_ioctl() {
        let mut state = VmState {
            ioapic: IoapicState {
                redirtbl: vec![0; IOAPIC_PINS],
                ..Default::default()
            },
            pit: PitState {
                channels: vec![PitChannelState::default(); 2],
                flags: 0,
            },
            ..Default::default()
        };
        assert_eq!(
            state.pit.to_kvm().unwrap_err().to_string(),
            "saved VM state is malformed: the PIT has 2 entries, KVM has 3"
        );
        state.ioapic.redirtbl.pop();
        assert_eq!(
            state.ioapic.to_kvm().unwrap_err().to_string(),
            "saved VM state is malformed: the IOAPIC redirection table has 23 entries, KVM has 24"
        );
    }

    #[test]
    fn irqchip_pit_and_clock_move_to_a_new_vm() {
        if !testkit::need_kvm("irqchip_pit_and_clock_move_to_a_new_vm") {
            return;
        }
        let kvm = Kvm::new().expect("/dev/kvm opened a moment ago");
        let old = vm(&kvm);
        // Give every part a state a new VM does not start with.
        let mut state = save_vm_state(old.fd()).unwrap();
        state.pic_master.imr = 0x5a;
        state.pic_slave.irq_base = 0x70;
        state.ioapic.redirtbl[3] = 0x0001_0000_0000_a031 & !(1 << 12);
        state.ioapic.id = 2;
        state.pit.channels[2].gate = 1;
        state.pit.channels[0].count = 0x1234;
        // 1000 s: far beyond what a new VM's clock reads.
        state.clock.clock = 1_000_000_000_000;
        restore_vm_state(old.fd(), &state).unwrap();
        let saved = save_vm_state(old.fd()).unwrap();
        drop(old);

        let new = vm(&kvm);
        let fresh = save_vm_state(new.fd()).unwrap();
        assert!(fresh.clock.clock < saved.clock.clock);
        restore_vm_state(new.fd(), &saved).unwrap();
        let back = save_vm_state(new.fd()).unwrap();
        assert_eq!(back.pic_master, saved.pic_master);
        assert_eq!(back.pic_slave, saved.pic_slave);
        assert_eq!(back.ioapic, saved.ioapic);
        assert_eq!(back.ioapic.redirtbl[3], 0x0001_0000_0000_a031 & !(1 << 12));
        assert_eq!(back.pit.channels[2].gate, 1);
        assert_eq!(back.pit.channels[0].count, 0x1234);
        // The clock continues from the saved value: never backwards, and
        // not by more than this test can take.
        assert!(
            back.clock.clock >= saved.clock.clock,
            "{back:?} < {saved:?}"
        );
        assert!(back.clock.clock - saved.clock.clock < 60_000_000_000);
    }

    #[test]
    fn the_state_survives_json() {
        let state = VmState {
            pic_master: PicState {
                imr: 0xff,
                irq_base: 0x20,
                ..Default::default()
            },
            ioapic: IoapicState {
                redirtbl: (0..IOAPIC_PINS as u64).map(|i| i << 56 | 0x10000).collect(),
                ..Default::default()
            },
            pit: PitState {
                channels: vec![PitChannelState::default(); PIT_CHANNELS],
                flags: 1,
            },
            clock: ClockState {
                clock: u64::MAX,
                flags: 2,
            },
            ..Default::default()
        };
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<VmState>(&json).unwrap(), state);
    }
}
