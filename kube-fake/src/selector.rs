//! Label and field selectors as sent in `labelSelector` / `fieldSelector` query parameters.

use serde_json::Value;

/// What a list or watch selects: namespace plus label and field selectors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Filter {
    /// `None` selects every namespace (and cluster-scoped objects).
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    /// Whether `object` is selected.
    pub fn matches(&self, object: &Value) -> bool {
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str);
        self.namespace
            .as_deref()
            .is_none_or(|ns| namespace == Some(ns))
            && self.labels.matches(object)
            && self.fields.matches(object)
    }
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed equality- or set-based label selector (all requirements must hold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(selector: &str) -> Result<Self, String> {
        split_top_level(selector)
            .into_iter()
            .map(str::trim)
            .filter(|term| !term.is_empty())
            .map(parse_requirement)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether `object`'s `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let label = |key: &str| {
            object
                .pointer("/metadata/labels")
                .and_then(|l| l.get(key))
                .and_then(Value::as_str)
        };
        self.0.iter().all(|req| match req {
            Requirement::In(key, values) => {
                label(key).is_some_and(|v| values.iter().any(|x| x == v))
            }
            Requirement::NotIn(key, values) => {
                label(key).is_none_or(|v| values.iter().all(|x| x != v))
            }
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::DoesNotExist(key) => label(key).is_none(),
        })
    }
}

/// Splits on commas outside parentheses, so `a in (x,y),b=c` yields two terms.
fn split_top_level(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
}

fn parse_requirement(term: &str) -> Result<Requirement, String> {
    let invalid = || format!("unable to parse requirement: {term:?}");
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(Requirement::NotIn(
            key.trim().into(),
            vec![value.trim().into()],
        ));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::In(
            key.trim().into(),
            vec![value.trim().into()],
        ));
    }
    if let Some((key, rest)) = term.split_once(char::is_whitespace) {
        let rest = rest.trim_start();
        let (negated, list) = if let Some(list) = rest.strip_prefix("notin") {
            (true, list)
        } else if let Some(list) = rest.strip_prefix("in") {
            (false, list)
        } else {
            return Err(invalid());
        };
        let list = list
            .trim()
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or_else(invalid)?;
        let values = list.split(',').map(|v| v.trim().to_owned()).collect();
        let key = key.trim().to_owned();
        return Ok(if negated {
            Requirement::NotIn(key, values)
        } else {
            Requirement::In(key, values)
        });
    }
    match term.strip_prefix('!') {
        Some(key) => Ok(Requirement::DoesNotExist(key.trim().into())),
        None => Ok(Requirement::Exists(term.into())),
    }
}

/// A parsed field selector: `path=value` / `path!=value` terms over dotted object paths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses `metadata.name=a,metadata.namespace!=b`.
    pub fn parse(selector: &str) -> Result<Self, String> {
        let parse_term = |term: &str| {
            let (path, equal, value) = if let Some((p, v)) = term.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (p, true, v)
            } else {
                return Err(format!("invalid field selector term: {term:?}"));
            };
            Ok((path.trim().to_owned(), equal, value.trim().to_owned()))
        };
        selector
            .split(',')
            .filter(|t| !t.trim().is_empty())
            .map(parse_term)
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether every term holds; a missing field compares as the empty string, like the apiserver.
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, expected)| {
            let actual = path
                .split('.')
                .try_fold(object, |v, key| v.get(key))
                .map_or_else(String::new, |v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
            (actual == *expected) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labeled(labels: Value) -> Value {
        json!({ "metadata": { "name": "a", "namespace": "d", "labels": labels } })
    }

    #[test]
    fn equality_and_set_selectors() {
        let obj = labeled(json!({ "app": "web", "tier": "front" }));
        let matches = |s: &str| LabelSelector::parse(s).unwrap().matches(&obj);
        assert!(matches(""));
        assert!(matches("app=web,tier==front"));
        assert!(!matches("app=web,tier=back"));
        assert!(matches("app!=db"));
        assert!(matches("tier in (back, front),app"));
        assert!(!matches("tier notin (front)"));
        assert!(matches("!missing,app notin (db)"));
        assert!(!matches("missing"));
        assert!(!matches("missing in (x)"));
    }

    #[test]
    fn malformed_set_selector_is_an_error() {
        assert!(LabelSelector::parse("a within (x)").is_err());
        assert!(LabelSelector::parse("a in x").is_err());
    }

    #[test]
    fn field_selectors() {
        let obj = labeled(json!({}));
        let matches = |s: &str| FieldSelector::parse(s).unwrap().matches(&obj);
        assert!(matches("metadata.name=a,metadata.namespace==d"));
        assert!(!matches("metadata.name=b"));
        assert!(matches("metadata.name!=b"));
        assert!(matches("status.phase="));
        assert!(FieldSelector::parse("metadata.name").is_err());
    }
}
