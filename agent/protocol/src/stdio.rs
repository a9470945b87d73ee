//! The header that opens a process stdio stream.
//!
//! Each stream of a process is its own connection to the agent's
//! [`STDIO_PORT`](crate::STDIO_PORT). The first bytes on it are one line,
//! `STDIO <container_id> <exec_id|-> <stdin|stdout|stderr>\n`; everything
//! after is the stream itself. The agent hands the socket to the process as
//! that file descriptor, so output never passes through the agent.

use std::fmt;
use std::io::{self, Read};

/// The longest header line accepted, newline included.
pub const MAX_HEADER: usize = 512;

/// Which of a process's three standard streams a connection carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Host → process.
    Stdin,
    /// Process → host.
    Stdout,
    /// Process → host.
    Stderr,
}

impl Stream {
    /// The stream's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdin => "stdin",
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn parse(s: &str) -> Option<Stream> {
        match s {
            "stdin" => Some(Stream::Stdin),
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// The parsed header line: which process, which stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StdioHeader {
    /// The container the process belongs to.
    pub container_id: String,
    /// The exec process's id; empty for the container's init process.
    pub exec_id: String,
    /// The stream this connection carries.
    pub stream: Stream,
}

/// Why a header line was refused.
#[derive(Debug)]
pub enum HeaderError {
    /// Reading the line failed.
    Read(io::Error),
    /// The connection ended before the newline.
    Truncated,
    /// The line is longer than [`MAX_HEADER`].
    TooLong,
    /// The line is not `STDIO <cid> <eid|-> <stream>`.
    Malformed(String),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Read(e) => write!(f, "reading the stdio header: {e}"),
            HeaderError::Truncated => {
                write!(f, "the stdio connection closed before its header ended")
            }
            HeaderError::TooLong => write!(f, "the stdio header is longer than {MAX_HEADER} bytes"),
            HeaderError::Malformed(line) => write!(f, "malformed stdio header {line:?}"),
        }
    }
}

impl std::error::Error for HeaderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HeaderError::Read(e) => Some(e),
            _ => None,
        }
    }
}

/// Whether `id` may appear in a header: non-empty, no whitespace, not `-`.
pub fn check_id(id: &str) -> bool {
    !id.is_empty()
        && id != "-"
        && id.len() < 200
        && !id
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
}

impl StdioHeader {
    /// A header for `stream` of the process `exec_id` (empty: init) of `container_id`.
    pub fn new(container_id: &str, exec_id: &str, stream: Stream) -> StdioHeader {
        StdioHeader {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            stream,
        }
    }

    /// Parses one header line, without its newline.
    pub fn parse(line: &str) -> Result<StdioHeader, HeaderError> {
        let bad = || HeaderError::Malformed(line.to_string());
        let mut words = line.split(' ');
        if words.next() != Some("STDIO") {
            return Err(bad());
        }
        let (Some(cid), Some(eid), Some(stream), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(bad());
        };
        let stream = Stream::parse(stream).ok_or_else(bad)?;
        if !check_id(cid) || (eid != "-" && !check_id(eid)) {
            return Err(bad());
        }
        let exec_id = if eid == "-" { "" } else { eid };
        Ok(StdioHeader::new(cid, exec_id, stream))
    }

    /// Reads the header line off `conn` one byte at a time, so that not a
    /// byte of the stream behind it is consumed.
    pub fn read_from(conn: &mut impl Read) -> Result<StdioHeader, HeaderError> {
        let mut line = Vec::with_capacity(64);
        let mut byte = [0u8; 1];
        loop {
            match conn.read(&mut byte) {
                Ok(0) => return Err(HeaderError::Truncated),
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) => {
                    line.push(byte[0]);
                    if line.len() >= MAX_HEADER {
                        return Err(HeaderError::TooLong);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(HeaderError::Read(e)),
            }
        }
        let line = String::from_utf8(line).map_err(|e| {
            HeaderError::Malformed(String::from_utf8_lossy(e.as_bytes()).into_owned())
        })?;
        StdioHeader::parse(&line)
    }
}

/// The header line, newline included.
impl fmt::Display for StdioHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let eid = if self.exec_id.is_empty() {
            "-"
        } else {
            &self.exec_id
        };
        writeln!(
            f,
            "STDIO {} {} {}",
            self.container_id,
            eid,
            self.stream.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_leaves_the_stream() {
        for (eid, stream) in [("", Stream::Stdin), ("exec1", Stream::Stderr)] {
            let h = StdioHeader::new("c1", eid, stream);
            let wire = format!("{h}payload");
            let mut r = wire.as_bytes();
            assert_eq!(StdioHeader::read_from(&mut r).unwrap(), h);
            assert_eq!(r, b"payload", "not a byte past the newline is read");
        }
        assert_eq!(
            StdioHeader::new("c", "", Stream::Stdout).to_string(),
            "STDIO c - stdout\n"
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "STDIO",
            "STDIO c - ",
            "STDIO c - stdfoo",
            "stdio c - stdin",
            "STDIO - - stdin",
            "STDIO c - stdin extra",
            "STDIO  c - stdin",
        ] {
            assert!(
                matches!(StdioHeader::parse(bad), Err(HeaderError::Malformed(_))),
                "{bad:?} must be refused"
            );
        }
        let mut short: &[u8] = b"STDIO c - std";
        assert!(matches!(
            StdioHeader::read_from(&mut short),
            Err(HeaderError::Truncated)
        ));
        let long = vec![b'a'; MAX_HEADER + 10];
        assert!(matches!(
            StdioHeader::read_from(&mut long.as_slice()),
            Err(HeaderError::TooLong)
        ));
    }

    #[test]
    fn ids_with_spaces_are_not_ids() {
        assert!(check_id("abc-123_x.y"));
        assert!(!check_id("a b"));
        assert!(!check_id(""));
        assert!(!check_id("-"));
        assert!(!check_id("a\nb"));
    }
}
