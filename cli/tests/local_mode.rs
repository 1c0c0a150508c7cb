//! `centrex up examples/quickstart` — the README's first command — serves the example tenant:
//! sipp registers as Alice with her password from the example Secret.

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const SCENARIO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register alice">
  <send retrans="500"><![CDATA[
      REGISTER sip:acme.example.com SIP/2.0
      Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch];rport
      From: <sip:100@acme.example.com>;tag=[call_number]
      To: <sip:100@acme.example.com>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:100@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: 600
      Content-Length: 0
  ]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[
      REGISTER sip:acme.example.com SIP/2.0
      Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch];rport
      From: <sip:100@acme.example.com>;tag=[call_number]
      To: <sip:100@acme.example.com>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:100@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: 600
      [authentication]
      Content-Length: 0
  ]]></send>
  <recv response="200"/>
</scenario>
"#;

#[test]
fn local_mode_registers_a_real_sip_client_with_the_example_password() {
    let sip_port = free_udp_port();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart");
    let _platform = Running(
        Command::new(env!("CARGO_BIN_EXE_centrex"))
            // sipp 3.6 answers only the first challenge and knows only MD5.
            .args(["up", examples, "--digest-algorithms=MD5"])
            .arg(format!("--sip=127.0.0.1:{sip_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start centrex up"),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("register.xml"), SCENARIO).unwrap();
    // The platform needs a moment to bind: retry the whole registration until a deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = Command::new("sipp")
            .arg(format!("127.0.0.1:{sip_port}"))
            .args([
                "-sf",
                "register.xml",
                "-i",
                "127.0.0.1",
                "-p",
                &free_udp_port().to_string(),
                "-m",
                "1",
            ])
            .args([
                "-au",
                "100",
                "-ap",
                "alice-secret-100",
                "-timeout",
                "5s",
                "-timeout_error",
                "-nostdin",
            ])
            .args(["-buff_size", "4194304"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .status()
            .expect("sipp is installed (apt-get install sip-tester)");
        if status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "alice could not register through `centrex up`"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
