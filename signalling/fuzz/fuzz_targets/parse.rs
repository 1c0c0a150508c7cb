//! Coverage-guided fuzzing of the SIP message layer: the same entry points and invariants as the
//! bounded mutation test (`tests/mutation.rs`), driven by libFuzzer.

#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::exercise(bytes::Bytes::copy_from_slice(data));
});
