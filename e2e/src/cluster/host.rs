//! What the cluster changes on the host, and how `down` takes it back: the root mount's
//! propagation, the pods' cgroup in every hierarchy, and a sweep of mounts, loop devices,
//! processes and pod network namespaces the cluster left.

use super::process::{pid_alive, run, stop};
use anyhow::{Context, Result, ensure};
use fastvirt_csi::loopdev;
use fastvirt_csi::mountinfo;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whether `/` propagates mounts (kubelet and the node plugin need `Bidirectional` propagation
/// under the kubelet directory, which a private root refuses).
pub fn root_is_shared() -> Result<bool> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        fields.get(4) == Some(&"/")
            && fields[6..]
                .iter()
                .take_while(|f| **f != "-")
                .any(|f| f.starts_with("shared:"))
    }))
}

pub fn make_root_shared() -> Result<()> {
    run("mount", &["--make-rshared", "/"]).map(drop)
}

pub fn make_root_private() -> Result<()> {
    run("mount", &["--make-rprivate", "/"]).map(drop)
}

/// The mounted cgroup v1 hierarchies (each has its own directory tree).
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").exists() && !p.ends_with("unified"))
        // cpu,cpuacct style links point at a hierarchy listed under its own name too.
        .filter(|p| {
            std::fs::symlink_metadata(p)
                .map(|m| !m.file_type().is_symlink())
                .unwrap_or(false)
        })
        .collect();
    dirs.sort();
    dirs
}

/// Creates the pods' cgroup in every hierarchy (kubelet refuses a cgroupRoot that does not exist).
pub fn create_cgroup(name: &str) -> Result<()> {
    for hierarchy in cgroup_hierarchies() {
        let dir = hierarchy.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // A new cpuset has no CPUs or memory nodes: inherit the parent's, or no task can join.
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let parent = hierarchy.join(file);
            if let Ok(value) = std::fs::read_to_string(&parent) {
                std::fs::write(dir.join(file), value.trim())
                    .with_context(|| format!("writing {}", dir.join(file).display()))?;
            }
        }
    }
    Ok(())
}

/// Kills every process in the cgroup's subtree, then removes it, deepest first.
pub fn remove_cgroup(name: &str) {
    for hierarchy in cgroup_hierarchies() {
        let root = hierarchy.join(name);
        if !root.exists() {
            continue;
        }
        let mut dirs = Vec::new();
        collect_dirs(&root, &mut dirs);
        for dir in &dirs {
            for pid in read_pids(&dir.join("cgroup.procs")) {
                stop(pid, Duration::from_secs(2));
            }
        }
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), out);
            }
        }
    }
}

fn read_pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Processes whose network namespace is `netns` (containerd's shims, anything started in it).
pub fn processes_in_netns(netns: &str) -> Vec<i32> {
    let Ok(target) = std::fs::metadata(format!("/run/netns/{netns}")) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.ino() == target.ino() && m.dev() == target.dev())
        })
        .filter(|pid| pid_alive(*pid))
        .collect()
}

/// Mount points at or below any of `roots`, deepest first.
pub fn mounts_under(roots: &[&Path]) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo::read()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e.mount_point)
        .filter(|p| roots.iter().any(|r| p.starts_with(r)))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// Removes each of `dirs` that exists; refuses (before removing any) when one has a mount below
/// it, since a volume a crashed cluster left mounted holds data.
pub fn remove_dirs_without_mounts(dirs: &[PathBuf]) -> Result<()> {
    let roots: Vec<&Path> = dirs.iter().map(PathBuf::as_path).collect();
    let mounted = mounts_under(&roots);
    ensure!(
        mounted.is_empty(),
        "{} still has mounts ({}); unmount them or run `fastvirt-cluster down` first",
        roots
            .iter()
            .filter(|root| mounted.iter().any(|m| m.starts_with(root)))
            .map(|root| root.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        mounted
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for dir in dirs {
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Unmounts everything at or below `roots` (lazily: a process that still holds one is gone).
pub fn unmount_under(roots: &[&Path]) {
    // Stacked mounts need one pass each; the bound keeps a misbehaving tree from looping forever.
    for _ in 0..8 {
        let points = mounts_under(roots);
        if points.is_empty() {
            return;
        }
        for point in points {
            let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Loop devices whose backing file lies below `root`.
pub fn loops_under(root: &Path) -> Vec<loopdev::LoopDevice> {
    loopdev::bound_under(root)
}

pub fn detach_loops_under(root: &Path) {
    for device in loops_under(root) {
        let mounts = mountinfo::read().unwrap_or_default();
        if let Err(error) = device.detach(&mounts) {
            eprintln!(
                "fastvirt-cluster: could not detach {}: {error}",
                device.name()
            );
        }
    }
}

/// Pod network namespaces (`/run/netns/cni-*`, made by containerd's CRI) whose pods sat on the
/// cluster's bridge network and that were left when their sandbox was not stopped.
pub fn leftover_pod_netns(created_after: std::time::SystemTime) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("cni-"))
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= created_after)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            run("ip", &["-n", name, "-4", "-o", "addr", "show"])
                .is_ok_and(|out| out.contains(" 10.88."))
        })
        .collect()
}
