//! A change of `spec.workers`, as far as it goes without running workers.

use std::time::Duration;

use serde_json::Value;

use crate::app::{App, condition, event, has_condition, ready_status, sapp, sts, worker_pods};
use crate::control_plane::{Kubectl, wait_for};
use crate::{NS, WAIT, ok};

/// `kubectl scale sapp greeter --replicas 3` (the scale subresource sets `spec.workers`
/// 2 → 3), as far as it goes without running workers.
pub fn rescale(admin: &Kubectl, app: &App) {
    let scale_path = format!("/apis/spindle.dev/v1alpha1/namespaces/{NS}/statefulapplications/greeter/scale");
    let scale: Value = serde_json::from_str(&admin.ok(&["get", "--raw", &scale_path])).expect("a Scale");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(
        (scale["spec"]["replicas"].as_i64(), scale["status"]["replicas"].as_i64()),
        (Some(2), Some(2))
    );
    assert_eq!(scale["status"]["selector"], app.worker_selector.as_str(), "{scale}");
    ok(format!(
        "the scale subresource: spec.replicas 2, status.replicas 2, status.selector `{}` (what an HPA reads)",
        scale["status"]["selector"].as_str().unwrap_or("")
    ));
    // Above keyGroups, the CRD's rule refuses it, through the scale subresource too.
    let refused = admin
        .run(&["scale", "sapp", "greeter", "-n", NS, "--replicas", "1000"])
        .expect_err("more workers than key groups");
    assert!(
        refused.contains("workers must be at least 1 and at most keyGroups"),
        "{refused}"
    );
    admin.ok(&["scale", "sapp", "greeter", "-n", NS, "--replicas", "3"]);
    let workers = admin.ok(&["get", "sapp", "greeter", "-n", NS, "-o", "jsonpath={.spec.workers}"]);
    assert_eq!(workers.trim(), "3", "kubectl scale set spec.workers");
    ok(format!(
        "kubectl scale sapp greeter --replicas 3: spec.workers = 3 (--replicas 1000 refused: `{}`)",
        refused
            .lines()
            .last()
            .unwrap_or("")
            .chars()
            .take(140)
            .collect::<String>()
    ));
    // Ready workers: the operator waits for worker 0 to report a fresh checkpoint, and keeps
    // the two workers running meanwhile.
    let status = wait_for("the rescale to wait for a checkpoint", WAIT, || {
        let a = sapp(admin, "greeter")?;
        has_condition(&a, "Progressing", "True", Some("WaitingForCheckpoint"))?;
        has_condition(&a, "Ready", "False", Some("Rescaling"))?;
        let r = &a["status"]["rescale"];
        if r["from"] != 2 || r["to"] != 3 {
            return Err(format!("status.rescale {r}"));
        }
        Ok(a)
    });
    let (note, _) = wait_for("the RescaleStarted event", WAIT, || {
        event(admin, "greeter", "RescaleStarted")
    });
    assert_eq!(
        sts(admin).unwrap(),
        (2, "2".to_string()),
        "the two workers keep running while the operator waits"
    );
    ok(format!(
        "spec.workers 2 -> 3 with ready workers (the existing rescale path): status.rescale {} , Progressing=True (WaitingForCheckpoint: `{}`), event RescaleStarted (`{note}`); StatefulSet still 2 replicas for 2 workers",
        status["status"]["rescale"],
        condition(&status, "Progressing").unwrap()["message"]
            .as_str()
            .unwrap_or("")
    ));
    // Worker 0 cannot be asked (no worker runs): past 30 s + 12 × checkpoint.interval the
    // application is Degraded, and still waits. This is as far as ready workers go here.
    let blocked = wait_for("Degraded=True RescaleBlocked", Duration::from_secs(120), || {
        let a = sapp(admin, "greeter")?;
        has_condition(&a, "Degraded", "True", Some("RescaleBlocked"))?;
        Ok(condition(&a, "Degraded").unwrap()["message"]
            .as_str()
            .unwrap_or("")
            .to_string())
    });
    assert!(blocked.contains("the 2 workers keep running"), "{blocked}");
    assert!(
        blocked.contains("Connection refused"),
        "the reason names the cause, not only hyper's `client error (Connect)`: {blocked}"
    );
    assert_eq!(
        sts(admin).unwrap(),
        (2, "2".to_string()),
        "blocked: the workers keep running"
    );
    ok(format!(
        "no checkpoint can complete (no worker 0 to report one): Degraded=True RescaleBlocked (`{blocked}`); the 2 workers keep running — the rescale of ready workers stops here"
    ));

    // The workers fail (the test marks them not ready, as kubelets would): nothing can take
    // a checkpoint, so the operator stops them at once and starts the new count.
    for p in worker_pods(admin, app, 2).unwrap() {
        admin.set_pod(NS, &p, &ready_status(false));
    }
    let (note, _) = wait_for("the StoppingWorkers event", WAIT, || {
        event(admin, "greeter", "StoppingWorkers")
    });
    let (started_note, _) = wait_for("the StartingWorkers event", WAIT, || {
        event(admin, "greeter", "StartingWorkers")
    });
    let done = wait_for("the StatefulSet at 3 workers", WAIT, || {
        let s = sts(admin)?;
        if s != (3, "3".to_string()) {
            return Err(format!("replicas/layout {s:?}"));
        }
        let a = sapp(admin, "greeter")?;
        if !a["status"]["rescale"].is_null() {
            return Err(format!("status.rescale {}", a["status"]["rescale"]));
        }
        has_condition(&a, "Degraded", "False", None)?;
        worker_pods(admin, app, 3)
    });
    let config = admin.must_get(&["configmap", "greeter-config", "-n", NS]).unwrap();
    let app_yaml = config["data"]["app.yaml"].as_str().unwrap_or("");
    assert!(
        app_yaml.contains("workers: 3"),
        "the ConfigMap is for 3 workers: {app_yaml}"
    );
    ok(format!(
        "the workers become unready: StoppingWorkers (`{note}`): replicas 0, the controller-manager deletes the pods; StartingWorkers (`{started_note}`): StatefulSet at 3 replicas for 3 workers, ConfigMap with workers: 3, status.rescale cleared, pods {}",
        done.join(", ")
    ));
    let sts_obj = admin
        .must_get(&["statefulset", "greeter-worker", "-n", NS, "--show-managed-fields"])
        .unwrap();
    let app_obj = admin
        .must_get(&["sapp", "greeter", "-n", NS, "--show-managed-fields"])
        .unwrap();
    let (sts_managers, app_managers) = (managers(&sts_obj), managers(&app_obj));
    for (what, list) in [
        ("statefulset/greeter-worker", &sts_managers),
        ("statefulapplication/greeter", &app_managers),
    ] {
        assert!(
            !list.contains("unknown/"),
            "{what} has writes under no field manager (`unknown`): {list}"
        );
    }
    assert!(
        app_managers.contains("spindle-operator/Update/status"),
        "the status is written as spindle-operator: {app_managers}"
    );
    ok(format!(
        "field managers named (no `unknown`): statefulset/greeter-worker {sts_managers}; statefulapplication/greeter {app_managers}"
    ));
}

/// `manager/operation[/subresource]` of every managedFields entry.
pub fn managers(obj: &Value) -> String {
    let entries = obj["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
    entries
        .iter()
        .map(|m| {
            let sub = m["subresource"].as_str().map(|s| format!("/{s}")).unwrap_or_default();
            format!(
                "{}/{}{sub}",
                m["manager"].as_str().unwrap_or("?"),
                m["operation"].as_str().unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
