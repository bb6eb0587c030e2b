//! Latency against load, the talk's way of judging storage: a curve, not one number at one queue
//! depth. For the published volume and for the raw file beside it in the same pool, fio reads
//! 4 KiB blocks at fixed offered rates from 10 % to 100 % of the side's own maximum (measured
//! first, at QD32), then without a rate limit at queue depths 1 to 64. Every point is the median
//! of interleaved rounds (the sides alternate which goes first). The plot is latency against
//! achieved IOPS per side.

use crate::fio::{self, FioResult, Workload};
use crate::stats::{interleaved, median};
use plotters::prelude::*;
use serde::Serialize;
use std::path::Path;

/// The queue depth of the rated runs, deep enough that the rate, not the depth, limits them.
pub const RATED_DEPTH: u32 = 32;

/// What to measure.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Offered load in percent of each side's maximum.
    pub rate_percents: Vec<u32>,
    /// Queue depths of the unrated sweep.
    pub depths: Vec<u32>,
    pub rounds: u32,
    pub runtime_s: u32,
}

/// One point of a curve: medians over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// The offered rate (`None` in the queue-depth sweep).
    pub offered_iops: Option<u64>,
    pub iodepth: u32,
    pub achieved_iops: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Every round's sample.
    pub samples: Vec<FioResult>,
}

/// One side's curves.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub name: String,
    /// The median maximum, 4k randread at QD32, that the rates are percentages of.
    pub max_iops: f64,
    pub by_rate: Vec<Point>,
    pub by_depth: Vec<Point>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub started_utc: String,
    pub machine: crate::report::Machine,
    pub plan: Plan,
    pub volume_size_bytes: u64,
    pub fio_engine: String,
    pub volume: Side,
    pub raw: Side,
}

pub const DOCS_START: &str = "<!-- fastvirt-bench:latency:start -->";
pub const DOCS_END: &str = "<!-- fastvirt-bench:latency:end -->";

pub(crate) fn workload(iodepth: u32) -> Workload {
    Workload {
        rw: "randread",
        iodepth,
        sqpoll: false,
    }
}

pub(crate) fn point(offered_iops: Option<u64>, iodepth: u32, samples: Vec<FioResult>) -> Point {
    let med = |f: fn(&FioResult) -> Option<f64>| {
        median(&samples.iter().filter_map(f).collect::<Vec<_>>()).unwrap_or(0.0)
    };
    Point {
        offered_iops,
        iodepth,
        achieved_iops: med(|r| Some(r.iops)),
        p50_us: med(|r| r.p50_us),
        p99_us: med(|r| r.p99_us),
        samples,
    }
}

fn log(label: &str, is_volume: bool, sample: &FioResult) {
    eprintln!(
        "  {label:<22} {:<7} {:>9.0} IOPS  p50 {:>7.0} µs  p99 {:>7.0} µs",
        if is_volume { "volume" } else { "raw" },
        sample.iops,
        sample.p50_us.unwrap_or(0.0),
        sample.p99_us.unwrap_or(0.0)
    );
}

/// Measures both curves of both sides.
pub fn run(
    volume: &Path,
    raw: &Path,
    size_bytes: u64,
    plan: &Plan,
    engine: &str,
) -> Result<(Side, Side), fio::FioError> {
    let measure = |is_volume: bool, depth: u32, rate: Option<u64>, label: &str| {
        let path = if is_volume { volume } else { raw };
        let sample = fio::measure_at(
            path,
            size_bytes,
            workload(depth),
            plan.runtime_s,
            engine,
            rate,
        )?;
        log(label, is_volume, &sample);
        Ok(sample)
    };
    let (max_volume, max_raw) = interleaved(plan.rounds, |v| {
        measure(v, RATED_DEPTH, None, "maximum, QD32")
    })?;
    let maximum = |s: &[FioResult]| median(&s.iter().map(|r| r.iops).collect::<Vec<_>>());
    let (max_volume, max_raw) = (
        maximum(&max_volume).unwrap_or(0.0),
        maximum(&max_raw).unwrap_or(0.0),
    );
    let mut volume_side = Side {
        name: "volume".into(),
        max_iops: max_volume,
        by_rate: Vec::new(),
        by_depth: Vec::new(),
    };
    let mut raw_side = Side {
        name: "raw file".into(),
        max_iops: max_raw,
        by_rate: Vec::new(),
        by_depth: Vec::new(),
    };
    for &percent in &plan.rate_percents {
        let rate_of = |max: f64| (max * f64::from(percent) / 100.0).round() as u64;
        let (rate_volume, rate_raw) = (rate_of(max_volume), rate_of(max_raw));
        let label = format!("{percent}% of maximum");
        let (on_volume, on_raw) = interleaved(plan.rounds, |v| {
            let rate = if v { rate_volume } else { rate_raw };
            measure(v, RATED_DEPTH, Some(rate), &label)
        })?;
        volume_side
            .by_rate
            .push(point(Some(rate_volume), RATED_DEPTH, on_volume));
        raw_side
            .by_rate
            .push(point(Some(rate_raw), RATED_DEPTH, on_raw));
    }
    for &depth in &plan.depths {
        let label = format!("QD{depth}");
        let (on_volume, on_raw) = interleaved(plan.rounds, |v| measure(v, depth, None, &label))?;
        volume_side.by_depth.push(point(None, depth, on_volume));
        raw_side.by_depth.push(point(None, depth, on_raw));
    }
    Ok((volume_side, raw_side))
}

/// The Markdown section: both tables, the plot, and how it was measured.
pub fn markdown(report: &LatencyReport, plot_file: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Measured {} on {}: a {} MiB block volume published by fastvirt-csi against a raw file in the same pool, 4 KiB random reads, fio `{}` with O_DIRECT, {} interleaved rounds of {} s per point (medians).\n\n",
        report.started_utc,
        report.machine.describe(),
        report.volume_size_bytes >> 20,
        report.fio_engine,
        report.plan.rounds,
        report.plan.runtime_s
    ));
    out.push_str(&format!(
        "![p50 and p99 latency against achieved IOPS]({plot_file})\n\n"
    ));
    out.push_str(&format!(
        "Maximum at QD{RATED_DEPTH}: volume {:.0} IOPS, raw file {:.0} IOPS ({:.2}×).\n\n",
        report.volume.max_iops,
        report.raw.max_iops,
        ratio(report.volume.max_iops, report.raw.max_iops)
    ));
    out.push_str(&format!(
        "| offered (% of max, QD{RATED_DEPTH}) | volume IOPS | volume p50 µs | volume p99 µs | raw IOPS | raw p50 µs | raw p99 µs |\n|---|---|---|---|---|---|---|\n"
    ));
    for ((percent, v), r) in report
        .plan
        .rate_percents
        .iter()
        .zip(&report.volume.by_rate)
        .zip(&report.raw.by_rate)
    {
        out.push_str(&format!(
            "| {percent} % | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            v.achieved_iops, v.p50_us, v.p99_us, r.achieved_iops, r.p50_us, r.p99_us
        ));
    }
    out.push_str(
        "\n| queue depth | volume IOPS | volume p99 µs | raw IOPS | raw p99 µs | volume / raw IOPS |\n|---|---|---|---|---|---|\n",
    );
    for (v, r) in report.volume.by_depth.iter().zip(&report.raw.by_depth) {
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |\n",
            v.iodepth,
            v.achieved_iops,
            v.p99_us,
            r.achieved_iops,
            r.p99_us,
            ratio(v.achieved_iops, r.achieved_iops)
        ));
    }
    out
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// The font the plot's text is drawn with (Debian's fonts-dejavu-core, which
/// scripts/install-deps.sh installs).
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("reading the font {FONT}: {0} (install fonts-dejavu-core)")]
    Font(std::io::Error),
    #[error("{FONT} is not a usable font")]
    BadFont,
    #[error("drawing the plot: {0}")]
    Draw(String),
}

pub(crate) fn register_font() -> Result<(), PlotError> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let outcome = REGISTERED.get_or_init(|| {
        let bytes = std::fs::read(FONT).map_err(|e| e.to_string())?;
        // The font lives as long as the process; plotters asks for a `'static` slice.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "bad font".to_owned())
    });
    match outcome {
        Ok(()) => Ok(()),
        Err(message) if message == "bad font" => Err(PlotError::BadFont),
        Err(message) => Err(PlotError::Font(std::io::Error::other(message.clone()))),
    }
}

pub(crate) fn draw_error(error: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(error.to_string())
}

/// Draws p50 and p99 latency against achieved IOPS for both sides (the rated points) into a PNG.
pub fn plot(report: &LatencyReport, path: &Path) -> Result<(), PlotError> {
    register_font()?;
    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let sides = [(&report.volume, BLUE), (&report.raw, RED)];
    let max_iops = sides
        .iter()
        .flat_map(|(s, _)| s.by_rate.iter().map(|p| p.achieved_iops))
        .fold(1.0_f64, f64::max);
    let max_us = sides
        .iter()
        .flat_map(|(s, _)| s.by_rate.iter().map(|p| p.p99_us))
        .fold(1.0_f64, f64::max);
    let min_us = sides
        .iter()
        .flat_map(|(s, _)| s.by_rate.iter().map(|p| p.p50_us))
        .filter(|us| *us > 0.0)
        .fold(max_us, f64::min);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "4 KiB random read: latency against load (QD32, fixed offered rates)",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(
            0.0..max_iops * 1.05,
            ((min_us / 2.0).max(0.5)..max_us * 1.5).log_scale(),
        )
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("achieved IOPS")
        .y_desc("completion latency, µs (log)")
        .x_label_formatter(&|iops| format!("{iops:.0}"))
        .y_label_formatter(&|us| format!("{us:.0}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(draw_error)?;
    for (side, color) in sides {
        for (name, pick, lighter) in [
            ("p99", (|p: &Point| p.p99_us) as fn(&Point) -> f64, false),
            ("p50", |p: &Point| p.p50_us, true),
        ] {
            let points: Vec<(f64, f64)> = side
                .by_rate
                .iter()
                .map(|p| (p.achieved_iops, pick(p).max(0.5)))
                .collect();
            // p50 in a lighter shade of the side's colour.
            let style = if lighter {
                color.mix(0.45).stroke_width(2)
            } else {
                color.stroke_width(3)
            };
            chart
                .draw_series(LineSeries::new(points.clone(), style))
                .map_err(draw_error)?
                .label(format!("{} {name}", side.name))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
                )
                .map_err(draw_error)?;
        }
    }
    finish(chart, &root)
}

/// Draws the legend in the upper left and writes the image: how every benchmark plot ends.
pub(crate) fn finish<'a, X, Y>(
    mut chart: ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    root: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
) -> Result<(), PlotError>
where
    X: Ranged,
    Y: Ranged,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw_error)?;
    root.present().map_err(draw_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(iops: f64, p50: f64, p99: f64) -> FioResult {
        FioResult {
            iops,
            p50_us: Some(p50),
            p99_us: Some(p99),
            cpu_us_per_io: 0.0,
            busy_cpus: 0.0,
        }
    }

    fn side(name: &str, scale: f64) -> Side {
        Side {
            name: name.into(),
            max_iops: 1000.0 * scale,
            by_rate: [10.0, 50.0, 100.0]
                .iter()
                .map(|pct| {
                    point(
                        Some((pct * 10.0 * scale) as u64),
                        RATED_DEPTH,
                        vec![sample(pct * 10.0 * scale, 50.0 + pct, 100.0 + pct * 5.0)],
                    )
                })
                .collect(),
            by_depth: vec![point(None, 1, vec![sample(300.0, 40.0, 90.0)])],
        }
    }

    fn report() -> LatencyReport {
        LatencyReport {
            started_utc: "2026-12-01T00:00:00Z".into(),
            machine: crate::report::example_machine(),
            plan: Plan {
                rate_percents: vec![10, 50, 100],
                depths: vec![1],
                rounds: 1,
                runtime_s: 1,
            },
            volume_size_bytes: 64 << 20,
            fio_engine: "io_uring".into(),
            volume: side("volume", 0.8),
            raw: side("raw file", 1.0),
        }
    }

    #[test]
    fn medians_over_rounds() {
        let p = point(
            Some(100),
            32,
            vec![
                sample(90.0, 10.0, 30.0),
                sample(100.0, 20.0, 90.0),
                sample(95.0, 15.0, 40.0),
            ],
        );
        assert_eq!((p.achieved_iops, p.p50_us, p.p99_us), (95.0, 15.0, 40.0));
    }

    #[test]
    fn the_tables_list_every_point() {
        let text = markdown(&report(), "latency.png");
        assert!(text.contains("![p50 and p99 latency against achieved IOPS](latency.png)"));
        assert!(
            text.contains("| 50 % | 400 | 100 | 350 | 500 | 100 | 350 |"),
            "{text}"
        );
        assert!(
            text.contains("| 1 | 300 | 90 | 300 | 90 | 1.00 |"),
            "{text}"
        );
        assert!(text.contains("Maximum at QD32: volume 800 IOPS, raw file 1000 IOPS (0.80×)."));
    }

    #[test]
    fn the_plot_is_a_png() {
        if !Path::new(FONT).exists() {
            eprintln!("SKIP the_plot_is_a_png: no {FONT} (scripts/install-deps.sh installs it)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latency.png");
        plot(&report(), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert!(bytes.len() > 10_000, "a drawn plot, not an empty image");
    }
}
