//! Random bytes from the operating system, drawn a block at a time: a call takes a dozen tags,
//! branches, nonces and slot draws, and a system call for each was 1–3 % of a call's CPU. The
//! bytes are the kernel's, as before; each is handed out once.

use std::cell::RefCell;

/// Bytes drawn from the kernel at once, per thread.
const BLOCK: usize = 512;

struct Block {
    bytes: [u8; BLOCK],
    used: usize,
}

thread_local! {
    static POOL: RefCell<Block> = const {
        RefCell::new(Block {
            bytes: [0; BLOCK],
            used: BLOCK,
        })
    };
}

/// Fills `out` with random bytes.
pub fn fill(out: &mut [u8]) {
    if out.len() > BLOCK / 4 {
        getrandom::fill(out).expect("the OS random source is available");
        return;
    }
    POOL.with_borrow_mut(|pool| {
        if BLOCK - pool.used < out.len() {
            getrandom::fill(&mut pool.bytes).expect("the OS random source is available");
            pool.used = 0;
        }
        let taken = &mut pool.bytes[pool.used..pool.used + out.len()];
        out.copy_from_slice(taken);
        // Not kept once handed out.
        taken.fill(0);
        pool.used += out.len();
    });
}

/// A random `u64`.
pub fn u64() -> u64 {
    let mut bytes = [0u8; 8];
    fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// A random token of 16 hex digits, for SIP tags, branches, Call-IDs and cnonces.
pub fn token() -> String {
    format!("{:016x}", u64())
}

/// A random number below `n` (which must not be 0); the modulo bias is below 2⁻³² for the
/// small `n` it is used with.
pub fn below(n: usize) -> usize {
    (u64() % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_differ_across_blocks_and_stay_in_range() {
        let draws: Vec<u64> = (0..3 * BLOCK / 8).map(|_| u64()).collect();
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert_eq!(distinct.len(), draws.len(), "no draw repeats");
        assert!((0..1000).all(|_| below(7) < 7));
    }

    #[test]
    fn large_requests_are_filled_whole() {
        let mut big = [0u8; BLOCK];
        fill(&mut big);
        assert!(big.iter().any(|&b| b != 0));
    }
}
