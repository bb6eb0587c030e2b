//! The pool configuration ConfigMap the CSI node plugins mount, rendered from every BlockPool,
//! and the hash that rolls the node plugins when it changes.

use fastvirt_api::BlockPool;
use fastvirt_api::assignment::selects;
use fastvirt_api::pool_config::{CONFIG_MAP_KEY, PoolConfigFile, PoolEntry};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::PartialObjectMeta;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Pod-template annotation of the node DaemonSet carrying the hash of the pool configuration;
/// changing it makes the DaemonSet restart its pods, which then read the new pools.
pub const HASH_ANNOTATION: &str = "fastvirt.io/pool-config-hash";

/// A node as the operator caches it: metadata only.
pub type NodeMeta = PartialObjectMeta<Node>;

/// A node's labels.
pub fn labels(node: &NodeMeta) -> &BTreeMap<String, String> {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    node.metadata.labels.as_ref().unwrap_or(&NONE)
}

/// The file for `pools` on `nodes`. A pool whose selector is empty is on every node, including
/// ones that join later, so it names no nodes; otherwise the matching nodes are listed.
pub fn render(pools: &[&BlockPool], nodes: &[Arc<NodeMeta>]) -> PoolConfigFile {
    let pools = pools
        .iter()
        .map(|pool| PoolEntry {
            name: pool.metadata.name.clone().unwrap_or_default(),
            path: pool.spec.backend.file.path.clone(),
            nodes: (!pool.spec.node_selector.is_empty()).then(|| {
                let mut names: Vec<String> = nodes
                    .iter()
                    .filter(|node| selects(&pool.spec.node_selector, labels(node)))
                    .filter_map(|node| node.metadata.name.clone())
                    .collect();
                names.sort();
                names
            }),
        })
        .collect();
    PoolConfigFile { pools }
}

/// Nodes `pool` selects.
pub fn matched_nodes(pool: &BlockPool, nodes: &[Arc<NodeMeta>]) -> u32 {
    let count = nodes
        .iter()
        .filter(|node| selects(&pool.spec.node_selector, labels(node)))
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// The ConfigMap holding `file`.
pub fn config_map(name: &str, namespace: &str, file: &PoolConfigFile) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                crate::MANAGER.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(CONFIG_MAP_KEY.to_owned(), file.render())])),
        ..ConfigMap::default()
    }
}

/// A short, stable hash of the rendered file.
pub fn hash(file: &PoolConfigFile) -> String {
    let digest = Sha256::digest(file.render().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}
