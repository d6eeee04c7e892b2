//! The operator's identity (the chart's ServiceAccount, checked verb by verb with
//! `kubectl auth can-i`) and the operator processes.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::control_plane::{ControlPlane, Kubectl, Process, free_port, http_get, wait_for, write_kubeconfig};
use crate::{NS, OPERATOR_NS, RELEASE, WAIT, ok};

/// A kubeconfig with a token of the chart's ServiceAccount (TokenRequest API), and a check,
/// as that identity, of every verb the operator uses.
pub fn operator_identity(admin: &Kubectl, plane: &ControlPlane, dir: &Path) -> PathBuf {
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
    // what it owns (NetworkPolicies, the TLS Secret it reads back by name), prunes, the rescale
    // patch, the cleanup's foreground delete and Job, events, and the Lease in its own namespace.
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
        (
            "networkpolicies.networking.k8s.io",
            &["list", "watch", "create", "patch", "delete"],
            None,
        ),
        ("secrets", &["get", "create", "patch"], None),
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
        ("list", "secrets", None),
        ("watch", "secrets", None),
        ("update", "leases.coordination.k8s.io", Some(NS)),
    ] {
        assert!(
            !can(verb, resource, ns),
            "the chart grants more than the operator needs: {verb} {resource} {ns:?}"
        );
    }
    ok(format!(
        "operator identity: a TokenRequest token of ServiceAccount {OPERATOR_NS}/{RELEASE} (kubectl auth whoami: {}); kubectl auth can-i says yes to all {checked} verbs the operator uses and no to delete statefulapplications, list or watch secrets, update leases outside {OPERATOR_NS}",
        whoami.trim()
    ));
    kubeconfig
}

pub struct Operator {
    pub process: Process,
    port: u16,
}

impl Operator {
    /// `admin_port`: worker 0's admin URL points there, a closed loopback port (no worker
    /// runs), so the operator's calls fail at once and never leave the machine.
    pub fn start(bin: &Path, identity: &str, kubeconfig: &Path, admin_port: u16, dir: &Path) -> Operator {
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

    pub fn wait_ready(&mut self, want: &str) {
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

pub fn holder(admin: &Kubectl, identity: &str) -> Result<Value, String> {
    let lease = admin.must_get(&["lease", RELEASE, "-n", OPERATOR_NS])?;
    if lease["spec"]["holderIdentity"] == identity {
        Ok(lease)
    } else {
        Err(format!("holder {}", lease["spec"]["holderIdentity"]))
    }
}
