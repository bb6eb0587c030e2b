//! NodeUnstageVolume: the real node handler on a decoded request. No memory-pool volume is ever
//! attached, so a valid request for an existing volume succeeds without touching a mount.
#![no_main]

use fastvirt_csi::config::Expansion;
use fastvirt_csi::proto::NodeUnstageVolumeRequest;
use fastvirt_csi::proto::node_server::Node;
use fastvirt_csi::service::NodeService;
use fastvirt_fuzz::{block_on, driver, expect_code, is_acceptable_path};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = NodeUnstageVolumeRequest::decode(data) else {
        return;
    };
    let driver = driver(Expansion::Controller);
    let service = NodeService::new(driver.clone());
    let result = block_on(service.node_unstage_volume(Request::new(req.clone())));
    let why = "volume_id empty or staging_target_path unusable";
    if req.volume_id.is_empty() || !is_acceptable_path(&req.staging_target_path) {
        return expect_code("NodeUnstageVolume", why, &result, Code::InvalidArgument);
    }
    if driver.volume(&req.volume_id).is_ok() {
        result.expect("NodeUnstageVolume of a volume that is not attached failed");
    } else {
        expect_code(
            "NodeUnstageVolume",
            "unknown volume",
            &result,
            Code::NotFound,
        );
    }
});
