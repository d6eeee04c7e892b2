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
//! the test prints one `skip:` line and passes.

mod control_plane;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use control_plane::kubectl::Helm;
use control_plane::{ControlPlane, Kubectl, Process, free_port, http_get, repo_root, say, wait_for, write_kubeconfig};
use serde_json::{Value, json};
use spindle_operator::builders;

const OPERATOR_NS: &str = "spindle-system";
/// The release name; the chart's full name (ServiceAccount, Lease, ClusterRole) is the same.
const RELEASE: &str = "spindle-operator";
const NS: &str = "apps";
const WAIT: Duration = Duration::from_secs(60);

fn ok(line: impl AsRef<str>) {
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
    say(format!(
        "envtest: kubectl {}",
        admin
            .ok(&["version", "--client", "-o", "json"])
            .lines()
            .find(|l| l.contains("gitVersion"))
            .unwrap_or("")
            .trim()
    ));
    say(format!(
        "envtest: server {}",
        admin
            .ok(&["version", "-o", "json"])
            .lines()
            .filter(|l| l.contains("gitVersion"))
            .nth(1)
            .unwrap_or("")
            .trim()
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

/// `helm install` of the chart; its CRD accepted.
fn install_chart(helm: &Helm, admin: &Kubectl) {
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

const CEL_NS: &str = "schema-checks";

fn base_app(name: &str) -> Value {
    json!({
        "apiVersion": "spindle.dev/v1alpha1",
        "kind": "StatefulApplication",
        "metadata": {"name": name, "namespace": CEL_NS},
        "spec": {"functions": [{"typename": "example/*", "endpoint": "http://fn:8000/statefun"}]}
    })
}

/// The API server's answer to creating `obj` (a dry run: nothing is stored).
fn dry_run_create(admin: &Kubectl, obj: &Value) -> Result<Value, String> {
    admin
        .run_stdin(
            &["create", "--dry-run=server", "-o", "json", "-f", "-"],
            &obj.to_string(),
        )
        .map(|out| serde_json::from_str(&out).expect("JSON"))
}

/// Checks that every scalar default of `schema` below `path` was applied in `value`.
fn check_defaults(schema: &Value, value: &Value, path: &str, checked: &mut Vec<String>) {
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
fn check_schema(admin: &Kubectl) {
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

fn check_explain(admin: &Kubectl) {
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

/// A kubeconfig with a token of the chart's ServiceAccount (TokenRequest API), and a check,
/// as that identity, of every verb the operator uses.
fn operator_identity(admin: &Kubectl, plane: &ControlPlane, dir: &Path) -> PathBuf {
    let token = admin.ok(&["create", "token", RELEASE, "-n", OPERATOR_NS, "--duration=2h"]);
    let kubeconfig = dir.join("operator.kubeconfig");
    write_kubeconfig(
        &kubeconfig,
        &plane.server,
        &plane.ca_file,
        "spindle-operator",
        token.trim(),
    );
    let operator = admin.with_kubeconfig(&kubeconfig);
    let whoami = operator.ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
    assert_eq!(whoami.trim(), format!("system:serviceaccount:{OPERATOR_NS}:{RELEASE}"));
    // What the operator does, by resource (controller/*.rs, leader.rs, context.rs): watch
    // applications cluster-wide, finalizer and status patches, server-side apply (patch) of
    // what it owns, prunes, the rescale patch, the cleanup's foreground delete and Job, events,
    // and the Lease in its own namespace.
    let grants: &[(&str, &[&str], Option<&str>)] = &[
        ("statefulapplications.spindle.dev", &["list", "watch", "patch"], None),
        ("statefulapplications.spindle.dev/status", &["patch"], None),
        ("statefulapplications.spindle.dev/finalizers", &["update"], None),
        (
            "statefulsets.apps",
            &["get", "list", "watch", "create", "patch", "delete"],
            None,
        ),
        (
            "deployments.apps",
            &["list", "watch", "create", "patch", "delete"],
            None,
        ),
        ("services", &["list", "watch", "create", "patch", "delete"], None),
        ("configmaps", &["list", "watch", "create", "patch"], None),
        (
            "poddisruptionbudgets.policy",
            &["list", "watch", "create", "patch"],
            None,
        ),
        ("jobs.batch", &["get", "create", "delete"], None),
        ("events.events.k8s.io", &["create", "patch"], None),
        (
            "leases.coordination.k8s.io",
            &["get", "create", "update"],
            Some(OPERATOR_NS),
        ),
    ];
    let can = |verb: &str, resource: &str, ns: Option<&str>| {
        let (resource, sub) = resource.split_once('/').map_or((resource, None), |(r, s)| (r, Some(s)));
        let mut args = vec!["auth", "can-i", verb, resource];
        let sub_flag;
        if let Some(s) = sub {
            sub_flag = format!("--subresource={s}");
            args.push(&sub_flag);
        }
        match ns {
            Some(ns) => args.extend(["-n", ns]),
            None => args.push("--all-namespaces"),
        }
        // Exit 1 and "no" when denied.
        operator.run(&args).map(|o| o.trim() == "yes").unwrap_or(false)
    };
    let mut checked = 0;
    for (resource, verbs, ns) in grants {
        for verb in *verbs {
            assert!(
                can(verb, resource, *ns),
                "the chart does not grant the operator `{verb}` on {resource} (namespace {ns:?}): add it to charts/spindle-operator/templates/rbac.yaml"
            );
            checked += 1;
        }
    }
    // And the check can say no: what the chart does not grant.
    for (verb, resource, ns) in [
        ("delete", "statefulapplications.spindle.dev", None),
        ("get", "secrets", None),
        ("update", "leases.coordination.k8s.io", Some(NS)),
    ] {
        assert!(
            !can(verb, resource, ns),
            "the chart grants more than the operator needs: {verb} {resource} {ns:?}"
        );
    }
    ok(format!(
        "operator identity: a TokenRequest token of ServiceAccount {OPERATOR_NS}/{RELEASE} (kubectl auth whoami: {}); kubectl auth can-i says yes to all {checked} verbs the operator uses and no to delete statefulapplications, get secrets, update leases outside {OPERATOR_NS}",
        whoami.trim()
    ));
    kubeconfig
}

struct Operator {
    process: Process,
    port: u16,
}

impl Operator {
    /// `admin_port`: worker 0's admin URL points there, a closed loopback port (no worker
    /// runs), so the operator's calls fail at once and never leave the machine.
    fn start(bin: &Path, identity: &str, kubeconfig: &Path, admin_port: u16, dir: &Path) -> Operator {
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", kubeconfig)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args([
                "--lease-name",
                RELEASE,
                "--lease-namespace",
                OPERATOR_NS,
                "--identity",
                identity,
            ])
            .args(["--lease-duration", "4s", "--renew-every", "1s"])
            .args([
                "--worker-admin-url",
                &format!("http://127.0.0.1:{admin_port}/{{statefulset}}"),
            ])
            .args(["--log", "info,kube=warn"]);
        Operator {
            process: Process::spawn(&format!("operator-{identity}"), &mut cmd, dir),
            port,
        }
    }

    fn wait_ready(&mut self, want: &str) {
        let name = self.process.name.clone();
        wait_for(&format!("{name} /readyz to say `{want}`"), WAIT, || {
            self.process.check_alive();
            match http_get(self.port, "/readyz") {
                Ok((200, body)) if body.trim() == want => Ok(()),
                Ok((code, body)) => Err(format!("{code} {}", body.trim())),
                Err(e) => Err(e),
            }
        });
    }
}

fn holder(admin: &Kubectl, identity: &str) -> Result<Value, String> {
    let lease = admin.must_get(&["lease", RELEASE, "-n", OPERATOR_NS])?;
    if lease["spec"]["holderIdentity"] == identity {
        Ok(lease)
    } else {
        Err(format!("holder {}", lease["spec"]["holderIdentity"]))
    }
}

/// The object exists and its fields are owned by the operator's server-side apply.
fn applied_by_operator(admin: &Kubectl, kind: &str, name: &str) -> Result<Value, String> {
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

struct App {
    spec: spindle_spec::StatefulApplication,
    /// (kind for kubectl, name) of every object the operator applies for it.
    objects: Vec<(&'static str, String)>,
    /// The label selector of its worker pods.
    worker_selector: String,
}

fn sapp(admin: &Kubectl, name: &str) -> Result<Value, String> {
    admin.must_get(&["sapp", name, "-n", NS])
}

fn condition(app: &Value, type_: &str) -> Option<Value> {
    app["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// `condition type_` has `status` (and `reason`, when given).
fn has_condition(app: &Value, type_: &str, status: &str, reason: Option<&str>) -> Result<(), String> {
    match condition(app, type_) {
        Some(c) if c["status"] == status && reason.is_none_or(|r| c["reason"] == r) => Ok(()),
        other => Err(format!("condition {type_}: want {status} {reason:?}, have {other:?}")),
    }
}

/// The events about `name` with `reason`, as (note, reportingInstance).
fn events(admin: &Kubectl, name: &str, reason: &str) -> Vec<(String, String)> {
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

fn event(admin: &Kubectl, name: &str, reason: &str) -> Result<(String, String), String> {
    events(admin, name, reason)
        .pop()
        .ok_or_else(|| format!("no event {reason} about {name}"))
}

/// `kubectl get sapp` as a table: the header and the row of `name`.
fn table(admin: &Kubectl, name: &str) -> (Vec<String>, Vec<String>) {
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

/// `kubectl apply -f examples/greeter/k8s.yaml`: everything applied by the operator.
fn greeter_applied(admin: &Kubectl, leader: &str) -> App {
    admin.ok(&["create", "namespace", NS]);
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
            name(&builders::worker_statefulset(&spec, &config, &owner).metadata),
        ),
        (
            "poddisruptionbudget",
            name(&builders::pod_disruption_budget(&spec, &owner).metadata),
        ),
    ];
    if let Some(s) = builders::ingress_service(&spec, &owner) {
        objects.push(("service", name(&s.metadata)));
    }
    for i in 0..spec.spec.functions.len() {
        if let Some(d) = builders::function_deployment(&spec, i, &owner) {
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
        ["NAME", "READY", "REASON", "WORKERS", "CHECKPOINT", "AGE"],
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
        "kube-controller-manager created the worker pods of the StatefulSet (Pending: no scheduler, no kubelet): {}",
        pods.join(", ")
    ));
    app
}

/// The worker pods' names once there are exactly `n`.
fn worker_pods(admin: &Kubectl, app: &App, n: usize) -> Result<Vec<String>, String> {
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

fn all_pods(admin: &Kubectl, selector: &str) -> Vec<String> {
    let list = admin.get(&["pods", "-n", NS, "-l", selector]).unwrap_or_default();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn ready_status(ready: bool) -> Value {
    let s = if ready { "True" } else { "False" };
    json!({"phase": "Running", "conditions": [{"type": "Ready", "status": s}, {"type": "ContainersReady", "status": s}]})
}

/// Every pod of the application marked Running and Ready (as kubelets would): Ready=True.
fn workers_ready(admin: &Kubectl, app: &App) {
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

fn sts(admin: &Kubectl) -> Result<(i64, String), String> {
    let s = admin.must_get(&["statefulset", "greeter-worker", "-n", NS])?;
    let replicas = s["spec"]["replicas"].as_i64().unwrap_or(-1);
    let layout = s["metadata"]["annotations"]["spindle.dev/workers"]
        .as_str()
        .unwrap_or("")
        .to_string();
    Ok((replicas, layout))
}

/// `spec.workers` 2 → 3, as far as it goes without running workers.
fn rescale(admin: &Kubectl, app: &App) {
    admin.ok(&[
        "patch",
        "sapp",
        "greeter",
        "-n",
        NS,
        "--type=merge",
        "-p",
        r#"{"spec":{"workers":3}}"#,
    ]);
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
        "spec.workers 2 -> 3 with ready workers: status.rescale {} , Progressing=True (WaitingForCheckpoint: `{}`), event RescaleStarted (`{note}`); StatefulSet still 2 replicas for 2 workers",
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
fn managers(obj: &Value) -> String {
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

/// Deleting greeter (retentionPolicy: Retain): workers first, data kept, finalizer gone,
/// everything it owned garbage-collected.
fn delete_retained(admin: &Kubectl, app: &App) {
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
fn delete_with_job(admin: &Kubectl) {
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
