//! A minimal HTTP/1.1 client for the control API over a Unix socket: one
//! keep-alive connection, one request at a time, bodies framed by
//! `Content-Length` (what both podvm and Firecracker send).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long one request may take before the connection gives up.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One open connection to an API socket.
pub struct Conn {
    stream: BufReader<UnixStream>,
}

/// A reply: status code and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body (empty for 204).
    pub body: String,
}

impl Conn {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> io::Result<Conn> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.set_write_timeout(Some(TIMEOUT))?;
        Ok(Conn {
            stream: BufReader::new(s),
        })
    }

    /// Sends one request and reads its reply, keeping the connection open.
    pub fn request(&mut self, method: &str, path: &str, body: &str) -> io::Result<Reply> {
        let req = request_text(method, path, body);
        self.stream.get_mut().write_all(req.as_bytes())?;
        read_reply(&mut self.stream)
    }
}

/// The bytes of one request.
pub fn request_text(method: &str, path: &str, body: &str) -> String {
    if body.is_empty() {
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n")
    } else {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads one reply (status line, headers, `Content-Length` bytes of body).
pub fn read_reply<R: BufRead>(r: &mut R) -> io::Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("not an HTTP status line"))?;
    let mut len = 0usize;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("the headers end early"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().map_err(|_| bad("bad Content-Length"))?;
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Reply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_with_and_without_body() {
        assert_eq!(
            request_text("GET", "/", ""),
            "GET / HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n"
        );
        let t = request_text("PATCH", "/vm", r#"{"state":"Paused"}"#);
        assert!(t.contains("Content-Length: 18\r\n\r\n{\"state\":\"Paused\"}"));
    }

    #[test]
    fn replies_in_a_row_on_one_connection() {
        let raw = "HTTP/1.1 200 \r\nContent-Type: application/json\r\ncontent-length: 2\r\n\r\n{}\
                   HTTP/1.1 204 No Content\r\nServer: Firecracker API\r\n\r\n\
                   HTTP/1.1 400 \r\nContent-Length: 22\r\n\r\n{\"fault_message\":\"no\"}";
        let mut r = BufReader::new(raw.as_bytes());
        let a = read_reply(&mut r).unwrap();
        assert_eq!((a.status, a.body.as_str()), (200, "{}"));
        let b = read_reply(&mut r).unwrap();
        assert_eq!((b.status, b.body.as_str()), (204, ""));
        let c = read_reply(&mut r).unwrap();
        assert_eq!(c.status, 400);
        assert!(c.body.contains("fault_message"));
        assert!(read_reply(&mut r).is_err());
    }
}
