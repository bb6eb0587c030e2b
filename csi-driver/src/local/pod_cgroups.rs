//! Pods as kubelet lays them out, for tests and the benchmark that need I/O limits in force: a
//! cgroup named `pod<uid>` with a container cgroup below it in every hierarchy that throttles
//! block I/O, processes started inside it, and the path kubelet publishes a block volume at.

use crate::qos::QosLimits;
use crate::qos::cgroup::{self, CgroupVersion, DeviceNumber};
use crate::qos::consumers::Hierarchies;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where kubelet publishes a block volume `pv` for the pod `uid`, under kubelet's `root`.
pub fn block_publish_path(root: &Path, pv: &str, uid: &str) -> PathBuf {
    root.join("plugins/kubernetes.io/csi/volumeDevices/publish")
        .join(pv)
        .join(uid)
}

/// Where kubelet publishes a filesystem volume `pv` for the pod `uid`, under kubelet's `root`.
pub fn mount_publish_path(root: &Path, pv: &str, uid: &str) -> PathBuf {
    root.join("pods")
        .join(uid)
        .join("volumes/kubernetes.io~csi")
        .join(pv)
        .join("mount")
}

/// A pod's cgroups in every hierarchy that throttles, with one container cgroup each; removed
/// (their processes killed first) on drop.
pub struct PodCgroups {
    /// The test's own parent cgroup in each hierarchy.
    parents: Vec<PathBuf>,
    /// (version, pod directory) per hierarchy.
    pods: Vec<(CgroupVersion, PathBuf)>,
}

impl PodCgroups {
    pub fn create(hierarchies: &Hierarchies, test: &str, uid: &str) -> Self {
        let mut parents = Vec::new();
        let mut pods = Vec::new();
        for (version, root) in &hierarchies.0 {
            let parent = root.join(format!("fastvirt-{test}-{}", std::process::id()));
            let pod = parent.join(format!("pod{uid}"));
            std::fs::create_dir_all(pod.join("container")).expect("cgroup files");
            if *version == CgroupVersion::V2 {
                // io.max exists where the parent hands the io controller down.
                for dir in [&parent, &pod] {
                    std::fs::write(dir.join("cgroup.subtree_control"), "+io")
                        .expect("cgroup files");
                }
            }
            parents.push(parent);
            pods.push((*version, pod));
        }
        Self { parents, pods }
    }

    /// Moves this process (all its threads) into the pod's container cgroups, so that what it
    /// starts from now on runs there too.
    pub fn enter(&self) -> std::io::Result<()> {
        let pid = std::process::id().to_string();
        for procs in self.container_procs() {
            std::fs::write(procs, &pid)?;
        }
        Ok(())
    }

    /// Moves this process back to the root of each hierarchy (before the cgroups are removed,
    /// which kills what is left in them).
    pub fn leave(&self) -> std::io::Result<()> {
        let pid = std::process::id().to_string();
        for parent in &self.parents {
            if let Some(root) = parent.parent() {
                std::fs::write(root.join("cgroup.procs"), &pid)?;
            }
        }
        Ok(())
    }

    /// The cgroups a process of the pod's container is moved into.
    pub fn container_procs(&self) -> Vec<PathBuf> {
        self.pods
            .iter()
            .map(|(_, pod)| pod.join("container/cgroup.procs"))
            .collect()
    }

    /// The limits in force for `device` where the container's I/O is counted: on v2 the pod's
    /// io.max covers its subtree, on v1 the container's own files do.
    pub fn limits(&self, device: DeviceNumber) -> Vec<QosLimits> {
        self.pods
            .iter()
            .map(|(version, pod)| {
                let dir = match version {
                    CgroupVersion::V1 => pod.join("container"),
                    CgroupVersion::V2 => pod.clone(),
                };
                cgroup::read(&dir, *version, device).expect("cgroup files")
            })
            .collect()
    }
}

impl Drop for PodCgroups {
    fn drop(&mut self) {
        for parent in &self.parents {
            let mut dirs = vec![parent.clone()];
            let mut index = 0;
            while index < dirs.len() {
                if let Ok(entries) = std::fs::read_dir(&dirs[index]) {
                    dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
                }
                index += 1;
            }
            for dir in dirs.iter().rev() {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            for dir in dirs.iter().rev() {
                for _ in 0..50 {
                    if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// Runs `program args` as a process of the pod's container: a shell moves itself into the
/// container's cgroups, then becomes the program.
pub fn spawn_in(pod: &PodCgroups, program: &str, args: &[String]) -> Child {
    // The paths reach the shell as environment variables, never as script text.
    let procs = pod.container_procs();
    let mut script = String::new();
    for i in 0..procs.len() {
        script.push_str(&format!("echo $$ > \"$CG{i}\" && "));
    }
    script.push_str("exec \"$@\"");
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(program)
        .args(args);
    for (i, path) in procs.iter().enumerate() {
        command.env(format!("CG{i}"), path);
    }
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn in the pod's cgroup")
}
