//! What every reconciliation gets: no process-global state.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::api::{PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::builders::OperatorConfig;
use crate::metrics::Metrics;
use crate::resource::StatefulApplication;
use crate::worker_admin::WorkerAdmin;

/// The name events are reported under, and the field manager of every write.
pub const CONTROLLER_NAME: &str = "spindle-operator";

/// Parameters of the operator's merge patches: without a field manager the API server files
/// them in `managedFields` as `unknown` (seen against a real kube-apiserver).
pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(CONTROLLER_NAME.into()),
        ..PatchParams::default()
    }
}

/// Parameters of the operator's creates and replaces, for the same reason.
pub fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(CONTROLLER_NAME.into()),
        ..PostParams::default()
    }
}

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub config: OperatorConfig,
    /// Reads worker 0's `/status` (checkpoint progress).
    pub workers: WorkerAdmin,
    /// Applications (by uid) this process has applied in full once; after that, writes that
    /// would change nothing are skipped (see `controller::ssa`).
    applied: Mutex<HashSet<String>>,
}

impl Context {
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        config: OperatorConfig,
        workers: WorkerAdmin,
        instance: Option<String>,
    ) -> Context {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.into(),
            instance,
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            config,
            workers,
            applied: Mutex::default(),
        }
    }

    /// True the first time it is asked about `uid` in this process.
    pub fn first_apply(&self, uid: &str) -> bool {
        self.applied
            .lock()
            .expect("never poisoned: no panics under the lock")
            .insert(uid.to_string())
    }

    /// Publishes an event about `app`. A failure to publish is logged, never fatal: events are
    /// for people, the status is the record.
    pub async fn event(&self, app: &StatefulApplication, type_: EventType, reason: &str, action: &str, note: String) {
        use kube::Resource;
        tracing::info!(app = ?app.metadata.name, reason, %note, "event");
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &app.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "cannot publish an event");
        }
    }
}
