//! `fastvirt-bench operator`: how long the operator takes to recompute every NodeTuningProfile's
//! status for a large cluster, and what its caches cost in memory. The profile reconciler runs
//! as in production, reading informer caches and writing status by server-side apply, against
//! an in-memory API server; the baseline in the same run reads through the API instead of the
//! caches, which is what the caches save.

use crate::stats::median;
use fastvirt_api::{NodeTuningProfile, TunedNode};
use fastvirt_operator::context::{Caches, Context, OptionalApis, Settings};
use fastvirt_operator::profile_controller;
use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use kube::{Api, Resource};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

pub const DOCS_START: &str = "<!-- fastvirt-bench:operator:start -->";
pub const DOCS_END: &str = "<!-- fastvirt-bench:operator:end -->";

const ZONES: usize = 10;
const TIERS: usize = 5;

#[derive(Debug, Serialize)]
pub struct OperatorResult {
    pub nodes: usize,
    pub profiles: usize,
    pub rounds: u32,
    /// The first round, which writes every profile's status.
    pub first_round_ms: f64,
    /// Later rounds from the caches: statuses are unchanged, so nothing is written.
    pub cached_round_ms: f64,
    /// The same rounds listing through the API on every reconcile (no caches).
    pub uncached_round_ms: f64,
    /// Resident memory the caches of this cluster add, measured around filling them.
    pub cache_mib: f64,
    /// Peak resident memory of the whole benchmark process.
    pub peak_rss_mib: f64,
}

fn node(i: usize) -> Value {
    // Labels and annotations the size of a real cloud node's metadata.
    let mut labels = serde_json::Map::new();
    labels.insert(
        "kubernetes.io/hostname".into(),
        json!(format!("worker-{i:04}")),
    );
    labels.insert(
        "topology.kubernetes.io/zone".into(),
        json!(format!("zone-{}", i % ZONES)),
    );
    labels.insert(
        "fastvirt.io/tier".into(),
        json!(format!("tier-{}", i % TIERS)),
    );
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    labels.insert("kubernetes.io/arch".into(), json!("amd64"));
    labels.insert(
        "node.kubernetes.io/instance-type".into(),
        json!("metal-64c-512g"),
    );
    for feature in 0..14 {
        labels.insert(
            format!("feature.node.kubernetes.io/cpu-cpuid.FEATURE{feature}"),
            json!("true"),
        );
    }
    let annotations: serde_json::Map<String, Value> = (0..10)
        .map(|a| (format!("example.com/annotation-{a}"), json!("x".repeat(40))))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": format!("worker-{i:04}"), "labels": labels, "annotations": annotations},
    })
}

fn profile(p: usize) -> Value {
    json!({
        "apiVersion": "fastvirt.io/v1alpha1",
        "kind": "NodeTuningProfile",
        "metadata": {"name": format!("profile-{p:02}"), "generation": 1},
        "spec": {
            "nodeSelector": {
                "topology.kubernetes.io/zone": format!("zone-{}", p % ZONES),
                "fastvirt.io/tier": format!("tier-{}", (p / ZONES) % TIERS),
            },
            "cpu": {"reserved": "0-3", "isolated": "4-63"},
            "hugepages": [{"size": "1Gi", "count": 256, "numaNode": 0}],
            "sysctlPreset": "virtual-host",
        },
        "status": {},
    })
}

fn tuned(i: usize, profiles: usize) -> Value {
    let zone = i % ZONES;
    let tier = i % TIERS;
    let p = (tier * ZONES + zone) % profiles.max(1);
    json!({
        "apiVersion": "fastvirt.io/v1alpha1",
        "kind": "TunedNode",
        "metadata": {"name": format!("worker-{i:04}")},
        "spec": {"nodeName": format!("worker-{i:04}")},
        "status": {
            "profile": format!("profile-{p:02}"),
            "profileGeneration": 1,
            "applied": ["hugepages-1Gi node0: 256", "irq: 412 moved", "sysctl kernel.sched_migration_cost_ns: 5000000"],
            "unchangeable": ["irq 37 (nvme0q1): managed by the kernel"],
            "conditions": [
                {"type": "Applied", "status": "True", "reason": "Applied", "message": ""},
                {"type": "Degraded", "status": "False", "reason": "AsExpected", "message": ""},
            ],
        },
    })
}

fn fill<K>(objects: impl Iterator<Item = K>) -> kube::runtime::reflector::Store<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let mut writer = Writer::<K>::default();
    writer.apply_watcher_event(&watcher::Event::Init);
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::InitApply(object));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    writer.as_reader()
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn fake_client(objects: Vec<Value>) -> kube::Client {
    let builder = kube_fake_client::ClientBuilder::new()
        .with_resource::<NodeTuningProfile>()
        .with_resource::<TunedNode>()
        .with_runtime_objects(objects);
    fastvirt_test_support::client(builder, &["nodetuningprofiles", "tunednodes"]).await
}

fn settings() -> Settings {
    Settings {
        namespace: "fastvirt-system".into(),
        pool_config_map: "fastvirt-pools".into(),
        node_daemonset: None,
        pool_host_dirs: Vec::new(),
    }
}

/// Reconciles every profile once; milliseconds. The profiles are read first, untimed: the
/// controller hands each reconcile the object from its cache.
async fn round(ctx: &Arc<Context>, names: &[String]) -> anyhow::Result<f64> {
    let api = Api::<NodeTuningProfile>::all(ctx.client.clone());
    let mut profiles = Vec::with_capacity(names.len());
    for name in names {
        profiles.push(Arc::new(api.get(name).await?));
    }
    let started = Instant::now();
    for profile in profiles {
        profile_controller::reconcile(profile, ctx.clone()).await?;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

pub async fn run(nodes: usize, profiles: usize, rounds: u32) -> anyhow::Result<OperatorResult> {
    let names: Vec<String> = (0..profiles).map(|p| format!("profile-{p:02}")).collect();
    let profile_values: Vec<Value> = (0..profiles).map(profile).collect();

    // The caches, filled the way the reflectors fill them, with memory measured around it.
    let before = rss_kib("VmRSS:");
    let caches = Caches {
        pools: fill(std::iter::empty()),
        profiles: fill(
            profile_values
                .iter()
                .map(|v| serde_json::from_value::<NodeTuningProfile>(v.clone()).expect("profile")),
        ),
        nodes: fill((0..nodes).map(|i| {
            let node: Node = serde_json::from_value(node(i)).expect("node");
            PartialObjectMeta::<Node> {
                types: None,
                metadata: node.metadata,
                _phantom: Default::default(),
            }
        })),
        tuned_nodes: fill(
            (0..nodes)
                .map(|i| serde_json::from_value::<TunedNode>(tuned(i, profiles)).expect("tuned")),
        ),
        capacities: fill(std::iter::empty::<CSIStorageCapacity>()),
        volumes: fill(std::iter::empty::<PersistentVolume>()),
    };
    let cache_mib = rss_kib("VmRSS:").saturating_sub(before) as f64 / 1024.0;

    let cached = Arc::new(
        Context::new(
            fake_client(profile_values.clone()).await,
            settings(),
            OptionalApis::default(),
            "bench".into(),
        )
        .with_caches(caches),
    );
    let mut everything = profile_values;
    everything.extend((0..nodes).map(node));
    everything.extend((0..nodes).map(|i| tuned(i, profiles)));
    let uncached = Arc::new(Context::new(
        fake_client(everything).await,
        settings(),
        OptionalApis::default(),
        "bench".into(),
    ));

    let first_round_ms = round(&cached, &names).await?;
    round(&uncached, &names).await?;
    let (mut with_caches, mut without) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        with_caches.push(round(&cached, &names).await?);
        without.push(round(&uncached, &names).await?);
    }
    Ok(OperatorResult {
        nodes,
        profiles,
        rounds,
        first_round_ms,
        cached_round_ms: median(&with_caches).unwrap_or(f64::NAN),
        uncached_round_ms: median(&without).unwrap_or(f64::NAN),
        cache_mib,
        peak_rss_mib: rss_kib("VmHWM:") as f64 / 1024.0,
    })
}

pub fn markdown(
    result: &OperatorResult,
    started_utc: &str,
    machine: &crate::report::Machine,
) -> String {
    let target = if result.first_round_ms.max(result.cached_round_ms) <= 1000.0 {
        "met"
    } else {
        "**not met**"
    };
    format!(
        "Measured {started_utc} on {cpu} ({cores} cores), kernel {kernel}: {nodes} nodes, {profiles} \
NodeTuningProfiles, {nodes} TunedNode reports; median of {rounds} interleaved rounds.\n\n\
| what | time per round (all {profiles} profiles) |\n|---|---|\n\
| first round from the caches (writes {profiles} statuses) | {first:.1} ms |\n\
| later rounds from the caches (nothing changed, nothing written) | {cached:.1} ms |\n\
| baseline: later rounds listing through the API on every reconcile | {uncached:.1} ms ({ratio:.0}× the cached round) |\n\n\
Target ≤ 1 s per round: {target}.\n\n\
Memory: the caches of this cluster (node metadata, reports, profiles) add {cache:.1} MiB of resident memory; \
the whole benchmark process, which also holds two in-memory API servers with copies of every object, peaked at {peak:.0} MiB.\n",
        cpu = machine.cpu_model,
        cores = machine.cpus,
        kernel = machine.kernel,
        nodes = result.nodes,
        profiles = result.profiles,
        rounds = result.rounds,
        first = result.first_round_ms,
        cached = result.cached_round_ms,
        uncached = result.uncached_round_ms,
        ratio = result.uncached_round_ms / result.cached_round_ms.max(0.001),
        cache = result.cache_mib,
        peak = result.peak_rss_mib,
    )
}
