use super::*;
use crate::memory::{create_guest_memory, ram_regions};
use crate::persist::test_utils::*;
use kvm_ioctls::Kvm;
use std::io::Read;
use std::sync::atomic::Ordering;
use std::time::Duration;
use vm_memory::Bytes;

fn region(base: u64, size: u64, offset: u64) -> GuestRegionState {
    GuestRegionState {
        base_address: base,
        size,
        offset,
    }
}

fn read_all(file: &File) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut f = file.try_clone().unwrap();
    std::io::Seek::rewind(&mut f).unwrap();
    f.read_to_end(&mut bytes).unwrap();
    bytes
}

/// Pages of `mem`'s first region present in this process.
fn present_pages<B: Bitmap>(mem: &GuestMemoryMmap<B>) -> usize {
    let pagemap = open_pagemap().unwrap();
    let r = mem.iter().next().unwrap();
    let mapping: &MmapRegion<B> = r;
    pagemap_pages(
        &pagemap,
        mapping.as_ptr() as usize,
        r.len() as usize / PAGE_SIZE,
        |e| e & PAGEMAP_PRESENT != 0,
    )
    .unwrap()
    .len()
}

#[test]
fn page_sets_find_their_runs() {
    let mut set = PageSet::new(200);
    set.insert_range(0, 3);
    set.insert(63);
    set.insert(64);
    set.insert_range(190, 250);
    assert_eq!(set.runs(), vec![(0, 3), (63, 2), (190, 10)]);
    assert_eq!(set.len(), 15);
    let mut other = PageSet::new(200);
    other.union_words(&[1 << 5, 0, 0, u64::MAX]);
    // Bits past the last page are dropped.
    assert_eq!(other.runs(), vec![(5, 1), (192, 8)]);
}

#[test]
fn the_layout_follows_ram_regions_and_is_checked() {
    let mem = create_guest_memory(4 << 30).unwrap();
    let state = MemoryState::describe(&mem);
    let low = crate::arch::x86_64::layout::MMIO_GAP_START;
    assert_eq!(
        state.regions,
        vec![region(0, low, 0), region(1 << 32, (4 << 30) - low, low)]
    );
    assert_eq!(state.file_size(), 4 << 30);
    state.validate().unwrap();

    let check = |regions: Vec<GuestRegionState>| {
        MemoryState { regions }.validate().unwrap_err().to_string()
    };
    assert_eq!(
        MemoryState::default().validate().unwrap_err().to_string(),
        "saved memory layout has no region"
    );
    assert_eq!(
        check(vec![region(0x1000, 0x1800, 0)]),
        "saved memory layout is invalid: region 0 (0x1000, 0x1800 bytes at file offset 0x0) is not page-aligned"
    );
    assert!(check(vec![region(0, 0, 0)]).ends_with("is empty"));
    assert!(
        check(vec![region(0x10000, 0x1000, 0), region(0, 0x1000, 0x1000)])
            .ends_with("overlaps or precedes the region before it")
    );
    assert!(
        check(vec![region(0, 0x2000, 0), region(0x10000, 0x1000, 0x1000)])
            .ends_with("overlaps another region in the file")
    );
    assert!(check(vec![region(u64::MAX - 0xfff, 0x2000, 0)])
        .ends_with("wraps around the address space"));
}

#[test]
fn a_full_snapshot_of_a_big_idle_guest_is_sparse() {
    // 1 GiB of guest memory of which the guest touched 4 MiB, spread
    // over the address space.
    let mem = create_guest_memory(1 << 30).unwrap();
    let touched: u64 = 4 << 20;
    let chunk = vec![0xa5u8; 256 << 10];
    for i in 0..(touched / chunk.len() as u64) {
        mem.write_slice(&chunk, GuestAddress(i * (64 << 20) + 0x1000))
            .unwrap();
    }
    let file = tempfile::tempfile().unwrap();
    let stats = write_full_memory(&mem, &file, None).unwrap();
    assert_eq!(stats.bytes(), touched, "{stats:?}");
    let meta = file.metadata().unwrap();
    assert_eq!(meta.len(), 1 << 30);
    let allocated = meta.blocks() * 512;
    assert!(allocated >= touched, "{allocated} bytes allocated");
    assert!(
        allocated <= 2 * touched + (1 << 20),
        "{allocated} bytes allocated"
    );

    // Restored, it reads back the same, pages never touched as zeros.
    let back: GuestMemoryMmap = restore_guest_memory(file, &MemoryState::describe(&mem)).unwrap();
    let mut page = vec![0u8; PAGE_SIZE];
    back.read_slice(&mut page, GuestAddress(64 << 20)).unwrap();
    assert_eq!(page, vec![0u8; PAGE_SIZE]);
    back.read_slice(&mut page, GuestAddress((64 << 20) + 0x1000))
        .unwrap();
    assert_eq!(page, vec![0xa5u8; PAGE_SIZE]);
}

#[test]
fn a_full_snapshot_of_huge_page_memory_holds_the_huge_pages_touched() {
    let Some(_pool) = testkit::HugePages::reserve(
        "a_full_snapshot_of_huge_page_memory_holds_the_huge_pages_touched",
        16,
    ) else {
        return;
    };
    let mem =
        crate::memory::create_guest_memory_with(32 << 20, resources::HugePageConfig::Hugetlbfs2M)
            .unwrap();
    // One byte in the 3rd huge page, 16 bytes across the 8th and 9th.
    mem.write_obj(0x77u8, GuestAddress((4 << 20) + 0x1234))
        .unwrap();
    mem.write_slice(&[0x11; 16], GuestAddress((16 << 20) - 8))
        .unwrap();
    let file = tempfile::tempfile().unwrap();
    let stats = write_full_memory(&mem, &file, None).unwrap();
    // The pages of the huge pages touched that are not zeros: one, and
    // two side by side.
    assert_eq!(stats.pages, 3, "{stats:?}");
    assert_eq!(stats.runs, 2, "{stats:?}");
    let meta = file.metadata().unwrap();
    assert_eq!(meta.len(), 32 << 20);
    assert!(
        meta.blocks() * 512 <= 7 << 20,
        "{} allocated",
        meta.blocks() * 512
    );
    let back: GuestMemoryMmap = restore_guest_memory(file, &MemoryState::describe(&mem)).unwrap();
    assert_eq!(
        back.read_obj::<u8>(GuestAddress((4 << 20) + 0x1234))
            .unwrap(),
        0x77
    );
    let mut bytes = [0u8; 16];
    back.read_slice(&mut bytes, GuestAddress((16 << 20) - 8))
        .unwrap();
    assert_eq!(bytes, [0x11; 16]);
    assert_eq!(back.read_obj::<u64>(GuestAddress(20 << 20)).unwrap(), 0);
}

#[test]
fn a_restore_maps_the_file_privately_and_copies_nothing() {
    let mem = create_guest_memory(16 << 20).unwrap();
    mem.write_obj(0x1122_3344_5566_7788u64, GuestAddress(0x3000))
        .unwrap();
    mem.write_obj(0xffu8, GuestAddress((16 << 20) - 1)).unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    write_full_memory(&mem, file.as_file(), None).unwrap();
    let on_disk = read_all(file.as_file());

    let state = MemoryState::describe(&mem);
    let back: GuestMemoryMmap = restore_guest_memory(file.reopen().unwrap(), &state).unwrap();
    // Mapping reads no page.
    assert_eq!(present_pages(&back), 0);
    assert_eq!(
        back.read_obj::<u64>(GuestAddress(0x3000)).unwrap(),
        0x1122_3344_5566_7788
    );
    assert_eq!(
        back.read_obj::<u8>(GuestAddress((16 << 20) - 1)).unwrap(),
        0xff
    );
    // The guest's writes stay in this process.
    back.write_obj(7u64, GuestAddress(0x3000)).unwrap();
    assert_eq!(back.read_obj::<u64>(GuestAddress(0x3000)).unwrap(), 7);
    assert_eq!(read_all(file.as_file()), on_disk);
    // A second restore of the same file sees the snapshot, not the
    // first one's writes.
    let clone: GuestMemoryMmap = restore_guest_memory(file.reopen().unwrap(), &state).unwrap();
    assert_eq!(
        clone.read_obj::<u64>(GuestAddress(0x3000)).unwrap(),
        0x1122_3344_5566_7788
    );
}

#[test]
fn a_full_snapshot_of_restored_memory_keeps_the_pages_it_never_touched() {
    let mem = create_guest_memory(8 << 20).unwrap();
    mem.write_obj(1u64, GuestAddress(0x10_0000)).unwrap();
    mem.write_obj(2u64, GuestAddress(0x20_0000)).unwrap();
    let first = tempfile::NamedTempFile::new().unwrap();
    write_full_memory(&mem, first.as_file(), None).unwrap();
    let state = MemoryState::describe(&mem);
    let back: GuestMemoryMmap = restore_guest_memory(first.reopen().unwrap(), &state).unwrap();
    back.write_obj(3u64, GuestAddress(0x30_0000)).unwrap();

    // Not into the file it is mapped from...
    let err = write_full_memory(&back, first.as_file(), None).unwrap_err();
    assert!(
        matches!(err, MemorySnapshotError::TargetBacksMemory),
        "{err}"
    );
    // ...into a new one: the page written since, and the two pages
    // only the first file holds.
    let second = tempfile::tempfile().unwrap();
    let stats = write_full_memory(&back, &second, None).unwrap();
    assert_eq!(stats.pages, 3);
    let again: GuestMemoryMmap = restore_guest_memory(second, &state).unwrap();
    for (addr, value) in [(0x10_0000, 1u64), (0x20_0000, 2), (0x30_0000, 3)] {
        assert_eq!(again.read_obj::<u64>(GuestAddress(addr)).unwrap(), value);
    }
}

#[test]
fn a_short_or_mismatched_file_is_refused_before_mapping() {
    let state = MemoryState {
        regions: vec![region(0, 2 << 20, 0)],
    };
    let file = tempfile::tempfile().unwrap();
    file.set_len(1 << 20).unwrap();
    let err = restore_guest_memory::<()>(file, &state).unwrap_err();
    assert_eq!(
        err.to_string(),
        "memory file is 1048576 bytes, the snapshot's memory needs 2097152"
    );
    let bad = MemoryState {
        regions: vec![region(0, 0x1234, 0)],
    };
    assert!(matches!(
        restore_guest_memory::<()>(tempfile::tempfile().unwrap(), &bad),
        Err(MemorySnapshotError::BadLayout { .. })
    ));
}

#[test]
fn the_vmm_bitmap_records_only_what_was_written() {
    let mem: GuestMemoryMmap<AtomicBitmap> =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let r = mem.iter().next().unwrap();
    let mapping: &MmapRegion<AtomicBitmap> = r;
    mem.write_obj(1u32, GuestAddress(0x5000)).unwrap();
    mem.write_obj(1u32, GuestAddress(0x4_1ffe)).unwrap();
    let log = mapping.bitmap();
    let mut expected = vec![0u64; 256 / 64];
    expected[0] = 1 << 5;
    expected[1] = 0b11 << 1;
    assert_eq!(log.take_written_pages(), Some(expected));
    assert_eq!(
        log.take_written_pages(),
        Some(vec![0; 4]),
        "taken means forgotten"
    );
    assert_eq!(().take_written_pages(), None);
    assert_eq!(None::<AtomicBitmap>.take_written_pages(), None);
}

#[test]
fn a_diff_holds_the_pages_written_since_the_last_snapshot() {
    if !testkit::need_kvm("a_diff_holds_the_pages_written_since_the_last_snapshot") {
        return;
    }
    let kvm = Kvm::new().expect("/dev/kvm opened a moment ago");
    let mem: GuestMemoryMmap<AtomicBitmap> =
        GuestMemoryMmap::from_ranges(&ram_regions(16 << 20)).unwrap();
    load_counter_guest(&mem);
    let vm = new_vm(&kvm, &mem, true);
    let (io, log) = port_buses();
    // The vCPU reads its memory only to report an emulation failure.
    let handle = start(boot_vcpu(
        &kvm,
        &vm,
        io,
        create_guest_memory(1 << 20).unwrap(),
    ));
    wait_until("the guest to count", || {
        log.writes.load(Ordering::SeqCst) >= 100
    });
    assert!(handle.pause(Duration::from_secs(10)), "paused");
    let base = tempfile::NamedTempFile::new().unwrap();
    write_full_memory(&mem, base.as_file(), Some(&vm)).unwrap();

    // The guest counts on (one page), and the VMM writes as a device
    // would: a used ring entry, and a buffer across a page boundary.
    run_for(&handle, &log, 100);
    mem.write_obj(0xfeed_u64, GuestAddress(0x30_0000)).unwrap();
    mem.write_slice(&[0x11; 16], GuestAddress(0x40_0ff8))
        .unwrap();
    let diff = write_diff_memory(&mem, base.as_file(), &vm).unwrap();
    assert_eq!((diff.pages, diff.runs), (4, 3), "{diff:?}");

    // Base plus diff is what a full snapshot taken now holds.
    let full = tempfile::tempfile().unwrap();
    write_full_memory(&mem, &full, Some(&vm)).unwrap();
    assert_eq!(read_all(base.as_file()), read_all(&full));
    let back: GuestMemoryMmap =
        restore_guest_memory(base.reopen().unwrap(), &MemoryState::describe(&mem)).unwrap();
    let count: u64 = mem.read_obj(GuestAddress(COUNTER_ADDR)).unwrap();
    assert!(count >= 199, "{count}");
    assert_eq!(
        back.read_obj::<u64>(GuestAddress(COUNTER_ADDR)).unwrap(),
        count
    );
    assert_eq!(
        back.read_obj::<u64>(GuestAddress(0x30_0000)).unwrap(),
        0xfeed
    );

    // Right after a snapshot, a diff is empty.
    let empty = write_diff_memory(&mem, base.as_file(), &vm).unwrap();
    assert_eq!(empty.pages, 0);
    // And it goes only into a file of the memory's size.
    let other = tempfile::tempfile().unwrap();
    assert_eq!(
        write_diff_memory(&mem, &other, &vm).unwrap_err().to_string(),
        "the memory file for a diff is 0 bytes, guest memory needs 16777216: not this VM's previous snapshot"
    );
    handle.stop();
    handle.join();
}

#[test]
fn without_a_vmm_bitmap_a_diff_holds_every_page_the_vmm_may_have_written() {
    if !testkit::need_kvm("without_a_vmm_bitmap_a_diff_holds_every_page_the_vmm_may_have_written") {
        return;
    }
    let kvm = Kvm::new().expect("/dev/kvm opened a moment ago");
    let mem = create_guest_memory(16 << 20).unwrap();
    load_counter_guest(&mem);
    let untracked = new_vm(&kvm, &mem, false);
    assert!(matches!(
        write_diff_memory(&mem, &tempfile::tempfile().unwrap(), &untracked),
        Err(MemorySnapshotError::NoDirtyLog)
    ));
    drop(untracked);
    let vm = new_vm(&kvm, &mem, true);
    let (io, log) = port_buses();
    let handle = start(boot_vcpu(&kvm, &vm, io, mem.clone()));
    wait_until("the guest to count", || {
        log.writes.load(Ordering::SeqCst) >= 100
    });
    assert!(handle.pause(Duration::from_secs(10)), "paused");
    let base = tempfile::NamedTempFile::new().unwrap();
    let populated = write_full_memory(&mem, base.as_file(), Some(&vm)).unwrap();

    // A write KVM does not log, through memory that has no bitmap: a
    // booted VM's memfd, whose pages are all shared, so the diff holds
    // every populated page.
    run_for(&handle, &log, 100);
    mem.write_obj(0xfeed_u64, GuestAddress(0x30_0000)).unwrap();
    let region = mem.iter().next().unwrap();
    let now = populated_pages(&open_pagemap().unwrap(), region).unwrap();
    assert!(now.contains(0x300), "the page the VMM wrote is populated");
    let diff = write_diff_memory(&mem, base.as_file(), &vm).unwrap();
    assert_eq!(
        diff.pages,
        now.len() as u64,
        "{diff:?}: every populated page (the full snapshot wrote {populated:?}: no zero pages)"
    );
    assert!(diff.pages > populated.pages, "{diff:?} after {populated:?}");
    let full = tempfile::tempfile().unwrap();
    write_full_memory(&mem, &full, Some(&vm)).unwrap();
    assert_eq!(read_all(base.as_file()), read_all(&full));
    handle.stop();
    handle.join();
}
