//! The object store: API semantics on JSON values, independent of HTTP.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::error::ApiError;
use crate::merge::{
    FieldPath, apply_json_patch, apply_merge, display_path, fields_v1, get_path, leaf_paths,
    merge_patch, prune, remove_path, spec_view,
};
use crate::path::{Gvr, Target};
use crate::selector::Filter;

pub(crate) type Result<T> = std::result::Result<T, ApiError>;

/// Storage key of one object; `namespace` is `""` for cluster-scoped objects.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ObjKey {
    pub gvr: Gvr,
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    fn of(target: &Target, name: &str) -> Self {
        Self {
            gvr: target.gvr.clone(),
            namespace: target.ns().into(),
            name: name.into(),
        }
    }
}

/// Server-side-apply memory: the last config each (manager, subresource) applied.
type Applied = BTreeMap<(String, String), Value>;

struct Entry {
    object: Value,
    applied: Applied,
}

/// What a committed change did to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One committed change, kept in the history and broadcast to open watches.
#[derive(Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub gvr: Gvr,
    pub change: ChangeType,
    pub object: Value,
    /// The object before a modification, so watches can tell when it enters or leaves their selector.
    pub previous: Option<Value>,
}

/// A non-apply patch flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchKind {
    /// JSON merge patch; strategic merge patches are treated the same way.
    Merge,
    /// RFC 6902 JSON patch.
    Json,
}

/// Outcome of a delete.
pub(crate) enum Deletion {
    /// Finalizers hold the object: it now carries a deletionTimestamp.
    Pending(Value),
    /// The object is gone; this is its last state.
    Gone(Value),
}

/// All objects plus the resourceVersion counter and change history.
pub(crate) struct Store {
    objects: BTreeMap<ObjKey, Entry>,
    rv: u64,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Highest resourceVersion dropped from the history: watches from before it get 410.
    compacted: u64,
    /// Kind seen per resource type, for list kinds and bookmarks.
    kinds: HashMap<Gvr, String>,
    /// (group, plural) whose `.status` is written through the main resource.
    plain_status: HashSet<(String, String)>,
    events: broadcast::Sender<Arc<Change>>,
}

impl Store {
    pub fn new(history_limit: usize, plain_status: HashSet<(String, String)>) -> Self {
        let history_limit = history_limit.max(1);
        Self {
            objects: BTreeMap::new(),
            // Start above 0: "0" means "any version" to list and watch requests.
            rv: 1,
            history: VecDeque::new(),
            history_limit,
            compacted: 0,
            kinds: HashMap::new(),
            plain_status,
            events: broadcast::channel(history_limit).0,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.events.subscribe()
    }

    pub fn kind_of(&self, gvr: &Gvr) -> Option<&str> {
        self.kinds.get(gvr).map(String::as_str)
    }

    fn status_is_subresource(&self, gvr: &Gvr) -> bool {
        !self
            .plain_status
            .contains(&(gvr.group.clone(), gvr.plural.clone()))
    }

    /// Forgets the change history, as etcd compaction does: older watches get 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    // ---- reads ----

    /// Every stored object of `group`/`plural`, any version, ordered by namespace and name.
    pub fn objects(&self, group: &str, plural: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.gvr.group == group && k.gvr.plural == plural)
            .map(|(_, e)| e.object.clone())
            .collect()
    }

    /// One object of `group`/`plural` in any version.
    pub fn object(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.objects
            .iter()
            .find(|(k, _)| {
                k.gvr.group == group
                    && k.gvr.plural == plural
                    && k.namespace == namespace
                    && k.name == name
            })
            .map(|(_, e)| e.object.clone())
    }

    /// The object (or its `/scale` view) a named target addresses.
    pub fn get(&self, target: &Target) -> Result<Value> {
        let (_, current) = self.existing(target)?;
        Ok(view(current, target.subresource.as_deref()))
    }

    fn existing(&self, target: &Target) -> Result<(ObjKey, &Value)> {
        let name = target.name.as_deref().unwrap_or_default();
        let key = ObjKey::of(target, name);
        match self.objects.get(&key) {
            Some(entry) => Ok((key, &entry.object)),
            None => Err(ApiError::not_found(&target.gvr, name)),
        }
    }

    /// Matching objects of one type in key order.
    pub fn snapshot<'a>(
        &'a self,
        gvr: &'a Gvr,
        filter: &'a Filter,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Value)> {
        self.objects
            .iter()
            .filter(move |(k, e)| k.gvr == *gvr && filter.matches(&e.object))
            .map(|(k, e)| (k, &e.object))
    }

    /// A list response, paginated by `limit` with continue tokens `{rv}/{namespace}/{name}`.
    ///
    /// Later pages read current state but report the first page's resourceVersion, so a
    /// watch started from it replays whatever changed in between.
    pub fn list(
        &self,
        gvr: &Gvr,
        filter: &Filter,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<Value> {
        let (rv, after) = match continue_token.filter(|t| !t.is_empty()) {
            None => (self.rv, None),
            Some(token) => {
                let invalid = || ApiError::bad_request(format!("invalid continue token {token:?}"));
                let mut parts = token.splitn(3, '/');
                let rv: u64 = parts
                    .next()
                    .and_then(|rv| rv.parse().ok())
                    .ok_or_else(invalid)?;
                let (ns, name) = parts.next().zip(parts.next()).ok_or_else(invalid)?;
                if rv < self.compacted {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ));
                }
                (rv, Some((ns.to_owned(), name.to_owned())))
            }
        };
        let mut matching = self.snapshot(gvr, filter).filter(|(k, _)| {
            after
                .as_ref()
                .is_none_or(|(ns, name)| (&k.namespace, &k.name) > (ns, name))
        });
        let items: Vec<(&ObjKey, &Value)> = matching
            .by_ref()
            .take(limit.unwrap_or(usize::MAX))
            .collect();
        let remaining = matching.count();
        let mut metadata = json!({ "resourceVersion": rv.to_string() });
        if remaining > 0
            && let Some((last, _)) = items.last()
        {
            metadata["continue"] = json!(format!("{rv}/{}/{}", last.namespace, last.name));
            metadata["remainingItemCount"] = json!(remaining);
        }
        let kind = self
            .kind_of(gvr)
            .map_or_else(|| "List".to_owned(), |k| format!("{k}List"));
        Ok(json!({
            "apiVersion": gvr.api_version(),
            "kind": kind,
            "metadata": metadata,
            "items": items.into_iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        }))
    }

    /// Changes after `rv`, or 410 Expired when some of them were compacted away.
    pub fn replay(&self, rv: u64) -> Result<impl Iterator<Item = &Arc<Change>>> {
        if rv < self.compacted {
            return Err(ApiError::expired(format!(
                "too old resource version: {rv} ({})",
                self.compacted + 1
            )));
        }
        Ok(self.history.iter().filter(move |c| c.rv > rv))
    }

    // ---- writes ----

    /// POST: stores a new object; 409 AlreadyExists when the name is taken.
    pub fn create(&mut self, target: &Target, mut object: Value, dry_run: bool) -> Result<Value> {
        let gvr = &target.gvr;
        if !object.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        let rv = self.rv + 1;
        let meta = metadata_mut(&mut object);
        let name = match (str_field(meta, "name"), str_field(meta, "generateName")) {
            (Some(name), _) => name.to_owned(),
            // Deterministic suffix: unique because resourceVersions are.
            (None, Some(prefix)) => format!("{prefix}{:05x}", rv & 0xfffff),
            (None, None) => {
                return Err(ApiError::invalid(
                    gvr,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        };
        if target.name.as_ref().is_some_and(|n| *n != name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        match &target.namespace {
            Some(ns) => {
                if str_field(meta, "namespace").is_some_and(|body_ns| body_ns != ns) {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                meta.insert("namespace".into(), json!(ns));
            }
            None => {
                meta.remove("namespace");
            }
        }
        let key = ObjKey::of(target, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(gvr, &name));
        }
        meta.insert("name".into(), json!(name));
        meta.insert(
            "uid".into(),
            json!(format!("00000000-0000-4000-8000-{rv:012x}")),
        );
        meta.insert("creationTimestamp".into(), now());
        meta.insert("generation".into(), json!(1));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        for field in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
            meta.remove(field);
        }
        if self.status_is_subresource(gvr)
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        if dry_run {
            return Ok(object);
        }
        self.rv = rv;
        self.learn_kind(gvr, &object);
        self.objects.insert(
            key,
            Entry {
                object: object.clone(),
                applied: Applied::new(),
            },
        );
        self.record(ChangeType::Added, gvr, object.clone(), None);
        Ok(object)
    }

    /// PUT on an object or one of its subresources.
    pub fn replace(&mut self, target: &Target, body: Value, dry_run: bool) -> Result<Value> {
        let (key, _) = self.existing(target)?;
        if body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_some_and(|n| n != key.name)
        {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name on the URL",
            ));
        }
        self.write(&key, target.subresource.as_deref(), body, None, dry_run)
    }

    /// PATCH with a merge or JSON patch, applied to the addressed view (object or `/scale`).
    pub fn patch(
        &mut self,
        target: &Target,
        kind: PatchKind,
        patch: &Value,
        dry_run: bool,
    ) -> Result<Value> {
        let (key, current) = self.existing(target)?;
        let sub = target.subresource.as_deref();
        let mut patched = view(current, sub);
        match kind {
            PatchKind::Merge => merge_patch(&mut patched, patch),
            PatchKind::Json => {
                let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                apply_json_patch(&mut patched, &ops)
                    .map_err(|e| ApiError::invalid(&key.gvr, &key.name, &e.to_string()))?;
            }
        }
        self.write(&key, sub, patched, None, dry_run)
    }

    /// Server-side apply (approximated, see the README): creates when absent, otherwise
    /// prunes what `manager` stopped applying and deep-merges the new config.
    pub fn apply(
        &mut self,
        target: &Target,
        config: Value,
        manager: &str,
        force: bool,
        dry_run: bool,
    ) -> Result<Value> {
        let sub = target.subresource.as_deref().unwrap_or_default();
        if sub == "scale" {
            return self.patch(target, PatchKind::Merge, &config, dry_run);
        }
        let name = target.name.as_deref().unwrap_or_default();
        let key = ObjKey::of(target, name);
        let owned = owned_fields(&config, sub, self.status_is_subresource(&target.gvr));
        let slot = (manager.to_owned(), sub.to_owned());
        let Some(entry) = self.objects.get(&key) else {
            if sub == "status" {
                return Err(ApiError::not_found(&target.gvr, name));
            }
            let applied = Applied::from([(slot, owned)]);
            let mut object = config;
            let meta = metadata_mut(&mut object);
            meta.entry("name").or_insert_with(|| json!(name));
            meta.insert(
                "managedFields".into(),
                managed_fields(&Value::Null, &applied, &target.gvr, &now()),
            );
            let created = self.create(target, object, dry_run)?;
            if let Some(entry) = self.objects.get_mut(&key).filter(|_| !dry_run) {
                entry.applied = applied;
            }
            return Ok(created);
        };
        check_resource_version(&key, &config, &entry.object)?;

        let mut applied = entry.applied.clone();
        let conflicts = apply_conflicts(&entry.object, &applied, &slot, &owned);
        if !conflicts.is_empty() {
            if !force {
                return Err(conflict_error(&key, &conflicts));
            }
            // Forcing moves ownership: the losing managers no longer claim those fields.
            for (other, path) in &conflicts {
                if let Some(config) = applied.get_mut(&(other.clone(), sub.to_owned())) {
                    remove_path(config, path);
                }
            }
        }
        let mut next = entry.object.clone();
        if let Some(previous) = applied.get(&slot) {
            let others: Vec<&Value> = applied
                .iter()
                .filter(|(s, _)| s.0 != manager && s.1 == sub)
                .map(|(_, v)| v)
                .collect();
            prune(&mut next, previous, Some(&owned), &others);
        }
        apply_merge(&mut next, &owned);
        applied.insert(slot, owned);
        let managed = managed_fields(&entry.object, &applied, &key.gvr, &now());
        let result = self.write(
            &key,
            target.subresource.as_deref(),
            next,
            Some(managed),
            dry_run,
        )?;
        if let Some(entry) = self.objects.get_mut(&key).filter(|_| !dry_run) {
            entry.applied = applied;
        }
        Ok(result)
    }

    /// DELETE: marks the object when finalizers hold it, removes it (and its dependents) otherwise.
    pub fn delete(
        &mut self,
        target: &Target,
        preconditions: Option<&Value>,
        dry_run: bool,
    ) -> Result<Deletion> {
        let (key, current) = self.existing(target)?;
        for field in ["uid", "resourceVersion"] {
            let wanted = preconditions
                .and_then(|p| p.get(field))
                .and_then(Value::as_str);
            let actual = current
                .pointer(&format!("/metadata/{field}"))
                .and_then(Value::as_str);
            if let Some(wanted) = wanted.filter(|w| Some(*w) != actual) {
                let why = format!(
                    "Precondition failed: {field} in precondition: {wanted}, {field} in object meta: {}",
                    actual.unwrap_or_default()
                );
                return Err(ApiError::conflict(&key.gvr, &key.name, &why));
            }
        }
        Ok(self.delete_key(&key, dry_run))
    }

    fn delete_key(&mut self, key: &ObjKey, dry_run: bool) -> Deletion {
        let current = self.objects[key].object.clone();
        if has_finalizers(&current) {
            if current.pointer("/metadata/deletionTimestamp").is_some() {
                return Deletion::Pending(current);
            }
            let mut next = current;
            let meta = metadata_mut(&mut next);
            meta.insert("deletionTimestamp".into(), now());
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            // The apiserver bumps generation when it starts a graceful deletion.
            let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(0);
            meta.insert("generation".into(), json!(generation + 1));
            return Deletion::Pending(self.commit(key, next, dry_run));
        }
        if dry_run {
            return Deletion::Gone(current);
        }
        Deletion::Gone(self.remove(key, current))
    }

    // ---- internals ----

    /// Writes a new version of the `sub` view of an existing object.
    fn write(
        &mut self,
        key: &ObjKey,
        sub: Option<&str>,
        new: Value,
        managed: Option<Value>,
        dry_run: bool,
    ) -> Result<Value> {
        let current = &self.objects[key].object;
        check_resource_version(key, &new, current)?;
        let mut next = match sub {
            Some("status") => with_status_of(current.clone(), &new),
            Some("scale") => {
                let replicas = new
                    .pointer("/spec/replicas")
                    .cloned()
                    .unwrap_or(Value::Null);
                let mut next = current.clone();
                merge_patch(&mut next, &json!({ "spec": { "replicas": replicas } }));
                next
            }
            _ => {
                let mut next = keep_system_fields(current, new);
                if self.status_is_subresource(&key.gvr) {
                    next = with_status_of(next, current);
                }
                next
            }
        };
        let is_apply = managed.is_some();
        if let Some(managed) = managed {
            metadata_mut(&mut next).insert("managedFields".into(), managed);
        }
        if !is_apply && !dry_run {
            let current = current.clone();
            self.release_changed_fields(key, sub.unwrap_or_default(), &current, &next);
        }
        let current = &self.objects[key].object;
        if spec_view(current) != spec_view(&next) {
            let generation = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            metadata_mut(&mut next).insert("generation".into(), json!(generation + 1));
        }
        let written = self.commit(key, next, dry_run);
        Ok(view(&written, sub))
    }

    /// A non-apply write (PUT, patch) takes ownership of the fields it changes, as the
    /// apiserver's `Update` operation does: appliers stop claiming them, so a later apply by
    /// another manager does not conflict over a field someone else removed or rewrote.
    fn release_changed_fields(&mut self, key: &ObjKey, sub: &str, current: &Value, next: &Value) {
        let Some(entry) = self.objects.get_mut(key) else {
            return;
        };
        for ((_, applied_sub), config) in entry.applied.iter_mut() {
            if applied_sub != sub {
                continue;
            }
            for path in leaf_paths(config) {
                if get_path(current, &path) != get_path(next, &path) {
                    remove_path(config, &path);
                }
            }
        }
    }

    /// Stores `next` unless it is a no-op (which, like the apiserver, bumps nothing and emits
    /// nothing); removes the object if it is being deleted and has no finalizers left.
    fn commit(&mut self, key: &ObjKey, next: Value, dry_run: bool) -> Value {
        let current = &self.objects[key].object;
        if next == *current || dry_run {
            return next;
        }
        if next.pointer("/metadata/deletionTimestamp").is_some() && !has_finalizers(&next) {
            return self.remove(key, next);
        }
        let mut next = next;
        self.rv += 1;
        metadata_mut(&mut next).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.learn_kind(&key.gvr, &next);
        let entry = self
            .objects
            .get_mut(key)
            .expect("committing an existing object");
        let previous = std::mem::replace(&mut entry.object, next.clone());
        self.record(ChangeType::Modified, &key.gvr, next.clone(), Some(previous));
        next
    }

    /// Removes an object for good, then garbage-collects what it owned.
    fn remove(&mut self, key: &ObjKey, mut last: Value) -> Value {
        self.objects.remove(key);
        self.rv += 1;
        metadata_mut(&mut last).insert("resourceVersion".into(), json!(self.rv.to_string()));
        self.record(ChangeType::Deleted, &key.gvr, last.clone(), None);
        if let Some(uid) = last.pointer("/metadata/uid").and_then(Value::as_str) {
            self.collect_dependents(uid);
        }
        // Namespace deletion takes its contents along (the namespace controller's job).
        if key.gvr.group.is_empty() && key.gvr.plural == "namespaces" {
            let contents: Vec<ObjKey> = self
                .objects
                .keys()
                .filter(|k| k.namespace == key.name)
                .cloned()
                .collect();
            for content in contents {
                if self.objects.contains_key(&content) {
                    self.delete_key(&content, false);
                }
            }
        }
        last
    }

    /// Background cascading deletion: dependents whose every owner is gone are deleted
    /// (honouring their finalizers); others just lose the dangling owner reference.
    fn collect_dependents(&mut self, owner_uid: &str) {
        let dependents: Vec<ObjKey> = self
            .objects
            .iter()
            .filter(|(_, e)| owner_uids(&e.object).any(|uid| uid == owner_uid))
            .map(|(k, _)| k.clone())
            .collect();
        for key in dependents {
            let Some(entry) = self.objects.get(&key) else {
                continue;
            };
            let object = entry.object.clone();
            let live_owner = owner_uids(&object)
                .filter(|uid| *uid != owner_uid)
                .any(|uid| self.uid_exists(uid));
            if live_owner {
                let mut next = object.clone();
                if let Some(Value::Array(refs)) = next.pointer_mut("/metadata/ownerReferences") {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
                }
                self.commit(&key, next, false);
            } else {
                self.delete_key(&key, false);
            }
        }
    }

    fn uid_exists(&self, uid: &str) -> bool {
        self.objects
            .values()
            .any(|e| e.object.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid))
    }

    fn learn_kind(&mut self, gvr: &Gvr, object: &Value) {
        if let Some(kind) = object.get("kind").and_then(Value::as_str) {
            self.kinds
                .entry(gvr.clone())
                .or_insert_with(|| kind.to_owned());
        }
    }

    fn record(&mut self, change: ChangeType, gvr: &Gvr, object: Value, previous: Option<Value>) {
        let change = Arc::new(Change {
            rv: self.rv,
            gvr: gvr.clone(),
            change,
            object,
            previous,
        });
        while self.history.len() >= self.history_limit {
            if let Some(evicted) = self.history.pop_front() {
                self.compacted = evicted.rv;
            }
        }
        self.history.push_back(change.clone());
        // No open watch is not an error.
        let _ = self.events.send(change);
    }
}

/// Optimistic concurrency: a non-empty `metadata.resourceVersion` in `body` must be current.
fn check_resource_version(key: &ObjKey, body: &Value, current: &Value) -> Result<()> {
    let version = |object: &Value| {
        object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    match version(body).filter(|rv| !rv.is_empty()) {
        Some(pinned) if Some(&pinned) != version(current).as_ref() => {
            Err(ApiError::stale(&key.gvr, &key.name))
        }
        _ => Ok(()),
    }
}

/// The current time as the apiserver serialises it (`2024-01-02T03:04:05Z`).
fn now() -> Value {
    serde_json::to_value(Time(Timestamp::now())).expect("timestamps serialise")
}

/// `object.metadata` as a map, creating it (and turning `object` into a map) if needed.
fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    let meta = object
        .as_object_mut()
        .expect("made an object above")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("made an object above")
}

fn str_field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn has_finalizers(object: &Value) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

fn owner_uids(object: &Value) -> impl Iterator<Item = &str> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("uid").and_then(Value::as_str))
}

/// `target` with its `.status` replaced by `source`'s (or removed if `source` has none).
fn with_status_of(mut target: Value, source: &Value) -> Value {
    if let Some(map) = target.as_object_mut() {
        match source.get("status") {
            Some(status) => map.insert("status".into(), status.clone()),
            None => map.remove("status"),
        };
    }
    target
}

/// `new` with the metadata only the server may set carried over from `current`.
fn keep_system_fields(current: &Value, mut new: Value) -> Value {
    const SYSTEM: [&str; 9] = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "managedFields",
    ];
    for field in ["apiVersion", "kind"] {
        if new.get(field).is_none()
            && let (Some(value), Some(map)) = (current.get(field), new.as_object_mut())
        {
            map.insert(field.into(), value.clone());
        }
    }
    let meta = metadata_mut(&mut new);
    for field in SYSTEM {
        match current.get("metadata").and_then(|m| m.get(field)) {
            Some(value) => meta.insert(field.into(), value.clone()),
            None => meta.remove(field),
        };
    }
    new
}

/// The representation a subresource path reads and writes: the object, or a `Scale`.
fn view(object: &Value, sub: Option<&str>) -> Value {
    if sub != Some("scale") {
        return object.clone();
    }
    let meta: Map<String, Value> = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ]
    .into_iter()
    .filter_map(|f| {
        Some((
            f.to_owned(),
            object.pointer(&format!("/metadata/{f}"))?.clone(),
        ))
    })
    .collect();
    let selector = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        });
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": meta,
        "spec": { "replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(1)) },
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// The part of an applied config a manager takes ownership of: user-settable fields only,
/// restricted to `.status` on the status subresource and excluding it on the main resource.
fn owned_fields(config: &Value, sub: &str, status_is_subresource: bool) -> Value {
    let mut owned = config.as_object().cloned().unwrap_or_default();
    owned.remove("apiVersion");
    owned.remove("kind");
    if let Some(Value::Object(meta)) = owned.get_mut("metadata") {
        meta.retain(|k, _| {
            matches!(
                k.as_str(),
                "labels" | "annotations" | "finalizers" | "ownerReferences"
            )
        });
        if meta.is_empty() {
            owned.remove("metadata");
        }
    }
    if sub == "status" {
        owned.retain(|k, _| k == "status");
    } else if status_is_subresource {
        owned.remove("status");
    }
    Value::Object(owned)
}

/// Fields `owned` would set that another applier of the same subresource owns with a different value.
fn apply_conflicts(
    current: &Value,
    applied: &Applied,
    slot: &(String, String),
    owned: &Value,
) -> Vec<(String, FieldPath)> {
    // Empty maps only assert the map exists; like SSA, they conflict with nobody.
    let paths: Vec<FieldPath> = leaf_paths(owned)
        .into_iter()
        .filter(|p| get_path(owned, p).is_some_and(|v| !v.is_object()))
        .collect();
    applied
        .iter()
        .filter(|(other, _)| other.0 != slot.0 && other.1 == slot.1)
        .flat_map(|(other, config)| {
            paths
                .iter()
                .filter(|path| {
                    get_path(config, path).is_some()
                        && get_path(current, path) != get_path(owned, path)
                })
                .map(|path| (other.0.clone(), path.clone()))
        })
        .collect()
}

fn conflict_error(key: &ObjKey, conflicts: &[(String, FieldPath)]) -> ApiError {
    let list: Vec<String> = conflicts
        .iter()
        .map(|(manager, path)| format!("conflict with \"{manager}\": {}", display_path(path)))
        .collect();
    let plural = if conflicts.len() == 1 { "" } else { "s" };
    let why = format!(
        "Apply failed with {} conflict{plural}: {}",
        conflicts.len(),
        list.join("; ")
    );
    ApiError::conflict(&key.gvr, &key.name, &why)
}

/// `metadata.managedFields`: non-apply entries kept, one `Apply` entry per applier rebuilt
/// from its remembered config (keeping its timestamp when its field set did not change).
fn managed_fields(current: &Value, applied: &Applied, gvr: &Gvr, now: &Value) -> Value {
    let existing = current
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let is_apply = |e: &Value| e.get("operation").and_then(Value::as_str) == Some("Apply");
    let mut entries: Vec<Value> = existing.iter().filter(|e| !is_apply(e)).cloned().collect();
    for ((manager, sub), owned) in applied {
        let fields = fields_v1(owned);
        let previous = existing.iter().find(|e| {
            is_apply(e)
                && e.get("manager").and_then(Value::as_str) == Some(manager)
                && e.get("subresource")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    == sub
        });
        let time = previous
            .filter(|e| e.get("fieldsV1") == Some(&fields))
            .and_then(|e| e.get("time"))
            .unwrap_or(now);
        let mut entry = json!({
            "manager": manager,
            "operation": "Apply",
            "apiVersion": gvr.api_version(),
            "time": time,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields,
        });
        if !sub.is_empty() {
            entry["subresource"] = json!(sub);
        }
        entries.push(entry);
    }
    Value::Array(entries)
}
