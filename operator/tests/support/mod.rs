//! A running operator against an in-memory Kubernetes API and an in-memory store.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use centrex_coord::store::MemoryStore;
use centrex_operator::config::OperatorConfig;
use centrex_operator::context::Context;
use centrex_operator::manifests::Manifests;
use centrex_operator::metrics::Metrics;
use k8s_openapi::ByteString;
use kube::Api;
use kube::api::PostParams;
use kube_fake::FakeApiServer;
use tokio::sync::watch;

/// Configuration of the operator under test.
pub fn config(identity: &str) -> OperatorConfig {
    OperatorConfig {
        image: "centrex:test".into(),
        etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        namespace: "default".into(),
        identity: identity.into(),
        lease_name: "centrex-operator".into(),
        lease_duration: Duration::from_secs(2),
        census_period: Duration::from_millis(200),
    }
}

/// The operator's controllers running until the harness is dropped.
pub struct Harness {
    pub fake: FakeApiServer,
    pub store: MemoryStore,
    pub ctx: Arc<Context>,
    stop: watch::Sender<bool>,
}

impl Harness {
    /// Starts the controllers (no leader election) against a fresh fake API server.
    pub async fn start() -> Self {
        Self::start_on(FakeApiServer::new(), MemoryStore::new()).await
    }

    /// Starts the controllers against `fake` and `store` as they are: what an operator that
    /// starts leading finds.
    pub async fn start_on(fake: FakeApiServer, store: MemoryStore) -> Self {
        let ctx = Arc::new(Context::new(
            fake.client(),
            Arc::new(store.clone()),
            config("test"),
            Arc::new(Metrics::default()),
        ));
        let (stop, mut stopped) = watch::channel(false);
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        tokio::spawn(centrex_operator::run::controllers(ctx.clone(), shutdown));
        Self {
            fake,
            store,
            ctx,
            stop,
        }
    }

    /// Creates every object of the quickstart examples, as `kubectl apply -f examples/quickstart` would.
    pub async fn apply_examples(&self) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
        let manifests = Manifests::load(&dir).unwrap();
        let client = self.fake.client();
        let params = PostParams::default();
        for mut secret in manifests.secrets {
            // The API server turns stringData into data.
            let string_data = secret.string_data.take().unwrap_or_default();
            let data = secret.data.get_or_insert_default();
            data.extend(
                string_data
                    .into_iter()
                    .map(|(k, v)| (k, ByteString(v.into_bytes()))),
            );
            Api::default_namespaced(client.clone())
                .create(&params, &secret)
                .await
                .unwrap();
        }
        for pool in manifests.signalling_pools {
            Api::default_namespaced(client.clone())
                .create(&params, &pool)
                .await
                .unwrap();
        }
        for pool in manifests.media_pools {
            Api::default_namespaced(client.clone())
                .create(&params, &pool)
                .await
                .unwrap();
        }
        for trunk in manifests.trunks {
            Api::default_namespaced(client.clone())
                .create(&params, &trunk)
                .await
                .unwrap();
        }
        for tenant in manifests.tenants {
            Api::default_namespaced(client.clone())
                .create(&params, &tenant)
                .await
                .unwrap();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub use centrex_coord::testing::eventually;
