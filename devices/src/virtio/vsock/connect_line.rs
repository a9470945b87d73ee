//! The line a host process sends first on the device's Unix socket to
//! reach a guest port: `CONNECT <port>\n` (Firecracker's hybrid vsock).
//!
//! The line is exactly `CONNECT`, one space, the port in decimal (1 to 10
//! digits, at most `u32::MAX`) and `\n`. Anything else is refused as soon
//! as it is seen, so the longest good line (`CONNECT 4294967295\n`, 19
//! bytes) bounds what is ever waited for: 19 bytes without a newline are
//! refused.

/// Bytes worth looking at: more than any good line holds.
pub const MAX_LINE: usize = 32;

const PREFIX: &[u8] = b"CONNECT ";
/// Digits of `u32::MAX`.
const MAX_DIGITS: usize = 10;

/// Why a CONNECT line was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// It does not start with `CONNECT `.
    #[error("it does not start with \"CONNECT \"")]
    NotConnect,
    /// The port is not 1 to 10 decimal digits followed by the newline,
    /// or is over `u32::MAX`.
    #[error("the port is not a number from 0 to 4294967295 ending the line")]
    BadPort,
}

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A valid start: more bytes are needed.
    Incomplete,
    /// A whole line: the port and the line's length with its newline.
    Connect {
        /// The guest port asked for.
        port: u32,
        /// Bytes the line takes, `\n` included.
        len: usize,
    },
    /// Not a CONNECT line.
    Malformed(LineError),
}

/// Reads the start of what a host process sent (`buf`, at most
/// [`MAX_LINE`] bytes are looked at).
pub fn parse(buf: &[u8]) -> Line {
    let buf = &buf[..buf.len().min(MAX_LINE)];
    let end = buf.iter().position(|&b| b == b'\n');
    let line = &buf[..end.unwrap_or(buf.len())];
    // The prefix, as far as there are bytes.
    let common = line.len().min(PREFIX.len());
    if line[..common] != PREFIX[..common] {
        return Line::Malformed(LineError::NotConnect);
    }
    let digits = &line[common..];
    if !digits.iter().all(u8::is_ascii_digit) || digits.len() > MAX_DIGITS {
        return Line::Malformed(LineError::BadPort);
    }
    let Some(end) = end else {
        return Line::Incomplete;
    };
    if line.len() < PREFIX.len() {
        return Line::Malformed(LineError::NotConnect);
    }
    if digits.is_empty() {
        return Line::Malformed(LineError::BadPort);
    }
    // At most 10 ASCII digits: parses as u64 without overflow.
    let value = digits
        .iter()
        .fold(0u64, |v, &d| v * 10 + u64::from(d - b'0'));
    match u32::try_from(value) {
        Ok(port) => Line::Connect { port, len: end + 1 },
        Err(_) => Line::Malformed(LineError::BadPort),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_lines() {
        assert_eq!(
            parse(b"CONNECT 1024\n"),
            Line::Connect {
                port: 1024,
                len: 13
            }
        );
        assert_eq!(
            parse(b"CONNECT 0\nand then data"),
            Line::Connect { port: 0, len: 10 }
        );
        assert_eq!(
            parse(b"CONNECT 4294967295\n"),
            Line::Connect {
                port: u32::MAX,
                len: 19
            }
        );
        assert_eq!(
            parse(b"CONNECT 0000000052\n"),
            Line::Connect { port: 52, len: 19 }
        );
    }

    #[test]
    fn every_prefix_of_a_good_line_is_incomplete() {
        let line = b"CONNECT 52000\n";
        for n in 0..line.len() {
            assert_eq!(parse(&line[..n]), Line::Incomplete, "{n} bytes");
        }
        assert_eq!(
            parse(line),
            Line::Connect {
                port: 52000,
                len: 14
            }
        );
    }

    #[test]
    fn malformed_lines_are_refused_as_soon_as_they_show() {
        use LineError::*;
        let cases: &[(&[u8], LineError)] = &[
            (b"GET / HTTP/1.1\r\n", NotConnect),
            (b"G", NotConnect),
            (b"connect 5\n", NotConnect),
            (b"CONNECT\n", NotConnect),
            (b"CONNECT5\n", NotConnect),
            (b"CONNECT  5\n", BadPort),
            (b"CONNECT \n", BadPort),
            (b"CONNECT -1\n", BadPort),
            (b"CONNECT 5 \n", BadPort),
            (b"CONNECT 5\r\n", BadPort),
            (b"CONNECT 0x10\n", BadPort),
            (b"CONNECT 4294967296\n", BadPort),
            (b"CONNECT 99999999999\n", BadPort),
            (b"CONNECT 12a", BadPort),
            (b"CONNECT 00000000001", BadPort),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input),
                Line::Malformed(want.clone()),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn a_line_that_does_not_end_is_refused_by_its_19th_byte() {
        let mut long = b"CONNECT ".to_vec();
        long.resize(18, b'7');
        assert_eq!(parse(&long), Line::Incomplete);
        for next in [b'7', b' ', b'x'] {
            let mut l = long.clone();
            l.push(next);
            assert_eq!(parse(&l), Line::Malformed(LineError::BadPort));
        }
        assert!(PREFIX.len() + MAX_DIGITS < MAX_LINE);
        // Only the first MAX_LINE bytes count.
        let mut padded = b"CONNECT 1".to_vec();
        padded.resize(MAX_LINE, b'0');
        padded.extend_from_slice(b"\n");
        assert_eq!(parse(&padded), Line::Malformed(LineError::BadPort));
    }
}
