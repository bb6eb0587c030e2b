//! Every Kubernetes API permission the agent uses. Each client call in the agent names its entry
//! here; the Helm chart's tests check that the agent's ClusterRole grants all of them.

use fastvirt_api::rbac::Permission;

/// The agent's own Node: its labels select a profile, and the
/// `kubevirt.io/ksm-handler-managed` annotation tells it to leave KSM to KubeVirt.
pub const NODES: Permission = Permission::cluster("", "nodes", &["get", "list", "watch"]);
/// The node's facts as `node.fastvirt.io/` labels (a merge patch of its own Node; the chart's
/// ValidatingAdmissionPolicy lets the agent change nothing else, on no other Node).
pub const NODE_LABELS: Permission = Permission::cluster("", "nodes", &["patch"]);
pub const PROFILES: Permission =
    Permission::cluster("fastvirt.io", "nodetuningprofiles", &["list", "watch"]);
/// The agent creates the TunedNode named after its node with a server-side apply patch.
pub const TUNED_NODES: Permission =
    Permission::cluster("fastvirt.io", "tunednodes", &["create", "patch"]);
pub const TUNED_NODE_STATUS: Permission =
    Permission::cluster("fastvirt.io", "tunednodes/status", &["patch"]);
/// Events about the cluster-scoped TunedNode are written to the `default` namespace.
pub const EVENTS: Permission = Permission::cluster("events.k8s.io", "events", &["create", "patch"]);

/// All of the above, for the chart's tests.
pub const REQUIRED: &[Permission] = &[
    NODES,
    NODE_LABELS,
    PROFILES,
    TUNED_NODES,
    TUNED_NODE_STATUS,
    EVENTS,
];
