//! ControllerModifyVolume: the real controller handler on a decoded request, against memory pools.
//! A refused request leaves the volume's limits as they were; an accepted one leaves exactly the
//! limits the parameters name changed.
#![no_main]

use fastvirt_csi::config::Expansion;
use fastvirt_csi::proto::ControllerModifyVolumeRequest;
use fastvirt_csi::proto::controller_server::Controller;
use fastvirt_csi::qos::{LimitKind, QosChange};
use fastvirt_csi::service::ControllerService;
use fastvirt_fuzz::{block_on, check_status, driver, expect_code};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = ControllerModifyVolumeRequest::decode(data) else {
        return;
    };
    let driver = driver(Expansion::Node);
    let before = driver.volume(&req.volume_id).ok().map(|(_, _, r)| r);
    let service = ControllerService::new(driver.clone());
    let result = block_on(service.controller_modify_volume(Request::new(req.clone())))
        .map(tonic::Response::into_inner);
    if req.volume_id.is_empty() {
        expect_code(
            "ControllerModifyVolume",
            "volume_id is missing",
            &result,
            Code::InvalidArgument,
        );
    }
    let after = driver.volume(&req.volume_id).ok().map(|(_, _, r)| r);
    if let Err(status) = &result {
        check_status("ControllerModifyVolume", status);
        assert_eq!(before, after, "a refused modify changed the volume");
        return;
    }
    let (before, after) = (
        before.expect("ControllerModifyVolume of a volume that does not exist succeeded"),
        after.expect("the volume is gone after ControllerModifyVolume"),
    );
    let change = QosChange::parse(&req.mutable_parameters, |k| {
        k.starts_with("csi.storage.k8s.io/")
    })
    .expect("accepted parameters parse");
    let expected = change.applied_to(before.qos.unwrap_or_default());
    assert_eq!(after.qos.unwrap_or_default(), expected);
    for kind in LimitKind::ALL {
        if !req.mutable_parameters.contains_key(kind.parameter()) {
            assert_eq!(
                before.qos.unwrap_or_default().get(kind),
                after.qos.unwrap_or_default().get(kind),
                "{} changed though the request does not name it",
                kind.parameter()
            );
        }
    }
    assert_eq!(
        (before.capacity_bytes, &before.name),
        (after.capacity_bytes, &after.name)
    );
});
