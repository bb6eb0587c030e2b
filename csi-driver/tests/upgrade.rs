//! An upgrade of the driver keeps every volume, snapshot and attachment, and a downgrade back to
//! the previous release still serves what the new one left.
//!
//! The previous release is the last landed version (`scripts/previous-release.env`), built from
//! git history by `scripts/build-previous-release.sh` into a cache outside the checkout;
//! `FASTVIRT_PREVIOUS_RELEASE` names the directory with its `fastvirt-csi` (scripts/test.sh sets
//! it). That binary creates block and filesystem volumes, a snapshot and a volume restored from
//! it, stages and publishes two volumes and writes to them. It is stopped with SIGTERM, as a
//! DaemonSet rollout stops it, with the attachments in place. This build then starts on the same
//! pool and state directory and must list everything, serve the attached volumes with their data,
//! restore from the old snapshot, make the pool private, and unpublish, unstage and delete.

mod common;

use common::*;
use fastvirt_csi::local::{DriverArgs, DriverProcess};
use fastvirt_csi::proto::*;
use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const SIZE: i64 = 64 * MIB;

fn previous_release() -> Result<PathBuf, String> {
    let dir = std::env::var_os("FASTVIRT_PREVIOUS_RELEASE")
        .filter(|dir| !dir.is_empty())
        .ok_or(
            "FASTVIRT_PREVIOUS_RELEASE is not set or empty: run scripts/build-previous-release.sh and set it to the directory it prints (scripts/test.sh does both; it prints nothing when this clone's history lacks the release)",
        )?;
    let binary = Path::new(&dir).join("fastvirt-csi");
    if !binary.is_file() {
        return Err(format!("{} does not exist", binary.display()));
    }
    Ok(binary)
}

async fn start(args: &DriverArgs, binary: &Path) -> (DriverProcess, fastvirt_csi::local::Clients) {
    let mut args = args.clone();
    args.binary = binary.to_owned();
    DriverProcess::start(args)
        .await
        .unwrap_or_else(|e| panic!("{} starts: {e}", binary.display()))
}

/// Stops the running driver as a rollout does and starts `binary` in its place.
async fn replace_driver(env: &mut TestEnv, binary: &Path) {
    let status = env.driver.terminate().expect("the driver stops");
    assert!(
        status.success(),
        "the driver exits cleanly on SIGTERM: {status}"
    );
    let args = env.driver.args().clone();
    let (driver, clients) = start(&args, binary).await;
    env.driver = driver;
    env.clients = clients;
}

fn write_at_start(path: &Path, data: &[u8]) {
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(data).unwrap();
    file.sync_all().unwrap();
}

fn read_start(path: &Path, len: usize) -> Vec<u8> {
    let mut file = std::fs::File::open(path).unwrap();
    let mut data = vec![0; len];
    file.read_exact(&mut data).unwrap();
    data
}

async fn volume_ids(env: &mut TestEnv) -> BTreeSet<String> {
    env.clients
        .controller
        .list_volumes(ListVolumesRequest::default())
        .await
        .expect("ListVolumes")
        .into_inner()
        .entries
        .into_iter()
        .filter_map(|e| e.volume.map(|v| v.volume_id))
        .collect()
}

async fn snapshot_ids(env: &mut TestEnv) -> BTreeSet<String> {
    env.clients
        .controller
        .list_snapshots(ListSnapshotsRequest::default())
        .await
        .expect("ListSnapshots")
        .into_inner()
        .entries
        .into_iter()
        .filter_map(|e| e.snapshot.map(|s| s.snapshot_id))
        .collect()
}

async fn delete_volume(env: &mut TestEnv, volume_id: &str) {
    env.clients
        .controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: volume_id.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("DeleteVolume {volume_id}: {e}"));
}

/// Paths in the pool that anyone but root could read or enter.
fn not_private(dir: &Path) -> Vec<String> {
    let mut open = Vec::new();
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        open.push(format!("{} {mode:o}", dir.display()));
    }
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.permissions().mode() & 0o077 != 0 {
                open.push(format!(
                    "{} {:o}",
                    entry.path().display(),
                    meta.permissions().mode() & 0o7777
                ));
            }
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    open
}

struct Attached {
    id: String,
    staging: PathBuf,
    target: PathBuf,
    cap: VolumeCapability,
}

async fn attach(env: &mut TestEnv, id: &str, name: &str, cap: VolumeCapability) -> Attached {
    let attached = Attached {
        id: id.to_owned(),
        staging: env.path(&format!("{name}-staging")),
        target: env.path(&format!("{name}-target")),
        cap,
    };
    stage_and_publish_again(env, &attached).await;
    attached
}

/// NodeStage + NodePublish, as kubelet calls them, also again for a volume already attached.
async fn stage_and_publish_again(env: &mut TestEnv, a: &Attached) {
    env.stage(stage_req(&a.id, &a.staging, a.cap.clone())).await;
    env.publish(publish_req(
        &a.id,
        &a.staging,
        &a.target,
        a.cap.clone(),
        false,
    ))
    .await;
}

async fn detach(env: &mut TestEnv, a: &Attached) {
    env.unpublish(unpublish_req(&a.id, &a.target)).await;
    env.unstage(unstage_req(&a.id, &a.staging)).await;
    assert!(!is_mounted(&a.target) && !is_mounted(&a.staging));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_keeps_every_volume_snapshot_and_attachment() {
    require_host!();
    let previous = match previous_release() {
        Ok(binary) => binary,
        Err(reason) => {
            eprintln!("SKIP an_upgrade_keeps_every_volume_snapshot_and_attachment: {reason}");
            return;
        }
    };
    let current = PathBuf::from(env!("CARGO_BIN_EXE_fastvirt-csi"));
    let root = test_root("upgrade");
    // XFS, as a production pool: snapshots are reflinks.
    let scratch = ScratchFs::new(&root, 1 << 30, "xfs");
    let pool_dir = scratch.mount_point.join("pool");
    let mut args = driver_args(&root, vec![("default".into(), pool_dir.clone())]);
    args.extra_args = fastvirt_csi::local::on_the_host_disk();
    let (driver, clients) = start(&args, &previous).await;
    let mut env = TestEnv {
        root: root.clone(),
        pool_dir: pool_dir.clone(),
        driver,
        clients,
    };

    // What the previous release leaves: two attached volumes with data, a snapshot, a restore.
    let block_id = env
        .create(create_req("pvc-block", SIZE, block_cap()))
        .await
        .volume_id;
    let fs_cap = mount_cap("ext4", &[]);
    let fs_id = env
        .create(create_req("pvc-fs", SIZE, fs_cap.clone()))
        .await
        .volume_id;
    let block = attach(&mut env, &block_id, "block", block_cap()).await;
    let fs = attach(&mut env, &fs_id, "fs", fs_cap).await;
    write_at_start(&block.target, &pattern(1));
    std::fs::write(fs.target.join("data"), pattern(2)).unwrap();
    let snapshot_id = env
        .clients
        .controller
        .create_snapshot(snapshot_req("snap-block", &block_id))
        .await
        .expect("CreateSnapshot by the previous release")
        .into_inner()
        .snapshot
        .expect("a snapshot")
        .snapshot_id;
    write_at_start(&block.target, &pattern(3));
    let restored_id = env
        .create(from_snapshot("pvc-restored", SIZE, &snapshot_id))
        .await
        .volume_id;
    let all_volumes: BTreeSet<String> = [&block_id, &fs_id, &restored_id]
        .into_iter()
        .cloned()
        .collect();

    // The upgrade, with both volumes still attached.
    replace_driver(&mut env, &current).await;
    assert_eq!(
        volume_ids(&mut env).await,
        all_volumes,
        "every volume listed"
    );
    assert_eq!(
        snapshot_ids(&mut env).await,
        BTreeSet::from([snapshot_id.clone()]),
        "the snapshot listed"
    );
    for attached in [&block, &fs] {
        let condition = volume_condition(&mut env.clients, &attached.id, &attached.target).await;
        assert!(
            !condition.abnormal,
            "{}: {}",
            attached.id, condition.message
        );
        // kubelet calls these again after a plugin restart; they must answer for old attachments.
        stage_and_publish_again(&mut env, attached).await;
    }
    assert_eq!(read_start(&block.target, 1 << 20), pattern(3));
    assert_eq!(std::fs::read(fs.target.join("data")).unwrap(), pattern(2));
    std::fs::write(fs.target.join("after-upgrade"), pattern(4)).unwrap();
    let open = not_private(&pool_dir);
    assert!(
        open.is_empty(),
        "the upgrade made the pool private: {open:?}"
    );

    // The old snapshot restores, and the old restore holds the snapshot's data.
    let new_restore_id = env
        .create(from_snapshot("pvc-restored-after", SIZE, &snapshot_id))
        .await
        .volume_id;
    for (id, name) in [
        (&restored_id, "restored"),
        (&new_restore_id, "restored-after"),
    ] {
        let restored = attach(&mut env, id, name, block_cap()).await;
        assert_eq!(
            read_start(&restored.target, 1 << 20),
            pattern(1),
            "{name} holds the snapshot's data"
        );
        detach(&mut env, &restored).await;
        delete_volume(&mut env, id).await;
    }
    env.clients
        .controller
        .delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .expect("DeleteSnapshot of the old snapshot");

    // A downgrade: the previous release serves what this one left, attachments included.
    replace_driver(&mut env, &previous).await;
    assert_eq!(
        volume_ids(&mut env).await,
        BTreeSet::from([block_id.clone(), fs_id.clone()]),
        "the previous release lists the volumes left"
    );
    assert_eq!(
        std::fs::read(fs.target.join("after-upgrade")).unwrap(),
        pattern(4)
    );
    for attached in [&block, &fs] {
        detach(&mut env, attached).await;
        delete_volume(&mut env, &attached.id).await;
    }
    assert!(
        loops_under(&pool_dir).is_empty(),
        "no loop device left on the pool"
    );
    assert_eq!(
        pool_files(&pool_dir),
        Vec::<String>::new(),
        "the pool is empty"
    );
    drop(env);
    drop(scratch);
}
