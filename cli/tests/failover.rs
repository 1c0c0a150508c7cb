//! Two `centrex signalling` instances share a real etcd and one service address (bound by both
//! with SO_REUSEPORT, so the kernel spreads phones over them as a Kubernetes Service spreads them
//! over pods). The instance that set a call up is killed with SIGKILL mid-call: the survivor
//! takes the call over, so the caller's BYE is answered and passed on to the callee, the call is
//! recorded, and its counters and dialog record are released. The audio never stops: it flows
//! through the media node, not through signalling.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use centrex_coord::testing::{Etcd, eventually, free_ports};
use centrex_coord::{Store, keys};
use centrex_operator::manifests::Manifests;
use support::{Running, free_udp_port, register};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart");
const DOMAIN: &str = "acme.example.com";

/// One signalling instance of the pool, named `name`, sharing `service`.
struct Instance {
    name: &'static str,
    process: Running,
    http: SocketAddr,
    records: PathBuf,
}

fn signalling(name: &'static str, etcd: &Etcd, service: SocketAddr, dir: &Path) -> Instance {
    let [sip_port, http_port] = free_ports();
    let [peer_port, _] = free_ports();
    let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let records = dir.join(format!("{name}.jsonl"));
    let process = Command::new(env!("CARGO_BIN_EXE_centrex"))
        .args(["signalling", "--pool=default", "--bind=127.0.0.1"])
        .args(["--advertise=127.0.0.1", "--log-json=false"])
        // sipp 3.6 answers only MD5 challenges.
        .args([
            "--digest-algorithms=MD5",
            "--lease-ttl=2s",
            "--listen-service",
        ])
        .arg(format!("--udp-port={sip_port}"))
        .arg(format!("--tcp-port={sip_port}"))
        .arg(format!("--http-addr={http}"))
        .arg(format!("--peer-addr=127.0.0.1:{peer_port}"))
        .arg(format!("--service-address={service}"))
        .arg(format!("--cdr-file={}", records.display()))
        .arg(format!("--etcd-endpoints={}", etcd.endpoint()))
        .env("POD_NAME", name)
        .stdin(Stdio::null())
        .spawn()
        .expect("start centrex signalling");
    Instance {
        name,
        process: Running(process),
        http,
        records,
    }
}

fn media_node(etcd: &Etcd) -> (Running, SocketAddr) {
    let [grpc_port, http_port] = free_ports();
    let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let process = Command::new(env!("CARGO_BIN_EXE_centrex"))
        .args(["media-node", "--pool=default", "--namespace=default"])
        .args([
            "--node-id=default-media-0",
            "--bind=127.0.0.1",
            "--advertise=127.0.0.1",
        ])
        .args(["--rtp-ports=46000-46199", "--workers=1"])
        .arg(format!("--grpc-addr=127.0.0.1:{grpc_port}"))
        .arg(format!("--http-addr={http}"))
        .arg(format!("--etcd-endpoints={}", etcd.endpoint()))
        .stdin(Stdio::null())
        .spawn()
        .expect("start centrex media-node");
    (Running(process), http)
}

async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// Packets the media node has relayed so far.
async fn packets_relayed(http: SocketAddr) -> u64 {
    let (_, metrics) = http_get(http, "/metrics")
        .await
        .expect("media node metrics");
    metrics
        .lines()
        .filter(|line| line.starts_with("centrex_media_packets_received_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_outlives_the_instance_that_set_it_up() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start().await;
    let store = etcd.store().await;
    let manifests = Manifests::load(Path::new(EXAMPLES)).unwrap();
    centrex_operator::local::publish_all(&manifests, &store)
        .await
        .unwrap();
    let (_media, media_http) = media_node(&etcd);
    eventually("the media node to register", || async {
        let (nodes, _) = store
            .list(&keys::media_nodes("default", "default"))
            .await
            .ok()?;
        (!nodes.is_empty()).then_some(())
    })
    .await;
    let service: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let mut instances = [
        signalling("signalling-a", &etcd, service, dir.path()),
        signalling("signalling-b", &etcd, service, dir.path()),
    ];
    for instance in &instances {
        eventually("both instances to be ready", || async {
            let (status, _) = http_get(instance.http, "/readyz").await?;
            (status == 200).then_some(())
        })
        .await;
    }

    // Bob registers and answers with sipp, echoing RTP; Alice calls him and holds the call 8 s,
    // sending audio all along. Both only know the service address.
    let bob_port = free_udp_port();
    let path = dir.path().to_path_buf();
    let registering = path.clone();
    tokio::task::spawn_blocking(move || {
        register(
            service.port(),
            bob_port,
            "101",
            "bob-secret-101",
            &registering,
        )
    })
    .await
    .unwrap();
    let scenario = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../signalling/tests/scenarios/uac_call.xml"
    );
    std::fs::copy(scenario, path.join("uac_call.xml")).unwrap();
    // Ten seconds of PCMU silence: 500 RTP packets, longer than the call.
    std::fs::write(path.join("audio.raw"), [0xffu8; 80_000]).unwrap();
    let sipp = |args: &[&str]| {
        Command::new("sipp")
            .arg(service.to_string())
            .args(["-i", "127.0.0.1", "-mi", "127.0.0.1", "-m", "1", "-nostdin"])
            .args(["-timeout", "30s", "-timeout_error", "-buff_size", "4194304"])
            .args(args)
            .current_dir(&path)
            .stdout(Stdio::null())
            .spawn()
            .expect("sipp is installed")
    };
    let [bob_media, _] = free_ports();
    let [alice_port, alice_media] = free_ports();
    let bob = sipp(&[
        "-sn",
        "uas",
        "-p",
        &bob_port.to_string(),
        "-mp",
        &bob_media.to_string(),
        "-rtp_echo",
    ]);
    let alice = sipp(&[
        "-sf",
        "uac_call.xml",
        "-d",
        "8000",
        "-s",
        "101",
        "-au",
        "100",
        "-ap",
        "alice-secret-100",
        "-set",
        "domain",
        DOMAIN,
        "-set",
        "user",
        "100",
        "-p",
        &alice_port.to_string(),
        "-mp",
        &alice_media.to_string(),
    ]);

    // The call is answered: its dialog record names the instance that holds it.
    let owner = eventually("the answered call's dialog record", || async {
        let (records, _) = store.list(&keys::dialogs()).await.ok()?;
        let record: serde_json::Value = serde_json::from_slice(&records.first()?.value).ok()?;
        Some(record["owner"].as_str()?.to_string())
    })
    .await;
    let (killed, survivor) = if owner == instances[0].name {
        (0, 1)
    } else {
        (1, 0)
    };
    let _ = instances[killed].process.0.kill();
    let _ = instances[killed].process.0.wait();
    let relayed_at_kill = packets_relayed(media_http).await;

    // Once the dead instance's lease expires, the survivor claims its call.
    let survivor_name = instances[survivor].name;
    eventually("the survivor to take the call over", || async {
        let (records, _) = store.list(&keys::dialogs()).await.ok()?;
        records
            .iter()
            .all(|kv| {
                serde_json::from_slice::<serde_json::Value>(&kv.value)
                    .is_ok_and(|r| r["owner"] == survivor_name)
            })
            .then_some(())
    })
    .await;

    let (alice, bob) = tokio::task::spawn_blocking(move || {
        let mut bob = bob;
        (alice.wait_with_output().unwrap(), bob.wait().unwrap())
    })
    .await
    .unwrap();
    assert!(
        alice.status.success(),
        "Alice's BYE after the failover was not answered"
    );
    assert!(bob.success(), "Bob did not get the BYE after the failover");
    let relayed_after = packets_relayed(media_http).await;
    assert!(
        relayed_after > relayed_at_kill + 100,
        "audio stopped with signalling: {relayed_at_kill} packets relayed at the kill, {relayed_after} at the end"
    );

    // The survivor completes what the dead instance started.
    let records = instances[survivor].records.clone();
    let record: serde_json::Value = eventually("the survivor's call record", || async {
        let text = std::fs::read_to_string(&records).ok()?;
        serde_json::from_str(text.lines().next()?).ok()
    })
    .await;
    assert_eq!(record["from"], "100");
    assert_eq!(record["to"], "101");
    assert_eq!(record["result"], "answered");
    assert_eq!(record["answered_by"], "101");
    eventually(
        "the call's counters and dialog record to be released",
        || async {
            let (slots, _) = store.list(&keys::all_calls()).await.ok()?;
            let (dialogs, _) = store.list(&keys::dialogs()).await.ok()?;
            (slots.is_empty() && dialogs.is_empty()).then_some(())
        },
    )
    .await;
}
