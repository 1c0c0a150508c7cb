//! The HTTP side: turns requests into store operations and results into responses.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use http::{Method, Request, Response, header};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::path::{Gvr, Target, parse_path};
use crate::selector::{FieldSelector, Filter, LabelSelector};
use crate::store::{Change, ChangeType, Deletion, PatchKind, Store};
use crate::{Fault, RecordedRequest};

/// Response body of the fake: a complete JSON document, or a stream of watch events.
pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// State shared by the server handle and its services.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub requests: Mutex<Vec<RecordedRequest>>,
    pub faults: Mutex<Vec<Fault>>,
    /// Bumped to end every open watch stream.
    pub disconnect: watch::Sender<u64>,
}

/// Locks ignoring poisoning: a panicking test thread must not cascade into every other request.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `tower::Service` to hand to `kube::Client::new`.
#[derive(Clone)]
pub struct FakeService {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for FakeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeService").finish_non_exhaustive()
    }
}

impl<B> tower::Service<Request<B>> for FakeService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(handle(&shared, request).await) })
    }
}

/// A parsed request, everything the router needs.
struct ApiRequest {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    content_type: String,
    body: Bytes,
    /// `Accept: ...;as=PartialObjectMetadata` (kube's metadata_watcher / get_metadata).
    metadata_only: bool,
}

impl ApiRequest {
    fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.param(key), Some("true" | "1"))
    }

    fn json_body(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

enum Reply {
    Json(u16, Value),
    Stream(BoxStream<'static, Bytes>),
}

async fn handle<B>(shared: &Arc<Shared>, request: Request<B>) -> Response<ResponseBody>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let (parts, body) = request.into_parts();
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let recorded = RecordedRequest {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        content_type: Some(header(header::CONTENT_TYPE).to_owned()).filter(|c| !c.is_empty()),
    };
    lock(&shared.requests).push(recorded.clone());
    let fault = {
        let mut faults = lock(&shared.faults);
        let position = faults
            .iter()
            .position(|f| f.method == recorded.method && f.path == recorded.path);
        position.map(|i| faults.remove(i))
    };
    if let Some(fault) = fault {
        return json_response(fault.code, &ApiError::injected(fault.code).to_status());
    }
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return json_response(
                400,
                &ApiError::bad_request(format!("reading body: {e}")).to_status(),
            );
        }
    };
    let request = ApiRequest {
        metadata_only: header(header::ACCEPT).contains("as=PartialObjectMetadata"),
        content_type: header(header::CONTENT_TYPE).to_owned(),
        query: form_urlencoded::parse(recorded.query.as_bytes())
            .into_owned()
            .collect(),
        method: recorded.method,
        path: recorded.path,
        body,
    };
    match route(shared, &request) {
        Ok(Reply::Json(code, value)) => json_response(code, &value),
        Ok(Reply::Stream(events)) => {
            let body = StreamBody::new(events.map(|line| Ok::<_, Infallible>(Frame::data(line))));
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.boxed_unsync())
                .expect("static response parts are valid")
        }
        Err(error) => json_response(error.code, &error.to_status()),
    }
}

fn json_response(code: u16, value: &Value) -> Response<ResponseBody> {
    let body = Full::new(Bytes::from(value.to_string())).boxed_unsync();
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("status codes come from ApiError or the router and are valid")
}

fn route(shared: &Shared, request: &ApiRequest) -> Result<Reply, ApiError> {
    if request.path == "/version" {
        return Ok(Reply::Json(200, version_info()));
    }
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    let target = parse_path(&request.path).ok_or_else(not_found)?;
    if target
        .subresource
        .as_deref()
        .is_some_and(|s| !matches!(s, "status" | "scale"))
    {
        return Err(not_found());
    }
    let dry_run = request.query.contains_key("dryRun");
    let meta_only = request.metadata_only;
    let mut store = lock(&shared.store);
    let store = &mut *store;
    let ok = |value: Value| Ok(Reply::Json(200, present(value, meta_only)));
    match (&request.method, &target.name) {
        (&Method::GET, None) if request.flag("watch") => watch(shared, store, &target, request),
        (&Method::GET, None) => {
            let limit = request
                .param("limit")
                .and_then(|l| l.parse().ok())
                .filter(|l| *l > 0);
            let list = store.list(
                &target.gvr,
                &filter(&target, request)?,
                limit,
                request.param("continue"),
            )?;
            Ok(Reply::Json(200, present_list(list, meta_only)))
        }
        (&Method::GET, Some(_)) => ok(store.get(&target)?),
        (&Method::POST, None) => {
            let created = store.create(&target, request.json_body()?, dry_run)?;
            Ok(Reply::Json(201, present(created, meta_only)))
        }
        (&Method::PUT, Some(_)) => ok(store.replace(&target, request.json_body()?, dry_run)?),
        (&Method::PATCH, Some(_)) => ok(patch(store, &target, request, dry_run)?),
        (&Method::DELETE, Some(_)) => {
            let options = (!request.body.is_empty())
                .then(|| request.json_body())
                .transpose()?;
            let preconditions = options.as_ref().and_then(|o| o.get("preconditions"));
            match store.delete(&target, preconditions, dry_run)? {
                Deletion::Pending(object) => ok(object),
                Deletion::Gone(object) => {
                    Ok(Reply::Json(200, success_status(&target.gvr, &object)))
                }
            }
        }
        (&Method::DELETE, None) => {
            let list = delete_collection(store, &target, &filter(&target, request)?, dry_run)?;
            Ok(Reply::Json(200, present_list(list, meta_only)))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{} is not supported on {}", request.method, request.path),
        )),
    }
}

/// DELETE on a collection: deletes every selected object, answering with what was deleted.
fn delete_collection(
    store: &mut Store,
    target: &Target,
    filter: &Filter,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let selected: Vec<Target> = store
        .snapshot(&target.gvr, filter)
        .map(|(key, _)| Target {
            namespace: Some(key.namespace.clone()).filter(|ns| !ns.is_empty()),
            name: Some(key.name.clone()),
            ..target.clone()
        })
        .collect();
    let mut items = Vec::new();
    for one in selected {
        match store.delete(&one, None, dry_run) {
            Ok(Deletion::Pending(object) | Deletion::Gone(object)) => items.push(object),
            // Already collected as a dependent of an earlier item.
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json!({
        "apiVersion": target.gvr.api_version(),
        "kind": "List",
        "metadata": { "resourceVersion": store.resource_version().to_string() },
        "items": items,
    }))
}

fn patch(
    store: &mut Store,
    target: &Target,
    request: &ApiRequest,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let essence = request
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    match essence {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            store.patch(target, PatchKind::Merge, &request.json_body()?, dry_run)
        }
        "application/json-patch+json" => {
            store.patch(target, PatchKind::Json, &request.json_body()?, dry_run)
        }
        "application/apply-patch+yaml" => {
            let manager = request.param("fieldManager").filter(|m| !m.is_empty()).ok_or_else(|| {
                ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
            })?;
            // kube sends JSON, which is YAML too; parse JSON first for exact numbers.
            let config = serde_json::from_slice(&request.body).or_else(|_| {
                let text = std::str::from_utf8(&request.body)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                serde_saphyr::from_str::<Value>(text)
                    .map_err(|e| ApiError::bad_request(format!("invalid apply body: {e}")))
            })?;
            store.apply(target, config, manager, request.flag("force"), dry_run)
        }
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
            ),
        )),
    }
}

fn filter(target: &Target, request: &ApiRequest) -> Result<Filter, ApiError> {
    let labels = LabelSelector::parse(request.param("labelSelector").unwrap_or_default());
    let fields = FieldSelector::parse(request.param("fieldSelector").unwrap_or_default());
    Ok(Filter {
        namespace: target.namespace.clone(),
        labels: labels.map_err(ApiError::bad_request)?,
        fields: fields.map_err(ApiError::bad_request)?,
    })
}

/// Starts a watch: backlog (initial objects or replayed history) then live changes.
fn watch(
    shared: &Shared,
    store: &Store,
    target: &Target,
    request: &ApiRequest,
) -> Result<Reply, ApiError> {
    let watch = Watch {
        gvr: target.gvr.clone(),
        filter: filter(target, request)?,
        metadata_only: request.metadata_only,
        events: store.subscribe(),
        disconnect: shared.disconnect.subscribe(),
        deadline: request
            .param("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map(|secs| Instant::now() + Duration::from_secs(secs)),
    };
    let resource_version = request.param("resourceVersion").unwrap_or_default();
    let initial_events = request.flag("sendInitialEvents");
    let mut backlog = Vec::new();
    if initial_events || matches!(resource_version, "" | "0") {
        // "Get state and start at most recent": every current object as ADDED first.
        backlog.extend(
            store
                .snapshot(&watch.gvr, &watch.filter)
                .map(|(_, object)| watch.line("ADDED", object)),
        );
        if initial_events && request.flag("allowWatchBookmarks") {
            let kind = store.kind_of(&watch.gvr).unwrap_or_default();
            backlog.push(bookmark(&watch.gvr, kind, store.resource_version()));
        }
    } else {
        let after: u64 = resource_version.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid resourceVersion {resource_version:?}"))
        })?;
        match store.replay(after) {
            Ok(changes) => backlog.extend(changes.filter_map(|change| watch.render(change))),
            // Like the apiserver: a 200 watch whose only event is an ERROR carrying 410.
            Err(expired) => {
                let line = event_line("ERROR", &expired.to_status());
                return Ok(Reply::Stream(stream::iter([line]).boxed()));
            }
        }
    }
    Ok(Reply::Stream(
        stream::iter(backlog).chain(watch.live()).boxed(),
    ))
}

/// One open watch: its selection plus the channels it listens on.
struct Watch {
    gvr: Gvr,
    filter: Filter,
    metadata_only: bool,
    events: broadcast::Receiver<Arc<Change>>,
    disconnect: watch::Receiver<u64>,
    deadline: Option<Instant>,
}

impl Watch {
    fn line(&self, event: &str, object: &Value) -> Bytes {
        event_line(event, &present(object.clone(), self.metadata_only))
    }

    /// The event this watch sees for `change`: objects entering or leaving the selection
    /// by a modification show up as ADDED or DELETED, as with the apiserver's watch cache.
    fn render(&self, change: &Change) -> Option<Bytes> {
        if change.gvr != self.gvr {
            return None;
        }
        let now = self.filter.matches(&change.object);
        let before = change
            .previous
            .as_ref()
            .is_some_and(|p| self.filter.matches(p));
        let event = match (change.change, before, now) {
            (ChangeType::Added, _, true) | (ChangeType::Modified, false, true) => "ADDED",
            (ChangeType::Modified, true, true) => "MODIFIED",
            (ChangeType::Deleted, _, true) | (ChangeType::Modified, true, false) => "DELETED",
            _ => return None,
        };
        Some(self.line(event, &change.object))
    }

    /// Live events until the timeout, a disconnect, or falling behind (then 410, so kube re-lists).
    fn live(self) -> impl futures::Stream<Item = Bytes> + Send + 'static {
        stream::unfold(Some(self), |watch| async move {
            let mut watch = watch?;
            loop {
                let deadline = async {
                    match watch.deadline {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    _ = watch.disconnect.changed() => return None,
                    () = deadline => return None,
                    received = watch.events.recv() => match received {
                        Ok(change) => {
                            if let Some(line) = watch.render(&change) {
                                return Some((line, Some(watch)));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let gone = ApiError::expired("watch fell behind the event history");
                            return Some((event_line("ERROR", &gone.to_status()), None));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                }
            }
        })
    }
}

fn event_line(event: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": event, "object": object }).to_string();
    line.push('\n');
    line.into()
}

fn bookmark(gvr: &Gvr, kind: &str, rv: u64) -> Bytes {
    let object = json!({
        "apiVersion": gvr.api_version(),
        "kind": kind,
        "metadata": {
            "resourceVersion": rv.to_string(),
            "annotations": { "k8s.io/initial-events-end": "true" },
        },
    });
    event_line("BOOKMARK", &object)
}

/// The object as requested: whole, or as `PartialObjectMetadata`.
fn present(object: Value, metadata_only: bool) -> Value {
    if !metadata_only {
        return object;
    }
    json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": object.get("metadata") })
}

fn present_list(mut list: Value, metadata_only: bool) -> Value {
    if metadata_only {
        list["apiVersion"] = json!("meta.k8s.io/v1");
        list["kind"] = json!("PartialObjectMetadataList");
        if let Some(Value::Array(items)) = list.get_mut("items") {
            items
                .iter_mut()
                .for_each(|item| *item = present(item.take(), true));
        }
    }
    list
}

fn success_status(gvr: &Gvr, object: &Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": object.pointer("/metadata/name"),
            "group": gvr.group,
            "kind": gvr.plural,
            "uid": object.pointer("/metadata/uid"),
        },
    })
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "35",
        "gitVersion": "v1.35.0-kube-fake",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "go",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}
