//! The plot: average latency against TPS per side, one labelled point per client count.

use super::PgbenchReport;
use crate::latency::draw_error;
use plotters::prelude::*;
use std::path::Path;

/// Draws average latency against TPS for both sides into a PNG.
pub fn plot(report: &PgbenchReport, path: &Path) -> Result<(), crate::latency::PlotError> {
    crate::latency::register_font()?;
    let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let sides = [(&report.volume, BLUE), (&report.raw, RED)];
    let max_tps = sides
        .iter()
        .flat_map(|(s, _)| s.points.iter().map(|p| p.tps))
        .fold(1.0_f64, f64::max);
    let max_ms = sides
        .iter()
        .flat_map(|(s, _)| s.points.iter().map(|p| p.latency_ms))
        .fold(0.1_f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "pgbench (TPC-B-like), data 4× the server's memory: latency against throughput",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(0.0..max_tps * 1.1, 0.0..max_ms * 1.15)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("transactions per second")
        .y_desc("average latency, ms")
        .x_label_formatter(&|tps| format!("{tps:.0}"))
        .y_label_formatter(&|ms| format!("{ms:.1}"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(draw_error)?;
    for (side, color) in sides {
        let points: Vec<(f64, f64)> = side.points.iter().map(|p| (p.tps, p.latency_ms)).collect();
        let style = color.stroke_width(3);
        chart
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(draw_error)?
            .label(side.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        chart
            .draw_series(side.points.iter().map(|p| {
                EmptyElement::at((p.tps, p.latency_ms))
                    + Circle::new((0, 0), 4, color.filled())
                    + Text::new(
                        format!("{} clients", p.clients),
                        (6, -16),
                        ("sans-serif", 13),
                    )
            }))
            .map_err(draw_error)?;
    }
    crate::latency::finish(chart, &root)
}
