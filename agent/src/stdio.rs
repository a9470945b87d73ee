//! The stdio port: connections that become processes' standard streams.
//!
//! The shim opens one connection per stream and names it with a
//! [`StdioHeader`] line *before* it calls CreateContainer/ExecProcess; the
//! accept thread reads that line and parks the socket here until the RPC
//! [`takes`](StdioRegistry::take) it and hands it to runc as fd 0, 1 or 2.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use agent_protocol::stdio::{StdioHeader, Stream};
use agent_protocol::transport::Listener;

/// How long a new connection may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// (container id, exec id — empty for init, stream).
type Key = (String, String, Stream);

/// Stdio connections that have arrived and not yet been taken.
#[derive(Debug, Default)]
pub struct StdioRegistry {
    waiting: Mutex<HashMap<Key, UnixStream>>,
    arrived: Condvar,
}

impl StdioRegistry {
    /// A registry fed by an accept thread on `listener`.
    pub fn serve(listener: Listener) -> std::io::Result<Arc<StdioRegistry>> {
        let registry = Arc::new(StdioRegistry::default());
        let r = registry.clone();
        std::thread::Builder::new()
            .name("stdio-accept".into())
            .spawn(move || r.accept_loop(listener))?;
        Ok(registry)
    }

    fn accept_loop(self: Arc<Self>, listener: Listener) {
        loop {
            match listener.accept() {
                Ok(conn) => {
                    // The header is read on its own thread, so that one
                    // slow client cannot hold up the others.
                    let r = self.clone();
                    let spawned = std::thread::Builder::new()
                        .name("stdio-header".into())
                        .spawn(move || r.admit(conn));
                    if let Err(e) = spawned {
                        log::error!("podvm-agent: stdio: cannot start a header thread: {e}");
                    }
                }
                Err(e) => {
                    log::error!("podvm-agent: stdio: accept: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Reads `conn`'s header and parks it; logs and drops it on a bad one.
    fn admit(&self, mut conn: UnixStream) {
        let header = conn
            .set_read_timeout(Some(HEADER_TIMEOUT))
            .map_err(|e| e.to_string())
            .and_then(|()| StdioHeader::read_from(&mut conn).map_err(|e| e.to_string()))
            .and_then(|h| {
                conn.set_read_timeout(None)
                    .map(|()| h)
                    .map_err(|e| e.to_string())
            });
        match header {
            Ok(h) => self.insert(h, conn),
            Err(e) => log::warn!("podvm-agent: stdio: dropping a connection: {e}"),
        }
    }

    /// Parks `conn` as the stream `h` names, replacing an older one.
    pub fn insert(&self, h: StdioHeader, conn: UnixStream) {
        let mut waiting = self.waiting.lock().expect("stdio lock poisoned");
        let key = (h.container_id, h.exec_id, h.stream);
        if waiting.insert(key.clone(), conn).is_some() {
            log::warn!(
                "podvm-agent: stdio: container {} exec {:?}: a second {} connection replaces the first",
                key.0,
                key.1,
                key.2.name()
            );
        }
        self.arrived.notify_all();
    }

    /// Takes the connection for `stream` of process `exec_id` (empty: init)
    /// of `container_id`, waiting up to `within` for it to arrive.
    pub fn take(
        &self,
        container_id: &str,
        exec_id: &str,
        stream: Stream,
        within: Duration,
    ) -> Option<UnixStream> {
        let deadline = Instant::now() + within;
        let key = (container_id.to_string(), exec_id.to_string(), stream);
        let mut waiting = self.waiting.lock().expect("stdio lock poisoned");
        loop {
            if let Some(conn) = waiting.remove(&key) {
                return Some(conn);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            waiting = self
                .arrived
                .wait_timeout(waiting, left)
                .expect("stdio lock poisoned")
                .0;
        }
    }

    /// Drops every parked connection of `container_id` (it is being removed).
    pub fn discard(&self, container_id: &str) {
        self.waiting
            .lock()
            .expect("stdio lock poisoned")
            .retain(|(cid, _, _), _| cid != container_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn take_finds_what_arrives_and_times_out_on_what_does_not() {
        let r = Arc::new(StdioRegistry::default());
        let (a, mut b) = UnixStream::pair().unwrap();
        let r2 = r.clone();
        let late = std::thread::spawn(move || {
            r2.insert(StdioHeader::new("c1", "e1", Stream::Stdout), a);
        });
        let mut got = r
            .take("c1", "e1", Stream::Stdout, Duration::from_secs(10))
            .expect("the stream arrives");
        late.join().unwrap();
        b.write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        got.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"x");
        // Taken once only; other keys do not match.
        assert!(r
            .take("c1", "e1", Stream::Stdout, Duration::from_millis(10))
            .is_none());
        let (a, _b) = UnixStream::pair().unwrap();
        r.insert(StdioHeader::new("c1", "", Stream::Stdin), a);
        assert!(r
            .take("c1", "", Stream::Stderr, Duration::from_millis(10))
            .is_none());
        r.discard("c1");
        assert!(r.take("c1", "", Stream::Stdin, Duration::ZERO).is_none());
    }

    #[test]
    fn accepted_connections_are_keyed_by_their_header() {
        let dir = tempfile::tempdir().unwrap();
        let t = agent_protocol::transport::Transport::UnixDir(dir.path().into());
        let r = StdioRegistry::serve(t.listen(agent_protocol::STDIO_PORT).unwrap()).unwrap();
        // A bad header is dropped: the peer sees the connection close.
        let mut bad = t.connect(agent_protocol::STDIO_PORT).unwrap();
        bad.write_all(b"HELLO\n").unwrap();
        bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(bad.read(&mut [0u8; 1]).unwrap(), 0);
        let mut good = t.connect(agent_protocol::STDIO_PORT).unwrap();
        let h = StdioHeader::new("c2", "", Stream::Stdin);
        good.write_all(format!("{h}data").as_bytes()).unwrap();
        let mut got = r
            .take("c2", "", Stream::Stdin, Duration::from_secs(10))
            .expect("the stream arrives");
        let mut buf = [0u8; 4];
        got.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"data");
    }
}
