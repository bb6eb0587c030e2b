//! Against a real cluster (`KUBECONFIG`): with the CRDs installed, a BlockPool reconciles to a
//! StorageClass and back. Run with `cargo test -p fastvirt-operator --test cluster -- --ignored`.

use fastvirt_api::BlockPool;
use fastvirt_operator::context::{Context, OptionalApis, Settings};
use fastvirt_operator::pool_controller::reconcile;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use std::sync::Arc;

#[tokio::test]
#[ignore = "needs a cluster with the fastvirt CRDs installed (KUBECONFIG)"]
async fn a_pool_reconciles_on_a_real_cluster() {
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG points at a cluster");
    let name = "fastvirt-e2e-pool";
    let pool: BlockPool = serde_json::from_value(serde_json::json!({
        "apiVersion": "fastvirt.io/v1alpha1",
        "kind": "BlockPool",
        "metadata": {"name": name},
        "spec": {"backend": {"file": {"path": "/var/lib/fastvirt/pools/e2e"}}},
    }))
    .unwrap();
    let pools = Api::<BlockPool>::all(client.clone());
    pools.create(&PostParams::default(), &pool).await.unwrap();
    let ctx = Arc::new(Context::new(
        client.clone(),
        Settings {
            namespace: "default".into(),
            pool_config_map: "fastvirt-e2e-pools".into(),
            node_daemonset: None,
        },
        OptionalApis::new(false, false),
        "e2e".into(),
    ));
    let created = pools.get(name).await.unwrap();
    reconcile(Arc::new(created), ctx.clone()).await.unwrap();
    let class = Api::<StorageClass>::all(client.clone())
        .get(name)
        .await
        .unwrap();
    assert_eq!(class.provisioner, "block.fastvirt.io");
    pools.delete(name, &DeleteParams::default()).await.unwrap();
    let deleting = pools.get(name).await.unwrap();
    reconcile(Arc::new(deleting), ctx).await.unwrap();
    assert!(pools.get_opt(name).await.unwrap().is_none());
}
