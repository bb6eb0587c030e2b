//! NodePublishVolume: the real node handler on a decoded request. No memory-pool volume is ever
//! staged, so a request that passes validation ends at FAILED_PRECONDITION, before any mount.
#![no_main]

use fastvirt_csi::config::Expansion;
use fastvirt_csi::proto::NodePublishVolumeRequest;
use fastvirt_csi::proto::node_server::Node;
use fastvirt_csi::service::NodeService;
use fastvirt_fuzz::{block_on, check_status, driver, expect_code, is_acceptable_path};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = NodePublishVolumeRequest::decode(data) else {
        return;
    };
    let driver = driver(Expansion::Controller);
    let service = NodeService::new(driver.clone());
    let result = block_on(service.node_publish_volume(Request::new(req.clone())));
    if req.volume_id.is_empty()
        || !is_acceptable_path(&req.target_path)
        || !is_acceptable_path(&req.staging_target_path)
        || req.volume_capability.is_none()
    {
        let why = "volume_id empty, a path unusable or no capability";
        return expect_code("NodePublishVolume", why, &result, Code::InvalidArgument);
    }
    let status = result.expect_err("NodePublishVolume succeeded on a volume never staged");
    check_status("NodePublishVolume", &status);
    if status.code() == Code::FailedPrecondition {
        assert!(driver.volume(&req.volume_id).is_ok());
    }
});
