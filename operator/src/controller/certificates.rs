//! The peer-TLS Secret of an application: read what is stored, decide what to issue
//! (`tls::plan`), write it before the workers that mount it. Returns the hash the worker pod
//! template carries, so that new certificates restart the workers (they are mounted by
//! subPath, which the kubelet does not refresh).

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::runtime::events::EventType;
use spindle_spec::StatefulApplication as Spec;

use super::ssa;
use crate::Error;
use crate::builders;
use crate::context::Context;
use crate::resource::StatefulApplication;
use crate::tls::{self, Material};

/// Makes the Secret hold certificates for workers `0..workers`, valid at `now`.
/// `rolled_out`: every worker pod runs the StatefulSet's newest template (a CA rotation
/// waits for it between its two steps).
pub async fn ensure(
    app: &StatefulApplication,
    spec: &Spec,
    ctx: &Context,
    owner: &OwnerReference,
    workers: u32,
    rolled_out: bool,
    now: Timestamp,
) -> Result<String, Error> {
    let namespace = spec
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let name = builders::tls_secret_name(spec);
    let stored = api.get_opt(&name).await?;
    let mut material = stored.as_ref().map(read).unwrap_or_default();
    let now = now.as_second().max(0) as u64;
    let plan = tls::plan(&material, workers, now, rolled_out);
    if plan.is_empty()
        && let Some(stored) = &stored
    {
        // Unchanged: the hash of what is stored (no write).
        let (secret, hash) = builders::tls_secret(spec, owner, &material);
        if stored.data == secret.data {
            return Ok(hash);
        }
    }
    material
        .apply(&plan, &builders::tls_identity(spec), now)
        .map_err(|e| Error::Tls(e.to_string()))?;
    let (secret, hash) = builders::tls_secret(spec, owner, &material);
    ssa::apply(&ctx.client, &secret, None, true).await?;
    let what = if plan.new_ca {
        format!("a CA for the application and certificates for workers 0..{workers}")
    } else if plan.next_ca {
        "the next CA, trusted beside the current one (it signs once every worker trusts it)".to_string()
    } else if plan.promote {
        "certificates signed by the next CA, which signs from now on".to_string()
    } else if !plan.issue.is_empty() {
        format!("certificates for workers {:?} (new or due for renewal)", plan.issue)
    } else {
        "the trusted CAs (an expired one dropped) or the worker count".to_string()
    };
    ctx.event(
        app,
        EventType::Normal,
        "CertificatesIssued",
        "Certificates",
        format!("Secret {name}: {what}"),
    )
    .await;
    Ok(hash)
}

fn read(secret: &Secret) -> Material {
    let data = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    let validity = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(tls::VALIDITY_ANNOTATION));
    Material::from_data(&data, validity.map(String::as_str))
}
