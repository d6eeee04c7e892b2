//! The CRD `statefulapplications.spindle.dev`, built from the spec's JSON schema.
//!
//! Kubernetes wants a *structural* schema: every type spelled out inline (no `$ref`), no
//! `additionalProperties` beside `properties`, only the formats it knows. `structural` turns
//! the schemars output into that; the rest of the CRD (names, printer columns, CEL rules) is
//! written here.

use serde_json::{Map, Value, json};
use spindle_spec::{API_GROUP, PLURAL, VERSION};

/// `kubectl get sapp`.
pub const SHORT_NAME: &str = "sapp";

/// The CRD as a JSON value.
pub fn custom_resource_definition() -> Value {
    let schema = spindle_spec::reference::schema();
    let defs = schema["$defs"].as_object().cloned().unwrap_or_default();
    let mut spec = structural(&schema["properties"]["spec"], &defs);
    let rules = json!([
        {
            "rule": "self.keyGroups == oldSelf.keyGroups",
            "message": "keyGroups is immutable: state is stored by key group in checkpoints",
            "fieldPath": ".keyGroups"
        },
        {
            "rule": "self.workers >= 1 && self.workers <= self.keyGroups",
            "message": "workers must be at least 1 and at most keyGroups: every worker needs a key group",
            "fieldPath": ".workers"
        },
        {
            "rule": "self.functions.all(f, !has(f.port) || has(f.image))",
            "message": "functions[].port is the port of the function's container: it needs an image",
            "fieldPath": ".functions"
        },
        {
            "rule": "self.checkpoint.retained >= 1",
            "message": "checkpoint.retained must be at least 1",
            "fieldPath": ".checkpoint.retained"
        }
    ]);
    spec.as_object_mut()
        .expect("the spec schema is an object")
        .insert("x-kubernetes-validations".into(), rules);
    let open_api = json!({
        "type": "object",
        "description": schema["description"],
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status_schema()
        }
    });
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{PLURAL}.{API_GROUP}")},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": spindle_spec::KIND,
                "listKind": format!("{}List", spindle_spec::KIND),
                "plural": PLURAL,
                "singular": "statefulapplication",
                "shortNames": [SHORT_NAME]
            },
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": open_api},
                // `kubectl scale sapp A --replicas N` and HorizontalPodAutoscalers change
                // `spec.workers` (the operator carries the change out as a rescale), and read
                // the workers running and their pods' selector from the status.
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.workers",
                        "statusReplicasPath": ".status.replicas",
                        "labelSelectorPath": ".status.selector"
                    }
                },
                "additionalPrinterColumns": [
                    {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                    {"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"},
                    {"name": "Workers", "type": "string", "description": "ready/desired", "jsonPath": ".status.workerSummary"},
                    {"name": "Checkpoint", "type": "integer", "description": "the last completed checkpoint", "jsonPath": ".status.lastCheckpoint"},
                    {"name": "Checkpointed", "type": "date", "description": "when the operator first saw the last completed checkpoint", "jsonPath": ".status.lastCheckpointTime"},
                    {"name": "Rollbacks", "type": "integer", "description": "rollbacks to the last checkpoint (a worker failed or restarted)", "jsonPath": ".status.rollbacks"},
                    {"name": "Failures", "type": "integer", "description": "checkpoints that failed", "jsonPath": ".status.checkpointsFailed", "priority": 1},
                    {"name": "Degraded", "type": "string", "description": "the Degraded condition's reason", "jsonPath": ".status.conditions[?(@.type==\"Degraded\")].reason", "priority": 1},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
                ]
            }]
        }
    })
}

/// The status subresource's schema, from [`ApplicationStatus`](crate::resource::ApplicationStatus).
fn status_schema() -> Value {
    let schema =
        serde_json::to_value(schemars::schema_for!(crate::resource::ApplicationStatus)).expect("schemas serialize");
    let defs = schema["$defs"].as_object().cloned().unwrap_or_default();
    let mut status = structural(&schema, &defs);
    status["description"] = "Observed state, written by the operator.".into();
    status
}

pub fn crd_yaml() -> String {
    let header = "# Generated by `cargo run -p spindle-operator --bin crdgen` from spec/src/types.rs; do not edit.\n";
    format!(
        "{header}{}",
        serde_yaml::to_string(&custom_resource_definition()).expect("CRDs serialize")
    )
}

/// Formats Kubernetes validates; others (schemars' `uint32`, …) become bounds.
const KNOWN_FORMATS: [&str; 4] = ["int32", "int64", "float", "double"];

fn structural(s: &Value, defs: &Map<String, Value>) -> Value {
    let Some(obj) = s.as_object() else {
        return s.clone();
    };
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        let mut inlined = structural(&defs[name], defs);
        // A field's own description and default win over the referenced type's.
        for key in ["description", "default"] {
            if let Some(v) = obj.get(key) {
                inlined[key] = v.clone();
            }
        }
        return inlined;
    }
    // A documented unit enum is `oneOf` one `const` per variant; Kubernetes wants `enum` (the
    // field's description says what the values mean).
    if let Some(variants) = obj.get("oneOf").and_then(Value::as_array)
        && variants.iter().all(|v| v.get("const").is_some())
    {
        let mut out = Map::new();
        out.insert("type".into(), "string".into());
        out.insert("enum".into(), variants.iter().map(|v| v["const"].clone()).collect());
        if let Some(d) = obj.get("description") {
            out.insert("description".into(), d.clone());
        }
        return Value::Object(out);
    }
    // `Option<Struct>` is `anyOf: [{$ref}, {type: null}]`: an absent field in Kubernetes.
    if let Some(any) = obj.get("anyOf").and_then(Value::as_array) {
        let non_null: Vec<&Value> = any.iter().filter(|v| v["type"] != "null").collect();
        if let [only] = non_null.as_slice() {
            let mut out = structural(only, defs);
            if let Some(d) = obj.get("description") {
                out["description"] = d.clone();
            }
            return out;
        }
    }
    let mut out = Map::new();
    for (k, v) in obj {
        match k.as_str() {
            "$schema" | "$defs" | "title" | "additionalProperties" if obj.contains_key("properties") => {}
            "$schema" | "$defs" | "title" => {}
            "type" => {
                let t = match v {
                    Value::Array(ts) => ts.iter().find(|t| *t != "null").cloned().unwrap_or(Value::Null),
                    t => t.clone(),
                };
                out.insert(k.clone(), t);
            }
            "format" => {
                let f = v.as_str().unwrap_or("");
                if KNOWN_FORMATS.contains(&f) {
                    out.insert(k.clone(), v.clone());
                } else if f.starts_with("uint") {
                    out.insert("format".into(), "int64".into());
                    out.entry("minimum").or_insert(0.into());
                }
            }
            "properties" => {
                let props = v
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, p)| (name.clone(), structural(p, defs)))
                    .collect();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" | "additionalProperties" => {
                out.insert(k.clone(), structural(v, defs));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(v: &Value, path: &str, f: &mut impl FnMut(&str, &Map<String, Value>)) {
        if let Some(obj) = v.as_object() {
            f(path, obj);
            for (k, child) in obj {
                walk(child, &format!("{path}.{k}"), f);
            }
        }
    }

    #[test]
    fn schema_is_structural() {
        let crd = custom_resource_definition();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        walk(schema, "", &mut |path, obj| {
            if path.ends_with(".properties") {
                return; // field names (a field may be called `type`), not a schema
            }
            assert!(!obj.contains_key("$ref"), "{path}: $ref");
            assert!(!obj.contains_key("anyOf"), "{path}: anyOf");
            assert!(
                !(obj.contains_key("properties") && obj.contains_key("additionalProperties")),
                "{path}: properties with additionalProperties"
            );
            if let Some(t) = obj.get("type") {
                assert!(t.is_string(), "{path}: type {t}");
            }
            if let Some(f) = obj.get("format") {
                assert!(KNOWN_FORMATS.contains(&f.as_str().unwrap()), "{path}: format {f}");
            }
        });
        let spec = &schema["properties"]["spec"];
        assert_eq!(spec["properties"]["keyGroups"]["default"], 128);
        assert_eq!(
            spec["properties"]["functions"]["items"]["properties"]["callTimeout"]["type"],
            "string"
        );
        assert!(
            spec["properties"]["ingresses"]["items"]["properties"]["http"]["properties"]["port"]["description"]
                .as_str()
                .unwrap()
                .contains("Port to listen on")
        );
    }

    /// The CRD is committed twice: in `crds/` (for `kubectl apply`) and in the chart's
    /// `crds/` (Helm installs it from there, and charts cannot reach outside their folder).
    #[test]
    fn committed_crd_matches_the_code() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let want = crd_yaml();
        for path in [
            "crds/statefulapplications.spindle.dev.yaml",
            "charts/spindle-operator/crds/statefulapplications.spindle.dev.yaml",
        ] {
            let path = root.join(path);
            if std::env::var_os("SPINDLE_BLESS").is_some() {
                std::fs::write(&path, &want).unwrap();
            }
            let have = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                have == want,
                "{} is out of date with spec/src/types.rs: run `SPINDLE_BLESS=1 cargo test -p spindle-operator`",
                path.display()
            );
        }
    }

    #[test]
    fn printer_columns_enums_and_rules() {
        let crd = custom_resource_definition();
        let version = &crd["spec"]["versions"][0];
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            [
                "Ready",
                "Reason",
                "Workers",
                "Checkpoint",
                "Checkpointed",
                "Rollbacks",
                "Failures",
                "Degraded",
                "Age"
            ]
        );
        let scale = &version["subresources"]["scale"];
        assert_eq!(scale["specReplicasPath"], ".spec.workers");
        // The paths name fields the schema has, of the types Kubernetes wants.
        let schema = &version["schema"]["openAPIV3Schema"];
        assert_eq!(schema["properties"]["spec"]["properties"]["workers"]["type"], "integer");
        assert_eq!(
            schema["properties"]["status"]["properties"]["replicas"]["type"],
            "integer"
        );
        assert_eq!(
            schema["properties"]["status"]["properties"]["selector"]["type"],
            "string"
        );
        let schema = &version["schema"]["openAPIV3Schema"];
        let policy = &schema["properties"]["spec"]["properties"]["checkpoint"]["properties"]["retentionPolicy"];
        assert_eq!(policy["enum"], json!(["Retain", "Delete"]));
        assert_eq!(policy["default"], "Retain");
        let status = &schema["properties"]["status"]["properties"];
        for field in [
            "conditions",
            "observedGeneration",
            "workers",
            "readyWorkers",
            "workerSummary",
            "lastCheckpoint",
            "lastCheckpointTime",
            "rollbacks",
            "checkpointsFailed",
            "dataLoss",
            "replicas",
            "selector",
            "rescale",
        ] {
            assert!(status.get(field).is_some(), "status.{field}");
        }
        let rules = schema["properties"]["spec"]["x-kubernetes-validations"]
            .as_array()
            .unwrap();
        assert!(
            rules.iter().any(|r| r["rule"] == "self.keyGroups == oldSelf.keyGroups"),
            "keyGroups is immutable"
        );
    }
}
