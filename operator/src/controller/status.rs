//! The status the operator writes: conditions computed from what it observed (pure), merged
//! with the previous ones so that `lastTransitionTime` moves only when a status flips, and
//! written through the status subresource only when something changed.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::Patch;
use serde_json::json;

use crate::Error;
use crate::context::patch_params;
use crate::resource::{ApplicationStatus, Condition, StatefulApplication};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// One condition as computed, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Observed {
    pub fn yes(reason: &'static str, message: impl Into<String>) -> Observed {
        Observed {
            status: true,
            reason,
            message: message.into(),
        }
    }
    pub fn no(reason: &'static str, message: impl Into<String>) -> Observed {
        Observed {
            status: false,
            reason,
            message: message.into(),
        }
    }
}

/// The three conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conditions {
    pub ready: Observed,
    pub progressing: Observed,
    pub degraded: Observed,
}

/// How far the workers and the function Deployments are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollout {
    pub desired: u32,
    pub ready: u32,
    /// The StatefulSet runs its newest revision on every pod and has seen its newest spec.
    pub workers_updated: bool,
    /// Function Deployments not yet available with their newest spec, by name.
    pub functions_pending: Vec<String>,
    /// Function Deployments that gave up (`ProgressDeadlineExceeded`), by name.
    pub functions_failed: Vec<String>,
}

impl Rollout {
    pub fn observe(desired: u32, sts: Option<&StatefulSet>, deployments: &[Deployment]) -> Rollout {
        let status = sts.and_then(|s| s.status.as_ref());
        let ready = status.and_then(|s| s.ready_replicas).unwrap_or(0).max(0) as u32;
        let workers_updated = sts.is_some_and(|s| {
            let st = s.status.clone().unwrap_or_default();
            let seen = st.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(0);
            let revision = st.update_revision.is_none() || st.current_revision == st.update_revision;
            seen && revision && st.updated_replicas.unwrap_or(st.replicas) >= st.replicas
        });
        let mut functions_pending = Vec::new();
        let mut functions_failed = Vec::new();
        for d in deployments {
            let name = d.metadata.name.clone().unwrap_or_default();
            let st = d.status.clone().unwrap_or_default();
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let seen = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
            let available = st.available_replicas.unwrap_or(0) >= want && st.updated_replicas.unwrap_or(0) >= want;
            let failed = st
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
            if failed {
                functions_failed.push(name);
            } else if !(seen && available) {
                functions_pending.push(name);
            }
        }
        Rollout {
            desired,
            ready,
            workers_updated,
            functions_pending,
            functions_failed,
        }
    }

    pub fn complete(&self) -> bool {
        self.ready >= self.desired
            && self.workers_updated
            && self.functions_pending.is_empty()
            && self.functions_failed.is_empty()
    }
}

/// Conditions of an application whose spec was applied. `step` names a rescale step under
/// way (it makes the application Progressing), `blocked` a reason it cannot go on,
/// `data_loss` an unacknowledged fallback past damaged checkpoints.
pub fn conditions(
    rollout: &Rollout,
    step: Option<(&'static str, String)>,
    blocked: Option<String>,
    data_loss: Option<String>,
) -> Conditions {
    let ready = if let Some((_, message)) = &step {
        Observed::no("Rescaling", message.clone())
    } else if rollout.complete() {
        Observed::yes(
            "AllReady",
            format!(
                "{}/{} workers ready, functions available",
                rollout.ready, rollout.desired
            ),
        )
    } else if rollout.ready < rollout.desired {
        Observed::no(
            "WorkersNotReady",
            format!("{}/{} workers ready", rollout.ready, rollout.desired),
        )
    } else {
        let names = [rollout.functions_pending.clone(), rollout.functions_failed.clone()].concat();
        Observed::no(
            "FunctionsNotReady",
            format!("function deployments not available: {}", names.join(", ")),
        )
    };
    let progressing = match step {
        Some((reason, message)) => Observed::yes(reason, message),
        None if !rollout.complete() && rollout.functions_failed.is_empty() => {
            Observed::yes("RollingOut", "workers or functions are starting or being updated")
        }
        None => Observed::no("RolledOut", "the current spec is rolled out"),
    };
    let degraded = if let Some(message) = blocked {
        Observed::yes("RescaleBlocked", message)
    } else if let Some(message) = data_loss {
        Observed::yes("CheckpointDataLoss", message)
    } else if !rollout.functions_failed.is_empty() {
        Observed::yes(
            "FunctionDeploymentFailed",
            format!(
                "deployments exceeded their progress deadline: {}",
                rollout.functions_failed.join(", ")
            ),
        )
    } else {
        Observed::no("AsExpected", "")
    };
    Conditions {
        ready,
        progressing,
        degraded,
    }
}

/// Conditions of an application whose spec does not validate: nothing was changed.
pub fn invalid_spec(errors: &str, previous_ready: Option<&Condition>) -> Conditions {
    let ready = match previous_ready {
        // The workers may still run the last valid spec; say so rather than guess.
        Some(c) if c.status == "True" => Observed::yes(
            "InvalidSpec",
            "still running the last valid spec; the current one is invalid (see Degraded)",
        ),
        _ => Observed::no("InvalidSpec", "the spec is invalid (see Degraded)"),
    };
    Conditions {
        ready,
        progressing: Observed::no("InvalidSpec", "nothing is rolled out until the spec is fixed"),
        degraded: Observed::yes("InvalidSpec", errors.to_string()),
    }
}

/// The conditions list: a condition whose status is unchanged keeps its `lastTransitionTime`.
pub fn merge(previous: &[Condition], now: &Conditions, generation: Option<i64>, at: Timestamp) -> Vec<Condition> {
    [
        (READY, &now.ready),
        (PROGRESSING, &now.progressing),
        (DEGRADED, &now.degraded),
    ]
    .into_iter()
    .map(|(type_, o)| {
        let status = if o.status { "True" } else { "False" };
        let last = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| at.to_string());
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: o.reason.into(),
            message: o.message.clone(),
            last_transition_time: last,
            observed_generation: generation,
        }
    })
    .collect()
}

pub fn condition<'a>(status: Option<&'a ApplicationStatus>, type_: &str) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

/// Writes `status` unless it equals what the object has.
pub async fn write(
    api: &Api<StatefulApplication>,
    app: &StatefulApplication,
    status: ApplicationStatus,
) -> Result<bool, Error> {
    if app.status.as_ref() == Some(&status) {
        return Ok(false);
    }
    let name = app
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingField("metadata.name"))?;
    let mut value = serde_json::to_value(&status).expect("a status serializes");
    // A merge patch keeps fields it does not name: absent ones must be named, as null.
    for key in [
        "observedGeneration",
        "lastCheckpoint",
        "lastCheckpointTime",
        "rescale",
        "dataLoss",
        "coordinator",
    ] {
        value
            .as_object_mut()
            .expect("an object")
            .entry(key)
            .or_insert(serde_json::Value::Null);
    }
    let patch = json!({"status": value});
    api.patch_status(name, &patch_params(), &Patch::Merge(&patch)).await?;
    Ok(true)
}
