//! Credentials in the worker pods: every credential the spec references (NATS tokens and nkey
//! seeds, Kafka SASL passwords, ingress and admin bearer tokens: `StatefulApplication::secrets`)
//! names an environment variable and, for Kubernetes, the Secret key to fill it from. The value
//! never appears in the ConfigMap or the spec — only these references.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
use spindle_spec::StatefulApplication;

/// `env` entries of the worker container: one per referenced Secret key, deduplicated by name.
pub fn credential_env(app: &StatefulApplication) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = Vec::new();
    for (_, s) in app.secrets() {
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
  admin:
    auth: {tokens: {env: ADMIN_TOKENS, secretKeyRef: {name: admin, key: tokens}}}
  ingresses:
    - name: web
      http:
        port: 8090
        auth: {tokens: {env: INGRESS_TOKENS, secretKeyRef: {name: ingress, key: tokens}}}
    - name: orders
      kafka:
        brokers: ["kafka:9092"]
        sasl: {mechanism: SCRAM-SHA-512, username: spindle, password: {env: KAFKA_PASSWORD, secretKeyRef: {name: kafka, key: password}}}
        topics: [{topic: orders, valueType: example/Add, targets: [example/counter]}]
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
                ("INGRESS_TOKENS", "ingress", "tokens"),
                ("KAFKA_PASSWORD", "kafka", "password"),
                ("NATS_TOKEN", "nats-auth", "token"),
                ("OTHER_SEED", "other", "seed"),
                ("ADMIN_TOKENS", "admin", "tokens"),
            ]
            .map(|(e, n, k)| (e.to_string(), n.to_string(), k.to_string()))
        );
        // The ConfigMap holds the references (variable and Secret names), nothing else.
        let yaml = &config_map(&app, &OperatorConfig::default(), &owner).data.unwrap()["app.yaml"];
        assert!(
            yaml.contains("env: NATS_TOKEN") && yaml.contains("name: nats-auth"),
            "{yaml}"
        );
    }
}
