//! The pool configuration the operator renders from all BlockPools into a ConfigMap, and the CSI
//! node plugins read from the mounted file: which pools exist, where, and on which nodes.

use serde::{Deserialize, Serialize};

/// Key of the rendered file in the ConfigMap.
pub const CONFIG_MAP_KEY: &str = "pools.yaml";

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolConfigFile {
    #[serde(default)]
    pub pools: Vec<PoolEntry>,
}

/// One pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolEntry {
    pub name: String,
    /// Directory on the node.
    pub path: String,
    /// The nodes that have the pool; every node when absent. The operator resolves the
    /// BlockPool's node selector, because a node plugin cannot read its own node's labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
    /// How much the pool may promise (volume capacities and snapshot sizes), in percent of its
    /// usable size; 100 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overcommit_percent: Option<u32>,
}

impl PoolEntry {
    pub fn serves(&self, node: &str) -> bool {
        self.nodes
            .as_ref()
            .is_none_or(|nodes| nodes.iter().any(|n| n == node))
    }
}

impl PoolConfigFile {
    /// The file as the operator writes it: pools sorted by name, so equal content renders equal.
    pub fn render(&self) -> String {
        let mut sorted = self.clone();
        sorted.pools.sort_by(|a, b| a.name.cmp(&b.name));
        format!(
            "# Rendered by fastvirt-operator from the BlockPools; edits are overwritten.\n{}",
            serde_yaml::to_string(&sorted).expect("pool config serializes")
        )
    }

    /// The pools that serve `node`.
    pub fn for_node<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a PoolEntry> + 'a {
        self.pools.iter().filter(move |p| p.serves(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sorted_and_parses_back() {
        let file = PoolConfigFile {
            pools: vec![
                PoolEntry {
                    name: "zeta".into(),
                    path: "/z".into(),
                    nodes: Some(vec!["a".into()]),
                    overcommit_percent: None,
                },
                PoolEntry {
                    name: "alpha".into(),
                    path: "/a".into(),
                    nodes: None,
                    overcommit_percent: None,
                },
            ],
        };
        let text = file.render();
        assert!(text.find("alpha").unwrap() < text.find("zeta").unwrap());
        let parsed: PoolConfigFile = serde_yaml::from_str(&text).unwrap();
        assert_eq!(parsed.pools.len(), 2);
        let on_b: Vec<_> = parsed.for_node("b").map(|p| p.name.as_str()).collect();
        assert_eq!(on_b, ["alpha"]);
        let on_a: Vec<_> = parsed.for_node("a").map(|p| p.name.as_str()).collect();
        assert_eq!(on_a, ["alpha", "zeta"]);
    }
}
