//! Writing cluster-scoped objects the way every reconciler does: server-side apply under the
//! operator's field manager, and deleting the objects of a label that are no longer wanted.

use crate::context::Context;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::ClusterResourceScope;
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// Server-side apply as the operator, taking over fields another manager set (the operator owns
/// these objects).
pub fn apply_params() -> PatchParams {
    PatchParams::apply(crate::MANAGER).force()
}

/// Server-side applies `object` (cluster-scoped) under the operator's field manager.
pub async fn apply<K>(ctx: &Context, object: &K) -> kube::Result<K>
where
    K: Resource<DynamicType = (), Scope = ClusterResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let mut body = serde_json::to_value(object).expect("objects serialize");
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    Api::<K>::all(ctx.client.clone())
        .patch(&name, &apply_params(), &Patch::Apply(body))
        .await
}

/// Deletes the objects of kind `K` that carry `selector` and are not named in `keep`; returns
/// the names deleted.
pub async fn remove_labelled_except<K>(
    ctx: &Context,
    selector: &str,
    keep: &[String],
) -> kube::Result<Vec<String>>
where
    K: Resource<DynamicType = (), Scope = ClusterResourceScope> + Clone + Debug + DeserializeOwned,
{
    let api = Api::<K>::all(ctx.client.clone());
    let mut removed = Vec::new();
    for object in api.list(&ListParams::default().labels(selector)).await? {
        let name = object.meta().name.clone().unwrap_or_default();
        if !keep.contains(&name) {
            api.delete(&name, &DeleteParams::default()).await?;
            removed.push(name);
        }
    }
    Ok(removed)
}
