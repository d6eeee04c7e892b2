//! Connector credentials in the worker pods: every credential the spec references (a NATS
//! token or nkey seed) names an environment variable and, for Kubernetes, the Secret key to
//! fill it from. The value never appears in the ConfigMap or the spec — only these references.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use spindle_spec::{SecretValue, StatefulApplication};

/// Every credential of the application's connectors.
fn credentials(app: &StatefulApplication) -> impl Iterator<Item = &SecretValue> {
    let ingress = app.spec.ingresses.iter().filter_map(|i| i.nats.as_ref()?.auth.as_ref());
    let egress = app.spec.egresses.iter().filter_map(|e| e.nats.as_ref()?.auth.as_ref());
    ingress.chain(egress).flat_map(|a| a.secrets())
}

/// `env` entries of the worker container: one per referenced Secret key, deduplicated by name.
pub fn credential_env(app: &StatefulApplication) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = Vec::new();
    for s in credentials(app) {
        let Some(r) = &s.secret_key_ref else { continue };
        if out.iter().any(|e| e.name == s.env) {
            continue;
        }
        out.push(EnvVar {
            name: s.env.clone(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::builders::{OperatorConfig, config_map, owner_reference, worker_statefulset};

    const APP: &str = r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {name: conn, namespace: apps}
spec:
  functions:
    - {typename: example/*, endpoint: "http://f:8000/"}
  ingresses:
    - name: in
      nats:
        servers: ["nats://nats:4222"]
        auth: {token: {env: NATS_TOKEN, secretKeyRef: {name: nats-auth, key: token}}}
        stream: IN
        subjects: [{subject: "in.>", valueType: example/Add, targets: [example/counter]}]
  egresses:
    - typename: example/out
      nats:
        servers: ["nats://nats:4222"]
        subject: out.x
        auth: {token: {env: NATS_TOKEN, secretKeyRef: {name: nats-auth, key: token}}}
    - typename: example/other
      nats: {servers: ["nats://other:4222"], subject: out.y, auth: {nkeySeed: {env: OTHER_SEED, secretKeyRef: {name: other, key: seed}}}}
"#;

    #[test]
    fn credentials_come_from_secrets_never_from_the_config_map() {
        let app = spindle_spec::from_yaml_str(APP, "t").unwrap();
        let owner = owner_reference(&app, "0b5e8a3c-1111-2222-3333-444455556666");
        let sts = worker_statefulset(&app, &OperatorConfig::default(), &owner, None);
        let env = sts.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        let from_secrets: Vec<(String, String, String)> = env
            .iter()
            .filter_map(|e| {
                let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
                Some((e.name.clone(), r.name.clone(), r.key.clone()))
            })
            .collect();
        assert_eq!(
            from_secrets,
            [
                ("NATS_TOKEN".to_string(), "nats-auth".to_string(), "token".to_string()),
                ("OTHER_SEED".to_string(), "other".to_string(), "seed".to_string())
            ]
        );
        // The ConfigMap holds the references (variable and Secret names), nothing else.
        let yaml = &config_map(&app, &OperatorConfig::default(), &owner).data.unwrap()["app.yaml"];
        assert!(
            yaml.contains("env: NATS_TOKEN") && yaml.contains("name: nats-auth"),
            "{yaml}"
        );
    }
}
