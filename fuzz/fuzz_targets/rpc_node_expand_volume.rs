//! NodeExpandVolume: the real node handler on a decoded request, with either expansion mode. No
//! memory-pool volume is ever staged, so a valid request ends at FAILED_PRECONDITION.
#![no_main]

use fastvirt_csi::config::Expansion;
use fastvirt_csi::proto::NodeExpandVolumeRequest;
use fastvirt_csi::proto::node_server::Node;
use fastvirt_csi::service::NodeService;
use fastvirt_fuzz::{block_on, check_status, driver, expect_code};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = NodeExpandVolumeRequest::decode(data) else {
        return;
    };
    for expansion in [Expansion::Controller, Expansion::Node] {
        let driver = driver(expansion);
        let service = NodeService::new(driver.clone());
        let result = block_on(service.node_expand_volume(Request::new(req.clone())));
        if req.volume_id.is_empty() || req.volume_path.is_empty() {
            let why = "volume_id or volume_path empty";
            expect_code("NodeExpandVolume", why, &result, Code::InvalidArgument);
            continue;
        }
        let status = result.expect_err("NodeExpandVolume succeeded on a volume never staged");
        check_status("NodeExpandVolume", &status);
        match status.code() {
            Code::NotFound => {}
            Code::FailedPrecondition => assert!(driver.volume(&req.volume_id).is_ok()),
            other => panic!("NodeExpandVolume answered {other:?}: {}", status.message()),
        }
    }
});
