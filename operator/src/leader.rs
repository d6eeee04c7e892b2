//! Leader election with a `coordination.k8s.io/v1` Lease, so that two operator replicas can
//! run and only one reconciles. The holder renews the lease every few seconds; another
//! replica takes it over once it has not been renewed for its duration. Every write carries
//! the resourceVersion it was decided on, so of two replicas deciding at once only one wins
//! (the other gets 409 Conflict). A leader that cannot renew in time stops leading.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;

use crate::Error;
use crate::context::post_params;

#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaseLock {
    pub fn new(api: Api<Lease>, name: impl Into<String>, identity: impl Into<String>, duration: Duration) -> LeaseLock {
        LeaseLock {
            api,
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Acquires or renews the lease at `now`; `false`: another replica holds it.
    pub async fn try_acquire(&self, now: Timestamp) -> Result<bool, Error> {
        let current = self.api.get_opt(&self.name).await?;
        let Some(next) = self.decide(current.as_ref(), now) else {
            return Ok(false);
        };
        let written = match current {
            None => self.api.create(&post_params(), &next).await,
            Some(_) => self.api.replace(&self.name, &post_params(), &next).await,
        };
        match written {
            Ok(_) => Ok(true),
            // Someone else wrote first: they hold it now.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The lease to write to hold it from `now`, or `None` when another holder's lease is
    /// still valid. Pure: the decision is tested without an API.
    pub fn decide(&self, current: Option<&Lease>, now: Timestamp) -> Option<Lease> {
        let seconds = self.duration.as_secs().max(1) as i32;
        let fresh = |transitions: i32, acquired: Timestamp, metadata: ObjectMeta| Lease {
            metadata,
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(MicroTime(acquired)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        };
        let Some(lease) = current else {
            let metadata = ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            };
            return Some(fresh(0, now, metadata));
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.filter(|h| !h.is_empty());
        let transitions = spec.lease_transitions.unwrap_or(0);
        if holder.as_deref() == Some(self.identity.as_str()) {
            let acquired = spec.acquire_time.map_or(now, |t| t.0);
            return Some(fresh(transitions, acquired, lease.metadata.clone()));
        }
        let valid_for = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(seconds)));
        let expired = spec.renew_time.is_none_or(|t| t.0 + valid_for < now);
        if holder.is_some() && !expired {
            return None;
        }
        Some(fresh(transitions + 1, now, lease.metadata.clone()))
    }

    /// Gives the lease up (at shutdown) so that a standby takes over at once.
    pub async fn release(&self) -> Result<(), Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self.api.replace(&self.name, &post_params(), &lease).await {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
