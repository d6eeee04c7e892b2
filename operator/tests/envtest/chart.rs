//! The chart and its CRD against the real API server: `helm install`, the CRD accepted as
//! structural, its defaults, field validation, every CEL rule, `kubectl explain`.

use serde_json::{Value, json};

use crate::control_plane::kubectl::Helm;
use crate::control_plane::{Kubectl, repo_root, wait_for};
use crate::{OPERATOR_NS, RELEASE, WAIT, ok};

/// `helm install` of the chart; its CRD accepted.
pub fn install_chart(helm: &Helm, admin: &Kubectl) {
    let chart = repo_root().join("charts/spindle-operator");
    let out = helm
        .run(&[
            "install",
            RELEASE,
            chart.to_str().unwrap(),
            "--namespace",
            OPERATOR_NS,
            "--create-namespace",
        ])
        .unwrap_or_else(|e| panic!("helm install: {e}"));
    assert!(out.contains("STATUS: deployed"), "helm install: {out}");
    let version = helm.run(&["version", "--short"]).unwrap_or_default();
    let crd = wait_for("the CRD to be Established", WAIT, || {
        let crd = admin.must_get(&["crd", "statefulapplications.spindle.dev"])?;
        let conditions = crd["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let is = |t: &str| conditions.iter().any(|c| c["type"] == t && c["status"] == "True");
        if let Some(c) = conditions.iter().find(|c| c["type"] == "NonStructuralSchema") {
            panic!("the API server calls the CRD's schema non-structural: {}", c["message"]);
        }
        if is("Established") && is("NamesAccepted") {
            Ok(crd)
        } else {
            Err(format!("conditions {conditions:?}"))
        }
    });
    let stored = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    let ours =
        spindle_operator::crd::custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    assert_eq!(
        stored, ours,
        "the API server stored another schema than the chart's CRD (it dropped or changed something)"
    );
    for (kind, name, ns) in [
        ("serviceaccount", RELEASE, Some(OPERATOR_NS)),
        ("clusterrole", RELEASE, None),
        ("clusterrolebinding", RELEASE, None),
        ("role", "spindle-operator-leader", Some(OPERATOR_NS)),
        ("rolebinding", "spindle-operator-leader", Some(OPERATOR_NS)),
        ("deployment", RELEASE, Some(OPERATOR_NS)),
        ("service", RELEASE, Some(OPERATOR_NS)),
    ] {
        let mut args = vec![kind, name];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        admin
            .must_get(&args)
            .unwrap_or_else(|e| panic!("after helm install: {e}"));
    }
    ok(format!(
        "helm install ({}) of charts/spindle-operator: release deployed; CRD statefulapplications.spindle.dev Established and NamesAccepted, its schema structural and stored as generated; ServiceAccount, ClusterRole(+Binding), leader Role(+Binding), Deployment and Service created",
        version.trim()
    ));
}

pub const CEL_NS: &str = "schema-checks";

pub fn base_app(name: &str) -> Value {
    json!({
        "apiVersion": "spindle.dev/v1alpha1",
        "kind": "StatefulApplication",
        "metadata": {"name": name, "namespace": CEL_NS},
        "spec": {"functions": [{"typename": "example/*", "endpoint": "http://fn:8000/statefun"}]}
    })
}

/// The API server's answer to creating `obj` (a dry run: nothing is stored).
pub fn dry_run_create(admin: &Kubectl, obj: &Value) -> Result<Value, String> {
    admin
        .run_stdin(
            &["create", "--dry-run=server", "-o", "json", "-f", "-"],
            &obj.to_string(),
        )
        .map(|out| serde_json::from_str(&out).expect("JSON"))
}

/// Checks that every scalar default of `schema` below `path` was applied in `value`.
pub fn check_defaults(schema: &Value, value: &Value, path: &str, checked: &mut Vec<String>) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    for (name, prop) in props {
        let here = format!("{path}.{name}");
        if let Some(default) = prop.get("default").filter(|d| !d.is_object() && !d.is_array()) {
            assert_eq!(
                &value[name], default,
                "{here}: the API server did not apply the CRD's default"
            );
            checked.push(format!("{here}={default}"));
        }
        if prop["type"] == "object" && value[name].is_object() {
            check_defaults(prop, &value[name], &here, checked);
        }
    }
}

/// Defaults, unknown fields, enums, and every CEL rule in the CRD broken once.
pub fn check_schema(admin: &Kubectl) {
    admin.ok(&["create", "namespace", CEL_NS]);
    let created = dry_run_create(admin, &base_app("defaults"))
        .unwrap_or_else(|e| panic!("a minimal application is refused: {e}"));
    let crd = admin.must_get(&["crd", "statefulapplications.spindle.dev"]).unwrap();
    let spec_schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut defaults = Vec::new();
    check_defaults(spec_schema, &created["spec"], "spec", &mut defaults);
    assert!(defaults.len() >= 3, "the CRD has few defaults: {defaults:?}");
    ok(format!(
        "defaults applied by the API server to a minimal application ({}): {}",
        defaults.len(),
        defaults.join(", ")
    ));

    let mut unknown = base_app("unknown");
    unknown["spec"]["bogus"] = json!(1);
    let err = dry_run_create(admin, &unknown).expect_err("an unknown field is refused");
    assert!(err.contains("unknown field \"spec.bogus\""), "unknown field: {err}");
    let mut policy = base_app("policy");
    policy["spec"]["checkpoint"] = json!({"retentionPolicy": "Sometimes"});
    let err = dry_run_create(admin, &policy).expect_err("a retention policy outside the enum is refused");
    assert!(err.contains("Unsupported value: \"Sometimes\""), "enum: {err}");
    ok(
        "structural schema enforced: unknown field spec.bogus refused (strict field validation), retentionPolicy \"Sometimes\" refused (enum Retain/Delete)",
    );

    let rules = spec_schema["x-kubernetes-validations"]
        .as_array()
        .expect("the CRD has CEL rules")
        .clone();
    // The stored object that the transition rule (oldSelf) is checked against.
    admin
        .run_stdin(&["create", "-f", "-"], &base_app("existing").to_string())
        .unwrap_or_else(|e| panic!("create: {e}"));
    for rule in &rules {
        let text = rule["rule"].as_str().unwrap();
        let message = rule["message"].as_str().unwrap();
        let field = format!("spec{}", rule["fieldPath"].as_str().unwrap_or(""));
        let err = match text {
            "self.keyGroups == oldSelf.keyGroups" => admin
                .run(&[
                    "patch",
                    "sapp",
                    "existing",
                    "-n",
                    CEL_NS,
                    "--type=merge",
                    "-p",
                    r#"{"spec":{"keyGroups":64}}"#,
                ])
                .expect_err("changing keyGroups is refused"),
            "self.workers >= 1 && self.workers <= self.keyGroups" => {
                let mut app = base_app("workers");
                app["spec"]["keyGroups"] = json!(4);
                app["spec"]["workers"] = json!(5);
                dry_run_create(admin, &app).expect_err("more workers than key groups is refused")
            }
            "self.functions.all(f, !has(f.port) || has(f.image))" => {
                let mut app = base_app("port");
                app["spec"]["functions"][0]["port"] = json!(8000);
                dry_run_create(admin, &app).expect_err("a port without an image is refused")
            }
            "self.checkpoint.retained >= 1" => {
                let mut app = base_app("retained");
                app["spec"]["checkpoint"] = json!({"retained": 0});
                dry_run_create(admin, &app).expect_err("retained 0 is refused")
            }
            other => panic!("the CRD has a CEL rule this test has no breaking object for: {other}"),
        };
        assert!(
            err.contains(message) && err.contains(&field),
            "rule `{text}`: the API server's message should name {field} and say `{message}`; it said: {err}"
        );
        ok(format!(
            "CEL rule `{text}` enforced by the API server: {}",
            err.lines().next().unwrap_or("").trim()
        ));
    }
    // Gone before the operator starts (the namespace controller deletes what is in it), so
    // that the operator never sees these.
    admin.ok(&["delete", "namespace", CEL_NS, "--timeout=60s"]);
}

pub fn check_explain(admin: &Kubectl) {
    let crd = spindle_operator::crd::custom_resource_definition();
    let checkpoint =
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["checkpoint"];
    let first_words: String = checkpoint["description"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .take(5)
        .collect::<Vec<_>>()
        .join(" ");
    let fields: Vec<&String> = checkpoint["properties"].as_object().unwrap().keys().collect();
    // The CRD's OpenAPI is published a moment after it is established.
    let out = wait_for("kubectl explain statefulapplication.spec.checkpoint", WAIT, || {
        let out = admin.run(&["explain", "statefulapplication.spec.checkpoint"])?;
        let text = out.split_whitespace().collect::<Vec<_>>().join(" ");
        if !text.contains(&first_words) {
            return Err(format!("no `{first_words}` in {out}"));
        }
        match fields.iter().find(|f| !out.contains(f.as_str())) {
            Some(f) => Err(format!("no field {f} in {out}")),
            None => Ok(out),
        }
    });
    let retention = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("retentionPolicy"))
        .take(3)
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    ok(format!(
        "kubectl explain statefulapplication.spec.checkpoint prints the field docs ({} fields: {}; e.g. `{retention}`)",
        fields.len(),
        fields.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", ")
    ));
}
