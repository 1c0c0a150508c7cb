//! What wakes a reconciler through an object it only reads: a filter over watcher events that
//! lets an object through when the part the reconciler reads changed, and on every deletion.
//!
//! kube's `predicate_filter` works on decoded objects and cannot tell a deletion from an update,
//! so a deletion that changes nothing it hashes (the last finalizer gone) is swallowed; this
//! filter sees the events themselves.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use futures::{Stream, StreamExt, future};
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};

/// What makes a custom resource worth reconciling again: a spec change, a deletion, or a
/// finalizer change — never a status write.
pub fn spec_or_lifecycle<K: Resource>(object: &K) -> Option<u64> {
    let meta = object.meta();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        meta.generation,
        meta.deletion_timestamp.is_some(),
        &meta.finalizers,
    )
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// The objects of `events` whose `relevant` hash changed (`None`: always relevant), plus every
/// deleted object.
pub fn changes_of<K, S, P>(events: S, relevant: P) -> impl Stream<Item = Result<K, watcher::Error>>
where
    K: Resource<DynamicType = ()> + Clone,
    S: Stream<Item = Result<Event<K>, watcher::Error>>,
    P: Fn(&K) -> Option<u64>,
{
    let mut filter = ChangeFilter::new(relevant);
    events.filter_map(move |event| {
        future::ready(match event {
            Ok(event) => filter.pass(event).map(Ok),
            Err(error) => Some(Err(error)),
        })
    })
}

/// The last relevant hash of every object seen; an entry lives while its object exists.
struct ChangeFilter<K: Resource<DynamicType = ()>, P> {
    relevant: P,
    last: HashMap<ObjectRef<K>, Option<u64>>,
    /// Objects listed since a re-list began: the others were deleted while the watch was down.
    relisted: Option<HashSet<ObjectRef<K>>>,
}

impl<K, P> ChangeFilter<K, P>
where
    K: Resource<DynamicType = ()> + Clone,
    P: Fn(&K) -> Option<u64>,
{
    fn new(relevant: P) -> Self {
        Self {
            relevant,
            last: HashMap::new(),
            relisted: None,
        }
    }

    /// The object to hand on for `event`, if any.
    fn pass(&mut self, event: Event<K>) -> Option<K> {
        match event {
            Event::Init => {
                self.relisted = Some(HashSet::new());
                None
            }
            Event::InitApply(object) => {
                if let Some(relisted) = &mut self.relisted {
                    relisted.insert(ObjectRef::from_obj(&object));
                }
                self.changed(object)
            }
            Event::InitDone => {
                if let Some(relisted) = self.relisted.take() {
                    self.last.retain(|object, _| relisted.contains(object));
                }
                None
            }
            Event::Apply(object) => self.changed(object),
            Event::Delete(object) => {
                self.last.remove(&ObjectRef::from_obj(&object));
                Some(object)
            }
        }
    }

    fn changed(&mut self, object: K) -> Option<K> {
        let hash = (self.relevant)(&object);
        let previous = self.last.insert(ObjectRef::from_obj(&object), hash);
        (hash.is_none() || previous != Some(hash)).then_some(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Trunk;
    use crate::crd::TrunkStatus;

    fn trunk(name: &str, generation: i64) -> Trunk {
        let mut trunk: Trunk = serde_json::from_value(serde_json::json!({
            "apiVersion": "centrex.dev/v1alpha1",
            "kind": "Trunk",
            "metadata": { "name": name, "namespace": "default", "generation": generation },
            "spec": { "host": "sip.carrier.example" },
        }))
        .unwrap();
        trunk.status = Some(TrunkStatus::default());
        trunk
    }

    fn names(
        filter: &mut ChangeFilter<Trunk, fn(&Trunk) -> Option<u64>>,
        events: Vec<Event<Trunk>>,
    ) -> Vec<String> {
        events
            .into_iter()
            .filter_map(|e| filter.pass(e))
            .map(|t| t.metadata.name.unwrap())
            .collect()
    }

    fn filter() -> ChangeFilter<Trunk, fn(&Trunk) -> Option<u64>> {
        ChangeFilter::new(spec_or_lifecycle::<Trunk>)
    }

    #[test]
    fn a_status_write_passes_nothing_and_a_spec_change_passes() {
        let mut f = filter();
        let mut written = trunk("a", 1);
        written.status.as_mut().unwrap().last_registration_error = Some("403".into());
        let passed = names(
            &mut f,
            vec![
                Event::Apply(trunk("a", 1)),
                Event::Apply(written),
                Event::Apply(trunk("a", 2)),
            ],
        );
        assert_eq!(passed, ["a", "a"]);
    }

    #[test]
    fn a_deletion_passes_even_when_nothing_hashed_changed() {
        let mut f = filter();
        let passed = names(
            &mut f,
            vec![Event::Apply(trunk("a", 1)), Event::Delete(trunk("a", 1))],
        );
        assert_eq!(passed, ["a", "a"]);
        assert!(f.last.is_empty());
    }

    #[test]
    fn a_relist_forgets_objects_deleted_while_the_watch_was_down() {
        let mut f = filter();
        let passed = names(
            &mut f,
            vec![
                Event::Apply(trunk("a", 1)),
                Event::Apply(trunk("b", 1)),
                Event::Init,
                Event::InitApply(trunk("a", 1)),
                Event::InitDone,
            ],
        );
        assert_eq!(
            passed,
            ["a", "b"],
            "an unchanged relisted object stays quiet"
        );
        assert_eq!(f.last.len(), 1);
    }
}
