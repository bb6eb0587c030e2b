//! NodeStageVolume: the real node handler on a decoded request. The memory pools refuse to attach,
//! so a request that passes validation ends at the attach (UNAVAILABLE), before any mkfs or mount.
#![no_main]

use fastvirt_csi::config::Expansion;
use fastvirt_csi::ids::VolumeId;
use fastvirt_csi::proto::NodeStageVolumeRequest;
use fastvirt_csi::proto::node_server::Node;
use fastvirt_csi::service::NodeService;
use fastvirt_fuzz::{block_on, check_status, driver, expect_code, is_acceptable_path};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = NodeStageVolumeRequest::decode(data) else {
        return;
    };
    let driver = driver(Expansion::Controller);
    let service = NodeService::new(driver.clone());
    let result = block_on(service.node_stage_volume(Request::new(req.clone())));
    let why = "volume_id empty or staging_target_path unusable";
    if req.volume_id.is_empty() || !is_acceptable_path(&req.staging_target_path) {
        return expect_code("NodeStageVolume", why, &result, Code::InvalidArgument);
    }
    if req.volume_capability.is_none() {
        return expect_code(
            "NodeStageVolume",
            "no capability",
            &result,
            Code::InvalidArgument,
        );
    }
    let status = result.expect_err("NodeStageVolume succeeded without attaching");
    check_status("NodeStageVolume", &status);
    if status.code() == Code::Unavailable {
        // It got as far as attaching: every field was valid and the volume exists.
        assert!(VolumeId::parse(&req.volume_id).is_ok());
        assert!(driver.volume(&req.volume_id).is_ok());
    }
    if VolumeId::parse(&req.volume_id).is_err() {
        assert!(
            matches!(status.code(), Code::NotFound | Code::InvalidArgument),
            "a malformed volume ID answered {status:?}"
        );
    }
});
