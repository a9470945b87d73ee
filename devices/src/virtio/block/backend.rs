//! Where a block device's bytes live: the [`DiskBackend`] trait, and its
//! implementation for a raw image file.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

/// The storage behind a virtio-blk device, addressed in bytes. Each call
/// either moves the whole buffer or fails.
pub trait DiskBackend: Send {
    /// Fills `buf` with the bytes at `offset`.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Stores all of `buf` at `offset`.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> io::Result<()>;
    /// The size of the disk in bytes.
    fn size(&self) -> io::Result<u64>;
}

/// A raw image file (or a host block device): `pread`/`pwrite`, so the
/// file position is never used, and `fdatasync` for flushes.
impl DiskBackend for File {
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        // A short read past the end of the file is an error
        // (`UnexpectedEof`): the file shrank under the guest.
        FileExt::read_exact_at(self, buf, offset)
    }

    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn flush(&mut self) -> io::Result<()> {
        // fdatasync(2): the data and the metadata needed to read it back
        // (the size), not the timestamps.
        self.sync_data()
    }

    fn size(&self) -> io::Result<u64> {
        // Seeking works for host block devices too, whose metadata length
        // is 0. The position does not matter: I/O uses explicit offsets.
        let mut file: &File = self;
        file.seek(SeekFrom::End(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_reads_back_what_it_wrote_and_reports_its_size() {
        let mut file = tempfile::tempfile().unwrap();
        file.set_len(4096).unwrap();
        assert_eq!(DiskBackend::size(&file).unwrap(), 4096);
        DiskBackend::write_at(&mut file, b"podvm", 1000).unwrap();
        DiskBackend::flush(&mut file).unwrap();
        let mut got = [0u8; 7];
        DiskBackend::read_at(&mut file, &mut got, 999).unwrap();
        assert_eq!(&got, b"\0podvm\0");
    }

    #[test]
    fn file_read_past_the_end_fails() {
        let mut file = tempfile::tempfile().unwrap();
        file.set_len(512).unwrap();
        let mut buf = [0u8; 512];
        let e = DiskBackend::read_at(&mut file, &mut buf, 256).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
