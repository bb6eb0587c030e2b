//! The files `fastvirt-csi` reads, `--config` and the operator's pool file (`--pool-config`), are
//! parsed strictly: the binary refuses to start on an unknown field and names it with the closest
//! known one. Nothing here needs root: the files are checked before the driver touches the host.

use std::process::{Command, Output};

fn csi(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fastvirt-csi"))
        .args(args)
        .env_remove("FASTVIRT_CONFIG")
        .env_remove("FASTVIRT_POOL_CONFIG")
        .env_remove("FASTVIRT_POOLS")
        .output()
        .expect("the driver binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_misspelt_config_key_stops_the_start_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "nodeId: n1\nmode: controller\nstateDirectory: /var/lib/x\n",
    )
    .unwrap();
    let out = csi(&["--config".as_ref(), config.as_os_str()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("unknown field `stateDirectory`")
            && text.contains("did you mean `stateDir`?"),
        "{text}"
    );
    assert!(text.contains(&config.display().to_string()), "{text}");

    // Nested: a pool's key in the same file.
    std::fs::write(
        &config,
        "nodeId: n1\npools:\n  - name: default\n    pth: /pools/default\n",
    )
    .unwrap();
    let out = csi(&["--config".as_ref(), config.as_os_str()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("unknown field `pools[0].pth`") && text.contains("did you mean `path`?"),
        "{text}"
    );
}

#[test]
fn a_pool_file_with_an_unknown_field_is_version_skew_and_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let pools = dir.path().join("pools.yaml");
    std::fs::write(
        &pools,
        "pools:\n- name: nvme\n  path: /pools/nvme\n  node: [n1]\n",
    )
    .unwrap();
    let out = csi(&[
        "--node-id".as_ref(),
        "n1".as_ref(),
        "--mode".as_ref(),
        "node".as_ref(),
        "--pool-config".as_ref(),
        pools.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains("unknown field `pools[0].node`") && text.contains("did you mean `nodes`?"),
        "{text}"
    );
}
