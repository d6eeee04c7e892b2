//! Applications isolated from each other, against the in-memory API: two applications with
//! the same name in two namespaces get disjoint checkpoint storage, their own identity and
//! their own CA; the cleanup of one deletes only its own root; certificates are renewed
//! before they expire and the workers restarted to load them; NetworkPolicies follow the spec.

mod support;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use spindle_operator::builders::{OperatorConfig, TLS_HASH_ANNOTATION};
use spindle_operator::tls;
use support::{APP, NS, World, app_from};

fn shared_storage() -> OperatorConfig {
    OperatorConfig {
        default_storage: Some("s3://shared/spindle".into()),
        default_credentials_secret: Some("s3".into()),
        ..OperatorConfig::default()
    }
}

fn env_of<'a>(c: &'a Container, name: &str) -> &'a k8s_openapi::api::core::v1::EnvVar {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no {name} in the container's environment"))
}

/// The namespace a pod of `namespace` gets from `POD_NAMESPACE`: only a field reference to
/// its own namespace qualifies (the kubelet resolves it).
fn pod_namespace(c: &Container, namespace: &str) -> String {
    let path = env_of(c, "POD_NAMESPACE")
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.clone());
    assert_eq!(
        path.as_deref(),
        Some("metadata.namespace"),
        "POD_NAMESPACE is the pod's namespace"
    );
    namespace.to_string()
}

/// The checkpoint root the workers of `namespace` compute, by the rule of the worker contract
/// (docs/operator.md): `<storage>/<POD_NAMESPACE>/<metadata.name>`, read from the objects the
/// operator wrote — the ConfigMap's app.yaml and the StatefulSet's environment.
async fn worker_root(w: &World, namespace: &str) -> (String, String) {
    let cm = Api::<ConfigMap>::namespaced(w.client.clone(), namespace)
        .get("greeter-config")
        .await
        .unwrap();
    let file = spindle_spec::from_yaml_str(&cm.data.unwrap()["app.yaml"], "config map").unwrap();
    let sts = Api::<StatefulSet>::namespaced(w.client.clone(), namespace)
        .get("greeter-worker")
        .await
        .unwrap();
    let c = sts.spec.unwrap().template.spec.unwrap().containers[0].clone();
    let root = format!(
        "{}/{}/{}",
        file.spec.checkpoint.storage.unwrap(),
        pod_namespace(&c, namespace),
        file.metadata.name
    );
    let uid = env_of(&c, "SPINDLE_APPLICATION_UID").value.clone().unwrap();
    (root, uid)
}

async fn tls_material(w: &World, namespace: &str) -> tls::Material {
    let secret = Api::<Secret>::namespaced(w.client.clone(), namespace)
        .get("greeter-tls")
        .await
        .expect("the TLS Secret");
    let data = secret.data.unwrap().into_iter().map(|(k, v)| (k, v.0)).collect();
    let validity = secret.metadata.annotations.unwrap()[tls::VALIDITY_ANNOTATION].clone();
    tls::Material::from_data(&data, Some(&validity))
}

#[tokio::test]
async fn same_named_applications_in_two_namespaces_are_disjoint() {
    let mut w = World::new(shared_storage()).await;
    let yaml = APP.replace("  egresses:", "  checkpoint: {retentionPolicy: Delete}\n  egresses:");
    let a = w.create_in(NS, &yaml).await;
    let b = w.create_in("other-team", &yaml).await;
    assert_ne!(a.metadata.uid, b.metadata.uid);

    let (root_a, uid_a) = worker_root(&w, NS).await;
    let (root_b, uid_b) = worker_root(&w, "other-team").await;
    assert_eq!(root_a, "s3://shared/spindle/apps/greeter");
    assert_eq!(root_b, "s3://shared/spindle/other-team/greeter");
    assert!(
        !root_a.starts_with(&format!("{root_b}/")) && !root_b.starts_with(&format!("{root_a}/")),
        "neither root lies inside the other"
    );
    assert_eq!(Some(uid_a.as_str()), a.metadata.uid.as_deref());
    assert_eq!(Some(uid_b.as_str()), b.metadata.uid.as_deref());
    eprintln!("checkpoint roots: {root_a} (uid {uid_a}) and {root_b} (uid {uid_b})");

    // Each has its own CA; each worker certificate names its own namespace.
    let (ta, tb) = (tls_material(&w, NS).await, tls_material(&w, "other-team").await);
    assert_ne!(ta.ca.as_ref().unwrap().cert, tb.ca.as_ref().unwrap().cert);
    let san = |m: &tls::Material, i: u32| tls::pem_der(&m.workers[&i].cert).unwrap();
    let has = |der: &[u8], s: &str| der.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(has(&san(&ta, 2), "spiffe://spindle.dev/ns/apps/app/greeter/worker/2"));
    assert!(has(
        &san(&tb, 2),
        "spiffe://spindle.dev/ns/other-team/app/greeter/worker/2"
    ));
    assert_eq!(ta.workers.len(), 3);

    // Deleting the first (retentionPolicy: Delete): the job's root is its own, not the other's.
    w.set_workers(3, 3).await;
    w.kubectl_delete().await;
    w.reconcile().await; // stops the workers
    w.reconcile().await; // the job
    let job = w
        .api::<Job>()
        .get("greeter-delete-checkpoints")
        .await
        .expect("the deletion job");
    let c = job.spec.unwrap().template.spec.unwrap().containers[0].clone();
    let args = c.args.clone().unwrap();
    let arg = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
    let job_root = format!(
        "{}/{}/{}",
        arg("--storage"),
        pod_namespace(&c, NS),
        arg("--application")
    );
    assert_eq!(job_root, root_a, "the job deletes exactly the first application's root");
    assert_ne!(job_root, root_b);
    assert_eq!(
        env_of(&c, "SPINDLE_APPLICATION_UID").value.as_deref(),
        Some(uid_a.as_str())
    );
}

#[tokio::test]
async fn certificates_are_renewed_before_expiry_and_the_workers_restarted() {
    let w = World::new(OperatorConfig::default()).await;
    w.create(&app_from(APP)).await;
    w.reconcile().await;
    let before = tls_material(&w, NS).await;
    let sts = w.api::<StatefulSet>().get("greeter-worker").await.unwrap();
    let tls_hash = |s: &StatefulSet| {
        s.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[TLS_HASH_ANNOTATION]
            .clone()
    };
    let hash_before = tls_hash(&sts);

    // Nothing is due: a reconciliation changes nothing.
    w.reconcile().await;
    assert_eq!(tls_material(&w, NS).await, before);

    // Worker 1's certificate is two thirds through its life (as if issued long ago).
    let secrets: Api<Secret> = w.api();
    let secret = secrets.get("greeter-tls").await.unwrap();
    let mut validity: serde_json::Value =
        serde_json::from_str(&secret.metadata.annotations.as_ref().unwrap()[tls::VALIDITY_ANNOTATION]).unwrap();
    let now = k8s_openapi::jiff::Timestamp::now().as_second() as u64;
    validity["worker-1.crt"]["notBefore"] = json!(now - 300 * 24 * 3600);
    validity["worker-1.crt"]["notAfter"] = json!(now + 60 * 24 * 3600);
    let patch = json!({"metadata": {"annotations": {tls::VALIDITY_ANNOTATION: validity.to_string()}}});
    secrets
        .patch("greeter-tls", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();

    w.reconcile().await;
    let after = tls_material(&w, NS).await;
    assert_ne!(after.workers[&1].cert, before.workers[&1].cert, "worker 1 renewed");
    assert!(after.workers[&1].validity.not_after > now + 300 * 24 * 3600);
    assert_eq!(after.workers[&0], before.workers[&0], "worker 0 was not due");
    assert_eq!(after.ca, before.ca, "same CA");
    let sts = w.api::<StatefulSet>().get("greeter-worker").await.unwrap();
    assert_ne!(
        tls_hash(&sts),
        hash_before,
        "the pod template changes: the workers restart"
    );
    let reasons = w.event_reasons().await;
    assert!(reasons.contains(&"CertificatesIssued".to_string()), "{reasons:?}");
    assert!(reasons.contains(&"RestartingWorkers".to_string()), "{reasons:?}");
}

#[tokio::test]
async fn network_policies_follow_the_spec() {
    let w = World::new(OperatorConfig::default()).await;
    w.create(&app_from(APP)).await;
    w.reconcile().await;
    let policies: Api<NetworkPolicy> = w.api();
    for name in ["greeter-workers", "greeter-functions"] {
        policies
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("NetworkPolicy {name}: {e}"));
    }
    w.edit(|a| a.spec.kubernetes.network_policy.enabled = false).await;
    w.reconcile().await;
    for name in ["greeter-workers", "greeter-functions"] {
        assert!(policies.get_opt(name).await.unwrap().is_none(), "{name} pruned");
    }
}
