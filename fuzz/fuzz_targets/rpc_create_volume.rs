//! CreateVolume: the real controller handler on a decoded request, against memory pools.
#![no_main]

use fastvirt_csi::config::Expansion;
use fastvirt_csi::ids::VolumeId;
use fastvirt_csi::proto::CreateVolumeRequest;
use fastvirt_csi::proto::controller_server::Controller;
use fastvirt_csi::service::ControllerService;
use fastvirt_fuzz::{block_on, check_status, driver, expect_code};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = CreateVolumeRequest::decode(data) else {
        return;
    };
    let service = ControllerService::new(driver(Expansion::Controller));
    let call = |req: CreateVolumeRequest| {
        block_on(service.create_volume(Request::new(req))).map(tonic::Response::into_inner)
    };
    let result = call(req.clone());
    if req.name.is_empty() {
        expect_code("CreateVolume", "no name", &result, Code::InvalidArgument);
    }
    if req.volume_capabilities.is_empty() {
        assert!(
            result.is_err(),
            "CreateVolume without capabilities succeeded"
        );
    }
    let response = match result {
        Ok(response) => response,
        Err(status) => return check_status("CreateVolume", &status),
    };
    let volume = response.volume.expect("CreateVolume answered no volume");
    let id = VolumeId::parse(&volume.volume_id).expect("CreateVolume answered a malformed ID");
    assert_eq!(
        id,
        VolumeId::for_name(id.pool(), &req.name).unwrap(),
        "the ID is not the one derived from the name"
    );
    let (required, limit) = req
        .capacity_range
        .map(|r| (r.required_bytes, r.limit_bytes))
        .unwrap_or_default();
    assert!(volume.capacity_bytes > 0);
    assert!(
        required <= 0 || volume.capacity_bytes >= required,
        "smaller than required"
    );
    assert!(
        limit <= 0 || volume.capacity_bytes <= limit,
        "larger than the limit"
    );
    assert_eq!(volume.accessible_topology.len(), 1);
    // A retry is answered with the same volume.
    let again = call(req)
        .expect("a retry of a successful CreateVolume failed")
        .volume
        .unwrap();
    assert_eq!(again, volume, "a retry answered another volume");
});
