//! The greeter example applied and reconciled: the objects, the status, events, printer
//! columns, and the pods made ready as a kubelet would.

use serde_json::{Value, json};
use spindle_operator::builders;

use crate::control_plane::{Kubectl, repo_root, wait_for};
use crate::{NS, WAIT, ok};

/// The object exists and its fields are owned by the operator's server-side apply.
pub fn applied_by_operator(admin: &Kubectl, kind: &str, name: &str) -> Result<Value, String> {
    let obj = admin.must_get(&[kind, name, "-n", NS, "--show-managed-fields"])?;
    let managers = obj["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
    if managers
        .iter()
        .any(|m| m["manager"] == "spindle-operator" && m["operation"] == "Apply")
    {
        Ok(obj)
    } else {
        Err(format!(
            "{kind}/{name} has no Apply entry of field manager spindle-operator: {managers:?}"
        ))
    }
}

pub struct App {
    pub spec: spindle_spec::StatefulApplication,
    /// (kind for kubectl, name) of every object the operator applies for it.
    pub objects: Vec<(&'static str, String)>,
    /// The label selector of its worker pods.
    pub worker_selector: String,
}

pub fn sapp(admin: &Kubectl, name: &str) -> Result<Value, String> {
    admin.must_get(&["sapp", name, "-n", NS])
}

pub fn condition(app: &Value, type_: &str) -> Option<Value> {
    app["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// `condition type_` has `status` (and `reason`, when given).
pub fn has_condition(app: &Value, type_: &str, status: &str, reason: Option<&str>) -> Result<(), String> {
    match condition(app, type_) {
        Some(c) if c["status"] == status && reason.is_none_or(|r| c["reason"] == r) => Ok(()),
        other => Err(format!("condition {type_}: want {status} {reason:?}, have {other:?}")),
    }
}

/// The events about `name` with `reason`, as (note, reportingInstance).
pub fn events(admin: &Kubectl, name: &str, reason: &str) -> Vec<(String, String)> {
    let list = admin.get(&["events.events.k8s.io", "-n", NS]).unwrap_or_default();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == name && e["reason"] == reason)
        .map(|e| {
            (
                e["note"].as_str().unwrap_or("").to_string(),
                e["reportingInstance"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

pub fn event(admin: &Kubectl, name: &str, reason: &str) -> Result<(String, String), String> {
    events(admin, name, reason)
        .pop()
        .ok_or_else(|| format!("no event {reason} about {name}"))
}

/// `kubectl get sapp` as a table: the header and the row of `name`.
pub fn table(admin: &Kubectl, name: &str) -> (Vec<String>, Vec<String>) {
    let out = admin.ok(&["get", "sapp", "-n", NS]);
    let mut lines = out
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>());
    let header = lines.next().unwrap_or_default();
    let row = lines
        .find(|r| r.first().map(String::as_str) == Some(name))
        .unwrap_or_default();
    (header, row)
}

/// `kubectl apply -f examples/greeter/k8s.yaml`: everything applied by the operator, into a
/// namespace whose Pod Security admission enforces the "restricted" profile, so every pod the
/// controller-manager creates from the operator's objects is checked by the API server.
pub fn greeter_applied(admin: &Kubectl, leader: &str) -> App {
    admin.ok(&["create", "namespace", NS]);
    admin.ok(&[
        "label",
        "namespace",
        NS,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    ]);
    // The admission is on: a pod without the restricted settings is refused.
    let refused = admin
        .run(&["run", "plain-pod", "-n", NS, "--image=busybox", "--restart=Never"])
        .expect_err("a pod without securityContext must be refused in a restricted namespace");
    assert!(
        refused.contains("violates PodSecurity") && refused.contains("restricted"),
        "{refused}"
    );
    ok(format!(
        "namespace {NS} enforces Pod Security `restricted` (a plain pod is refused: `{}`)",
        refused
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(160)
            .collect::<String>()
    ));
    let example = repo_root().join("examples/greeter/k8s.yaml");
    admin.ok(&["apply", "-n", NS, "-f", example.to_str().unwrap()]);
    let mut spec = spindle_spec::load_file(&example).expect("the example loads");
    spec.metadata.namespace = Some(NS.into());
    let app = wait_for("the finalizer on greeter", WAIT, || {
        let app = sapp(admin, "greeter")?;
        let has = app["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "spindle.dev/cleanup"));
        if has {
            Ok(app)
        } else {
            Err(format!("finalizers {}", app["metadata"]["finalizers"]))
        }
    });
    let uid = app["metadata"]["uid"].as_str().unwrap().to_string();
    let owner = builders::owner_reference(&spec, &uid);
    let config = builders::OperatorConfig::default();
    let name = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| m.name.clone().unwrap();
    let mut objects: Vec<(&'static str, String)> = vec![
        (
            "configmap",
            name(&builders::config_map(&spec, &config, &owner).metadata),
        ),
        ("service", name(&builders::peer_service(&spec, &owner).metadata)),
        (
            "statefulset",
            name(&builders::worker_statefulset(&spec, &config, &owner, None).metadata),
        ),
        (
            "poddisruptionbudget",
            name(&builders::pod_disruption_budget(&spec, &owner).metadata),
        ),
    ];
    if let Some(s) = builders::ingress_service(&spec, &owner) {
        objects.push(("service", name(&s.metadata)));
    }
    objects.push(("secret", builders::tls_secret_name(&spec)));
    let network = builders::NetworkConfig::default();
    for p in [
        builders::worker_network_policy(&spec, &network, &owner),
        builders::function_network_policy(&spec, &owner),
    ]
    .into_iter()
    .flatten()
    {
        objects.push(("networkpolicy", name(&p.metadata)));
    }
    for i in 0..spec.spec.functions.len() {
        if let Some(d) = builders::function_deployment(&spec, i, &config, &owner) {
            objects.push(("deployment", name(&d.metadata)));
        }
        if let Some(s) = builders::function_service(&spec, i, &owner) {
            objects.push(("service", name(&s.metadata)));
        }
    }
    for (kind, obj_name) in &objects {
        let obj = wait_for(&format!("{kind}/{obj_name} applied by the operator"), WAIT, || {
            applied_by_operator(admin, kind, obj_name)
        });
        let owners = obj["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            owners
                .iter()
                .any(|o| o["uid"] == uid.as_str() && o["controller"] == true),
            "{kind}/{obj_name} is not owned by the application: {owners:?}"
        );
    }
    ok(format!(
        "kubectl apply -f examples/greeter/k8s.yaml: finalizer spindle.dev/cleanup added; server-side applied (field manager spindle-operator) and owned by the application: {}",
        objects
            .iter()
            .map(|(k, n)| format!("{k}/{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let app = wait_for("greeter's status", WAIT, || {
        let app = sapp(admin, "greeter")?;
        if app["status"]["observedGeneration"] != app["metadata"]["generation"] {
            return Err(format!(
                "observedGeneration {} of generation {}",
                app["status"]["observedGeneration"], app["metadata"]["generation"]
            ));
        }
        has_condition(&app, "Ready", "False", Some("WorkersNotReady"))?;
        has_condition(&app, "Progressing", "True", Some("RollingOut"))?;
        has_condition(&app, "Degraded", "False", None)?;
        Ok(app)
    });
    let (note, instance) = wait_for("the Applied event", WAIT, || event(admin, "greeter", "Applied"));
    assert_eq!(instance, leader, "the leader reports events");
    ok(format!(
        "status: observedGeneration {} = generation; Ready=False (WorkersNotReady: the pods are Pending, nothing schedules them), Progressing=True (RollingOut), Degraded=False; event Applied (`{note}`) reported by {instance}",
        app["status"]["observedGeneration"]
    ));
    let (header, row) = table(admin, "greeter");
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "REASON",
            "WORKERS",
            "CHECKPOINT",
            "CHECKPOINTED",
            "ROLLBACKS",
            "AGE"
        ],
        "printer columns"
    );
    assert_eq!(
        row[..4],
        ["greeter", "False", "WorkersNotReady", "0/2"],
        "kubectl get sapp row: {row:?}"
    );
    ok(format!(
        "kubectl get sapp shows the printer columns: {} / {}",
        header.join(" "),
        row.join(" ")
    ));
    // kube-controller-manager made the pods (Pending).
    let worker_selector = builders::worker_selector(&spec)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let app = App {
        spec,
        objects,
        worker_selector,
    };
    let pods = wait_for("the worker pods", WAIT, || worker_pods(admin, &app, 2));
    ok(format!(
        "kube-controller-manager created the worker pods of the StatefulSet (Pending: no scheduler, no kubelet), admitted by Pod Security `restricted`: {}",
        pods.join(", ")
    ));
    let functions = wait_for("the function pod", WAIT, || {
        let pods = all_pods(admin, "app.kubernetes.io/component=function-0");
        if pods.is_empty() {
            Err("no function pod".to_string())
        } else {
            Ok(pods)
        }
    });
    // What admission let through is what the operator built: the security settings are on
    // the pods as stored.
    let pod = admin.must_get(&["pod", &pods[0], "-n", NS]).unwrap();
    assert_eq!(
        pod["spec"]["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    let tls = pod["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tls")
        .cloned()
        .expect("the TLS mount");
    assert_eq!(tls["subPathExpr"], "$(POD_NAME)");
    ok(format!(
        "the function Deployment's pod {} is admitted too; the worker pods carry seccomp RuntimeDefault, no ServiceAccount token, the TLS Secret's own directory at /etc/spindle/tls (subPathExpr $(POD_NAME))",
        functions.join(", ")
    ));
    let policy = admin
        .must_get(&["networkpolicy", &builders::workers_policy_name(&app.spec), "-n", NS])
        .unwrap();
    let ports: Vec<String> = policy["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ports"][0]["port"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(ports, ["peer", "admin", "ingress"], "{policy}");
    assert_eq!(
        policy["spec"]["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        crate::OPERATOR_NS
    );
    ok(format!(
        "NetworkPolicy {} accepted by the API server: peer port from the application's workers, admin port from the operator's namespace, ingress port open",
        builders::workers_policy_name(&app.spec)
    ));
    app
}

/// The worker pods' names once there are exactly `n`.
pub fn worker_pods(admin: &Kubectl, app: &App, n: usize) -> Result<Vec<String>, String> {
    let list = admin.must_get(&["pods", "-n", NS, "-l", &app.worker_selector])?;
    let names: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    if names.len() == n {
        Ok(names)
    } else {
        Err(format!("{} worker pods: {names:?}", names.len()))
    }
}

pub fn all_pods(admin: &Kubectl, selector: &str) -> Vec<String> {
    let list = admin.get(&["pods", "-n", NS, "-l", selector]).unwrap_or_default();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

pub fn ready_status(ready: bool) -> Value {
    let s = if ready { "True" } else { "False" };
    json!({"phase": "Running", "conditions": [{"type": "Ready", "status": s}, {"type": "ContainersReady", "status": s}]})
}

/// Every pod of the application marked Running and Ready (as kubelets would): Ready=True.
pub fn workers_ready(admin: &Kubectl, app: &App) {
    // One pod per worker and per function Deployment (one replica each).
    let want = app.spec.spec.workers as usize + app.objects.iter().filter(|(k, _)| *k == "deployment").count();
    let pods = wait_for("every pod of greeter", WAIT, || {
        let pods = all_pods(admin, "app.kubernetes.io/instance=greeter");
        if pods.len() == want {
            Ok(pods)
        } else {
            Err(format!("{} of {want} pods: {pods:?}", pods.len()))
        }
    });
    for p in &pods {
        admin.set_pod(NS, p, &ready_status(true));
    }
    let status = wait_for("greeter Ready", WAIT, || {
        let a = sapp(admin, "greeter")?;
        has_condition(&a, "Ready", "True", Some("AllReady"))?;
        has_condition(&a, "Progressing", "False", Some("RolledOut"))?;
        Ok(a)
    });
    let (note, _) = wait_for("the Ready event", WAIT, || event(admin, "greeter", "Ready"));
    let (_, row) = table(admin, "greeter");
    assert_eq!(
        row[..4],
        ["greeter", "True", "AllReady", "2/2"],
        "kubectl get sapp row: {row:?}"
    );
    ok(format!(
        "the test marks the pods Running/Ready as a kubelet would ({}): the StatefulSet and Deployment report them, greeter Ready=True ({}), event Ready (`{note}`); kubectl get sapp: {}",
        pods.join(", "),
        condition(&status, "Ready").unwrap()["message"].as_str().unwrap_or(""),
        row.join(" ")
    ));
}

pub fn sts(admin: &Kubectl) -> Result<(i64, String), String> {
    let s = admin.must_get(&["statefulset", "greeter-worker", "-n", NS])?;
    let replicas = s["spec"]["replicas"].as_i64().unwrap_or(-1);
    let layout = s["metadata"]["annotations"]["spindle.dev/workers"]
        .as_str()
        .unwrap_or("")
        .to_string();
    Ok((replicas, layout))
}

/// `spec.checkpoint.savepointRequest` passes the CRD's schema and `status.savepoint` the
/// status schema (a pruned field would not come back). Worker 0's admin endpoint is a closed
/// loopback port here, so the request stays `Pending`, with the connection error — and the
/// workers are not restarted for it (the StatefulSet's template is unchanged).
pub fn savepoint_pending(admin: &Kubectl) {
    let before = admin.must_get(&["statefulset", "greeter-worker", "-n", NS]).unwrap()["spec"]["template"].clone();
    admin.ok(&[
        "patch",
        "sapp",
        "greeter",
        "-n",
        NS,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"checkpoint":{"savepointRequest":"before-v2"}}}"#,
    ]);
    let savepoint = wait_for("status.savepoint of before-v2", WAIT, || {
        let a = sapp(admin, "greeter")?;
        let s = &a["status"]["savepoint"];
        if a["spec"]["checkpoint"]["savepointRequest"] == "before-v2"
            && s["name"] == "before-v2"
            && s["phase"] == "Pending"
        {
            Ok(s.clone())
        } else {
            Err(format!("spec {}, status.savepoint {s}", a["spec"]["checkpoint"]))
        }
    });
    let after = admin.must_get(&["statefulset", "greeter-worker", "-n", NS]).unwrap()["spec"]["template"].clone();
    assert_eq!(before, after, "a savepoint request must not restart the workers");
    ok(format!(
        "spec.checkpoint.savepointRequest accepted by the CRD; status.savepoint Pending ({}); the workers' template unchanged",
        savepoint["message"].as_str().unwrap_or("")
    ));
}
