//! The Kubernetes API permissions each fastvirt binary needs. Every client call in the operator and
//! the agent names the permission it uses from its crate's list, and the Helm chart's tests check
//! that the rendered Roles grant each one, so RBAC can neither lag behind the code nor grant more
//! than it calls for without someone noticing.

use serde::Serialize;

/// Where a permission is granted: in a ClusterRole or in a Role of the release namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    Cluster,
    Namespace,
}

/// One API permission: `verbs` on `resource` (with its subresource, e.g. `tunednodes/status`) of
/// `api_group` (empty for the core group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub scope: Scope,
}

impl Permission {
    pub const fn cluster(
        api_group: &'static str,
        resource: &'static str,
        verbs: &'static [&'static str],
    ) -> Self {
        Permission {
            api_group,
            resource,
            verbs,
            scope: Scope::Cluster,
        }
    }

    /// The same permission, granted in the release namespace only.
    pub const fn namespaced(
        api_group: &'static str,
        resource: &'static str,
        verbs: &'static [&'static str],
    ) -> Self {
        Permission {
            scope: Scope::Namespace,
            ..Permission::cluster(api_group, resource, verbs)
        }
    }
}
