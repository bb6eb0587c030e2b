//! `fastvirt-operator check-install`: what the Helm test hook runs after an install. It passes when
//! the API server serves every fastvirt CRD and at least one node's kubelet registered the driver.

use fastvirt_api::lenient::Lenient;
use fastvirt_api::{BlockPool, NodeTuningProfile, TunedNode};
use k8s_openapi::api::storage::v1::CSINode;
use kube::api::ListParams;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{resource} is not served: {source}; were the CRDs installed?")]
    NotServed {
        resource: String,
        source: kube::Error,
    },
    #[error("listing CSINodes: {0}")]
    CsiNodes(kube::Error),
    #[error(
        "no node registered driver {driver} ({nodes} CSINodes seen); check the node DaemonSet's node-driver-registrar logs"
    )]
    NotRegistered { driver: String, nodes: usize },
}

async fn served<K>(client: &Client) -> Result<String, CheckError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let resource = format!("{}.{}", K::plural(&()), K::group(&()));
    // Permission: rbac::CHECK_INSTALL. Leniently: an object it cannot read is served all the same.
    Api::<Lenient<K>>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|source| CheckError::NotServed {
            resource: resource.clone(),
            source,
        })?;
    Ok(format!("{resource} is served"))
}

/// Every check that passed, in order; the first failure otherwise.
pub async fn check_install(client: &Client, driver: &str) -> Result<Vec<String>, CheckError> {
    let mut passed = vec![
        served::<BlockPool>(client).await?,
        served::<NodeTuningProfile>(client).await?,
        served::<TunedNode>(client).await?,
    ];
    let nodes = Api::<CSINode>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(CheckError::CsiNodes)?
        .items;
    let registered: Vec<String> = nodes
        .iter()
        .filter(|n| n.spec.drivers.iter().any(|d| d.name == driver))
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    if registered.is_empty() {
        return Err(CheckError::NotRegistered {
            driver: driver.to_owned(),
            nodes: nodes.len(),
        });
    }
    passed.push(format!(
        "driver {driver} is registered on {} of {} nodes",
        registered.len(),
        nodes.len()
    ));
    Ok(passed)
}
