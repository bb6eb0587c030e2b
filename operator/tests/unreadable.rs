//! Objects the types cannot read (an integer beyond its field's range, stored before the CRDs had
//! bounds) are skipped and reported; the others are reconciled as usual.

mod support;

use fastvirt_api::NodeTuningProfile;
use fastvirt_api::lenient::Lenient;
use fastvirt_operator::metrics::Metrics;
use fastvirt_operator::profile_controller::reconcile;
use fastvirt_operator::unreadable::{REASON, Unreadables, readable_events};
use futures::StreamExt;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::Event;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn profile(name: &str, priority: Value, resource_version: &str) -> Value {
    json!({
        "apiVersion": "fastvirt.io/v1alpha1",
        "kind": "NodeTuningProfile",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "generation": 1, "resourceVersion": resource_version},
        "spec": {"nodeSelector": {"role": "vm"}, "priority": priority},
        "status": {},
    })
}

fn lenient(value: Value) -> Lenient<NodeTuningProfile> {
    Lenient::from_value(value).unwrap()
}

#[tokio::test]
async fn a_profile_reconciles_while_another_cannot_be_read() {
    let ctx = context(
        vec![
            profile("good", json!(5), "1"),
            profile("bad", json!(3_000_000_000_u64), "1"),
            object(node("worker-1", &[("role", "vm")])),
        ],
        false,
        false,
    )
    .await;
    let api = Api::<NodeTuningProfile>::all(ctx.client.clone());
    assert!(
        api.list(&Default::default()).await.is_err(),
        "a typed list fails as a whole"
    );
    reconcile(Arc::new(api.get("good").await.unwrap()), ctx.clone())
        .await
        .unwrap();
    let status = api.get("good").await.unwrap().status.unwrap();
    assert_eq!(
        status.matched_nodes, 1,
        "the unreadable profile takes no part"
    );
}

#[tokio::test]
async fn caches_skip_unreadable_objects_and_keep_their_last_readable_version() {
    let ctx = context(Vec::new(), false, false).await;
    let metrics = Arc::new(Metrics::default());
    let unreadables = Arc::new(Unreadables::new(
        ctx.client.clone(),
        "test".into(),
        metrics.clone(),
    ));
    let (reader, mut writer) = reflector::store::<NodeTuningProfile>();
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let mut events = Box::pin(readable_events(rx, reader.clone(), unreadables));
    let mut step = async |event: Event<Lenient<NodeTuningProfile>>| {
        tx.unbounded_send(Ok(event)).unwrap();
        if let Some(event) = tokio::time::timeout(Duration::from_millis(100), events.next())
            .await
            .ok()
            .flatten()
        {
            writer.apply_watcher_event(&event.unwrap());
        }
    };
    let names = |reader: &reflector::Store<NodeTuningProfile>| {
        let mut names: Vec<(String, i32)> = reader
            .state()
            .iter()
            .map(|p| (p.metadata.name.clone().unwrap(), p.spec.priority))
            .collect();
        names.sort();
        names
    };
    let bad = || lenient(profile("bad", json!(3_000_000_000_u64), "2"));

    step(Event::Init).await;
    step(Event::InitApply(lenient(profile("good", json!(1), "1")))).await;
    step(Event::InitApply(bad())).await;
    step(Event::InitDone).await;
    assert_eq!(names(&reader), [("good".to_owned(), 1)]);

    // A bad update keeps what was last read, through a re-list too; deleting removes it.
    step(Event::Apply(lenient(profile("good", json!(2), "3")))).await;
    step(Event::Apply(lenient(profile(
        "good",
        json!(-3_000_000_000_i64),
        "4",
    ))))
    .await;
    assert_eq!(names(&reader), [("good".to_owned(), 2)]);
    step(Event::Init).await;
    step(Event::InitApply(lenient(profile(
        "good",
        json!(-3_000_000_000_i64),
        "4",
    ))))
    .await;
    step(Event::InitApply(bad())).await;
    step(Event::InitDone).await;
    assert_eq!(names(&reader), [("good".to_owned(), 2)]);
    step(Event::Delete(lenient(profile(
        "good",
        json!(-3_000_000_000_i64),
        "5",
    ))))
    .await;
    assert!(reader.get(&ObjectRef::new("good")).is_none());

    // Each unreadable version is reported once: `bad` at 2 and `good` at 4.
    let text = metrics.encode();
    assert!(
        text.contains("fastvirt_operator_unreadable_objects_total{kind=\"NodeTuningProfile\"} 2"),
        "{text}"
    );
    let mut reasons = Vec::new();
    for _ in 0..50 {
        reasons = event_reasons(&ctx).await;
        if reasons.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reasons, [REASON, REASON]);
}
