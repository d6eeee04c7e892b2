//! Apache Flink StateFun `module.yaml` as input: the equivalent `StatefulApplication`, with a
//! note for every component saying what it became and what was left out. Pure: no I/O.
//!
//! Both forms StateFun 3.x reads are accepted: one document per component (`kind:
//! io.statefun.endpoints.v2/http`, …, separated by `---`) and the older single document
//! (`version: "3.0"`, `module: {meta, spec: {endpoints, ingresses, egresses}}`), which StateFun
//! itself rewrites into the same components (`LegacyRemoteModuleV30`); so does this module.
//!
//! Kinds: `io.statefun.endpoints.v1/http` and `v2/http` (`components::endpoint`),
//! `io.statefun.kafka.v1/ingress` and `/egress`, `io.statefun.playground.v1/ingress` (an HTTP
//! ingress, the same `/{namespace}/{type}/{id}` convention) and `/egress` (a JSON-lines file).
//! Anything else — Kinesis, unknown kinds, fields whose meaning Spindle cannot give — is refused
//! with an [`ImportError`] naming the document (1-based, in file order) and the field. Errors
//! that only the spec's own validation finds are traced back to the document that produced the
//! failing entry.

mod components;
mod values;

use serde_json::{Value as Json, json};
use serde_yaml::Value as Yaml;

use crate::{API_VERSION, KIND, StatefulApplication};
use components::Builder;

/// A module, imported.
#[derive(Debug, Clone)]
pub struct Imported {
    pub app: StatefulApplication,
    /// The application as written (only the fields the module set).
    pub json: Json,
    /// Per component, what was mapped and what was not.
    pub notes: Vec<String>,
}

/// Why a module could not be imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin} document {document}: {reason}")]
pub struct ImportError {
    pub origin: String,
    /// 1-based, in file order (`---` separates documents).
    pub document: usize,
    pub reason: String,
}

/// True when `text` reads as a StateFun module rather than a `StatefulApplication`: its first
/// document has a `kind: io.statefun.…`, or is the older `module:` form.
pub fn is_module(text: &str) -> bool {
    use serde::Deserialize;
    // Only the first document decides, so that a module with a syntax error further down is
    // still reported as a module (naming that document), not as a broken application.
    let first = serde_yaml::Deserializer::from_str(text)
        .map(Yaml::deserialize)
        .find(|d| !matches!(d, Ok(Yaml::Null)));
    let Some(Ok(first)) = first else {
        return false;
    };
    let kind = first.get("kind").and_then(Yaml::as_str).unwrap_or("");
    kind.starts_with("io.statefun.") || (first.get("module").is_some() && first.get("apiVersion").is_none())
}

/// The documents of a multi-document YAML text (an empty one is `Null`, so that numbers stay
/// those of the file); an error names its document, 1-based.
fn documents(text: &str) -> Result<Vec<Yaml>, (usize, serde_yaml::Error)> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .enumerate()
        .map(|(i, d)| Yaml::deserialize(d).map_err(|e| (i + 1, e)))
        .collect()
}

/// One component: the document it came from, its kind and spec.
struct Component {
    document: usize,
    kind: String,
    spec: Yaml,
    /// Where its fields are in the document (`spec`, or `module.spec.ingresses[0].ingress.spec`
    /// for the older form), for error messages.
    at: String,
}

/// Imports the module in `text` (`origin` names it in errors) as application `name`.
pub fn import(text: &str, origin: &str, name: &str) -> Result<Imported, ImportError> {
    let fail = |document: usize, reason: String| ImportError {
        origin: origin.into(),
        document,
        reason,
    };
    let docs = documents(text).map_err(|(document, e)| fail(document, format!("not YAML: {e}")))?;
    let mut components = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let document = i + 1;
        if doc.is_null() {
            continue;
        }
        if !doc.is_mapping() {
            return Err(fail(document, "expected a mapping with `kind` and `spec`".into()));
        }
        if doc.get("module").is_some() {
            components.extend(legacy(&doc, document).map_err(|r| fail(document, r))?);
            continue;
        }
        let kind = values::str_field(&doc, "", "kind")
            .map_err(|r| fail(document, r))?
            .ok_or_else(|| {
                fail(
                    document,
                    "kind is missing (a StateFun component names it, e.g. `kind: io.statefun.endpoints.v2/http`)"
                        .into(),
                )
            })?;
        let spec = doc
            .get("spec")
            .cloned()
            .ok_or_else(|| fail(document, format!("kind {kind}: spec is missing")))?;
        components.push(Component {
            document,
            kind: kind.to_string(),
            spec,
            at: "spec".into(),
        });
    }
    let mut b = Builder::default();
    for c in &components {
        b.component(c).map_err(|reason| {
            let reason = match reason.strip_prefix("is not supported") {
                Some(rest) => format!("kind {} is not supported{rest}", c.kind),
                None => format!("kind {}: {reason}", c.kind),
            };
            fail(c.document, reason)
        })?;
    }
    if b.functions.is_empty() {
        return Err(fail(
            1,
            "the module declares no function endpoint (kind io.statefun.endpoints.v2/http)".into(),
        ));
    }
    let json = json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "functions": b.functions,
            "ingresses": b.ingresses,
            "egresses": b.egresses,
        },
    });
    let app: StatefulApplication = serde_json::from_value(json.clone())
        .map_err(|e| fail(1, format!("the imported application does not read back: {e}")))?;
    if let Err(errors) = app.validate() {
        // Name the document behind each failing entry (`spec.functions[0]…` → its endpoint).
        let mut lines = errors.0.iter().map(|e| {
            let source = b.source_of(&e.path);
            (
                source.map_or(1, |s| s.document),
                match source {
                    Some(s) => format!("kind {} (as {}): {}: {}", s.kind, s.entry, e.path, e.reason),
                    None => format!("{}: {}", e.path, e.reason),
                },
            )
        });
        let (document, first) = lines.next().expect("a failed validation names a field");
        let rest: String = lines.map(|(d, l)| format!("\n  document {d}: {l}")).collect();
        return Err(fail(document, format!("{first}{rest}")));
    }
    Ok(Imported {
        app,
        json,
        notes: b.notes,
    })
}

/// The module as the YAML of its `StatefulApplication`, notes first as comments.
pub fn to_yaml(imported: &Imported, origin: &str) -> String {
    let mut out = format!("# Imported from the StateFun module {origin} by `spindle import`.\n");
    for n in &imported.notes {
        out.push_str(&format!("# - {n}\n"));
    }
    out.push_str(&serde_yaml::to_string(&imported.json).expect("JSON values serialize as YAML"));
    out
}

/// An application name from the module's directory name: a DNS label, or `statefun-module`.
pub fn name_from_dir(dir: &str) -> String {
    let label: String = dir
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() || label.len() > 63 {
        "statefun-module".into()
    } else {
        label.to_string()
    }
}

/// The single-document form of StateFun 2.x/3.0 as components of the later kinds, the way
/// StateFun 3.x converts it: `meta.kind: http` is `io.statefun.endpoints.v1/http`,
/// `meta.type: io.statefun.kafka/ingress` is `io.statefun.kafka.v1/ingress` with `meta.id` as
/// `spec.id`.
fn legacy(doc: &Yaml, document: usize) -> Result<Vec<Component>, String> {
    let spec = doc
        .get("module")
        .and_then(|m| m.get("spec"))
        .ok_or("module.spec is missing")?;
    let mut out = Vec::new();
    let list = |key: &str| -> Result<Vec<Yaml>, String> {
        match spec.get(key) {
            None | Some(Yaml::Null) => Ok(Vec::new()),
            Some(Yaml::Sequence(s)) => Ok(s.clone()),
            Some(other) => Err(format!(
                "module.spec.{key}: expected a list, found {}",
                values::short(other)
            )),
        }
    };
    for (i, e) in list("endpoints")?.into_iter().enumerate() {
        let at = format!("module.spec.endpoints[{i}].endpoint");
        let e = e.get("endpoint").ok_or(format!("{at} is missing"))?;
        let kind = e
            .get("meta")
            .and_then(|m| m.get("kind"))
            .and_then(Yaml::as_str)
            .unwrap_or("");
        if kind != "http" {
            return Err(format!(
                "{at}.meta.kind `{kind}` is not supported: Spindle invokes functions over HTTP only (`kind: http`)"
            ));
        }
        out.push(Component {
            document,
            kind: "io.statefun.endpoints.v1/http".into(),
            spec: e.get("spec").cloned().ok_or(format!("{at}.spec is missing"))?,
            at: format!("{at}.spec"),
        });
    }
    for (key, wrap) in [("ingresses", "ingress"), ("egresses", "egress")] {
        for (i, e) in list(key)?.into_iter().enumerate() {
            let at = format!("module.spec.{key}[{i}].{wrap}");
            let e = e.get(wrap).ok_or(format!("{at} is missing"))?;
            let meta = e.get("meta").ok_or(format!("{at}.meta is missing"))?;
            let ty = meta.get("type").and_then(Yaml::as_str).unwrap_or("");
            let kind = match ty {
                "io.statefun.kafka/ingress" => "io.statefun.kafka.v1/ingress",
                "io.statefun.kafka/egress" => "io.statefun.kafka.v1/egress",
                other => {
                    return Err(format!(
                        "{at}.meta.type `{other}` is not supported: {}",
                        components::unsupported_reason(other)
                    ));
                }
            };
            let mut spec = e.get("spec").cloned().ok_or(format!("{at}.spec is missing"))?;
            let id = meta.get("id").ok_or(format!("{at}.meta.id is missing"))?;
            spec.as_mapping_mut()
                .ok_or(format!("{at}.spec: expected a mapping"))?
                .insert("id".into(), id.clone());
            out.push(Component {
                document,
                kind: kind.into(),
                spec,
                at: format!("{at}.spec"),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
