//! The block device model: what it offers the driver, and how it serves
//! the request queue.

use std::fs::File;
use std::io;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemory;

use super::backend::DiskBackend;
use super::request::{
    RequestBuffers, RequestError, HEADER_LEN, SECTOR_SHIFT, SECTOR_SIZE, VIRTIO_BLK_ID_BYTES,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use crate::rate_limiter::{BucketUpdate, RateLimiter, RefillTimer};
use crate::virtio::guest_mem::write_guest;
use crate::virtio::queue::{drain, interrupt_if_wanted, log_this, next_to_serve};
use crate::virtio::{
    device_type, ChainError, IrqLine, VirtioCommon, VirtioDevice, VIRTIO_F_VERSION_1,
};

/// Size of the one request queue.
pub const BLOCK_QUEUE_SIZE: u16 = 256;

/// Feature bit: `seg_max` holds the most data segments per request
/// (§5.2.3).
pub const VIRTIO_BLK_F_SEG_MAX: u32 = 2;
/// Feature bit: the device is read-only (§5.2.3).
pub const VIRTIO_BLK_F_RO: u32 = 5;
/// Feature bit: `blk_size` holds the block size (§5.2.3).
pub const VIRTIO_BLK_F_BLK_SIZE: u32 = 6;
/// Feature bit: the device serves VIRTIO_BLK_T_FLUSH (§5.2.3).
pub const VIRTIO_BLK_F_FLUSH: u32 = 9;

// Offsets in `struct virtio_blk_config` (§5.2.4), little-endian.
/// `le64 capacity`: size in 512-byte sectors.
const CONFIG_CAPACITY: usize = 0;
/// `le32 size_max`: largest segment; meaningful only with
/// VIRTIO_BLK_F_SIZE_MAX, which is not offered, so it stays 0.
const CONFIG_SIZE_MAX: usize = 8;
/// `le32 seg_max`: most data segments in one request.
const CONFIG_SEG_MAX: usize = 12;
/// `le32 blk_size`: the block size the driver should use. (Between
/// `seg_max` and `blk_size` lies `geometry`, not offered: zeros.)
const CONFIG_BLK_SIZE: usize = 20;
/// The fields described above; reads past them return zeros.
const CONFIG_LEN: usize = 24;

/// The descriptors of a request beyond its data: the header and the status
/// (Linux sizes its requests from `seg_max` plus these two).
const NON_DATA_DESCRIPTORS: u16 = 2;
/// The most data segments in one request, as `seg_max` tells the driver.
const SEG_MAX: u16 = BLOCK_QUEUE_SIZE - NON_DATA_DESCRIPTORS;
/// The most descriptors in one request; a longer chain is refused.
const MAX_DESCRIPTORS: usize = (SEG_MAX + NON_DATA_DESCRIPTORS) as usize;

/// The most bytes moved through the bounce buffer by one backend call. A
/// larger request takes several calls; this bounds the memory a guest can
/// make the device allocate (a chain may describe up to 4 GiB).
const MAX_CHUNK: u64 = 1 << 20;

/// A block device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Reading the size of the backing disk failed.
    #[error("cannot read the disk's size: {0}")]
    ReadDiskSize(#[source] io::Error),
    /// Creating the device's state event failed.
    #[error("cannot create the device's state event: {0}")]
    CreateStateEvent(#[source] io::Error),
    /// Creating the rate limiter's timer failed.
    #[error("cannot create the rate limiter's timer: {0}")]
    CreateTimer(#[source] io::Error),
}

/// The disk a block device serves, with the scratch space its requests
/// use. Everything queue processing needs besides the queue, memory and
/// interrupt.
pub struct Disk {
    backend: Box<dyn DiskBackend>,
    id: String,
    /// `virtio-blk "<id>"`, how logs name the device.
    name: String,
    /// The id as GET_ID returns it: zero-padded or truncated.
    id_bytes: [u8; VIRTIO_BLK_ID_BYTES],
    capacity_sectors: u64,
    read_only: bool,
    /// Reused by every request; holds [`MAX_DESCRIPTORS`] without growing.
    bufs: RequestBuffers,
    /// Reused by every request; grows to the largest transfer up to
    /// [`MAX_CHUNK`].
    bounce: Vec<u8>,
    counters: BlockCounters,
    /// Every request takes one operation and, a read or write, its data
    /// bytes (as Firecracker counts them).
    limiter: RateLimiter,
}

/// What a block device has served, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockCounters {
    /// Read (IN) requests served.
    pub reads: u64,
    /// Write (OUT) requests served.
    pub writes: u64,
    /// Bytes read for the guest.
    pub read_bytes: u64,
    /// Bytes written for the guest.
    pub write_bytes: u64,
    /// Flush requests served.
    pub flushes: u64,
    /// Requests answered with an error status, or dropped: without a
    /// status byte, or as available-ring entries that name no chain.
    pub errors: u64,
}

impl Disk {
    /// A disk over `backend`. Its capacity is the backend's size rounded
    /// down to whole sectors: a partial last sector is not addressable.
    pub fn new(
        id: String,
        backend: Box<dyn DiskBackend>,
        read_only: bool,
    ) -> Result<Self, BlockError> {
        let capacity_sectors = capacity_of(&*backend, &id)?;
        let mut id_bytes = [0u8; VIRTIO_BLK_ID_BYTES];
        let n = id.len().min(VIRTIO_BLK_ID_BYTES);
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        Ok(Disk {
            backend,
            name: format!("virtio-blk {id:?}"),
            id,
            id_bytes,
            capacity_sectors,
            read_only,
            bufs: RequestBuffers::with_capacity(MAX_DESCRIPTORS),
            bounce: Vec::new(),
            counters: BlockCounters::default(),
            limiter: RateLimiter::unlimited(),
        })
    }

    /// The drive id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The size in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    /// Whether writes are refused.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Serves from `backend` from now on, after flushing the old one (a
    /// failure is logged: the swap goes on), and returns the new capacity.
    /// What was served so far stays counted.
    fn swap_backend(&mut self, backend: Box<dyn DiskBackend>) -> Result<u64, BlockError> {
        let capacity_sectors = capacity_of(&*backend, &self.id)?;
        if let Err(e) = self.flush() {
            log::error!("{}: cannot flush the old image: {e}", self.name);
        }
        self.backend = backend;
        self.capacity_sectors = capacity_sectors;
        Ok(capacity_sectors)
    }

    /// Limits requests with `limiter` from now on.
    pub fn set_rate_limiter(&mut self, limiter: RateLimiter) {
        self.limiter = limiter;
    }

    /// The rate limiter.
    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// Makes every completed write durable.
    pub fn flush(&mut self) -> io::Result<()> {
        // Nothing was written to a read-only disk (and some read-only
        // backends, such as /dev/null, refuse fdatasync).
        if self.read_only {
            return Ok(());
        }
        self.backend.flush()
    }

    /// Serves one request and answers it: returns the used length (bytes
    /// written to the guest, status byte included). Never fails: a bad
    /// request gets `VIRTIO_BLK_S_IOERR` when it has a status byte, and is
    /// only counted and logged when it has none, or when its chain broke
    /// part-way (an indirect descriptor, too many descriptors), so that
    /// where its status byte lies is not known.
    pub fn serve<M: GuestMemory>(
        &mut self,
        mem: &M,
        chain: impl Iterator<Item = Result<virtio_queue::desc::split::Descriptor, ChainError>>,
    ) -> u32 {
        self.bufs.collect(mem, chain);
        self.serve_collected(mem)
    }

    /// Whether the rate limiter lets the collected request go now. A
    /// request without a status byte is dropped unanswered and costs
    /// nothing.
    fn admit<M: GuestMemory>(&mut self, mem: &M) -> bool {
        if self.bufs.status_addr().is_none() {
            return true;
        }
        let bufs = &self.bufs;
        self.limiter
            .consume_with(|| match bufs.header(mem).map(|h| h.request_type) {
                // The status byte exists: `writable_len` ≥ 1.
                Ok(VIRTIO_BLK_T_IN) => bufs.writable_len() - 1,
                Ok(VIRTIO_BLK_T_OUT) => bufs.readable_len() - HEADER_LEN,
                // Flushes, GET_ID, bad headers: an operation, no bytes.
                _ => 0,
            })
    }

    /// [`Disk::serve`] for the request [`RequestBuffers::collect`] holds.
    fn serve_collected<M: GuestMemory>(&mut self, mem: &M) -> u32 {
        let Some(status_addr) = self.bufs.status_addr() else {
            if log_this(&mut self.counters.errors) {
                let why = match self.bufs.broken() {
                    Some(e) => e.to_string(),
                    None => "it has no status byte".to_string(),
                };
                log::warn!(
                    "{}: dropped a request: {why} ({} failed requests)",
                    self.name,
                    self.counters.errors
                );
            }
            return 0;
        };
        let (status, written) = match self.execute(mem) {
            Ok(done) => done,
            Err(e) => {
                if log_this(&mut self.counters.errors) {
                    log::warn!(
                        "{}: {e} ({} failed requests)",
                        self.name,
                        self.counters.errors
                    );
                }
                (VIRTIO_BLK_S_IOERR, 0)
            }
        };
        if let Err(e) = write_guest(mem, status_addr, &[status]) {
            log::warn!("{}: cannot write the status: {e}", self.name);
            return written;
        }
        // The chain holds less than 4 GiB (a longer one is broken), so
        // data plus status fits.
        written.saturating_add(1)
    }

    /// Runs the request: returns its status and the data bytes written to
    /// the guest.
    fn execute<M: GuestMemory>(&mut self, mem: &M) -> Result<(u8, u32), RequestError> {
        if let Some(fault) = self.bufs.take_fault() {
            return Err(fault);
        }
        let header = self.bufs.header(mem)?;
        // Bytes after the header, and before the status byte; the status
        // byte exists, so `writable_len >= 1`.
        let readable_data = self.bufs.readable_len() - HEADER_LEN;
        let writable_data = self.bufs.writable_len() - 1;
        match header.request_type {
            VIRTIO_BLK_T_IN => {
                only_direction("IN", readable_data, "device-readable")?;
                let offset = self.disk_range(header.sector, writable_data)?;
                self.read(mem, offset, writable_data)?;
                self.counters.reads += 1;
                self.counters.read_bytes += writable_data;
                // `writable_data` < 4 GiB (see `serve`).
                Ok((VIRTIO_BLK_S_OK, writable_data as u32))
            }
            VIRTIO_BLK_T_OUT => {
                only_direction("OUT", writable_data, "device-writable")?;
                if self.read_only {
                    return Err(RequestError::ReadOnly);
                }
                let offset = self.disk_range(header.sector, readable_data)?;
                self.write(mem, offset, readable_data)?;
                self.counters.writes += 1;
                self.counters.write_bytes += readable_data;
                Ok((VIRTIO_BLK_S_OK, 0))
            }
            VIRTIO_BLK_T_FLUSH => {
                // Data in a flush is a driver mistake (§5.2.6.1 "SHOULD
                // NOT"), harmless: ignored.
                self.backend.flush().map_err(RequestError::FlushDisk)?;
                self.counters.flushes += 1;
                Ok((VIRTIO_BLK_S_OK, 0))
            }
            VIRTIO_BLK_T_GET_ID => {
                only_direction("GET_ID", readable_data, "device-readable")?;
                if writable_data < VIRTIO_BLK_ID_BYTES as u64 {
                    return Err(RequestError::IdBuffer(writable_data));
                }
                self.bufs.scatter(mem, 0, &self.id_bytes)?;
                Ok((VIRTIO_BLK_S_OK, VIRTIO_BLK_ID_BYTES as u32))
            }
            other => {
                log::debug!("{}: unsupported request {other}", self.name);
                Ok((VIRTIO_BLK_S_UNSUPP, 0))
            }
        }
    }

    /// Checks `len` bytes at `sector` are whole sectors inside the disk and
    /// returns their byte offset.
    fn disk_range(&self, sector: u64, len: u64) -> Result<u64, RequestError> {
        if !len.is_multiple_of(SECTOR_SIZE) {
            return Err(RequestError::DataLength(len));
        }
        // `sector` is the guest's: any u64. The capacity came from a file
        // size, so `capacity << 9` does not overflow.
        let capacity_bytes = self.capacity_sectors << SECTOR_SHIFT;
        sector
            .checked_mul(SECTOR_SIZE)
            .filter(|offset| {
                offset
                    .checked_add(len)
                    .is_some_and(|end| end <= capacity_bytes)
            })
            .ok_or(RequestError::BeyondCapacity {
                sector,
                len,
                capacity: self.capacity_sectors,
            })
    }

    /// Reads `len` disk bytes at `offset` into the guest's writable data:
    /// straight into guest memory when the backend can, else through the
    /// bounce buffer.
    fn read<M: GuestMemory>(&mut self, mem: &M, offset: u64, len: u64) -> Result<(), RequestError> {
        // `len` < 4 GiB (see `serve`).
        let backend = &mut self.backend;
        let direct = self
            .bufs
            .with_guest_buffers(mem, true, 0, len as usize, |bufs| {
                backend.read_to_guest(bufs, offset)
            })?;
        if let Some(result) = direct {
            return result.map_err(|source| RequestError::ReadDisk { offset, source });
        }
        let mut done = 0;
        while done < len {
            let n = (len - done).min(MAX_CHUNK) as usize;
            let buf = bounce(&mut self.bounce, n);
            let at = offset + done;
            self.backend
                .read_at(buf, at)
                .map_err(|source| RequestError::ReadDisk { offset: at, source })?;
            self.bufs.scatter(mem, done, buf)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Writes the guest's `len` readable data bytes to the disk at
    /// `offset`, straight from guest memory when the backend can.
    fn write<M: GuestMemory>(
        &mut self,
        mem: &M,
        offset: u64,
        len: u64,
    ) -> Result<(), RequestError> {
        let backend = &mut self.backend;
        let direct =
            self.bufs
                .with_guest_buffers(mem, false, HEADER_LEN, len as usize, |bufs| {
                    backend.write_from_guest(bufs, offset)
                })?;
        if let Some(result) = direct {
            return result.map_err(|source| RequestError::WriteDisk { offset, source });
        }
        let mut done = 0;
        while done < len {
            let n = (len - done).min(MAX_CHUNK) as usize;
            let buf = bounce(&mut self.bounce, n);
            self.bufs.gather(mem, HEADER_LEN + done, buf)?;
            let at = offset + done;
            self.backend
                .write_at(buf, at)
                .map_err(|source| RequestError::WriteDisk { offset: at, source })?;
            done += n as u64;
        }
        Ok(())
    }
}

/// The capacity of `backend` in whole sectors: a partial last sector is not
/// addressable (and is warned about, for drive `id`).
fn capacity_of(backend: &dyn DiskBackend, id: &str) -> Result<u64, BlockError> {
    let size = backend.size().map_err(BlockError::ReadDiskSize)?;
    let tail = size % (1 << SECTOR_SHIFT);
    if tail != 0 {
        log::warn!(
            "virtio-blk {id:?}: the image is not a whole number of 512-byte sectors; its last {tail} bytes are not visible to the guest"
        );
    }
    Ok(size >> SECTOR_SHIFT)
}

/// The first `n` bytes of the bounce buffer, grown when needed.
fn bounce(buf: &mut Vec<u8>, n: usize) -> &mut [u8] {
    if buf.len() < n {
        buf.resize(n, 0);
    }
    &mut buf[..n]
}

/// Refuses `len` bytes of data in the direction the request type does not
/// use.
fn only_direction(
    what: &'static str,
    len: u64,
    direction: &'static str,
) -> Result<(), RequestError> {
    if len == 0 {
        return Ok(());
    }
    Err(RequestError::WrongDirection {
        what,
        len,
        direction,
    })
}

/// Most requests served in one call, so that a driver that keeps refilling
/// the queue cannot hold the event loop.
const REQUEST_BUDGET: usize = 256;

/// Serves the pending requests of the queue, up to [`REQUEST_BUDGET`], then
/// interrupts once if the driver wants to know. A bad request is answered
/// (or dropped, when it has no status byte) and the next one served; only
/// a broken ring (an available index too far ahead, a used ring the device
/// cannot write) stops the batch, and never with the driver told not to
/// notify. A request the disk's rate limiter refuses stays at the head of
/// the ring and ends the pass: the limiter then says how long until it can
/// go ([`RateLimiter::take_wait`]). Returns true when it stopped at its
/// budget with requests possibly left: the caller must call again later.
pub fn process_requestq<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    disk: &mut Disk,
    irq: &IrqLine,
) -> Result<bool, virtio_queue::Error> {
    let mut used_any = false;
    let result = drain(queue, mem, |queue| {
        serve_batch(queue, mem, disk, &mut used_any)
    });
    interrupt_if_wanted(queue, mem, irq, used_any, &disk.name)?;
    result
}

/// The loop of [`process_requestq`]: sets `used_any` when a request was
/// returned, and says whether the budget ran out.
fn serve_batch<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    disk: &mut Disk,
    used_any: &mut bool,
) -> Result<bool, virtio_queue::Error> {
    let mut served = 0;
    while let Some(chain) = next_to_serve(
        queue,
        mem,
        MAX_DESCRIPTORS,
        &mut disk.counters.errors,
        &disk.name,
    )? {
        let head = chain.head_index();
        disk.bufs.collect(mem, chain);
        if !disk.admit(mem) {
            // Give the chain back to the queue, untouched, until the
            // refill.
            queue.set_next_avail(queue.next_avail().wrapping_sub(1));
            return Ok(false);
        }
        let used = disk.serve_collected(mem);
        queue.add_used(mem, head, used)?;
        *used_any = true;
        served += 1;
        if served == REQUEST_BUDGET {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The virtio-blk device.
pub struct Block {
    pub(super) common: VirtioCommon,
    pub(super) disk: Disk,
    /// Brings the queue back when the rate limiter refused a request.
    pub(super) timer: RefillTimer,
}

impl Block {
    /// A block device over a raw image file (or host block device).
    pub fn new(id: String, disk: File, read_only: bool) -> Result<Block, BlockError> {
        Self::with_backend(id, Box::new(disk), read_only)
    }

    /// A block device over any backend (tests and benchmarks use fakes).
    pub fn with_backend(
        id: String,
        backend: Box<dyn DiskBackend>,
        read_only: bool,
    ) -> Result<Block, BlockError> {
        let disk = Disk::new(id, backend, read_only)?;
        let mut avail_features = (1u64 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_BLK_SIZE);
        if read_only {
            avail_features |= 1 << VIRTIO_BLK_F_RO;
        }
        let mut config = vec![0u8; CONFIG_LEN];
        config[CONFIG_CAPACITY..CONFIG_CAPACITY + 8]
            .copy_from_slice(&disk.capacity_sectors.to_le_bytes());
        config[CONFIG_SIZE_MAX..CONFIG_SIZE_MAX + 4].copy_from_slice(&0u32.to_le_bytes());
        config[CONFIG_SEG_MAX..CONFIG_SEG_MAX + 4]
            .copy_from_slice(&u32::from(SEG_MAX).to_le_bytes());
        config[CONFIG_BLK_SIZE..CONFIG_BLK_SIZE + 4]
            .copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        let common = VirtioCommon::new(
            disk.name.clone(),
            device_type::BLOCK,
            &[BLOCK_QUEUE_SIZE],
            avail_features,
            config,
        )
        .map_err(BlockError::CreateStateEvent)?;
        let timer = RefillTimer::new().map_err(BlockError::CreateTimer)?;
        Ok(Block {
            common,
            disk,
            timer,
        })
    }

    /// Replaces the backing file (after flushing the old one) and updates
    /// the capacity in the config space; returns the new capacity in
    /// sectors. The caller tells the driver with a config-change interrupt.
    pub fn swap_backend(&mut self, backend: Box<dyn DiskBackend>) -> Result<u64, BlockError> {
        let capacity = self.disk.swap_backend(backend)?;
        self.common.config_space_mut()[CONFIG_CAPACITY..CONFIG_CAPACITY + 8]
            .copy_from_slice(&capacity.to_le_bytes());
        Ok(capacity)
    }

    /// The drive id.
    pub fn id(&self) -> &str {
        self.disk.id()
    }

    /// Whether the guest may only read it.
    pub fn read_only(&self) -> bool {
        self.disk.read_only()
    }

    /// What it has served so far.
    pub fn counters(&self) -> BlockCounters {
        self.disk.counters
    }

    /// Limits requests with `limiter` (before the device runs: a running
    /// device changes its limits with [`Block::update_rate_limiter`]).
    pub fn set_rate_limiter(&mut self, limiter: RateLimiter) {
        self.disk.set_rate_limiter(limiter);
    }

    /// The rate limiter, with its counters.
    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.disk.limiter
    }

    /// Changes the rate limiter's buckets (`PATCH /drives/{id}`); a new
    /// bucket starts full. Requests waiting for tokens are looked at again
    /// at once, under the new limits.
    pub fn update_rate_limiter(&mut self, bandwidth: BucketUpdate, ops: BucketUpdate) {
        self.disk.limiter.update(bandwidth, ops);
        self.timer.disarm(&self.disk.name);
        if let Some(active) = self.common.active() {
            // The event loop serves the queue as if the driver notified.
            if let Err(e) = active.queue_evts[0].write(1) {
                log::warn!("{}: cannot reschedule the queue: {e}", self.disk.name);
            }
        }
    }

    /// The size in 512-byte sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.disk.capacity_sectors()
    }

    /// Makes every completed write durable (`fdatasync` for a file). The
    /// VMM calls it on shutdown.
    pub fn flush(&mut self) -> io::Result<()> {
        self.disk.flush()
    }

    /// Serves pending requests, up to the budget; with more left, kicks
    /// its own queue event so that the event loop comes back to them after
    /// other work. While the rate limiter waits for tokens it serves
    /// nothing: its timer brings the device back
    /// ([`Block::refill_timer_expired`]).
    pub(super) fn process(&mut self) {
        if self.disk.limiter.is_blocked() {
            return;
        }
        let disk = &mut self.disk;
        self.common
            .run_pass(0, |queue, mem, irq| process_requestq(queue, mem, disk, irq));
        self.timer.arm_for(&mut self.disk.limiter, &self.disk.name);
    }

    /// The rate limiter's timer fired: tokens came, the queue is served
    /// again.
    pub(super) fn refill_timer_expired(&mut self) {
        self.timer.expired(&mut self.disk.limiter);
        self.process();
    }
}

/// Every field of the configuration space is read-only: without
/// VIRTIO_BLK_F_CONFIG_WCE (§5.2.4), which is not offered.
impl VirtioDevice for Block {
    fn common(&self) -> &VirtioCommon {
        &self.common
    }

    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
