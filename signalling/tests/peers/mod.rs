//! Real SIP peers for the tests: a signalling server on 127.0.0.1 with one tenant in an
//! in-memory store, and sipp (Debian `sip-tester`) driving it.

#![allow(dead_code)]

pub mod phone;

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use centrex_coord::snapshot::{self as snap, DigestCredentials, TenantSnapshot};
use centrex_coord::store::MemoryStore;
use centrex_coord::testing::eventually;
use centrex_coord::{Store, keys};
use centrex_signalling::auth::authenticator::Authenticator;
use centrex_signalling::auth::digest::Algorithm;
use centrex_signalling::cdr::{CallRecord, RecordSink};
use centrex_signalling::cluster::ClusterConfig;
use centrex_signalling::cluster::handoff::HandoffService;
use centrex_signalling::directory::Directory;
use centrex_signalling::server::{Server, TcpLimits};

pub const DOMAIN: &str = "acme.example.com";

/// User `extension` of the test tenant, with password `secret-<extension>` and 2 calls at most.
pub fn user(extension: &str) -> snap::UserEntry {
    snap::UserEntry {
        extension: extension.into(),
        display_name: None,
        credentials: DigestCredentials::derive(
            extension,
            DOMAIN,
            format!("secret-{extension}").as_bytes(),
        ),
        max_calls: 2,
        caller_id: snap::CallerId::Extension,
        direct_number: None,
        mobile_number: None,
        forwarding: Default::default(),
    }
}

/// A tenant with users `100` (password `secret-100`) and `101` (`secret-101`).
pub fn tenant() -> TenantSnapshot {
    TenantSnapshot {
        schema: snap::SCHEMA_VERSION,
        source: snap::Source {
            namespace: "default".into(),
            name: "acme".into(),
            uid: "u1".into(),
            generation: 1,
        },
        domain: DOMAIN.into(),
        main_number: None,
        users: vec![user("100"), user("101")],
        hunt_groups: vec![],
        numbers: vec![],
        outbound: None,
        limits: snap::TenantLimits {
            concurrent_calls: 10,
            calls_per_second: 5,
        },
        signalling_pool: "default".into(),
        media_pool: "default".into(),
    }
}

/// Trunk `carrier` to a carrier at `carrier`, trusted from 127.0.0.2, with digest credentials
/// `acme-trunk` / `trunk-secret` in realm `carrier.example`, delivering +1555 numbers.
pub fn trunk(carrier: SocketAddr) -> snap::TrunkSnapshot {
    snap::TrunkSnapshot {
        schema: snap::SCHEMA_VERSION,
        source: snap::Source {
            namespace: "default".into(),
            name: "carrier".into(),
            uid: "t1".into(),
            generation: 1,
        },
        host: carrier.ip().to_string(),
        port: carrier.port(),
        transport: snap::Transport::Udp,
        registration: Some(snap::TrunkRegistration {
            credentials: DigestCredentials::derive(
                "acme-trunk",
                "carrier.example",
                b"trunk-secret",
            ),
            expiry_seconds: 600,
        }),
        inbound_sources: vec!["127.0.0.2/32".into()],
        number_prefixes: vec!["+1555".into()],
        max_channels: 10,
        calls_per_second: 10,
        country_code: "1".into(),
        national_prefix: "1".into(),
        international_prefix: "011".into(),
    }
}

/// A signalling server on 127.0.0.1 serving [`tenant`].
pub struct Platform {
    pub store: Arc<dyn Store>,
    /// MediaControl of the platform's one media node.
    pub media_grpc: SocketAddr,
    /// SIP over UDP.
    pub sip: SocketAddr,
    /// SIP over TCP.
    pub tcp: SocketAddr,
    pub server: Arc<Server>,
    /// Call detail records written so far.
    pub records: Arc<Records>,
    /// Stops the platform's media node when dropped.
    pub media: tokio::sync::oneshot::Sender<()>,
}

/// A call record sink that keeps what it is given, for the tests to read.
#[derive(Default)]
pub struct Records(Mutex<Vec<CallRecord>>);

impl Records {
    /// Records written so far.
    pub fn all(&self) -> Vec<CallRecord> {
        self.0.lock().unwrap().clone()
    }
}

impl RecordSink for Records {
    fn record(&self, record: &CallRecord) {
        self.0.lock().unwrap().push(record.clone());
    }
}

impl Platform {
    pub async fn start() -> Self {
        Self::start_with(TcpLimits::default()).await
    }

    /// A platform whose TCP transport has `limits`.
    pub async fn start_with(limits: TcpLimits) -> Self {
        Self::launch(limits, tenant(), vec![]).await
    }

    /// A platform serving `tenant` (in namespace `default`) and `trunks`.
    pub async fn serving(tenant: TenantSnapshot, trunks: Vec<snap::TrunkSnapshot>) -> Self {
        Self::launch(TcpLimits::default(), tenant, trunks).await
    }

    async fn launch(
        limits: TcpLimits,
        tenant: TenantSnapshot,
        trunks: Vec<snap::TrunkSnapshot>,
    ) -> Self {
        Self::on(Arc::new(MemoryStore::new()), limits, tenant, trunks).await
    }

    /// A platform serving [`tenant`] from `store` (a real etcd, say).
    pub async fn on_store(store: Arc<dyn Store>) -> Self {
        Self::on(store, TcpLimits::default(), tenant(), vec![]).await
    }

    async fn on(
        store: Arc<dyn Store>,
        limits: TcpLimits,
        tenant: TenantSnapshot,
        trunks: Vec<snap::TrunkSnapshot>,
    ) -> Self {
        let name = tenant.source.name.clone();
        store
            .put(
                &keys::tenant("default", &name),
                serde_json::to_vec(&tenant).unwrap(),
                None,
            )
            .await
            .unwrap();
        for trunk in &trunks {
            store
                .put(
                    &keys::trunk("default", &trunk.source.name),
                    serde_json::to_vec(trunk).unwrap(),
                    None,
                )
                .await
                .unwrap();
        }
        let shared = store.clone();
        let directory = serving_directory(&shared).await;
        for trunk in &trunks {
            eventually("the trunks to reach the directory", || async {
                directory.trunk("default", &trunk.source.name).map(|_| ())
            })
            .await;
        }
        let (media_grpc, media) = media_node(&shared, "media-0", "31000-31999").await;
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sip = socket.local_addr().unwrap();
        // sipp 3.6 answers only the first challenge and knows only MD5.
        let auth = Authenticator::new().with_algorithms(vec![Algorithm::Md5]);
        let records = Arc::new(Records::default());
        let server = Arc::new(Server::new(shared, directory, auth).with_records(records.clone()));
        tokio::spawn(server.clone().serve_udp(socket, std::future::pending()));
        tokio::spawn(server.clone().run_failover());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = listener.local_addr().unwrap();
        tokio::spawn(
            server
                .clone()
                .serve_tcp(listener, limits, std::future::pending()),
        );
        Self {
            store,
            media_grpc,
            sip,
            tcp,
            server,
            records,
            media,
        }
    }
}

/// A directory following `store`, once the test tenant has reached it.
async fn serving_directory(store: &Arc<dyn Store>) -> Directory {
    let directory = Directory::default();
    tokio::spawn({
        let (directory, store) = (directory.clone(), store.clone());
        async move { directory.follow(store).await }
    });
    eventually("the tenant to reach the directory", || async {
        directory.tenant(DOMAIN).map(|_| ())
    })
    .await;
    directory
}

/// One signalling instance of a cluster.
pub struct Instance {
    pub server: Arc<Server>,
    /// SIP over UDP.
    pub sip: SocketAddr,
    /// SIP over TCP.
    pub tcp: SocketAddr,
}

/// A signalling instance named `instance` serving [`tenant`] from `store` as one of a cluster
/// (lease of 1 s, its SignallingPeer gRPC service served).
pub async fn cluster_instance(
    store: &Arc<dyn Store>,
    instance: &str,
    records: Arc<Records>,
) -> Instance {
    let directory = serving_directory(store).await;
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ClusterConfig {
        lease_ttl: Duration::from_secs(1),
        peer_address: peer.local_addr().unwrap(),
        service_address: None,
    };
    let nonce_key = centrex_signalling::cluster::nonce_key::shared(store.as_ref(), "default")
        .await
        .unwrap();
    let auth = Authenticator::new()
        .with_algorithms(vec![Algorithm::Md5])
        .with_nonce_key(nonce_key);
    let server = Arc::new(
        Server::new(store.clone(), directory, auth)
            .with_records(records)
            .with_instance_id(instance)
            .with_cluster(config),
    );
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sip = socket.local_addr().unwrap();
    tokio::spawn(server.clone().serve_udp(socket, std::future::pending()));
    tokio::spawn(server.clone().run_failover());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = listener.local_addr().unwrap();
    tokio::spawn(
        server
            .clone()
            .serve_tcp(listener, TcpLimits::default(), std::future::pending()),
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HandoffService::new(server.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(peer)),
    );
    Instance { server, sip, tcp }
}

/// Starts media node `id` of pool `default/default` on 127.0.0.1 with RTP `ports` ("min-max"),
/// registered under a 1 s lease; returns its gRPC address and what stops it (a SIGTERM: it
/// drains for at most 200 ms, then leaves with whatever sessions it still has).
pub async fn media_node(
    store: &Arc<dyn Store>,
    id: &str,
    ports: &str,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let mut config = centrex_media_node::Config::new(id, "default", "127.0.0.1".parse().unwrap());
    config.namespace = "default".into();
    config.bind = "127.0.0.1".parse().unwrap();
    config.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.rtp_ports = ports.parse().unwrap();
    config.registration_ttl = Duration::from_secs(1);
    config.registration_refresh = Duration::from_millis(300);
    config.drain_timeout = Duration::from_millis(200);
    let node = centrex_media_node::MediaNode::start(config, store.clone())
        .await
        .unwrap();
    let grpc = node.grpc_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = node
            .run(async move {
                let _ = stopped.await;
            })
            .await;
    });
    let key = keys::media_node("default", "default", id);
    eventually("the media node to register", || async {
        store.get(&key).await.unwrap().map(|_| ())
    })
    .await;
    (grpc, stop)
}

/// Runs sipp bound to 127.0.0.1:`port` with `args`; blocking (use `spawn_blocking`).
pub fn sipp_at(target: SocketAddr, port: u16, dir: &Path, args: &[&str]) -> Output {
    sipp_on("127.0.0.1", target, port, dir, args)
}

/// Runs sipp bound to `ip`:`port` (any 127.0.0.0/8 address: a carrier apart from the phones).
pub fn sipp_on(ip: &str, target: SocketAddr, port: u16, dir: &Path, args: &[&str]) -> Output {
    let output = Command::new("sipp")
        .arg(target.to_string())
        .args([
            "-i",
            ip,
            "-p",
            &port.to_string(),
            "-m",
            "1",
            "-t",
            "u1",
            "-nostdin",
            "-buff_size",
            "4194304",
        ])
        .args(["-timeout", "20s", "-timeout_error"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("sipp is installed (apt-get install sip-tester)");
    if !output.status.success() {
        eprintln!(
            "sipp {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    StdUdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A base port for sipp's media, a multiple of 4 with it and the next three free: sipp binds
/// audio RTP/RTCP at the base and video at base + 2, so two sipps must not get adjacent ports.
pub fn free_media_port() -> u16 {
    for _ in 0..100 {
        let base = free_udp_port() & !3;
        let free = (base..base + 4).all(|port| StdUdpSocket::bind(("127.0.0.1", port)).is_ok());
        if base >= 1024 && free {
            return base;
        }
    }
    panic!("no four consecutive free UDP ports on 127.0.0.1");
}

/// Runs sipp with `scenario` (XML text) against `target`, bound to 127.0.0.1; blocking, so call
/// it from `spawn_blocking`. Fails the test with a clear message when sipp is not installed.
pub fn sipp(target: SocketAddr, scenario: &str, extra: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scenario.xml");
    std::fs::write(&file, scenario).unwrap();
    let port = free_udp_port().to_string();
    let mut command = Command::new("sipp");
    command
        .arg(target.to_string())
        .args([
            "-sf",
            file.to_str().unwrap(),
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "-m",
            "1",
            "-t",
            "u1",
        ])
        .args([
            "-timeout",
            "15s",
            "-timeout_error",
            "-nostdin",
            "-buff_size",
            "4194304",
            "-trace_err",
        ])
        .args([
            "-error_file",
            dir.path().join("errors.log").to_str().unwrap(),
        ])
        .args(if extra.contains(&"-t") {
            &[][..]
        } else {
            &["-t", "u1"][..]
        })
        .args(extra)
        .current_dir(dir.path());
    match command.output() {
        Ok(output) => {
            if !output.status.success() {
                let errors =
                    std::fs::read_to_string(dir.path().join("errors.log")).unwrap_or_default();
                eprintln!(
                    "sipp failed:\n{}\n{}",
                    String::from_utf8_lossy(&output.stdout),
                    errors
                );
            }
            output
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!(
                "sipp is not installed: `apt-get install sip-tester` (scripts/install-deps.sh does it)"
            )
        }
        Err(e) => panic!("cannot run sipp: {e}"),
    }
}

/// A REGISTER scenario for `user` that answers the challenge and expects `final_status`.
pub fn register_scenario(user: &str, final_status: u16) -> String {
    let register = |cseq: u32, auth: &str| {
        format!(
            r#"REGISTER sip:{DOMAIN} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:{user}@{DOMAIN}>;tag=[pid]SIPpTag[call_number]
      To: <sip:{user}@{DOMAIN}>
      Call-ID: [call_id]
      CSeq: {cseq} REGISTER
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: 3600
{auth}      Content-Length: 0
"#
        )
    };
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register {user}">
  <send retrans="500"><![CDATA[
      {first}
  ]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[
      {second}
  ]]></send>
  <recv response="{final_status}"/>
</scenario>
"#,
        first = register(1, ""),
        second = register(2, "      [authentication]\n"),
    )
}

/// The sipp options giving the digest credentials of `user` with `password`.
pub fn credentials<'a>(user: &'a str, password: &'a str) -> [&'a str; 4] {
    ["-au", user, "-ap", password]
}

/// Path of a scenario file shipped with the tests.
pub fn scenario_path(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(name)
}

/// An INVITE from `user` to `target` with credentials answering `nonce` (none: no Authorization).
pub fn invite(user: &str, password: &str, target: &str, nonce: Option<&str>, cseq: u32) -> String {
    let uri = format!("sip:{target}@{DOMAIN}");
    let auth = nonce
        .map(|nonce| authorization(user, password, "INVITE", &uri, nonce, cseq))
        .unwrap_or_default();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    format!(
        "INVITE sip:{target}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5998;branch=z9hG4bKinv{cseq}\r\n\
         From: <sip:{user}@{DOMAIN}>;tag=a\r\nTo: <sip:{target}@{DOMAIN}>\r\nCall-ID: {target}-{cseq}@test\r\nCSeq: {cseq} INVITE\r\n\
         Contact: <sip:{user}@127.0.0.1:5998>\r\nMax-Forwards: 70\r\n{auth}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// The first answer to `request` (sent from a fresh socket), provisional ones skipped.
pub async fn answer_to(platform: &Platform, request: &str) -> String {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(request.as_bytes(), platform.sip)
        .await
        .unwrap();
    let mut buffer = vec![0u8; 65_536];
    loop {
        let len = tokio::time::timeout(std::time::Duration::from_secs(5), socket.recv(&mut buffer))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        let text = String::from_utf8_lossy(&buffer[..len]).into_owned();
        if !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
}

/// The value of header `name` in `message`.
pub fn header<'m>(message: &'m str, name: &str) -> &'m str {
    message
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in {message}"))
}

/// A response to `request` with `status`, as the phone that received it.
pub fn respond(request: &str, status: &str, to_tag: &str, body: &str) -> String {
    let mut response = format!("SIP/2.0 {status}\r\n");
    for line in request.lines().filter(|l| l.starts_with("Via:")) {
        response.push_str(line);
        response.push_str("\r\n");
    }
    let to = header(request, "To");
    let to = if to.contains(";tag=") {
        to.to_string()
    } else {
        format!("{to};tag={to_tag}")
    };
    for (name, value) in [
        ("From", header(request, "From")),
        ("To", &to),
        ("Call-ID", header(request, "Call-ID")),
        ("CSeq", header(request, "CSeq")),
    ] {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    if body.is_empty() {
        response.push_str("Content-Length: 0\r\n\r\n");
    } else {
        response.push_str(&format!(
            "Contact: <sip:101@127.0.0.1>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    response
}

/// An MD5 `Authorization` header line (qop=auth, nonce count `nc`) for `method` of `uri`.
pub fn authorization(
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: u32,
) -> String {
    use centrex_signalling::auth::digest::Algorithm;
    let ha1 = Algorithm::Md5.hash(&[user.as_bytes(), DOMAIN.as_bytes(), password.as_bytes()]);
    let ha2 = Algorithm::Md5.hash(&[method.as_bytes(), uri.as_bytes()]);
    let nc = format!("{nc:08x}");
    let response = Algorithm::Md5.hash(&[
        ha1.as_bytes(),
        nonce.as_bytes(),
        nc.as_bytes(),
        b"c",
        b"auth",
        ha2.as_bytes(),
    ]);
    format!(
        "Authorization: Digest username=\"{user}\", realm=\"{DOMAIN}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"c\"\r\n"
    )
}

/// The nonce of the (first) challenge in a 401 or 407.
pub fn nonce_of(challenge: &str) -> String {
    challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no nonce in {challenge}"))
        .to_string()
}

/// sipp as user 100 (password `secret-100`) calling 101 with `scenario` (a file in `dir`) from
/// a free port, its media on 127.0.0.1; `extra` adds options (`-t t1` for TCP). Blocking.
pub fn call_as_100(target: SocketAddr, dir: &Path, scenario: &str, extra: &[&str]) -> Output {
    call_from_100(target, dir, scenario, "101", extra)
}

/// [`call_as_100`] dialling `dialled` (an extension or a number).
pub fn call_from_100(
    target: SocketAddr,
    dir: &Path,
    scenario: &str,
    dialled: &str,
    extra: &[&str],
) -> Output {
    let media_port = free_media_port().to_string();
    let mut args = vec![
        "-sf",
        scenario,
        "-s",
        dialled,
        "-au",
        "100",
        "-ap",
        "secret-100",
        "-set",
        "domain",
        DOMAIN,
        "-set",
        "user",
        "100",
        "-mi",
        "127.0.0.1",
        "-mp",
        &media_port,
        // How long the call is held (the scenario's pause).
        "-d",
        "1500",
    ];
    args.extend_from_slice(extra);
    sipp_at(target, free_udp_port(), dir, &args)
}

/// Reads the next SIP message from `stream` (framed by Content-Length), keep-alives skipped.
pub async fn next_message(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut bytes::BytesMut,
) -> String {
    use centrex_signalling::sip::{Frame, Limits, frame_length};
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match frame_length(buffer, &Limits::default()).unwrap() {
            Frame::Complete(length) => {
                let message = buffer.split_to(length);
                return String::from_utf8_lossy(&message).into_owned();
            }
            Frame::KeepAlive(length) => {
                let _ = buffer.split_to(length);
            }
            Frame::Incomplete => {
                let read = tokio::time::timeout_at(
                    deadline,
                    tokio::io::AsyncReadExt::read_buf(stream, buffer),
                )
                .await
                .expect("a message in time")
                .unwrap();
                assert!(read > 0, "the platform closed the connection");
            }
        }
    }
}

/// A REGISTER of 101 over `stream`'s connection, answering `nonce` when given.
pub fn register_over(stream: &tokio::net::TcpStream, nonce: Option<&str>, cseq: u32) -> String {
    let local = stream.local_addr().unwrap();
    let uri = format!("sip:{DOMAIN}");
    let auth = nonce
        .map(|nonce| authorization("101", "secret-101", "REGISTER", &uri, nonce, cseq))
        .unwrap_or_default();
    format!(
        "REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKreg{cseq}\r\n\
         From: <sip:101@{DOMAIN}>;tag=r\r\nTo: <sip:101@{DOMAIN}>\r\nCall-ID: reg-101@test\r\nCSeq: {cseq} REGISTER\r\n\
         Contact: <sip:101@{local};transport=tcp>\r\nExpires: 600\r\nMax-Forwards: 70\r\n{auth}Content-Length: 0\r\n\r\n"
    )
}
