//! The operator's pool file (`fastvirt_api::pool_config`), parsed strictly as the driver reads it
//! (`fastvirt_api::strict_yaml`): what parses renders back to the same pools, sorted; and the
//! driver reads it (`--pool-config FILE`) into exactly this node's pools.
#![no_main]

use fastvirt_api::pool_config::PoolConfigFile;
use fastvirt_api::strict_yaml;
use fastvirt_csi::config::{Cli, Mode};
use fastvirt_fuzz::scratch_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = std::str::from_utf8(data)
        .ok()
        .and_then(|text| strict_yaml::from_str::<PoolConfigFile>(text).ok());
    if let Some(file) = &parsed {
        let rendered = file.render();
        let again: PoolConfigFile = strict_yaml::from_str(&rendered)
            .unwrap_or_else(|e| panic!("the rendered file does not parse: {e}\n{rendered}"));
        let mut sorted = file.clone();
        sorted.pools.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(again, sorted, "rendered as:\n{rendered}");
        assert_eq!(again.render(), rendered, "rendering is not stable");
    }
    let cli = Cli {
        node_id: Some("node-1".to_owned()),
        mode: Some(Mode::Node),
        pool_config: Some(scratch_file("pools.yaml", data)),
        ..Cli::default()
    };
    let Ok(config) = cli.resolve() else {
        return;
    };
    let file = parsed.expect("the driver read a pool file that does not parse");
    let expected: Vec<(&str, &str)> = file
        .for_node("node-1")
        .map(|p| (p.name.as_str(), p.path.as_str()))
        .collect();
    let got: Vec<(&str, &str)> = config
        .pools
        .iter()
        .map(|p| (p.name.as_str(), p.path.to_str().unwrap()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(config.current_pools().expect("current_pools"), config.pools);
});
