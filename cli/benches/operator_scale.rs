//! Operator at scale: 1,000 Tenants of 50 users each applied at once against the in-memory
//! Kubernetes API (served over HTTP), with the real `centrex operator` process and a real etcd.
//! Prints the time until every Tenant is Ready and the operator's peak RSS beside the targets.
//!
//! `cargo bench -p centrex --bench operator_scale` (bounded: gives up after 180 s).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use centrex_coord::testing::{Etcd, free_ports};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube_fake::FakeApiServer;

const TENANTS: usize = 1_000;
const USERS: usize = 50;
const GIVE_UP: Duration = Duration::from_secs(180);
const TARGET_SECONDS: f64 = 30.0;
const TARGET_RSS_MIB: f64 = 256.0;

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let etcd = Etcd::start().await;
    let fake = FakeApiServer::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = listener.local_addr().unwrap();
    let server = fake.clone();
    tokio::spawn(async move { server.serve(listener).await });

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: 'http://{api_addr}'}}}}]\n\
         users: [{{name: bench, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: bench, namespace: default}}}}]\n\
         current-context: fake\n"
    )).unwrap();
    let [metrics_port, _] = free_ports();
    let mut operator = Command::new(env!("CARGO_BIN_EXE_centrex"))
        .args([
            "operator",
            "--image=centrex:bench",
            "--identity=bench",
            "--log-json=false",
        ])
        .arg(format!("--etcd-endpoints={}", etcd.endpoint()))
        .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("start the operator");
    let pid = operator.id();

    let client = fake.client();
    let quickstart = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/quickstart/pools.yaml"
    );
    let manifests =
        centrex_operator::manifests::Manifests::load(std::path::Path::new(quickstart)).unwrap();
    let params = PostParams::default();
    Api::default_namespaced(client.clone())
        .create(&params, &manifests.signalling_pools[0])
        .await
        .unwrap();
    Api::default_namespaced(client.clone())
        .create(&params, &manifests.media_pools[0])
        .await
        .unwrap();

    let started = Instant::now();
    stream::iter(0..TENANTS)
        .map(|i| {
            let client = client.clone();
            async move {
                let secrets: Api<Secret> = Api::default_namespaced(client.clone());
                secrets.create(&PostParams::default(), &secret(i)).await?;
                let tenants: Api<centrex_operator::crd::Tenant> = Api::default_namespaced(client);
                tenants
                    .create(&PostParams::default(), &tenant(i))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await
        .expect("create tenants");
    let applied = started.elapsed();

    let mut peak_rss = 0.0f64;
    let ready_after = loop {
        peak_rss = peak_rss.max(rss_mib(pid, "VmHWM:"));
        let ready = fake
            .list::<centrex_operator::crd::Tenant>()
            .iter()
            .filter(|t| {
                t.status.as_ref().is_some_and(|s| {
                    s.observed_generation == t.metadata.generation
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        if ready == TENANTS {
            break Some(started.elapsed());
        }
        if started.elapsed() > GIVE_UP {
            eprintln!("gave up: {ready}/{TENANTS} Ready after {GIVE_UP:?}");
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    peak_rss = peak_rss.max(rss_mib(pid, "VmHWM:"));
    let _ = operator.kill();
    let _ = operator.wait();

    println!(
        "operator scale: {TENANTS} Tenants × {USERS} users, applied at once (all created in {:.1} s)",
        applied.as_secs_f64()
    );
    println!("{:<34} {:>12} {:>12}", "", "measured", "target");
    match ready_after {
        Some(t) => println!(
            "{:<34} {:>10.1} s {:>10.0} s",
            "time until every Tenant Ready",
            t.as_secs_f64(),
            TARGET_SECONDS
        ),
        None => println!(
            "{:<34} {:>12} {:>10.0} s",
            "time until every Tenant Ready", "not reached", TARGET_SECONDS
        ),
    }
    println!(
        "{:<34} {:>8.1} MiB {:>8.0} MiB",
        "operator peak RSS", peak_rss, TARGET_RSS_MIB
    );
}

fn secret(i: usize) -> Secret {
    let data: BTreeMap<String, ByteString> = (0..USERS)
        .map(|u| {
            (
                format!("u{u}"),
                ByteString(format!("password-{i}-{u}").into_bytes()),
            )
        })
        .collect();
    Secret {
        metadata: meta(&format!("t{i}-passwords")),
        data: Some(data),
        ..Default::default()
    }
}

fn tenant(i: usize) -> centrex_operator::crd::Tenant {
    let users: Vec<serde_json::Value> = (0..USERS)
        .map(|u| {
            serde_json::json!({
                "extension": format!("{}", 100 + u),
                "passwordSecretRef": {"name": format!("t{i}-passwords"), "key": format!("u{u}")},
                "maxCalls": 2, "callerId": "extension",
            })
        })
        .collect();
    let spec = serde_json::json!({
        "domain": format!("t{i}.example.com"),
        "users": users,
        "huntGroups": [{"extension": "900", "members": ["100", "101"], "strategy": "simultaneous", "ringSeconds": 20}],
        "numbers": [], "limits": {"concurrentCalls": 10, "callsPerSecond": 5},
        "signallingPoolRef": "default", "mediaPoolRef": "default",
    });
    centrex_operator::crd::Tenant {
        metadata: meta(&format!("t{i}")),
        spec: serde_json::from_value(spec).unwrap(),
        status: None,
    }
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("default".into()),
        ..Default::default()
    }
}

/// A memory figure of process `pid` from /proc (VmRSS: now, VmHWM: peak), in MiB.
fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
