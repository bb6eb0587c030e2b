//! Who uses a volume, and where their cgroups are.
//!
//! The pods come from kubelet's own state: it publishes a volume into a directory named after the
//! pod's UID and the PersistentVolume. A KubeVirt hot-plugged disk is published for its attachment
//! pod, while QEMU in the virt-launcher pod does the I/O; so the processes that hold the device
//! open (or a file on its filesystem) count too, each for the pod its cgroup belongs to. Both
//! cgroup drivers are understood: cgroupfs (`.../pod<uid>/`) and systemd
//! (`...-pod<uid_with_underscores>.slice/`).

use super::cgroup::CgroupVersion;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A pod's UID, as kubelet names its directories.
pub type PodUid = String;

/// UUIDs for API pods, 32 hex digits for static ones.
fn is_pod_uid(text: &str) -> bool {
    (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The pod a cgroup directory name stands for.
pub fn pod_in_segment(segment: &str) -> Option<PodUid> {
    if let Some(uid) = segment.strip_prefix("pod") {
        return is_pod_uid(uid).then(|| uid.to_owned());
    }
    let name = segment.strip_suffix(".slice")?;
    let (_, uid) = name.rsplit_once("-pod")?;
    let uid = uid.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

/// The pod a process runs in, from its `/proc/<pid>/cgroup`.
pub fn pod_of_process(cgroup_file: &str) -> Option<PodUid> {
    cgroup_file.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.split('/').find_map(pod_in_segment)
    })
}

/// Every PersistentVolume kubelet has published on this node, with the pods it is published for:
/// `pods/<uid>/volumes/kubernetes.io~csi/<pv>` (filesystem), `pods/<uid>/volumeDevices/
/// kubernetes.io~csi/<pv>` and `plugins/kubernetes.io/csi/volumeDevices/publish/<pv>/<uid>`
/// (block).
pub fn published_volumes(kubelet_dir: &Path) -> BTreeMap<String, BTreeSet<PodUid>> {
    let mut found: BTreeMap<String, BTreeSet<PodUid>> = BTreeMap::new();
    for (uid, pod_dir) in children(&kubelet_dir.join("pods")) {
        if !is_pod_uid(&uid) {
            continue;
        }
        for kind in ["volumes", "volumeDevices"] {
            for (pv, _) in children(&pod_dir.join(kind).join("kubernetes.io~csi")) {
                found.entry(pv).or_default().insert(uid.clone());
            }
        }
    }
    let publish = kubelet_dir.join("plugins/kubernetes.io/csi/volumeDevices/publish");
    for (pv, pv_dir) in children(&publish) {
        for (uid, _) in children(&pv_dir) {
            if is_pod_uid(&uid) {
                found.entry(pv.clone()).or_default().insert(uid);
            }
        }
    }
    found
}

/// The entries of a directory by name; none when it cannot be read.
fn children(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect()
}

/// What a volume's users hold open: its device (the device node, or any file on a filesystem
/// made on it), or, for a volume that is a file on a filesystem shared with other volumes (a
/// disk-image volume's `disk.img`), that very file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Held {
    Device(u64),
    File { dev: u64, ino: u64 },
}

/// For each of `wanted`, the pods whose processes hold it open.
pub fn holders(proc_dir: &Path, wanted: &BTreeSet<Held>) -> BTreeMap<Held, BTreeSet<PodUid>> {
    let mut found: BTreeMap<Held, BTreeSet<PodUid>> = BTreeMap::new();
    if wanted.is_empty() {
        return found;
    }
    for (pid, process) in children(proc_dir) {
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // Most processes of a node are not in a pod; their descriptors are not looked at.
        let Some(pod) = std::fs::read_to_string(process.join("cgroup"))
            .ok()
            .and_then(|text| pod_of_process(&text))
        else {
            continue;
        };
        for (_, fd) in children(&process.join("fd")) {
            let Ok(meta) = std::fs::metadata(&fd) else {
                continue;
            };
            let candidates = if meta.file_type().is_block_device() {
                [Some(Held::Device(meta.rdev())), None]
            } else {
                [
                    Some(Held::Device(meta.dev())),
                    Some(Held::File {
                        dev: meta.dev(),
                        ino: meta.ino(),
                    }),
                ]
            };
            for held in candidates.into_iter().flatten() {
                if wanted.contains(&held) {
                    found.entry(held).or_default().insert(pod.clone());
                }
            }
        }
    }
    found
}

/// The cgroup hierarchies that can throttle block I/O, under a cgroup root (`/sys/fs/cgroup`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies(pub Vec<(CgroupVersion, PathBuf)>);

/// How deep pod cgroups can be below a hierarchy's root: `[cgroupRoot/]kubepods/<qos>/pod<uid>`,
/// with the systemd driver's slices, and a cgroupRoot of a few levels.
const POD_DEPTH: usize = 6;

impl Hierarchies {
    /// The unified hierarchy if its io controller is there, and the v1 blkio hierarchy if
    /// mounted (a host can have both: v1 controllers with a cgroup2 mount beside them).
    pub fn discover(root: &Path) -> Self {
        let mut found = Vec::new();
        for unified in [root.to_owned(), root.join("unified")] {
            if std::fs::read_to_string(unified.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|name| name == "io"))
            {
                found.push((CgroupVersion::V2, unified));
            }
        }
        for (name, dir) in children(root) {
            if name.split(',').any(|c| c == "blkio")
                && dir.join("blkio.throttle.read_iops_device").exists()
            {
                found.push((CgroupVersion::V1, dir));
            }
        }
        Self(found)
    }

    /// Every pod's cgroup directories, by UID.
    pub fn pod_cgroups(&self) -> HashMap<PodUid, Vec<(CgroupVersion, PathBuf)>> {
        let mut found: HashMap<PodUid, Vec<(CgroupVersion, PathBuf)>> = HashMap::new();
        for (version, root) in &self.0 {
            let mut stack = vec![(root.clone(), 0)];
            while let Some((dir, depth)) = stack.pop() {
                for (name, child) in children(&dir) {
                    if !child.is_dir() {
                        continue;
                    }
                    if let Some(uid) = pod_in_segment(&name) {
                        found.entry(uid).or_default().push((*version, child));
                    } else if depth + 1 < POD_DEPTH {
                        stack.push((child, depth + 1));
                    }
                }
            }
        }
        found
    }
}

/// Where a pod's limits are written: on v2 the pod's cgroup (io.max covers the subtree), on v1
/// the pod's cgroup and every cgroup below it (blk-throttle in v1 counts each cgroup's own tasks
/// only), which are its containers.
pub fn limit_targets(version: CgroupVersion, pod_dir: &Path) -> Vec<PathBuf> {
    let mut targets = vec![pod_dir.to_owned()];
    if version == CgroupVersion::V1 {
        let mut index = 0;
        while index < targets.len() {
            let below: Vec<PathBuf> = children(&targets[index])
                .into_iter()
                .map(|(_, path)| path)
                .filter(|path| path.is_dir())
                .collect();
            targets.extend(below);
            index += 1;
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6f1c2d3e-0000-4a4b-9c9d-112233445566";

    #[test]
    fn pods_are_found_in_both_cgroup_drivers_names() {
        assert_eq!(pod_in_segment(&format!("pod{UID}")), Some(UID.to_owned()));
        assert_eq!(
            pod_in_segment(&format!(
                "kubepods-burstable-pod{}.slice",
                UID.replace('-', "_")
            )),
            Some(UID.to_owned())
        );
        assert_eq!(pod_in_segment("kubepods"), None);
        assert_eq!(pod_in_segment("burstable"), None);
        assert_eq!(pod_in_segment("kubepods-burstable.slice"), None);
        assert_eq!(pod_in_segment("pod../../etc"), None);
        assert_eq!(pod_in_segment("pod"), None);
        let v1 = format!(
            "12:pids:/fastvirt-x/kubepods/besteffort/pod{UID}/0123abcd\n7:blkio:/fastvirt-x/kubepods/besteffort/pod{UID}/0123abcd\n"
        );
        assert_eq!(pod_of_process(&v1), Some(UID.to_owned()));
        let v2 = format!(
            "0::/kubepods.slice/kubepods-pod{}.slice/cri-containerd-0123.scope\n",
            UID.replace('-', "_")
        );
        assert_eq!(pod_of_process(&v2), Some(UID.to_owned()));
        assert_eq!(pod_of_process("0::/system.slice/kubelet.service\n"), None);
    }

    #[test]
    fn kubelet_directories_name_each_volumes_pods() {
        let kubelet = tempfile::tempdir().unwrap();
        let k = kubelet.path();
        let other = "aaaaaaaa-0000-4000-8000-000000000001";
        std::fs::create_dir_all(
            k.join(format!("pods/{UID}/volumes/kubernetes.io~csi/pv-fs/mount")),
        )
        .unwrap();
        std::fs::create_dir_all(k.join(format!("pods/{other}/volumes/kubernetes.io~csi/pv-fs")))
            .unwrap();
        std::fs::create_dir_all(k.join(format!("pods/{other}/volumes/kubernetes.io~empty-dir/x")))
            .unwrap();
        std::fs::create_dir_all(k.join(format!("pods/{UID}/volumeDevices/kubernetes.io~csi")))
            .unwrap();
        std::fs::write(
            k.join(format!(
                "pods/{UID}/volumeDevices/kubernetes.io~csi/pv-block"
            )),
            "",
        )
        .unwrap();
        let publish = k.join("plugins/kubernetes.io/csi/volumeDevices/publish/pv-block");
        std::fs::create_dir_all(&publish).unwrap();
        std::fs::write(publish.join(other), "").unwrap();
        std::fs::write(publish.join("not a uid!"), "").unwrap();
        let found = published_volumes(k);
        assert_eq!(
            found["pv-fs"],
            BTreeSet::from([UID.to_owned(), other.to_owned()])
        );
        assert_eq!(
            found["pv-block"],
            BTreeSet::from([UID.to_owned(), other.to_owned()])
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(published_volumes(&k.join("missing")).is_empty());
    }

    #[test]
    fn pod_cgroups_are_found_in_both_versions_and_v1_targets_reach_containers() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let blkio = r.join("blkio");
        let pod_v1 = blkio.join(format!("fastvirt-x/kubepods/burstable/pod{UID}"));
        std::fs::create_dir_all(pod_v1.join("c1")).unwrap();
        std::fs::create_dir_all(pod_v1.join("c2")).unwrap();
        std::fs::write(blkio.join("blkio.throttle.read_iops_device"), "").unwrap();
        let unified = r.join("unified");
        let pod_v2 = unified.join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
            UID.replace('-', "_")
        ));
        std::fs::create_dir_all(pod_v2.join("cri-containerd-1.scope")).unwrap();
        std::fs::write(
            unified.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        // A cgroup2 mount without the io controller cannot throttle: not a hierarchy.
        std::fs::write(r.join("cgroup.controllers"), "").unwrap();

        let hierarchies = Hierarchies::discover(r);
        assert_eq!(
            hierarchies,
            Hierarchies(vec![
                (CgroupVersion::V2, unified.clone()),
                (CgroupVersion::V1, blkio.clone())
            ])
        );
        let pods = hierarchies.pod_cgroups();
        let mut dirs = pods[UID].clone();
        dirs.sort();
        assert_eq!(
            dirs,
            vec![
                (CgroupVersion::V1, pod_v1.clone()),
                (CgroupVersion::V2, pod_v2.clone())
            ]
        );
        let mut v1 = limit_targets(CgroupVersion::V1, &pod_v1);
        v1.sort();
        assert_eq!(
            v1,
            vec![pod_v1.clone(), pod_v1.join("c1"), pod_v1.join("c2")]
        );
        assert_eq!(limit_targets(CgroupVersion::V2, &pod_v2), vec![pod_v2]);
    }

    #[test]
    fn holders_are_the_pods_of_processes_with_the_device_open() {
        // This test process stands in for a pod's: a fake /proc whose one process is in a pod's
        // cgroup and holds a descriptor of a file, whose filesystem's device is looked for.
        let proc_dir = tempfile::tempdir().unwrap();
        let process = proc_dir.path().join("4242");
        std::fs::create_dir_all(process.join("fd")).unwrap();
        std::fs::write(
            process.join("cgroup"),
            format!("7:blkio:/kubepods/besteffort/pod{UID}/abc\n"),
        )
        .unwrap();
        let held = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(held.path(), process.join("fd/3")).unwrap();
        let outside = proc_dir.path().join("4343");
        std::fs::create_dir_all(outside.join("fd")).unwrap();
        std::fs::write(outside.join("cgroup"), "0::/system.slice/x.service\n").unwrap();
        std::os::unix::fs::symlink(held.path(), outside.join("fd/3")).unwrap();

        let meta = std::fs::metadata(held.path()).unwrap();
        let device = Held::Device(meta.dev());
        let file = Held::File {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        // Another file on the same filesystem: held by nobody, though its device is.
        let other = Held::File {
            dev: meta.dev(),
            ino: meta.ino() + 1,
        };
        let found = holders(
            proc_dir.path(),
            &BTreeSet::from([device, file, other, Held::Device(1)]),
        );
        let pod = Some(BTreeSet::from([UID.to_owned()]));
        assert_eq!(found.get(&device), pod.as_ref());
        assert_eq!(found.get(&file), pod.as_ref(), "the very file");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(holders(proc_dir.path(), &BTreeSet::new()).is_empty());
    }
}
