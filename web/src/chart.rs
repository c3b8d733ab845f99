//! The drift chart: the last minute of `(server time, drift ms)` as an inline SVG polyline, with
//! the y axis scaled to the largest drift (at least ±20 ms) and the dead band shaded.

use std::collections::VecDeque;

use yew::prelude::*;

const W: f64 = 600.0;
const H: f64 = 140.0;
const SPAN_MS: f64 = 60_000.0;

pub fn drift_chart(history: &VecDeque<(f64, f64)>, now: f64) -> Html {
    let max = history.iter().map(|(_, d)| d.abs()).fold(20.0_f64, f64::max).min(2000.0);
    let y = |d: f64| H / 2.0 - (d.clamp(-max, max) / max) * (H / 2.0 - 4.0);
    let points: String =
        history.iter().map(|(t, d)| format!("{:.1},{:.1} ", W - (now - t) / SPAN_MS * W, y(*d))).collect();
    let band_top = y(10.0);
    let band_h = y(-10.0) - band_top;
    html! {
        <svg class="chart" viewBox={format!("0 0 {W} {H}")} preserveAspectRatio="none" role="img"
             aria-label="drift over the last minute">
            <rect x="0" y={format!("{band_top:.1}")} width={W.to_string()} height={format!("{band_h:.1}")} class="band" />
            <line x1="0" x2={W.to_string()} y1={(H / 2.0).to_string()} y2={(H / 2.0).to_string()} class="axis" />
            <polyline points={points} class="line" />
            <text x="4" y="12">{ format!("+{max:.0} ms") }</text>
            <text x="4" y={(H - 4.0).to_string()}>{ format!("−{max:.0} ms") }</text>
            <text x={(W - 4.0).to_string()} y={(H - 4.0).to_string()} text-anchor="end">{ "now" }</text>
            <text x={(W / 2.0).to_string()} y={(H - 4.0).to_string()} text-anchor="middle">{ "−30 s" }</text>
        </svg>
    }
}
