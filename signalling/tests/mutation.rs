//! Bounded random-mutation fuzzing on the stable toolchain, run by CI: the RFC 4475 corpus is
//! mutated byte-wise (bit flips, SIP delimiters, deletions, duplications, splices between
//! messages) and every mutant goes through every entry point of the message layer; a panic or a
//! broken invariant fails the test and prints the input. `cargo fuzz` (in `signalling/fuzz/`) does
//! the same, coverage-guided, where a nightly toolchain is available.
//!
//! `SIP_MUTATION_SECONDS` (default 5) bounds the run, `SIP_MUTATION_SEED` makes it reproducible.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Bytes that change how SIP is read.
const DELIMITERS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n ",
    b"\r",
    b"\n",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"\"",
    b"\\",
    b"<",
    b">",
    b"[",
    b"]",
    b"@",
    b"%",
    b"=",
    b"?",
    b"/",
    b"\0",
    b"\xff",
    b"\xc3",
    b"SIP/2.0",
    b"Content-Length: ",
    b"l:99999",
    b"Via: SIP/2.0/UDP ",
    b";branch=",
    b"<sip:",
    b"%00",
    b"\r\n\r\n",
    b"99999999999999999999",
];

/// xorshift64*: deterministic, dependency-free, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torture");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(7) {
            0 if at < input.len() => input[at] ^= 1 << rng.below(8),
            1 if at < input.len() => input[at] = rng.next() as u8,
            2 => {
                let token = DELIMITERS[rng.below(DELIMITERS.len())];
                input.splice(at..at, token.iter().copied());
            }
            3 => {
                let end = (at + rng.below(32)).min(input.len());
                input.drain(at..end);
            }
            4 => {
                let end = (at + rng.below(64)).min(input.len());
                let copy = input[at..end].to_vec();
                input.splice(at..at, copy);
            }
            5 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len());
                let end = (from + rng.below(128)).min(other.len());
                input.splice(at..at, other[from..end].iter().copied());
            }
            _ => input.truncate(at),
        }
    }
}

#[test]
fn mutated_torture_messages_never_panic_or_break_invariants() {
    let seconds = std::env::var("SIP_MUTATION_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let seed = std::env::var("SIP_MUTATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0de_u64);
    let corpus = corpus();
    assert!(corpus.len() >= 49, "torture corpus incomplete");
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut runs, mut accepted) = (0u64, 0u64);
    while Instant::now() < deadline {
        for _ in 0..64 {
            let mut input = corpus[rng.below(corpus.len())].clone();
            mutate(&mut rng, &mut input, &corpus);
            let bytes = Bytes::from(input);
            match catch_unwind(AssertUnwindSafe(|| common::exercise(bytes.clone()))) {
                Ok(ok) => accepted += u64::from(ok),
                Err(_) => panic!(
                    "seed {seed}, run {runs}: input {:?}",
                    bytes.escape_ascii().to_string()
                ),
            }
            runs += 1;
        }
    }
    println!("{runs} mutants in {seconds} s, {accepted} accepted and re-parsed");
    assert!(
        runs > 1_000 && accepted > 0,
        "{runs} runs, {accepted} accepted"
    );
}
