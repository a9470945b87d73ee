//! podvm device models.
//!
//! Devices here know nothing of KVM: they are register models behind the
//! [`BusDevice`] trait, raising interrupts through a [`vm_superio::Trigger`]
//! and writing through ordinary `std::io::Write` sinks, so that tests drive
//! them with plain fakes.

pub mod bus;
pub mod legacy;
pub mod rate_limiter;
mod trigger;
pub mod virtio;

pub use bus::{Bus, BusDevice, BusError};
pub use trigger::EventFdTrigger;
