//! The pool configuration ConfigMap the CSI node plugins mount, rendered from every BlockPool.
//! The plugins follow the mounted file while they run, so a change restarts nothing.

use fastvirt_api::BlockPool;
use fastvirt_api::assignment::selects;
use fastvirt_api::pool_config::{CONFIG_MAP_KEY, PoolConfigFile, PoolEntry};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::core::PartialObjectMeta;
use std::collections::BTreeMap;
use std::sync::Arc;

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
    /// Pools left out of the file, and why.
    pub left_out: BTreeMap<String, LeftOut>,
}

/// Why a pool is not in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeftOut {
    /// Its directory is, contains or lies inside the directory of this older pool on a node both
    /// have. A node plugin cannot open both: each pool directory is locked by its pool.
    PathConflict { older: String },
    /// Its directory is under none of the directories the node plugins mount from the host, so it
    /// would be created in the plugin container's own filesystem and lost when it restarts.
    OutsideHostDirs { host_dirs: Vec<String> },
}

/// `path` is one of `dirs` or lies inside one. No directories: nothing to check against.
pub fn inside_host_dirs(path: &str, dirs: &[String]) -> bool {
    let path = path.trim_end_matches('/');
    dirs.is_empty()
        || dirs.iter().any(|dir| {
            let dir = dir.trim_end_matches('/');
            path == dir || path.starts_with(&format!("{dir}/"))
        })
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
/// whose directories collide on a node, the oldest stays (its volumes keep being served). A pool
/// outside every one of `host_dirs` (the node plugins' host mounts; empty: unknown) is left out.
pub fn render(pools: &[&BlockPool], nodes: &[Arc<NodeMeta>], host_dirs: &[String]) -> Rendered {
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
            overcommit_percent: pool.spec.overcommit_percent,
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
        if !inside_host_dirs(&entry.path, host_dirs) {
            let host_dirs = host_dirs.to_vec();
            rendered
                .left_out
                .insert(entry.name, LeftOut::OutsideHostDirs { host_dirs });
            continue;
        }
        match collision {
            Some(kept) => {
                let older = kept.name.clone();
                rendered
                    .left_out
                    .insert(entry.name, LeftOut::PathConflict { older });
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

    fn kept_names(rendered: &Rendered) -> Vec<&str> {
        rendered
            .file
            .pools
            .iter()
            .map(|p| p.name.as_str())
            .collect()
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
        let rendered = render(&[&around, &sibling, &inside, &same, &old], &nodes, &[]);
        let kept = kept_names(&rendered);
        assert_eq!(kept, ["old", "sibling"]);
        let conflict = |older: &str| LeftOut::PathConflict {
            older: older.to_owned(),
        };
        assert_eq!(
            rendered.left_out,
            BTreeMap::from([
                ("same".to_owned(), conflict("old")),
                ("inside".to_owned(), conflict("old")),
                ("around".to_owned(), conflict("old")),
            ])
        );
    }

    #[test]
    fn a_pool_outside_the_host_directories_is_left_out() {
        let nodes = [node("a", "1")];
        let host_dirs = vec![
            "/var/lib/fastvirt/pools".to_owned(),
            "/mnt/nvme0/".to_owned(),
        ];
        let inside = pool("inside", 0, "/var/lib/fastvirt/pools/fast", &[]);
        let the_dir = pool("the-dir", 10, "/mnt/nvme0", &[]);
        let lookalike = pool("lookalike", 20, "/var/lib/fastvirt/pools-old/a", &[]);
        let elsewhere = pool("elsewhere", 30, "/srv/pool", &[]);
        let rendered = render(
            &[&inside, &the_dir, &lookalike, &elsewhere],
            &nodes,
            &host_dirs,
        );
        let kept = kept_names(&rendered);
        assert_eq!(kept, ["inside", "the-dir"]);
        let outside = LeftOut::OutsideHostDirs {
            host_dirs: host_dirs.clone(),
        };
        assert_eq!(
            rendered.left_out,
            BTreeMap::from([
                ("lookalike".to_owned(), outside.clone()),
                ("elsewhere".to_owned(), outside),
            ])
        );
        // Without known host directories nothing is left out for its path.
        assert!(render(&[&elsewhere], &nodes, &[]).left_out.is_empty());
    }

    #[test]
    fn one_directory_on_disjoint_nodes_is_no_collision() {
        let nodes = [node("a", "1"), node("b", "2")];
        let rack1 = pool("rack1", 0, "/mnt/nvme0", &[("rack", "1")]);
        let rack2 = pool("rack2", 10, "/mnt/nvme0", &[("rack", "2")]);
        let rendered = render(&[&rack1, &rack2], &nodes, &[]);
        assert_eq!(rendered.file.pools.len(), 2);
        assert!(rendered.left_out.is_empty());
    }
}
