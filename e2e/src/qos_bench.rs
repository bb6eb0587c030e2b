//! I/O limits, measured: a published block volume read from a pod-like cgroup (named as kubelet
//! names a pod's, so the driver's enforcer finds it through a kubelet-like publish path), with a
//! read limit of a share of the volume's own maximum, against the same volume without a limit.
//! fio offers fixed rates around the limit (QD32, 4 KiB random reads); the limit is switched on
//! and off between runs through ControllerModifyVolume, and every point is the median of rounds in
//! which the two settings alternate which goes first. Below the limit the two should not differ;
//! at and above it the limited side should sit at the limit while the other follows the offer.

use crate::fio::{self, FioResult};
use crate::latency::{Point, RATED_DEPTH, point, workload};
use crate::stats::median;
use fastvirt_csi::local::Clients;
use fastvirt_csi::local::pod_cgroups::PodCgroups;
use fastvirt_csi::proto::ControllerModifyVolumeRequest;
use fastvirt_csi::qos::QosLimits;
use fastvirt_csi::qos::cgroup::DeviceNumber;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The limit, in percent of the volume's measured maximum.
    pub limit_percent: u32,
    /// Offered rates, in percent of the limit.
    pub offered_percents: Vec<u32>,
    pub rounds: u32,
    pub runtime_s: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct QosPoint {
    pub offered_iops: u64,
    pub limited: Point,
    pub unlimited: Point,
}

#[derive(Debug, Clone, Serialize)]
pub struct QosReport {
    pub started_utc: String,
    pub machine: crate::report::Machine,
    pub plan: Plan,
    pub volume_size_bytes: u64,
    pub fio_engine: String,
    /// The volume's median maximum (QD32, no limit) that the limit is a share of.
    pub max_iops: f64,
    pub limit_iops: u64,
    pub points: Vec<QosPoint>,
}

pub const DOCS_START: &str = "<!-- fastvirt-bench:qos:start -->";
pub const DOCS_END: &str = "<!-- fastvirt-bench:qos:end -->";

/// Sets the volume's read limit and waits until the pod's cgroups carry it.
async fn set_limit(
    clients: &mut Clients,
    volume_id: &str,
    pod: &PodCgroups,
    device: DeviceNumber,
    limit: Option<u64>,
) -> anyhow::Result<()> {
    let value = limit.map_or_else(|| "unlimited".to_owned(), |l| l.to_string());
    clients
        .controller
        .controller_modify_volume(ControllerModifyVolumeRequest {
            volume_id: volume_id.to_owned(),
            mutable_parameters: HashMap::from([("readIOPS".to_owned(), value)]),
            ..Default::default()
        })
        .await?;
    let wanted = QosLimits {
        read_iops: limit,
        ..QosLimits::default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pod.limits(device).iter().all(|l| *l == wanted) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the limit {wanted} did not reach the pod's cgroups within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Measures both settings at every offered rate. `target` is the volume as published for the
/// pod; this process must already run in the pod's container cgroup, so fio does too.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    clients: &mut Clients,
    volume_id: &str,
    target: &Path,
    pod: &PodCgroups,
    device: DeviceNumber,
    size_bytes: u64,
    plan: &Plan,
    engine: &str,
) -> anyhow::Result<(f64, u64, Vec<QosPoint>)> {
    let measure = |rate: Option<u64>| -> Result<FioResult, fio::FioError> {
        fio::measure_at(
            target,
            size_bytes,
            workload(RATED_DEPTH),
            plan.runtime_s,
            engine,
            rate,
        )
    };
    set_limit(clients, volume_id, pod, device, None).await?;
    let mut maxima = Vec::new();
    for _ in 0..plan.rounds {
        maxima.push(measure(None)?.iops);
    }
    let max_iops = median(&maxima).unwrap_or(0.0);
    let limit = ((max_iops * f64::from(plan.limit_percent) / 100.0).round() as u64).max(1);
    eprintln!("qos: maximum {max_iops:.0} IOPS, limit {limit} IOPS");
    let mut points = Vec::new();
    for &percent in &plan.offered_percents {
        let offered = ((limit as f64) * f64::from(percent) / 100.0).round() as u64;
        let (mut limited, mut unlimited) = (Vec::new(), Vec::new());
        for round in 0..plan.rounds {
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for with_limit in order {
                set_limit(clients, volume_id, pod, device, with_limit.then_some(limit)).await?;
                let sample = measure(Some(offered))?;
                eprintln!(
                    "  offered {offered:>7} {:<9} {:>9.0} IOPS  p50 {:>7.0} µs  p99 {:>7.0} µs",
                    if with_limit { "limited" } else { "unlimited" },
                    sample.iops,
                    sample.p50_us.unwrap_or(0.0),
                    sample.p99_us.unwrap_or(0.0)
                );
                if with_limit {
                    limited.push(sample);
                } else {
                    unlimited.push(sample);
                }
            }
        }
        points.push(QosPoint {
            offered_iops: offered,
            limited: point(Some(offered), RATED_DEPTH, limited),
            unlimited: point(Some(offered), RATED_DEPTH, unlimited),
        });
    }
    set_limit(clients, volume_id, pod, device, None).await?;
    Ok((max_iops, limit, points))
}

impl QosReport {
    /// Writes `qos.json` and `qos.md` into `output`.
    pub fn write(self, output: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(output)?;
        std::fs::write(output.join("qos.json"), serde_json::to_vec_pretty(&self)?)?;
        std::fs::write(output.join("qos.md"), markdown(&self))?;
        Ok(self)
    }
}

/// The pod of the qos benchmark (a UID as kubelet names pods' directories and cgroups).
pub const QOS_POD: &str = "fa57b1c0-0000-4000-8000-00000000b0a7";

/// The whole benchmark on a running driver: a block volume published for the pod, filled, then
/// [`run`] from inside the pod's cgroups; everything is removed afterwards.
pub async fn measure(
    clients: &mut Clients,
    work_dir: &Path,
    pool: &Path,
    size: u64,
    plan: Plan,
) -> anyhow::Result<QosReport> {
    use crate::kubelet;
    use fastvirt_csi::local::pod_cgroups::block_publish_path;
    let hierarchies =
        fastvirt_csi::qos::consumers::Hierarchies::discover(Path::new("/sys/fs/cgroup"));
    if hierarchies.0.is_empty() {
        anyhow::bail!(
            "no cgroup hierarchy here throttles block I/O (no v1 blkio, no io controller in cgroup v2)"
        );
    }
    let started_utc = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let engine = fio::engine();
    let name = "bench-qos";
    let id = kubelet::create(clients, name, size).await?;
    let staging = work_dir.join("kubelet/staging").join(name);
    let target = block_publish_path(&work_dir.join("kubelet"), name, QOS_POD);
    kubelet::stage(clients, &id, &staging).await?;
    kubelet::publish(clients, &id, &staging, &target).await?;
    nix::unistd::sync();
    fio::fill(&target, size, engine)?;
    let device = fastvirt_csi::qos::cgroup::DeviceNumber::from_rdev(
        std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata(&target)?),
    );
    let pod = PodCgroups::create(&hierarchies, "bench-qos", QOS_POD);
    pod.enter()?;
    let measured = run(clients, &id, &target, &pod, device, size, &plan, engine).await;
    pod.leave()?;
    drop(pod);
    kubelet::unpublish(clients, &id, &target).await?;
    kubelet::unstage(clients, &id, &staging).await?;
    kubelet::delete(clients, &id).await?;
    let (max_iops, limit_iops, points) = measured?;
    Ok(QosReport {
        started_utc,
        machine: crate::report::machine(pool),
        plan,
        volume_size_bytes: size,
        fio_engine: engine.to_owned(),
        max_iops,
        limit_iops,
        points,
    })
}

/// The Markdown section.
pub fn markdown(report: &QosReport) -> String {
    let mut out = format!(
        "Measured {} on {}: a {} MiB block volume published by fastvirt-csi for a pod-like cgroup, 4 KiB random reads at QD{RATED_DEPTH}, fio `{}` with O_DIRECT, {} alternating rounds of {} s per point (medians). The volume's maximum was {:.0} IOPS; the limit, {} % of it, {} IOPS (`readIOPS`).\n\n",
        report.started_utc,
        report.machine.describe(),
        report.volume_size_bytes >> 20,
        report.fio_engine,
        report.plan.rounds,
        report.plan.runtime_s,
        report.max_iops,
        report.plan.limit_percent,
        report.limit_iops,
    );
    out.push_str("| offered (% of limit) | limited IOPS | achieved / limit | limited p50 µs | limited p99 µs | unlimited IOPS | unlimited p50 µs | unlimited p99 µs |\n|---|---|---|---|---|---|---|---|\n");
    for (percent, p) in report.plan.offered_percents.iter().zip(&report.points) {
        out.push_str(&format!(
            "| {percent} % ({}) | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            p.offered_iops,
            p.limited.achieved_iops,
            p.limited.achieved_iops / report.limit_iops.max(1) as f64,
            p.limited.p50_us,
            p.limited.p99_us,
            p.unlimited.achieved_iops,
            p.unlimited.p50_us,
            p.unlimited.p99_us,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(iops: f64, p50: f64) -> FioResult {
        FioResult {
            iops,
            p50_us: Some(p50),
            p99_us: Some(p50 * 3.0),
            cpu_us_per_io: 0.0,
            busy_cpus: 0.0,
        }
    }

    #[test]
    fn the_table_shows_achieved_against_the_limit() {
        let report = QosReport {
            started_utc: "2026-12-01T00:00:00Z".into(),
            machine: crate::report::example_machine(),
            plan: Plan {
                limit_percent: 50,
                offered_percents: vec![50, 150],
                rounds: 1,
                runtime_s: 1,
            },
            volume_size_bytes: 64 << 20,
            fio_engine: "io_uring".into(),
            max_iops: 20_000.0,
            limit_iops: 10_000,
            points: vec![
                QosPoint {
                    offered_iops: 5_000,
                    limited: point(Some(5_000), 32, vec![sample(5_000.0, 40.0)]),
                    unlimited: point(Some(5_000), 32, vec![sample(5_000.0, 40.0)]),
                },
                QosPoint {
                    offered_iops: 15_000,
                    limited: point(Some(15_000), 32, vec![sample(10_050.0, 3_000.0)]),
                    unlimited: point(Some(15_000), 32, vec![sample(15_000.0, 60.0)]),
                },
            ],
        };
        let text = markdown(&report);
        assert!(text.contains("the limit, 50 % of it, 10000 IOPS"), "{text}");
        assert!(
            text.contains("| 150 % (15000) | 10050 | 1.00 | 3000 | 9000 | 15000 | 60 | 180 |"),
            "{text}"
        );
    }
}
