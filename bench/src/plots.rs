//! SVG plots of a report (`plotters`, SVG backend only): latency against drive
//! count, renewal capacity, and the quorum tail CDF.

use std::path::Path;

use plotters::prelude::*;

use crate::common::{BenchError, Side};
use crate::report::Report;

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Other(format!("plot: {e}"))
}

fn color(side: Side) -> RGBColor {
    match side {
        Side::EngineSocket => RGBColor(31, 119, 180),
        Side::EngineInProc => RGBColor(44, 160, 44),
        Side::Baseline => RGBColor(214, 39, 40),
    }
}

const SIDES: [Side; 3] = [Side::EngineSocket, Side::EngineInProc, Side::Baseline];

/// Writes every plot the report has data for into `dir`.
pub fn write(r: &Report, dir: &Path) -> Result<Vec<String>, BenchError> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    if !r.latency.is_empty() {
        let p = dir.join("latency_vs_drives.svg");
        latency(r, &p)?;
        out.push(p.display().to_string());
    }
    if !r.renewal.is_empty() {
        let p = dir.join("renewal_capacity.svg");
        renewal(r, &p)?;
        out.push(p.display().to_string());
    }
    if !r.quorum.is_empty() {
        let p = dir.join("tail_cdf.svg");
        tail(r, &p)?;
        out.push(p.display().to_string());
    }
    Ok(out)
}

fn latency(r: &Report, path: &Path) -> Result<(), BenchError> {
    let root = SVGBackend::new(path, (1500, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let models = ["zero", "fixed", "tail"];
    let panels = root.split_evenly((1, models.len()));
    let max_n = r.latency.iter().map(|x| x.drives).max().unwrap_or(8) as f64;
    for (panel, model) in panels.iter().zip(models) {
        let rows: Vec<_> = r
            .latency
            .iter()
            .filter(|x| x.model == model && x.mode == "EX")
            .collect();
        if rows.is_empty() {
            continue;
        }
        let ymax = rows
            .iter()
            .map(|x| x.lock_unlock.p99_us)
            .fold(10.0, f64::max)
            * 2.0;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("EX lock+unlock, {model} latency"),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d((1f64..max_n).log_scale(), (1f64..ymax).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("drives per lock")
            .y_desc("µs (solid p50, thin p99)")
            .draw()
            .map_err(err)?;
        for side in SIDES {
            let pts: Vec<(f64, f64, f64)> = rows
                .iter()
                .filter(|x| x.side == side)
                .map(|x| (x.drives as f64, x.lock_unlock.p50_us, x.lock_unlock.p99_us))
                .collect();
            let c = color(side);
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|p| (p.0, p.1)),
                    c.stroke_width(2),
                ))
                .map_err(err)?
                .label(side.name())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|p| (p.0, p.2)),
                    c.stroke_width(1),
                ))
                .map_err(err)?;
            chart
                .draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 3, c.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}

fn renewal(r: &Report, path: &Path) -> Result<(), BenchError> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let rows: Vec<_> = r.renewal.iter().filter(|x| x.model == "zero").collect();
    let max_locks = rows.iter().map(|x| x.locks).max().unwrap_or(1000) as f64;
    let ymax = rows.iter().map(|x| x.cpu_share * 100.0).fold(1.0, f64::max) * 2.0;
    let ymin = rows
        .iter()
        .map(|x| x.cpu_share * 100.0)
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min)
        .min(1.0)
        / 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Renewal: host CPU share (% of one core), 8 drives, zero latency",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (50f64..max_locks * 2.0).log_scale(),
            (ymin.max(1e-4)..ymax).log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("locks held")
        .y_desc("% of one core (solid 1 s cadence, thin 10 s)")
        .draw()
        .map_err(err)?;
    for side in SIDES {
        let c = color(side);
        let mut cadences: Vec<f64> = rows
            .iter()
            .filter(|x| x.side == side)
            .map(|x| x.cadence_s)
            .collect();
        cadences.sort_by(|a, b| a.total_cmp(b));
        cadences.dedup();
        for (i, cad) in cadences.iter().enumerate() {
            let pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|x| x.side == side && x.cadence_s == *cad)
                .map(|x| (x.locks as f64, (x.cpu_share * 100.0).max(1e-4)))
                .collect();
            let width = if i == 0 { 2 } else { 1 };
            let s = chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(width)))
                .map_err(err)?;
            if i == 0 {
                s.label(side.name()).legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2))
                });
            }
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))
                .map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

fn tail(r: &Report, path: &Path) -> Result<(), BenchError> {
    let Some(q) = r
        .quorum
        .iter()
        .find(|q| q.drives == 8)
        .or_else(|| r.quorum.last())
    else {
        return Ok(());
    };
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let xmax = q
        .cdfs
        .iter()
        .flat_map(|(_, _, pts)| pts.iter().map(|p| p.0))
        .fold(100.0, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Lock latency CDF, {} drives, heavy-tail model ({})",
                q.drives, q.model
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d((5f64..xmax).log_scale(), 0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("µs")
        .y_desc("fraction of locks")
        .draw()
        .map_err(err)?;
    let palette = [
        RGBColor(0, 0, 0),
        RGBColor(148, 103, 189),
        color(Side::EngineSocket),
        color(Side::EngineInProc),
        color(Side::Baseline),
    ];
    for ((_, name, pts), c) in q.cdfs.iter().zip(palette) {
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (p.0.max(5.0), p.1)),
                c.stroke_width(2),
            ))
            .map_err(err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}
