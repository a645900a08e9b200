//! Label and field selectors: parsed leniently, malformed ones refused.

use serde_json::Value;
use thiserror::Error;

/// Why a selector could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SelectorError {
    /// The selector text is not a valid selector.
    #[error("unable to parse requirement: {0}")]
    Malformed(String),
    /// The field selector names a field the simulator does not index.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
    /// A `metav1.LabelSelector` object is not valid; says which field, as Kubernetes validation does.
    #[error("{0}")]
    Invalid(String),
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector: all requirements must hold (an empty selector matches everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

/// Split on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 316
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && key.matches('/').count() <= 1
}

fn valid_value(value: &str) -> bool {
    value.len() <= 63 && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError::Malformed(whole.to_string()))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    if values.iter().any(|v| !valid_value(v)) || (values.len() > 1 && values.iter().any(String::is_empty)) {
        return Err(SelectorError::Malformed(whole.to_string()));
    }
    Ok(values)
}

fn parse_requirement(text: &str) -> Result<Requirement, SelectorError> {
    let malformed = || SelectorError::Malformed(text.to_string());
    let t = text.trim();
    if let Some(key) = t.strip_prefix('!') {
        let key = key.trim();
        return if valid_key(key) { Ok(Requirement::NotExists(key.to_string())) } else { Err(malformed()) };
    }
    for (op, is_eq) in [("!=", false), ("==", true), ("=", true)] {
        if let Some((key, value)) = t.split_once(op) {
            let (key, value) = (key.trim(), value.trim());
            if !valid_key(key) || !valid_value(value) || value.contains('=') {
                return Err(malformed());
            }
            let (k, v) = (key.to_string(), value.to_string());
            return Ok(if is_eq { Requirement::Equals(k, v) } else { Requirement::NotEquals(k, v) });
        }
    }
    let mut words = t.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default();
    let rest = words.next().unwrap_or_default().trim();
    if !valid_key(key) {
        return Err(malformed());
    }
    if rest.is_empty() {
        return Ok(Requirement::Exists(key.to_string()));
    }
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok(Requirement::NotIn(key.to_string(), parse_set(set, text)?));
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok(Requirement::In(key.to_string(), parse_set(set, text)?));
    }
    Err(malformed())
}

impl LabelSelector {
    /// Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h`; blank text selects everything.
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        if text.trim().is_empty() {
            return Ok(LabelSelector::default());
        }
        let requirements =
            split_top_level(text).into_iter().map(parse_requirement).collect::<Result<Vec<_>, _>>()?;
        Ok(LabelSelector { requirements })
    }

    /// A `metav1.LabelSelector` object (`matchLabels`, and `matchExpressions` with `In`, `NotIn`,
    /// `Exists`, `DoesNotExist`), as webhook configurations name the objects and namespaces they
    /// care about; `{}` and `null` select everything. Refusals name the field as Kubernetes does
    /// (`matchExpressions[0].values: Required value: …`).
    pub fn from_object(selector: &Value) -> Result<LabelSelector, SelectorError> {
        let invalid = |detail: String| SelectorError::Invalid(detail);
        let mut requirements = Vec::new();
        if selector.is_null() {
            return Ok(LabelSelector { requirements });
        }
        let Some(fields) = selector.as_object() else {
            return Err(invalid(format!("Invalid value: {selector}: must be a label selector object")));
        };
        if let Some(labels) = fields.get("matchLabels").filter(|l| !l.is_null()) {
            let labels = labels
                .as_object()
                .ok_or_else(|| invalid(format!("matchLabels: Invalid value: {labels}: must be an object")))?;
            for (key, value) in labels {
                let value = value.as_str().filter(|v| valid_value(v));
                match value {
                    Some(value) if valid_key(key) => {
                        requirements.push(Requirement::Equals(key.clone(), value.to_string()))
                    }
                    _ => {
                        return Err(invalid(format!(
                            "matchLabels: Invalid value: \"{key}\": not a valid label"
                        )));
                    }
                }
            }
        }
        let expressions = match fields.get("matchExpressions") {
            None | Some(Value::Null) => &Vec::new(),
            Some(Value::Array(expressions)) => expressions,
            Some(other) => {
                return Err(invalid(format!("matchExpressions: Invalid value: {other}: must be a list")));
            }
        };
        for (i, expression) in expressions.iter().enumerate() {
            let field = |name: &str| format!("matchExpressions[{i}].{name}");
            let key = expression["key"].as_str().unwrap_or_default().to_string();
            if !valid_key(&key) {
                return Err(invalid(format!(
                    "{}: Invalid value: \"{key}\": not a valid label key",
                    field("key")
                )));
            }
            let values: Vec<String> = match &expression["values"] {
                Value::Null => Vec::new(),
                Value::Array(values) => values
                    .iter()
                    .map(|v| v.as_str().filter(|v| valid_value(v)).map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        invalid(format!("{}: Invalid value: not a list of label values", field("values")))
                    })?,
                other => {
                    return Err(invalid(format!(
                        "{}: Invalid value: {other}: must be a list",
                        field("values")
                    )));
                }
            };
            let operator = expression["operator"].as_str().unwrap_or_default();
            let requirement = match operator {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(invalid(format!(
                        "{}: Required value: must be specified when `operator` is 'In' or 'NotIn'",
                        field("values")
                    )));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(invalid(format!(
                        "{}: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                        field("values")
                    )));
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::NotExists(key),
                _ => {
                    return Err(invalid(format!(
                        "{}: Invalid value: \"{operator}\": not a valid selector operator",
                        field("operator")
                    )));
                }
            };
            requirements.push(requirement);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether an object (its `metadata.labels`) satisfies every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.requirements.iter().all(|req| match req {
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, set) => label(k).is_some_and(|l| set.iter().any(|v| v == l)),
            Requirement::NotIn(k, set) => label(k).is_none_or(|l| set.iter().all(|v| v != l)),
        })
    }

    /// Whether the selector has no requirements.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// The object fields a field selector may name, and where they live in the object.
const FIELDS: [(&str, &str); 4] = [
    ("metadata.name", "/metadata/name"),
    ("metadata.namespace", "/metadata/namespace"),
    ("status.phase", "/status/phase"),
    ("spec.nodeName", "/spec/nodeName"),
];

/// A parsed field selector over `metadata.name`, `metadata.namespace`, `status.phase`, `spec.nodeName`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// (JSON pointer, expected value, equal?) triples.
    requirements: Vec<(&'static str, String, bool)>,
}

impl FieldSelector {
    /// Parse `metadata.name=x,status.phase!=Running`; blank text selects everything.
    pub fn parse(text: &str) -> Result<FieldSelector, SelectorError> {
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(FieldSelector::default());
        }
        for part in text.split(',') {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, true)
            } else {
                return Err(SelectorError::Malformed(part.to_string()));
            };
            let field = field.trim();
            let pointer = FIELDS
                .iter()
                .find(|(name, _)| *name == field)
                .map(|(_, pointer)| *pointer)
                .ok_or_else(|| SelectorError::UnsupportedField(field.to_string()))?;
            requirements.push((pointer, value.trim().to_string(), equal));
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether an object's fields satisfy every requirement (a missing field reads as "").
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|(pointer, value, equal)| {
            let actual = object.pointer(pointer).and_then(Value::as_str).unwrap_or_default();
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default", "labels": labels}, "status": {"phase": "Running"}})
    }

    #[test]
    fn equality_and_inequality_requirements_match_labels() {
        let p = pod(json!({"app": "x", "tier": "web"}));
        assert!(LabelSelector::parse("app=x").unwrap().matches(&p));
        assert!(LabelSelector::parse("app==x,tier=web").unwrap().matches(&p));
        assert!(!LabelSelector::parse("app!=x").unwrap().matches(&p));
        assert!(LabelSelector::parse("missing!=x").unwrap().matches(&p));
    }

    #[test]
    fn set_based_requirements_match_labels() {
        let p = pod(json!({"app": "x"}));
        assert!(LabelSelector::parse("app in (x,y),!tier").unwrap().matches(&p));
        assert!(!LabelSelector::parse("app notin (x)").unwrap().matches(&p));
        assert!(LabelSelector::parse("tier notin (web)").unwrap().matches(&p));
        assert!(LabelSelector::parse("app").unwrap().matches(&p));
        assert!(!LabelSelector::parse("tier").unwrap().matches(&p));
    }

    #[test]
    fn malformed_label_selectors_are_refused() {
        for bad in ["app in x", "=x", "app=x=y", "a b", "app in (x", "!", "app=(x)"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn field_selectors_match_known_fields_and_refuse_others() {
        let p = pod(json!({}));
        assert!(FieldSelector::parse("metadata.name=p").unwrap().matches(&p));
        assert!(
            FieldSelector::parse("status.phase!=Pending,metadata.namespace==default").unwrap().matches(&p)
        );
        assert!(!FieldSelector::parse("spec.nodeName=n1").unwrap().matches(&p));
        assert!(FieldSelector::parse("spec.nodeName=").unwrap().matches(&p));
        assert_eq!(
            FieldSelector::parse("spec.other=x"),
            Err(SelectorError::UnsupportedField("spec.other".into()))
        );
        assert!(FieldSelector::parse("metadata.name").is_err());
    }

    #[test]
    fn a_label_selector_object_matches_labels_and_expressions() {
        let selector = LabelSelector::from_object(&json!({
            "matchLabels": {"app": "x"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web", "db"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "eci.io/instance", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }))
        .unwrap();
        assert!(selector.matches(&pod(json!({"app": "x", "tier": "web", "eci.io/instance": "i-1"}))));
        assert!(
            !selector
                .matches(&pod(json!({"app": "x", "tier": "web", "env": "prod", "eci.io/instance": "i"})))
        );
        assert!(!selector.matches(&pod(json!({"app": "x", "tier": "cache", "eci.io/instance": "i"}))));
        assert!(!selector.matches(&pod(json!({"app": "x", "tier": "web"}))));
        assert!(
            !selector
                .matches(&pod(json!({"app": "x", "tier": "web", "eci.io/instance": "i", "legacy": "1"})))
        );
        for everything in [json!({}), Value::Null] {
            assert!(LabelSelector::from_object(&everything).unwrap().matches(&pod(json!({}))));
        }
    }

    #[test]
    fn an_invalid_label_selector_object_names_the_field() {
        let refused = |selector: Value| LabelSelector::from_object(&selector).unwrap_err().to_string();
        assert_eq!(
            refused(json!({"matchExpressions": [{"key": "a", "operator": "In"}]})),
            "matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
        );
        assert_eq!(
            refused(json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})),
            "matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
        );
        assert_eq!(
            refused(json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})),
            "matchExpressions[0].operator: Invalid value: \"Gt\": not a valid selector operator"
        );
        assert!(LabelSelector::from_object(&json!({"matchLabels": {"a": "not ok"}})).is_err());
    }

    proptest::proptest! {
        #[test]
        fn an_equality_selector_matches_exactly_the_objects_with_that_label(
            key in "[a-z]{1,5}", value in "[a-z0-9]{0,5}", other in "[a-z0-9]{0,5}"
        ) {
            let eq = LabelSelector::parse(&format!("{key}={value}")).unwrap();
            let ne = LabelSelector::parse(&format!("{key}!={value}")).unwrap();
            let set = LabelSelector::parse(&format!("{key} in ({value})")).unwrap();
            let obj = pod(json!({ key.clone(): other.clone() }));
            proptest::prop_assert_eq!(eq.matches(&obj), value == other);
            proptest::prop_assert_eq!(ne.matches(&obj), value != other);
            proptest::prop_assert_eq!(set.matches(&obj), value == other);
        }
    }
}
