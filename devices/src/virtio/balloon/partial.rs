//! Balloon pages on huge-page memory: the guest inflates 4 KiB pages, the
//! host can free only whole huge pages. Which 4 KiB pages of each huge page
//! are in the balloon is kept here, and a huge page is freed once all of
//! them are (deflating one takes it out again).

use std::collections::HashMap;

use super::discard::PAGE_SIZE;

/// The ballooned 4 KiB pages of partly ballooned huge pages.
#[derive(Debug, Default)]
pub struct PartialHugePages {
    /// Huge page guest address → a bit per 4 KiB page.
    pages: HashMap<u64, Vec<u64>>,
}

impl PartialHugePages {
    /// Marks the `count` pages from `addr` (inside one region of `huge`-byte
    /// pages) as ballooned; returns the huge pages now wholly ballooned
    /// (forgotten here: the caller frees them).
    pub fn inflate(&mut self, addr: u64, count: u64, huge: u64) -> Vec<u64> {
        let per = huge / PAGE_SIZE;
        let mut full = Vec::new();
        for page in (0..count).map(|i| addr + i * PAGE_SIZE) {
            let base = page / huge * huge;
            let bit = (page - base) / PAGE_SIZE;
            let bits = self
                .pages
                .entry(base)
                .or_insert_with(|| vec![0; per.div_ceil(64) as usize]);
            bits[(bit / 64) as usize] |= 1 << (bit % 64);
            let set: u64 = bits.iter().map(|w| u64::from(w.count_ones())).sum();
            if set == per {
                self.pages.remove(&base);
                full.push(base);
            }
        }
        full
    }

    /// Takes the `count` pages from `addr` out of the balloon.
    pub fn deflate(&mut self, addr: u64, count: u64, huge: u64) {
        for page in (0..count).map(|i| addr + i * PAGE_SIZE) {
            let base = page / huge * huge;
            let bit = (page - base) / PAGE_SIZE;
            if let Some(bits) = self.pages.get_mut(&base) {
                bits[(bit / 64) as usize] &= !(1 << (bit % 64));
                if bits.iter().all(|w| *w == 0) {
                    self.pages.remove(&base);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUGE: u64 = 2 << 20;

    impl PartialHugePages {
        fn len(&self) -> usize {
            self.pages.len()
        }

        fn is_empty(&self) -> bool {
            self.pages.is_empty()
        }
    }

    #[test]
    fn a_huge_page_is_freed_once_all_its_pages_are_ballooned() {
        let mut p = PartialHugePages::default();
        // Half of the second huge page, twice, then the rest in pieces.
        assert!(p.inflate(HUGE, 256, HUGE).is_empty());
        assert!(p.inflate(HUGE, 256, HUGE).is_empty());
        assert_eq!(p.len(), 1);
        assert!(p.inflate(HUGE + 256 * 4096, 255, HUGE).is_empty());
        assert_eq!(p.inflate(HUGE + 511 * 4096, 1, HUGE), [HUGE]);
        assert!(p.is_empty());
        // Across two huge pages at once.
        assert_eq!(p.inflate(0, 1024, HUGE), [0, HUGE]);
    }

    #[test]
    fn deflated_pages_leave_and_an_empty_huge_page_is_forgotten() {
        let mut p = PartialHugePages::default();
        assert!(p.inflate(0, 511, HUGE).is_empty());
        p.deflate(4096, 1, HUGE);
        assert!(p.inflate(511 * 4096, 1, HUGE).is_empty(), "page 1 is out");
        assert_eq!(p.inflate(4096, 1, HUGE), [0]);
        p.inflate(HUGE, 2, HUGE);
        p.deflate(HUGE, 2, HUGE);
        assert!(p.is_empty());
        p.deflate(3 * HUGE, 10, HUGE);
        assert!(p.is_empty());
    }
}
