//! `api`: `GET /` requests per second and latency percentiles over one
//! keep-alive connection to a VMM with no VM started.

use std::time::Instant;

use super::{Ctx, Sample, Scenario, PER_S, US};
use crate::stats;
use crate::vmm::{Instance, Vmm};
use crate::PerfError;

/// The API scenario.
pub struct Api;

impl Scenario for Api {
    fn name(&self) -> &'static str {
        "api"
    }

    fn about(&self) -> &'static str {
        "GET / over one connection: requests per second, p50 and p99 latency"
    }

    fn run(&self, ctx: &Ctx, vmm: &Vmm) -> Result<Vec<Sample>, PerfError> {
        let requests = if ctx.quick { 200 } else { 5000 };
        let sock = ctx.path(vmm, "sock");
        let mut vm = Instance::spawn(vmm.api_command(&sock, None), Some(sock))?;
        vm.wait_accepting()?;
        let mut conn = vm.conn()?;
        for _ in 0..requests / 10 {
            vm.expect(&mut conn, "GET", "/", "", 200)?;
        }
        let mut lat = Vec::with_capacity(requests);
        let t0 = Instant::now();
        for _ in 0..requests {
            let t = Instant::now();
            vm.expect(&mut conn, "GET", "/", "", 200)?;
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let total = t0.elapsed().as_secs_f64();
        let s = stats::summarize(&lat).expect("at least one request");
        Ok(vec![
            Sample::new("get_requests_per_s", PER_S, requests as f64 / total),
            Sample::new("get_p50_latency", US, s.median),
            Sample::new("get_p99_latency", US, s.p99),
        ])
    }
}
