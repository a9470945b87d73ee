//! The vsock packet header, `struct virtio_vsock_hdr` (virtio spec v1.2
//! §5.10.6), and the names of its fields' values.
//!
//! Every packet in both directions starts with this 44-byte header; only
//! `VIRTIO_VSOCK_OP_RW` packets carry `len` bytes of payload after it. All
//! fields are little-endian and the struct is packed.

/// Size of `struct virtio_vsock_hdr`.
pub const HDR_LEN: usize = 44;

/// `type`: a connection-oriented byte stream (spec §5.10.6), the only type
/// the device supports.
pub const TYPE_STREAM: u16 = 1;

/// `op` values (spec §5.10.6, `VIRTIO_VSOCK_OP_*`).
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection refused or torn down.
    pub const RST: u16 = 3;
    /// The sender stops receiving and/or sending (see `flags`).
    pub const SHUTDOWN: u16 = 4;
    /// Payload.
    pub const RW: u16 = 5;
    /// The sender's `buf_alloc` and `fwd_cnt` changed.
    pub const CREDIT_UPDATE: u16 = 6;
    /// The sender asks for a CREDIT_UPDATE.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// SHUTDOWN flag: the sender will receive no more data (spec §5.10.6.5).
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;
/// Both SHUTDOWN flags: the sender is done with the connection.
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// Event id of `struct virtio_vsock_event` (spec §5.10.6.7): every
/// connection was reset, as after a migration or a snapshot restore.
pub const EVENT_TRANSPORT_RESET: u32 = 0;
/// Size of `struct virtio_vsock_event` (`le32 id`).
pub const EVENT_LEN: usize = 4;

// Field offsets in the packed header.
const SRC_CID: usize = 0;
const DST_CID: usize = 8;
const SRC_PORT: usize = 16;
const DST_PORT: usize = 20;
const LEN: usize = 24;
const TYPE: usize = 28;
const OP: usize = 30;
const FLAGS: usize = 32;
const BUF_ALLOC: usize = 36;
const FWD_CNT: usize = 40;

/// `struct virtio_vsock_hdr`, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Source context id.
    pub src_cid: u64,
    /// Destination context id.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type ([`TYPE_STREAM`]).
    pub type_: u16,
    /// Operation ([`op`]).
    pub op: u16,
    /// Operation flags (SHUTDOWN: [`SHUTDOWN_RCV`], [`SHUTDOWN_SEND`]).
    pub flags: u32,
    /// The sender's receive buffer space for this connection.
    pub buf_alloc: u32,
    /// Bytes the sender has received and consumed on this connection
    /// (free-running).
    pub fwd_cnt: u32,
}

fn u16_at(b: &[u8; HDR_LEN], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8; HDR_LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8; HDR_LEN], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl Header {
    /// Decodes the wire form.
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Self {
        Header {
            src_cid: u64_at(b, SRC_CID),
            dst_cid: u64_at(b, DST_CID),
            src_port: u32_at(b, SRC_PORT),
            dst_port: u32_at(b, DST_PORT),
            len: u32_at(b, LEN),
            type_: u16_at(b, TYPE),
            op: u16_at(b, OP),
            flags: u32_at(b, FLAGS),
            buf_alloc: u32_at(b, BUF_ALLOC),
            fwd_cnt: u32_at(b, FWD_CNT),
        }
    }

    /// Encodes the wire form.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[SRC_CID..SRC_CID + 8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[DST_CID..DST_CID + 8].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[SRC_PORT..SRC_PORT + 4].copy_from_slice(&self.src_port.to_le_bytes());
        b[DST_PORT..DST_PORT + 4].copy_from_slice(&self.dst_port.to_le_bytes());
        b[LEN..LEN + 4].copy_from_slice(&self.len.to_le_bytes());
        b[TYPE..TYPE + 2].copy_from_slice(&self.type_.to_le_bytes());
        b[OP..OP + 2].copy_from_slice(&self.op.to_le_bytes());
        b[FLAGS..FLAGS + 4].copy_from_slice(&self.flags.to_le_bytes());
        b[BUF_ALLOC..BUF_ALLOC + 4].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[FWD_CNT..FWD_CNT + 4].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The name of `op`, for logs.
    pub fn op_name(&self) -> &'static str {
        match self.op {
            op::REQUEST => "REQUEST",
            op::RESPONSE => "RESPONSE",
            op::RST => "RST",
            op::SHUTDOWN => "SHUTDOWN",
            op::RW => "RW",
            op::CREDIT_UPDATE => "CREDIT_UPDATE",
            op::CREDIT_REQUEST => "CREDIT_REQUEST",
            _ => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_layout_is_the_packed_little_endian_struct() {
        let h = Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 2,
            src_port: 0x1122_3344,
            dst_port: 1024,
            len: 5,
            type_: TYPE_STREAM,
            op: op::RW,
            flags: 0xa0b0_c0d0,
            buf_alloc: 0x0004_0000,
            fwd_cnt: 0xdead_beef,
        };
        let b = h.to_bytes();
        let want: [u8; HDR_LEN] = [
            8, 7, 6, 5, 4, 3, 2, 1, // src_cid
            2, 0, 0, 0, 0, 0, 0, 0, // dst_cid
            0x44, 0x33, 0x22, 0x11, // src_port
            0, 4, 0, 0, // dst_port
            5, 0, 0, 0, // len
            1, 0, // type
            5, 0, // op
            0xd0, 0xc0, 0xb0, 0xa0, // flags
            0, 0, 4, 0, // buf_alloc
            0xef, 0xbe, 0xad, 0xde, // fwd_cnt
        ];
        assert_eq!(b, want);
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn op_names() {
        let name = |op| {
            Header {
                op,
                ..Default::default()
            }
            .op_name()
        };
        assert_eq!(name(op::REQUEST), "REQUEST");
        assert_eq!(name(op::CREDIT_REQUEST), "CREDIT_REQUEST");
        assert_eq!(name(0), "unknown");
        assert_eq!(name(8), "unknown");
    }
}
