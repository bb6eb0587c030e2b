//! ValidateVolumeCapabilities: the real controller handler on a decoded request, against memory
//! pools.
#![no_main]

use fastvirt_csi::config::Expansion;
use fastvirt_csi::proto::ValidateVolumeCapabilitiesRequest;
use fastvirt_csi::proto::controller_server::Controller;
use fastvirt_csi::service::ControllerService;
use fastvirt_fuzz::{block_on, check_status, driver, expect_code};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = ValidateVolumeCapabilitiesRequest::decode(data) else {
        return;
    };
    let service = ControllerService::new(driver(Expansion::Controller));
    let result = block_on(service.validate_volume_capabilities(Request::new(req.clone())))
        .map(tonic::Response::into_inner);
    if req.volume_id.is_empty() || req.volume_capabilities.is_empty() {
        expect_code(
            "ValidateVolumeCapabilities",
            "a required field is empty",
            &result,
            Code::InvalidArgument,
        );
    }
    let response = match result {
        Ok(response) => response,
        Err(status) => return check_status("ValidateVolumeCapabilities", &status),
    };
    match response.confirmed {
        Some(confirmed) => {
            assert!(response.message.is_empty());
            assert_eq!(confirmed.volume_capabilities, req.volume_capabilities);
            assert_eq!(confirmed.parameters, req.parameters);
            assert_eq!(confirmed.volume_context, req.volume_context);
        }
        None => assert!(!response.message.is_empty(), "unconfirmed without a reason"),
    }
});
