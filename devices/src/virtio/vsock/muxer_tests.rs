//! Tests of `muxer.rs` (and, through it, `connection.rs` and the queue
//! functions): real Unix sockets in a temporary directory on the host
//! side, mock queues on the guest's.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;
use vm_memory::GuestMemoryMmap;

use super::*;
use crate::virtio::vsock::connection::{CONN_BUF_SIZE, LINGER_TIMEOUT};
use crate::virtio::vsock::packet::{SHUTDOWN_BOTH, SHUTDOWN_SEND};
use crate::virtio::vsock::test_utils::{guest_hdr, options, test_mem, FakeClock, Rig, GUEST_CID};

struct Env {
    dir: TempDir,
    clock: FakeClock,
}

impl Env {
    fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
            clock: FakeClock::new(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("v.sock")
    }

    fn rig<'a>(&self, mem: &'a GuestMemoryMmap, max: usize) -> Rig<'a> {
        let muxer = Muxer::new(GUEST_CID, self.path(), options(max, &self.clock)).unwrap();
        let mut rig = Rig::new(mem, muxer);
        rig.listen();
        rig
    }

    /// A host process's socket listening at `<uds_path>_<port>`.
    fn host_listener(&self, port: u32) -> UnixListener {
        UnixListener::bind(guest_target(&self.path(), port)).unwrap()
    }
}

/// A host process's connection to the device's socket.
fn client(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn read_line(s: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') {
        assert_eq!(s.read(&mut b).unwrap(), 1, "EOF before the line ended");
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

/// Asserts the peer closed: a read gives EOF (or a reset).
fn assert_closed(s: &mut UnixStream) {
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("{n} more bytes instead of EOF"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
}

/// Asserts nothing is waiting in `s` and it is still open.
fn assert_open_and_quiet(s: &UnixStream) {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let r = (&*s).read(&mut b);
    s.set_nonblocking(false).unwrap();
    assert_eq!(r.unwrap_err().kind(), ErrorKind::WouldBlock);
}

/// The ops of the packets.
fn ops(pkts: &[(Header, Vec<u8>)]) -> Vec<u16> {
    pkts.iter().map(|(h, _)| h.op).collect()
}

/// A host process connects to guest port `port` and the guest accepts;
/// returns the host's stream and the connection's host port.
fn host_to_guest(env: &Env, rig: &mut Rig, port: u32, guest_buf: u32) -> (UnixStream, u32) {
    let mut s = client(&env.path());
    s.write_all(format!("CONNECT {port}\n").as_bytes()).unwrap();
    rig.post_rx(1, 4096);
    rig.turn();
    let pkts = rig.received();
    assert_eq!(ops(&pkts), [op::REQUEST]);
    let req = pkts[0].0;
    assert_eq!(
        (req.src_cid, req.dst_cid, req.dst_port, req.type_),
        (HOST_CID, GUEST_CID, port, TYPE_STREAM)
    );
    let mut resp = guest_hdr(op::RESPONSE, port, req.src_port);
    resp.buf_alloc = guest_buf;
    rig.send(&resp, &[]);
    rig.turn();
    assert_eq!(read_line(&mut s), format!("OK {}\n", req.src_port));
    (s, req.src_port)
}

/// The guest connects from `guest_port` to host port `port`, where `host`
/// listens; returns the host's accepted stream.
fn guest_to_host(rig: &mut Rig, host: &UnixListener, guest_port: u32, port: u32) -> UnixStream {
    rig.post_rx(1, 4096);
    rig.send(&guest_hdr(op::REQUEST, guest_port, port), &[]);
    rig.turn();
    let pkts = rig.received();
    assert_eq!(ops(&pkts), [op::RESPONSE]);
    assert_eq!((pkts[0].0.src_port, pkts[0].0.dst_port), (port, guest_port));
    let (s, _) = host.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn rw(src: u32, dst: u32) -> Header {
    guest_hdr(op::RW, src, dst)
}

#[test]
fn a_host_connects_to_a_guest_port_and_bytes_flow_both_ways() {
    let env = Env::new();
    let mem = test_mem();
    let mut rig = env.rig(&mem, 16);
    let (mut host, hport) = host_to_guest(&env, &mut rig, 1024, 65536);
    assert_eq!(hport, FIRST_LOCAL_PORT);

    host.write_all(b"hello guest\n").unwrap();
    rig.post_rx(4, 4096);
    rig.turn();
    let pkts = rig.received();
    assert_eq!(ops(&pkts), [op::RW]);
    assert_eq!(pkts[0].1, b"hello guest\n");
    assert_eq!((pkts[0].0.src_port, pkts[0].0.dst_port), (hport, 1024));

    rig.send(&rw(1024, hport), b"HELLO GUEST\n");
    assert_eq!(read_line(&mut host), "HELLO GUEST\n");

    let c = rig.muxer.counters();
    assert_eq!(c.host_connections, 1);
    assert_eq!(c.guest_connections, 0);
    assert_eq!(c.active_connections, 1);
    assert_eq!(c.bytes_to_guest, 12);
    assert_eq!(c.bytes_from_guest, 12);
    assert_eq!((c.malformed, c.rsts_sent), (0, 0));
}

#[test]
fn the_connect_line_may_come_in_pieces_and_bytes_after_it_wait_for_the_guest() {
    let env = Env::new();
    let mem = test_mem();
    let mut rig = env.rig(&mem, 16);
    rig.post_rx(4, 4096);
    let mut host = client(&env.path());
    for piece in [&b"CONN"[..], b"ECT 10", b"24"] {
        host.write_all(piece).unwrap();
        rig.turn();
        assert!(rig.received().is_empty());
    }
    // The rest of the line and the first bytes of the stream at once.
    host.write_all(b"\nearly bytes").unwrap();
    rig.turn();
    let pkts = rig.received();
    assert_eq!(ops(&pkts), [op::REQUEST]);
    let hport = pkts[0].0.src_port;
    // Nothing flows before the guest accepts.
    rig.turn();
    assert!(rig.received().is_empty());
    rig.send(&guest_hdr(op::RESPONSE, 1024, hport), &[]);
    rig.turn();
    assert_eq!(read_line(&mut host), format!("OK {hport}\n"));
    let pkts = rig.received();
    assert_eq!(ops(&pkts), [op::RW]);
    assert_eq!(pkts[0].1, b"early bytes");
}

#[test]
fn malformed_connect_lines_close_the_socket_and_nothing_else() {
    let env = Env::new();
    let mem = test_mem();
    let mut rig = env.rig(&mem, 16);
    rig.post_rx(4, 4096);
    for bad in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"CONNECT x\n",
        b"CONNECT 99999999999",
        b"CONNECT 1024 \n",
    ] {
        let mut host = client(&env.path());
        host.write_all(bad).unwrap();
        rig.turn();
        assert_closed(&mut host);
    }
    // Half a line, then the host stops sending.
    let mut host = client(&env.path());
    host.write_all(b"CONNECT 10").unwrap();
    host.shutdown(Shutdown::Write).unwrap();
    rig.turn();
    assert_closed(&mut host);
    // A host that never finishes its line is closed at the deadline.
    let mut slow = client(&env.path());
    slow.write_all(b"CONNECT").unwrap();
    rig.turn();
    assert_open_and_quiet(&slow);
    env.clock.advance(CONNECT_LINE_TIMEOUT);
    rig.muxer.expire();
    rig.turn();
    assert_closed(&mut slow);

    assert!(rig.received().is_empty(), "the guest heard of none of them");
    let c = rig.muxer.counters();
    assert_eq!(c.bad_connect_lines, 6);
    assert_eq!(c.active_connections, 0);
    assert_eq!(rig.watched(), 0);
}

#[test]
fn a_guest_rst_instead_of_response_closes_the_host_stream() {
    let env = Env::new();
    let mem = test_mem();
    let mut rig = env.rig(&mem, 16);
    let mut host = client(&env.path());
    host.write_all(b"CONNECT 1024\n").unwrap();
    rig.post_rx(1, 4096);
    rig.turn();
    let req = rig.received()[0].0;
    rig.send(&guest_hdr(op::RST, 1024, req.src_port), &[]);
    rig.turn();
    assert_closed(&mut host);
    assert!(rig.received().is_empty(), "no RST answers an RST");
    assert_eq!(rig.muxer.counters().active_connections, 0);
    assert_eq!(rig.muxer.counters().host_connections, 0);
}

#[test]
fn a_guest_that_never_answers_is_reset_at_the_deadline() {
    let env = Env::new();
    let mem = test_mem();
    let mut rig = env.rig(&mem, 16);
    let mut host = client(&env.path());
    host.write_all(b"CONNECT 1024\n").unwrap();
    rig.post_rx(2, 4096);
    rig.turn();
    let req = rig.received()[0].0;
    env.clock
        .advance(REQUEST_TIMEOUT - Duration::from_millis(1));
    rig.muxer.expire();
    assert_open_and_quiet(&host);
    env.clock.advance(Duration::from_millis(1));
    rig.muxer.expire();
    rig.turn();
    assert_closed(&mut host);
    let pkts = rig.received();
    assert_eq!(ops(&pkts), [op::RST]);
    assert_eq!(
        (pkts[0].0.src_port, pkts[0].0.dst_port),
        (req.src_port, 1024)
    );
}

#[test]
fn the_guest_connects_to_a_host_socket_and_bytes_flow_both_ways() {
    let env = Env::new();
    let mem = test_mem();
    let mut rig = env.rig(&mem, 16);
    let listener = env.host_listener(5000);
    let mut host = guest_to_host(&mut rig, &listener, 49152, 5000);

    rig.send(&rw(49152, 5000), b"hello from guest\n");
    assert_eq!(read_line(&mut host), "hello from guest\n");
    host.write_all(b"hi\n").unwrap();
    rig.post_rx(1, 4096);
    rig.turn();
    let pkts = rig.received();
    assert_eq!(ops(&pkts), [op::RW]);
    assert_eq!(pkts[0].1, b"hi\n");
    let c = rig.muxer.counters();
    assert_eq!((c.guest_connections, c.host_connections), (1, 0));

    // No one listens on port 5001: RST.
    rig.post_rx(1, 4096);
    rig.send(&guest_hdr(op::REQUEST, 49153, 5001), &[]);
    rig.turn();
    let pkts = rig.received();
    assert_eq!(ops(&pkts), [op::RST]);
    assert_eq!((pkts[0].0.src_port, pkts[0].0.dst_port), (5001, 49153));
    let c = rig.muxer.counters();
    assert_eq!((c.connect_failures, c.rsts_sent, c.malformed), (1, 1, 0));
}

#[test]
fn resets_from_either_side() {
    let env = Env::new();
    let mem = test_mem();
    let mut rig = env.rig(&mem, 16);
    let listener = env.host_listener(5000);

    // The guest resets: the host sees the end.
    let mut host = guest_to_host(&mut rig, &listener, 100, 5000);
    rig.send(&guest_hdr(op::RST, 100, 5000), &[]);
    rig.turn();
    assert_closed(&mut host);
    assert!(rig.received().is_empty());

    // The guest shuts both directions down: podvm answers RST and closes.
    let mut host = guest_to_host(&mut rig, &listener, 101, 5000);
    let mut shut = guest_hdr(op::SHUTDOWN, 101, 5000);
    shut.flags = SHUTDOWN_BOTH;
    rig.post_rx(1, 4096);
    rig.send(&shut, &[]);
    rig.turn();
    assert_eq!(ops(&rig.received()), [op::RST]);
    assert_closed(&mut host);

    // The host goes away mid-stream: the guest gets SHUTDOWN (both), and
    // its RST ends it.
    let mut host = guest_to_host(&mut rig, &listener, 102, 5000);
    host.write_all(b"last words").unwrap();
    drop(host);
    rig.post_rx(4, 4096);
    rig.turn();
    let pkts = rig.received();
    assert_eq!(ops(&pkts), [op::RW, op::SHUTDOWN]);
    assert_eq!(pkts[0].1, b"last words");
    assert_eq!(pkts[1].0.flags, SHUTDOWN_BOTH);
    rig.send(&guest_hdr(op::RST, 102, 5000), &[]);
    rig.turn();
    assert!(rig.received().is_empty());

    // Again, but the guest does not answer: podvm resets it in the end.
    let host = guest_to_host(&mut rig, &listener, 103, 5000);
    drop(host);
    rig.post_rx(4, 4096);
    rig.turn();
    assert_eq!(ops(&rig.received()), [op::SHUTDOWN]);
    env.clock.advance(LINGER_TIMEOUT);
    rig.muxer.expire();
    rig.turn();
    assert_eq!(ops(&rig.received()), [op::RST]);

    // A host that only shuts its writing side: SHUTDOWN (send), and the
    // guest can still answer.
    let mut host = guest_to_host(&mut rig, &listener, 104, 5000);
    host.shutdown(Shutdown::Write).unwrap();
    rig.post_rx(4, 4096);
    rig.turn();
    let pkts = rig.received();
    assert_eq!(ops(&pkts), [op::SHUTDOWN]);
    assert_eq!(pkts[0].0.flags, SHUTDOWN_SEND);
    rig.send(&rw(104, 5000), b"answer\n");
    assert_eq!(read_line(&mut host), "answer\n");

    assert_eq!(rig.muxer.counters().active_connections, 1);
    assert_eq!(rig.watched(), 1);
}

#[test]
fn host_bytes_wait_for_credit_and_resume_with_it() {
    let env = Env::new();
    let mem = test_mem();
    let mut rig = env.rig(&mem, 16);
    let (mut host, hport) = host_to_guest(&env, &mut rig, 1024, 1000);
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    host.write_all(&data).unwrap();
    rig.post_rx(16, 4096);
    let mut got = Vec::new();
    let mut consumed = 0u32;
    while got.len() < data.len() {
        rig.turn();
        let pkts = rig.received();
        // Never more than the credit: 1000 bytes a round.
        let round: usize = pkts.iter().map(|(_, p)| p.len()).sum();
        assert_eq!(round, 1000.min(data.len() - got.len()));
        for (h, p) in pkts {
            assert_eq!(h.op, op::RW);
            got.extend(p);
        }
        // Nothing more until the guest says it consumed them.
        rig.turn();
        assert!(rig.received().is_empty());
        consumed += round as u32;
        let mut update = guest_hdr(op::CREDIT_UPDATE, 1024, hport);
        update.buf_alloc = 1000;
        update.fwd_cnt = consumed;
        rig.post_rx(1, 4096);
        rig.send(&update, &[]);
    }
    assert_eq!(got, data);
}

#[test]
fn guest_bytes_beyond_the_credit_reset_the_connection() {
    let env = Env::new();
    let mem = test_mem();
    let mut rig = env.rig(&mem, 16);
    let listener = env.host_listener(5000);
    let _host = guest_to_host(&mut rig, &listener, 7, 5000);
    // The host does not read: everything beyond its socket buffer waits
    // here, up to the credit podvm gave.
    let chunk = vec![0x55u8; 60 * 1024];
    let mut sent = 0usize;
    rig.post_rx(4, 4096);
    loop {
        rig.send(&rw(7, 5000), &chunk);
        sent += chunk.len();
        rig.post_rx(1, 4096);
        rig.turn();
        // Credit updates for what the socket took, then the RST.
        let pkts = rig.received();
        if pkts.iter().any(|(h, _)| h.op == op::RST) {
            assert_eq!(pkts.last().unwrap().0.op, op::RST);
            break;
        }
        assert!(pkts.iter().all(|(h, _)| h.op == op::CREDIT_UPDATE));
        assert!(sent < 100 << 20, "never reset");
    }
    let c = rig.muxer.counters();
    assert_eq!(c.malformed, 1);
    assert!(c.bytes_from_guest as usize >= CONN_BUF_SIZE as usize);
}

/// A guest that honours the credit podvm gives and counts what reached
/// the host: it sends `total` bytes, as fast as the credit allows, while
/// the host reads only after the guest had to stop.
#[test]
fn guest_credit_runs_out_while_the_host_does_not_read_and_comes_back() {
    let env = Env::new();
    let mem = test_mem();
    let mut rig = env.rig(&mem, 16);
    let listener = env.host_listener(5000);
    let mut host = guest_to_host(&mut rig, &listener, 7, 5000);
    let total = 2 * 1024 * 1024usize;
    let data: Vec<u8> = (0..total).map(|i| (i * 7 % 256) as u8).collect();
    let (mut buf_alloc, mut fwd_cnt) = (CONN_BUF_SIZE, 0u32);
    let mut sent = 0usize;
    let mut received = Vec::new();
    let mut stalls = 0;
    while received.len() < total {
        // Send while there is credit.
        loop {
            let credit = buf_alloc as usize - (sent - fwd_cnt as usize);
            let n = credit.min(16 * 1024).min(total - sent);
            if n == 0 {
                break;
            }
            rig.send(&rw(7, 5000), &data[sent..sent + n]);
            sent += n;
        }
        if sent < total {
            stalls += 1;
        }
        // The host catches up; podvm tells the guest of new credit.
        host.set_nonblocking(true).unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match host.read(&mut buf) {
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        rig.post_rx(2, 4096);
        rig.turn();
        for (h, _) in rig.received() {
            assert_eq!(h.op, op::CREDIT_UPDATE);
            assert!(
                h.fwd_cnt.wrapping_sub(fwd_cnt) < 1 << 31,
                "fwd_cnt goes forward"
            );
            buf_alloc = h.buf_alloc;
            fwd_cnt = h.fwd_cnt;
        }
    }
    assert!(stalls > 1, "the credit ran out along the way");
    assert_eq!(received, data);
    assert_eq!(rig.muxer.counters().malformed, 0);
}

#[test]
fn a_guest_without_receive_buffers_stops_the_host_socket_being_read() {
    let env = Env::new();
    let mem = test_mem();
    let mut rig = env.rig(&mem, 16);
    let (host, hport) = host_to_guest(&env, &mut rig, 1024, 4 * 1024 * 1024);
    // The host writes until its socket is full: podvm takes nothing.
    host.set_nonblocking(true).unwrap();
    let mut written = 0usize;
    let pattern = |i: usize| (i % 253) as u8;
    loop {
        let chunk: Vec<u8> = (written..written + 4096).map(pattern).collect();
        match (&host).write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                rig.turn();
                // Still full after the loop had its chance.
                match (&host).write(&chunk[..1]) {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Ok(n) => written += n,
                    Err(e) => panic!("{e}"),
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(rig.received().is_empty());
    assert!(written > 4096);

    // Buffers come: every byte arrives, in order, and the host can write
    // again.
    let mut got = Vec::new();
    while got.len() < written {
        rig.post_rx(32, 16 * 1024);
        rig.turn();
        for (h, p) in rig.received() {
            assert_eq!((h.op, h.src_port), (op::RW, hport));
            got.extend(p);
        }
    }
    assert_eq!(got.len(), written);
    assert!(got.iter().enumerate().all(|(i, &b)| b == pattern(i)));
    assert_eq!((&host).write(b"x").unwrap(), 1);
}

#[test]
fn malformed_packets_are_answered_with_rst_and_counted() {
    let env = Env::new();
    let mem = test_mem();
    let mut rig = env.rig(&mem, 16);
    rig.post_rx(32, 4096);
    let listener = env.host_listener(5000);
    let mut host = guest_to_host(&mut rig, &listener, 9, 5000);

    let mut cases = Vec::new();
    let mut h = guest_hdr(op::RW, 1, 2);
    h.src_cid = 4;
    cases.push(h);
    let mut h = guest_hdr(op::REQUEST, 1, 2);
    h.dst_cid = 7;
    cases.push(h);
    let mut h = guest_hdr(op::REQUEST, 1, 2);
    h.type_ = 2;
    cases.push(h);
    cases.push(guest_hdr(0, 1, 2));
    cases.push(guest_hdr(8, 1, 2));
    cases.push(guest_hdr(op::RW, 1, 2));
    cases.push(guest_hdr(op::CREDIT_UPDATE, 1, 2));
    for h in &cases {
        rig.send(h, &[]);
    }
    // A control packet with a payload.
    rig.send(&guest_hdr(op::CREDIT_REQUEST, 1, 2), b"xx");
    rig.turn();
    let pkts = rig.received();
    assert_eq!(pkts.len(), cases.len() + 1);
    for ((r, _), sent) in pkts.iter().zip(&cases) {
        assert_eq!(r.op, op::RST);
        assert_eq!((r.src_port, r.dst_port), (sent.dst_port, sent.src_port));
        assert_eq!((r.src_cid, r.dst_cid), (sent.dst_cid, GUEST_CID));
    }
    // An RST for nothing is not answered (and is not malformed).
    rig.send(&guest_hdr(op::RST, 1, 2), &[]);
    rig.turn();
    assert!(rig.received().is_empty());
    let c = rig.muxer.counters();
    // The RW and CREDIT_UPDATE on no connection count too.
    assert_eq!(c.malformed, cases.len() as u64 + 1);
    assert_eq!(c.rsts_sent, cases.len() as u64 + 1);

    // A bad packet naming a live connection ends it on both sides.
    rig.send(&guest_hdr(9, 9, 5000), &[]);
    rig.turn();
    assert_eq!(ops(&rig.received()), [op::RST]);
    assert_closed(&mut host);
    assert_eq!(rig.muxer.counters().active_connections, 0);
}

#[test]
fn the_connection_limit_refuses_both_ways() {
    let env = Env::new();
    let mem = test_mem();
    let mut rig = env.rig(&mem, 2);
    let listener = env.host_listener(5000);
    let _a = guest_to_host(&mut rig, &listener, 1, 5000);
    // A host connection still sending its line counts too.
    let pending = client(&env.path());
    rig.turn();
    // Third, from the host: accepted and closed at once.
    let mut third = client(&env.path());
    third.write_all(b"CONNECT 1\n").unwrap();
    rig.turn();
    assert_closed(&mut third);
    // Third, from the guest: RST.
    rig.post_rx(1, 4096);
    rig.send(&guest_hdr(op::REQUEST, 2, 5000), &[]);
    rig.turn();
    assert_eq!(ops(&rig.received()), [op::RST]);
    let c = rig.muxer.counters();
    assert_eq!(c.refused_by_limit, 2);
    assert_eq!(c.active_connections, 2);
    // Room again once one goes.
    drop(pending);
    rig.turn();
    let _b = guest_to_host(&mut rig, &listener, 3, 5000);
    assert_eq!(rig.muxer.counters().active_connections, 2);
}

#[test]
fn many_connections_at_once_keep_their_bytes_apart() {
    let env = Env::new();
    let mem = test_mem();
    let mut rig = env.rig(&mem, 64);
    let listener = env.host_listener(5000);
    let mut guest_side = Vec::new();
    let mut host_side = Vec::new();
    for i in 0..8u32 {
        guest_side.push((2000 + i, guest_to_host(&mut rig, &listener, 2000 + i, 5000)));
        host_side.push(host_to_guest(&env, &mut rig, 3000 + i, 65536));
    }
    let ports: Vec<u32> = host_side.iter().map(|(_, p)| *p).collect();
    let mut unique = ports.clone();
    unique.dedup();
    assert_eq!(unique.len(), 8, "each host connection has its own port");
    // Every host stream writes its own text; the guest sees each on its
    // own ports.
    for (i, (s, _)) in host_side.iter_mut().enumerate() {
        s.write_all(format!("to guest {i}").as_bytes()).unwrap();
    }
    for (port, s) in guest_side.iter_mut() {
        s.write_all(format!("via {port}").as_bytes()).unwrap();
    }
    rig.post_rx(32, 4096);
    rig.turn();
    let pkts = rig.received();
    assert_eq!(pkts.len(), 16);
    for (h, p) in &pkts {
        let text = String::from_utf8(p.clone()).unwrap();
        if let Some(i) = ports.iter().position(|&p| p == h.src_port) {
            assert_eq!(text, format!("to guest {i}"));
            assert_eq!(h.dst_port, 3000 + i as u32);
        } else {
            assert_eq!(h.src_port, 5000);
            assert_eq!(text, format!("via {}", h.dst_port));
        }
    }
    // And back.
    for (i, (_, p)) in host_side.iter().enumerate() {
        rig.post_tx(&rw(3000 + i as u32, *p), format!("back {i}\n").as_bytes());
    }
    rig.run_tx();
    for (i, (s, _)) in host_side.iter_mut().enumerate() {
        assert_eq!(read_line(s), format!("back {i}\n"));
    }
    assert_eq!(rig.muxer.counters().active_connections, 16);
}

#[test]
fn dropping_everything_ends_every_host_stream() {
    let env = Env::new();
    let mem = test_mem();
    let mut rig = env.rig(&mem, 16);
    let listener = env.host_listener(5000);
    let mut a = guest_to_host(&mut rig, &listener, 1, 5000);
    let (mut b, _) = host_to_guest(&env, &mut rig, 1024, 4096);
    let mut c = client(&env.path());
    rig.turn();
    rig.muxer.drop_all();
    // The peers see the end before the event loop closes anything.
    assert_closed(&mut a);
    assert_closed(&mut b);
    assert_closed(&mut c);
    rig.turn();
    assert_eq!(rig.watched(), 0);
    assert_eq!(rig.muxer.counters().active_connections, 0);
    assert!(!rig.muxer.has_rx());
    assert_eq!(rig.muxer.next_deadline(), None);
}

#[test]
fn the_socket_file_goes_with_the_muxer_and_must_not_exist_before() {
    let env = Env::new();
    let m = Muxer::new(GUEST_CID, env.path(), options(4, &env.clock)).unwrap();
    assert!(env.path().exists());
    assert!(matches!(
        Muxer::new(GUEST_CID, env.path(), options(4, &env.clock)),
        Err(MuxerError::Bind { .. })
    ));
    drop(m);
    assert!(!env.path().exists());
    // A file someone else put there since is left alone.
    let m = Muxer::new(GUEST_CID, env.path(), options(4, &env.clock)).unwrap();
    std::fs::remove_file(env.path()).unwrap();
    std::fs::write(env.path(), b"not ours").unwrap();
    drop(m);
    assert_eq!(std::fs::read(env.path()).unwrap(), b"not ours");
}

#[test]
fn local_ports_skip_ones_in_use() {
    let env = Env::new();
    let mem = test_mem();
    let mut rig = env.rig(&mem, 16);
    rig.muxer.next_local_port = u32::MAX;
    let (_a, p1) = host_to_guest(&env, &mut rig, 80, 4096);
    assert_eq!(p1, u32::MAX);
    let (_b, p2) = host_to_guest(&env, &mut rig, 80, 4096);
    assert_eq!(p2, FIRST_LOCAL_PORT, "wraps to the first");
    rig.muxer.next_local_port = u32::MAX;
    let (_c, p3) = host_to_guest(&env, &mut rig, 80, 4096);
    assert_eq!(p3, FIRST_LOCAL_PORT + 1, "both taken for guest port 80");
    let (_d, p4) = host_to_guest(&env, &mut rig, 81, 4096);
    assert_eq!(p4, FIRST_LOCAL_PORT + 2);
}
