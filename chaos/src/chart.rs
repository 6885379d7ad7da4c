//! The PNG timeline of a run: acknowledged transfers per second, with each fault's span
//! shaded and named. Text needs a TrueType font read at run time (Debian's
//! `fonts-dejavu-core`); without one the chart is skipped with a message.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::run::RunReport;

/// Where the font is looked for.
pub const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];
const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (1000, 420);

/// Registers the first readable font of [`FONTS`].
///
/// # Errors
/// None could be read.
pub fn load_font() -> Result<(), String> {
    for path in FONTS {
        if let Ok(bytes) = std::fs::read(path) {
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            return register_font(FONT, FontStyle::Normal, bytes)
                .map_err(|_| format!("{path} is not a usable font"));
        }
    }
    Err(format!("no font at {}; install fonts-dejavu-core for the timeline", FONTS.join(", ")))
}

/// Writes the timeline of `run` to `path`.
///
/// # Errors
/// A drawing or file error, as text.
pub fn timeline(run: &RunReport, path: &Path) -> Result<(), String> {
    draw(run, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn draw(run: &RunReport, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let points: Vec<(f64, f64)> = run
        .ok_per_second
        .iter()
        .zip(0_u32..)
        .map(|(&n, s)| (f64::from(s) + 0.5, n as f64))
        .collect();
    let x_max = (points.len() as f64).max(run.duration_s).max(1.0);
    let y_max = points.iter().map(|p| p.1).fold(1.0_f64, f64::max) * 1.15;
    let verdict = if run.passed { "PASS" } else { "FAIL" };
    let title =
        format!("{} (seed {}): acknowledged transfers/s — {verdict}", run.scenario, run.seed);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("transfers/s")
        .label_style((FONT, 13))
        .draw()?;
    for fault in &run.faults {
        let (from, to) = (fault.at_ms as f64 / 1000.0, fault.healed_ms as f64 / 1000.0);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(from, 0.0), (to, y_max)],
            RED.mix(0.15).filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            fault.nemesis.name(),
            (from, y_max * 0.97),
            (FONT, 12).into_font().color(&RED),
        )))?;
    }
    chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2)))?;
    root.present()?;
    Ok(())
}
