//! The operator against a real Kubernetes control plane (envtest-style): etcd,
//! kube-apiserver and kube-controller-manager built from their Go modules
//! (e2e/envtest/build.sh), the real `helm` installing the chart, the real `kubectl`, and the
//! `spindle-operator` binary running as a local process with the chart's ServiceAccount
//! token, so that RBAC is exactly what the chart grants. Two operator replicas elect a leader
//! through a Lease. Every step checked is printed (`envtest: ok …`).
//!
//! No pod runs: there is no scheduler and no kubelet. Where the operator depends on pods
//! being ready (or a job's pod finishing), the test writes the pod status a kubelet would
//! write, and says so. Worker 0's admin endpoint points at a closed loopback port, so the
//! operator never learns of a completed checkpoint: a rescale of ready workers stops at the
//! checkpoint wait (see `rescale`).
//!
//! When the binaries cannot be built (no `go`, no module proxy) or kubectl/helm are missing,
//! the test prints one `skip:` line and passes; `SPINDLE_ENVTEST=0` skips it on purpose.

mod app;
mod chart;
mod control_plane;
mod delete;
mod operator;
mod rescale;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use control_plane::kubectl::Helm;
use control_plane::{ControlPlane, Kubectl, free_port, repo_root, say, wait_for};
use spindle_operator::builders;

use app::{applied_by_operator, greeter_applied, savepoint_pending, workers_ready};
use chart::{check_explain, check_schema, install_chart};
use delete::{delete_retained, delete_with_job};
use operator::{Operator, holder, operator_identity};
use rescale::rescale;

pub const OPERATOR_NS: &str = "spindle-system";
/// The release name; the chart's full name (ServiceAccount, Lease, ClusterRole) is the same.
pub const RELEASE: &str = "spindle-operator";
pub const NS: &str = "apps";
pub const WAIT: Duration = Duration::from_secs(60);

pub fn ok(line: impl AsRef<str>) {
    say(format!("envtest: ok {}", line.as_ref()));
}

fn skip(why: &str) {
    say(format!(
        "skip: envtest (operator against a real kube-apiserver) not run: {why}"
    ));
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn helm_binary() -> Result<PathBuf, String> {
    if let Some(h) = std::env::var_os("SPINDLE_HELM") {
        return Ok(PathBuf::from(h));
    }
    let dir = repo_root().join("target/tools");
    let status = Command::new("bash")
        .arg(repo_root().join("e2e/tools/fetch-helm.sh"))
        .arg(&dir)
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("helm could not be fetched (e2e/tools/fetch-helm.sh)".into());
    }
    Ok(dir.join("helm"))
}

/// One test: the steps share one control plane (starting it takes a while) and build on
/// each other (the chart's RBAC, then the operator, then the application).
#[test]
fn operator_against_a_real_api_server() {
    // A cold build of the binaries takes ~10 CPU-minutes: a way to leave it out on purpose.
    if std::env::var("SPINDLE_ENVTEST").as_deref() == Ok("0") {
        return skip("SPINDLE_ENVTEST=0");
    }
    let bins = match control_plane::binaries() {
        Ok(b) => b,
        Err(why) => return skip(&why),
    };
    let Some(kubectl_bin) = which("kubectl") else {
        return skip("kubectl is not installed");
    };
    let helm_bin = match helm_binary() {
        Ok(h) => h,
        Err(why) => return skip(&why),
    };
    for line in &bins.report {
        say(line);
    }
    let started = Instant::now();
    let dir = repo_root().join(format!("target/tmp/envtest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut plane = ControlPlane::start(&bins, &kubectl_bin, &dir);
    let admin = Kubectl::new(&kubectl_bin, &plane.admin_kubeconfig, &dir);
    let versions: serde_json::Value = serde_json::from_str(&admin.ok(&["version", "-o", "json"])).expect("JSON");
    say(format!(
        "envtest: kubectl {} (the machine's), kube-apiserver {} (/version)",
        versions["clientVersion"]["gitVersion"], versions["serverVersion"]["gitVersion"]
    ));

    let helm = Helm::new(&helm_bin, &plane.admin_kubeconfig, &dir);
    install_chart(&helm, &admin);
    check_schema(&admin);
    check_explain(&admin);
    let operator_kubeconfig = operator_identity(&admin, &plane, &dir);

    let operator_bin = PathBuf::from(env!("CARGO_BIN_EXE_spindle-operator"));
    let admin_port = free_port();
    let mut a = Operator::start(&operator_bin, "replica-a", &operator_kubeconfig, admin_port, &dir);
    let lease = wait_for("replica-a to take the Lease", WAIT, || holder(&admin, "replica-a"));
    a.wait_ready("ready: leading");
    let mut b = Operator::start(&operator_bin, "replica-b", &operator_kubeconfig, admin_port, &dir);
    b.wait_ready("ready: standby");
    assert_eq!(
        holder(&admin, "replica-a").map(|_| ()),
        Ok(()),
        "the standby must not take a held lease"
    );
    ok(format!(
        "two operator replicas (the chart's ServiceAccount token): replica-a holds Lease {OPERATOR_NS}/{RELEASE} (transitions {}), /readyz says leading; replica-b says standby",
        lease["spec"]["leaseTransitions"]
    ));

    let app = greeter_applied(&admin, "replica-a");
    workers_ready(&admin, &app);
    savepoint_pending(&admin);
    rescale(&admin, &app);

    a.process.kill();
    let lease = wait_for(
        "replica-b to take over the Lease after replica-a was killed",
        WAIT,
        || holder(&admin, "replica-b"),
    );
    b.wait_ready("ready: leading");
    ok(format!(
        "failover: replica-a killed (SIGKILL); replica-b took Lease {RELEASE} after it expired (transitions {})",
        lease["spec"]["leaseTransitions"]
    ));
    let ingress = builders::ingress_service_name(&app.spec);
    admin.ok(&["delete", "service", &ingress, "-n", NS]);
    wait_for("replica-b to put the deleted ingress Service back", WAIT, || {
        applied_by_operator(&admin, "service", &ingress)
    });
    ok(format!(
        "replica-b reconciles: Service {ingress}, deleted by hand, is back (server-side apply by spindle-operator)"
    ));

    delete_retained(&admin, &app);
    delete_with_job(&admin);

    for op in [&a, &b] {
        let log = op.process.log_text();
        let forbidden: Vec<&str> = log.lines().filter(|l| l.contains("forbidden: User")).collect();
        assert!(
            forbidden.is_empty(),
            "{} was refused by RBAC (the chart's ClusterRole/Role lack a verb):\n{}",
            op.process.name,
            forbidden.join("\n")
        );
    }
    ok("RBAC refused no request of either operator replica (no `forbidden: User …` in their logs)");

    let exit = b.process.terminate(Duration::from_secs(20));
    assert!(
        exit.is_some_and(|s| s.success()),
        "replica-b did not stop cleanly on SIGTERM: {exit:?}\n{}",
        b.process.log_tail(20)
    );
    let lease = admin.must_get(&["lease", RELEASE, "-n", OPERATOR_NS]).unwrap();
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "a replica stopped by SIGTERM gives the lease up: {lease}"
    );
    ok("replica-b stopped on SIGTERM and gave the Lease up (holderIdentity cleared)");
    plane.check_alive();
    say(format!(
        "envtest: passed in {:.1}s (control plane and operators on loopback; logs in {})",
        started.elapsed().as_secs_f64(),
        dir.display()
    ));
    drop(plane);
    // SPINDLE_ENVTEST_KEEP=1 keeps the logs (and etcd's data) of a passing run.
    if std::env::var_os("SPINDLE_ENVTEST_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
