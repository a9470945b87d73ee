//! Tests of `event_handler.rs`: the device in a real event loop.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

use event_manager::{EventManager, SubscriberId, SubscriberOps};
use tempfile::TempDir;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::virtio::vsock::muxer::{guest_target, MuxerOptions, Timeouts};
use crate::virtio::vsock::packet::{op, EVENT_TRANSPORT_RESET};
use crate::virtio::vsock::test_utils::{guest_hdr, test_irq, test_mem, Driver, GUEST_CID, WRITE};
use crate::virtio::vsock::{Vsock, EVENT_QUEUE, RX_QUEUE, TX_QUEUE};
use crate::virtio::{Activation, IrqLine, VirtioDevice, INT_VRING};

type Manager = EventManager<Vsock>;

/// Dispatches every ready event without waiting; returns how many.
fn turn(manager: &mut Manager) -> usize {
    let mut total = 0;
    loop {
        let n = manager.run_with_timeout(0).unwrap();
        if n == 0 {
            return total;
        }
        total += n;
        assert!(total < 1000, "the event loop keeps waking up");
    }
}

struct Setup {
    dir: TempDir,
    manager: Manager,
    id: SubscriberId,
    evts: Vec<EventFd>,
    irq: IrqLine,
}

impl Setup {
    fn new(options: MuxerOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let vsock = Vsock::with_options(GUEST_CID, dir.path().join("v.sock"), options).unwrap();
        let mut manager = Manager::new().unwrap();
        let id = manager.add_subscriber(vsock);
        Setup {
            dir,
            manager,
            id,
            evts: (0..3)
                .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
                .collect(),
            irq: test_irq(),
        }
    }

    fn dev(&mut self) -> &mut Vsock {
        self.manager.subscriber_mut(self.id).unwrap()
    }

    fn activate(&mut self, driver: &Driver) {
        let activation = Activation {
            mem: driver.mem.clone(),
            queues: driver.queues(),
            queue_evts: self.evts.iter().map(|e| e.try_clone().unwrap()).collect(),
            irq: self.irq.clone(),
        };
        self.dev().activate(activation).unwrap();
        turn(&mut self.manager);
    }

    /// The driver notifies queue `q`; the loop runs.
    fn notify(&mut self, q: usize) {
        self.evts[q].write(1).unwrap();
        turn(&mut self.manager);
    }

    fn client(&self) -> UnixStream {
        let s = UnixStream::connect(self.dir.path().join("v.sock")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    fn host_listener(&self, port: u32) -> UnixListener {
        UnixListener::bind(guest_target(&self.dir.path().join("v.sock"), port)).unwrap()
    }
}

fn read_exactly(s: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).unwrap();
    b
}

fn assert_closed(s: &mut UnixStream) {
    let mut b = [0u8; 8];
    assert_eq!(s.read(&mut b).unwrap(), 0);
}

#[test]
fn connections_both_ways_through_the_event_loop() {
    let mem = test_mem();
    let mut driver = Driver::new(&mem);
    let mut t = Setup::new(MuxerOptions::default());
    // A host process connects before the device is active: it waits in
    // the listener's backlog.
    let mut host = t.client();
    host.write_all(b"CONNECT 1024\n").unwrap();
    t.activate(&driver);
    driver.post_rx(8, 4096);
    t.notify(RX_QUEUE);
    let pkts = driver.received();
    assert_eq!(pkts.len(), 1);
    let req = pkts[0].0;
    assert_eq!((req.op, req.dst_port), (op::REQUEST, 1024));
    assert_eq!(t.irq.status() & INT_VRING, INT_VRING);

    driver.post_tx(&guest_hdr(op::RESPONSE, 1024, req.src_port), &[]);
    t.notify(TX_QUEUE);
    let ok = format!("OK {}\n", req.src_port);
    assert_eq!(read_exactly(&mut host, ok.len()), ok.as_bytes());
    host.write_all(b"ping").unwrap();
    turn(&mut t.manager);
    let pkts = driver.received();
    assert_eq!(pkts.len(), 1);
    assert_eq!((pkts[0].0.op, pkts[0].1.as_slice()), (op::RW, &b"ping"[..]));
    driver.post_tx(&guest_hdr(op::RW, 1024, req.src_port), b"PONG");
    t.notify(TX_QUEUE);
    assert_eq!(read_exactly(&mut host, 4), b"PONG");

    // The guest connects out.
    let listener = t.host_listener(5000);
    driver.post_tx(&guest_hdr(op::REQUEST, 60000, 5000), &[]);
    t.notify(TX_QUEUE);
    assert_eq!(driver.received()[0].0.op, op::RESPONSE);
    let (mut out, _) = listener.accept().unwrap();
    driver.post_tx(&guest_hdr(op::RW, 60000, 5000), b"out");
    t.notify(TX_QUEUE);
    assert_eq!(read_exactly(&mut out, 3), b"out");
    out.write_all(b"in").unwrap();
    turn(&mut t.manager);
    assert_eq!(driver.received()[0].1, b"in");

    let c = t.dev().counters();
    assert_eq!((c.host_connections, c.guest_connections), (1, 1));
    assert_eq!((c.bytes_to_guest, c.bytes_from_guest), (6, 7));
}

#[test]
fn a_device_reset_ends_every_connection_and_watches_nothing() {
    let mem = test_mem();
    let mut driver = Driver::new(&mem);
    let mut t = Setup::new(MuxerOptions::default());
    t.activate(&driver);
    let listener = t.host_listener(5000);
    driver.post_rx(8, 4096);
    driver.post_tx(&guest_hdr(op::REQUEST, 60000, 5000), &[]);
    t.notify(TX_QUEUE);
    let (mut out, _) = listener.accept().unwrap();
    let mut pending = t.client();
    turn(&mut t.manager);

    t.dev().reset();
    // The host ends see it at once.
    assert_closed(&mut out);
    assert_closed(&mut pending);
    turn(&mut t.manager);
    // Nothing is watched but the state and the timer: a new host
    // connection, bytes and queue notifications wake nobody.
    let mut late = t.client();
    late.write_all(b"CONNECT 7\n").unwrap();
    for e in &t.evts {
        e.write(1).unwrap();
    }
    assert_eq!(turn(&mut t.manager), 0);
    assert_eq!(t.dev().counters().active_connections, 0);

    // Activated again, the waiting host connection goes through.
    let mut driver = Driver::new(&mem);
    for e in &t.evts {
        let _ = e.read();
    }
    t.activate(&driver);
    driver.post_rx(1, 4096);
    t.notify(RX_QUEUE);
    let pkts = driver.received();
    assert_eq!(pkts.len(), 1);
    assert_eq!((pkts[0].0.op, pkts[0].0.dst_port), (op::REQUEST, 7));
    drop(late);
}

#[test]
fn a_transport_reset_posts_the_event_and_drops_the_connections() {
    let mem = test_mem();
    let mut driver = Driver::new(&mem);
    let mut t = Setup::new(MuxerOptions::default());
    t.activate(&driver);
    let listener = t.host_listener(5000);
    driver.post_rx(8, 4096);
    driver.post_tx(&guest_hdr(op::REQUEST, 60000, 5000), &[]);
    t.notify(TX_QUEUE);
    let (mut out, _) = listener.accept().unwrap();

    // Not before the driver gives an event buffer.
    t.dev().transport_reset();
    turn(&mut t.manager);
    assert_closed(&mut out);
    assert_eq!(driver.evq.used_idx(), 0);
    mem.write_obj(0xffff_ffffu32, GuestAddress(0xf0_0000))
        .unwrap();
    driver.evq.add_chain(&[(0xf0_0000, 4, WRITE)]);
    t.notify(EVENT_QUEUE);
    assert_eq!(driver.evq.used(0).1, 4);
    assert_eq!(
        mem.read_obj::<u32>(GuestAddress(0xf0_0000)).unwrap(),
        EVENT_TRANSPORT_RESET
    );
    assert_eq!(t.dev().counters().active_connections, 0);
    // The guest's packets for the old connection are answered with RST.
    driver.post_tx(&guest_hdr(op::RW, 60000, 5000), b"stale");
    t.notify(TX_QUEUE);
    let pkts = driver.received();
    assert_eq!(pkts.last().unwrap().0.op, op::RST);
}

#[test]
fn the_timer_ends_what_runs_out_of_time() {
    let mem = test_mem();
    let driver = Driver::new(&mem);
    let mut t = Setup::new(MuxerOptions {
        timeouts: Timeouts {
            connect_line: Duration::from_millis(20),
            ..Default::default()
        },
        ..Default::default()
    });
    t.activate(&driver);
    let mut slow = t.client();
    slow.write_all(b"CONN").unwrap();
    slow.set_nonblocking(true).unwrap();
    turn(&mut t.manager);
    // Wait on the loop itself: the timer's event ends it.
    let mut b = [0u8; 8];
    for _ in 0..100 {
        match slow.read(&mut b) {
            // Closed with its bytes unread: a reset, for a Unix stream.
            Ok(0) => panic!("closed after reading the bytes?"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                assert_eq!(t.dev().counters().bad_connect_lines, 1);
                return;
            }
            Ok(n) => panic!("{n} bytes"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        t.manager.run_with_timeout(100).unwrap();
    }
    panic!("the connection outlived its deadline by far");
}
