//! PNG line charts (plotters, bitmap backend) with an embedded font, so no system fonts are needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::BenchError;

/// One named line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart to draw.
#[derive(Debug, Clone)]
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: Vec<Series>,
    /// Logarithmic y axis (latencies spanning orders of magnitude).
    pub log_y: bool,
    /// Moments to mark with thin vertical lines (e.g. hot swaps), all under one legend entry.
    pub markers: Markers,
}

/// Vertical marker lines of a chart.
#[derive(Debug, Clone, Default)]
pub struct Markers {
    pub label: String,
    pub x: Vec<f64>,
}

const FONT: &str = "sans-serif";
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // Hack (MIT/OFL, from the epaint_default_fonts crate): always available, no system fonts.
        if plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            epaint_default_fonts::HACK_REGULAR,
        )
        .is_err()
        {
            tracing::warn!("embedded plot font rejected; plot text may be missing");
        }
    });
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> BenchError {
    BenchError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn bounds(chart: &Chart<'_>) -> ((f64, f64), (f64, f64)) {
    let points = chart.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    if x0 == x1 {
        x1 = x0 + 1.0;
    }
    if chart.log_y {
        let lo = y0.max(1e-3);
        let hi = y1.max(lo * 10.0);
        ((x0, x1), (lo / 1.5, hi * 1.5))
    } else {
        let hi = if y1 <= 0.0 { 1.0 } else { y1 * 1.1 };
        ((x0, x1), (y0.min(0.0), hi))
    }
}

/// Draws `chart` into a 1000×600 PNG at `path`.
pub fn draw(path: &Path, chart: &Chart<'_>) -> Result<(), BenchError> {
    register_font();
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let ((x0, x1), (y0, y1)) = bounds(chart);
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(chart.title, (FONT, 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80);
    macro_rules! finish {
        ($ctx:expr) => {{
            let mut ctx = $ctx;
            ctx.configure_mesh()
                .x_desc(chart.x_label)
                .y_desc(chart.y_label)
                .label_style((FONT, 14))
                .draw()
                .map_err(|e| plot_err(path, e))?;
            for (i, series) in chart.series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let points: Vec<(f64, f64)> = series
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite() && (!chart.log_y || *y > 0.0))
                    .collect();
                ctx.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                    .map_err(|e| plot_err(path, e))?
                    .label(series.name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                ctx.draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color.filled())),
                )
                .map_err(|e| plot_err(path, e))?;
            }
            if !chart.markers.x.is_empty() {
                let gray = RGBColor(200, 30, 30);
                let lines: Vec<PathElement<(f64, f64)>> = chart
                    .markers
                    .x
                    .iter()
                    .map(|&x| PathElement::new(vec![(x, y0), (x, y1)], gray.stroke_width(2)))
                    .collect();
                ctx.draw_series(lines)
                    .map_err(|e| plot_err(path, e))?
                    .label(chart.markers.label.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], gray.stroke_width(2))
                    });
            }
            ctx.configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font((FONT, 14))
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(|e| plot_err(path, e))?;
        }};
    }
    if chart.log_y {
        finish!(builder
            .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
            .map_err(|e| plot_err(path, e))?);
    } else {
        finish!(builder
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| plot_err(path, e))?);
    }
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = std::fs::read(path).expect("png written");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        let w = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        let h = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
        (w, h)
    }

    #[test]
    fn draws_linear_and_log_charts() {
        let dir = tempfile::tempdir().expect("temp dir");
        for log_y in [false, true] {
            let path = dir.path().join(format!("chart-{log_y}.png"));
            let chart = Chart {
                title: "latency",
                x_label: "seconds",
                y_label: "µs",
                series: vec![
                    Series {
                        name: "p50".into(),
                        points: vec![(0.0, 10.0), (1.0, 12.0), (2.0, 11.0)],
                    },
                    Series {
                        name: "p99".into(),
                        points: vec![(0.0, 100.0), (1.0, 300.0), (2.0, f64::NAN)],
                    },
                ],
                log_y,
                markers: Markers {
                    label: "swap".into(),
                    x: vec![0.5, 1.5],
                },
            };
            draw(&path, &chart).expect("draw");
            assert_eq!(png_size(&path), (1000, 600));
        }
    }

    #[test]
    fn empty_and_single_point_charts_render() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("empty.png");
        let chart = Chart {
            title: "nothing",
            x_label: "x",
            y_label: "y",
            series: vec![Series {
                name: "one".into(),
                points: vec![(3.0, 0.0)],
            }],
            log_y: false,
            markers: Markers::default(),
        };
        draw(&path, &chart).expect("draw");
        assert_eq!(png_size(&path), (1000, 600));
    }
}
