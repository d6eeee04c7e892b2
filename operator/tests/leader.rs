//! Leader election over a Lease in the in-memory API: one holder at a time, renewals,
//! take-over after expiry, and a race of two replicas decided by a 409 Conflict. Time is
//! passed in, so no test sleeps.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube_fake_client::ClientBuilder;
use spindle_operator::leader::LeaseLock;

async fn locks() -> (LeaseLock, LeaseLock, Api<Lease>) {
    let client = ClientBuilder::new().build().await.unwrap();
    let api: Api<Lease> = Api::namespaced(client, "spindle-system");
    let duration = Duration::from_secs(15);
    (
        LeaseLock::new(api.clone(), "spindle-operator", "replica-a", duration),
        LeaseLock::new(api.clone(), "spindle-operator", "replica-b", duration),
        api,
    )
}

fn at(t0: Timestamp, secs: i64) -> Timestamp {
    t0 + SignedDuration::from_secs(secs)
}

#[tokio::test]
async fn one_holder_renews_and_another_takes_over_after_expiry() {
    let (a, b, api) = locks().await;
    let t0 = Timestamp::now();
    assert!(a.try_acquire(t0).await.unwrap(), "the first replica gets it");
    assert!(!b.try_acquire(at(t0, 1)).await.unwrap(), "held by a");
    assert!(a.try_acquire(at(t0, 5)).await.unwrap(), "a renews");
    assert!(
        !b.try_acquire(at(t0, 19)).await.unwrap(),
        "renewed at 5 s: valid until 20 s"
    );
    assert!(
        b.try_acquire(at(t0, 21)).await.unwrap(),
        "a stopped renewing: b takes over"
    );
    assert!(!a.try_acquire(at(t0, 22)).await.unwrap(), "a has lost it");
    let spec = api.get("spindle-operator").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(spec.lease_duration_seconds, Some(15));

    b.release().await.unwrap();
    assert!(
        a.try_acquire(at(t0, 23)).await.unwrap(),
        "a released lease is free at once"
    );
}

#[tokio::test]
async fn of_two_replicas_deciding_at_once_only_one_wins() {
    let (a, b, api) = locks().await;
    let t0 = Timestamp::now();
    assert!(a.try_acquire(t0).await.unwrap());
    // Both read the expired lease and decide to take it; the first write wins, the second
    // carries a stale resourceVersion and gets 409.
    let later = at(t0, 60);
    let seen = api.get("spindle-operator").await.unwrap();
    let for_b = b.decide(Some(&seen), later).expect("expired: b may take it");
    let third = LeaseLock::new(api.clone(), "spindle-operator", "replica-c", Duration::from_secs(15));
    assert!(third.try_acquire(later).await.unwrap(), "c writes first");
    let err = api
        .replace("spindle-operator", &Default::default(), &for_b)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref e) if e.code == 409), "{err}");
    assert!(!b.try_acquire(later).await.unwrap(), "b sees c's valid lease");
}
