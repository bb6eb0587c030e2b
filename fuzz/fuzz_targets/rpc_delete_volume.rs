//! DeleteVolume: the real controller handler on a decoded request, against memory pools.
#![no_main]

use fastvirt_csi::config::Expansion;
use fastvirt_csi::proto::DeleteVolumeRequest;
use fastvirt_csi::proto::controller_server::Controller;
use fastvirt_csi::service::ControllerService;
use fastvirt_fuzz::{block_on, driver, expect_code};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = DeleteVolumeRequest::decode(data) else {
        return;
    };
    let driver = driver(Expansion::Controller);
    let service = ControllerService::new(driver.clone());
    let call = |req: DeleteVolumeRequest| block_on(service.delete_volume(Request::new(req)));
    let result = call(req.clone());
    if req.volume_id.is_empty() {
        return expect_code(
            "DeleteVolume",
            "no volume_id",
            &result,
            Code::InvalidArgument,
        );
    }
    // Malformed, foreign and unknown IDs are all gone already: success.
    result.expect("DeleteVolume of a non-empty ID failed");
    let lookup = driver.volume(&req.volume_id);
    expect_code(
        "DeleteVolume",
        "looked up after delete",
        &lookup,
        Code::NotFound,
    );
    call(req).expect("a second DeleteVolume failed");
});
