//! A process's standard streams: containerd's FIFOs on one side, the
//! agent's stdio connections on the other, one copying thread per stream.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use agent_protocol::agent::Stdio;
use agent_protocol::stdio::{StdioHeader, Stream};
use agent_protocol::transport::Transport;
use agent_protocol::STDIO_PORT;

/// The FIFO paths containerd named for a process; empty: no such stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StdioPaths {
    /// Host → process.
    pub stdin: String,
    /// Process → host.
    pub stdout: String,
    /// Process → host.
    pub stderr: String,
    /// A terminal was asked for.
    pub terminal: bool,
}

impl StdioPaths {
    /// The streams the agent is told to expect.
    pub fn agent_stdio(&self) -> Stdio {
        Stdio {
            stdin: !self.stdin.is_empty(),
            stdout: !self.stdout.is_empty(),
            stderr: !self.stderr.is_empty(),
            terminal: self.terminal,
            ..Default::default()
        }
    }
}

/// Counts the output copies still running.
#[derive(Default)]
struct Outputs {
    running: Mutex<usize>,
    done: Condvar,
}

/// The copying threads of one process.
pub struct ProcessIo {
    stdin: Mutex<Option<UnixStream>>,
    outputs: Arc<Outputs>,
}

/// Opens one stream's connection to the agent and sends its header.
fn open_stream(
    transport: &Transport,
    cid: &str,
    eid: &str,
    stream: Stream,
) -> io::Result<UnixStream> {
    let mut conn = transport.connect(STDIO_PORT)?;
    conn.write_all(StdioHeader::new(cid, eid, stream).to_string().as_bytes())?;
    Ok(conn)
}

impl ProcessIo {
    /// Connects every stream `paths` names to the agent for process `eid`
    /// (empty: init) of container `cid`, and starts copying. A FIFO is
    /// opened by its copying thread, since opening one blocks until its
    /// other end is opened too.
    pub fn connect(
        transport: &Transport,
        cid: &str,
        eid: &str,
        paths: &StdioPaths,
    ) -> io::Result<ProcessIo> {
        let outputs = Arc::new(Outputs::default());
        let mut stdin = None;
        if !paths.stdin.is_empty() {
            let conn = open_stream(transport, cid, eid, Stream::Stdin)?;
            stdin = Some(conn.try_clone()?);
            let fifo = PathBuf::from(&paths.stdin);
            thread::Builder::new()
                .name(format!("stdin-{cid}"))
                .spawn(move || {
                    let copied = File::open(&fifo).and_then(|mut f| io::copy(&mut f, &mut &conn));
                    if let Err(e) = copied {
                        log::debug!("stdin {}: {e}", fifo.display());
                    }
                    let _ = conn.shutdown(Shutdown::Write);
                })?;
        }
        for (path, stream) in [
            (&paths.stdout, Stream::Stdout),
            (&paths.stderr, Stream::Stderr),
        ] {
            if path.is_empty() {
                continue;
            }
            let conn = open_stream(transport, cid, eid, stream)?;
            // The agent only writes on an output connection.
            conn.shutdown(Shutdown::Write)?;
            let fifo = PathBuf::from(path);
            let outputs = Arc::clone(&outputs);
            *outputs.running.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            thread::Builder::new()
                .name(format!("{}-{cid}", stream.name()))
                .spawn(move || {
                    let copied = OpenOptions::new()
                        .write(true)
                        .open(&fifo)
                        .and_then(|mut f| io::copy(&mut &conn, &mut f));
                    if let Err(e) = copied {
                        log::debug!("{} {}: {e}", stream.name(), fifo.display());
                    }
                    drop(conn);
                    *outputs.running.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
                    outputs.done.notify_all();
                })?;
        }
        Ok(ProcessIo {
            stdin: Mutex::new(stdin),
            outputs,
        })
    }

    /// Ends the process's stdin (containerd's CloseIO): it reads end of file.
    pub fn close_stdin(&self) {
        if let Some(conn) = self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = conn.shutdown(Shutdown::Write);
        }
    }

    /// Waits up to `within` for every output stream to reach its end, so
    /// that what the process wrote is in the FIFOs before its exit is
    /// announced; false if one is still open (a process it left behind
    /// may hold it).
    pub fn wait_outputs(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut running = self
            .outputs
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while *running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            running = self
                .outputs
                .done
                .wait_timeout(running, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read};

    fn mkfifo(path: &std::path::Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    /// Streams flow both ways between FIFOs and the agent's connections,
    /// each connection opened with its header.
    #[test]
    fn streams_are_copied_and_headed() {
        let dir = tempfile::tempdir().unwrap();
        let t = Transport::UnixDir(dir.path().into());
        let l = match t.listen(STDIO_PORT).unwrap() {
            agent_protocol::transport::Listener::Unix(l) => l,
            _ => unreachable!(),
        };
        let paths = StdioPaths {
            stdin: dir.path().join("in").to_string_lossy().into(),
            stdout: dir.path().join("out").to_string_lossy().into(),
            stderr: String::new(),
            terminal: false,
        };
        mkfifo(dir.path().join("in").as_path());
        mkfifo(dir.path().join("out").as_path());
        let io = ProcessIo::connect(&t, "c1", "", &paths).unwrap();
        let mut conns = Vec::new();
        for _ in 0..2 {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s);
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            conns.push((line, r.into_inner()));
        }
        conns.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(conns[0].0, "STDIO c1 - stdin\n");
        assert_eq!(conns[1].0, "STDIO c1 - stdout\n");
        // The output: agent → FIFO.
        let reader = thread::spawn({
            let out = paths.stdout.clone();
            move || {
                let mut s = String::new();
                File::open(out).unwrap().read_to_string(&mut s).unwrap();
                s
            }
        });
        (&conns[1].1).write_all(b"hello").unwrap();
        conns[1].1.shutdown(Shutdown::Both).unwrap();
        drop(conns.pop());
        assert_eq!(reader.join().unwrap(), "hello");
        assert!(io.wait_outputs(Duration::from_secs(10)));
        // The input: FIFO → agent, ended by CloseIO.
        let mut w = OpenOptions::new().write(true).open(&paths.stdin).unwrap();
        w.write_all(b"typed").unwrap();
        let mut got = [0u8; 5];
        (&conns[0].1).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"typed");
        io.close_stdin();
        let mut rest = Vec::new();
        (&conns[0].1).read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "CloseIO ends stdin");
    }
}
