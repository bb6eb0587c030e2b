//! The pool configuration ConfigMap the CSI node plugins mount, rendered from every BlockPool,
//! and the hash that rolls the node plugins when it changes.

use fastvirt_api::BlockPool;
use fastvirt_api::assignment::selects;
use fastvirt_api::pool_config::{CONFIG_MAP_KEY, PoolConfigFile, PoolEntry};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
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

/// The pool file for `pools` on `nodes`, and the pools left out of it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    pub file: PoolConfigFile,
    /// Pools left out because their directory is, contains or lies inside the directory of an
    /// older pool on a node both have: pool → the pool it collides with. A node plugin cannot
    /// open both (each pool directory is locked by its pool), and would not start at all.
    pub conflicts: BTreeMap<String, String>,
}

/// `a` and `b` are the same directory or one lies inside the other.
fn paths_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_end_matches('/'), b.trim_end_matches('/'));
    a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))
}

/// Two pools share a node (`None`: every node, including ones that join later).
fn share_a_node(a: &Option<Vec<String>>, b: &Option<Vec<String>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|node| b.contains(node)),
        (Some(nodes), None) | (None, Some(nodes)) => !nodes.is_empty(),
        (None, None) => true,
    }
}

/// The file for `pools` on `nodes`. A pool whose selector is empty is on every node, including
/// ones that join later, so it names no nodes; otherwise the matching nodes are listed. Of pools
/// whose directories collide on a node, the oldest stays (its volumes keep being served).
pub fn render(pools: &[&BlockPool], nodes: &[Arc<NodeMeta>]) -> Rendered {
    let mut by_age: Vec<&BlockPool> = pools.to_vec();
    by_age.sort_by(|a, b| {
        let created = |p: &BlockPool| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a)
            .cmp(&created(b))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    let mut rendered = Rendered::default();
    for pool in by_age {
        let entry = PoolEntry {
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
        };
        let collision = rendered.file.pools.iter().find(|kept| {
            paths_overlap(&kept.path, &entry.path) && share_a_node(&kept.nodes, &entry.nodes)
        });
        match collision {
            Some(kept) => {
                rendered.conflicts.insert(entry.name, kept.name.clone());
            }
            None => rendered.file.pools.push(entry),
        }
    }
    rendered
}

/// Nodes `pool` selects.
pub fn matched_nodes(pool: &BlockPool, nodes: &[Arc<NodeMeta>]) -> u32 {
    let count = nodes
        .iter()
        .filter(|node| selects(&pool.spec.node_selector, labels(node)))
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// The ConfigMap holding `file`, owned by the node plugins' DaemonSet where there is one: the
/// chart installs that DaemonSet, so uninstalling the chart removes the file the operator made.
pub fn config_map(
    name: &str,
    namespace: &str,
    file: &PoolConfigFile,
    owner: Option<OwnerReference>,
) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            owner_references: owner.map(|o| vec![o]),
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

/// An owner reference to the node plugins' DaemonSet (not its controller: nothing is adopted).
pub fn daemonset_owner(
    daemonset: &k8s_openapi::api::apps::v1::DaemonSet,
) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "DaemonSet".into(),
        name: daemonset.metadata.name.clone()?,
        uid: daemonset.metadata.uid.clone()?,
        controller: None,
        block_owner_deletion: None,
    })
}

/// A short, stable hash of the rendered file.
pub fn hash(file: &PoolConfigFile) -> String {
    let digest = Sha256::digest(file.render().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, created: i64, path: &str, selector: &[(&str, &str)]) -> BlockPool {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "fastvirt.io/v1alpha1",
            "kind": "BlockPool",
            "metadata": {
                "name": name,
                "creationTimestamp": k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + created).unwrap(),
            },
            "spec": {
                "backend": {"file": {"path": path}},
                "nodeSelector": selector.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            },
        }))
        .unwrap()
    }

    fn node(name: &str, rack: &str) -> Arc<NodeMeta> {
        let mut meta = NodeMeta {
            types: None,
            metadata: ObjectMeta::default(),
            _phantom: Default::default(),
        };
        meta.metadata.name = Some(name.into());
        meta.metadata.labels = Some(BTreeMap::from([("rack".to_owned(), rack.to_owned())]));
        Arc::new(meta)
    }

    #[test]
    fn colliding_directories_keep_the_oldest_pool() {
        let nodes = [node("a", "1"), node("b", "2")];
        let old = pool("old", 0, "/pools/nvme", &[]);
        let same = pool("same", 10, "/pools/nvme/", &[]);
        let inside = pool("inside", 20, "/pools/nvme/sub", &[("rack", "2")]);
        let around = pool("around", 30, "/pools", &[("rack", "1")]);
        let sibling = pool("sibling", 40, "/pools/nvme2", &[]);
        let rendered = render(&[&around, &sibling, &inside, &same, &old], &nodes);
        let kept: Vec<&str> = rendered
            .file
            .pools
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(kept, ["old", "sibling"]);
        assert_eq!(
            rendered.conflicts,
            BTreeMap::from([
                ("same".to_owned(), "old".to_owned()),
                ("inside".to_owned(), "old".to_owned()),
                ("around".to_owned(), "old".to_owned()),
            ])
        );
    }

    #[test]
    fn one_directory_on_disjoint_nodes_is_no_collision() {
        let nodes = [node("a", "1"), node("b", "2")];
        let rack1 = pool("rack1", 0, "/mnt/nvme0", &[("rack", "1")]);
        let rack2 = pool("rack2", 10, "/mnt/nvme0", &[("rack", "2")]);
        let rendered = render(&[&rack1, &rack2], &nodes);
        assert_eq!(rendered.file.pools.len(), 2);
        assert!(rendered.conflicts.is_empty());
    }
}
