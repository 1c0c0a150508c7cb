//! An in-memory Kubernetes API server for operator tests.
//!
//! [`FakeApiServer::service`] is a `tower::Service` to hand to [`kube::Client::new`], so
//! `Api`, watchers, reflectors, `Controller` and server-side apply run unmodified against it:
//!
//! ```
//! # async fn demo() -> Result<(), kube::Error> {
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, PostParams};
//!
//! let fake = kube_fake::FakeApiServer::new();
//! let client = kube::Client::new(fake.service(), "default");
//! let cms: Api<ConfigMap> = Api::default_namespaced(client);
//! let mut cm = ConfigMap::default();
//! cm.metadata.name = Some("a".into());
//! cms.create(&PostParams::default(), &cm).await?;
//! assert!(fake.get::<ConfigMap>("default", "a").is_some());
//! # Ok(())
//! # }
//! ```
//!
//! The README lists which API semantics are implemented exactly and which are approximated.

mod error;
mod merge;
mod path;
mod selector;
mod service;
mod store;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use http::Method;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;

use path::Gvr;
pub use service::{FakeService, ResponseBody};

use service::{Shared, lock};
use store::Store;

/// Default number of changes kept for watch replay.
const DEFAULT_HISTORY: usize = 1024;

/// A request the fake received, as recorded for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: Method,
    /// URL path, e.g. `/apis/apps/v1/namespaces/default/deployments/web/status`.
    pub path: String,
    /// Raw (still percent-encoded) query string, `""` when absent.
    pub query: String,
    /// `Content-Type` header, e.g. `application/apply-patch+yaml`.
    pub content_type: Option<String>,
}

impl RecordedRequest {
    /// The decoded value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    /// Whether this was a watch (`?watch=true`).
    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch").as_deref(), Some("true" | "1"))
    }
}

/// A queued failure: the next request matching `method` and `path` gets `code`.
#[derive(Clone, Debug)]
pub(crate) struct Fault {
    pub method: Method,
    pub path: String,
    pub code: u16,
}

/// Configures a [`FakeApiServer`].
#[derive(Clone, Debug)]
pub struct Builder {
    history_limit: usize,
    plain_status: HashSet<(String, String)>,
}

impl Builder {
    /// Keeps the last `limit` changes for watch replay (default 1024); older resourceVersions get 410.
    pub fn history_limit(mut self, limit: usize) -> Self {
        self.history_limit = limit;
        self
    }

    /// Makes `.status` of `group`/`plural` writable through the main resource, like a CRD
    /// declared without the status subresource (by default every resource has one).
    pub fn without_status_subresource(mut self, group: &str, plural: &str) -> Self {
        self.plain_status.insert((group.into(), plural.into()));
        self
    }

    /// Builds the server.
    pub fn build(self) -> FakeApiServer {
        let shared = Shared {
            store: Mutex::new(Store::new(self.history_limit, self.plain_status)),
            requests: Mutex::default(),
            faults: Mutex::default(),
            disconnect: watch::channel(0).0,
        };
        FakeApiServer {
            shared: Arc::new(shared),
        }
    }
}

/// An in-memory API server; clones share the same state.
#[derive(Clone)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("resource_version", &self.resource_version())
            .finish_non_exhaustive()
    }
}

impl Default for FakeApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeApiServer {
    /// A server with default settings.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder for non-default settings.
    pub fn builder() -> Builder {
        Builder {
            history_limit: DEFAULT_HISTORY,
            plain_status: HashSet::new(),
        }
    }

    /// The `tower::Service` for `kube::Client::new(fake.service(), "default")`.
    pub fn service(&self) -> FakeService {
        FakeService {
            shared: self.shared.clone(),
        }
    }

    /// A client over [`Self::service`] with default namespace `default` (needs a tokio runtime).
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.service(), "default")
    }

    /// Serves this API over HTTP on `listener` (plain HTTP, no authentication), for a real
    /// operator process pointed at it with a kubeconfig; runs until the task is dropped.
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        let app = axum::Router::new().fallback_service(self.service());
        axum::serve(listener, app).await
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).resource_version()
    }

    /// Every stored object of `group`/`plural` (any version, all namespaces), by namespace and name.
    pub fn objects(&self, group: &str, plural: &str) -> Vec<Value> {
        lock(&self.shared.store).objects(group, plural)
    }

    /// One stored object; `namespace` is `""` for cluster-scoped objects.
    pub fn object(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.shared.store).object(group, plural, namespace, name)
    }

    /// One stored object as `K`; `namespace` is `""` for cluster-scoped objects.
    pub fn get<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        let object = self.object(&K::group(&()), &K::plural(&()), namespace, name)?;
        Some(serde_json::from_value(object).expect("stored object deserialises as K"))
    }

    /// Every stored `K`, all namespaces.
    pub fn list<K>(&self) -> Vec<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned,
    {
        self.objects(&K::group(&()), &K::plural(&()))
            .into_iter()
            .map(|object| serde_json::from_value(object).expect("stored object deserialises as K"))
            .collect()
    }

    /// Creates `object` directly (no request is recorded), as a POST would; panics on API errors.
    /// The namespace comes from `object.metadata.namespace`; none means cluster-scoped.
    pub fn seed<K>(&self, object: &K) -> K
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let mut value = serde_json::to_value(object).expect("K serialises");
        // Typed objects may skip their type fields; the apiserver always has them.
        value["apiVersion"] = K::api_version(&()).into();
        value["kind"] = K::kind(&()).into();
        let target = path::Target {
            gvr: Gvr::new(&K::group(&()), &K::version(&()), &K::plural(&())),
            namespace: object.meta().namespace.clone(),
            name: None,
            subresource: None,
        };
        let created = lock(&self.shared.store).create(&target, value, false);
        let created = created.unwrap_or_else(|e| panic!("seeding {}: {}", target.gvr, e.message));
        serde_json::from_value(created).expect("created object deserialises as K")
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Makes the next `method` request to exactly `path` (no query) fail with HTTP `code` and
    /// the matching `Status` reason (409 Conflict, 500 InternalError, ...). Calls queue up.
    pub fn fail_next(&self, method: Method, path: impl Into<String>, code: u16) {
        lock(&self.shared.faults).push(Fault {
            method,
            path: path.into(),
            code,
        });
    }

    /// Drops the change history, like etcd compaction: watches resuming from an older
    /// resourceVersion get a 410 Expired ERROR event (and kube's watcher re-lists).
    pub fn compact(&self) {
        lock(&self.shared.store).compact();
    }

    /// Ends every open watch stream, like an apiserver restart; clients resume from their last version.
    pub fn disconnect_watches(&self) {
        self.shared.disconnect.send_modify(|epoch| *epoch += 1);
    }
}
