//! NodeGetVolumeStats: the real node handler on a decoded request. It stats the path (and reads a
//! block device's size), so requests naming a block device of this host are not sent.
#![no_main]

use fastvirt_csi::config::Expansion;
use fastvirt_csi::proto::NodeGetVolumeStatsRequest;
use fastvirt_csi::proto::node_server::Node;
use fastvirt_csi::service::NodeService;
use fastvirt_fuzz::{block_on, check_status, driver, expect_code};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::os::unix::fs::FileTypeExt;
use tonic::{Code, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = NodeGetVolumeStatsRequest::decode(data) else {
        return;
    };
    if !req.volume_path.is_empty()
        && std::fs::metadata(&req.volume_path).is_ok_and(|m| m.file_type().is_block_device())
    {
        return;
    }
    let driver = driver(Expansion::Controller);
    let service = NodeService::new(driver.clone());
    let result = block_on(service.node_get_volume_stats(Request::new(req.clone())));
    if req.volume_id.is_empty() || req.volume_path.is_empty() {
        let why = "volume_id or volume_path empty";
        return expect_code("NodeGetVolumeStats", why, &result, Code::InvalidArgument);
    }
    let response = match result {
        Ok(response) => response.into_inner(),
        Err(status) => {
            check_status("NodeGetVolumeStats", &status);
            return assert_eq!(status.code(), Code::NotFound, "{status:?}");
        }
    };
    assert!(driver.volume(&req.volume_id).is_ok());
    let condition = response.volume_condition.expect("no volume condition");
    // No memory-pool volume is attached, so none is healthy.
    assert!(condition.abnormal && !condition.message.is_empty());
});
