//! One server-side-apply helper for every kind of object, skipping writes that would change
//! nothing, and pruning of objects an application no longer needs (a function entry removed,
//! an ingress dropped).
//!
//! Every applied object carries a hash of the manifest the operator applied. When the stored
//! object has the same hash the write is skipped: it saves API calls and watch events on
//! every periodic reconciliation. The first reconciliation of an application by an operator
//! process applies everything anyway, which puts back anything changed by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::builders::fnv1a;
use crate::context::CONTROLLER_NAME;

/// On every applied object: the hash of the manifest applied.
pub const APPLIED_HASH_ANNOTATION: &str = "spindle.dev/applied-hash";

pub trait Object:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned
{
}
impl<K> Object for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned
{
}

/// The objects of one kind labelled as one application's, by name.
pub struct Existing<K>(pub BTreeMap<String, K>);

impl<K: Object> Existing<K> {
    pub async fn load(client: &Client, namespace: &str, selector: &str) -> Result<Existing<K>, Error> {
        let api: Api<K> = Api::namespaced(client.clone(), namespace);
        let list = api.list(&ListParams::default().labels(selector)).await?;
        Ok(Existing(list.into_iter().map(|o| (o.name_any(), o)).collect()))
    }
}

fn applied_hash<K: Object>(obj: &K) -> Option<&String> {
    obj.meta().annotations.as_ref()?.get(APPLIED_HASH_ANNOTATION)
}

/// Applies `obj` (server-side, as the operator's field manager, taking over conflicting
/// fields: the operator owns these objects) unless `existing` already has it and `full` is
/// false. Returns the object as stored.
pub async fn apply<K: Object>(client: &Client, obj: &K, existing: Option<&K>, full: bool) -> Result<K, Error> {
    let namespace = obj
        .meta()
        .namespace
        .as_deref()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = obj.meta().name.clone().ok_or(Error::MissingField("metadata.name"))?;
    let mut obj = obj.clone();
    let hash = fnv1a(&serde_json::to_string(&obj).expect("objects serialize"));
    if !full && let Some(current) = existing.filter(|e| applied_hash(*e) == Some(&hash)) {
        return Ok(current.clone());
    }
    obj.meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED_HASH_ANNOTATION.into(), hash);
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(CONTROLLER_NAME).force();
    Ok(api.patch(&name, &params, &Patch::Apply(&obj)).await?)
}

/// Deletes the objects in `existing` owned by `owner_uid` whose names are not in `keep`.
/// Returns the names deleted.
pub async fn prune<K: Object>(
    client: &Client,
    namespace: &str,
    existing: &Existing<K>,
    owner_uid: &str,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, Error> {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut deleted = Vec::new();
    for (name, obj) in &existing.0 {
        let owned = obj.owner_references().iter().any(|o| o.uid == owner_uid);
        if owned && !keep.contains(name) {
            match api.delete(name, &DeleteParams::background()).await {
                Ok(_) => deleted.push(name.clone()),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(deleted)
}
