//! The driver's YAML configuration file, through `Cli::resolve` as `--config FILE` does it. The
//! pool file is pinned to one that does not exist, so a `poolConfig` in the input reads nothing.
#![no_main]

use fastvirt_csi::config::Cli;
use fastvirt_fuzz::{scratch_dir, scratch_file};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = scratch_file("config.yaml", data);
    let cli = Cli {
        config: Some(config),
        pool_config: Some(scratch_dir().join("no-pool-file.yaml")),
        ..Cli::default()
    };
    let Ok(config) = cli.resolve() else {
        return;
    };
    assert!(config.socket_path.is_absolute() && config.socket_path.file_name().is_some());
    assert!(!config.node_id.is_empty() && config.node_id.len() <= 253);
    assert!(config.max_volumes_per_node >= 0);
    assert!(config.capacity_reserve_percent <= 50);
    for (i, pool) in config.pools.iter().enumerate() {
        assert!(pool.path.is_absolute());
        assert!(config.pools[..i].iter().all(|p| p.name != pool.name));
    }
    if let Some(registration) = &config.registration {
        assert!(registration.kubelet_endpoint.is_absolute());
    }
});
