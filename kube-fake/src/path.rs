//! Request path parsing: maps an API path onto the resource it addresses.

use std::fmt;

/// A resource type: API group (`""` for core), version and plural name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gvr {
    /// API group, `""` for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Lower-case plural resource name, e.g. `configmaps`.
    pub plural: String,
}

impl Gvr {
    /// Builds a `Gvr` from its parts.
    pub fn new(group: &str, version: &str, plural: &str) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
        }
    }

    /// The `apiVersion` string objects of this type carry (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// `plural.group` as the apiserver names a resource in error messages.
impl fmt::Display for Gvr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.plural)
        } else {
            write!(f, "{}.{}", self.plural, self.group)
        }
    }
}

/// What a resource path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub gvr: Gvr,
    /// `None` for cluster-scoped resources and for lists across all namespaces.
    pub namespace: Option<String>,
    /// `None` for collection requests (list, watch, create, delete-collection).
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    /// Namespace as used in storage keys: `""` when cluster-scoped.
    pub fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
}

/// Parses `/api/{v}/...` and `/apis/{g}/{v}/...` resource paths; `None` for anything else.
pub(crate) fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    // `/api/v1/namespaces/{name}[/status|/finalize]` addresses a Namespace object itself,
    // every other `/namespaces/{ns}/...` is a namespaced collection.
    let namespace_own_path =
        |tail: &[&str]| group.is_empty() && matches!(tail, [] | ["status" | "finalize"]);
    let (namespace, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !namespace_own_path(tail) => (Some(*ns), tail),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return None,
    };
    if plural.is_empty() || name.is_some_and(str::is_empty) {
        return None;
    }
    Some(Target {
        gvr: Gvr::new(group, version, plural),
        namespace: namespace.map(Into::into),
        name: name.map(Into::into),
        subresource: subresource.map(Into::into),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(
        gvr: (&str, &str, &str),
        ns: Option<&str>,
        name: Option<&str>,
        sub: Option<&str>,
    ) -> Target {
        Target {
            gvr: Gvr::new(gvr.0, gvr.1, gvr.2),
            namespace: ns.map(Into::into),
            name: name.map(Into::into),
            subresource: sub.map(Into::into),
        }
    }

    #[test]
    fn parses_core_and_group_paths() {
        let cm = ("", "v1", "configmaps");
        assert_eq!(
            parse_path("/api/v1/namespaces/d/configmaps"),
            Some(target(cm, Some("d"), None, None))
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/d/configmaps/a"),
            Some(target(cm, Some("d"), Some("a"), None))
        );
        assert_eq!(
            parse_path("/api/v1/configmaps"),
            Some(target(cm, None, None, None))
        );
        let deploy = ("apps", "v1", "deployments");
        assert_eq!(
            parse_path("/apis/apps/v1/namespaces/d/deployments/w/status"),
            Some(target(deploy, Some("d"), Some("w"), Some("status")))
        );
        assert_eq!(
            parse_path("/apis/x.io/v1/clusterthings/t"),
            Some(target(
                ("x.io", "v1", "clusterthings"),
                None,
                Some("t"),
                None
            ))
        );
    }

    #[test]
    fn namespace_objects_are_cluster_scoped() {
        let ns = ("", "v1", "namespaces");
        assert_eq!(
            parse_path("/api/v1/namespaces"),
            Some(target(ns, None, None, None))
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/d"),
            Some(target(ns, None, Some("d"), None))
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/d/status"),
            Some(target(ns, None, Some("d"), Some("status")))
        );
    }

    #[test]
    fn rejects_non_resource_paths() {
        for path in [
            "/version",
            "/apis",
            "/api/v1",
            "/apis/apps/v1",
            "/api/v1/namespaces/d/a/b/c/d",
            "/healthz",
        ] {
            assert_eq!(parse_path(path), None, "{path}");
        }
    }
}
