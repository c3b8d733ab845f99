//! Time-series charts as inline SVG: [`line_chart`] draws `(server time, value)` points of the
//! last `span_ms` as a polyline with a fixed y range, an optional shaded band and a zero axis.
//! The room's drift chart and the admin dashboard's usage charts are both this one function.

use yew::prelude::*;

const W: f64 = 600.0;
const H: f64 = 140.0;

/// One chart: what to draw and how to scale it.
pub struct LineChart<'a> {
    /// `(time, value)` points, oldest first; times on the same clock as `now`.
    pub points: &'a [(f64, f64)],
    pub now: f64,
    /// The x axis covers `[now − span_ms, now]`.
    pub span_ms: f64,
    /// The y axis range; values outside are clamped to it.
    pub y: (f64, f64),
    /// A shaded horizontal band (e.g. the drift dead band).
    pub band: Option<(f64, f64)>,
    /// Labels for the top and bottom of the y axis.
    pub labels: (String, String),
    /// Accessible description; also the element's `aria-label`.
    pub title: &'a str,
    pub id: Option<&'a str>,
}

pub fn line_chart(c: LineChart<'_>) -> Html {
    let (lo, hi) = c.y;
    let range = (hi - lo).max(f64::EPSILON);
    let y = |v: f64| 4.0 + (hi - v.clamp(lo, hi)) / range * (H - 8.0);
    let x = |t: f64| W - (c.now - t) / c.span_ms * W;
    let points: String = c.points.iter().map(|&(t, v)| format!("{:.1},{:.1} ", x(t), y(v))).collect();
    let band = c.band.map(|(a, b)| {
        let top = y(a.max(b));
        html! { <rect x="0" y={format!("{top:.1}")} width={W.to_string()} height={format!("{:.1}", y(a.min(b)) - top)} class="band" /> }
    });
    let axis = (lo < 0.0 && hi > 0.0).then(|| {
        let y0 = format!("{:.1}", y(0.0));
        html! { <line x1="0" x2={W.to_string()} y1={y0.clone()} y2={y0} class="axis" /> }
    });
    let half = format!("−{}", span_label(c.span_ms / 2.0));
    html! {
        <svg class="chart" id={c.id.map(str::to_owned)} viewBox={format!("0 0 {W} {H}")} preserveAspectRatio="none"
             role="img" aria-label={c.title.to_owned()}>
            { for band }
            { for axis }
            <polyline points={points} class="line" />
            <text x="4" y="12">{ c.labels.0 }</text>
            <text x="4" y={(H - 4.0).to_string()}>{ c.labels.1 }</text>
            <text x={(W - 4.0).to_string()} y={(H - 4.0).to_string()} text-anchor="end">{ "now" }</text>
            <text x={(W / 2.0).to_string()} y={(H - 4.0).to_string()} text-anchor="middle">{ half }</text>
        </svg>
    }
}

/// `30 s`, `5 min`: a span for an axis label.
fn span_label(ms: f64) -> String {
    if ms >= 120_000.0 { format!("{:.0} min", ms / 60_000.0) } else { format!("{:.0} s", ms / 1000.0) }
}

/// The room's drift over the last minute: y scaled to the largest drift (at least ±20 ms), the
/// ±10 ms dead band shaded.
pub fn drift_chart(history: &[(f64, f64)], now: f64) -> Html {
    let max = history.iter().map(|(_, d)| d.abs()).fold(20.0_f64, f64::max).min(2000.0);
    line_chart(LineChart {
        points: history,
        now,
        span_ms: 60_000.0,
        y: (-max, max),
        band: Some((-10.0, 10.0)),
        labels: (format!("+{max:.0} ms"), format!("−{max:.0} ms")),
        title: "drift over the last minute",
        id: None,
    })
}
