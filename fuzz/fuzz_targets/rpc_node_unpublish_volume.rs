//! NodeUnpublishVolume: the real node handler on a decoded request. The handler removes a target
//! that is an empty directory or file, so requests whose target exists on this host are not sent.
#![no_main]

use fastvirt_csi::config::Expansion;
use fastvirt_csi::proto::NodeUnpublishVolumeRequest;
use fastvirt_csi::proto::node_server::Node;
use fastvirt_csi::service::NodeService;
use fastvirt_fuzz::{block_on, driver, expect_code, is_acceptable_path, path_exists};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = NodeUnpublishVolumeRequest::decode(data) else {
        return;
    };
    if path_exists(&req.target_path) {
        return;
    }
    let driver = driver(Expansion::Controller);
    let service = NodeService::new(driver.clone());
    let result = block_on(service.node_unpublish_volume(Request::new(req.clone())));
    if req.volume_id.is_empty() || !is_acceptable_path(&req.target_path) {
        let why = "volume_id empty or target_path unusable";
        return expect_code("NodeUnpublishVolume", why, &result, Code::InvalidArgument);
    }
    if driver.volume(&req.volume_id).is_ok() {
        result.expect("NodeUnpublishVolume of a target that does not exist failed");
    } else {
        expect_code(
            "NodeUnpublishVolume",
            "unknown volume",
            &result,
            Code::NotFound,
        );
    }
});
