//! Allocation of local port pairs from the node's range: an even RTP port and the RTCP port
//! after it (RFC 3550 §11), reserved together so a leg can drop rtcp-mux later.

use crate::config::PortRange;

/// A reserved pair of local ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortPair {
    pub rtp: u16,
}

impl PortPair {
    /// The RTCP port (used when RTCP is not multiplexed).
    pub fn rtcp(self) -> u16 {
        self.rtp + 1
    }
}

/// Hands out the pairs of a range, round-robin, so a freed pair rests before it is reused and
/// late packets of an ended call do not reach the next one.
#[derive(Debug)]
pub struct PortAllocator {
    first: u16,
    in_use: Vec<bool>,
    used: usize,
    next: usize,
}

impl PortAllocator {
    /// The pairs that fit in `range`.
    pub fn new(range: PortRange) -> Self {
        let first = range.min.saturating_add(range.min % 2);
        let pairs = if range.max > first {
            usize::from((range.max - first).div_ceil(2))
        } else {
            0
        };
        Self {
            first,
            in_use: vec![false; pairs],
            used: 0,
            next: 0,
        }
    }

    /// How many pairs the range holds.
    pub fn capacity(&self) -> usize {
        self.in_use.len()
    }

    /// How many pairs are free.
    pub fn available(&self) -> usize {
        self.capacity() - self.used
    }

    /// Reserves the next free pair, if any.
    pub fn allocate(&mut self) -> Option<PortPair> {
        let pairs = self.capacity();
        let index = (0..pairs)
            .map(|i| (self.next + i) % pairs)
            .find(|&i| !self.in_use[i])?;
        self.in_use[index] = true;
        self.used += 1;
        self.next = (index + 1) % pairs;
        Some(PortPair {
            rtp: self.first + 2 * index as u16,
        })
    }

    /// Returns a pair; releasing a pair that is not reserved does nothing.
    pub fn release(&mut self, pair: PortPair) {
        let Some(index) = pair
            .rtp
            .checked_sub(self.first)
            .map(|offset| usize::from(offset / 2))
        else {
            return;
        };
        if let Some(slot) = self.in_use.get_mut(index)
            && *slot
        {
            *slot = false;
            self.used -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(min: u16, max: u16) -> PortAllocator {
        PortAllocator::new(PortRange { min, max })
    }

    #[test]
    fn pairs_start_on_an_even_port_with_rtcp_next() {
        let mut ports = range(20001, 20010);
        let pair = ports.allocate().unwrap();
        assert_eq!((pair.rtp, pair.rtcp()), (20002, 20003));
        assert_eq!(ports.capacity(), 4);
    }

    #[test]
    fn a_pair_needs_both_ports_inside_the_range() {
        assert_eq!(range(20000, 20002).capacity(), 1);
        assert_eq!(range(20000, 20003).capacity(), 2);
        assert_eq!(range(20001, 20002).capacity(), 0);
    }

    #[test]
    fn the_range_runs_out_and_a_released_pair_comes_back() {
        let mut ports = range(20000, 20003);
        let first = ports.allocate().unwrap();
        let second = ports.allocate().unwrap();
        assert_ne!(first, second);
        assert_eq!(ports.allocate(), None);
        ports.release(first);
        assert_eq!(ports.available(), 1);
        assert_eq!(ports.allocate(), Some(first));
    }

    #[test]
    fn a_freed_pair_rests_while_others_are_free() {
        let mut ports = range(20000, 20005);
        let first = ports.allocate().unwrap();
        ports.release(first);
        assert_ne!(ports.allocate(), Some(first));
    }

    #[test]
    fn releasing_twice_or_outside_the_range_changes_nothing() {
        let mut ports = range(20000, 20003);
        let pair = ports.allocate().unwrap();
        ports.release(pair);
        ports.release(pair);
        ports.release(PortPair { rtp: 1000 });
        assert_eq!(ports.available(), 2);
    }
}
