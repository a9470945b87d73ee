//! Network interfaces: a virtio-net device backed by a host tap.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest tap name Linux accepts (`IFNAMSIZ` − 1).
pub const TAP_NAME_MAX_LEN: usize = 15;

/// User input for one virtio-net device (Firecracker's
/// `network-interfaces` entry).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// Unique id.
    pub iface_id: String,
    /// Name of the tap device on the host.
    pub host_dev_name: String,
    /// The guest's MAC address; a random locally administered one when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<MacAddr>,
    /// Limits on the frames the guest receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rate_limiter: Option<crate::RateLimiterConfig>,
    /// Limits on the frames the guest sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rate_limiter: Option<crate::RateLimiterConfig>,
}

/// A MAC address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

/// A string that is not a MAC address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid MAC address {0:?}: expected six hex bytes like 06:00:ac:10:00:02")]
pub struct MacAddrParseError(pub String);

impl FromStr for MacAddr {
    type Err = MacAddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacAddrParseError(s.to_string());
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut mac {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        // A guest NIC needs a unicast address: Linux replaces a multicast
        // or all-zero one with a random one.
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(MacAddrParseError(format!("{s} (not a unicast address)")));
        }
        Ok(MacAddr(mac))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = MacAddrParseError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip_and_errors() {
        let m: MacAddr = "06:00:AC:10:00:02".parse().unwrap();
        assert_eq!(m.0, [6, 0, 0xac, 0x10, 0, 2]);
        assert_eq!(m.to_string(), "06:00:ac:10:00:02");
        for bad in [
            "",
            "06:00:ac:10:00",
            "06:00:ac:10:00:02:03",
            "6:00:ac:10:00:02",
            "zz:00:ac:10:00:02",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        let n: NetConfig = serde_json::from_str(
            r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:00:00:00:01"}"#,
        )
        .unwrap();
        assert_eq!(n.guest_mac, Some(MacAddr([6, 0, 0, 0, 0, 1])));
        assert!(serde_json::from_str::<NetConfig>(
            r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "nope"}"#
        )
        .is_err());
    }
}
