//! Tests of `queues.rs`: packets read from and written to chains split
//! any way, broken chains, the event queue and the budget.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use tempfile::TempDir;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::virtio::vsock::muxer::guest_target;
use crate::virtio::vsock::packet::op;
use crate::virtio::vsock::test_utils::{
    guest_hdr, options, packet_bytes, test_irq, test_mem, FakeClock, Rig, TestQueue, GUEST_CID,
    INDIRECT, WRITE,
};

fn rig<'a>(mem: &'a GuestMemoryMmap, dir: &TempDir) -> Rig<'a> {
    let clock = FakeClock::new();
    let muxer = Muxer::new(GUEST_CID, dir.path().join("v.sock"), options(16, &clock)).unwrap();
    let mut rig = Rig::new(mem, muxer);
    rig.listen();
    rig
}

/// A guest connection from port 7 to host port 5000, with the host's
/// stream.
fn connected(rig: &mut Rig, dir: &TempDir) -> (UnixListener, UnixStream) {
    let listener = UnixListener::bind(guest_target(&dir.path().join("v.sock"), 5000)).unwrap();
    rig.post_rx(1, 4096);
    rig.send(&guest_hdr(op::REQUEST, 7, 5000), &[]);
    rig.turn();
    assert_eq!(rig.received()[0].0.op, op::RESPONSE);
    let (s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (listener, s)
}

fn rw() -> Header {
    guest_hdr(op::RW, 7, 5000)
}

#[test]
fn transmitted_packets_may_be_split_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let mem = test_mem();
    let mut rig = rig(&mem, &dir);
    let (_l, mut host) = connected(&mut rig, &dir);
    let payload = b"split any way you like";
    let bytes = packet_bytes(&rw(), payload);
    let mut cut_sets: Vec<Vec<usize>> = (1..bytes.len()).map(|c| vec![c]).collect();
    cut_sets.push(vec![10, 20, 30, 40, 44, 45, 50]);
    cut_sets.push((1..bytes.len()).collect());
    for cuts in &cut_sets {
        rig.post_tx_bytes(&bytes, cuts);
        rig.run_tx();
        let mut got = vec![0u8; payload.len()];
        host.read_exact(&mut got).unwrap();
        assert_eq!(&got, payload, "cuts {cuts:?}");
    }
    // Bytes past `len` in the chain are ignored.
    let mut long = bytes.clone();
    long.extend_from_slice(b"trailing junk");
    rig.post_tx_bytes(&long, &[]);
    rig.run_tx();
    let mut got = vec![0u8; payload.len()];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, payload);
    assert_eq!(rig.muxer.counters().malformed, 0);
    assert_eq!(rig.irq.status() & crate::virtio::INT_VRING, 1);
}

#[test]
fn received_packets_fill_chains_split_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let mem = test_mem();
    let mut rig = rig(&mem, &dir);
    let (_l, mut host) = connected(&mut rig, &dir);
    for sizes in [
        &[10u32, 34, 5, 100][..],
        &[44, 16],
        &[1, 1, 42, 3, 3, 3],
        &[4096],
    ] {
        host.write_all(b"0123456789abcdef").unwrap();
        rig.post_rx_chain(sizes);
        rig.turn();
        let pkts = rig.received();
        assert_eq!(pkts.len(), 1, "sizes {sizes:?}");
        let room: u32 = sizes.iter().sum::<u32>() - 44;
        let want = &b"0123456789abcdef"[..16.min(room as usize)];
        assert_eq!(pkts[0].1, want, "sizes {sizes:?}");
        // What did not fit comes next.
        if want.len() < 16 {
            rig.post_rx(1, 4096);
            rig.turn();
            assert_eq!(rig.received()[0].1, &b"0123456789abcdef"[want.len()..]);
        }
    }
}

#[test]
fn bad_transmit_chains_are_returned_counted_and_answered_when_they_can_be() {
    let dir = tempfile::tempdir().unwrap();
    let mem = test_mem();
    let mut rig = rig(&mem, &dir);
    rig.post_rx(16, 4096);
    let mut rsts = 0;
    let mut malformed = 0;
    let mut check = |rig: &mut Rig, answered: bool| {
        rig.run_tx();
        rig.turn();
        malformed += 1;
        let pkts = rig.received();
        if answered {
            rsts += 1;
            assert_eq!(pkts.len(), 1);
            assert_eq!(pkts[0].0.op, op::RST);
            assert_eq!((pkts[0].0.src_port, pkts[0].0.dst_port), (5000, 7));
        } else {
            assert!(pkts.is_empty());
        }
        let c = rig.muxer.counters();
        assert_eq!((c.malformed, c.rsts_sent), (malformed, rsts));
    };

    // `len` over the limit, and beyond the chain.
    let mut h = rw();
    h.len = (MAX_PAYLOAD + 1) as u32;
    let mut bytes = h.to_bytes().to_vec();
    bytes.resize(44 + MAX_PAYLOAD + 1, 0);
    rig.post_tx_bytes(&bytes, &[]);
    check(&mut rig, true);
    let mut bytes = packet_bytes(&rw(), b"0123456789");
    bytes.truncate(50);
    rig.post_tx_bytes(&bytes, &[44]);
    check(&mut rig, true);

    // Shorter than a header: no ports to answer.
    rig.post_tx_bytes(&packet_bytes(&rw(), &[])[..43], &[20]);
    check(&mut rig, false);

    // A device-writable buffer after the header.
    let hdr_at = rig.alloc(64);
    mem.write_slice(&packet_bytes(&rw(), &[])[..44], GuestAddress(hdr_at))
        .unwrap();
    let w = rig.alloc(64);
    rig.txq.add_chain(&[(hdr_at, 44, 0), (w, 8, WRITE)]);
    check(&mut rig, true);

    // An indirect descriptor after the header, and as the head.
    let table = rig.alloc(64);
    rig.txq.add_chain(&[(hdr_at, 44, 0), (table, 32, INDIRECT)]);
    check(&mut rig, true);
    rig.txq.add_chain(&[(table, 32, INDIRECT)]);
    check(&mut rig, false);

    // A buffer outside guest memory.
    rig.txq.add_chain(&[(0x7000_0000, 44, 0)]);
    check(&mut rig, false);

    // Every chain came back.
    assert_eq!(rig.txq.used_idx(), 7);
    assert!((0..7).all(|n| rig.txq.used(n).1 == 0));
}

#[test]
fn bad_receive_chains_are_returned_empty_and_the_packet_waits() {
    let dir = tempfile::tempdir().unwrap();
    let mem = test_mem();
    let mut rig = rig(&mem, &dir);
    // A REQUEST to nobody: an RST is due.
    rig.send(&guest_hdr(op::REQUEST, 1, 1), &[]);
    // Too small for a header, then device-readable.
    rig.post_rx(1, 43);
    rig.post_rx_flags(&[(64, 0)]);
    rig.post_rx(1, 44);
    rig.turn();
    let pkts = rig.received();
    assert_eq!(pkts.len(), 3);
    assert!(
        pkts[0].1.is_empty() && pkts[1].1.is_empty(),
        "returned empty"
    );
    assert_eq!(pkts[2].0.op, op::RST);
    assert_eq!(rig.muxer.counters().malformed, 2);
}

#[test]
fn a_receive_chain_taken_for_nothing_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let mem = test_mem();
    let mut rig = rig(&mem, &dir);
    // A host connection: once the guest accepts, the device looks for
    // bytes after the CONNECT line, and finds none.
    let mut host = UnixStream::connect(dir.path().join("v.sock")).unwrap();
    host.write_all(b"CONNECT 80\n").unwrap();
    rig.post_rx(1, 4096);
    rig.turn();
    let req = rig.received()[0].0;
    rig.post_rx(1, 4096);
    rig.send(&guest_hdr(op::RESPONSE, 80, req.src_port), &[]);
    let before = rig.rx.next_avail();
    rig.turn();
    assert!(rig.received().is_empty());
    assert_eq!(rig.rx.next_avail(), before, "the chain is still available");
    // The same chain takes the first bytes.
    host.write_all(b"x").unwrap();
    rig.turn();
    assert_eq!(rig.received()[0].1, b"x");
}

#[test]
fn transport_reset_events_go_into_event_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let mem = test_mem();
    let mut muxer = Muxer::new(GUEST_CID, dir.path().join("v.sock"), Default::default()).unwrap();
    let mut evq = TestQueue::new(&mem, 0x8000, 16);
    let mut q = evq.create_queue();
    let irq = test_irq();
    let mut pending = true;
    // No buffer yet: it waits.
    process_eventq(&mut q, &mem, &mut pending, &mut muxer, &irq).unwrap();
    assert!(pending);
    assert_eq!(irq.status(), 0);
    // A buffer too small, then one that fits.
    evq.add_chain(&[(0x20_0000, 3, WRITE)]);
    mem.write_obj(0xffff_ffffu32, GuestAddress(0x30_0000))
        .unwrap();
    evq.add_chain(&[(0x30_0000, 8, WRITE)]);
    process_eventq(&mut q, &mem, &mut pending, &mut muxer, &irq).unwrap();
    assert!(!pending);
    assert_eq!((evq.used(0).1, evq.used(1).1), (0, 4));
    assert_eq!(mem.read_obj::<u32>(GuestAddress(0x30_0000)).unwrap(), 0);
    assert_eq!(muxer.counters().malformed, 1);
    assert_eq!(irq.status(), crate::virtio::INT_VRING);
    // Nothing pending: buffers stay with the device.
    evq.add_chain(&[(0x30_0000, 8, WRITE)]);
    process_eventq(&mut q, &mem, &mut pending, &mut muxer, &irq).unwrap();
    assert_eq!(evq.used_idx(), 2);
}

#[test]
fn a_pass_takes_at_most_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mem = test_mem();
    let mut rig = rig(&mem, &dir);
    let (_l, host) = connected(&mut rig, &dir);
    let used_before = rig.txq.used_idx();
    let bytes = packet_bytes(&rw(), b"z");
    let run = |rig: &mut Rig| {
        process_txq(
            &mut rig.tx,
            rig.driver.mem,
            &mut rig.muxer,
            &mut rig.scratch,
            &rig.irq,
        )
        .unwrap()
    };
    // A whole ring of one-byte packets: the pass stops at its budget.
    for _ in 0..256 {
        rig.post_tx_bytes(&bytes, &[]);
    }
    assert!(run(&mut rig), "the budget is spent: call again");
    assert_eq!(rig.txq.used_idx().wrapping_sub(used_before), 256);
    for _ in 0..44 {
        rig.post_tx_bytes(&bytes, &[]);
    }
    assert!(!run(&mut rig));
    assert_eq!(rig.txq.used_idx().wrapping_sub(used_before), 300);
    // So many tiny writes fill the socket's buffer with its per-write
    // overhead: the rest waits in the device until the host reads.
    let mut got = Vec::new();
    host.set_nonblocking(true).unwrap();
    while got.len() < 300 {
        let mut buf = [0u8; 512];
        match (&host).read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => assert!(rig.turn() > 0),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, [b'z'; 300]);
}

#[test]
fn a_descriptor_loop_in_a_transmit_chain_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mem = test_mem();
    let mut rig = rig(&mem, &dir);
    let at = rig.alloc(64);
    mem.write_slice(&packet_bytes(&rw(), &[])[..44], GuestAddress(at))
        .unwrap();
    // Descriptor 0 links to itself.
    rig.txq
        .set_desc(0, RawDescriptor::from(SplitDescriptor::new(at, 44, 1, 0)));
    rig.txq.publish(0);
    rig.run_tx();
    assert_eq!(rig.muxer.counters().malformed, 1);
}
