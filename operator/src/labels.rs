//! Typed labels of the objects the operator creates (never label strings scattered around).

use std::collections::BTreeMap;

/// `app.kubernetes.io/name` of everything Centrex runs.
pub const APP_NAME: &str = "centrex";
/// The one field manager of every server-side apply, and the `managed-by` label value.
pub const MANAGER: &str = "centrex-operator";

const NAME_KEY: &str = "app.kubernetes.io/name";
const INSTANCE_KEY: &str = "app.kubernetes.io/instance";
const COMPONENT_KEY: &str = "app.kubernetes.io/component";
const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
const PART_OF_KEY: &str = "app.kubernetes.io/part-of";

/// Which part of the platform a pod runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    MediaNode,
    Signalling,
}

impl Component {
    /// The `component` label value, also the subcommand the pod runs.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::MediaNode => "media-node",
            Component::Signalling => "signalling",
        }
    }
}

/// Labels of one pool's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolLabels {
    pub component: Component,
    pub pool: String,
}

impl PoolLabels {
    /// Labels of a pool of `component` named `pool`.
    pub fn new(component: Component, pool: &str) -> Self {
        Self {
            component,
            pool: pool.into(),
        }
    }

    /// The stable subset that selects the pool's pods (immutable in a StatefulSet selector).
    pub fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (NAME_KEY.into(), APP_NAME.into()),
            (INSTANCE_KEY.into(), self.pool.clone()),
            (COMPONENT_KEY.into(), self.component.as_str().into()),
        ])
    }

    /// Every label the operator sets on the pool's objects.
    pub fn all(&self) -> BTreeMap<String, String> {
        let mut labels = self.selector();
        labels.insert(MANAGED_BY_KEY.into(), MANAGER.into());
        labels.insert(PART_OF_KEY.into(), APP_NAME.into());
        labels
    }

    /// The selector in `kubectl -l` form, as `status.selector` for the scale subresource.
    pub fn selector_string(&self) -> String {
        self.selector()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Selector of every object the operator manages for this pool (for pruning).
    pub fn managed_selector(&self) -> String {
        format!("{},{MANAGED_BY_KEY}={MANAGER}", self.selector_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selector_string_lists_the_selector_labels_in_order() {
        let labels = PoolLabels::new(Component::MediaNode, "default");
        assert_eq!(
            labels.selector_string(),
            "app.kubernetes.io/component=media-node,app.kubernetes.io/instance=default,app.kubernetes.io/name=centrex"
        );
    }

    #[test]
    fn all_labels_include_the_selector_and_the_manager() {
        let labels = PoolLabels::new(Component::Signalling, "edge").all();
        assert_eq!(labels["app.kubernetes.io/managed-by"], MANAGER);
        assert_eq!(labels["app.kubernetes.io/instance"], "edge");
    }
}
