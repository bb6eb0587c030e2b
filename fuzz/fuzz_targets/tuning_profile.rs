//! The profile file of `fastvirt-agent plan --profile FILE` (`commands::read_profile`), then the
//! plan for it on a synthetic two-socket host and its rendering: none of it may panic.
#![no_main]

use fastvirt_agent::fixture::{self, FixtureFs, FixtureSpec};
use fastvirt_agent::host::{self, HostModel};
use fastvirt_agent::plan::{self, PlanOptions};
use fastvirt_agent::{commands, render};
use fastvirt_fuzz::{scratch_dir, scratch_file};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn host() -> &'static HostModel {
    static HOST: OnceLock<HostModel> = OnceLock::new();
    HOST.get_or_init(|| {
        let root = scratch_dir().join("host");
        fixture::write_host(&root, &FixtureSpec::two_socket_64_cpus())
            .expect("writing the fixture host");
        let fs = FixtureFs::open(&root).expect("opening the fixture host");
        host::read(&fs).expect("reading the fixture host")
    })
}

fuzz_target!(|data: &[u8]| {
    let host = host();
    let path = scratch_file("profile.yaml", data);
    let Ok(spec) = commands::read_profile(&path) else {
        return;
    };
    let Ok(plan) = plan::plan(host, &spec, &PlanOptions::default()) else {
        return;
    };
    let text = render::plan(&plan);
    assert!(!text.is_empty());
    serde_json::to_string(&plan).expect("a plan serializes");
});
