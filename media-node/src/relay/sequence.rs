//! Loss accounting from RTP sequence numbers: gaps in one source's stream (after RFC 3550 A.1).

/// A jump this far ahead is a restarted or re-keyed stream, not loss.
const MAX_DROPOUT: u16 = 3000;
/// A packet this far behind the highest seen is late (reordered), not a restart.
const MAX_MISORDER: u16 = 100;

/// Follows the highest sequence number of one SSRC and counts the numbers skipped.
#[derive(Debug, Default, Clone, Copy)]
pub struct SequenceTracker {
    /// SSRC and highest sequence number seen, once a packet has been seen.
    highest: Option<(u32, u16)>,
}

impl SequenceTracker {
    /// Accounts one packet; returns how many sequence numbers it skipped (the packets lost
    /// before it). A late, duplicate or restarting packet skips none.
    pub fn observe(&mut self, ssrc: u32, seq: u16) -> u64 {
        let Some((current, highest)) = self.highest.filter(|(s, _)| *s == ssrc) else {
            self.highest = Some((ssrc, seq));
            return 0;
        };
        let ahead = seq.wrapping_sub(highest);
        match ahead {
            0 => 0,
            1..MAX_DROPOUT => {
                self.highest = Some((current, seq));
                u64::from(ahead - 1)
            }
            _ if ahead > u16::MAX - MAX_MISORDER => 0,
            _ => {
                self.highest = Some((current, seq));
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(packets: &[(u32, u16)]) -> u64 {
        let mut tracker = SequenceTracker::default();
        packets.iter().map(|&(s, q)| tracker.observe(s, q)).sum()
    }

    #[test]
    fn consecutive_packets_lose_nothing_across_the_wrap() {
        assert_eq!(gaps(&[(1, 65534), (1, 65535), (1, 0), (1, 1)]), 0);
    }

    #[test]
    fn a_gap_counts_the_missing_numbers() {
        assert_eq!(gaps(&[(1, 10), (1, 11), (1, 15)]), 3);
        assert_eq!(gaps(&[(1, 65535), (1, 2)]), 2);
    }

    #[test]
    fn late_and_duplicate_packets_are_not_loss() {
        assert_eq!(gaps(&[(1, 10), (1, 12), (1, 11), (1, 12)]), 1);
    }

    #[test]
    fn a_new_ssrc_or_a_big_jump_starts_over() {
        assert_eq!(gaps(&[(1, 10), (2, 5000), (2, 5001)]), 0);
        assert_eq!(gaps(&[(1, 10), (1, 40000), (1, 40001)]), 0);
    }
}
