//! Parse throughput for a typical INVITE and REGISTER on one core, to compare with Kamailio's
//! figures: `cargo bench -p centrex-signalling --bench parse`. `BENCH_SECONDS` (default 1) is the
//! time spent on each measurement.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use centrex_signalling::sip::{Limits, Message, canonical};

/// What a softphone sends: an INVITE with an SDP offer, through one proxy.
const INVITE: &str = "INVITE sip:2001@acme.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---c2d3f0e1b5a4;rport\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bK776asdhds;received=198.51.100.7;rport=5062\r\n\
Max-Forwards: 69\r\n\
Contact: <sip:1001@198.51.100.7:5062;transport=udp;ob>\r\n\
To: <sip:2001@acme.example.com>\r\n\
From: \"Alice Example\" <sip:1001@acme.example.com>;tag=9fxced76sl\r\n\
Call-ID: 3848276298220188511@198.51.100.7\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE, UPDATE, PRACK\r\n\
Supported: replaces, norefersub, extended-refer, timer, 100rel, outbound, path\r\n\
User-Agent: Linphone/5.2.0 (belle-sip/5.2.0)\r\n\
Session-Expires: 1800\r\n\
Min-SE: 90\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 298\r\n\
\r\n\
v=0\r\n\
o=1001 3748 2121 IN IP4 198.51.100.7\r\n\
s=Talk\r\n\
c=IN IP4 198.51.100.7\r\n\
t=0 0\r\n\
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\r\n\
m=audio 7078 RTP/AVP 96 0 8 101\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=fmtp:96 useinbandfec=1\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=rtcp:7079\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// A REGISTER answering a digest challenge.
const REGISTER: &str = "REGISTER sip:acme.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bK.hTn3ZqDd4;rport\r\n\
From: <sip:1001@acme.example.com>;tag=vGyiQBxJ2\r\n\
To: <sip:1001@acme.example.com>\r\n\
CSeq: 21 REGISTER\r\n\
Call-ID: 2sqXJ6W9Nc\r\n\
Max-Forwards: 70\r\n\
Supported: replaces, outbound, gruu, path\r\n\
Accept: application/sdp, text/plain, application/vnd.gsma.rcs-ft-http+xml\r\n\
Contact: <sip:1001@198.51.100.7:5062;transport=udp>;+sip.instance=\"<urn:uuid:0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9>\";reg-id=1\r\n\
Expires: 3600\r\n\
User-Agent: Linphone/5.2.0 (belle-sip/5.2.0)\r\n\
Authorization: Digest realm=\"acme.example.com\", nonce=\"a9f3c1d2e4b5f6a7980b1c2d3e4f5a6b\", algorithm=SHA-256, opaque=\"5ccc069c403ebaf9f0171e9517f40e41\", username=\"1001\", uri=\"sip:acme.example.com\", response=\"7c8f0a5b0f2f9d1e6d4c3b2a19081726354453627180f9e8d7c6b5a493827160\", cnonce=\"0a4f113b\", nc=00000001, qop=auth\r\n\
Content-Length: 0\r\n\
\r\n";

fn measure(label: &str, budget: Duration, mut work: impl FnMut()) {
    // Warm up caches and the branch predictor first.
    for _ in 0..1_000 {
        work();
    }
    let start = Instant::now();
    let mut runs = 0u64;
    while start.elapsed() < budget {
        for _ in 0..256 {
            work();
        }
        runs += 256;
    }
    let elapsed = start.elapsed();
    let per_second = runs as f64 / elapsed.as_secs_f64();
    println!(
        "{label:<40} {per_second:>12.0} msg/s {:>8.0} ns/msg",
        1e9 / per_second
    );
}

fn main() {
    let seconds = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let budget = Duration::from_secs_f64(seconds);
    let limits = Limits::default();
    for (name, text) in [("INVITE", INVITE), ("REGISTER", REGISTER)] {
        let bytes = Bytes::from_static(text.as_bytes());
        assert!(
            matches!(Message::parse(bytes.clone(), &limits), Ok(Message::Request(r)) if r.validate(&limits).is_ok())
        );
        println!("{name} ({} bytes)", bytes.len());
        measure("  parse (start line, field index, body)", budget, || {
            black_box(Message::parse(black_box(bytes.clone()), &limits).ok());
        });
        measure(
            "  parse + validate (Via, From, To, CSeq…)",
            budget,
            || {
                if let Ok(Message::Request(r)) = Message::parse(black_box(bytes.clone()), &limits) {
                    black_box(r.validate(&limits).is_ok());
                }
            },
        );
        let msg = Message::parse(bytes.clone(), &limits).unwrap_or_else(|e| panic!("{e}"));
        let request = msg.as_request().expect("a request");
        measure("  validate alone (already parsed)", budget, || {
            black_box(black_box(request).validate(&limits).is_ok());
        });
        measure("  canonical re-encoding", budget, || {
            black_box(canonical(black_box(&msg)));
        });
    }
}
