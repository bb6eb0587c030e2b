//! ControllerExpandVolume: the real controller handler on a decoded request, against memory pools.
#![no_main]

use fastvirt_csi::config::Expansion;
use fastvirt_csi::proto::ControllerExpandVolumeRequest;
use fastvirt_csi::proto::controller_server::Controller;
use fastvirt_csi::proto::volume_capability::AccessType;
use fastvirt_csi::service::ControllerService;
use fastvirt_fuzz::{block_on, check_status, driver, expect_code};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = ControllerExpandVolumeRequest::decode(data) else {
        return;
    };
    let driver = driver(Expansion::Controller);
    let before = driver.volume(&req.volume_id).ok().map(|(_, _, r)| r);
    let service = ControllerService::new(driver);
    let result = block_on(service.controller_expand_volume(Request::new(req.clone())))
        .map(tonic::Response::into_inner);
    if req.volume_id.is_empty() || req.capacity_range.is_none() {
        expect_code(
            "ControllerExpandVolume",
            "a required field is missing",
            &result,
            Code::InvalidArgument,
        );
    }
    let response = match result {
        Ok(response) => response,
        Err(status) => return check_status("ControllerExpandVolume", &status),
    };
    let before = before.expect("ControllerExpandVolume of a volume that does not exist succeeded");
    let range = req.capacity_range.unwrap();
    assert!(
        response.capacity_bytes as u64 >= before.capacity_bytes,
        "the volume shrank"
    );
    assert!(range.required_bytes <= 0 || response.capacity_bytes >= range.required_bytes);
    assert!(range.limit_bytes <= 0 || response.capacity_bytes <= range.limit_bytes);
    let block = matches!(
        req.volume_capability
            .as_ref()
            .and_then(|c| c.access_type.as_ref()),
        Some(AccessType::Block(_))
    );
    assert_eq!(response.node_expansion_required, !block);
});
