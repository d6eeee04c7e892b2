//! Settings only the operator reads: how an application's pods sit in a cluster (network
//! policy, function resources). `spindle run` and the workers ignore them, and the operator
//! leaves them out of the workers' configuration, so changing them never restarts workers.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::Errors;

/// Kubernetes-only settings of an application.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesSpec {
    /// The NetworkPolicy the operator puts in front of the workers and the function pods.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
}

impl KubernetesSpec {
    pub fn is_default(&self) -> bool {
        *self == KubernetesSpec::default()
    }
}

/// Who may reach the application's pods. With the policy on, the peer port accepts only the
/// application's own workers, the admin port only the operator and the monitoring selector
/// the operator is configured with, function pods only the application's workers, and the
/// HTTP ingress port what `ingressFrom` allows. Outgoing traffic is not restricted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicies. They take effect only where the cluster's network plugin
    /// enforces NetworkPolicy.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Sources allowed to reach the HTTP ingress port. Empty: every source (the ingress is
    /// the application's front door).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_from: Vec<NetworkPeer>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        NetworkPolicySpec {
            enabled: true,
            ingress_from: Vec::new(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// One allowed source, as in a NetworkPolicy rule: pods selected by labels (in the
/// application's namespace, or in the namespaces `namespaceSelector` selects), or an IP range.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPeer {
    /// Namespaces by their labels (`kubernetes.io/metadata.name: web` names one); `{}` is
    /// every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<BTreeMap<String, String>>,
    /// Pods by their labels; `{}` is every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<BTreeMap<String, String>>,
    /// An IP range in CIDR notation (`10.0.0.0/8`); not combined with the selectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
}

/// Resources of a function's container. Unset fields take the operator's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceSpec {
    /// CPU request, a Kubernetes quantity (`100m`, `1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_request: Option<String>,
    /// CPU limit; none by default (throttling a function makes its calls time out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<String>,
    /// Memory request (`128Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<String>,
    /// Memory limit (`512Mi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
}

impl ResourceSpec {
    fn fields(&self) -> [(&'static str, &Option<String>); 4] {
        [
            ("cpuRequest", &self.cpu_request),
            ("cpuLimit", &self.cpu_limit),
            ("memoryRequest", &self.memory_request),
            ("memoryLimit", &self.memory_limit),
        ]
    }
}

pub(crate) fn validate_kubernetes(spec: &KubernetesSpec, e: &mut Errors) {
    for (i, peer) in spec.network_policy.ingress_from.iter().enumerate() {
        let at = format!("spec.kubernetes.networkPolicy.ingressFrom[{i}]");
        let selects = peer.namespace_selector.is_some() || peer.pod_selector.is_some();
        match &peer.cidr {
            Some(_) if selects => e.add(
                &at,
                "give either `cidr` or selectors (`namespaceSelector`, `podSelector`), not both",
            ),
            Some(cidr) => {
                if let Err(reason) = check_cidr(cidr) {
                    e.add(format!("{at}.cidr"), reason);
                }
            }
            None if !selects => e.add(
                &at,
                "names no source: give `namespaceSelector`, `podSelector` or `cidr`",
            ),
            None => {}
        }
    }
}

pub(crate) fn validate_resources(resources: &ResourceSpec, at: &str, e: &mut Errors) {
    for (field, value) in resources.fields() {
        if let Some(q) = value
            && !is_quantity(q)
        {
            e.add(
                format!("{at}.{field}"),
                format!("`{q}` is not a Kubernetes quantity (e.g. `250m`, `1`, `512Mi`, `2Gi`)"),
            );
        }
    }
}

fn check_cidr(cidr: &str) -> Result<(), String> {
    let bad = || format!("`{cidr}` is not an IP range in CIDR notation (`10.0.0.0/8`, `fd00::/8`)");
    let (ip, bits) = cidr.split_once('/').ok_or_else(bad)?;
    let ip: std::net::IpAddr = ip.parse().map_err(|_| bad())?;
    let bits: u8 = bits.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if bits > max {
        return Err(bad());
    }
    Ok(())
}

/// A Kubernetes resource quantity: a decimal number with an optional suffix (binary `Ki`…`Ei`,
/// decimal `m`, `k`, `M`, `G`, `T`, `P`, `E`, or an exponent `e3`).
fn is_quantity(q: &str) -> bool {
    let digits_end = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number.matches('.').count() <= 1
        && number != "."
        && number.chars().any(|c| c.is_ascii_digit());
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .is_some_and(|exp| !exp.is_empty() && exp.trim_start_matches(['+', '-']).chars().all(|c| c.is_ascii_digit()));
    number_ok && suffix_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for ok in ["1", "250m", "0.5", "512Mi", "2Gi", "1e3", "100k"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "m", "1.2.3", "12MB", "lots", "-1", "1e"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn network_peers_name_a_source() {
        let spec = KubernetesSpec {
            network_policy: NetworkPolicySpec {
                enabled: true,
                ingress_from: vec![
                    NetworkPeer::default(),
                    NetworkPeer {
                        cidr: Some("10.0.0.0/33".into()),
                        ..NetworkPeer::default()
                    },
                    NetworkPeer {
                        cidr: Some("10.0.0.0/8".into()),
                        pod_selector: Some(BTreeMap::new()),
                        ..NetworkPeer::default()
                    },
                    NetworkPeer {
                        pod_selector: Some(BTreeMap::from([("app".into(), "web".into())])),
                        ..NetworkPeer::default()
                    },
                ],
            },
        };
        let mut e = Errors::default();
        validate_kubernetes(&spec, &mut e);
        let text: Vec<String> = e.0.iter().map(|f| f.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text[0].starts_with("spec.kubernetes.networkPolicy.ingressFrom[0]: names no source"));
        assert!(text[1].starts_with("spec.kubernetes.networkPolicy.ingressFrom[1].cidr: `10.0.0.0/33`"));
        assert!(text[2].contains("not both"));
    }
}
