//! The block device model: what it offers the driver, and how it serves
//! the request queue.

use std::fs::File;
use std::io;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemory;

use super::backend::DiskBackend;
use super::request::{
    write_guest, RequestBuffers, RequestError, HEADER_LEN, SECTOR_SHIFT, SECTOR_SIZE,
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use crate::virtio::state::DeviceState;
use crate::virtio::{
    device_type, ActivateError, Activation, IrqLine, VirtioDevice, INT_VRING, VIRTIO_F_VERSION_1,
};
use crate::virtio::{finish_pass, log_this, should_interrupt};

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
}

/// The disk a block device serves, with the scratch space its requests
/// use. Everything queue processing needs besides the queue, memory and
/// interrupt.
pub struct Disk {
    backend: Box<dyn DiskBackend>,
    id: String,
    /// The id as GET_ID returns it: zero-padded or truncated.
    id_bytes: [u8; VIRTIO_BLK_ID_BYTES],
    capacity_sectors: u64,
    read_only: bool,
    /// Reused by every request.
    bufs: RequestBuffers,
    /// Reused by every request; grows to the largest transfer up to
    /// [`MAX_CHUNK`].
    bounce: Vec<u8>,
    /// Requests that failed, for rate-limited logs.
    errors: u64,
    counters: BlockCounters,
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
    /// Requests answered with an error status (or dropped).
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
        let size = backend.size().map_err(BlockError::ReadDiskSize)?;
        let tail = size % (1 << SECTOR_SHIFT);
        if tail != 0 {
            log::warn!(
                "virtio-blk {id:?}: the image is not a whole number of 512-byte sectors; its last {tail} bytes are not visible to the guest"
            );
        }
        let mut id_bytes = [0u8; VIRTIO_BLK_ID_BYTES];
        let n = id.len().min(VIRTIO_BLK_ID_BYTES);
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        Ok(Disk {
            backend,
            id,
            id_bytes,
            capacity_sectors: size >> SECTOR_SHIFT,
            read_only,
            bufs: RequestBuffers::new(),
            bounce: Vec::new(),
            errors: 0,
            counters: BlockCounters::default(),
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
    /// only logged when it has none.
    pub fn serve<M: GuestMemory>(
        &mut self,
        mem: &M,
        chain: impl Iterator<Item = virtio_queue::desc::split::Descriptor>,
    ) -> u32 {
        self.bufs.collect(mem, chain);
        let Some(status_addr) = self.bufs.status_addr() else {
            if log_this(&mut self.errors) {
                log::warn!(
                    "virtio-blk \"{}\": request without a status byte, dropped ({} failed requests)",
                    self.id,
                    self.errors
                );
            }
            return 0;
        };
        let (status, written) = match self.execute(mem) {
            Ok(done) => done,
            Err(e) => {
                self.counters.errors += 1;
                if log_this(&mut self.errors) {
                    log::warn!(
                        "virtio-blk \"{}\": {e} ({} failed requests)",
                        self.id,
                        self.errors
                    );
                }
                (VIRTIO_BLK_S_IOERR, 0)
            }
        };
        if let Err(e) = write_guest(mem, status_addr, &[status]) {
            log::warn!("virtio-blk \"{}\": cannot write the status: {e}", self.id);
            return written;
        }
        // The chain holds less than 4 GiB (the descriptor iterator stops
        // there), so data plus status fits.
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
                log::debug!("virtio-blk \"{}\": unsupported request {other}", self.id);
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
        let direct = self.bufs.guest_buffers(mem, true, 0, len as usize)?;
        if let Some(result) = self.backend.read_to_guest(&direct, offset) {
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
        let direct = self
            .bufs
            .guest_buffers(mem, false, HEADER_LEN, len as usize)?;
        if let Some(result) = self.backend.write_from_guest(&direct, offset) {
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
/// a broken available ring stops the batch. Returns true when it stopped
/// at its budget with requests possibly left: the caller must call again
/// later.
pub fn process_requestq<M: GuestMemory>(
    queue: &mut Queue,
    mem: &M,
    disk: &mut Disk,
    irq: &IrqLine,
) -> Result<bool, virtio_queue::Error> {
    let mut used_any = false;
    let result = serve_batch(queue, mem, disk, &mut used_any);
    if result.is_err() {
        // Leave the driver able to notify, should the ring come right.
        let _ = queue.enable_notification(mem);
    }
    if used_any && should_interrupt(queue, mem)? {
        if let Err(e) = irq.trigger(INT_VRING) {
            log::warn!(
                "virtio-blk \"{}\": cannot interrupt the guest: {e}",
                disk.id
            );
        }
    }
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
    // The driver need not notify while the queue is being drained.
    queue.disable_notification(mem)?;
    loop {
        let Some(chain) = queue.iter(mem)?.next() else {
            // Look once more after re-enabling notifications: the driver
            // may have queued a request without notifying in between.
            if queue.enable_notification(mem)? {
                queue.disable_notification(mem)?;
                continue;
            }
            return Ok(false);
        };
        let head = chain.head_index();
        let used = disk.serve(mem, chain);
        match queue.add_used(mem, head, used) {
            Ok(()) => *used_any = true,
            // A head index beyond the queue: nothing to answer.
            Err(e) => log::warn!("virtio-blk \"{}\": cannot return a request: {e}", disk.id),
        }
        served += 1;
        if served == REQUEST_BUDGET {
            return Ok(true);
        }
    }
}

/// The virtio-blk device.
pub struct Block {
    pub(super) state: DeviceState,
    pub(super) disk: Disk,
    avail_features: u64,
    acked_features: u64,
    config: [u8; CONFIG_LEN],
    /// Broken-ring errors, for rate-limited logs.
    queue_errors: u64,
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
        let mut config = [0u8; CONFIG_LEN];
        config[CONFIG_CAPACITY..CONFIG_CAPACITY + 8]
            .copy_from_slice(&disk.capacity_sectors.to_le_bytes());
        config[CONFIG_SIZE_MAX..CONFIG_SIZE_MAX + 4].copy_from_slice(&0u32.to_le_bytes());
        let seg_max = u32::from(BLOCK_QUEUE_SIZE - NON_DATA_DESCRIPTORS);
        config[CONFIG_SEG_MAX..CONFIG_SEG_MAX + 4].copy_from_slice(&seg_max.to_le_bytes());
        config[CONFIG_BLK_SIZE..CONFIG_BLK_SIZE + 4]
            .copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        Ok(Block {
            state: DeviceState::new().map_err(BlockError::CreateStateEvent)?,
            disk,
            avail_features,
            acked_features: 0,
            config,
            queue_errors: 0,
        })
    }

    /// Replaces the backing file (after flushing the old one) and updates
    /// the capacity in the config space; returns the new capacity in
    /// sectors. The caller tells the driver with a config-change interrupt.
    pub fn swap_backend(&mut self, backend: Box<dyn DiskBackend>) -> Result<u64, BlockError> {
        let read_only = self.disk.read_only();
        let disk = Disk::new(self.disk.id().to_string(), backend, read_only)?;
        if let Err(e) = self.disk.flush() {
            log::error!(
                "virtio-blk {:?}: cannot flush the old image: {e}",
                self.disk.id()
            );
        }
        let capacity = disk.capacity_sectors();
        self.config[CONFIG_CAPACITY..CONFIG_CAPACITY + 8].copy_from_slice(&capacity.to_le_bytes());
        self.disk = disk;
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
    /// other work.
    pub(super) fn process(&mut self) {
        let Some(Activation {
            mem,
            queues,
            queue_evts,
            irq,
        }) = self.state.active()
        else {
            return;
        };
        let result = process_requestq(&mut queues[0], mem, &mut self.disk, irq);
        let id = &self.disk.id;
        finish_pass(result, &queue_evts[0], &mut self.queue_errors, || {
            format!("virtio-blk {id:?} request queue")
        });
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[BLOCK_QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| self.config.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Every field is read-only without VIRTIO_BLK_F_CONFIG_WCE
        // (§5.2.4), which is not offered.
        log::debug!(
            "virtio-blk \"{}\": ignored {}-byte config write at {offset:#x}",
            self.disk.id,
            data.len()
        );
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        self.state.activate(activation, 1)
    }

    fn reset(&mut self) -> bool {
        self.state.reset()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::sync::{Arc, Mutex};

    use event_manager::{EventManager, SubscriberOps};
    use virtio_queue::desc::{split::Descriptor as RawDescriptor, RawDescriptor as Raw};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;

    const NEXT: u16 = 1;
    const WRITE: u16 = 2;
    const R: u16 = 0;
    const W: u16 = WRITE;

    const HDR: u64 = 0x1_0000;
    const DATA: u64 = 0x2_0000;
    const STATUS: u64 = 0x8_0000;
    /// 16 sectors.
    const DISK_LEN: usize = 16 * 512;

    /// What a fake disk holds and what happened to it.
    #[derive(Default)]
    struct FakeState {
        data: Vec<u8>,
        flushes: usize,
        fail: bool,
    }

    /// A memory-backed disk that tests can inspect and make fail.
    #[derive(Clone, Default)]
    struct FakeDisk(Arc<Mutex<FakeState>>);

    impl FakeDisk {
        /// A disk of `len` bytes, byte `i` holding `i * 7 % 251`.
        fn with_pattern(len: usize) -> Self {
            let disk = FakeDisk::default();
            disk.state().data = (0..len).map(pattern).collect();
            disk
        }

        fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
            self.0.lock().unwrap()
        }

        fn range(&self, start: usize, len: usize) -> Vec<u8> {
            self.state().data[start..start + len].to_vec()
        }

        fn checked(&self, offset: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
            let s = self.state();
            if s.fail {
                return Err(io::Error::other("injected failure"));
            }
            let start = offset as usize;
            if start + len > s.data.len() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok(start..start + len)
        }
    }

    impl DiskBackend for FakeDisk {
        fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let r = self.checked(offset, buf.len())?;
            buf.copy_from_slice(&self.state().data[r]);
            Ok(())
        }
        fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
            let r = self.checked(offset, buf.len())?;
            self.state().data[r].copy_from_slice(buf);
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.checked(0, 0)?;
            self.state().flushes += 1;
            Ok(())
        }
        fn size(&self) -> io::Result<u64> {
            Ok(self.state().data.len() as u64)
        }
    }

    fn pattern(i: usize) -> u8 {
        (i * 7 % 251) as u8
    }

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
    }

    fn disk(fake: &FakeDisk, read_only: bool) -> Disk {
        Disk::new("rootfs".into(), Box::new(fake.clone()), read_only).unwrap()
    }

    fn irq() -> IrqLine {
        IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap())
    }

    fn write_header(mem: &GuestMemoryMmap, addr: u64, request_type: u32, sector: u64) {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&request_type.to_le_bytes());
        b[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&b, GuestAddress(addr)).unwrap();
    }

    /// Puts one chain of `(addr, len, flags)` at descriptor index `first`
    /// and makes it available.
    fn push_chain(vq: &MockSplitQueue<GuestMemoryMmap>, first: u16, descs: Chain) {
        let raw: Vec<Raw> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let i = i as u16;
                let last = usize::from(i) + 1 == descs.len();
                let (flags, next) = if last {
                    (flags, 0)
                } else {
                    (flags | NEXT, first + i + 1)
                };
                Raw::from(RawDescriptor::new(addr, len, flags, next))
            })
            .collect();
        vq.add_desc_chains(&raw, first).unwrap();
    }

    /// A chain as `(addr, len, flags)` per descriptor.
    type Chain<'a> = &'a [(u64, u32, u16)];

    /// What the device answered to one request.
    #[derive(Debug, PartialEq)]
    struct Answer {
        used_len: u32,
        /// The byte at STATUS (0xff when the device did not write it).
        status: u8,
    }

    /// Runs one request through a fresh queue.
    fn run(mem: &GuestMemoryMmap, disk: &mut Disk, descs: Chain) -> Answer {
        mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let vq = MockSplitQueue::new(mem, 16);
        push_chain(&vq, 0, descs);
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = irq();
        process_requestq(&mut q, mem, disk, &irq).unwrap();
        assert_eq!(vq.used().idx().load(), 1, "every request is returned");
        assert_eq!(irq.status(), INT_VRING);
        Answer {
            used_len: vq.used().ring().ref_at(0).unwrap().load().len(),
            status: mem.read_obj(GuestAddress(STATUS)).unwrap(),
        }
    }

    fn answer(used_len: u32, status: u8) -> Answer {
        Answer { used_len, status }
    }

    fn ioerr() -> Answer {
        answer(1, VIRTIO_BLK_S_IOERR)
    }

    fn read_guest(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    /// An IN of `len` bytes at `sector` into one buffer at DATA.
    fn read_request(mem: &GuestMemoryMmap, disk: &mut Disk, sector: u64, len: u32) -> Answer {
        write_header(mem, HDR, VIRTIO_BLK_T_IN, sector);
        run(mem, disk, &[(HDR, 16, R), (DATA, len, W), (STATUS, 1, W)])
    }

    /// An OUT of `len` bytes from DATA to `sector`.
    fn write_request(mem: &GuestMemoryMmap, disk: &mut Disk, sector: u64, len: u32) -> Answer {
        write_header(mem, HDR, VIRTIO_BLK_T_OUT, sector);
        run(mem, disk, &[(HDR, 16, R), (DATA, len, R), (STATUS, 1, W)])
    }

    #[test]
    fn in_reads_sectors_into_every_data_buffer() {
        let m = mem();
        let fake = FakeDisk::with_pattern(DISK_LEN);
        let mut d = disk(&fake, false);
        write_header(&m, HDR, VIRTIO_BLK_T_IN, 1);
        let got = run(
            &m,
            &mut d,
            &[
                (HDR, 16, R),
                (DATA, 512, W),
                (DATA + 0x1000, 1024, W),
                (STATUS, 1, W),
            ],
        );
        assert_eq!(got, answer(1536 + 1, VIRTIO_BLK_S_OK));
        assert_eq!(read_guest(&m, DATA, 512), fake.range(512, 512));
        assert_eq!(read_guest(&m, DATA + 0x1000, 1024), fake.range(1024, 1024));
    }

    #[test]
    fn out_writes_guest_data_to_the_disk() {
        let m = mem();
        let fake = FakeDisk::with_pattern(DISK_LEN);
        let mut d = disk(&fake, false);
        m.write_slice(&[0xa5; 512], GuestAddress(DATA)).unwrap();
        m.write_slice(&[0x5a; 512], GuestAddress(DATA + 0x1000))
            .unwrap();
        write_header(&m, HDR, VIRTIO_BLK_T_OUT, 2);
        let got = run(
            &m,
            &mut d,
            &[
                (HDR, 16, R),
                (DATA, 512, R),
                (DATA + 0x1000, 512, R),
                (STATUS, 1, W),
            ],
        );
        assert_eq!(got, answer(1, VIRTIO_BLK_S_OK));
        assert_eq!(fake.range(1024, 512), vec![0xa5; 512]);
        assert_eq!(fake.range(1536, 512), vec![0x5a; 512]);
        assert_eq!(
            fake.range(512, 512),
            (512..1024).map(pattern).collect::<Vec<_>>()
        );
        assert_eq!(fake.range(2048, 1), vec![pattern(2048)]);
    }

    #[test]
    fn requests_larger_than_the_bounce_buffer_move_in_pieces() {
        let m = mem();
        let len = (MAX_CHUNK + MAX_CHUNK / 2) as usize;
        // Clear of the header and status.
        let big = 0x10_0000;
        let fake = FakeDisk::with_pattern(len + 4096);
        let mut d = disk(&fake, false);
        write_header(&m, HDR, VIRTIO_BLK_T_IN, 8);
        let descs = [(HDR, 16, R), (big, len as u32, W), (STATUS, 1, W)];
        assert_eq!(run(&m, &mut d, &descs), answer(len as u32 + 1, 0));
        assert!(read_guest(&m, big, len) == fake.range(4096, len));
        assert!(d.bounce.len() as u64 <= MAX_CHUNK);

        let data: Vec<u8> = (0..len).map(|i| (i % 13) as u8).collect();
        m.write_slice(&data, GuestAddress(big)).unwrap();
        write_header(&m, HDR, VIRTIO_BLK_T_OUT, 0);
        let descs = [(HDR, 16, R), (big, len as u32, R), (STATUS, 1, W)];
        assert_eq!(run(&m, &mut d, &descs), answer(1, 0));
        assert!(fake.range(0, len) == data);
    }

    #[test]
    fn header_data_and_status_may_share_descriptors() {
        let m = mem();
        let fake = FakeDisk::with_pattern(DISK_LEN);
        let mut d = disk(&fake, false);
        // OUT: header and data in one device-readable buffer.
        write_header(&m, HDR, VIRTIO_BLK_T_OUT, 3);
        m.write_slice(&[0x77; 512], GuestAddress(HDR + 16)).unwrap();
        let got = run(&m, &mut d, &[(HDR, 16 + 512, R), (STATUS, 1, W)]);
        assert_eq!(got, answer(1, VIRTIO_BLK_S_OK));
        assert_eq!(fake.range(1536, 512), vec![0x77; 512]);
        // IN: data and status in one device-writable buffer; the status is
        // its last byte.
        write_header(&m, HDR, VIRTIO_BLK_T_IN, 3);
        let got = run(&m, &mut d, &[(HDR, 16, R), (STATUS - 512, 513, W)]);
        assert_eq!(got, answer(513, VIRTIO_BLK_S_OK));
        assert_eq!(read_guest(&m, STATUS - 512, 512), vec![0x77; 512]);
    }

    #[test]
    fn flush_reaches_the_backend() {
        let m = mem();
        let fake = FakeDisk::with_pattern(DISK_LEN);
        let mut d = disk(&fake, false);
        write_header(&m, HDR, VIRTIO_BLK_T_FLUSH, 0);
        let got = run(&m, &mut d, &[(HDR, 16, R), (STATUS, 1, W)]);
        assert_eq!(got, answer(1, VIRTIO_BLK_S_OK));
        assert_eq!(fake.state().flushes, 1);
        // So does the VMM's flush at shutdown, through the device.
        let mut block =
            Block::with_backend("rootfs".into(), Box::new(fake.clone()), false).unwrap();
        block.flush().unwrap();
        assert_eq!(fake.state().flushes, 2);
    }

    #[test]
    fn get_id_pads_a_short_id_and_truncates_a_long_one() {
        let m = mem();
        let fake = FakeDisk::with_pattern(DISK_LEN);
        for (id, want) in [
            ("rootfs", *b"rootfs\0\0\0\0\0\0\0\0\0\0\0\0\0\0"),
            ("a-drive-id-longer-than-20", *b"a-drive-id-longer-th"),
        ] {
            let mut d = Disk::new(id.into(), Box::new(fake.clone()), false).unwrap();
            m.write_slice(&[0xee; 32], GuestAddress(DATA)).unwrap();
            write_header(&m, HDR, VIRTIO_BLK_T_GET_ID, 0);
            let got = run(&m, &mut d, &[(HDR, 16, R), (DATA, 32, W), (STATUS, 1, W)]);
            assert_eq!(got, answer(21, VIRTIO_BLK_S_OK));
            assert_eq!(read_guest(&m, DATA, 20), want);
            assert_eq!(read_guest(&m, DATA + 20, 12), vec![0xee; 12]);
        }
    }

    #[test]
    fn get_id_into_a_short_buffer_fails() {
        let m = mem();
        let mut d = disk(&FakeDisk::with_pattern(DISK_LEN), false);
        write_header(&m, HDR, VIRTIO_BLK_T_GET_ID, 0);
        let got = run(&m, &mut d, &[(HDR, 16, R), (DATA, 19, W), (STATUS, 1, W)]);
        assert_eq!(got, ioerr());
    }

    #[test]
    fn a_swapped_backend_changes_capacity_and_content() {
        struct Sized(u64);
        impl DiskBackend for Sized {
            fn read_at(&mut self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
                buf.fill(0x5a);
                Ok(())
            }
            fn write_at(&mut self, _buf: &[u8], _offset: u64) -> io::Result<()> {
                Ok(())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
            fn size(&self) -> io::Result<u64> {
                Ok(self.0)
            }
        }
        let mut block = Block::with_backend("d".into(), Box::new(Sized(8 * 512)), false).unwrap();
        assert_eq!(block.capacity_sectors(), 8);
        assert_eq!(block.swap_backend(Box::new(Sized(32 * 512))).unwrap(), 32);
        assert_eq!(block.capacity_sectors(), 32);
        let mut cap = [0u8; 8];
        block.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 32);
        assert_eq!(block.id(), "d");
    }

    #[test]
    fn read_only_drive_refuses_writes_and_serves_reads() {
        let m = mem();
        let fake = FakeDisk::with_pattern(DISK_LEN);
        let mut d = disk(&fake, true);
        m.write_slice(&[0x11; 512], GuestAddress(DATA)).unwrap();
        assert_eq!(write_request(&m, &mut d, 0, 512), ioerr());
        assert_eq!(
            fake.range(0, 512),
            (0..512).map(pattern).collect::<Vec<_>>()
        );
        assert_eq!(
            read_request(&m, &mut d, 0, 512),
            answer(513, VIRTIO_BLK_S_OK)
        );
        assert_eq!(read_guest(&m, DATA, 512), fake.range(0, 512));
        write_header(&m, HDR, VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(
            run(&m, &mut d, &[(HDR, 16, R), (STATUS, 1, W)]),
            answer(1, VIRTIO_BLK_S_OK)
        );
    }

    #[test]
    fn requests_beyond_the_capacity_fail() {
        let m = mem();
        let fake = FakeDisk::with_pattern(DISK_LEN);
        let mut d = disk(&fake, false);
        assert_eq!(
            read_request(&m, &mut d, 15, 512),
            answer(513, 0),
            "last sector"
        );
        assert_eq!(
            read_request(&m, &mut d, 16, 512),
            ioerr(),
            "one past the end"
        );
        assert_eq!(
            read_request(&m, &mut d, 15, 1024),
            ioerr(),
            "runs over the end"
        );
        assert_eq!(write_request(&m, &mut d, 16, 512), ioerr());
        // `sector * 512` and `offset + len` overflow u64.
        assert_eq!(read_request(&m, &mut d, u64::MAX, 512), ioerr());
        assert_eq!(read_request(&m, &mut d, u64::MAX / 512, 1024), ioerr());
        assert_eq!(write_request(&m, &mut d, 1 << 55, 512), ioerr());
        assert_eq!(
            fake.range(0, DISK_LEN),
            (0..DISK_LEN).map(pattern).collect::<Vec<_>>()
        );
    }

    #[test]
    fn data_that_is_not_whole_sectors_fails() {
        let m = mem();
        let fake = FakeDisk::with_pattern(DISK_LEN);
        let mut d = disk(&fake, false);
        assert_eq!(read_request(&m, &mut d, 0, 100), ioerr());
        assert_eq!(read_request(&m, &mut d, 0, 513), ioerr());
        assert_eq!(write_request(&m, &mut d, 0, 511), ioerr());
        assert_eq!(
            fake.range(0, 512),
            (0..512).map(pattern).collect::<Vec<_>>()
        );
    }

    #[test]
    fn unknown_request_types_are_unsupported() {
        let m = mem();
        let mut d = disk(&FakeDisk::with_pattern(DISK_LEN), false);
        // DISCARD (11) and WRITE_ZEROES (13) are not offered; 0xdead is
        // nothing.
        for ty in [11, 13, 0xdead] {
            write_header(&m, HDR, ty, 0);
            let got = run(&m, &mut d, &[(HDR, 16, R), (STATUS, 1, W)]);
            assert_eq!(got, answer(1, VIRTIO_BLK_S_UNSUPP));
        }
    }

    #[test]
    fn backend_errors_are_io_errors() {
        let m = mem();
        let fake = FakeDisk::with_pattern(DISK_LEN);
        let mut d = disk(&fake, false);
        fake.state().fail = true;
        assert_eq!(read_request(&m, &mut d, 0, 512), ioerr());
        assert_eq!(write_request(&m, &mut d, 0, 512), ioerr());
        write_header(&m, HDR, VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(run(&m, &mut d, &[(HDR, 16, R), (STATUS, 1, W)]), ioerr());
        // A disk that shrank under the guest.
        fake.state().fail = false;
        fake.state().data.truncate(1024);
        assert_eq!(read_request(&m, &mut d, 4, 512), ioerr());
    }

    #[test]
    fn malformed_chains_are_answered_with_io_errors() {
        let m = mem();
        let fake = FakeDisk::with_pattern(DISK_LEN);
        let mut d = disk(&fake, false);
        write_header(&m, HDR, VIRTIO_BLK_T_IN, 0);
        let cases: &[(&str, Chain)] = &[
            ("no header", &[(STATUS, 1, W)]),
            ("header too short", &[(HDR, 8, R), (STATUS, 1, W)]),
            (
                "header outside memory",
                &[(0x4000_0000, 16, R), (STATUS, 1, W)],
            ),
            (
                "data outside memory",
                &[(HDR, 16, R), (0x3f_ff00, 512, W), (STATUS, 1, W)],
            ),
            (
                "address wraps around",
                &[(HDR, 16, R), (u64::MAX - 100, 512, W), (STATUS, 1, W)],
            ),
            (
                "IN with device-readable data",
                &[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, W)],
            ),
            (
                "readable after writable",
                &[
                    (HDR, 16, R),
                    (DATA, 512, W),
                    (DATA + 0x1000, 512, R),
                    (STATUS, 1, W),
                ],
            ),
        ];
        for (what, descs) in cases {
            assert_eq!(run(&m, &mut d, descs), ioerr(), "{what}");
        }
        // OUT with device-writable data: refused, disk unchanged.
        write_header(&m, HDR, VIRTIO_BLK_T_OUT, 0);
        let got = run(&m, &mut d, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
        assert_eq!(got, ioerr());
        assert_eq!(
            fake.range(0, 512),
            (0..512).map(pattern).collect::<Vec<_>>()
        );
    }

    #[test]
    fn chains_without_a_usable_status_byte_are_returned_empty() {
        let m = mem();
        let fake = FakeDisk::with_pattern(DISK_LEN);
        let mut d = disk(&fake, false);
        write_header(&m, HDR, VIRTIO_BLK_T_OUT, 0);
        m.write_slice(&[0x42; 512], GuestAddress(DATA)).unwrap();
        let no_status = answer(0, 0xff);
        // No device-writable byte: the "status" descriptor is read-only.
        let got = run(&m, &mut d, &[(HDR, 16, R), (DATA, 512, R), (STATUS, 1, R)]);
        assert_eq!(got, no_status);
        assert_eq!(run(&m, &mut d, &[(HDR, 16, R)]), no_status, "header only");
        // The status byte outside guest memory.
        let got = run(&m, &mut d, &[(HDR, 16, R), (0x4000_0000, 1, W)]);
        assert_eq!(got.used_len, 0);
        // None of them reached the disk.
        assert_eq!(
            fake.range(0, 512),
            (0..512).map(pattern).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_descriptor_loop_and_a_bad_head_index_do_not_stop_the_queue() {
        let m = mem();
        let fake = FakeDisk::with_pattern(DISK_LEN);
        let mut d = disk(&fake, false);
        let vq = MockSplitQueue::new(&m, 16);
        // Descriptor 0 chains to itself forever.
        vq.desc_table()
            .store(0, Raw::from(RawDescriptor::new(HDR, 16, NEXT, 0)))
            .unwrap();
        let ring = vq.avail().ring();
        ring.ref_at(0).unwrap().store(0);
        // Head index beyond the queue.
        ring.ref_at(1).unwrap().store(200);
        vq.avail().idx().store(2);
        write_header(&m, HDR, VIRTIO_BLK_T_IN, 0);
        push_chain(&vq, 4, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = irq();
        process_requestq(&mut q, &m, &mut d, &irq).unwrap();
        // The loop and the good request are returned; the bad head cannot be.
        assert_eq!(vq.used().idx().load(), 2);
        let used = |i| vq.used().ring().ref_at(i).unwrap().load();
        assert_eq!((used(0).id(), used(0).len()), (0, 0));
        assert_eq!((used(1).id(), used(1).len()), (4, 513));
        assert_eq!(irq.event().read().unwrap(), 1);
    }

    #[test]
    fn a_broken_available_ring_is_an_error_not_a_panic() {
        let m = mem();
        let mut d = disk(&FakeDisk::with_pattern(DISK_LEN), false);
        let vq = MockSplitQueue::new(&m, 16);
        // The driver claims more new entries than the queue holds.
        vq.avail().idx().store(100);
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = irq();
        assert!(process_requestq(&mut q, &m, &mut d, &irq).is_err());
        assert_eq!(vq.used().idx().load(), 0);
        assert_eq!(irq.status(), 0);
    }

    #[test]
    fn a_batch_interrupts_once() {
        let m = mem();
        let fake = FakeDisk::with_pattern(DISK_LEN);
        let mut d = disk(&fake, false);
        let vq = MockSplitQueue::new(&m, 16);
        for i in 0..3u16 {
            let base = u64::from(i) * 0x1000;
            write_header(&m, HDR + base, VIRTIO_BLK_T_IN, u64::from(i));
            push_chain(
                &vq,
                i * 3,
                &[
                    (HDR + base, 16, R),
                    (DATA + base, 512, W),
                    (STATUS + base, 1, W),
                ],
            );
        }
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = irq();
        process_requestq(&mut q, &m, &mut d, &irq).unwrap();
        assert_eq!(vq.used().idx().load(), 3);
        for i in 0..3usize {
            let base = i as u64 * 0x1000;
            assert_eq!(read_guest(&m, DATA + base, 512), fake.range(i * 512, 512));
            assert_eq!(vq.used().ring().ref_at(i).unwrap().load().len(), 513);
        }
        assert_eq!(irq.event().read().unwrap(), 1);
        // Nothing new: no interrupt.
        process_requestq(&mut q, &m, &mut d, &irq).unwrap();
        assert!(irq.event().read().is_err());
    }

    #[test]
    fn features_offer_read_only_only_for_read_only_drives() {
        let fake = FakeDisk::with_pattern(DISK_LEN);
        let base = (1u64 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_BLK_SIZE);
        let rw = Block::with_backend("a".into(), Box::new(fake.clone()), false).unwrap();
        assert_eq!(rw.avail_features(), base);
        let ro = Block::with_backend("b".into(), Box::new(fake), true).unwrap();
        assert_eq!(ro.avail_features(), base | (1 << VIRTIO_BLK_F_RO));
        assert_eq!(ro.device_type(), 2);
        assert_eq!(ro.queue_max_sizes(), &[256]);
    }

    #[test]
    fn config_space_reads_at_any_offset_and_width() {
        // 1 PiB + 3 sectors + a partial one, so that the capacity uses
        // its high half.
        let size = (1 << 50) + 3 * 512 + 100;
        let backend = SizeOnly(FakeDisk::default(), size);
        let block = Block::with_backend("cfg".into(), Box::new(backend), false).unwrap();
        let capacity = (1u64 << 41) + 3;
        assert_eq!(block.capacity_sectors(), capacity);
        let read = |offset: u64, len: usize| {
            let mut b = vec![0xffu8; len];
            block.read_config(offset, &mut b);
            b
        };
        assert_eq!(read(0, 8), capacity.to_le_bytes());
        assert_eq!(read(0, 4), 3u32.to_le_bytes());
        assert_eq!(read(4, 4), (1u32 << 9).to_le_bytes());
        assert_eq!(read(8, 4), [0; 4], "size_max");
        assert_eq!(read(12, 4), 254u32.to_le_bytes(), "seg_max");
        assert_eq!(read(16, 4), [0; 4], "geometry");
        assert_eq!(read(20, 4), 512u32.to_le_bytes(), "blk_size");
        assert_eq!(read(21, 1), [2], "odd byte");
        assert_eq!(read(3, 3), capacity.to_le_bytes()[3..6]);
        assert_eq!(read(22, 4), [0, 0, 0, 0], "straddles the end");
        assert_eq!(read(20, 8), [0, 2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(read(24, 4), [0; 4], "past the end");
        assert_eq!(read(u64::MAX, 4), [0; 4]);
    }

    /// A backend that only reports a size (no data behind it).
    struct SizeOnly(FakeDisk, u64);

    impl DiskBackend for SizeOnly {
        fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.0.read_at(buf, offset)
        }
        fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
            self.0.write_at(buf, offset)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.flush()
        }
        fn size(&self) -> io::Result<u64> {
            Ok(self.1)
        }
    }

    #[test]
    fn config_writes_are_ignored() {
        let mut block = Block::with_backend(
            "cfg".into(),
            Box::new(FakeDisk::with_pattern(DISK_LEN)),
            false,
        )
        .unwrap();
        block.write_config(0, &[0xff; 8]);
        let mut b = [0u8; 8];
        block.read_config(0, &mut b);
        assert_eq!(u64::from_le_bytes(b), 16);
    }

    #[test]
    fn file_backend_reads_back_what_the_guest_wrote() {
        let m = mem();
        let file = tempfile::tempfile().unwrap();
        // A size that is not whole sectors: the tail is not addressable.
        file.set_len(8 * 512 + 100).unwrap();
        let block = Block::new("file".into(), file.try_clone().unwrap(), false).unwrap();
        assert_eq!(block.capacity_sectors(), 8);
        assert_eq!(block.id(), "file");
        let mut d = Disk::new("file".into(), Box::new(file.try_clone().unwrap()), false).unwrap();
        let data: Vec<u8> = (0..1024).map(|i| (i % 256) as u8).collect();
        m.write_slice(&data, GuestAddress(DATA)).unwrap();
        assert_eq!(write_request(&m, &mut d, 6, 1024), answer(1, 0));
        assert_eq!(write_request(&m, &mut d, 7, 1024), ioerr(), "into the tail");
        m.write_slice(&[0; 1024], GuestAddress(DATA)).unwrap();
        assert_eq!(read_request(&m, &mut d, 6, 1024), answer(1025, 0));
        assert_eq!(read_guest(&m, DATA, 1024), data);
        let mut on_disk = vec![0u8; 1024];
        file.read_exact_at(&mut on_disk, 6 * 512).unwrap();
        assert_eq!(on_disk, data);
        write_header(&m, HDR, VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(
            run(&m, &mut d, &[(HDR, 16, R), (STATUS, 1, W)]),
            answer(1, 0)
        );
        d.flush().unwrap();
    }

    #[test]
    fn file_backend_moves_scattered_and_region_spanning_buffers() {
        // Two regions; a buffer across their boundary at 0x10_0000 takes
        // vm-memory's general path.
        let m = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x10_0000),
            (GuestAddress(0x10_0000), 0x10_0000),
        ])
        .unwrap();
        let file = tempfile::tempfile().unwrap();
        file.set_len(64 * 512).unwrap();
        let mut d = Disk::new("file".into(), Box::new(file.try_clone().unwrap()), false).unwrap();
        let data: Vec<u8> = (0..2048).map(|i| (i * 3 % 256) as u8).collect();
        // OUT: header and the first 512 data bytes in one descriptor, then
        // 1024 bytes across the region boundary, then 512 more.
        write_header(&m, HDR, VIRTIO_BLK_T_OUT, 5);
        m.write_slice(&data[..512], GuestAddress(HDR + 16)).unwrap();
        m.write_slice(&data[512..1536], GuestAddress(0xf_fe00))
            .unwrap();
        m.write_slice(&data[1536..], GuestAddress(DATA)).unwrap();
        let descs = [
            (HDR, 16 + 512, R),
            (0xf_fe00, 1024, R),
            (DATA, 512, R),
            (STATUS, 1, W),
        ];
        assert_eq!(run(&m, &mut d, &descs), answer(1, 0));
        let mut on_disk = vec![0u8; 2048];
        file.read_exact_at(&mut on_disk, 5 * 512).unwrap();
        assert!(on_disk == data);
        // IN: scattered the other way, the status sharing the last buffer.
        write_header(&m, HDR, VIRTIO_BLK_T_IN, 5);
        m.write_slice(&[0; 2048], GuestAddress(0xf_fc00)).unwrap();
        let descs = [(HDR, 16, R), (0xf_fc00, 1536, W), (STATUS - 512, 513, W)];
        assert_eq!(run(&m, &mut d, &descs), answer(2049, 0));
        assert!(read_guest(&m, 0xf_fc00, 1536) == data[..1536]);
        assert!(read_guest(&m, STATUS - 512, 512) == data[1536..]);
        // Past the end of a file that shrank under the guest.
        file.set_len(6 * 512).unwrap();
        assert_eq!(read_request(&m, &mut d, 5, 1024), ioerr());
    }

    #[test]
    fn event_loop_serves_the_queue_while_active() {
        let m = mem();
        let fake = FakeDisk::with_pattern(DISK_LEN);
        let vq = MockSplitQueue::new(&m, 16);
        write_header(&m, HDR, VIRTIO_BLK_T_IN, 1);
        push_chain(&vq, 0, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
        let block = Arc::new(Mutex::new(
            Block::with_backend("ev".into(), Box::new(fake.clone()), false).unwrap(),
        ));
        let mut events = EventManager::<Arc<Mutex<Block>>>::new().unwrap();
        events.add_subscriber(block.clone());
        let kick = EventFd::new(EFD_NONBLOCK).unwrap();
        let irq = irq();
        let activation = Activation {
            mem: m.clone(),
            queues: vec![vq.create_queue().unwrap()],
            queue_evts: vec![kick.try_clone().unwrap()],
            irq: irq.clone(),
        };
        block.lock().unwrap().activate(activation).unwrap();
        // The state event: the device starts watching its queue and serves
        // what was posted before.
        assert_eq!(events.run_with_timeout(1000).unwrap(), 1);
        assert_eq!(vq.used().idx().load(), 1);
        assert_eq!(read_guest(&m, DATA, 512), fake.range(512, 512));
        assert_eq!(irq.status(), INT_VRING);

        // A queue notification.
        write_header(&m, HDR + 0x100, VIRTIO_BLK_T_IN, 2);
        push_chain(
            &vq,
            3,
            &[(HDR + 0x100, 16, R), (DATA, 512, W), (STATUS, 1, W)],
        );
        kick.write(1).unwrap();
        assert_eq!(events.run_with_timeout(1000).unwrap(), 1);
        assert_eq!(vq.used().idx().load(), 2);
        assert_eq!(read_guest(&m, DATA, 512), fake.range(1024, 512));
        assert!(kick.read().is_err(), "the handler consumed the kick");

        // After a reset the queue is no longer served.
        assert!(block.lock().unwrap().reset());
        assert_eq!(events.run_with_timeout(1000).unwrap(), 1);
        push_chain(&vq, 6, &[(HDR, 16, R), (DATA, 512, W), (STATUS, 1, W)]);
        kick.write(1).unwrap();
        events.run_with_timeout(0).unwrap();
        assert_eq!(vq.used().idx().load(), 2);
    }

    #[test]
    fn activation_needs_the_request_queue() {
        let m = mem();
        let mut block = Block::with_backend(
            "q".into(),
            Box::new(FakeDisk::with_pattern(DISK_LEN)),
            false,
        )
        .unwrap();
        let activation = Activation {
            mem: m,
            queues: vec![Queue::new(BLOCK_QUEUE_SIZE).unwrap()],
            queue_evts: vec![EventFd::new(EFD_NONBLOCK).unwrap()],
            irq: irq(),
        };
        assert!(matches!(
            block.activate(activation),
            Err(ActivateError::Queues { need: 1, got: 0 })
        ));
    }

    /// Makes `n` FLUSH requests available in a 512-entry queue, all the
    /// same chain at descriptor 0.
    fn many_flushes(m: &GuestMemoryMmap, n: u16) -> MockSplitQueue<'_, GuestMemoryMmap> {
        let vq = MockSplitQueue::new(m, 512);
        write_header(m, HDR, VIRTIO_BLK_T_FLUSH, 0);
        push_chain(&vq, 0, &[(HDR, 16, R), (STATUS, 1, W)]);
        for i in 0..n {
            vq.avail().ring().ref_at(usize::from(i)).unwrap().store(0);
        }
        vq.avail().idx().store(n);
        vq
    }

    #[test]
    fn a_pass_serves_at_most_the_budget_and_asks_to_come_back() {
        let m = mem();
        let mut d = disk(&FakeDisk::with_pattern(DISK_LEN), false);
        let n = REQUEST_BUDGET as u16 + 44;
        let vq = many_flushes(&m, n);
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = irq();
        assert!(process_requestq(&mut q, &m, &mut d, &irq).unwrap());
        assert_eq!(usize::from(vq.used().idx().load()), REQUEST_BUDGET);
        assert!(!process_requestq(&mut q, &m, &mut d, &irq).unwrap());
        assert_eq!(vq.used().idx().load(), n);
    }

    #[test]
    fn a_device_over_its_budget_kicks_its_own_queue_event() {
        let m = mem();
        let fake = FakeDisk::with_pattern(DISK_LEN);
        let n = REQUEST_BUDGET as u16 + 1;
        let vq = many_flushes(&m, n);
        let mut block = Block::with_backend("b".into(), Box::new(fake), false).unwrap();
        let kick = EventFd::new(EFD_NONBLOCK).unwrap();
        let activation = Activation {
            mem: m.clone(),
            queues: vec![vq.create_queue().unwrap()],
            queue_evts: vec![kick.try_clone().unwrap()],
            irq: irq(),
        };
        block.activate(activation).unwrap();
        block.process();
        assert_eq!(usize::from(vq.used().idx().load()), REQUEST_BUDGET);
        assert_eq!(kick.read().unwrap(), 1, "the device comes back later");
        block.process();
        assert_eq!(vq.used().idx().load(), n);
        assert!(kick.read().is_err());
    }

    #[test]
    fn no_interrupt_when_the_driver_asks_for_none() {
        let m = mem();
        let mut d = disk(&FakeDisk::with_pattern(DISK_LEN), false);
        let vq = MockSplitQueue::new(&m, 16);
        write_header(&m, HDR, VIRTIO_BLK_T_FLUSH, 0);
        push_chain(&vq, 0, &[(HDR, 16, R), (STATUS, 1, W)]);
        // VRING_AVAIL_F_NO_INTERRUPT (spec §2.7.7).
        m.write_obj(1u16.to_le(), vq.avail_addr()).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let irq = irq();
        process_requestq(&mut q, &m, &mut d, &irq).unwrap();
        assert_eq!(vq.used().idx().load(), 1);
        assert_eq!(irq.status(), 0);
    }
}
