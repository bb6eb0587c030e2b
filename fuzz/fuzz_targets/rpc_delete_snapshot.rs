//! DeleteSnapshot: the real controller handler on a decoded request, against memory pools.
#![no_main]

use fastvirt_csi::config::Expansion;
use fastvirt_csi::proto::controller_server::Controller;
use fastvirt_csi::proto::{DeleteSnapshotRequest, ListSnapshotsRequest};
use fastvirt_csi::service::ControllerService;
use fastvirt_fuzz::{block_on, driver, expect_code};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = DeleteSnapshotRequest::decode(data) else {
        return;
    };
    let service = ControllerService::new(driver(Expansion::Controller));
    let result = block_on(service.delete_snapshot(Request::new(req.clone())));
    if req.snapshot_id.is_empty() {
        return expect_code(
            "DeleteSnapshot",
            "no snapshot_id",
            &result,
            Code::InvalidArgument,
        );
    }
    result.expect("DeleteSnapshot of a non-empty ID failed");
    let listed = block_on(service.list_snapshots(Request::new(ListSnapshotsRequest {
        snapshot_id: req.snapshot_id.clone(),
        ..Default::default()
    })))
    .expect("ListSnapshots by ID failed")
    .into_inner();
    assert!(listed.entries.is_empty(), "the snapshot is still listed");
});
