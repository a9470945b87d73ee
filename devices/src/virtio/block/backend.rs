//! Where a block device's bytes live: the [`DiskBackend`] trait, and its
//! implementation for a raw image file.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// Most iovecs one `preadv`/`pwritev` takes (Linux `UIO_MAXIOV`).
const MAX_IOVECS: usize = libc::UIO_MAXIOV as usize;

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

    /// Reads the bytes at `offset` straight into guest memory, without a
    /// copy. `None` (the default) when the backend cannot: the device then
    /// reads through [`DiskBackend::read_at`] and a bounce buffer.
    fn read_to_guest(&mut self, _dst: &GuestBuffers<'_>, _offset: u64) -> Option<io::Result<()>> {
        None
    }

    /// Stores guest memory at `offset` without a copy; `None` (the
    /// default) when the backend cannot, as for reads.
    fn write_from_guest(
        &mut self,
        _src: &GuestBuffers<'_>,
        _offset: u64,
    ) -> Option<io::Result<()>> {
        None
    }
}

/// The guest memory of one transfer, as host address ranges. Only the
/// device model builds one, from guest memory it holds borrowed for `'a`,
/// so every range stays mapped while the value lives; none is empty.
pub struct GuestBuffers<'a> {
    iovecs: &'a [libc::iovec],
    len: usize,
}

impl<'a> GuestBuffers<'a> {
    /// The ranges `iovecs`.
    ///
    /// # Safety
    ///
    /// Every range must be mapped memory, valid for reads and writes for
    /// `'a`, and not empty.
    pub(super) unsafe fn new(iovecs: &'a [libc::iovec]) -> Self {
        let len = iovecs.iter().map(|v| v.iov_len).sum();
        GuestBuffers { iovecs, len }
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A raw image file (or a host block device): `pread`/`pwrite` (and their
/// vectored forms straight into guest memory), so the file position is
/// never used, and `fdatasync` for flushes.
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

    fn read_to_guest(&mut self, dst: &GuestBuffers<'_>, offset: u64) -> Option<io::Result<()>> {
        let fd = self.as_raw_fd();
        Some(transfer_all(
            dst,
            offset,
            io::ErrorKind::UnexpectedEof,
            |iovecs, at| {
                // SAFETY: `dst` holds mapped memory valid for writes while
                // it lives (`GuestBuffers::new`); `iovecs` is a part of it,
                // and the kernel writes at most its lengths.
                unsafe { libc::preadv(fd, iovecs.as_ptr(), iovecs.len() as i32, at as i64) }
            },
        ))
    }

    fn write_from_guest(&mut self, src: &GuestBuffers<'_>, offset: u64) -> Option<io::Result<()>> {
        let fd = self.as_raw_fd();
        Some(transfer_all(
            src,
            offset,
            io::ErrorKind::WriteZero,
            |iovecs, at| {
                // SAFETY: `src` holds mapped memory valid for reads while it
                // lives; the kernel reads at most the lengths of `iovecs`.
                unsafe { libc::pwritev(fd, iovecs.as_ptr(), iovecs.len() as i32, at as i64) }
            },
        ))
    }
}

/// Runs `op` (a `preadv` or `pwritev` at a byte offset) until every byte of
/// `bufs` moved, resuming after short transfers and interruptions. A
/// transfer of nothing is `on_zero` (the end of the file for a read).
fn transfer_all(
    bufs: &GuestBuffers<'_>,
    offset: u64,
    on_zero: io::ErrorKind,
    mut op: impl FnMut(&[libc::iovec], u64) -> isize,
) -> io::Result<()> {
    // Iovecs not started yet, and the remainder of one a short transfer
    // stopped inside.
    let mut rest = bufs.iovecs;
    let mut head: Option<libc::iovec> = None;
    let mut at = offset;
    loop {
        let batch = match &head {
            Some(h) => std::slice::from_ref(h),
            None => &rest[..rest.len().min(MAX_IOVECS)],
        };
        if batch.is_empty() {
            return Ok(());
        }
        let n = op(batch, at);
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            // No iovec is empty, so nothing moved means no progress.
            return Err(on_zero.into());
        }
        let mut n = n as usize;
        at += n as u64;
        if let Some(h) = head.take() {
            if n < h.iov_len {
                head = Some(advance(h, n));
            }
            continue;
        }
        while n > 0 {
            let first = rest[0];
            rest = &rest[1..];
            if n < first.iov_len {
                head = Some(advance(first, n));
                break;
            }
            n -= first.iov_len;
        }
    }
}

/// `iov` without its first `n` bytes (`n < iov.iov_len`).
fn advance(iov: libc::iovec, n: usize) -> libc::iovec {
    libc::iovec {
        iov_base: iov.iov_base.cast::<u8>().wrapping_add(n).cast(),
        iov_len: iov.iov_len - n,
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

    fn iovec(buf: &mut [u8]) -> libc::iovec {
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        }
    }

    #[test]
    fn file_moves_scattered_buffers_without_a_copy() {
        let mut file = tempfile::tempfile().unwrap();
        let (mut a, mut b) = (*b"abc", *b"defgh");
        let iovecs = [iovec(&mut a), iovec(&mut b)];
        // SAFETY: two live, non-empty local arrays.
        let bufs = unsafe { GuestBuffers::new(&iovecs) };
        assert_eq!(bufs.len(), 8);
        file.write_from_guest(&bufs, 10).unwrap().unwrap();
        let mut back = [0u8; 8];
        file.read_exact_at(&mut back, 10).unwrap();
        assert_eq!(&back, b"abcdefgh");

        let (mut c, mut d) = ([0u8; 5], [0u8; 3]);
        let iovecs = [iovec(&mut c), iovec(&mut d)];
        // SAFETY: two live, non-empty local arrays.
        let bufs = unsafe { GuestBuffers::new(&iovecs) };
        file.read_to_guest(&bufs, 10).unwrap().unwrap();
        assert_eq!((&c, &d), (b"abcde", b"fgh"));
        // Past the end of the file.
        let e = file.read_to_guest(&bufs, 14).unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn short_transfers_resume_where_they_stopped() {
        let (mut a, mut b, mut c) = ([0u8; 5], [0u8; 2], [0u8; 4]);
        let iovecs = [iovec(&mut a), iovec(&mut b), iovec(&mut c)];
        let bases: Vec<usize> = iovecs.iter().map(|v| v.iov_base as usize).collect();
        // SAFETY: three live, non-empty local arrays (and `op` touches
        // none).
        let bufs = unsafe { GuestBuffers::new(&iovecs) };
        // Moves at most 3 bytes a call, after one interruption.
        let mut calls = Vec::new();
        let mut interrupted = false;
        transfer_all(&bufs, 100, io::ErrorKind::WriteZero, |batch, at| {
            if !interrupted {
                interrupted = true;
                // SAFETY: sets errno, as an interrupted syscall would.
                unsafe { *libc::__errno_location() = libc::EINTR };
                return -1;
            }
            let first = (batch[0].iov_base as usize, batch[0].iov_len);
            calls.push((first, batch.len(), at));
            let total: usize = batch.iter().map(|v| v.iov_len).sum();
            total.min(3) as isize
        })
        .unwrap();
        assert_eq!(
            calls,
            [
                ((bases[0], 5), 3, 100),
                ((bases[0] + 3, 2), 1, 103),
                ((bases[1], 2), 2, 105),
                ((bases[2] + 1, 3), 1, 108),
            ]
        );
        let e = transfer_all(&bufs, 0, io::ErrorKind::WriteZero, |_, _| 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WriteZero);
    }
}
