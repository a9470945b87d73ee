//! KVM state: the VM file descriptor and the vCPUs.

pub mod exit;
pub mod vcpu;
pub mod vm;
