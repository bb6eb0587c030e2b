//! The two sides, set up as a user would: an ext4 volume created, staged and published by
//! fastvirt-csi as kubelet does, with a PostgreSQL cluster on it; and one in a directory beside
//! the pool's, on the same filesystem as the volume's file.

use super::{PgbenchError, PgbenchReport, Plan, Server, bin_dir};
use crate::kubelet;
use fastvirt_csi::local::Clients;
use std::path::Path;

/// Measures both sides on a running driver and returns the report.
pub async fn measure(
    clients: &mut Clients,
    work_dir: &Path,
    pool: &Path,
    size_bytes: u64,
    plan: Plan,
) -> anyhow::Result<PgbenchReport> {
    let started_utc = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let (volume, raw, postgres_version) =
        measure_sides(clients, work_dir, pool, size_bytes, &plan).await?;
    Ok(PgbenchReport {
        started_utc,
        machine: crate::report::machine(work_dir),
        plan,
        postgres_version,
        volume_size_bytes: size_bytes,
        volume,
        raw,
    })
}

async fn measure_sides(
    clients: &mut Clients,
    work_dir: &Path,
    pool: &Path,
    size_bytes: u64,
    plan: &Plan,
) -> anyhow::Result<(super::Side, super::Side, String)> {
    let bin = bin_dir()?;
    let capability = kubelet::mount_capability("ext4");
    eprintln!(
        "creating, staging and publishing a {} MiB ext4 volume as kubelet would",
        size_bytes >> 20
    );
    let id = kubelet::create_as(
        clients,
        "bench-pgbench",
        size_bytes,
        &[],
        None,
        capability.clone(),
    )
    .await?;
    let staging = work_dir.join("kubelet/staging/bench-pgbench");
    let target = work_dir.join("kubelet/pods/pgbench/mount");
    kubelet::stage_as(clients, &id, &staging, capability.clone()).await?;
    kubelet::publish_as(clients, &id, &staging, &target, capability).await?;
    // Beside the pool directory, on its filesystem: the pool itself is private to root, and
    // PostgreSQL runs as its own user.
    let raw_dir = pool.parent().unwrap_or(work_dir).join("pgbench-raw");
    let _ = std::fs::remove_dir_all(&raw_dir);
    let measured = (|| -> Result<_, PgbenchError> {
        let volume = Server::start("volume", &target.join("postgres"), &bin, plan)?;
        let raw = Server::start("raw", &raw_dir, &bin, plan)?;
        let version = volume.version();
        let sides = super::run(&volume, &raw, plan);
        let stopped = volume.stop().and(raw.stop());
        let sides = sides?;
        stopped?;
        Ok((sides.0, sides.1, version))
    })();
    let _ = std::fs::remove_dir_all(&raw_dir);
    kubelet::unpublish(clients, &id, &target).await?;
    kubelet::unstage(clients, &id, &staging).await?;
    kubelet::delete(clients, &id).await?;
    Ok(measured?)
}

/// Writes the report's JSON, Markdown and plot into `output`; returns the Markdown.
pub fn write(
    report: &PgbenchReport,
    output: &Path,
    plot_copy: Option<&Path>,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(output)?;
    let plot = output.join("pgbench.png");
    super::plot(report, &plot)?;
    let plot_name = crate::report::copy_plot(&plot, plot_copy)?;
    let summary = super::markdown(report, &plot_name);
    std::fs::write(
        output.join("pgbench.json"),
        serde_json::to_vec_pretty(report)?,
    )?;
    std::fs::write(output.join("pgbench.md"), &summary)?;
    Ok(summary)
}
