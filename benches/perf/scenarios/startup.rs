//! `startup`: exec of the VMM → its API socket accepting connections.

use super::{Ctx, Sample, Scenario};
use crate::vmm::{Instance, Vmm};
use crate::PerfError;

/// The startup scenario.
pub struct Startup;

impl Scenario for Startup {
    fn name(&self) -> &'static str {
        "startup"
    }

    fn about(&self) -> &'static str {
        "exec -> API socket accepting connections"
    }

    fn run(&self, ctx: &Ctx, vmm: &Vmm) -> Result<Vec<Sample>, PerfError> {
        let sock = ctx.path(vmm, "sock");
        let mut vm = Instance::spawn(vmm.api_command(&sock, None), Some(sock))?;
        let t = vm.wait_accepting()?;
        Ok(vec![Sample::ms("exec_to_api_accepting", vm.spawned, t)])
    }
}
