//! The whole HTTP request path: the bytes a client writes on the API
//! socket, read by the real API server (`api::start_server`: hyper,
//! the body limit, `route`) in this process, with a VMM that answers
//! every action at once. A panic on the API thread aborts the process
//! (libfuzzer-sys installs an aborting panic hook), so it is found as a
//! crash too.
//!
//! Input: the bytes of one connection; the client then closes its
//! writing side and reads whatever comes back.

#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use api::{ActionResult, ActionSender, Reply, VmmAction, VmmData};
use libfuzzer_sys::fuzz_target;

/// A VMM that answers every action with success, at once.
struct Answer;

impl ActionSender for Answer {
    fn send(&self, _action: VmmAction) -> ActionResult {
        Ok(VmmData::Empty)
    }

    fn submit(&self, _action: VmmAction, reply: Reply) -> Result<(), (VmmAction, Reply)> {
        reply.send(Ok(VmmData::Empty));
        Ok(())
    }
}

/// The socket of the one server this process runs.
fn server() -> &'static PathBuf {
    static SOCK: OnceLock<PathBuf> = OnceLock::new();
    SOCK.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("podvm-fuzz-http-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind the fuzzing API socket");
        let server = api::start_server(listener, Arc::new(Answer)).expect("start the API server");
        // It serves until the process ends.
        std::mem::forget(server);
        path
    })
}

fuzz_target!(|data: &[u8]| {
    let mut s = UnixStream::connect(server()).expect("connect to the API server");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    // The server may answer and close before it read everything.
    let _ = s.write_all(data);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    if !reply.is_empty() {
        // HTTP/1.0 requests get HTTP/1.0 answers.
        assert!(
            reply.starts_with(b"HTTP/1.1 ") || reply.starts_with(b"HTTP/1.0 "),
            "not an HTTP answer: {:?}",
            String::from_utf8_lossy(&reply[..reply.len().min(64)])
        );
    }
});
