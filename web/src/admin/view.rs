//! The dashboard's rendering, as plain functions of the [`Model`]: the token form, the device
//! grid (cards with online state, VLC state, playlist, snapshot thumbnail, last seen, command
//! buttons and the latest result), the command results, the alert feed and the usage charts.

use serde_json::Value;
use wasm_bindgen::JsCast;
use web_sys::HtmlInputElement;
use yew::prelude::*;

use super::{
    Ctl,
    model::{CommandRun, Device, Model, RunStatus, Sample, short_json},
};
use crate::chart::{LineChart, line_chart};

/// The built-in device commands (seed 003), with their button labels.
const COMMANDS: &[(&str, &str)] = &[
    ("vlc:play", "Play"),
    ("vlc:pause", "Pause"),
    ("vlc:stop", "Stop"),
    ("vlc:fullscreen", "Fullscreen"),
    ("vlc:snapshot", "Snapshot"),
];

pub fn token_form(set: Callback<Option<String>>) -> Html {
    let submit = Callback::from(move |e: SubmitEvent| {
        e.prevent_default();
        let input = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.get_element_by_id("admin-token"))
            .and_then(|el| el.dyn_into::<HtmlInputElement>().ok());
        let token = input.map(|i| i.value().trim().to_owned()).unwrap_or_default();
        if !token.is_empty() {
            set.emit(Some(token));
        }
    });
    html! {
        <section class="home card">
            <h1>{ "Device dashboard" }</h1>
            <p class="muted small">{ "Paste an admin token (" }<code>{ "unisono token --role admin …" }</code>{ "). It is kept in this browser." }</p>
            <form onsubmit={submit} class="row">
                <input id="admin-token" type="password" placeholder="Admin JWT" autocomplete="off" />
                <button id="admin-go" class="primary" type="submit">{ "Open" }</button>
            </form>
        </section>
    }
}

pub fn page(ctl: &Ctl, m: &Model, now: f64) -> Html {
    html! {
        <>
            <section class="card">
                <h2>{ format!("Devices ({}, {} online)", m.devices.len(), m.devices.iter().filter(|d| d.online).count()) }</h2>
                <div id="devices" class="grid">
                    { for m.devices.iter().map(|d| device(ctl, m, d, now)) }
                </div>
                if m.devices.is_empty() { <p class="muted">{ "No devices yet." }</p> }
            </section>
            <div class="cols">
                { runs(m, now) }
                { alerts(m, now) }
            </div>
            { stats(m, now) }
        </>
    }
}

/// A `<dl>` of `(term, class of the value, value)` rows.
fn facts(class: &'static str, rows: Vec<(&'static str, &'static str, String)>) -> Html {
    let rows = rows.into_iter().map(|(t, c, v)| html! { <><dt>{ t }</dt><dd class={c}>{ v }</dd></> });
    html! { <dl class={class}>{ for rows }</dl> }
}

/// `3 s ago`, `5 min ago`.
fn ago(now: f64, t: f64) -> String {
    if t <= 0.0 {
        return "never".into();
    }
    let s = ((now - t) / 1000.0).max(0.0);
    match s {
        s if s < 1.0 => "just now".into(),
        s if s < 60.0 => format!("{s:.0} s ago"),
        s if s < 3600.0 => format!("{:.0} min ago", s / 60.0),
        s => format!("{:.1} h ago", s / 3600.0),
    }
}

/// `m:ss` of seconds (VLC reports positions in seconds).
fn mmss(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

/// The VLC member of a state: `playing · 0:12 / 60:00 · vol 80 · clip.mp4`.
fn vlc_summary(state: &Value) -> String {
    let Some(vlc) = state.get("vlc") else { return "—".into() };
    if !vlc.is_object() {
        return short_json(vlc);
    }
    let num = |k: &str| vlc.get(k).and_then(Value::as_f64);
    let mut parts = vec![vlc.get("state").or_else(|| vlc.get("status")).map(short_json).unwrap_or_else(|| "?".into())];
    match (num("time"), num("length")) {
        (Some(t), Some(l)) if l > 0.0 => parts.push(format!("{} / {}", mmss(t), mmss(l))),
        (Some(t), _) => parts.push(mmss(t)),
        _ => {}
    }
    if let Some(v) = num("volume") {
        parts.push(format!("vol {v:.0}"));
    }
    if let Some(f) = ["title", "file", "filename", "currentItem"].iter().find_map(|k| vlc.get(*k)) {
        parts.push(short_json(f));
    }
    parts.join(" · ")
}

/// The active playlist (else the default one): `Lobby loop (p1) · 3/12`.
fn playlist_summary(state: &Value) -> String {
    let (pl, prefix) = match (state.get("activePlaylist"), state.get("defaultPlaylist")) {
        (Some(p), _) if !p.is_null() => (p, ""),
        (_, Some(p)) if !p.is_null() => (p, "default: "),
        _ => return "—".into(),
    };
    if !pl.is_object() {
        return format!("{prefix}{}", short_json(pl));
    }
    let id = pl.get("id").map(short_json);
    let name = pl.get("name").or_else(|| pl.get("title")).map(short_json);
    let mut s = match (name, id) {
        (Some(n), Some(i)) => format!("{n} ({i})"),
        (Some(x), None) | (None, Some(x)) => x,
        (None, None) => short_json(pl),
    };
    let count = pl.get("items").and_then(|i| i.as_u64().or_else(|| i.as_array().map(|a| a.len() as u64)));
    match (pl.get("index").and_then(Value::as_u64), count) {
        (Some(i), Some(n)) => s.push_str(&format!(" · {}/{n}", i + 1)),
        (None, Some(n)) => s.push_str(&format!(" · {n} items")),
        _ => {}
    }
    format!("{prefix}{s}")
}

fn status_text(s: &RunStatus) -> String {
    match s {
        RunStatus::Pending => "pending…".into(),
        RunStatus::Ok => "ok".into(),
        RunStatus::Error(c) => format!("error {c}"),
        RunStatus::Timeout(c) => format!("timeout {c}"),
    }
}

fn device(ctl: &Ctl, m: &Model, d: &Device, now: f64) -> Html {
    let last = m.last_run(&d.id);
    html! {
        <article class={classes!("device", (!d.online).then_some("away"))} data-id={d.id.clone()} data-online={d.online.to_string()}>
            <div class="thumbbox">
                if let Some(url) = &d.thumb {
                    <img class="thumb" src={url.clone()} alt={format!("snapshot of {}", d.label())} />
                } else {
                    <span class="muted small">{ "no snapshot" }</span>
                }
            </div>
            <div class="title">
                <span class={classes!("dot", d.online.then_some("on"))}></span>
                <strong class="name">{ d.label() }</strong>
                <span class="muted small">{ format!("{} · {}", d.id, if d.online { "online" } else { "offline" }) }</span>
            </div>
            { facts("facts", vec![
                ("VLC", "vlc", vlc_summary(&d.state)),
                ("Playlist", "playlist", playlist_summary(&d.state)),
                ("Last seen", "seen", if d.online { "now".into() } else { ago(now, d.last_seen) }),
                ("State rev", "rev", d.rev.to_string()),
            ]) }
            <div class="controls">
                { for COMMANDS.iter().map(|(cmd, label)| {
                    let (ctl, id) = (ctl.clone(), d.id.clone());
                    let click = Callback::from(move |_| ctl.command(&id, cmd));
                    html! { <button class="small" data-command={*cmd} disabled={!d.online} onclick={click}>{ *label }</button> }
                }) }
            </div>
            if let Some(r) = last {
                <div class="last-run small" data-status={r.status.as_str()}>
                    { format!("{}: {}", r.command, status_text(&r.status)) }
                </div>
            }
        </article>
    }
}

/// A titled list of `(kind, device, command, text)` rows, newest first: command results and
/// alerts alike (one renderer keeps the bundle small). `kind` is the row's class and
/// `data-kind`: a run's status, or an alert's kind.
fn feed(id: &'static str, title: &'static str, rows: Vec<(&'static str, &str, Option<&str>, String)>) -> Html {
    html! {
        <section class="card">
            <h2>{ title }</h2>
            <ol id={id} class="list feed">
                { for rows.into_iter().map(|(kind, device, command, text)| html! {
                    <li class={kind} data-kind={kind} data-device={device.to_owned()} data-command={command.map(str::to_owned)}>{ text }</li>
                }) }
            </ol>
        </section>
    }
}

fn runs(m: &Model, now: f64) -> Html {
    let rows = m.runs.iter().map(|r| {
        let text = format!("{} · {} → {}{}", status_text(&r.status), r.command, r.device_id, run_facts(r, now));
        (r.status.as_str(), r.device_id.as_str(), Some(r.command.as_str()), text)
    });
    feed("runs", "Command results", rows.collect())
}

/// ` · 1 attempt · {"playing":true} · 3 s ago`.
fn run_facts(r: &CommandRun, now: f64) -> String {
    let mut s = String::new();
    if let Some(a) = r.attempts {
        s.push_str(&format!(" · {a} attempt{}", if a == 1 { "" } else { "s" }));
    }
    if !r.detail.is_empty() {
        s.push_str(" · ");
        s.push_str(&r.detail);
    }
    s.push_str(" · ");
    s.push_str(&ago(now, r.started));
    s
}

fn alerts(m: &Model, now: f64) -> Html {
    let rows = m
        .alerts
        .iter()
        .map(|a| (a.kind.as_str(), a.device_id.as_str(), None, format!("{} · {}", a.text, ago(now, a.at))));
    feed("alerts", "Alerts", rows.collect())
}

fn stats(m: &Model, now: f64) -> Html {
    let totals = m.totals.clone().unwrap_or_default();
    let last = m.samples.back().copied();
    let fig = |f: fn(&Sample) -> f64| last.as_ref().map(|s| format!("{:.1}", f(s))).unwrap_or_else(|| "—".into());
    // The charts cover what has been sampled so far, between one and ten minutes.
    let span = m.samples.front().map(|s| now - s.at).unwrap_or(0.0).clamp(60_000.0, 600_000.0);
    let chart = |id: &'static str, title: &'static str, unit: &str, f: fn(&Sample) -> f64| {
        let points: Vec<(f64, f64)> = m.samples.iter().map(|s| (s.at, f(s))).collect();
        let max = points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
        let top = (max * 1.25).ceil().max(1.0);
        html! {
            <figure>
                <figcaption class="small muted">{ title }</figcaption>
                { line_chart(LineChart {
                    points: &points,
                    now,
                    span_ms: span,
                    y: (0.0, top),
                    band: None,
                    labels: (format!("{top:.0}{unit}"), "0".into()),
                    title,
                    id: Some(id),
                }) }
            </figure>
        }
    };
    html! {
        <section class="card" id="stats">
            <h2>{ "Usage" }</h2>
            { facts("stats", vec![
                ("devices", "stat-devices", totals.devices.to_string()),
                ("online", "stat-online", totals.online.to_string()),
                ("commands / min", "stat-commands", fig(|s| s.commands_per_min)),
                ("state updates / min", "stat-states", fig(|s| s.states_per_min)),
                ("commands (failed)", "stat-failed", format!("{} ({})", totals.commands, totals.commands_failed)),
                ("state updates", "stat-updates", totals.states.to_string()),
            ]) }
            <div class="charts">
                { chart("chart-commands", "commands per minute", "/min", |s| s.commands_per_min) }
                { chart("chart-states", "state updates per minute", "/min", |s| s.states_per_min) }
                { chart("chart-online", "connected devices", "", |s| s.online) }
            </div>
        </section>
    }
}
