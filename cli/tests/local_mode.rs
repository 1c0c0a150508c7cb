//! `centrex up examples/quickstart` — the README's first command — serves the example tenant:
//! sipp registers as Alice with her password from the example Secret.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Running, free_udp_port, register};

/// Starts `centrex up examples/quickstart` on a free port with `extra` options; returns it and
/// the running process.
fn local_mode(extra: &[&str]) -> (u16, Running) {
    let sip_port = free_udp_port();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart");
    let platform = Running(
        Command::new(env!("CARGO_BIN_EXE_centrex"))
            // sipp 3.6 answers only the first challenge and knows only MD5.
            .args(["up", examples, "--digest-algorithms=MD5"])
            .arg(format!("--sip=127.0.0.1:{sip_port}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start centrex up"),
    );
    (sip_port, platform)
}

#[test]
fn local_mode_registers_a_real_sip_client_with_the_example_password() {
    let (sip_port, _platform) = local_mode(&[]);
    let dir = tempfile::tempdir().unwrap();
    register(
        sip_port,
        free_udp_port(),
        "100",
        "alice-secret-100",
        dir.path(),
    );
}

#[test]
fn alice_calls_bob_in_local_mode_with_audio_through_the_relay_and_a_call_record() {
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("calls.jsonl");
    let cdr_file = format!("--cdr-file={}", records.display());
    let (sip_port, _platform) = local_mode(&[&cdr_file]);
    let bob_port = free_udp_port();
    register(sip_port, bob_port, "101", "bob-secret-101", dir.path());
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../signalling/tests/scenarios/uac_call.xml"
    );
    std::fs::copy(scenario, dir.path().join("uac_call.xml")).unwrap();
    // One second of PCMU silence: 50 RTP packets.
    std::fs::write(dir.path().join("audio.raw"), [0xffu8; 8000]).unwrap();
    let sipp = |args: &[&str]| {
        Command::new("sipp")
            .arg(format!("127.0.0.1:{sip_port}"))
            .args([
                "-i",
                "127.0.0.1",
                "-m",
                "1",
                "-nostdin",
                "-timeout",
                "15s",
                "-timeout_error",
                "-buff_size",
                "4194304",
            ])
            .args(args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("sipp is installed")
    };
    let (bob_media, alice_port, alice_media) = (
        free_udp_port().to_string(),
        free_udp_port().to_string(),
        free_udp_port().to_string(),
    );
    let mut bob = sipp(&[
        "-sn",
        "uas",
        "-p",
        &bob_port.to_string(),
        "-mi",
        "127.0.0.1",
        "-mp",
        &bob_media,
        "-rtp_echo",
    ]);
    let alice = sipp(&[
        "-sf",
        "uac_call.xml",
        "-d",
        "1500",
        "-s",
        "101",
        "-au",
        "100",
        "-ap",
        "alice-secret-100",
        "-set",
        "domain",
        "acme.example.com",
        "-set",
        "user",
        "100",
        "-p",
        &alice_port,
        "-mi",
        "127.0.0.1",
        "-mp",
        &alice_media,
    ])
    .wait_with_output()
    .unwrap();
    assert!(
        alice.status.success(),
        "Alice's call to Bob did not complete"
    );
    assert!(
        bob.wait().unwrap().success(),
        "Bob's side of the call did not complete"
    );
    // The call's record is appended to the file once the call has ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    let record: serde_json::Value = loop {
        let text = std::fs::read_to_string(&records).unwrap_or_default();
        if let Some(line) = text.lines().next() {
            break serde_json::from_str(line).expect("a JSON object per line");
        }
        assert!(Instant::now() < deadline, "no call record in {records:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(record["from"], "100");
    assert_eq!(record["to"], "101");
    assert_eq!(record["result"], "answered");
    assert_eq!(record["answered_by"], "101");
    assert_eq!(record["tenant"]["name"], "acme");
}
