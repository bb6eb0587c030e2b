//! Every API permission the operator uses. Each client call in the operator names its entry here;
//! the Helm chart's tests check that the operator's ClusterRole and Role grant exactly these.

use fastvirt_api::rbac::Permission;

/// Watched, and patched to add and remove the pool finalizer.
pub const BLOCK_POOLS: Permission =
    Permission::cluster("fastvirt.io", "blockpools", &["list", "watch", "patch"]);
pub const BLOCK_POOL_STATUS: Permission =
    Permission::cluster("fastvirt.io", "blockpools/status", &["patch"]);
/// The objects a pool owns carry `blockOwnerDeletion`, which the OwnerReferencesPermissionEnforcement
/// admission plugin allows only to whoever may update the owner's finalizers.
pub const BLOCK_POOL_FINALIZERS: Permission =
    Permission::cluster("fastvirt.io", "blockpools/finalizers", &["update"]);
pub const PROFILES: Permission =
    Permission::cluster("fastvirt.io", "nodetuningprofiles", &["list", "watch"]);
/// The instancetypes a profile owns carry `blockOwnerDeletion` (see BLOCK_POOL_FINALIZERS).
pub const PROFILE_FINALIZERS: Permission =
    Permission::cluster("fastvirt.io", "nodetuningprofiles/finalizers", &["update"]);
pub const PROFILE_STATUS: Permission =
    Permission::cluster("fastvirt.io", "nodetuningprofiles/status", &["patch"]);
pub const TUNED_NODES: Permission =
    Permission::cluster("fastvirt.io", "tunednodes", &["list", "watch"]);
/// Metadata only: labels select pools and profiles.
pub const NODES: Permission = Permission::cluster("", "nodes", &["list", "watch"]);
/// A pool being deleted waits for its volumes.
pub const PERSISTENT_VOLUMES: Permission =
    Permission::cluster("", "persistentvolumes", &["list", "watch"]);
/// Read before replacing, listed by pool label, created again on replacement, applied, deleted.
pub const STORAGE_CLASSES: Permission = Permission::cluster(
    "storage.k8s.io",
    "storageclasses",
    &["get", "list", "watch", "create", "patch", "delete"],
);
/// CSIStorageCapacity objects live in the namespace of each external-provisioner; the operator
/// reads them in every namespace.
pub const STORAGE_CAPACITIES: Permission =
    Permission::cluster("storage.k8s.io", "csistoragecapacities", &["list", "watch"]);
/// Server-side apply creates the class when it is absent.
pub const SNAPSHOT_CLASSES: Permission = Permission::cluster(
    "snapshot.storage.k8s.io",
    "volumesnapshotclasses",
    &["list", "watch", "create", "patch", "delete"],
);
/// CDI creates them; the operator reads one to know it is there, then patches it.
pub const STORAGE_PROFILES: Permission = Permission::cluster(
    "cdi.kubevirt.io",
    "storageprofiles",
    &["get", "list", "watch", "patch"],
);
/// Server-side apply creates them; listed by profile label to delete the sizes a profile no
/// longer has.
pub const INSTANCETYPES: Permission = Permission::cluster(
    "instancetype.kubevirt.io",
    "virtualmachineclusterinstancetypes",
    &["list", "create", "patch", "delete"],
);
/// Server-side apply creates them.
pub const PREFERENCES: Permission = Permission::cluster(
    "instancetype.kubevirt.io",
    "virtualmachineclusterpreferences",
    &["create", "patch"],
);
/// The admission policy's parameter; server-side apply creates it.
pub const TUNING_SUMMARY: Permission =
    Permission::cluster("fastvirt.io", "tuningsummaries", &["create", "patch"]);
pub const TUNING_SUMMARY_STATUS: Permission =
    Permission::cluster("fastvirt.io", "tuningsummaries/status", &["patch"]);
/// Events about cluster-scoped objects are written to the `default` namespace.
pub const EVENTS: Permission = Permission::cluster("events.k8s.io", "events", &["create", "patch"]);
/// Server-side apply creates the ConfigMap when it is absent.
pub const POOL_CONFIG_MAP: Permission =
    Permission::namespaced("", "configmaps", &["create", "patch"]);
pub const NODE_DAEMONSET: Permission = Permission::namespaced("apps", "daemonsets", &["get"]);
pub const LEASES: Permission = Permission::namespaced(
    "coordination.k8s.io",
    "leases",
    &["get", "create", "update"],
);

/// All of the above, for the chart's tests.
pub const REQUIRED: &[Permission] = &[
    BLOCK_POOLS,
    BLOCK_POOL_STATUS,
    BLOCK_POOL_FINALIZERS,
    PROFILES,
    PROFILE_FINALIZERS,
    PROFILE_STATUS,
    TUNED_NODES,
    NODES,
    PERSISTENT_VOLUMES,
    STORAGE_CLASSES,
    STORAGE_CAPACITIES,
    SNAPSHOT_CLASSES,
    STORAGE_PROFILES,
    INSTANCETYPES,
    PREFERENCES,
    TUNING_SUMMARY,
    TUNING_SUMMARY_STATUS,
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
    Permission::cluster("storage.k8s.io", "csinodes", &["list"]),
];
