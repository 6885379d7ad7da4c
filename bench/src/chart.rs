//! PNG charts of a run: throughput over time, and latency percentiles over time.
//!
//! Text needs a TrueType font, read at run time (Debian's `fonts-dejavu-core` by default,
//! or `--font`); without one, charts are skipped with a message and the JSON stays whole.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::report::{Point, RunReport};

/// Fonts tried when none is given.
pub const DEFAULT_FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

const SIZE: (u32, u32) = (1000, 480);
const FONT: &str = "sans-serif";

/// Registers the first readable font of `given` or [`DEFAULT_FONTS`]; returns its path.
///
/// # Errors
/// A message if no font could be read.
pub fn load_font(given: Option<&Path>) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match given {
        Some(path) => vec![path.to_owned()],
        None => DEFAULT_FONTS.iter().map(PathBuf::from).collect(),
    };
    for path in candidates {
        let Ok(bytes) = std::fs::read(&path) else { continue };
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font(FONT, FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a usable font", path.display()))?;
        return Ok(path);
    }
    Err(match given {
        Some(path) => format!("cannot read the font {}", path.display()),
        None => format!(
            "no font found at {}; install fonts-dejavu-core or pass --font",
            DEFAULT_FONTS.join(", ")
        ),
    })
}

type ChartResult = Result<(), Box<dyn std::error::Error>>;

/// Writes `<stem>-throughput.png` and `<stem>-latency.png` into `dir`; returns their paths.
///
/// # Errors
/// A drawing or file error.
pub fn write(run: &RunReport, dir: &Path, stem: &str) -> Result<Vec<PathBuf>, String> {
    let throughput = dir.join(format!("{stem}-throughput.png"));
    let latency = dir.join(format!("{stem}-latency.png"));
    throughput_chart(run, &throughput).map_err(|e| format!("{}: {e}", throughput.display()))?;
    latency_chart(run, &latency).map_err(|e| format!("{}: {e}", latency.display()))?;
    Ok(vec![throughput, latency])
}

/// One line of a chart: its name, colour and points.
type Line = (&'static str, RGBColor, Vec<(f64, f64)>);

fn throughput_chart(run: &RunReport, path: &Path) -> ChartResult {
    let series = |f: fn(&Point) -> u64| -> Vec<(f64, f64)> {
        run.timeline.iter().map(|p| (p.t_s as f64, f(p) as f64)).collect()
    };
    let title = format!("{} {}: operations per second", run.target, run.workload);
    let lines =
        vec![("completed", BLUE, series(|p| p.ops)), ("acknowledged", GREEN, series(|p| p.ok))];
    line_chart(path, &title, "operations/s", lines)
}

fn latency_chart(run: &RunReport, path: &Path) -> ChartResult {
    let series = |f: fn(&Point) -> f64| -> Vec<(f64, f64)> {
        run.timeline.iter().map(|p| (p.t_s as f64, f(p))).collect()
    };
    let title = format!("{} {}: request latency per second (ms)", run.target, run.workload);
    let lines = vec![
        ("p50", GREEN, series(|p| p.p50_ms)),
        ("p99", BLUE, series(|p| p.p99_ms)),
        ("p99.9", RED, series(|p| p.p999_ms)),
    ];
    line_chart(path, &title, "ms", lines)
}

/// Lines over the seconds of a run, y from 0 to 10% above the highest point.
fn line_chart(path: &Path, title: &str, y_desc: &str, lines: Vec<Line>) -> ChartResult {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let points = || lines.iter().flat_map(|(_, _, points)| points.iter());
    let x_max = points().map(|p| p.0).fold(1.0_f64, f64::max);
    let y_max = points().map(|p| p.1).fold(0.0_f64, f64::max).max(0.1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max * 1.1)?;
    chart.configure_mesh().x_desc("seconds").y_desc(y_desc).label_style((FONT, 14)).draw()?;
    for (name, color, points) in lines {
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
