//! The one-shot commands: plan, apply, restore and congestion.

use crate::apply;
use crate::cli::{CongestionArgs, Output, ProfileArgs, RestoreArgs};
use crate::congestion;
use crate::host;
use crate::hostfs::{HostFs, RealHostFs};
use crate::journal::Journal;
use crate::plan::{self, Plan, PlanOptions};
use crate::render;
use anyhow::{Context, bail};
use fastvirt_api::NodeTuningProfileSpec;
use fastvirt_api::cpuset::CpuSet;
use fastvirt_api::strict_yaml;
use std::path::Path;

/// A NodeTuningProfile manifest as a file holds it (`kubectl get -o yaml` output included). Only
/// `spec` is used; `status` is accepted unread.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // the envelope's fields are parsed to be checked, not read
struct ProfileManifest {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    spec: NodeTuningProfileSpec,
    #[serde(default)]
    status: Option<serde_json::Value>,
}

/// Reads a NodeTuningProfile manifest or a bare spec, strictly: an unknown or misspelt field is an
/// error naming it (`spec.transparentHugepage`) and the closest known field.
pub fn read_profile(path: &Path) -> anyhow::Result<NodeTuningProfileSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_yaml::Value = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not YAML or JSON", path.display()))?;
    let manifest = ["apiVersion", "kind", "metadata", "spec"]
        .iter()
        .any(|key| value.get(key).is_some());
    if manifest {
        strict_yaml::from_value::<ProfileManifest>(value)
            .map(|manifest| manifest.spec)
            .with_context(|| format!("{}: not a NodeTuningProfile manifest", path.display()))
    } else {
        strict_yaml::from_value(value)
            .with_context(|| format!("{}: not a NodeTuningProfile spec", path.display()))
    }
}

fn planned(args: &ProfileArgs, fs: &dyn HostFs) -> anyhow::Result<Plan> {
    let spec = read_profile(&args.profile)?;
    let host = host::read(fs)?;
    let options = PlanOptions {
        max_hugepage_percent: args.max_hugepage_percent,
        ksm_handled_by_kubevirt: args.ksm_handled_by_kubevirt,
        known_managed_irqs: Journal::load(fs)?.managed_irqs,
        kubelet_drop_in: Some(crate::kubelet_drop_in::DropInFile::read(
            fs,
            &args.kubelet.dirs(),
        )),
        // Offline there is no Node to read the kubelet's memory reservation from.
        kubelet_reserved_memory: None,
    };
    Ok(plan::plan(&host, &spec, &options)?)
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn plan(args: &ProfileArgs) -> anyhow::Result<()> {
    let fs = RealHostFs::new(&args.host.host_root);
    let plan = planned(args, &fs)?;
    match args.output {
        Output::Json => print_json(&plan),
        Output::Table => {
            print!("{}", render::plan(&plan));
            Ok(())
        }
    }
}

pub fn apply(args: &ProfileArgs) -> anyhow::Result<()> {
    let fs = RealHostFs::new(&args.host.host_root);
    let plan = planned(args, &fs)?;
    let report = apply::apply(&fs, &plan)?;
    match args.output {
        Output::Json => print_json(&serde_json::json!({ "plan": plan, "report": report })),
        Output::Table => {
            print!("{}", render::apply(&report));
            // What apply cannot do is in the plan: show it after the result.
            let rest = Plan {
                changes: Vec::new(),
                ..plan
            };
            let text = render::plan(&rest);
            print!("{}", text.split_once('\n').map_or("", |(_, tail)| tail));
            Ok(())
        }
    }
}

pub fn restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let fs = RealHostFs::new(&args.host.host_root);
    let report = apply::restore(&fs)?;
    match args.output {
        Output::Json => print_json(&report)?,
        Output::Table => print!("{}", render::restore(&report)),
    }
    if !report.failed.is_empty() {
        bail!(
            "{} setting(s) could not be restored; they stay in the journal",
            report.failed.len()
        );
    }
    Ok(())
}

pub async fn congestion(args: &CongestionArgs) -> anyhow::Result<()> {
    let fs = RealHostFs::new(&args.host.host_root);
    let isolated = CpuSet::parse(&args.isolated).context("--isolated")?;
    let source = congestion::detect(&fs)?;
    let sample = || {
        congestion::sample(&fs, source, congestion::monotonic_ns())
            .map(|s| s.with_device_interrupts(&fs))
    };
    let mut previous = sample()?;
    let mut done = 0;
    while args.count == 0 || done < args.count {
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let current = sample()?;
        let report = congestion::rates(&previous, &current, &isolated)?;
        match args.output {
            Output::Json => println!("{}", serde_json::to_string(&report)?),
            Output::Table => println!("{}", render::congestion(&report)),
        }
        previous = current;
        done += 1;
    }
    Ok(())
}
