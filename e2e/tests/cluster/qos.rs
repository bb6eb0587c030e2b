//! Per-volume I/O limits in the real cluster: a Block claim of a VolumeAttributesClass with a read
//! limit caps a running pod's direct reads; switching the claim to another class (the cluster's
//! external-resizer, the controller's ControllerModifyVolume, the PersistentVolume, the node
//! plugin's watch) changes the cap while the pod runs; the node plugin's metrics report the limit
//! in force.

use super::plugin_metrics::{scrape, value};
use super::{POOL, TEST_NS, apply, claim_volume, delete, patch_claim, pod, pod_phase, pvc, wait};
use fastvirt_e2e::cluster::kubectl::Kubectl;

/// Reads per measurement in the pod.
const READS: u32 = 600;

fn class(name: &str, read_iops: u32) -> String {
    format!(
        "apiVersion: storage.k8s.io/v1
kind: VolumeAttributesClass
metadata:
  name: {name}
driverName: {driver}
parameters:
  readIOPS: \"{read_iops}\"
",
        driver = fastvirt_csi::DRIVER_NAME
    )
}

/// IOPS of each measurement the pod printed so far: `reads N from S to E`, the times from
/// /proc/uptime (busybox's dd and date print no sub-second times).
fn measurements(kubectl: &Kubectl, name: &str) -> Vec<f64> {
    let logs = kubectl
        .run(&["logs", name, "-n", TEST_NS])
        .unwrap_or_default();
    logs.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (Some("reads"), Some(reads), Some("from"), Some(start), Some("to"), Some(end)) = (
                words.next(),
                words.next(),
                words.next(),
                words.next(),
                words.next(),
                words.next(),
            ) else {
                return None;
            };
            let (reads, start, end): (f64, f64, f64) =
                (reads.parse().ok()?, start.parse().ok()?, end.parse().ok()?);
            (end > start).then(|| reads / (end - start))
        })
        .collect()
}

/// The median of the three measurements after the first `skip`, once there are that many.
fn median_after(kubectl: &Kubectl, name: &str, skip: usize) -> Option<f64> {
    let mut next: Vec<f64> = measurements(kubectl, name)
        .into_iter()
        .skip(skip)
        .take(3)
        .collect();
    (next.len() == 3).then(|| {
        next.sort_by(f64::total_cmp);
        next[1]
    })
}

pub fn a_class_change_changes_a_running_pods_cap(kubectl: &Kubectl) {
    apply(kubectl, &class("qos-slow", 200));
    apply(kubectl, &class("qos-fast", 800));
    let claim = "qos-claim";
    apply(
        kubectl,
        &pvc(claim, POOL, true, "64Mi", None).replacen(
            "spec:\n",
            "spec:\n  volumeAttributesClassName: qos-slow\n",
            1,
        ),
    );
    let reader = "qos-reader";
    apply(
        kubectl,
        &pod(
            reader,
            claim,
            true,
            &format!(
                "while true; do s=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/xvda of=/dev/null bs=4096 count={READS} iflag=direct 2>/dev/null; e=$(cut -d' ' -f1 /proc/uptime); echo \"reads {READS} from $s to $e\"; done"
            ),
        ),
    );
    wait(kubectl, "the reader running", 180, || {
        Ok((pod_phase(kubectl, reader)? == "Running").then_some(()))
    });
    let pv = claim_volume(kubectl, claim);

    // The class given at creation reaches the volume through CreateVolume's mutable parameters;
    // the pod's containers start unthrottled and get the limit within a second (on cgroup v1
    // each container's cgroup needs its own copy), which the metrics show: measurements count
    // from then on.
    let volume = format!("persistentvolume=\"{pv}\"");
    // On v2 the pod's cgroup covers its containers; on v1 the pod's, the sandbox's and the
    // reader's own each carry the limit.
    let v1 =
        fastvirt_csi::qos::consumers::Hierarchies::discover(std::path::Path::new("/sys/fs/cgroup"))
            .0
            .iter()
            .any(|(version, _)| *version == fastvirt_csi::qos::cgroup::CgroupVersion::V1);
    let carriers = if v1 { 3.0 } else { 1.0 };
    wait(kubectl, "the limit on the reader's cgroups", 60, || {
        let text = scrape(kubectl)?;
        let limit = value(
            &text,
            "fastvirt_csi_volume_qos_limit",
            &[&volume, "limit=\"read_iops\""],
        );
        let cgroups = value(&text, "fastvirt_csi_volume_qos_cgroups", &[&volume]);
        Ok((limit == Some(200.0) && cgroups.is_some_and(|n| n >= carriers)).then_some(()))
    });
    let done = measurements(kubectl, reader).len();
    // The measurement running when the limit arrived is skipped.
    let slow = wait(kubectl, "three reads under qos-slow", 120, || {
        Ok(median_after(kubectl, reader, done + 1))
    });
    eprintln!("qos: {slow:.0} IOPS under a 200 IOPS class");
    assert!((160.0..=230.0).contains(&slow), "{slow:.0} IOPS under 200");

    // The class changes while the pod runs.
    patch_claim(
        kubectl,
        claim,
        r#"{"spec":{"volumeAttributesClassName":"qos-fast"}}"#,
    );
    wait(
        kubectl,
        "the resizer to finish the modification",
        120,
        || {
            let claim = kubectl.get_json(&["pvc", claim, "-n", TEST_NS])?;
            Ok(
                (claim["status"]["currentVolumeAttributesClassName"] == "qos-fast"
                    && claim["status"]["modifyVolumeStatus"].is_null())
                .then_some(()),
            )
        },
    );
    let persistent_volume = kubectl.get_json(&["pv", &pv]).expect("the PV");
    assert_eq!(
        persistent_volume["metadata"]["annotations"]["block.fastvirt.io/qos"],
        r#"{"readIOPS":"800"}"#,
        "the controller records the limits for the volume's node"
    );
    wait(kubectl, "the new limit in /metrics", 60, || {
        let text = scrape(kubectl)?;
        Ok(value(
            &text,
            "fastvirt_csi_volume_qos_limit",
            &[&volume, "limit=\"read_iops\""],
        )
        .filter(|v| *v == 800.0)
        .map(|_| ()))
    });
    let done = measurements(kubectl, reader).len();
    // The measurement running at the change mixes both limits: skipped.
    let fast = wait(kubectl, "three reads under qos-fast", 120, || {
        Ok(median_after(kubectl, reader, done + 1))
    });
    eprintln!("qos: {fast:.0} IOPS after the claim moved to an 800 IOPS class");
    assert!((640.0..=920.0).contains(&fast), "{fast:.0} IOPS under 800");

    delete(kubectl, "pod", reader);
    delete(kubectl, "pvc", claim);
    for name in ["qos-slow", "qos-fast"] {
        kubectl
            .run(&["delete", "volumeattributesclass", name, "--wait=true"])
            .expect("deleting the class");
    }
}
