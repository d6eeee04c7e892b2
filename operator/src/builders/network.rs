//! NetworkPolicies of an application (`spec.kubernetes.networkPolicy`): who may open a
//! connection to its pods. Only incoming traffic is restricted (workers reach storage,
//! brokers, functions and webhooks wherever they are).
//!
//! - `A-workers` (the worker pods): the peer port from the application's own workers only;
//!   the admin port from the operator and the configured monitoring selector; the HTTP
//!   ingress port from `ingressFrom` (every source when it is empty).
//! - `A-functions` (the function pods the operator runs): from the application's workers only.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use spindle_spec::{NetworkPeer, StatefulApplication};

use super::workers::{ingress_port, worker_selector};
use super::{NetworkConfig, meta};

pub fn workers_policy_name(app: &StatefulApplication) -> String {
    format!("{}-workers", app.metadata.name)
}

pub fn functions_policy_name(app: &StatefulApplication) -> String {
    format!("{}-functions", app.metadata.name)
}

fn labels(m: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(m.clone()),
        ..LabelSelector::default()
    }
}

fn port(name: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    }
}

fn peer(p: &NetworkPeer) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: p.namespace_selector.as_ref().map(labels),
        pod_selector: p.pod_selector.as_ref().map(labels),
        ip_block: p.cidr.as_ref().map(|c| IPBlock {
            cidr: c.clone(),
            ..IPBlock::default()
        }),
    }
}

/// The operator's pods, in its namespace (`kubernetes.io/metadata.name` is set on every
/// namespace by the API server).
fn operator_peer(network: &NetworkConfig) -> Option<NetworkPolicyPeer> {
    let ns = network.operator_namespace.as_ref()?;
    Some(NetworkPolicyPeer {
        namespace_selector: Some(labels(&BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            ns.clone(),
        )]))),
        pod_selector: Some(labels(&network.operator_pod_labels)),
        ..NetworkPolicyPeer::default()
    })
}

/// `None` when the spec turns policies off.
pub fn worker_network_policy(
    app: &StatefulApplication,
    network: &NetworkConfig,
    owner: &OwnerReference,
) -> Option<NetworkPolicy> {
    let spec = &app.spec.kubernetes.network_policy;
    if !spec.enabled {
        return None;
    }
    let workers = labels(&worker_selector(app));
    let mut rules = vec![NetworkPolicyIngressRule {
        ports: Some(vec![port("peer")]),
        from: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(workers.clone()),
            ..NetworkPolicyPeer::default()
        }]),
    }];
    let admin_from: Vec<NetworkPolicyPeer> = operator_peer(network)
        .into_iter()
        .chain(network.monitoring.as_ref().map(peer))
        .collect();
    // No source for the admin port: the rule is left out, so nothing may reach it (an
    // empty `from` would mean everyone).
    if !admin_from.is_empty() {
        rules.push(NetworkPolicyIngressRule {
            ports: Some(vec![port("admin")]),
            from: Some(admin_from),
        });
    }
    if ingress_port(app).is_some() {
        rules.push(NetworkPolicyIngressRule {
            ports: Some(vec![port("ingress")]),
            from: (!spec.ingress_from.is_empty()).then(|| spec.ingress_from.iter().map(peer).collect()),
        });
    }
    Some(NetworkPolicy {
        metadata: meta(app, workers_policy_name(app), "worker", owner),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(workers),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(rules),
            ..NetworkPolicySpec::default()
        }),
    })
}

/// `None` when the spec turns policies off or the operator runs no function.
pub fn function_network_policy(app: &StatefulApplication, owner: &OwnerReference) -> Option<NetworkPolicy> {
    if !app.spec.kubernetes.network_policy.enabled {
        return None;
    }
    let components: Vec<String> = app
        .spec
        .functions
        .iter()
        .enumerate()
        .filter(|(_, f)| f.image.is_some())
        .map(|(i, _)| super::functions::component(i))
        .collect();
    if components.is_empty() {
        return None;
    }
    let mut selector = super::selector(app, "");
    selector.remove("app.kubernetes.io/component");
    let pods = LabelSelector {
        match_labels: Some(selector),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "app.kubernetes.io/component".into(),
            operator: "In".into(),
            values: Some(components),
        }]),
    };
    Some(NetworkPolicy {
        metadata: meta(app, functions_policy_name(app), "function", owner),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pods),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                ports: Some(vec![port("http")]),
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(labels(&worker_selector(app))),
                    ..NetworkPolicyPeer::default()
                }]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    })
}
