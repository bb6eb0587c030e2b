//! The disk-image layout in the real cluster: a BlockPool with `layout: disk-image` on a btrfs
//! filesystem with quotas (this machine's kernel has no XFS or ext4 quotas), mounted inside the
//! chart's pool directory after the node plugin started, as an administrator adds a disk. A pod's
//! Filesystem claim of its class shows exactly one preallocated `disk.img` of the claim's size and
//! nothing else. With CDI's StorageProfile API served (a stand-in CRD) and the profile CDI would
//! make, the operator sets the pool's hints on it: Filesystem ReadWriteOnce only, csi-clone, the pool's VolumeSnapshotClass
//! and golden images as snapshots.

use super::{apply, blockpool, class_of, delete, pod, pvc, run_to_completion, wait};
use fastvirt_csi::local::ScratchFs;
use fastvirt_e2e::cluster::State;
use fastvirt_e2e::cluster::kubectl::Kubectl;
use serde_json::{Value, json};

const POOL: &str = "images";
const CDI_CRD: &str = include_str!("../../fixtures/cdi-storageprofile-crd.yaml");

pub fn a_disk_image_claim_is_one_preallocated_image(kubectl: &Kubectl, state: &State) {
    let scratch = ScratchFs::new(&state.layout().pool_host_dir(), 2 << 30, "btrfs");
    scratch.enable_btrfs_quotas();
    apply(kubectl, CDI_CRD);
    kubectl
        .run(&[
            "wait",
            "--for=condition=Established",
            "crd/storageprofiles.cdi.kubevirt.io",
            "--timeout=60s",
        ])
        .expect("the StorageProfile CRD established");
    // CDI makes a StorageProfile for every StorageClass, with an empty spec, and owns it; the
    // operator only adds its hints.
    apply(
        kubectl,
        &format!(
            "apiVersion: cdi.kubevirt.io/v1beta1\nkind: StorageProfile\nmetadata:\n  name: {POOL}\nspec: {{}}\n"
        ),
    );

    apply(
        kubectl,
        &blockpool(
            POOL,
            &scratch.mount_point.join("pool"),
            &format!(
                "  nodeSelector:\n    kubernetes.io/hostname: {}\n  storageClass:\n    layout: disk-image\n    volumeBindingMode: WaitForFirstConsumer\n  snapshotClass:\n    deletionPolicy: Delete\n  cdiStorageProfile: true\n",
                state.hostname_label
            ),
        ),
    );
    let class = wait(kubectl, "the disk-image pool's class", 120, || {
        class_of(kubectl, POOL)
    });
    assert_eq!(class["parameters"]["layout"], "disk-image", "{class}");

    apply(kubectl, &pvc("image-claim", POOL, false, "256Mi", None));
    apply(
        kubectl,
        &pod(
            "image-reader",
            "image-claim",
            false,
            "ls -A /data; stat -c %s /data/disk.img; du -k /data/disk.img | cut -f1",
        ),
    );
    let out = run_to_completion(kubectl, "image-reader");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], "disk.img", "one image and nothing else: {out}");
    assert_eq!(
        lines[1],
        (256u64 << 20).to_string(),
        "the claim's size: {out}"
    );
    let allocated_kib: u64 = lines[2].trim().parse().expect("du's KiB");
    assert!(allocated_kib >= 256 << 10, "preallocated: {out}");

    // CDI's view of the class (the operator rediscovers APIs every minute).
    let profile = wait(kubectl, "the pool's StorageProfile", 180, || {
        Ok(kubectl.get_json(&["storageprofile", POOL]).ok())
    });
    let spec = &profile["spec"];
    assert_eq!(
        spec["claimPropertySets"],
        json!([{"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem"}]),
        "{profile}"
    );
    assert_eq!(spec["cloneStrategy"], "csi-clone", "{profile}");
    assert_eq!(spec["snapshotClass"], POOL, "{profile}");
    assert_eq!(spec["dataImportCronSourceFormat"], "snapshot", "{profile}");
    let snapshot_class = kubectl
        .get_json(&["volumesnapshotclass", POOL])
        .expect("the pool's VolumeSnapshotClass");
    assert_eq!(snapshot_class["driver"], fastvirt_csi::DRIVER_NAME);

    delete(kubectl, "pod", "image-reader");
    delete(kubectl, "pvc", "image-claim");
    wait(kubectl, "the disk-image claim's volume gone", 180, || {
        let pvs = kubectl.get_json(&["pv"])?;
        let left = pvs["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|pv: &Value| pv["spec"]["storageClassName"] == POOL);
        Ok((!left).then_some(()))
    });
    kubectl
        .run(&["delete", "blockpool", POOL, "--wait=true", "--timeout=120s"])
        .expect("the disk-image pool deleted");
    kubectl
        .run(&["delete", "storageprofile", POOL, "--ignore-not-found"])
        .expect("the StorageProfile deleted");
    kubectl
        .run(&[
            "delete",
            "crd",
            "storageprofiles.cdi.kubevirt.io",
            "--wait=true",
        ])
        .expect("the StorageProfile CRD deleted");
    // The node plugin lets the pool go once the pool file no longer has it.
    wait(kubectl, "the plugin let the pool go", 120, || {
        let busy = holds_lock(&scratch.mount_point.join("pool/.fastvirt.lock"));
        Ok((!busy).then_some(()))
    });
    drop(scratch);
}

/// Whether some process holds `lock` (the pool lock a serving plugin keeps).
fn holds_lock(lock: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(lock) else {
        return false;
    };
    let (dev, ino) = (meta.dev(), meta.ino());
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| std::fs::read_dir(p.path().join("fd")).ok())
        .flatten()
        .flatten()
        .any(|fd| std::fs::metadata(fd.path()).is_ok_and(|m| (m.dev(), m.ino()) == (dev, ino)))
}
