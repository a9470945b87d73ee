//! Parsing of the `/proc` files the suite reads: `smaps_rollup` and `smaps`
//! (a VMM's own memory, minus its guest RAM), `status` (peak RSS),
//! `meminfo` (host memory) and the per-thread `schedstat` (CPU time).

use std::io;
use std::path::Path;

/// `Rss` and `Pss` of a process or a mapping, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Resident set size.
    pub rss_kib: u64,
    /// Proportional set size (shared pages divided among their users):
    /// depends on which other processes map the same files (other runs of
    /// the same binary lower it), so not a headline figure.
    pub pss_kib: u64,
    /// `Private_Clean` + `Private_Dirty`: pages no other process maps
    /// *now*. The binary's and libraries' pages count here while this is
    /// the only process mapping them and move to `Shared_Clean` when
    /// another one maps them (podvm: 1.93 MiB alone, 0.39 MiB beside 3
    /// idle podvm processes), so this depends on other processes too.
    pub private_kib: u64,
    /// `Anonymous`: memory the process allocated itself (heap, stacks,
    /// copied-on-write pages), whatever else runs.
    pub anon_kib: u64,
}

/// One mapping of `/proc/PID/smaps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Start address.
    pub start: u64,
    /// `Size` in KiB (the virtual size).
    pub size_kib: u64,
    /// What is mapped (a path, `[heap]`, …), empty for anonymous memory.
    pub name: String,
    /// Its resident memory.
    pub usage: Usage,
}

/// The value in KiB of a `Key:   N kB` line of `text`.
pub fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `Rss`, `Pss`, the private and the anonymous pages from the text of
/// `/proc/PID/smaps_rollup`.
pub fn parse_rollup(text: &str) -> Option<Usage> {
    Some(Usage {
        rss_kib: kib_field(text, "Rss")?,
        pss_kib: kib_field(text, "Pss")?,
        private_kib: kib_field(text, "Private_Clean")? + kib_field(text, "Private_Dirty")?,
        anon_kib: kib_field(text, "Anonymous")?,
    })
}

/// Every mapping in the text of `/proc/PID/smaps`.
pub fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        // A mapping header is "start-end perms offset dev inode [name]";
        // the field lines are "Key: value".
        if let Some((start, _end)) = first.split_once('-') {
            if !first.ends_with(':') {
                if let Ok(start) = u64::from_str_radix(start, 16) {
                    let name = words.skip(4).collect::<Vec<_>>().join(" ");
                    out.push(Mapping {
                        start,
                        size_kib: 0,
                        name,
                        usage: Usage::default(),
                    });
                    continue;
                }
            }
        }
        let Some(m) = out.last_mut() else { continue };
        let value = || words.clone().next().and_then(|v| v.parse::<u64>().ok());
        match first {
            "Size:" => m.size_kib = value().unwrap_or(0),
            "Rss:" => m.usage.rss_kib = value().unwrap_or(0),
            "Pss:" => m.usage.pss_kib = value().unwrap_or(0),
            "Private_Clean:" | "Private_Dirty:" => m.usage.private_kib += value().unwrap_or(0),
            "Anonymous:" => m.usage.anon_kib = value().unwrap_or(0),
            _ => {}
        }
    }
    out
}

/// The mapping that holds a guest RAM of `guest_mib` MiB: the first whose
/// size is at least the RAM's and less than 2 MiB more, anonymous, a
/// memfd or another deleted file (podvm's private tmpfs). VMMs map guest RAM in one piece per region (below 3.25 GiB a
/// guest has one region), but Linux merges an anonymous mapping with an
/// adjacent one of the same protection: in Firecracker the 128 MiB guest
/// comes merged with 132 KiB of malloc heap right after it
/// (`7f29fc000000-7f2a04021000`), so the mapping's own `Rss` is not the
/// guest's. The guest is assumed to lie at the mapping's *start* (the
/// heap grows after it); its resident pages are then counted over exactly
/// `guest_mib` MiB from there with `/proc/PID/pagemap`
/// ([`guest_resident_kib`]). Checked with Firecracker v1.16.1 and the
/// `perf_touch` guest (128 MiB): with the API its mapping is merged
/// (131204 KiB, Rss 130708 KiB) and the count over the first 128 MiB is
/// 130704 KiB, the same as without the API, where the mapping is exactly
/// 128 MiB and not merged; podvm's count for the same guest is 130696
/// KiB (Firecracker writes two more pages of boot tables).
pub fn guest_mapping(maps: &[Mapping], guest_mib: u64) -> Option<&Mapping> {
    let want = guest_mib * 1024;
    maps.iter()
        .filter(|m| m.size_kib >= want && m.size_kib < want + 2048)
        .find(|m| {
            m.name.is_empty() || m.name.starts_with("/memfd:") || m.name.ends_with(" (deleted)")
        })
}

/// Whether a `/proc/PID/pagemap` entry says the page is in memory: bit 63
/// (present) or bit 62 (swapped, still the process's).
pub fn pagemap_resident(entry: u64) -> bool {
    entry & (3 << 62) != 0
}

/// The resident pages among the little-endian `/proc/PID/pagemap`
/// entries in `bytes` (8 bytes per page).
pub fn count_resident(bytes: &[u8]) -> u64 {
    bytes
        .chunks_exact(8)
        .filter(|c| pagemap_resident(u64::from_le_bytes((*c).try_into().unwrap())))
        .count() as u64
}

/// KiB of `pid`'s memory resident in `[start, start + len_kib KiB)`, from
/// `/proc/PID/pagemap` (4 KiB pages; needs root to be meaningful, which
/// the suite is).
pub fn guest_resident_kib(pid: u32, start: u64, len_kib: u64) -> io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    const PAGE: u64 = 4096;
    let mut f = std::fs::File::open(format!("/proc/{pid}/pagemap"))?;
    f.seek(SeekFrom::Start(start / PAGE * 8))?;
    let mut left = len_kib * 1024 / PAGE * 8;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pages = 0;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        f.read_exact(&mut buf[..n])?;
        pages += count_resident(&buf[..n]);
        left -= n as u64;
    }
    Ok(pages * PAGE / 1024)
}

/// `VmHWM` (peak resident set size) in KiB from `/proc/PID/status` text.
pub fn peak_rss_kib(status: &str) -> Option<u64> {
    kib_field(status, "VmHWM")
}

/// `MemAvailable` in KiB from `/proc/meminfo` text.
pub fn mem_available_kib(meminfo: &str) -> Option<u64> {
    kib_field(meminfo, "MemAvailable")
}

/// The first field of a `/proc/…/schedstat` line: nanoseconds on a CPU.
pub fn schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// A process's memory minus its guest RAM: what the VMM itself costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmmMemory {
    /// The whole process.
    pub total: Usage,
    /// The guest RAM mappings.
    pub guest: Usage,
    /// Peak RSS of the whole process (`VmHWM`), guest pages included.
    pub peak_rss_kib: u64,
}

impl VmmMemory {
    /// RSS without the guest RAM, KiB.
    pub fn rss_overhead_kib(&self) -> u64 {
        self.total.rss_kib.saturating_sub(self.guest.rss_kib)
    }

    /// PSS without the guest RAM, KiB.
    pub fn pss_overhead_kib(&self) -> u64 {
        self.total.pss_kib.saturating_sub(self.guest.pss_kib)
    }

    /// Anonymous memory without the guest RAM, KiB.
    pub fn anon_overhead_kib(&self) -> u64 {
        self.total.anon_kib.saturating_sub(self.guest.anon_kib)
    }

    /// Private memory without the guest RAM, KiB.
    pub fn private_overhead_kib(&self) -> u64 {
        self.total
            .private_kib
            .saturating_sub(self.guest.private_kib)
    }
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Reads `/proc/PID/{smaps_rollup,smaps,status}` of `pid`, whose guest has
/// `guest_mib` MiB of RAM.
pub fn vmm_memory(pid: u32, guest_mib: u64) -> io::Result<VmmMemory> {
    let dir = Path::new("/proc").join(pid.to_string());
    let rollup = std::fs::read_to_string(dir.join("smaps_rollup"))?;
    let total = parse_rollup(&rollup).ok_or_else(|| invalid(format!("{pid}: smaps_rollup")))?;
    let maps = parse_smaps(&std::fs::read_to_string(dir.join("smaps"))?);
    let mapping = guest_mapping(&maps, guest_mib).ok_or_else(|| {
        invalid(format!(
            "no {guest_mib} MiB guest memory mapping in /proc/{pid}/smaps"
        ))
    })?;
    let resident = guest_resident_kib(pid, mapping.start, guest_mib * 1024)?;
    // Guest pages are private anonymous (or a memfd only this process
    // maps, whose pages are shared memory, not `Anonymous`), so their PSS
    // and private size are their RSS.
    let guest = Usage {
        rss_kib: resident,
        pss_kib: resident,
        private_kib: resident,
        anon_kib: if mapping.name.is_empty() { resident } else { 0 },
    };
    let status = std::fs::read_to_string(dir.join("status"))?;
    let peak_rss_kib =
        peak_rss_kib(&status).ok_or_else(|| invalid(format!("{pid}: VmHWM in status")))?;
    Ok(VmmMemory {
        total,
        guest,
        peak_rss_kib,
    })
}

/// Whole-process memory (`smaps_rollup`) of `pid`.
pub fn rollup(pid: u32) -> io::Result<Usage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    parse_rollup(&text).ok_or_else(|| invalid(format!("{pid}: smaps_rollup")))
}

/// The host's `MemAvailable`, KiB.
pub fn host_available_kib() -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    mem_available_kib(&text).ok_or_else(|| invalid("MemAvailable in /proc/meminfo".into()))
}

/// CPU time of every thread of `pid` so far, in nanoseconds (the sum of
/// `/proc/PID/task/*/schedstat`: finer than the clock ticks of `stat`).
pub fn cpu_ns(pid: u32) -> io::Result<u64> {
    let mut sum = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(text) = std::fs::read_to_string(task?.path().join("schedstat")) else {
            continue; // the thread ended meanwhile
        };
        sum += schedstat_ns(&text).unwrap_or(0);
    }
    Ok(sum)
}

/// CPU time of `pid`'s threads so far, in nanoseconds (`schedstat`): all
/// of them, and those that are not vCPU threads (see [`is_vcpu_thread`]):
/// what the VMM's own device path and event loop cost, without a polling
/// guest's spinning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadsCpu {
    /// Every thread.
    pub all_ns: u64,
    /// Every thread but the vCPUs.
    pub non_vcpu_ns: u64,
}

/// Whether a thread's name (`comm`) is a vCPU thread's: podvm's `vcpu0`,
/// Firecracker's `fc_vcpu 0`.
pub fn is_vcpu_thread(comm: &str) -> bool {
    let c = comm.trim();
    c.starts_with("vcpu") || c.starts_with("fc_vcpu")
}

/// [`ThreadsCpu`] of `pid` now.
pub fn threads_cpu(pid: u32) -> io::Result<ThreadsCpu> {
    let mut t = ThreadsCpu::default();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = task?.path();
        let (Ok(stat), Ok(comm)) = (
            std::fs::read_to_string(dir.join("schedstat")),
            std::fs::read_to_string(dir.join("comm")),
        ) else {
            continue; // the thread ended meanwhile
        };
        let ns = schedstat_ns(&stat).unwrap_or(0);
        t.all_ns += ns;
        if !is_vcpu_thread(&comm) {
            t.non_vcpu_ns += ns;
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLLUP: &str = "\
55d0c0a00000-7ffd1e5f2000 ---p 00000000 00:00 0                          [rollup]
Rss:              135232 kB
Pss:              133021 kB
Pss_Dirty:        131072 kB
Shared_Clean:       2360 kB
Shared_Dirty:          0 kB
Private_Clean:       412 kB
Private_Dirty:    132460 kB
Referenced:       135232 kB
Anonymous:        132300 kB
";

    const SMAPS: &str = "\
55d0c0a00000-55d0c0c4e000 r--p 00000000 fe:01 1234                       /usr/bin/podvm
Size:               2360 kB
KernelPageSize:        4 kB
Rss:                1800 kB
Pss:                 900 kB
VmFlags: rd mr mw me sd
7f1200000000-7f1208000000 rw-p 00000000 00:00 0 
Size:             131072 kB
Rss:              130000 kB
Pss:              130000 kB
VmFlags: rd wr mr mw me nr sd
7f1300000000-7f1300021000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
Rss:                  40 kB
Pss:                  40 kB
7f1400000000-7f1402000000 rw-s 00000000 00:01 99                         /memfd:guest_mem (deleted)
Size:              32768 kB
Rss:                 100 kB
Pss:                 100 kB
";

    #[test]
    fn rollup_fields() {
        assert_eq!(
            parse_rollup(ROLLUP),
            Some(Usage {
                rss_kib: 135232,
                pss_kib: 133021,
                private_kib: 132872,
                anon_kib: 132300,
            })
        );
        // "Pss_Dirty" must not be mistaken for "Pss".
        assert_eq!(kib_field("Pss_Dirty: 5 kB\nPss: 7 kB\n", "Pss"), Some(7));
        assert_eq!(parse_rollup("Rss: 1 kB\n"), None);
        assert_eq!(parse_rollup("Rss: 1 kB\nPss: 1 kB\n"), None, "no Private_*");
        // "AnonHugePages" must not be mistaken for "Anonymous", nor the
        // other way round.
        assert_eq!(
            kib_field("AnonHugePages: 5 kB\nAnonymous: 7 kB\n", "Anonymous"),
            Some(7)
        );
    }

    #[test]
    fn smaps_mappings() {
        let maps = parse_smaps(SMAPS);
        assert_eq!(maps.len(), 4);
        assert_eq!(maps[0].name, "/usr/bin/podvm");
        assert_eq!(maps[0].size_kib, 2360);
        assert_eq!(
            maps[0].usage,
            Usage {
                rss_kib: 1800,
                pss_kib: 900,
                private_kib: 0,
                anon_kib: 0,
            }
        );
        assert_eq!(maps[1].start, 0x7f1200000000);
        assert_eq!(maps[1].name, "");
        assert_eq!(maps[2].name, "[heap]");
        assert_eq!(maps[3].name, "/memfd:guest_mem (deleted)");
    }

    #[test]
    fn guest_ram_is_found_by_size() {
        let maps = parse_smaps(SMAPS);
        let g = guest_mapping(&maps, 128).unwrap();
        assert_eq!(g.start, 0x7f1200000000);
        let g = guest_mapping(&maps, 32).unwrap();
        assert!(g.name.starts_with("/memfd:"), "a memfd counts as guest RAM");
        assert!(guest_mapping(&maps, 64).is_none());
        let mut tmpfs = maps[3].clone();
        tmpfs.name = "/podvm-guest-ram (deleted)".to_string();
        let g = guest_mapping(std::slice::from_ref(&tmpfs), 32).unwrap();
        assert_eq!(g.name, tmpfs.name, "so does a deleted tmpfs file");
        tmpfs.name = "/usr/lib/libc.so.6".to_string();
        assert!(guest_mapping(std::slice::from_ref(&tmpfs), 32).is_none());
    }

    /// Firecracker's 128 MiB guest merged by Linux with 132 KiB of malloc
    /// heap right after it: one mapping of 131204 KiB.
    const MERGED: &str = "\
55f1c0a00000-55f1c0c4e000 r--p 00000000 fe:01 1234                       /usr/bin/firecracker
Size:               2360 kB
Rss:                1800 kB
Pss:                1800 kB
7f29fc000000-7f2a04021000 rw-p 00000000 00:00 0 
Size:             131204 kB
KernelPageSize:        4 kB
Rss:                 720 kB
Pss:                 720 kB
Private_Dirty:       720 kB
Anonymous:           720 kB
7f2a04400000-7f2a04600000 rw-p 00000000 00:00 0 
Size:               2048 kB
Rss:                  16 kB
Pss:                  16 kB
";

    #[test]
    fn guest_ram_merged_with_the_heap_is_found() {
        let maps = parse_smaps(MERGED);
        assert_eq!(maps.len(), 3);
        assert_eq!(maps[1].size_kib, 131204);
        let g = guest_mapping(&maps, 128).unwrap();
        assert_eq!(g.start, 0x7f29fc000000);
        assert_eq!(g.usage.rss_kib, 720);
        assert_eq!(g.usage.private_kib, 720);
        assert_eq!(g.usage.anon_kib, 720);
        // A mapping 2 MiB larger or more is not a guest's.
        let big = MERGED.replace("131204 kB", "133120 kB");
        assert!(guest_mapping(&parse_smaps(&big), 128).is_none());
        assert!(guest_mapping(&maps, 256).is_none());
    }

    #[test]
    fn pagemap_entries() {
        let present = 1u64 << 63 | 0x1234;
        let swapped = 1u64 << 62;
        let absent = 0x1234u64; // a PFN field without the flags
        let mut bytes = Vec::new();
        for e in [present, absent, swapped, 0, present] {
            bytes.extend_from_slice(&e.to_le_bytes());
        }
        assert_eq!(count_resident(&bytes), 3);
        assert!(!pagemap_resident(1 << 61));
    }

    #[test]
    fn pagemap_of_this_process() {
        // 64 pages, the first 10 touched.
        let len = 64 * 4096;
        let mut v = vec![0u8; len + 4096];
        let start = (v.as_ptr() as u64).div_ceil(4096) * 4096;
        let off = (start - v.as_ptr() as u64) as usize;
        for p in 0..10 {
            v[off + p * 4096] = 1;
        }
        let kib = guest_resident_kib(std::process::id(), start, 64 * 4).unwrap();
        // Untouched pages of a fresh allocation may be present already
        // (calloc'd from the heap), never fewer than the touched ones.
        assert!(kib >= 40, "{kib}");
        assert!(kib <= 64 * 4);
        std::hint::black_box(&v);
    }

    #[test]
    fn overhead_subtracts_the_guest() {
        let m = VmmMemory {
            total: Usage {
                rss_kib: 135232,
                pss_kib: 133021,
                private_kib: 132872,
                anon_kib: 132300,
            },
            guest: Usage {
                rss_kib: 130000,
                pss_kib: 130000,
                private_kib: 130000,
                anon_kib: 130000,
            },
            peak_rss_kib: 140000,
        };
        assert_eq!(m.rss_overhead_kib(), 5232);
        assert_eq!(m.pss_overhead_kib(), 3021);
        assert_eq!(m.private_overhead_kib(), 2872);
        assert_eq!(m.anon_overhead_kib(), 2300);
    }

    #[test]
    fn status_meminfo_schedstat() {
        let status = "Name:\tpodvm\nVmPeak:\t  20000 kB\nVmHWM:\t    4321 kB\nVmRSS:\t 4000 kB\n";
        assert_eq!(peak_rss_kib(status), Some(4321));
        let meminfo = "MemTotal:       24000000 kB\nMemFree:        20000000 kB\nMemAvailable:   22000000 kB\n";
        assert_eq!(mem_available_kib(meminfo), Some(22000000));
        assert_eq!(schedstat_ns("123456789 2000 17\n"), Some(123456789));
        assert_eq!(schedstat_ns(""), None);
        assert!(is_vcpu_thread("vcpu0\n"));
        assert!(is_vcpu_thread("fc_vcpu 3\n"));
        assert!(!is_vcpu_thread("podvm\n"));
        assert!(!is_vcpu_thread("fc_api\n"));
    }

    #[test]
    fn this_process_can_be_read() {
        let pid = std::process::id();
        assert!(rollup(pid).unwrap().rss_kib > 0);
        assert!(cpu_ns(pid).unwrap() > 0);
        assert!(host_available_kib().unwrap() > 0);
    }
}
