//! The benchmark's plots, as SVG committed beside its results: the latency distributions
//! (share of requests answered within a time, log scale) and throughput against the number of
//! concurrent clients.

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn ms(duration: &Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// One line per series: x the latency in ms (log), y the share of samples at or below it.
pub fn latency_cdf(path: &Path, series: &[(String, Vec<Duration>)]) -> anyhow::Result<()> {
    let all = series
        .iter()
        .flat_map(|(_, samples)| samples.iter().map(ms));
    let (low, high) = all.fold((f64::MAX, 0.0_f64), |(low, high), x| {
        (low.min(x), high.max(x))
    });
    let (low, high) = (low.max(0.01) * 0.8, high.max(0.1) * 1.25);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Round trip, submit to final state (sequential)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((low..high).log_scale(), 0.0..1.0_f64)?;
    chart
        .configure_mesh()
        .x_desc("milliseconds (log scale)")
        .y_desc("share of requests")
        .draw()?;
    for (i, (name, samples)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let n = samples.len() as f64;
        let points = samples
            .iter()
            .enumerate()
            .map(|(rank, sample)| (ms(sample), (rank + 1) as f64 / n));
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// One line per series: x the concurrent clients (log 2), y runs per second; horizontal
/// reference lines for anchors measured at their own best.
pub fn throughput(
    path: &Path,
    series: &[(String, Vec<(usize, f64)>)],
    references: &[(String, f64)],
) -> anyhow::Result<()> {
    let max_clients = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(clients, _)| *clients))
        .max()
        .unwrap_or(1)
        .max(2) as f64;
    let top = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|(_, rate)| *rate))
        .chain(references.iter().map(|(_, rate)| *rate))
        .fold(1.0_f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Dispatch throughput against concurrent clients",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1.0..max_clients).log_scale(), 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients (log scale)")
        .y_desc("runs per second")
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> = points
            .iter()
            .map(|(clients, rate)| (*clients as f64, *rate))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart.draw_series(
            points
                .iter()
                .map(|point| Circle::new(*point, 3, colour.filled())),
        )?;
    }
    for (i, (name, rate)) in references.iter().enumerate() {
        let colour = COLOURS[(series.len() + i) % COLOURS.len()];
        let style = ShapeStyle::from(colour).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(
                [(1.0, *rate), (max_clients, *rate)],
                6,
                4,
                style,
            ))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
