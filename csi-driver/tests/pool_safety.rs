//! Pools that keep what is written to them, and keep it private: modes, a directory in a
//! container's own root, one bad pool among good ones, and a pool file that changes while the
//! plugin runs. All against the real binary.

mod common;

use common::*;
use fastvirt_csi::local::DriverProcess;
use fastvirt_csi::proto::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::Code;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Runs `program args` as the unprivileged user `nobody`; whether it succeeded.
fn as_nobody(program: &str, args: &[&Path]) -> bool {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            program,
        ])
        .args(args)
        .output()
        .expect("setpriv runs (util-linux)")
        .status
        .success()
}

#[tokio::test]
async fn pools_are_private_to_root_and_old_pools_are_tightened() {
    require_host!();
    let root = test_root("private");
    let pool = root.join("pool");
    // A pool as an earlier version left it: world-readable directory and files.
    std::fs::create_dir_all(pool.join("snapshots")).unwrap();
    for dir in [&pool, &pool.join("snapshots")] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let lock = pool.join(".fastvirt.lock");
    std::fs::write(&lock, b"").unwrap();
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();
    // The test root itself stays traversable, so that only the pool's own modes decide.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut env = TestEnv::start_with_flags(root, pool.clone(), ON_THE_HOST_DISK).await;
    assert!(
        env.log().contains("private to root"),
        "tightening is logged: {}",
        env.log()
    );
    let vol = env
        .create(create_req("pvc-private", 8 * MIB, block_cap()))
        .await;
    let thick = env
        .create(with_params(
            create_req("pvc-thick", 8 * MIB, block_cap()),
            &[("thin", "false")],
        ))
        .await;
    let snapshot = env
        .clients
        .controller
        .create_snapshot(snapshot_req("snap-private", &vol.volume_id))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let clone = env
        .create(from_snapshot(
            "pvc-from-snap",
            8 * MIB,
            &snapshot.snapshot_id,
        ))
        .await;

    assert_eq!(mode(&pool), 0o700);
    assert_eq!(mode(&pool.join("snapshots")), 0o700);
    let mut files = 0;
    for dir in [pool.clone(), pool.join("snapshots")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                files += 1;
            }
        }
    }
    // Lock, 3 volumes and 1 snapshot, each an image and a record.
    assert_eq!(files, 1 + 2 * 4, "{:?}", pool_files(&pool));

    // Nobody else can list the pool or read a disk, even knowing its name.
    let image = std::fs::read_dir(&pool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "img"))
        .unwrap();
    assert!(
        as_nobody("true", &[]),
        "the unprivileged user can run at all"
    );
    assert!(!as_nobody("ls", &[&pool]));
    assert!(!as_nobody("cat", &[&image]));
    assert!(!as_nobody("ls", &[&pool.join("snapshots")]));
    for id in [&vol.volume_id, &thick.volume_id, &clone.volume_id] {
        env.clients
            .controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn one_unusable_pool_leaves_the_plugin_and_the_other_pools_serving() {
    require_host!();
    let root = test_root("bad-pool");
    let good = root.join("good");
    // Cannot be created: a regular file stands where its parent directory should be.
    let blocker = root.join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let missing = blocker.join("pool");
    // Read-only: a bind mount of a pool directory remounted read-only, as after a disk error.
    let ro_source = root.join("ro-source");
    let ro = root.join("ro");
    std::fs::create_dir_all(&ro_source).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    let bind = nix::mount::MsFlags::MS_BIND;
    nix::mount::mount(Some(&ro_source), &ro, None::<&str>, bind, None::<&str>).unwrap();
    let remount = bind | nix::mount::MsFlags::MS_REMOUNT | nix::mount::MsFlags::MS_RDONLY;
    nix::mount::mount(None::<&str>, &ro, None::<&str>, remount, None::<&str>).unwrap();

    let mut args = driver_args(
        &root,
        vec![
            ("good".into(), good.clone()),
            ("missing".into(), missing.clone()),
            ("readonly".into(), ro.clone()),
        ],
    );
    args.extra_args = fastvirt_csi::local::on_the_host_disk();
    let (mut driver, mut clients) = DriverProcess::start(args).await.expect("the plugin starts");

    let probe = clients.identity.probe(ProbeRequest {}).await.unwrap();
    assert_eq!(
        probe.into_inner().ready,
        Some(true),
        "one bad pool is not a bad plugin"
    );
    let capacity = |pool: &str| GetCapacityRequest {
        parameters: [("pool".to_owned(), pool.to_owned())].into(),
        ..Default::default()
    };
    for (pool, usable) in [("good", true), ("missing", false), ("readonly", false)] {
        let answer = clients
            .controller
            .get_capacity(capacity(pool))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.available_capacity > 0, usable, "{pool}: {answer:?}");
        let created = clients
            .controller
            .create_volume(with_params(
                create_req(&format!("pvc-{pool}"), 8 * MIB, block_cap()),
                &[("pool", pool)],
            ))
            .await;
        if usable {
            let volume = created.unwrap().into_inner().volume.unwrap();
            clients
                .controller
                .delete_volume(DeleteVolumeRequest {
                    volume_id: volume.volume_id,
                    ..Default::default()
                })
                .await
                .unwrap();
        } else {
            let status = created.unwrap_err();
            assert_eq!(status.code(), Code::ResourceExhausted, "{pool}: {status:?}");
            assert!(status.message().contains(pool), "{status:?}");
        }
    }
    assert!(
        !missing.exists(),
        "nothing was created for the unusable pool"
    );
    // The built-in health endpoint agrees with the Probe: the plugin is alive.
    let log = std::fs::read_to_string(root.join("driver.log")).unwrap();
    assert!(log.contains("pool unavailable"), "{log}");
    driver.terminate().unwrap();
    cleanup_under(&root);
}

/// Polls `check` until it returns `Some`, at most `limit`.
async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_plugin_follows_its_pool_file_without_restarting() {
    require_host!();
    let root = test_root("follow");
    let pool_file = root.join("pools.yaml");
    let mut args = driver_args(&root, Vec::new());
    args.extra_args = fastvirt_csi::local::on_the_host_disk();
    args.extra_args.push("--pool-config".into());
    args.extra_args.push(pool_file.display().to_string());
    let (mut driver, clients) = DriverProcess::start(args)
        .await
        .expect("starts with no pools");
    let pid = driver.pid();
    let request =
        |name: &str| with_params(create_req(name, 8 * MIB, block_cap()), &[("pool", "late")]);
    let mut controller = clients.controller.clone();
    assert_eq!(
        controller
            .create_volume(request("pvc-early"))
            .await
            .unwrap_err()
            .code(),
        Code::ResourceExhausted
    );

    // A BlockPool selects this node: the operator rewrites the file, the plugin opens the pool.
    let late: PathBuf = root.join("late");
    let other_nodes_pool = root.join("elsewhere");
    std::fs::write(
        &pool_file,
        format!(
            "pools:\n- name: late\n  path: {}\n- name: elsewhere\n  path: {}\n  nodes: [another-node]\n",
            late.display(),
            other_nodes_pool.display()
        ),
    )
    .unwrap();
    let volume = eventually(Duration::from_secs(30), || {
        let mut controller = controller.clone();
        async move {
            let created = controller.create_volume(request("pvc-late")).await.ok()?;
            created.into_inner().volume
        }
    })
    .await
    .expect("the new pool serves without a restart");
    assert!(
        !other_nodes_pool.exists(),
        "another node's pool is not opened here"
    );

    // The BlockPool no longer selects this node while a volume is on it: the volume stays
    // reachable, the pool takes nothing new.
    std::fs::write(&pool_file, "pools: []\n").unwrap();
    let refused = eventually(Duration::from_secs(30), || {
        let mut controller = controller.clone();
        async move {
            match controller.create_volume(request("pvc-too-late")).await {
                Err(status) if status.code() == Code::ResourceExhausted => Some(status),
                Ok(created) => {
                    let id = created.into_inner().volume?.volume_id;
                    let _ = controller
                        .delete_volume(DeleteVolumeRequest {
                            volume_id: id,
                            ..Default::default()
                        })
                        .await;
                    None
                }
                Err(_) => None,
            }
        }
    })
    .await
    .expect("a pool that left takes no new volumes");
    assert!(refused.message().contains("late"), "{refused:?}");
    let listed = controller
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries.len(), 1, "its volume is still served");

    // Deleted, the pool is closed: its lock is free for another process.
    controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: volume.volume_id,
            ..Default::default()
        })
        .await
        .unwrap();
    let closed = eventually(Duration::from_secs(30), || {
        let log = std::fs::read_to_string(root.join("driver.log")).unwrap_or_default();
        async move {
            log.contains("no longer configured for this node; closed")
                .then_some(())
        }
    })
    .await;
    assert!(
        closed.is_some(),
        "{}",
        std::fs::read_to_string(root.join("driver.log")).unwrap()
    );

    // A broken file changes nothing and says why.
    std::fs::write(&pool_file, "pools: [{name: x, path: relative}]\n").unwrap();
    let said = eventually(Duration::from_secs(30), || {
        let log = std::fs::read_to_string(root.join("driver.log")).unwrap_or_default();
        async move { log.contains("the pool file cannot be used").then_some(()) }
    })
    .await;
    assert!(said.is_some());
    assert_eq!(driver.pid(), pid);
    assert!(driver.try_exited().is_none(), "the plugin never restarted");
    driver.terminate().unwrap();
    cleanup_under(&root);
}

/// The shared libraries `binary` loads, from `ldd`.
fn libraries_of(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("ldd runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

fn overlay_supported() -> bool {
    std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("\toverlay\n"))
}

/// The node plugin as a container runtime runs it: its root an overlay whose writable layer is
/// discarded with the container, and the pool host directory bind-mounted from the host.
#[test]
fn a_pool_in_the_containers_own_root_is_refused_and_a_host_directory_serves() {
    require_host!();
    if !overlay_supported() {
        eprintln!(
            "SKIP {}: this kernel has no overlay filesystem",
            module_path!()
        );
        return;
    }
    let root = test_root("container-root");
    let (lower, upper, work, merged) = (
        root.join("lower"),
        root.join("upper"),
        root.join("work"),
        root.join("merged"),
    );
    let host_pools = root.join("host-pools");
    for dir in [&upper, &work, &merged, &host_pools] {
        std::fs::create_dir_all(dir).unwrap();
    }
    // The image: the binary, its libraries, and mount points.
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_fastvirt-csi"));
    for file in libraries_of(&binary) {
        let target = lower.join(file.strip_prefix("/").unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, &target).unwrap();
    }
    std::fs::copy(&binary, lower.join("fastvirt-csi")).unwrap();
    for dir in ["proc", "sys", "var/lib/fastvirt/pools", "state", "run"] {
        std::fs::create_dir_all(lower.join(dir)).unwrap();
    }
    let log = root.join("driver.log");
    // A private mount namespace; the paths are this test's own and reach sh as arguments, never
    // as script text.
    let script = r#"set -e
mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"
mount -t proc proc "$4/proc"
mount --bind "$5" "$4/var/lib/fastvirt/pools"
exec chroot "$4" /fastvirt-csi --endpoint unix:///run/csi.sock --node-id node-a --mode node \
  --state-dir /state --capacity-reserve-percent 0 \
  --pool in-the-image=/srv/pool --pool on-the-host=/var/lib/fastvirt/pools/fast"#;
    let mut child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .args([&lower, &upper, &work, &merged, &host_pools])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("unshare runs (util-linux)");
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("serving") || Instant::now() > deadline {
            break text;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the plugin exited with {status}: {text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    assert!(
        text.contains("serving"),
        "the plugin serves its good pool: {text}"
    );
    assert!(
        text.contains("own root filesystem (overlay at /)"),
        "the pool in the image is refused and says why: {text}"
    );
    assert!(text.contains("node.poolHostDirs"), "{text}");
    assert!(
        !upper.join("srv").exists(),
        "nothing was written into the container's writable layer"
    );
    assert!(
        host_pools.join("fast/.fastvirt.lock").exists(),
        "the pool under the host directory was opened"
    );
    cleanup_under(&root);
}

/// Thin volumes may promise what the pool's overcommit percentage allows, and no more; the limit
/// follows the pool file while the plugin runs.
#[tokio::test]
async fn thin_volumes_stop_at_the_overcommit_limit() {
    require_host!();
    let root = test_root("overcommit");
    let scratch = ScratchFs::new(&root, 96 << 20, "ext4");
    let pool_dir = scratch.mount_point.join("pool");
    let pool_file = root.join("pools.yaml");
    let write_file = |percent: u32| {
        std::fs::write(
            &pool_file,
            format!(
                "pools:\n- name: thin\n  path: {}\n  overcommitPercent: {percent}\n",
                pool_dir.display()
            ),
        )
        .unwrap()
    };
    write_file(200);
    let mut args = driver_args(&root, Vec::new());
    args.extra_args = vec!["--pool-config".into(), pool_file.display().to_string()];
    let (mut driver, clients) = DriverProcess::start(args).await.expect("starts");
    let mut c = clients.controller.clone();
    let thin = |name: &str, bytes: i64| {
        with_params(create_req(name, bytes, block_cap()), &[("thin", "true")])
    };
    // About 80 MiB usable after ext4's own overhead and the 5 % reserve: 200 % promises about
    // 160 MiB, three times 48 but not four.
    for name in ["thin-1", "thin-2", "thin-3"] {
        c.create_volume(thin(name, 48 * MIB)).await.unwrap();
    }
    let refused = c.create_volume(thin("thin-4", 48 * MIB)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("overcommitPercent") && refused.message().contains("200%"),
        "the message says how full the pool is: {refused:?}"
    );
    let capacity = c
        .get_capacity(GetCapacityRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        capacity.available_capacity < 48 * MIB,
        "capacity stops at the limit, not at the free space: {capacity:?}"
    );
    // The default, 100 %, never promises more than the pool holds: nothing more fits now, and
    // the running plugin applies the change.
    write_file(100);
    let at_default = eventually(Duration::from_secs(30), || {
        let mut c = c.clone();
        async move {
            let capacity = c.get_capacity(GetCapacityRequest::default()).await.ok()?;
            (capacity.into_inner().available_capacity == 0).then_some(())
        }
    })
    .await;
    assert!(
        at_default.is_some(),
        "the plugin follows the pool's new limit"
    );
    assert_eq!(
        c.create_volume(thin("thin-5", MIB))
            .await
            .unwrap_err()
            .code(),
        Code::ResourceExhausted
    );
    driver.terminate().unwrap();
    drop(scratch);
    cleanup_under(&root);
}

/// A pool that cannot be opened after a restart keeps its volumes known: their stats report them
/// abnormal with the reason, instead of "not found".
#[tokio::test]
async fn volumes_of_an_unavailable_pool_are_abnormal_not_gone() {
    require_host!();
    let root = test_root("unavailable-volumes");
    let pool = root.join("pool");
    let mut env = TestEnv::start_with_flags(root.clone(), pool.clone(), ON_THE_HOST_DISK).await;
    let vol = env
        .create(create_req("pvc-stranded", 8 * MIB, block_cap()))
        .await;
    env.driver.terminate().unwrap();
    // The pool's directory is taken away and a file stands in its place.
    let moved = root.join("pool-moved");
    std::fs::rename(&pool, &moved).unwrap();
    std::fs::write(&pool, b"").unwrap();
    let args = env.driver.args().clone();
    let (driver, mut clients) = DriverProcess::start(args).await.expect("starts anyway");
    env.driver = driver;
    let target = root.join("stats-target");
    std::fs::create_dir_all(&target).unwrap();
    let condition = volume_condition(&mut clients, &vol.volume_id, &target).await;
    assert!(condition.abnormal, "{condition:?}");
    assert!(condition.message.contains("unavailable"), "{condition:?}");
    env.driver.terminate().unwrap();
    std::fs::remove_file(&pool).unwrap();
    std::fs::rename(&moved, &pool).unwrap();
}
