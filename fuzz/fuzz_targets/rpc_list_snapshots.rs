//! ListSnapshots: the real controller handler and its pagination tokens, against memory pools.
#![no_main]

use fastvirt_csi::config::Expansion;
use fastvirt_csi::ids::SnapshotId;
use fastvirt_csi::proto::ListSnapshotsRequest;
use fastvirt_csi::proto::controller_server::Controller;
use fastvirt_csi::service::ControllerService;
use fastvirt_fuzz::{block_on, check_status, driver, expect_code};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = ListSnapshotsRequest::decode(data) else {
        return;
    };
    let service = ControllerService::new(driver(Expansion::Controller));
    let list = |req: ListSnapshotsRequest| {
        block_on(service.list_snapshots(Request::new(req))).map(tonic::Response::into_inner)
    };
    let result = list(req.clone());
    if req.max_entries < 0 {
        return expect_code(
            "ListSnapshots",
            "negative max_entries",
            &result,
            Code::InvalidArgument,
        );
    }
    if !req.starting_token.is_empty() && SnapshotId::parse(&req.starting_token).is_err() {
        return expect_code(
            "ListSnapshots",
            "a token it never issued",
            &result,
            Code::Aborted,
        );
    }
    let mut page = match result {
        Ok(response) => response,
        Err(status) => {
            check_status("ListSnapshots", &status);
            panic!("ListSnapshots refused a valid request: {status:?}");
        }
    };
    let everything = list(ListSnapshotsRequest {
        max_entries: 0,
        ..req.clone()
    })
    .expect("an unlimited ListSnapshots failed");
    let mut seen = Vec::new();
    for _ in 0..=everything.entries.len() {
        assert!(req.max_entries == 0 || page.entries.len() <= req.max_entries as usize);
        for entry in &page.entries {
            let snapshot = entry.snapshot.as_ref().unwrap();
            assert!(
                req.source_volume_id.is_empty()
                    || snapshot.source_volume_id == req.source_volume_id
            );
            assert!(req.snapshot_id.is_empty() || snapshot.snapshot_id == req.snapshot_id);
            seen.push(snapshot.snapshot_id.clone());
        }
        if page.next_token.is_empty() {
            break;
        }
        assert_eq!(
            Some(&page.next_token),
            seen.last(),
            "the token is not the last entry"
        );
        page = list(ListSnapshotsRequest {
            starting_token: page.next_token.clone(),
            ..req.clone()
        })
        .expect("following next_token failed");
    }
    let all: Vec<String> = everything
        .entries
        .iter()
        .map(|e| e.snapshot.as_ref().unwrap().snapshot_id.clone())
        .collect();
    assert_eq!(seen, all, "the pages do not add up to the listing");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "not sorted");
});
