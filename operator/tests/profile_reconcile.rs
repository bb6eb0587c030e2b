//! The NodeTuningProfile reconciler against kube-fake-client: conflicts, priority, invalid
//! profiles, and aggregation of 1,000 TunedNode reports.

mod support;

use fastvirt_api::NodeTuningProfile;
use fastvirt_operator::profile_controller::reconcile;
use kube::Api;
use serde_json::{Value, json};
use std::sync::Arc;
use support::*;

fn profile(name: &str, selector: Value, priority: i32) -> Value {
    json!({
        "apiVersion": "fastvirt.io/v1alpha1",
        "kind": "NodeTuningProfile",
        "metadata": {"name": name, "generation": 3},
        "spec": {"nodeSelector": selector, "priority": priority, "cpu": {"reserved": "0-1", "isolated": "2-7"}},
        "status": {},
    })
}

fn tuned(node: &str, profile: &str, generation: i64, applied: bool, reboot: bool) -> Value {
    json!({
        "apiVersion": "fastvirt.io/v1alpha1",
        "kind": "TunedNode",
        "metadata": {"name": node},
        "spec": {"nodeName": node},
        "status": {
            "profile": profile,
            "profileGeneration": generation,
            "rebootRequired": reboot,
            "conditions": [
                {"type": "Applied", "status": if applied {"True"} else {"False"}, "reason": "Applied", "message": ""},
                {"type": "Degraded", "status": "False", "reason": "AsExpected", "message": ""},
            ],
        },
    })
}

async fn reconcile_named(
    ctx: &Arc<fastvirt_operator::context::Context>,
    name: &str,
) -> NodeTuningProfile {
    let api = Api::<NodeTuningProfile>::all(ctx.client.clone());
    reconcile(Arc::new(api.get(name).await.unwrap()), ctx.clone())
        .await
        .unwrap();
    api.get(name).await.unwrap()
}

#[tokio::test]
async fn two_profiles_on_one_node_conflict_unless_priority_decides() {
    let ctx = context(
        vec![
            profile("vm-hosts", json!({"role": "vm"}), 0),
            profile("zone-a", json!({"zone": "a"}), 0),
            object(node("worker-1", &[("role", "vm"), ("zone", "a")])),
            object(node("worker-2", &[("role", "vm"), ("zone", "b")])),
        ],
        false,
        false,
    )
    .await;
    for name in ["vm-hosts", "zone-a"] {
        let status = reconcile_named(&ctx, name).await.status.unwrap();
        let degraded = condition(&status.conditions, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "ProfileConflict"),
            "{name}"
        );
        assert_eq!(condition(&status.conditions, "Available").status, "False");
    }
    let reasons = event_reasons(&ctx).await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "ProfileConflict").count(),
        2,
        "{reasons:?}"
    );

    // A priority decides: the winner has no conflict left, the loser none either (it just does
    // not apply on worker-1).
    let patch = json!({"spec": {"priority": 10}});
    Api::<NodeTuningProfile>::all(ctx.client.clone())
        .patch(
            "zone-a",
            &Default::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    for name in ["vm-hosts", "zone-a"] {
        let status = reconcile_named(&ctx, name).await.status.unwrap();
        assert_ne!(
            condition(&status.conditions, "Degraded").reason,
            "ProfileConflict",
            "{name}"
        );
    }
    // Repeating the reconcile records no further events.
    let before = event_reasons(&ctx).await.len();
    reconcile_named(&ctx, "vm-hosts").await;
    assert_eq!(event_reasons(&ctx).await.len(), before);
}

#[tokio::test]
async fn an_invalid_profile_is_degraded_with_the_validation_message() {
    let mut bad = profile("overlap", json!({}), 0);
    bad["spec"]["cpu"] = json!({"reserved": "0-3", "isolated": "2-7"});
    let ctx = context(vec![bad, object(node("worker-1", &[]))], false, false).await;
    let status = reconcile_named(&ctx, "overlap").await.status.unwrap();
    let degraded = condition(&status.conditions, "Degraded");
    assert_eq!(degraded.reason, "InvalidProfile");
    assert!(degraded.message.contains("2-3"), "{}", degraded.message);
    assert!(
        event_reasons(&ctx)
            .await
            .contains(&"InvalidProfile".to_owned())
    );
}

#[tokio::test]
async fn a_thousand_node_reports_add_up() {
    let mut objects = vec![
        profile("vm-hosts", json!({"role": "vm"}), 0),
        profile("other", json!({"role": "db"}), 0),
    ];
    for i in 0..1000 {
        let name = format!("worker-{i:04}");
        objects.push(object(node(
            &name,
            &[("role", if i < 900 { "vm" } else { "db" })],
        )));
        // vm nodes: 800 applied the current generation, 50 an old one, 50 need a reboot.
        let report = match i {
            0..800 => tuned(&name, "vm-hosts", 3, true, false),
            800..850 => tuned(&name, "vm-hosts", 2, true, false),
            850..900 => tuned(&name, "vm-hosts", 3, true, true),
            _ => tuned(&name, "other", 3, true, false),
        };
        objects.push(report);
    }
    let ctx = context(objects, false, false).await;
    let status = reconcile_named(&ctx, "vm-hosts").await.status.unwrap();
    assert_eq!(status.matched_nodes, 900);
    assert_eq!(status.applied_nodes, 850);
    assert_eq!(status.reboot_required_nodes, 50);
    assert_eq!(status.degraded_nodes, 0);
    assert_eq!(status.observed_generation, Some(3));
    let degraded = condition(&status.conditions, "Degraded");
    assert_eq!(degraded.reason, "RebootRequired");
    assert_eq!(condition(&status.conditions, "Progressing").status, "True");
    let other = reconcile_named(&ctx, "other").await.status.unwrap();
    assert_eq!((other.matched_nodes, other.applied_nodes), (100, 100));
    assert_eq!(condition(&other.conditions, "Available").status, "True");
}
