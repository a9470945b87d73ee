//! What the network device needs from its host side.

use std::io;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::VolatileSlice;

/// The host end of a virtio-net device: a tap, or a fake in tests.
///
/// Every frame carries the 12-byte vnet header
/// ([`super::VNET_HDR_LEN`]) in front of the Ethernet frame.
pub trait NetBackend: Send {
    /// Reads one frame into `buf`, returning its length. A frame longer than
    /// `buf` is cut. Fails with [`io::ErrorKind::WouldBlock`] when no frame
    /// is waiting; must not block.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes one frame, gathered from `frame` (slices of guest memory), as
    /// one packet. Returns the bytes written.
    fn write_vectored<'a, B: BitmapSlice + 'a>(
        &mut self,
        frame: impl Iterator<Item = VolatileSlice<'a, B>>,
    ) -> io::Result<usize>;

    /// Sets which offloads (`TUN_F_*` flags) the backend may hand to the
    /// guest: those the guest accepted.
    fn set_offload(&mut self, flags: u32) -> io::Result<()>;
}
