//! vsock device benchmarks: stream throughput both ways and connection
//! setup through the device model (the muxer and the queue functions, on
//! mock queues in guest memory, with real Unix sockets on the host side),
//! each next to a bare Unix-socket relay of the same bytes.
//!
//! `cargo bench --bench vsock`. Throughput benchmarks move 128 KiB per
//! iteration (criterion reports bytes per second): guest → host as 8 RW
//! packets of 16 KiB, host → guest into 32 receive buffers of 4 KiB, as a
//! Linux guest posts them. The relay baselines copy the same bytes between
//! the same guest buffers and a Unix socket pair with plain `read`/`write`
//! calls, without the protocol. Setup benchmarks time one connection,
//! set up and torn down, per iteration, against `connect` + `accept` (and
//! for host-initiated ones the CONNECT/OK line exchange) on a bare socket.
//!
//! There is no event loop here: where epoll would report a host socket
//! readable, the benchmark tells the muxer itself.

// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use devices::virtio::vsock::packet::{op, Header, HDR_LEN, TYPE_STREAM};
use devices::virtio::vsock::{
    guest_target, process_rxq, process_txq, FdOp, Muxer, MuxerOptions, Readiness, Scratch, HOST_CID,
};
use devices::virtio::IrqLine;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const QUEUE_SIZE: u16 = 256;
const GUEST_CID: u64 = 3;
/// Bytes per throughput iteration.
const CHUNK: usize = 128 * 1024;
/// Guest → host packet payload.
const TX_PAYLOAD: usize = 16 * 1024;
/// Host → guest receive buffer payload (Linux's default).
const RX_PAYLOAD: usize = 4096;
/// The guest's advertised receive space.
const GUEST_BUF_ALLOC: u32 = 256 * 1024;
/// Descriptor flag: device-writable (spec §2.7.5).
const VIRTQ_DESC_F_WRITE: u16 = 2;
const GUEST_PORT: u32 = 49152;
const HOST_PORT: u32 = 5000;

/// One split queue as a driver sets it up, at `base` in guest memory:
/// descriptor i always points at buffer i (`stride` bytes apart).
struct Ring {
    queue: Queue,
    base: u64,
    buffers: u64,
    stride: u64,
    next: u16,
}

impl Ring {
    fn new(base: u64, buffers: u64, stride: u64) -> Self {
        let mut queue = Queue::new(QUEUE_SIZE).unwrap();
        queue.set_size(QUEUE_SIZE);
        queue.set_desc_table_address(Some(base as u32), Some(0));
        queue.set_avail_ring_address(Some((base + 0x1000) as u32), Some(0));
        queue.set_used_ring_address(Some((base + 0x2000) as u32), Some(0));
        queue.set_ready(true);
        Ring {
            queue,
            base,
            buffers,
            stride,
            next: 0,
        }
    }

    /// The buffer the next chain will use.
    fn next_buffer(&self) -> GuestAddress {
        GuestAddress(self.buffers + u64::from(self.next % QUEUE_SIZE) * self.stride)
    }

    /// Makes the next descriptor a chain of `len` bytes and publishes it.
    fn push(&mut self, mem: &GuestMemoryMmap, len: u32, flags: u16) {
        let i = u64::from(self.next % QUEUE_SIZE);
        // struct virtq_desc { le64 addr; le32 len; le16 flags; le16 next; }
        let at = GuestAddress(self.base + 16 * i);
        mem.write_obj((self.buffers + i * self.stride).to_le(), at)
            .unwrap();
        mem.write_obj(len.to_le(), GuestAddress(at.0 + 8)).unwrap();
        mem.write_obj(flags.to_le(), GuestAddress(at.0 + 12))
            .unwrap();
        // struct virtq_avail { le16 flags; le16 idx; le16 ring[]; }
        mem.write_obj(
            (i as u16).to_le(),
            GuestAddress(self.base + 0x1000 + 4 + 2 * i),
        )
        .unwrap();
        self.next = self.next.wrapping_add(1);
        mem.write_obj(self.next.to_le(), GuestAddress(self.base + 0x1002))
            .unwrap();
    }
}

/// The guest side of one device: memory, receive and transmit rings, and
/// the device model's queue state.
struct Guest {
    mem: GuestMemoryMmap,
    rx: Ring,
    tx: Ring,
    muxer: Muxer,
    scratch: Scratch,
    irq: IrqLine,
    /// Payload bytes the guest consumed (its fwd_cnt).
    fwd_cnt: u32,
}

impl Guest {
    fn new(muxer: Muxer) -> Self {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x200_0000)]).unwrap();
        Guest {
            mem,
            // Receive buffers: 256 x 8 KiB from 1 MiB; transmit: 256 x 32 KiB from 4 MiB.
            rx: Ring::new(0, 0x10_0000, 0x2000),
            tx: Ring::new(0x4000, 0x40_0000, 0x8000),
            muxer,
            scratch: Scratch::new(),
            irq: IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            fwd_cnt: 0,
        }
    }

    fn header(&self, op: u16, len: usize, src: u32, dst: u32) -> Header {
        Header {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port: src,
            dst_port: dst,
            len: len as u32,
            type_: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: GUEST_BUF_ALLOC,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// Queues one packet on the transmit ring (its payload, if any,
    /// already in place after the header).
    fn post_tx(&mut self, hdr: &Header) {
        let at = self.tx.next_buffer();
        self.mem.write_slice(&hdr.to_bytes(), at).unwrap();
        self.tx
            .push(&self.mem, (HDR_LEN + hdr.len as usize) as u32, 0);
    }

    fn run_tx(&mut self) {
        process_txq(
            &mut self.tx.queue,
            &self.mem,
            &mut self.muxer,
            &mut self.scratch,
            &self.irq,
        )
        .unwrap();
    }

    fn run_rx(&mut self) {
        process_rxq(
            &mut self.rx.queue,
            &self.mem,
            &mut self.muxer,
            &mut self.scratch,
            &self.irq,
        )
        .unwrap();
        let _ = self.irq.event().read();
    }

    /// The header of the last used receive chain.
    fn last_rx(&self) -> Header {
        let used = self.rx.base + 0x2000;
        let idx: u16 = self.mem.read_obj(GuestAddress(used + 2)).unwrap();
        let slot = u64::from(idx.wrapping_sub(1) % QUEUE_SIZE);
        let id: u32 = self
            .mem
            .read_obj(GuestAddress(used + 4 + 8 * slot))
            .unwrap();
        let mut raw = [0u8; HDR_LEN];
        self.mem
            .read_slice(
                &mut raw,
                GuestAddress(self.rx.buffers + u64::from(id) * self.rx.stride),
            )
            .unwrap();
        Header::from_bytes(&raw)
    }

    /// Applies the muxer's watch-list changes the way the event loop
    /// would (closing removed streams); returns the tokens added.
    fn fd_ops(&mut self) -> Vec<u32> {
        let mut added = Vec::new();
        for op in self.muxer.take_fd_ops() {
            if let FdOp::Add { token, .. } = op {
                added.push(token);
            }
        }
        added
    }
}

fn readable() -> Readiness {
    Readiness {
        readable: true,
        writable: true,
        ..Default::default()
    }
}

fn drain(s: &mut UnixStream, mut n: usize, buf: &mut [u8]) {
    while n > 0 {
        let len = n.min(buf.len());
        let got = s.read(&mut buf[..len]).unwrap();
        assert!(got > 0, "EOF");
        n -= got;
    }
}

/// A device with a guest connection to `HOST_PORT` and the host's end of
/// it, plus the connection's token.
fn connected() -> (tempfile::TempDir, Guest, UnixStream, u32) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.sock");
    let listener = UnixListener::bind(guest_target(&path, HOST_PORT)).unwrap();
    let muxer = Muxer::new(GUEST_CID, path, MuxerOptions::default()).unwrap();
    let mut g = Guest::new(muxer);
    let req = g.header(op::REQUEST, 0, GUEST_PORT, HOST_PORT);
    g.post_tx(&req);
    g.run_tx();
    let token = g.fd_ops()[0];
    g.rx.push(&g.mem, (HDR_LEN + RX_PAYLOAD) as u32, VIRTQ_DESC_F_WRITE);
    g.run_rx();
    assert_eq!(g.last_rx().op, op::RESPONSE);
    let (host, _) = listener.accept().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (dir, g, host, token)
}

fn guest_to_host(c: &mut Criterion) {
    let mut group = c.benchmark_group("vsock_guest_to_host");
    group.throughput(Throughput::Bytes(CHUNK as u64));
    let payload: Vec<u8> = (0..TX_PAYLOAD).map(|i| i as u8).collect();

    let (_dir, mut g, mut host, _token) = connected();
    // The payloads sit in the transmit buffers once and for all; each
    // packet's header is written as the guest would.
    for i in 0..u64::from(QUEUE_SIZE) {
        let at = GuestAddress(g.tx.buffers + i * g.tx.stride + HDR_LEN as u64);
        g.mem.write_slice(&payload, at).unwrap();
    }
    let mut buf = vec![0u8; CHUNK];
    group.bench_function("device", |b| {
        b.iter(|| {
            for _ in 0..CHUNK / TX_PAYLOAD {
                let h = g.header(op::RW, TX_PAYLOAD, GUEST_PORT, HOST_PORT);
                g.post_tx(&h);
            }
            g.run_tx();
            drain(&mut host, CHUNK, &mut buf);
        })
    });
    let counters = g.muxer.counters();
    assert_eq!((counters.malformed, counters.rsts_sent), (0, 0));

    // The relay: the same guest buffers copied out and written to a
    // socket, read on the other end.
    let (mut a, mut b_end) = UnixStream::pair().unwrap();
    let mut copy = vec![0u8; TX_PAYLOAD];
    group.bench_function("bare_relay", |b| {
        b.iter(|| {
            for i in 0..CHUNK / TX_PAYLOAD {
                let at = GuestAddress(g.tx.buffers + i as u64 * g.tx.stride + HDR_LEN as u64);
                g.mem.read_slice(&mut copy, at).unwrap();
                a.write_all(&copy).unwrap();
            }
            drain(&mut b_end, CHUNK, &mut buf);
        })
    });
    group.finish();
}

fn host_to_guest(c: &mut Criterion) {
    let mut group = c.benchmark_group("vsock_host_to_guest");
    group.throughput(Throughput::Bytes(CHUNK as u64));
    let data: Vec<u8> = (0..CHUNK).map(|i| (i * 7) as u8).collect();

    let (_dir, mut g, mut host, token) = connected();
    let mut received = 0u64;
    group.bench_function("device", |b| {
        b.iter(|| {
            host.write_all(&data).unwrap();
            for _ in 0..CHUNK / RX_PAYLOAD {
                g.rx.push(&g.mem, (HDR_LEN + RX_PAYLOAD) as u32, VIRTQ_DESC_F_WRITE);
            }
            // epoll would say: readable.
            g.muxer.on_fd_event(token, readable());
            g.run_rx();
            received += CHUNK as u64;
            // The guest consumed it all: new credit.
            g.fwd_cnt = received as u32;
            let h = g.header(op::CREDIT_UPDATE, 0, GUEST_PORT, HOST_PORT);
            g.post_tx(&h);
            g.run_tx();
        })
    });
    let counters = g.muxer.counters();
    assert_eq!(counters.bytes_to_guest, received);
    assert_eq!((counters.malformed, counters.rsts_sent), (0, 0));

    // The relay: read from the socket into the guest's buffers.
    let (mut a, mut b_end) = UnixStream::pair().unwrap();
    let mut scratch = vec![0u8; RX_PAYLOAD];
    group.bench_function("bare_relay", |b| {
        b.iter(|| {
            a.write_all(&data).unwrap();
            for i in 0..CHUNK / RX_PAYLOAD {
                let mut n = 0;
                while n < RX_PAYLOAD {
                    n += b_end.read(&mut scratch[n..]).unwrap();
                }
                let at = GuestAddress(g.rx.buffers + i as u64 * g.rx.stride + HDR_LEN as u64);
                g.mem.write_slice(&scratch, at).unwrap();
            }
        })
    });
    group.finish();
}

fn setup(c: &mut Criterion) {
    let mut group = c.benchmark_group("vsock_connection_setup");

    // Guest → host: REQUEST, connect, RESPONSE, accept; then RST.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.sock");
    let listener = UnixListener::bind(guest_target(&path, HOST_PORT)).unwrap();
    let muxer = Muxer::new(GUEST_CID, path.clone(), MuxerOptions::default()).unwrap();
    let mut g = Guest::new(muxer);
    group.bench_function("guest_to_host_device", |b| {
        b.iter(|| {
            let req = g.header(op::REQUEST, 0, GUEST_PORT, HOST_PORT);
            g.post_tx(&req);
            g.run_tx();
            g.rx.push(&g.mem, (HDR_LEN + RX_PAYLOAD) as u32, VIRTQ_DESC_F_WRITE);
            g.run_rx();
            let (s, _) = listener.accept().unwrap();
            let rst = g.header(op::RST, 0, GUEST_PORT, HOST_PORT);
            g.post_tx(&rst);
            g.run_tx();
            g.fd_ops();
            drop(s);
        })
    });
    assert_eq!(g.last_rx().op, op::RESPONSE);
    let bare = dir.path().join("bare.sock");
    let bare_listener = UnixListener::bind(&bare).unwrap();
    group.bench_function("guest_to_host_bare", |b| {
        b.iter(|| {
            let a = UnixStream::connect(&bare).unwrap();
            let (s, _) = bare_listener.accept().unwrap();
            drop(a);
            drop(s);
        })
    });

    // Host → guest: connect, CONNECT line, REQUEST, RESPONSE, OK line;
    // then RST.
    group.bench_function("host_to_guest_device", |b| {
        let mut ok = [0u8; 64];
        b.iter(|| {
            let mut s = UnixStream::connect(&path).unwrap();
            s.write_all(b"CONNECT 1024\n").unwrap();
            g.muxer.accept_host_connections();
            let token = g.fd_ops()[0];
            g.muxer.on_fd_event(token, readable());
            g.rx.push(&g.mem, (HDR_LEN + RX_PAYLOAD) as u32, VIRTQ_DESC_F_WRITE);
            g.run_rx();
            let req = g.last_rx();
            assert_eq!(req.op, op::REQUEST);
            let resp = g.header(op::RESPONSE, 0, 1024, req.src_port);
            g.post_tx(&resp);
            g.run_tx();
            let n = s.read(&mut ok).unwrap();
            assert_eq!(&ok[..3], b"OK ", "{n} bytes");
            let rst = g.header(op::RST, 0, 1024, req.src_port);
            g.post_tx(&rst);
            g.run_tx();
            g.fd_ops();
        })
    });
    group.bench_function("host_to_guest_bare", |b| {
        let mut line = [0u8; 64];
        b.iter(|| {
            let mut a = UnixStream::connect(&bare).unwrap();
            a.write_all(b"CONNECT 1024\n").unwrap();
            let (mut s, _) = bare_listener.accept().unwrap();
            let n = s.read(&mut line).unwrap();
            assert_eq!(n, 13);
            s.write_all(b"OK 1073741824\n").unwrap();
            let n = a.read(&mut line).unwrap();
            assert!(n > 0);
        })
    });
    group.finish();
    let c = g.muxer.counters();
    assert_eq!(c.active_connections, 0);
    assert_eq!(c.malformed, 0);
}

criterion_group!(benches, guest_to_host, host_to_guest, setup);
criterion_main!(benches);
