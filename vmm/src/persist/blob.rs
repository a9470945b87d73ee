//! [`Blob`]: raw bytes in a state file, written as one hex string.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The bytes of a KVM structure whose contents podvm passes through
/// without reading them (the LAPIC register page, the XSAVE area). In JSON
/// it is a lowercase hex string: half the size of a list of numbers and
/// readable with `xxd -r -p`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(self.0.len() * 2);
        for &b in &self.0 {
            text.push(char::from(HEX[usize::from(b >> 4)]));
            text.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        serializer.serialize_str(&text)
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

struct HexVisitor;

impl Visitor<'_> for HexVisitor {
    type Value = Blob;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string of hex digit pairs")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Blob, E> {
        let digits = text.as_bytes();
        if !digits.len().is_multiple_of(2) {
            return Err(E::custom(format!(
                "hex string of odd length {}",
                digits.len()
            )));
        }
        digits
            .chunks_exact(2)
            .map(|pair| match (nibble(pair[0]), nibble(pair[1])) {
                (Some(hi), Some(lo)) => Ok((hi << 4) | lo),
                _ => Err(E::custom(format!(
                    "{:?} is not a hex byte",
                    String::from_utf8_lossy(pair)
                ))),
            })
            .collect::<Result<Vec<u8>, E>>()
            .map(Blob)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Blob, D::Error> {
        deserializer.deserialize_str(HexVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_hex_string() {
        let blob = Blob(vec![0x00, 0x7f, 0x80, 0xff, 0x1a]);
        let json = serde_json::to_string(&blob).unwrap();
        assert_eq!(json, r#""007f80ff1a""#);
        assert_eq!(serde_json::from_str::<Blob>(&json).unwrap(), blob);
        assert_eq!(
            serde_json::from_str::<Blob>(r#""7F""#).unwrap(),
            Blob(vec![0x7f])
        );
    }

    #[test]
    fn refuses_what_is_not_hex() {
        let odd = serde_json::from_str::<Blob>(r#""abc""#).unwrap_err();
        assert!(odd.to_string().contains("odd length 3"), "{odd}");
        let bad = serde_json::from_str::<Blob>(r#""0g""#).unwrap_err();
        assert!(
            bad.to_string().contains(r#""0g" is not a hex byte"#),
            "{bad}"
        );
        assert!(serde_json::from_str::<Blob>("[1, 2]").is_err());
    }
}
