//! GetCapacity: the real controller handler on a decoded request, against memory pools.
#![no_main]

use fastvirt_csi::config::Expansion;
use fastvirt_csi::proto::GetCapacityRequest;
use fastvirt_csi::proto::controller_server::Controller;
use fastvirt_csi::service::ControllerService;
use fastvirt_fuzz::{POOL_AVAILABLE, block_on, check_status, driver};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::Request;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = GetCapacityRequest::decode(data) else {
        return;
    };
    let service = ControllerService::new(driver(Expansion::Controller));
    let response = match block_on(service.get_capacity(Request::new(req))) {
        Ok(response) => response.into_inner(),
        Err(status) => return check_status("GetCapacity", &status),
    };
    let available = response.available_capacity;
    assert!(available == 0 || available == POOL_AVAILABLE as i64);
    let max = response
        .maximum_volume_size
        .expect("no maximum_volume_size");
    assert!(
        (0..=available).contains(&max),
        "maximum {max} above available {available}"
    );
    assert_eq!(max % (1 << 20), 0, "maximum not aligned");
});
