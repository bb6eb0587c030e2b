//! Objects the operator cannot read ([`fastvirt_api::lenient`]): the watches and the controllers
//! skip them, and each version is logged, counted and recorded as a Warning Event on the object
//! once, however many watches see it. The other objects of its kind are reconciled as usual.

use crate::metrics::Metrics;
use fastvirt_api::lenient::{Lenient, Unreadable};
use futures::{Stream, StreamExt};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{Lookup, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource};
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// Event reason of the reports.
pub const REASON: &str = "Unreadable";

pub struct Unreadables {
    recorder: Recorder,
    metrics: Arc<Metrics>,
    reported: Mutex<HashSet<(String, String, String)>>,
}

impl Unreadables {
    pub fn new(client: Client, instance: String, metrics: Arc<Metrics>) -> Self {
        let reporter = Reporter {
            controller: crate::MANAGER.into(),
            instance: Some(instance),
        };
        Unreadables {
            recorder: Recorder::new(client, reporter),
            metrics,
            reported: Mutex::new(HashSet::new()),
        }
    }

    /// Reports `object` unless this version of it was reported already.
    pub fn report(&self, object: &Unreadable) {
        let first = self
            .reported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(object.version_key());
        if !first {
            return;
        }
        tracing::warn!(
            kind = %object.kind,
            name = object.name(),
            error = %object.error,
            "skipping an object that cannot be read"
        );
        self.metrics.unreadable(&object.kind);
        let (recorder, reference) = (self.recorder.clone(), object.object_ref());
        let event = Event {
            type_: EventType::Warning,
            reason: REASON.into(),
            note: Some(object.note()),
            action: "Read".into(),
            secondary: None,
        };
        // Permission: rbac::EVENTS.
        tokio::spawn(async move {
            if let Err(error) = recorder.publish(&event, &reference).await {
                tracing::warn!(%error, reason = REASON, "could not record an event");
            }
        });
    }

    /// The object, or `None` (reported) when it cannot be read.
    pub fn read<K: Clone>(&self, object: &Lenient<K>) -> Option<K> {
        match object {
            Lenient::Read(object) => Some(object.clone()),
            Lenient::Unreadable(unreadable) => {
                self.report(unreadable);
                None
            }
        }
    }
}

/// `reconcile` for the objects that can be read; an unreadable one is reported and waits for a
/// change (a fix is a change).
pub async fn reconcile<K, C, E, F, Fut>(
    object: Arc<Lenient<K>>,
    ctx: Arc<C>,
    unreadables: Arc<Unreadables>,
    reconcile: F,
) -> Result<Action, E>
where
    K: Clone,
    F: FnOnce(Arc<K>, Arc<C>) -> Fut,
    Fut: Future<Output = Result<Action, E>>,
{
    match unreadables.read(&object) {
        Some(object) => reconcile(Arc::new(object), ctx).await,
        None => Ok(Action::await_change()),
    }
}

/// `error_policy` for the objects that can be read (only those reach a reconciler that fails).
pub fn error_policy<K: Clone, C, E>(
    object: Arc<Lenient<K>>,
    error: &E,
    ctx: Arc<C>,
    policy: impl FnOnce(Arc<K>, &E, Arc<C>) -> Action,
) -> Action {
    match &*object {
        Lenient::Read(object) => policy(Arc::new(object.clone()), error, ctx),
        Lenient::Unreadable(_) => Action::await_change(),
    }
}

/// A reference to `object` in a controller of `Lenient<K>`.
pub fn lenient_ref<K>(object: &K) -> ObjectRef<Lenient<K>>
where
    K: Resource<DynamicType = ()> + Lookup<DynamicType = ()>,
{
    ObjectRef::from_obj(object).into_kind_unchecked(())
}

/// The watch events of `K` for a cache: an object that cannot be read is reported and stands for
/// its last readable version in `cache`, if there is one. The cache keeps what the operator last
/// read through a bad update and a re-list, and drops it when the object is deleted; a change that
/// makes an object unreadable never looks like its deletion (which would, say, take a pool out of
/// the node plugins' configuration).
pub fn readable_events<K>(
    events: impl Stream<Item = watcher::Result<watcher::Event<Lenient<K>>>>,
    cache: Store<K>,
    unreadables: Arc<Unreadables>,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>>
where
    K: Resource<DynamicType = ()> + Lookup<DynamicType = ()> + Clone + 'static,
{
    use watcher::Event::{Apply, Delete, Init, InitApply, InitDone};
    let readable = move |object: Lenient<K>, deleted: bool| match object {
        Lenient::Read(object) => Some(object),
        Lenient::Unreadable(unreadable) => {
            if !deleted {
                unreadables.report(&unreadable);
            }
            let mut key = ObjectRef::<K>::new(unreadable.name());
            if let Some(namespace) = &unreadable.metadata.namespace {
                key = key.within(namespace);
            }
            cache.get(&key).map(|last| (*last).clone())
        }
    };
    events.filter_map(move |event| {
        let event = match event {
            Ok(Apply(object)) => readable(object, false).map(Apply).map(Ok),
            Ok(InitApply(object)) => readable(object, false).map(InitApply).map(Ok),
            Ok(Delete(object)) => readable(object, true).map(Delete).map(Ok),
            Ok(Init) => Some(Ok(Init)),
            Ok(InitDone) => Some(Ok(InitDone)),
            Err(error) => Some(Err(error)),
        };
        std::future::ready(event)
    })
}
