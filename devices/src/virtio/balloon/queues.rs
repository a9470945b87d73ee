//! What each of the balloon's queues does with the buffers the driver
//! posts: page frame numbers to free or take back, statistics, free page
//! reports and hints. Each function is one bounded pass over its queue.

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::device::{
    BalloonCounters, HintingState, BALLOON_QUEUE_SIZE, FREE_PAGE_HINT_DONE, FREE_PAGE_HINT_STOP,
};
use super::discard::{discard, DiscardError, PAGE_SIZE};
use super::partial::PartialHugePages;
use super::stats::{GuestStats, MAX_STAT_ENTRIES, STAT_ENTRY_LEN};
use crate::virtio::queue::{log_this, next_to_serve, Chain};
use crate::virtio::ChainError;

/// Most page frame numbers read from one chain (16 KiB of them; Linux
/// sends 256 at a time): bounds the work one request can cause.
pub(super) const MAX_PFNS_PER_CHAIN: usize = 4096;
/// Most chains served in one pass, so that a driver that keeps refilling a
/// queue cannot hold the event loop.
const CHAIN_BUDGET: usize = 64;

/// What the queue passes work on, apart from the common part.
pub(crate) struct Pages {
    /// The page size each memory region frees in (read at activation).
    pub(super) page_sizes: Vec<u64>,
    pub(super) pfns: Vec<u32>,
    pub(super) bytes: Vec<u8>,
    pub(super) counters: BalloonCounters,
    /// Whether the pass returned a buffer (and may interrupt).
    pub(super) used: bool,
    /// Ballooned pages of huge pages not yet wholly ballooned.
    pub(super) partial: PartialHugePages,
}

/// After a hinting pass: whether the guest's STOP is to be answered with
/// DONE by the device (and it now is).
pub(super) fn take_stop_ack(h: &mut HintingState) -> bool {
    let stopped = h.guest_cmd == Some(FREE_PAGE_HINT_STOP)
        && h.host_cmd > FREE_PAGE_HINT_DONE
        && h.acknowledge_on_stop;
    if stopped {
        h.host_cmd = FREE_PAGE_HINT_DONE;
    }
    stopped
}

impl Pages {
    /// Counts a malformed buffer, and logs it now and then.
    fn malformed(&mut self, why: &dyn std::fmt::Display) {
        if log_this(&mut self.counters.malformed) {
            log::warn!(
                "virtio-balloon: returned a malformed buffer unused: {why} ({} so far)",
                self.counters.malformed
            );
        }
    }

    /// Frees `len` bytes at `addr`; returns the bytes freed (0 when the
    /// range is outside guest memory or the host refused: counted).
    fn free(&mut self, mem: &GuestMemoryMmap, addr: u64, len: u64) -> Result<u64, DiscardError> {
        match discard(mem, &self.page_sizes, GuestAddress(addr), len) {
            Ok(n) => Ok(n),
            Err(e @ DiscardError::Host { .. }) => {
                if log_this(&mut self.counters.discard_failures) {
                    log::warn!("virtio-balloon: {e}");
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

/// Why a buffer is not what its queue takes.
#[derive(Debug, thiserror::Error)]
enum BadBuffer {
    #[error("page frame numbers in a device-writable buffer")]
    Writable,
    #[error("a buffer of {0} bytes is not a whole number of page frame numbers")]
    Partial(u32),
    #[error("more than {MAX_PFNS_PER_CHAIN} page frame numbers in one request")]
    TooMany,
    #[error("a buffer lies outside guest memory")]
    Unreadable,
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// Reads the page frame numbers of `chain` (device-readable buffers of
/// le32s) into `pfns`.
fn read_pfns(
    chain: Chain<'_, GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    pfns: &mut Vec<u32>,
    bytes: &mut Vec<u8>,
) -> Result<(), BadBuffer> {
    pfns.clear();
    for desc in chain {
        let desc = desc?;
        if desc.is_write_only() {
            return Err(BadBuffer::Writable);
        }
        let len = desc.len();
        if len % 4 != 0 {
            return Err(BadBuffer::Partial(len));
        }
        let n = len as usize / 4;
        if pfns.len() + n > MAX_PFNS_PER_CHAIN {
            return Err(BadBuffer::TooMany);
        }
        bytes.resize(len as usize, 0);
        mem.read_slice(bytes, desc.addr())
            .map_err(|_| BadBuffer::Unreadable)?;
        pfns.extend(
            bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    }
    Ok(())
}

/// Runs of consecutive page frame numbers in sorted, deduplicated `pfns`:
/// `(first, count)`.
fn runs(pfns: &mut Vec<u32>) -> Vec<(u64, u64)> {
    pfns.sort_unstable();
    pfns.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &pfn in pfns.iter() {
        let pfn = u64::from(pfn);
        match out.last_mut() {
            Some((first, count)) if *first + *count == pfn => *count += 1,
            _ => out.push((pfn, 1)),
        }
    }
    out
}

/// One bounded pass: `serve` handles each chain the driver posted and
/// says which chain to give back now (its own, or none), up to
/// [`CHAIN_BUDGET`] chains; true when the budget ran out.
fn each_chain(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    pages: &mut Pages,
    mut serve: impl FnMut(Chain<'_, GuestMemoryMmap>, &mut Pages) -> Option<u16>,
) -> Result<bool, virtio_queue::Error> {
    let mut served = 0;
    while let Some(chain) = next_to_serve(
        queue,
        mem,
        usize::from(BALLOON_QUEUE_SIZE),
        &mut pages.counters.malformed,
        "virtio-balloon",
    )? {
        if let Some(head) = serve(chain, pages) {
            queue.add_used(mem, head, 0)?;
            pages.used = true;
        }
        served += 1;
        if served == CHAIN_BUDGET {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Inflate or deflate requests: each chain a list of page frame numbers.
/// Inflated pages inside guest memory are freed on the host; deflated
/// ones need nothing (they fault in again, zeroed or from the snapshot).
pub(super) fn pfn_batch(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    pages: &mut Pages,
    inflate: bool,
) -> Result<bool, virtio_queue::Error> {
    each_chain(queue, mem, pages, |chain, pages| {
        let head = chain.head_index();
        let mut pfns = std::mem::take(&mut pages.pfns);
        match read_pfns(chain, mem, &mut pfns, &mut pages.bytes) {
            Ok(()) => {
                for (first, count) in runs(&mut pfns) {
                    serve_run(mem, pages, first, count, inflate);
                }
            }
            Err(e) => pages.malformed(&e),
        }
        pages.pfns = pfns;
        Some(head)
    })
}

/// One run of pages: the parts inside guest memory are counted (and, when
/// inflating, freed); the rest is counted as outside.
fn serve_run(mem: &GuestMemoryMmap, pages: &mut Pages, first: u64, count: u64, inflate: bool) {
    let mut pfn = first;
    let end = first + count;
    while pfn < end {
        let addr = pfn * PAGE_SIZE;
        let Some(region) = mem.find_region(GuestAddress(addr)) else {
            pages.counters.pages_outside += 1;
            pfn += 1;
            continue;
        };
        let region_end = (region.start_addr().0 + region.len()) / PAGE_SIZE;
        let n = end.min(region_end) - pfn;
        let huge = mem
            .iter()
            .position(|r| r.start_addr() == region.start_addr())
            .and_then(|i| pages.page_sizes.get(i).copied())
            .unwrap_or(PAGE_SIZE);
        match (inflate, huge > PAGE_SIZE) {
            (true, false) => {
                pages.counters.inflated_pages += n;
                if let Ok(freed) = pages.free(mem, addr, n * PAGE_SIZE) {
                    pages.counters.inflated_bytes_freed += freed;
                }
            }
            // Huge pages: freed once every page of one is in the balloon.
            (true, true) => {
                pages.counters.inflated_pages += n;
                for base in pages.partial.inflate(addr, n, huge) {
                    if let Ok(freed) = pages.free(mem, base, huge) {
                        pages.counters.inflated_bytes_freed += freed;
                    }
                }
            }
            (false, huge_pages) => {
                pages.counters.deflated_pages += n;
                if huge_pages {
                    pages.partial.deflate(addr, n, huge);
                }
            }
        }
        pfn += n;
    }
}

/// Statistics: the buffer's entries are recorded and the buffer held until
/// the next poll; a driver that sends a second one gets the first back.
pub(super) fn stats_batch(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    pages: &mut Pages,
    held: &mut Option<u16>,
    stats: &mut GuestStats,
) -> Result<bool, virtio_queue::Error> {
    each_chain(queue, mem, pages, |chain, pages| {
        let head = chain.head_index();
        match read_stats(chain, mem, &mut pages.bytes) {
            Ok(()) => {
                stats.record_all(&pages.bytes);
                pages.counters.stats_updates += 1;
            }
            Err(e) => pages.malformed(&e),
        }
        held.replace(head)
    })
}

/// The device-readable bytes of a stats chain, at most
/// [`MAX_STAT_ENTRIES`] entries' worth.
fn read_stats(
    chain: Chain<'_, GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    bytes: &mut Vec<u8>,
) -> Result<(), BadBuffer> {
    bytes.clear();
    let cap = MAX_STAT_ENTRIES * STAT_ENTRY_LEN;
    for desc in chain {
        let desc = desc?;
        if desc.is_write_only() {
            return Err(BadBuffer::Writable);
        }
        let start = bytes.len();
        let n = (desc.len() as usize).min(cap - start);
        bytes.resize(start + n, 0);
        mem.read_slice(&mut bytes[start..], desc.addr())
            .map_err(|_| BadBuffer::Unreadable)?;
    }
    Ok(())
}

/// Free page reports: every buffer of a chain is a free range, freed on the
/// host when it lies inside guest memory.
pub(super) fn report_batch(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    pages: &mut Pages,
) -> Result<bool, virtio_queue::Error> {
    each_chain(queue, mem, pages, |chain, pages| {
        let head = chain.head_index();
        for desc in chain {
            match desc {
                Ok(d) => {
                    pages.counters.reported_ranges += 1;
                    match pages.free(mem, d.addr().0, u64::from(d.len())) {
                        Ok(freed) => pages.counters.reported_bytes_freed += freed,
                        Err(e @ DiscardError::Outside { .. }) => pages.malformed(&e),
                        Err(DiscardError::Host { .. }) => {}
                    }
                }
                Err(e) => {
                    pages.malformed(&e);
                    break;
                }
            }
        }
        Some(head)
    })
}

/// Free page hints: a 4-byte device-readable buffer is the guest's command
/// id; any other buffer a free range, freed on the host only while the
/// run it belongs to is the host's current one.
pub(super) fn hint_batch(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    pages: &mut Pages,
    hinting: &mut HintingState,
) -> Result<bool, virtio_queue::Error> {
    each_chain(queue, mem, pages, |chain, pages| {
        let head = chain.head_index();
        for desc in chain {
            let d = match desc {
                Ok(d) => d,
                Err(e) => {
                    pages.malformed(&e);
                    break;
                }
            };
            if d.len() == 4 && !d.is_write_only() {
                match mem.read_obj::<u32>(d.addr()) {
                    Ok(cmd) => hinting.guest_cmd = Some(u32::from_le(cmd)),
                    Err(_) => pages.malformed(&BadBuffer::Unreadable),
                }
                continue;
            }
            let current = hinting.host_cmd > FREE_PAGE_HINT_DONE
                && hinting.guest_cmd == Some(hinting.host_cmd);
            if !current {
                // A hint of a run that ended, or before any command.
                continue;
            }
            pages.counters.hinted_ranges += 1;
            match pages.free(mem, d.addr().0, u64::from(d.len())) {
                Ok(freed) => pages.counters.hinted_bytes_freed += freed,
                Err(e @ DiscardError::Outside { .. }) => pages.malformed(&e),
                Err(DiscardError::Host { .. }) => {}
            }
        }
        Some(head)
    })
}
