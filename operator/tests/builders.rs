//! The operator's pure decisions, checked against YAML fixtures.

use fastvirt_api::assignment::{Assignment, assign};
use fastvirt_api::{BlockPool, NodeTuningProfile, TunedNode, TunedNodeStatus};
use fastvirt_operator::pool_objects::storage_profile;
use fastvirt_operator::profile_status::aggregate;
use fastvirt_operator::storage_class::{BuildError, build, needs_replacement};
use std::collections::BTreeMap;
use std::path::Path;

fn load<T: serde::de::DeserializeOwned>(path: &str) -> T {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    serde_yaml::from_str(&std::fs::read_to_string(&full).unwrap()).unwrap()
}

fn example_pool() -> BlockPool {
    let mut pool: BlockPool = load("../examples/blockpool.yaml");
    pool.metadata.uid = Some("0c0c0c0c-0000-4000-8000-000000000001".into());
    pool
}

#[test]
fn the_example_pool_becomes_a_default_block_storage_class() {
    let class = build(&example_pool()).unwrap();
    assert_eq!(class.metadata.name.as_deref(), Some("nvme"));
    assert_eq!(class.provisioner, "block.fastvirt.io");
    let parameters = class.parameters.unwrap();
    assert_eq!(parameters["pool"], "nvme");
    assert_eq!(parameters["thin"], "false");
    assert!(!parameters.contains_key("csi.storage.k8s.io/fstype"));
    let annotations = class.metadata.annotations.unwrap();
    assert_eq!(
        annotations["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
    assert_eq!(
        annotations["storageclass.kubevirt.io/is-default-virt-class"],
        "true"
    );
    assert_eq!(class.reclaim_policy.as_deref(), Some("Delete"));
    assert_eq!(
        class.volume_binding_mode.as_deref(),
        Some("WaitForFirstConsumer")
    );
    assert_eq!(class.allow_volume_expansion, Some(true));
    assert!(
        class.allowed_topologies.is_none(),
        "a role label is not a topology"
    );
    let owner = &class.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("BlockPool", "nvme", Some(true))
    );
    assert_eq!(class.metadata.labels.unwrap()["fastvirt.io/pool"], "nvme");
}

#[test]
fn a_filesystem_pool_on_one_node() {
    let pool: BlockPool = load("tests/fixtures/pool-fs.yaml");
    let class = build(&pool).unwrap();
    assert_eq!(class.metadata.name.as_deref(), Some("fast-xfs"));
    let parameters = class.parameters.as_ref().unwrap();
    assert_eq!(parameters["thin"], "true");
    assert_eq!(parameters["csi.storage.k8s.io/fstype"], "xfs");
    assert_eq!(
        class.mount_options.as_deref(),
        Some(&["noatime".to_owned()][..])
    );
    assert_eq!(class.reclaim_policy.as_deref(), Some("Retain"));
    assert!(class.metadata.annotations.is_none());
    // A hostname label is not the driver's topology value (the node name): the pool file and
    // CSIStorageCapacity keep the class on the selected node instead.
    assert!(class.allowed_topologies.is_none());
}

#[test]
fn parameters_the_driver_does_not_take_are_refused() {
    let mut pool: BlockPool = load("tests/fixtures/pool-fs.yaml");
    pool.spec
        .storage_class
        .parameters
        .insert("csi.storage.k8s.io/pvc/name-prefix".into(), "vm".into());
    let error = build(&pool).unwrap_err();
    assert!(
        error.to_string().contains("storageClass.parameters.csi.storage.k8s.io/pvc/name-prefix is not a parameter fastvirt-csi accepts"),
        "{error}"
    );
}

#[test]
fn io_limits_pass_to_the_class_and_bad_ones_are_explained() {
    let mut pool: BlockPool = load("tests/fixtures/pool-fs.yaml");
    let parameters = &mut pool.spec.storage_class.parameters;
    parameters.insert("readIOPS".into(), "2000".into());
    parameters.insert("writeBPS".into(), "104857600".into());
    let class = build(&pool).unwrap();
    let rendered = class.parameters.as_ref().unwrap();
    assert_eq!(rendered["readIOPS"], "2000");
    assert_eq!(rendered["writeBPS"], "104857600");

    pool.spec
        .storage_class
        .parameters
        .insert("writeIOPS".into(), "0".into());
    let error = build(&pool).unwrap_err();
    assert!(
        matches!(&error, BuildError::BadLimit(m) if m.contains("writeIOPS must be at least 1")),
        "{error}"
    );
}

#[test]
fn invalid_pools_are_explained() {
    let mut pool = example_pool();
    pool.spec
        .storage_class
        .parameters
        .insert("pool".into(), "other".into());
    assert_eq!(
        build(&pool),
        Err(BuildError::ReservedParameter("pool".into()))
    );
    let mut pool = example_pool();
    pool.spec.storage_class.mount_options = vec!["noatime".into()];
    assert_eq!(build(&pool), Err(BuildError::MountOptionsOnBlockOnly));
    assert_eq!(
        BuildError::MountOptionsOnBlockOnly.to_string(),
        "storageClass.mountOptions apply to filesystem volumes, but the class is blockOnly"
    );
}

#[test]
fn immutable_changes_need_a_replacement_and_others_do_not() {
    let pool = example_pool();
    let existing = build(&pool).unwrap();
    let mut thin = pool.clone();
    thin.spec.backend.file.preallocate = false;
    assert_eq!(
        needs_replacement(&existing, &build(&thin).unwrap()),
        Some("parameters")
    );
    let mut retain = pool.clone();
    retain.spec.storage_class.reclaim_policy = fastvirt_api::block_pool::ReclaimPolicy::Retain;
    assert_eq!(
        needs_replacement(&existing, &build(&retain).unwrap()),
        Some("reclaimPolicy")
    );
    let mut not_default = pool.clone();
    not_default.spec.storage_class.default_class = false;
    assert_eq!(
        needs_replacement(&existing, &build(&not_default).unwrap()),
        None,
        "annotations change in place"
    );
}

fn profile(name: &str, priority: i32, selector: &[(&str, &str)]) -> NodeTuningProfile {
    let mut profile: NodeTuningProfile = load("../examples/nodetuningprofile.yaml");
    profile.metadata.name = Some(name.into());
    profile.metadata.generation = Some(3);
    profile.spec.priority = priority;
    profile.spec.node_selector = selector
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    profile
}

#[test]
fn profiles_are_assigned_by_selector_and_priority() {
    let labels: BTreeMap<String, String> = [("fastvirt.io/vm-host", "true"), ("zone", "a")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let general = profile("general", 0, &[("fastvirt.io/vm-host", "true")]);
    let zone_a = profile("zone-a", 10, &[("zone", "a")]);
    let other = profile("other", 0, &[("zone", "b")]);
    assert_eq!(
        assign(&[general.clone(), other.clone()], &labels),
        Assignment::Profile("general".into())
    );
    assert_eq!(
        assign(&[general.clone(), zone_a.clone()], &labels),
        Assignment::Profile("zone-a".into())
    );
    assert_eq!(
        assign(std::slice::from_ref(&other), &labels),
        Assignment::None
    );
    let twin = profile("twin", 0, &[("zone", "a")]);
    assert_eq!(
        assign(&[general, twin], &labels),
        Assignment::Conflict(vec!["general".into(), "twin".into()])
    );
}

fn condition_of(
    status: &fastvirt_api::NodeTuningProfileStatus,
    type_: &str,
) -> fastvirt_api::Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
        .clone()
}

fn report(
    profile: &str,
    generation: i64,
    applied: bool,
    degraded: bool,
    reboot: bool,
) -> TunedNode {
    let condition = |type_: &str, on: bool| fastvirt_api::Condition {
        type_: type_.into(),
        status: if on { "True" } else { "False" }.into(),
        reason: "Test".into(),
        message: String::new(),
        last_transition_time: None,
        observed_generation: None,
    };
    let mut node = TunedNode::new("n", Default::default());
    node.status = Some(TunedNodeStatus {
        profile: Some(profile.into()),
        profile_generation: Some(generation),
        reboot_required: reboot,
        conditions: vec![
            condition("Applied", applied),
            condition("Degraded", degraded),
        ],
        ..Default::default()
    });
    node
}

#[test]
fn a_thousand_node_reports_add_up() {
    let vm_hosts = profile("vm-hosts", 0, &[]);
    let mut reports: Vec<TunedNode> = (0..990)
        .map(|_| report("vm-hosts", 3, true, false, false))
        .collect();
    reports.extend((0..5).map(|_| report("vm-hosts", 3, false, true, false)));
    reports.extend((0..3).map(|_| report("vm-hosts", 2, true, false, true)));
    reports.extend((0..2).map(|_| report("another", 3, true, false, false)));
    let status = aggregate(&vm_hosts, 1000, 0, &reports);
    assert_eq!(status.matched_nodes, 1000);
    assert_eq!(
        status.applied_nodes, 990,
        "old generations and other profiles do not count"
    );
    assert_eq!(status.degraded_nodes, 5);
    assert_eq!(status.reboot_required_nodes, 3);
    let get = |t: &str| condition_of(&status, t);
    assert_eq!(get("Available").status, "False");
    assert_eq!(get("Progressing").status, "True");
    assert_eq!(
        (
            get("Degraded").status.as_str(),
            get("Degraded").reason.as_str()
        ),
        ("True", "ApplyFailed")
    );
    assert_eq!(status.observed_generation, Some(3));

    let settled: Vec<TunedNode> = (0..4)
        .map(|_| report("vm-hosts", 3, true, false, false))
        .collect();
    let status = aggregate(&vm_hosts, 6, 2, &settled);
    let get = |t: &str| condition_of(&status, t);
    assert_eq!(
        (
            get("Degraded").status.as_str(),
            get("Degraded").reason.as_str()
        ),
        ("True", "ProfileConflict")
    );
    assert_eq!(get("Progressing").status, "False");
}

#[test]
fn a_disk_image_pool_names_its_layout_and_offers_filesystem_claims_only() {
    let mut pool: BlockPool = load("../examples/blockpool-disk-image.yaml");
    pool.metadata.uid = Some("0c0c0c0c-0000-4000-8000-000000000002".into());
    let class = build(&pool).unwrap();
    let parameters = class.parameters.unwrap();
    assert_eq!(parameters["layout"], "disk-image");
    assert!(!parameters.contains_key("csi.storage.k8s.io/fstype"));
    let profile = storage_profile(&pool, Some("nvme-images".into())).unwrap();
    let modes: Vec<&str> = profile
        .spec
        .claim_property_sets
        .iter()
        .map(|set| set.volume_mode.as_str())
        .collect();
    assert_eq!(modes, ["Filesystem"]);
    assert_eq!(
        profile.spec.claim_property_sets[0].access_modes,
        ["ReadWriteOnce"]
    );

    // A device class never names its layout, so existing classes stay as they are.
    let device = build(&example_pool()).unwrap();
    assert!(!device.parameters.unwrap().contains_key("layout"));
    let profile = storage_profile(&example_pool(), None).unwrap();
    assert_eq!(profile.spec.claim_property_sets.len(), 1, "blockOnly");
    assert_eq!(profile.spec.claim_property_sets[0].volume_mode, "Block");

    // The operator sets the layout; the parameters may not.
    let mut pool = example_pool();
    pool.spec
        .storage_class
        .parameters
        .insert("layout".into(), "disk-image".into());
    assert_eq!(
        build(&pool).unwrap_err(),
        BuildError::ReservedParameter("layout".into())
    );
}
