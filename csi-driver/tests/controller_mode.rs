//! The controller a cluster runs beside its one external-resizer (`--mode controller --expansion
//! node`, no pools): it offers ControllerModifyVolume and no controller expansion, and answers
//! NodeGetCapabilities — external-resizer asks it at start to learn that nodes grow volumes, and
//! exits without an answer — while refusing every other Node call. Needs no root: no pools.

mod common;

use common::*;
use fastvirt_csi::local::DriverProcess;
use fastvirt_csi::proto::controller_service_capability::rpc::Type as ControllerRpc;
use fastvirt_csi::proto::node_service_capability::rpc::Type as NodeRpc;
use fastvirt_csi::proto::*;
use std::collections::HashMap;

#[tokio::test]
async fn a_pool_less_controller_serves_the_resizer() {
    let root = test_root("controller-mode");
    let mut args = driver_args(&root, Vec::new());
    args.mode = "controller";
    args.extra_args = vec!["--expansion".into(), "node".into()];
    let (mut driver, mut clients) = DriverProcess::start(args).await.expect("driver starts");

    let controller: Vec<i32> = clients
        .controller
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .iter()
        .filter_map(|c| {
            c.r#type
                .map(|controller_service_capability::Type::Rpc(rpc)| rpc.r#type)
        })
        .collect();
    assert!(controller.contains(&(ControllerRpc::ModifyVolume as i32)));
    assert!(!controller.contains(&(ControllerRpc::ExpandVolume as i32)));

    let node: Vec<i32> = clients
        .node
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
        .expect("NodeGetCapabilities is answered")
        .into_inner()
        .capabilities
        .iter()
        .filter_map(|c| {
            c.r#type
                .map(|node_service_capability::Type::Rpc(rpc)| rpc.r#type)
        })
        .collect();
    assert!(node.contains(&(NodeRpc::ExpandVolume as i32)), "{node:?}");
    let stage = clients
        .node
        .node_stage_volume(NodeStageVolumeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(stage.code(), tonic::Code::Unimplemented);

    // Without --kube-api a volume it does not have is NOT_FOUND; arguments come first.
    let modify = |params: &[(&str, &str)]| ControllerModifyVolumeRequest {
        volume_id: "fv.default.0123456789abcdef0123456789abcdef".into(),
        mutable_parameters: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<HashMap<_, _>>(),
        ..Default::default()
    };
    let status = clients
        .controller
        .controller_modify_volume(modify(&[("readIOPS", "100")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = clients
        .controller
        .controller_modify_volume(modify(&[("readIOPS", "fast")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    driver.terminate().unwrap();
}
