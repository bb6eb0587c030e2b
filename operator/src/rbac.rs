//! Every API permission the operator uses. Each client call in the operator names its entry here;
//! the Helm chart's tests check that the operator's ClusterRole and Role grant all of them.

use fastvirt_api::rbac::Permission;

pub const BLOCK_POOLS: Permission = Permission::cluster(
    "fastvirt.io",
    "blockpools",
    &["get", "list", "watch", "patch", "update"],
);
pub const BLOCK_POOL_STATUS: Permission =
    Permission::cluster("fastvirt.io", "blockpools/status", &["get", "patch"]);
pub const BLOCK_POOL_FINALIZERS: Permission =
    Permission::cluster("fastvirt.io", "blockpools/finalizers", &["update"]);
pub const PROFILES: Permission = Permission::cluster(
    "fastvirt.io",
    "nodetuningprofiles",
    &["get", "list", "watch"],
);
pub const PROFILE_STATUS: Permission = Permission::cluster(
    "fastvirt.io",
    "nodetuningprofiles/status",
    &["get", "patch"],
);
pub const TUNED_NODES: Permission =
    Permission::cluster("fastvirt.io", "tunednodes", &["get", "list", "watch"]);
pub const NODES: Permission = Permission::cluster("", "nodes", &["get", "list", "watch"]);
pub const PERSISTENT_VOLUMES: Permission =
    Permission::cluster("", "persistentvolumes", &["get", "list", "watch"]);
pub const STORAGE_CLASSES: Permission = Permission::cluster(
    "storage.k8s.io",
    "storageclasses",
    &["get", "list", "watch", "create", "patch", "delete"],
);
/// CSIStorageCapacity objects live in the namespace of each external-provisioner; the operator
/// reads them in every namespace.
pub const STORAGE_CAPACITIES: Permission = Permission::cluster(
    "storage.k8s.io",
    "csistoragecapacities",
    &["get", "list", "watch"],
);
pub const SNAPSHOT_CLASSES: Permission = Permission::cluster(
    "snapshot.storage.k8s.io",
    "volumesnapshotclasses",
    &["get", "list", "watch", "create", "patch", "delete"],
);
pub const STORAGE_PROFILES: Permission = Permission::cluster(
    "cdi.kubevirt.io",
    "storageprofiles",
    &["get", "list", "watch", "patch"],
);
/// Events about cluster-scoped objects are written to the `default` namespace.
pub const EVENTS: Permission = Permission::cluster("events.k8s.io", "events", &["create", "patch"]);
pub const POOL_CONFIG_MAP: Permission = Permission::namespaced(
    "",
    "configmaps",
    &["get", "list", "watch", "create", "patch"],
);
pub const NODE_DAEMONSET: Permission =
    Permission::namespaced("apps", "daemonsets", &["get", "patch"]);
pub const LEASES: Permission = Permission::namespaced(
    "coordination.k8s.io",
    "leases",
    &["get", "create", "update", "patch"],
);

/// All of the above, for the chart's tests.
pub const REQUIRED: &[Permission] = &[
    BLOCK_POOLS,
    BLOCK_POOL_STATUS,
    BLOCK_POOL_FINALIZERS,
    PROFILES,
    PROFILE_STATUS,
    TUNED_NODES,
    NODES,
    PERSISTENT_VOLUMES,
    STORAGE_CLASSES,
    STORAGE_CAPACITIES,
    SNAPSHOT_CLASSES,
    STORAGE_PROFILES,
    EVENTS,
    POOL_CONFIG_MAP,
    NODE_DAEMONSET,
    LEASES,
];

/// What `fastvirt-operator check-install` (the Helm test hook) reads.
pub const CHECK_INSTALL: &[Permission] = &[
    Permission::cluster("fastvirt.io", "blockpools", &["list"]),
    Permission::cluster("fastvirt.io", "nodetuningprofiles", &["list"]),
    Permission::cluster("fastvirt.io", "tunednodes", &["list"]),
    Permission::cluster("storage.k8s.io", "csinodes", &["get", "list"]),
];
