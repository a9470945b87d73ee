use super::*;
use std::io::Write;

const CID: u64 = 3;
const KEY: ConnKey = ConnKey {
    local_port: 5000,
    peer_port: 1234,
};

fn guest(op: u16) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port: KEY.peer_port,
        dst_port: KEY.local_port,
        type_: TYPE_STREAM,
        op,
        buf_alloc: 64 * 1024,
        ..Default::default()
    }
}

/// A guest-initiated connection and the host's end of its stream.
fn established() -> (Connection, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    theirs.set_nonblocking(true).unwrap();
    let mut c =
        Connection::guest_initiated(ours, 16, KEY, CID, &guest(op::REQUEST), LINGER_TIMEOUT);
    match c.next_rx(&mut [0u8; 64], Instant::now()) {
        RxOutcome::Packet(h, 0) => assert_eq!(h.op, op::RESPONSE),
        other => panic!("{other:?}"),
    }
    (c, theirs)
}

fn rw(len: usize) -> Header {
    Header {
        len: len as u32,
        ..guest(op::RW)
    }
}

fn drain(s: &UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match (&*s).read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn headers_carry_ports_cids_and_our_credit() {
    let (mut c, _host) = established();
    c.credit_update_pending = true;
    let RxOutcome::Packet(h, 0) = c.next_rx(&mut [], Instant::now()) else {
        panic!("a credit update was due");
    };
    assert_eq!(
        h,
        Header {
            src_cid: HOST_CID,
            dst_cid: CID,
            src_port: 5000,
            dst_port: 1234,
            len: 0,
            type_: TYPE_STREAM,
            op: op::CREDIT_UPDATE,
            flags: 0,
            buf_alloc: CONN_BUF_SIZE,
            fwd_cnt: 0,
        }
    );
    assert!(!c.has_pending_rx());
}

#[test]
fn guest_bytes_reach_the_host_and_wait_when_it_is_slow() {
    let (mut c, host) = established();
    assert!(matches!(
        c.on_guest_packet(&rw(5), b"hello", Instant::now()),
        Verdict::Keep
    ));
    assert_eq!(drain(&host), b"hello");
    assert_eq!(c.fwd_cnt, 5);

    // The host stops reading: the socket fills, the rest waits here,
    // and fwd_cnt counts only what the host took.
    let chunk = vec![7u8; 32 * 1024];
    let mut sent = 5usize;
    while c.to_host.is_empty() {
        let v = c.on_guest_packet(&rw(chunk.len()), &chunk, Instant::now());
        assert!(matches!(v, Verdict::Keep));
        sent += chunk.len();
    }
    let waiting = c.to_host.len();
    assert_eq!(c.fwd_cnt as usize, sent - waiting);
    // The guest may fill the credit it was given, and no more.
    let room = CONN_BUF_SIZE as usize - c.buffered_from_guest() as usize;
    let fill = vec![8u8; room];
    assert!(matches!(
        c.on_guest_packet(&rw(room), &fill, Instant::now()),
        Verdict::Keep
    ));
    sent += room;
    assert!(matches!(
        c.on_guest_packet(&rw(1), b"x", Instant::now()),
        Verdict::Reset(ResetReason::Protocol(_))
    ));

    // The host reads again: the bytes follow, in order, and the guest
    // is told of its new credit.
    let mut got = b"hello".to_vec();
    got.extend(drain(&host));
    while got.len() < sent {
        assert!(matches!(c.on_host_event(false, true, false), Verdict::Keep));
        got.extend(drain(&host));
    }
    assert_eq!(got.len(), sent);
    assert_eq!(&got[..5], b"hello");
    assert!(got[5..sent - room].iter().all(|&b| b == 7));
    assert!(got[sent - room..].iter().all(|&b| b == 8));
    assert!(c.to_host.is_empty());
    assert!(c.has_pending_rx(), "a credit update is due");
    let RxOutcome::Packet(h, _) = c.next_rx(&mut [], Instant::now()) else {
        panic!();
    };
    assert_eq!((h.op, h.fwd_cnt as usize), (op::CREDIT_UPDATE, sent));
}

#[test]
fn host_bytes_go_out_within_the_guests_credit() {
    let (mut c, mut host) = established();
    c.peer_buf_alloc = 10;
    host.write_all(b"0123456789abcdef").unwrap();
    assert!(matches!(c.on_host_event(true, false, false), Verdict::Keep));
    assert!(c.has_pending_rx());
    let mut buf = [0u8; 64];
    let RxOutcome::Packet(h, n) = c.next_rx(&mut buf, Instant::now()) else {
        panic!();
    };
    assert_eq!((h.op, h.len, n), (op::RW, 10, 10));
    assert_eq!(&buf[..10], b"0123456789");
    // No credit left: nothing is read, although bytes wait.
    assert_eq!(c.peer_credit(), 0);
    assert!(!c.has_pending_rx());
    assert!(matches!(
        c.next_rx(&mut buf, Instant::now()),
        RxOutcome::Nothing
    ));
    // The guest consumed 4 bytes.
    let mut update = guest(op::CREDIT_UPDATE);
    update.buf_alloc = 10;
    update.fwd_cnt = 4;
    assert!(matches!(
        c.on_guest_packet(&update, &[], Instant::now()),
        Verdict::Keep
    ));
    assert!(c.has_pending_rx());
    let RxOutcome::Packet(h, n) = c.next_rx(&mut buf, Instant::now()) else {
        panic!();
    };
    assert_eq!((h.len, n), (4, 4));
    assert_eq!(&buf[..4], b"abcd");
    // A small receive buffer takes what fits.
    update.fwd_cnt = 14;
    c.on_guest_packet(&update, &[], Instant::now());
    let RxOutcome::Packet(h, n) = c.next_rx(&mut buf[..1], Instant::now()) else {
        panic!();
    };
    assert_eq!((h.len, n, buf[0]), (1, 1, b'e'));
    // A bogus fwd_cnt ahead of what was sent gives no credit.
    update.fwd_cnt = 1000;
    c.on_guest_packet(&update, &[], Instant::now());
    assert_eq!(c.peer_credit(), 0);
}

#[test]
fn host_eof_then_hangup_become_shutdowns() {
    let (mut c, host) = established();
    host.shutdown(Shutdown::Write).unwrap();
    c.on_host_event(true, false, false);
    let now = Instant::now();
    let RxOutcome::Packet(h, _) = c.next_rx(&mut [0u8; 16], now) else {
        panic!();
    };
    assert_eq!((h.op, h.flags), (op::SHUTDOWN, SHUTDOWN_SEND));
    assert_eq!(c.deadline, None, "the guest may still send");
    // The guest still sends; the host still reads.
    c.on_guest_packet(&rw(2), b"hi", now);
    assert_eq!(drain(&host), b"hi");
    // The host closes entirely.
    drop(host);
    c.on_host_event(true, false, true);
    let RxOutcome::Packet(h, _) = c.next_rx(&mut [0u8; 16], now) else {
        panic!();
    };
    assert_eq!((h.op, h.flags), (op::SHUTDOWN, SHUTDOWN_BOTH));
    assert_eq!(c.deadline, Some(now + LINGER_TIMEOUT));
    assert!(!c.has_pending_rx());
    // Writing to it now fails: the connection is reset.
    assert!(matches!(
        c.on_guest_packet(&rw(1), b"x", now),
        Verdict::Reset(ResetReason::Host(_))
    ));
}

#[test]
fn guest_shutdowns() {
    // SEND: the host's write side closes once the bytes are through.
    let (mut c, host) = established();
    let mut shut = guest(op::SHUTDOWN);
    c.on_guest_packet(&rw(3), b"abc", Instant::now());
    shut.flags = SHUTDOWN_SEND;
    assert!(matches!(
        c.on_guest_packet(&shut, &[], Instant::now()),
        Verdict::Keep
    ));
    assert_eq!(drain(&host), b"abc", "then EOF");
    assert!(matches!(
        c.on_guest_packet(&rw(1), b"x", Instant::now()),
        Verdict::Reset(ResetReason::Protocol(_))
    ));

    // Both, with nothing waiting: done, RST.
    let (mut c, _host) = established();
    shut.flags = SHUTDOWN_BOTH;
    assert!(matches!(
        c.on_guest_packet(&shut, &[], Instant::now()),
        Verdict::Reset(ResetReason::Done)
    ));

    // Both, one at a time, with bytes waiting for a slow host: the RST
    // waits for them (or the linger deadline).
    let (mut c, host) = established();
    let chunk = vec![1u8; 16 * 1024];
    let mut sent = 0;
    while c.to_host.is_empty() {
        c.on_guest_packet(&rw(chunk.len()), &chunk, Instant::now());
        sent += chunk.len();
    }
    shut.flags = SHUTDOWN_RCV;
    let now = Instant::now();
    assert!(matches!(c.on_guest_packet(&shut, &[], now), Verdict::Keep));
    shut.flags = SHUTDOWN_SEND;
    assert!(matches!(c.on_guest_packet(&shut, &[], now), Verdict::Keep));
    assert_eq!(c.deadline, Some(now + LINGER_TIMEOUT));
    assert_eq!(
        c.deadline_reason(),
        "the host did not take the guest's last bytes"
    );
    let mut got = drain(&host);
    let verdict = loop {
        match c.on_host_event(false, true, false) {
            Verdict::Keep => got.extend(drain(&host)),
            other => break other,
        }
    };
    got.extend(drain(&host));
    assert!(matches!(verdict, Verdict::Reset(ResetReason::Done)));
    assert_eq!(got.len(), sent);
    // The guest's RCV shutdown reached the host as a closed read side.
    assert_eq!(
        unix::send(&host, b"late").unwrap_err().raw_os_error(),
        Some(libc::EPIPE)
    );
}

#[test]
fn the_guest_answering_a_host_request() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    theirs.set_nonblocking(true).unwrap();
    let key = ConnKey {
        local_port: 1 << 30,
        peer_port: 1024,
    };
    let mut c = Connection::host_initiated(ours, 16, key, CID, LINGER_TIMEOUT);
    assert_eq!(c.origin(), Origin::Host);
    let RxOutcome::Packet(h, _) = c.next_rx(&mut [0u8; 16], Instant::now()) else {
        panic!();
    };
    assert_eq!(
        (h.op, h.src_port, h.dst_port, h.buf_alloc),
        (op::REQUEST, 1 << 30, 1024, CONN_BUF_SIZE)
    );
    // Data before the RESPONSE breaks the protocol.
    let mut early = c_header(key, op::RW);
    early.len = 1;
    let mut c2 =
        Connection::host_initiated(UnixStream::pair().unwrap().0, 17, key, CID, LINGER_TIMEOUT);
    assert!(matches!(
        c2.on_guest_packet(&early, b"x", Instant::now()),
        Verdict::Reset(ResetReason::Protocol(_))
    ));
    // No data goes to the guest before it accepted.
    assert!(!c.has_pending_rx());
    let resp = c_header(key, op::RESPONSE);
    assert!(matches!(
        c.on_guest_packet(&resp, &[], Instant::now()),
        Verdict::Established
    ));
    assert_eq!(drain(&theirs), format!("OK {}\n", 1 << 30).as_bytes());
    assert_eq!(c.fwd_cnt, 0, "our own line is not the guest's data");
    // A second RESPONSE is a violation.
    assert!(matches!(
        c.on_guest_packet(&resp, &[], Instant::now()),
        Verdict::Reset(ResetReason::Protocol(_))
    ));
}

fn c_header(key: ConnKey, op: u16) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port: key.peer_port,
        dst_port: key.local_port,
        type_: TYPE_STREAM,
        op,
        buf_alloc: 4096,
        ..Default::default()
    }
}

#[test]
fn an_empty_rw_changes_nothing() {
    let (mut c, host) = established();
    assert!(matches!(
        c.on_guest_packet(&rw(0), &[], Instant::now()),
        Verdict::Keep
    ));
    assert_eq!((c.rx_cnt, c.fwd_cnt), (0, 0));
    assert!(!c.has_pending_rx());
    c.on_guest_packet(&rw(2), b"ok", Instant::now());
    assert_eq!(drain(&host), b"ok");
}

#[test]
fn credit_requests_and_resets() {
    let (mut c, _host) = established();
    assert!(!c.has_pending_rx());
    c.on_guest_packet(&guest(op::CREDIT_REQUEST), &[], Instant::now());
    assert!(c.has_pending_rx());
    assert!(matches!(
        c.on_guest_packet(&guest(op::RST), &[], Instant::now()),
        Verdict::Close
    ));
    assert!(matches!(
        c.on_guest_packet(&guest(op::REQUEST), &[], Instant::now()),
        Verdict::Reset(ResetReason::Protocol(_))
    ));
}
