//! Majority arithmetic (IDM.md §7): a lock over N drives is held when ⌊N/2⌋+1
//! drives granted it.
//!
//! Even N: the old manager accepted exactly N/2 renewals. This engine does not:
//! every decision (acquire, renew, release, LVB read) needs ⌊N/2⌋+1. Two sets of
//! ⌊N/2⌋+1 drives always intersect, which is what makes the LVB-at-majority read
//! and the lease validity argument hold; with N/2 two halves do not intersect.

/// The number of drives that make a majority of `n`: ⌊n/2⌋+1.
pub const fn majority(n: u16) -> u16 {
    n / 2 + 1
}

/// A running count of per-drive answers towards a majority of `n`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Tally {
    n: u16,
    yes: u16,
    no: u16,
}

impl Tally {
    /// A tally over `n` drives with nothing counted.
    pub const fn new(n: u16) -> Tally {
        Tally { n, yes: 0, no: 0 }
    }

    /// Counts one drive that answered in favour.
    pub fn yes(&mut self) {
        self.yes = self.yes.saturating_add(1);
    }

    /// Counts one drive that will not be in favour (this round).
    pub fn no(&mut self) {
        self.no = self.no.saturating_add(1);
    }

    /// Drives counted in favour.
    pub fn yes_count(&self) -> u16 {
        self.yes
    }

    /// Drives counted against.
    pub fn no_count(&self) -> u16 {
        self.no
    }

    /// Drives not counted yet.
    pub fn pending(&self) -> u16 {
        self.n.saturating_sub(self.yes).saturating_sub(self.no)
    }

    /// A majority answered in favour.
    pub fn reached(&self) -> bool {
        self.yes >= majority(self.n)
    }

    /// Even if every pending drive answered in favour, no majority.
    pub fn impossible(&self) -> bool {
        self.yes.saturating_add(self.pending()) < majority(self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majorities() {
        let want = [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (8, 5), (512, 257)];
        for (n, m) in want {
            assert_eq!(majority(n), m, "n={n}");
        }
    }

    #[test]
    fn tally_reached_and_impossible() {
        for n in [1u16, 2, 3, 4, 5, 8] {
            let m = majority(n);
            let mut t = Tally::new(n);
            for _ in 0..m - 1 {
                t.yes();
            }
            assert!(!t.reached());
            t.yes();
            assert!(t.reached(), "n={n}");
            let mut t = Tally::new(n);
            for _ in 0..(n - m) {
                t.no();
            }
            assert!(!t.impossible(), "n={n}");
            t.no();
            assert!(t.impossible(), "n={n}");
        }
    }
}
