//! Deletion by retention policy: the finalizer's cleanup, the checkpoint-deletion Job.

use std::collections::BTreeSet;

use serde_json::json;

use crate::app::{App, all_pods, applied_by_operator, event, events};
use crate::control_plane::{Kubectl, repo_root, wait_for};
use crate::{NS, WAIT, ok};

/// Deleting greeter (retentionPolicy: Retain): workers first, data kept, finalizer gone,
/// everything it owned garbage-collected.
pub fn delete_retained(admin: &Kubectl, app: &App) {
    admin.ok(&["delete", "sapp", "greeter", "-n", NS, "--wait=false"]);
    let (stopping, _) = wait_for("StoppingWorkers on deletion", WAIT, || {
        events(admin, "greeter", "StoppingWorkers")
            .into_iter()
            .find(|(n, _)| n.contains("before the checkpoint data"))
            .ok_or("no StoppingWorkers event of the deletion".to_string())
    });
    let (retained, instance) = wait_for("CheckpointsRetained", WAIT, || {
        event(admin, "greeter", "CheckpointsRetained")
    });
    assert!(retained.contains("s3://my-bucket/spindle"), "{retained}");
    wait_for("greeter to be gone", WAIT, || {
        match admin.get(&["sapp", "greeter", "-n", NS]) {
            None => Ok(()),
            Some(a) => Err(format!("still there, finalizers {}", a["metadata"]["finalizers"])),
        }
    });
    let gone: BTreeSet<String> = wait_for("the garbage collector to delete what greeter owned", WAIT, || {
        let left: Vec<String> = app
            .objects
            .iter()
            .filter(|(k, n)| admin.get(&[k, n, "-n", NS]).is_some())
            .map(|(k, n)| format!("{k}/{n}"))
            .collect();
        if left.is_empty() {
            Ok(app.objects.iter().map(|(k, n)| format!("{k}/{n}")).collect())
        } else {
            Err(format!("left: {left:?}"))
        }
    });
    assert!(
        admin.get(&["job", "greeter-delete-checkpoints", "-n", NS]).is_none(),
        "Retain runs no deletion job"
    );
    ok(format!(
        "kubectl delete sapp greeter (retentionPolicy Retain): finalizer ran — `{stopping}`, then CheckpointsRetained (`{retained}`, by {instance}), no Job; the application is gone and the garbage collector deleted {}",
        gone.into_iter().collect::<Vec<_>>().join(", ")
    ));
}

/// An application with retentionPolicy Delete: the cleanup Job runs before it goes.
pub fn delete_with_job(admin: &Kubectl) {
    let example = std::fs::read_to_string(repo_root().join("examples/greeter/k8s.yaml")).unwrap();
    let yaml = example
        .replace("name: greeter\n", "name: doomed\n")
        .replace("retentionPolicy: Retain", "retentionPolicy: Delete");
    assert!(
        yaml.contains("name: doomed") && yaml.contains("retentionPolicy: Delete"),
        "the example changed shape"
    );
    admin
        .run_stdin(&["apply", "-n", NS, "-f", "-"], &yaml)
        .unwrap_or_else(|e| panic!("apply: {e}"));
    wait_for("doomed's StatefulSet", WAIT, || {
        applied_by_operator(admin, "statefulset", "doomed-worker")
    });
    admin.ok(&["delete", "sapp", "doomed", "-n", NS, "--wait=false"]);
    let job = wait_for("the checkpoint-deletion Job", WAIT, || {
        admin.must_get(&["job", "doomed-delete-checkpoints", "-n", NS])
    });
    let (deleting, _) = wait_for("DeletingCheckpoints", WAIT, || {
        event(admin, "doomed", "DeletingCheckpoints")
    });
    let args = job["spec"]["template"]["spec"]["containers"][0]["args"].clone();
    let pod = wait_for("the Job's pod", WAIT, || {
        all_pods(admin, "job-name=doomed-delete-checkpoints")
            .into_iter()
            .next()
            .ok_or("no pod yet".to_string())
    });
    // The kubelet's part: the pod ran and exited 0.
    admin.set_pod(
        NS,
        &pod,
        &json!({"phase": "Succeeded", "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}]}),
    );
    let (deleted, _) = wait_for("CheckpointsDeleted", WAIT, || {
        event(admin, "doomed", "CheckpointsDeleted")
    });
    wait_for("doomed to be gone", WAIT, || {
        match admin.get(&["sapp", "doomed", "-n", NS]) {
            None => Ok(()),
            Some(a) => Err(format!("still there, finalizers {}", a["metadata"]["finalizers"])),
        }
    });
    wait_for("the Job to be deleted", WAIT, || {
        match admin.get(&["job", "doomed-delete-checkpoints", "-n", NS]) {
            None => Ok(()),
            Some(_) => Err("the Job is still there".to_string()),
        }
    });
    ok(format!(
        "kubectl delete sapp doomed (retentionPolicy Delete): Job doomed-delete-checkpoints created (args {args}; `{deleting}`); its pod {pod} marked Succeeded as a kubelet would; the job controller completes the Job, the operator reports CheckpointsDeleted (`{deleted}`), deletes the Job and drops the finalizer; the application is gone"
    ));
}
