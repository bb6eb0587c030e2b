//! ListVolumes: the real controller handler and its pagination tokens, against memory pools. Every
//! page a token leads to is fetched; together they are the listing after the starting token.
#![no_main]

use fastvirt_csi::config::Expansion;
use fastvirt_csi::ids::VolumeId;
use fastvirt_csi::proto::ListVolumesRequest;
use fastvirt_csi::proto::controller_server::Controller;
use fastvirt_csi::service::ControllerService;
use fastvirt_fuzz::{block_on, check_status, driver, expect_code};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = ListVolumesRequest::decode(data) else {
        return;
    };
    let service = ControllerService::new(driver(Expansion::Controller));
    let list = |req: ListVolumesRequest| {
        block_on(service.list_volumes(Request::new(req))).map(tonic::Response::into_inner)
    };
    let result = list(req.clone());
    if req.max_entries < 0 {
        return expect_code(
            "ListVolumes",
            "negative max_entries",
            &result,
            Code::InvalidArgument,
        );
    }
    if !req.starting_token.is_empty() && VolumeId::parse(&req.starting_token).is_err() {
        return expect_code(
            "ListVolumes",
            "a token it never issued",
            &result,
            Code::Aborted,
        );
    }
    let first = match result {
        Ok(response) => response,
        Err(status) => {
            check_status("ListVolumes", &status);
            panic!("ListVolumes refused a valid request: {status:?}");
        }
    };
    let everything = list(ListVolumesRequest {
        max_entries: 0,
        starting_token: req.starting_token.clone(),
    })
    .expect("an unlimited ListVolumes failed");
    assert!(everything.next_token.is_empty());
    let mut seen = Vec::new();
    let mut page = first;
    for _ in 0..=everything.entries.len() {
        assert!(req.max_entries == 0 || page.entries.len() <= req.max_entries as usize);
        seen.extend(
            page.entries
                .iter()
                .map(|e| e.volume.clone().unwrap().volume_id),
        );
        if page.next_token.is_empty() {
            break;
        }
        assert_eq!(
            Some(&page.next_token),
            seen.last(),
            "the token is not the last entry"
        );
        page = list(ListVolumesRequest {
            max_entries: req.max_entries,
            starting_token: page.next_token.clone(),
        })
        .expect("following next_token failed");
    }
    let all: Vec<String> = everything
        .entries
        .iter()
        .map(|e| e.volume.clone().unwrap().volume_id)
        .collect();
    assert_eq!(seen, all, "the pages do not add up to the listing");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "not sorted");
    assert!(all.iter().all(|id| *id > req.starting_token));
});
