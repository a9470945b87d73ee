//! Network device benchmarks: frames per second through the virtio-net
//! model, transmit and receive, 1514- and 64-byte frames, with an
//! in-memory backend; and transmission to a real tap, next to plain
//! `writev(2)`s of the same guest buffers to it.
//!
//! `cargo bench --bench net`. Each iteration moves one ring's worth (256)
//! of frames; criterion's element rate is frames per second. The tap
//! benchmarks need root and /dev/net/tun: they create their tap inside a
//! network namespace of their own (`ip netns add`), with no address and no
//! peer, so no frame leaves it, and delete the namespace at the end.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::Command;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use devices::virtio::net::{process_rxq, process_txq, NetBackend, Rx, Tap, Tx, VNET_HDR_LEN};
use devices::virtio::IrqLine;
use virtio_queue::{Queue, QueueT};
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Frames per iteration: one full ring.
const QUEUE_SIZE: u16 = 256;
// Guest layout: descriptor table, available ring, used ring, then one
// 2 KiB buffer per descriptor.
const DESC_TABLE: u64 = 0x0;
const AVAIL_RING: u64 = 0x1000;
const USED_RING: u64 = 0x2000;
const BUFFERS: u64 = 0x1_0000;
const BUFFER_SIZE: u64 = 2048;
/// Descriptor flag: device-writable (spec §2.7.5).
const VIRTQ_DESC_F_WRITE: u16 = 2;
/// Frame sizes measured (Ethernet bytes, vnet header not included).
const FRAME_SIZES: [usize; 2] = [1514, 64];

/// One split queue as a driver would set it up: `QUEUE_SIZE` single-buffer
/// chains of `len` bytes, reposted all at once by [`Ring::post_all`].
struct Ring {
    mem: GuestMemoryMmap,
    queue: Queue,
    avail_idx: u16,
}

impl Ring {
    fn new(len: u32, writable: bool) -> Self {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x80_0000)]).unwrap();
        let flags = if writable { VIRTQ_DESC_F_WRITE } else { 0 };
        for i in 0..u64::from(QUEUE_SIZE) {
            // struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; }
            let at = GuestAddress(DESC_TABLE + 16 * i);
            mem.write_obj((BUFFERS + i * BUFFER_SIZE).to_le(), at)
                .unwrap();
            mem.write_obj(len.to_le(), GuestAddress(at.0 + 8)).unwrap();
            mem.write_obj(flags.to_le(), GuestAddress(at.0 + 12))
                .unwrap();
            // struct virtq_avail { le16 flags; le16 idx; le16 ring[]; }:
            // slot i always names chain i.
            mem.write_obj((i as u16).to_le(), GuestAddress(AVAIL_RING + 4 + 2 * i))
                .unwrap();
        }
        let mut queue = Queue::new(QUEUE_SIZE).unwrap();
        queue.set_size(QUEUE_SIZE);
        queue.set_desc_table_address(Some(DESC_TABLE as u32), Some(0));
        queue.set_avail_ring_address(Some(AVAIL_RING as u32), Some(0));
        queue.set_used_ring_address(Some(USED_RING as u32), Some(0));
        queue.set_ready(true);
        Ring {
            mem,
            queue,
            avail_idx: 0,
        }
    }

    /// Fills every buffer with `frame` (for transmission).
    fn fill(&self, frame: &[u8]) {
        for i in 0..u64::from(QUEUE_SIZE) {
            self.mem
                .write_slice(frame, GuestAddress(BUFFERS + i * BUFFER_SIZE))
                .unwrap();
        }
    }

    /// Makes all chains available again (the device used them all).
    fn post_all(&mut self) {
        self.avail_idx = self.avail_idx.wrapping_add(QUEUE_SIZE);
        self.mem
            .write_obj(self.avail_idx.to_le(), GuestAddress(AVAIL_RING + 2))
            .unwrap();
    }
}

/// A frame: zero vnet header (no offloads), broadcast-free Ethernet
/// header with an experimental EtherType, then a payload.
fn frame(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN + len];
    let eth = &mut f[VNET_HDR_LEN..];
    eth[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    eth[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    eth[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    for (i, b) in eth[14..].iter_mut().enumerate() {
        *b = i as u8;
    }
    f
}

/// Takes frames as the kernel would: copies them out, keeps none.
struct Sink {
    scratch: Vec<u8>,
}

impl NetBackend for Sink {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn write_vectored<'a, B: BitmapSlice + 'a>(
        &mut self,
        frame: impl Iterator<Item = VolatileSlice<'a, B>>,
    ) -> io::Result<usize> {
        let mut n = 0;
        for slice in frame {
            n += slice.copy_to(&mut self.scratch[n..]);
        }
        Ok(n)
    }

    fn set_offload(&mut self, _flags: u32) -> io::Result<()> {
        Ok(())
    }
}

/// Hands out `left` copies of one frame, then would block.
struct Source {
    frame: Vec<u8>,
    left: usize,
}

impl NetBackend for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.left -= 1;
        buf[..self.frame.len()].copy_from_slice(&self.frame);
        Ok(self.frame.len())
    }

    fn write_vectored<'a, B: BitmapSlice + 'a>(
        &mut self,
        _frame: impl Iterator<Item = VolatileSlice<'a, B>>,
    ) -> io::Result<usize> {
        Ok(0)
    }

    fn set_offload(&mut self, _flags: u32) -> io::Result<()> {
        Ok(())
    }
}

fn irq() -> IrqLine {
    IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap())
}

/// Transmits one ring of `len`-byte frames per iteration into `backend`.
fn bench_tx<B: NetBackend>(c: &mut Criterion, group: &str, len: usize, backend: &mut B) -> Tx {
    let f = frame(len);
    let mut ring = Ring::new(f.len() as u32, false);
    ring.fill(&f);
    let mut tx = Tx::new();
    let irq = irq();
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(u64::from(QUEUE_SIZE)));
    g.bench_function(BenchmarkId::from_parameter(len), |b| {
        b.iter(|| {
            ring.post_all();
            process_txq(&mut ring.queue, &ring.mem, backend, &mut tx, &irq).unwrap();
        })
    });
    g.finish();
    // The eventfd counts one interrupt per ring; empty it now and then.
    let _ = irq.event().read();
    tx
}

fn tx_model(c: &mut Criterion) {
    for len in FRAME_SIZES {
        let mut sink = Sink {
            scratch: vec![0; 65562],
        };
        let tx = bench_tx(c, "net_tx_model", len, &mut sink);
        assert_eq!(tx.counters.errors + tx.counters.malformed, 0);
    }
}

fn rx_model(c: &mut Criterion) {
    for len in FRAME_SIZES {
        let mut ring = Ring::new(BUFFER_SIZE as u32, true);
        let mut source = Source {
            frame: frame(len),
            left: 0,
        };
        let mut rx = Rx::new();
        let irq = irq();
        let mut g = c.benchmark_group("net_rx_model");
        g.throughput(Throughput::Elements(u64::from(QUEUE_SIZE)));
        g.bench_function(BenchmarkId::from_parameter(len), |b| {
            b.iter(|| {
                ring.post_all();
                source.left = usize::from(QUEUE_SIZE);
                process_rxq(&mut ring.queue, &ring.mem, &mut source, &mut rx, &irq).unwrap();
            })
        });
        g.finish();
        assert_eq!(rx.counters.dropped + rx.counters.malformed, 0);
        assert_eq!(source.left, 0);
    }
}

/// A network namespace of the benchmark's own, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Option<Netns> {
        let name = format!("podvm-bench-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Netns { name })
    }

    /// Runs `f` with this thread inside the namespace.
    fn enter<T>(&self, f: impl FnOnce() -> T) -> io::Result<T> {
        let home = File::open("/proc/thread-self/ns/net")?;
        let ns = File::open(format!("/run/netns/{}", self.name))?;
        setns(&ns)?;
        let out = f();
        setns(&home)?;
        Ok(out)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn setns(ns: &File) -> io::Result<()> {
    // SAFETY: setns only reads the fd, which is open.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A tap in a fresh namespace, up, with no address: frames written to it
/// enter that namespace's stack, which has nowhere to send them.
fn isolated_tap() -> Option<(Netns, Tap)> {
    if !testkit::need_net("tap benchmarks") {
        return None;
    }
    let Some(ns) = Netns::create() else {
        eprintln!("SKIPPED tap benchmarks: `ip netns add` failed");
        return None;
    };
    let name = format!("podvmb{}", std::process::id());
    let tap = match ns.enter(|| Tap::open(&name)) {
        Ok(Ok(tap)) => tap,
        Ok(Err(e)) => {
            eprintln!("SKIPPED tap benchmarks: {e}");
            return None;
        }
        Err(e) => {
            eprintln!("SKIPPED tap benchmarks: cannot enter the namespace: {e}");
            return None;
        }
    };
    let up = Command::new("ip")
        .args(["-n", &ns.name, "link", "set", &name, "up"])
        .status()
        .is_ok_and(|s| s.success());
    if !up {
        eprintln!("SKIPPED tap benchmarks: cannot bring {name} up");
        return None;
    }
    Some((ns, tap))
}

fn tx_tap(c: &mut Criterion) {
    let Some((_ns, mut tap)) = isolated_tap() else {
        return;
    };
    for len in FRAME_SIZES {
        let tx = bench_tx(c, "net_tx_tap", len, &mut tap);
        assert_eq!(tx.counters.errors + tx.counters.malformed, 0);

        // The same frames from the same guest buffers by plain writev(2),
        // one per frame as the device does: the syscall alone.
        let f = frame(len);
        let ring = Ring::new(f.len() as u32, false);
        ring.fill(&f);
        let iovecs: Vec<libc::iovec> = (0..u64::from(QUEUE_SIZE))
            .map(|i| libc::iovec {
                iov_base: ring
                    .mem
                    .get_host_address(GuestAddress(BUFFERS + i * BUFFER_SIZE))
                    .unwrap()
                    .cast(),
                iov_len: f.len(),
            })
            .collect();
        let mut g = c.benchmark_group("net_tx_tap_writev_only");
        g.throughput(Throughput::Elements(u64::from(QUEUE_SIZE)));
        g.bench_function(BenchmarkId::from_parameter(len), |b| {
            b.iter(|| {
                for iov in &iovecs {
                    // SAFETY: the iovec describes a live guest buffer of
                    // `iov_len` bytes.
                    let n = unsafe { libc::writev(tap.as_raw_fd(), iov, 1) };
                    assert_eq!(n, f.len() as isize);
                }
            })
        });
        g.finish();
    }
}

criterion_group!(benches, tx_model, rx_model, tx_tap);
criterion_main!(benches);
