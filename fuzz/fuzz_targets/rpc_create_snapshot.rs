//! CreateSnapshot: the real controller handler on a decoded request, against memory pools.
#![no_main]

use fastvirt_csi::config::Expansion;
use fastvirt_csi::ids::{SnapshotId, VolumeId};
use fastvirt_csi::proto::CreateSnapshotRequest;
use fastvirt_csi::proto::controller_server::Controller;
use fastvirt_csi::service::ControllerService;
use fastvirt_fuzz::{block_on, check_status, driver, expect_code};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = CreateSnapshotRequest::decode(data) else {
        return;
    };
    let service = ControllerService::new(driver(Expansion::Controller));
    let call = |req: CreateSnapshotRequest| {
        block_on(service.create_snapshot(Request::new(req))).map(tonic::Response::into_inner)
    };
    let result = call(req.clone());
    if req.name.is_empty() || req.source_volume_id.is_empty() {
        expect_code(
            "CreateSnapshot",
            "a required field is empty",
            &result,
            Code::InvalidArgument,
        );
    }
    let response = match result {
        Ok(response) => response,
        Err(status) => return check_status("CreateSnapshot", &status),
    };
    let snapshot = response
        .snapshot
        .expect("CreateSnapshot answered no snapshot");
    let id = SnapshotId::parse(&snapshot.snapshot_id).expect("a malformed snapshot ID");
    let source = VolumeId::parse(&req.source_volume_id).expect("a snapshot of a malformed ID");
    assert_eq!(id.pool(), source.pool(), "the snapshot is in another pool");
    assert_eq!(snapshot.source_volume_id, req.source_volume_id);
    assert!(snapshot.ready_to_use && snapshot.size_bytes > 0);
    let again = call(req)
        .expect("a retry of a successful CreateSnapshot failed")
        .snapshot
        .unwrap();
    assert_eq!(again, snapshot, "a retry answered another snapshot");
});
