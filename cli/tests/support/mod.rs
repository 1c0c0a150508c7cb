//! What the multi-process tests share: processes killed with the test, free ports, and sipp
//! registering a user of the example tenant.

#![allow(dead_code)]

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A UDP port free on 127.0.0.1 now.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A REGISTER with digest authentication for user 100 (others by replacing `100@`).
pub const REGISTER_SCENARIO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
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

/// Registers `user` of the example tenant with `password` from 127.0.0.1:`port` at
/// 127.0.0.1:`sip_port`, retrying until the platform is up.
pub fn register(sip_port: u16, port: u16, user: &str, password: &str, dir: &std::path::Path) {
    std::fs::write(
        dir.join("register.xml"),
        REGISTER_SCENARIO.replace("100@", &format!("{user}@")),
    )
    .unwrap();
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
                &port.to_string(),
                "-m",
                "1",
            ])
            .args([
                "-au",
                user,
                "-ap",
                password,
                "-timeout",
                "5s",
                "-timeout_error",
                "-nostdin",
            ])
            .args(["-buff_size", "4194304"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .status()
            .expect("sipp is installed (apt-get install sip-tester)");
        if status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{user} could not register at 127.0.0.1:{sip_port}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
