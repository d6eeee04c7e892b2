//! The peer-TLS Secret and how worker pods mount it.
//!
//! One Secret `<app>-tls` holds the CA bundle (`ca.crt`), the signing CA's key and, per
//! worker, `worker-<i>.crt` and `worker-<i>.key` (see `crate::tls`). A StatefulSet's pods share
//! one template, so the volume maps every worker's files under a directory named after its
//! pod (`<statefulset>-<i>/{ca.crt,tls.crt,tls.key}`), and the container mounts only its own
//! with `subPathExpr: $(POD_NAME)` at `/etc/spindle/tls`: a worker sees its own key, never
//! another's, and never the CA's key. Files under a subPath are not refreshed by the kubelet,
//! so new certificates reach the workers by a restart: the pod template carries a hash of
//! them (`spindle.dev/tls-hash`).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{KeyToPath, Secret, SecretVolumeSource, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use spindle_spec::StatefulApplication;

use super::workers::{peer_service_name, statefulset_name};
use super::{fnv1a, meta};
use crate::tls::{self, Identity, Material};

const COMPONENT: &str = "worker";
/// Where each worker finds `ca.crt`, `tls.crt` and `tls.key` (`SPINDLE_TLS_DIR`).
pub const TLS_DIR: &str = "/etc/spindle/tls";
/// On the pod template: a hash of the certificates, so new ones restart the workers.
pub const TLS_HASH_ANNOTATION: &str = "spindle.dev/tls-hash";
const VOLUME: &str = "tls";

pub fn tls_secret_name(app: &StatefulApplication) -> String {
    format!("{}-tls", app.metadata.name)
}

pub fn tls_identity(app: &StatefulApplication) -> Identity {
    Identity {
        namespace: app.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        name: app.metadata.name.clone(),
        statefulset: statefulset_name(app),
        service: peer_service_name(app),
    }
}

/// The Secret holding `material`, and the hash of what the pod template for `spec.workers`
/// workers mounts (the bundle and their certificates: certificates kept for a count being
/// left do not restart anyone).
pub fn tls_secret(app: &StatefulApplication, owner: &OwnerReference, material: &Material) -> (Secret, String) {
    let (data, validity) = material.to_data();
    let mut metadata = meta(app, tls_secret_name(app), COMPONENT, owner);
    metadata.annotations = Some(BTreeMap::from([(tls::VALIDITY_ANNOTATION.to_string(), validity)]));
    let mounted: Vec<String> = std::iter::once(tls::CA_BUNDLE.to_string())
        .chain((0..app.spec.workers).flat_map(|i| [tls::worker_cert_key(i), tls::worker_key_key(i)]))
        .collect();
    let seen_by_workers: String = mounted
        .iter()
        .map(|k| format!("{k}={}\n", data.get(k).map_or("", String::as_str)))
        .collect();
    let secret = Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect()),
        ..Secret::default()
    };
    (secret, fnv1a(&seen_by_workers))
}

/// The Secret as a volume: worker `i`'s files under `<statefulset>-<i>/`, for `workers` workers.
pub(crate) fn tls_volume(app: &StatefulApplication) -> Volume {
    let sts = statefulset_name(app);
    let items = (0..app.spec.workers)
        .flat_map(|i| {
            let dir = format!("{sts}-{i}");
            [
                (tls::CA_BUNDLE.to_string(), format!("{dir}/ca.crt")),
                (tls::worker_cert_key(i), format!("{dir}/tls.crt")),
                (tls::worker_key_key(i), format!("{dir}/tls.key")),
            ]
        })
        .map(|(key, path)| KeyToPath {
            key,
            path,
            ..KeyToPath::default()
        })
        .collect();
    Volume {
        name: VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(tls_secret_name(app)),
            items: Some(items),
            // Owner and group (fsGroup) may read; nobody else.
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// This worker's directory of the volume (`$(POD_NAME)` is expanded by the kubelet from the
/// container's environment).
pub(crate) fn tls_mount() -> VolumeMount {
    VolumeMount {
        name: VOLUME.into(),
        mount_path: TLS_DIR.into(),
        sub_path_expr: Some("$(POD_NAME)".into()),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}
