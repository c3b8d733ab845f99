//! The pages, as plain functions of the current [`Ctx`]: Home (create or join), and Room (now
//! playing with a live progress bar, host controls, ready indicator, members with their drift,
//! the queue, and the sync panel). Everything shown is read from the shared client at render
//! time; actions are requests whose errors come back as notices.

use unisono::client::{RoomView, SyncStats};
use unisono_core::{Provider, Song};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{JsFuture, spawn_local};
use web_sys::{HtmlInputElement, HtmlSelectElement};
use yew::prelude::*;

use crate::{
    app::{Ctx, Route},
    chart, links,
};

fn input_value(e: &Event) -> String {
    e.target().and_then(|t| t.dyn_into::<HtmlInputElement>().ok()).map(|i| i.value()).unwrap_or_default()
}

fn bind(state: &UseStateHandle<String>) -> Callback<InputEvent> {
    let state = state.clone();
    Callback::from(move |e: InputEvent| state.set(input_value(&e)))
}

/// `m:ss` of a position in ms.
fn clock(ms: f64) -> String {
    let s = (ms.max(0.0) / 1000.0).floor() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

fn ms(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$} ms")).unwrap_or_else(|| "—".into())
}

pub fn home(ctx: &Ctx) -> Html {
    let create = {
        let ctx = ctx.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let name = ctx.name.trim().to_owned();
            let fut = ctx.client.create_room(None, (!name.is_empty()).then_some(name.as_str()));
            let (go, notify) = (ctx.go.clone(), ctx.notify.clone());
            spawn_local(async move {
                match fut.await {
                    Ok(v) => {
                        let code = js_sys::Reflect::get(&v, &"code".into()).ok().and_then(|c| c.as_string());
                        if let Some(code) = code {
                            go.emit(Route::Room(code));
                        }
                    }
                    Err(e) => notify.emit(format!("could not create a room: {e}")),
                }
            });
        })
    };
    let join = {
        let ctx = ctx.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let code = ctx.code.trim().to_uppercase();
            if !code.is_empty() {
                ctx.go.emit(Route::Room(code));
            }
        })
    };
    html! {
        <section class="home card">
            <h1>{ "Listen together, in sync" }</h1>
            <label>{ "Your name " }<input id="name" value={(*ctx.name).clone()} oninput={bind(&ctx.name)} placeholder="Guest" maxlength="64" /></label>
            <form onsubmit={create}><button id="create" type="submit">{ "Create a room" }</button></form>
            <form onsubmit={join} class="row">
                <input id="code" value={(*ctx.code).clone()} oninput={bind(&ctx.code)} placeholder="Room code" maxlength="6" />
                <button id="join" type="submit">{ "Join" }</button>
            </form>
        </section>
    }
}

pub fn room(ctx: &Ctx, code: &str) -> Html {
    let Some(room) = ctx.client.room() else {
        return html! { <section class="card"><p>{ format!("Joining {code}…") }</p></section> };
    };
    html! {
        <div class="room">
            { header(ctx, &room) }
            { now_playing(ctx, &room) }
            <div class="cols">
                { members(ctx, &room) }
                { queue(ctx, &room) }
            </div>
            { sync_panel(ctx) }
        </div>
    }
}

fn header(ctx: &Ctx, room: &RoomView) -> Html {
    let leave = {
        let ctx = ctx.clone();
        Callback::from(move |_| {
            ctx.run(ctx.client.leave_room());
            ctx.go.emit(Route::Home);
        })
    };
    html! {
        <section class="card head">
            <div>
                <span class="label">{ "Room " }</span><strong id="room-code">{ &room.info.code }</strong>
                if !room.info.name.is_empty() { <span class="muted">{ format!(" · {}", room.info.name) }</span> }
                if room.is_host() { <span class="badge">{ "host" }</span> }
            </div>
            <button onclick={leave}>{ "Leave" }</button>
        </section>
    }
}

fn now_playing(ctx: &Ctx, room: &RoomView) -> Html {
    let clock_v = &room.playback.clock;
    let now = ctx.client.server_now();
    let pos = clock_v.position_at(now);
    let dur = clock_v.duration();
    let can = room.can_control();
    let shown = ctx.drag.unwrap_or(pos);
    let pct = dur.map(|d| (shown / d * 100.0).clamp(0.0, 100.0)).unwrap_or(0.0);
    let playing = clock_v.is_playing;
    let status = if room.playback.awaiting_ready {
        let ready = room.members.iter().filter(|m| m.connected && m.ready).count();
        let connected = room.members.iter().filter(|m| m.connected).count();
        format!("waiting for members: {ready}/{connected} ready")
    } else if playing && now < clock_v.server_time {
        format!("starting in {:.0} ms", clock_v.server_time - now)
    } else if playing {
        "playing".into()
    } else {
        "paused".into()
    };
    let toggle = {
        let ctx = ctx.clone();
        Callback::from(move |_| if playing { ctx.run(ctx.client.pause()) } else { ctx.run(ctx.client.resume()) })
    };
    let next = {
        let ctx = ctx.clone();
        Callback::from(move |_| ctx.run(ctx.client.play_next()))
    };
    let drag = {
        let d = ctx.drag.clone();
        Callback::from(move |e: InputEvent| d.set(input_value(&e).parse().ok()))
    };
    let seek = {
        let ctx = ctx.clone();
        Callback::from(move |e: Event| {
            if let Ok(v) = input_value(&e).parse::<f64>() {
                ctx.run(ctx.client.seek(v));
            }
            ctx.drag.set(None);
        })
    };
    let rate = {
        let ctx = ctx.clone();
        Callback::from(move |e: Event| {
            let v = e.target().and_then(|t| t.dyn_into::<HtmlSelectElement>().ok()).map(|s| s.value());
            if let Some(r) = v.and_then(|v| v.parse::<f64>().ok()) {
                ctx.run(ctx.client.set_rate(r));
            }
        })
    };
    let blocked = ctx.sync.as_ref().is_some_and(|s| s.with_info(|i| i.blocked));
    let unblock = {
        let sync = ctx.sync.clone();
        Callback::from(move |_| {
            if let Some(s) = &sync {
                s.unblock();
            }
        })
    };
    let song = clock_v.song.as_ref();
    html! {
        <section class="card playing">
            <div class="title">
                if let Some(s) = song {
                    <strong id="song-title">{ if s.title.is_empty() { &s.id } else { &s.title } }</strong>
                    <span class="muted">{ format!(" · {}", provider_name(s.provider)) }</span>
                } else {
                    <span class="muted">{ "Nothing loaded — add a song to the queue" }</span>
                }
                <span id="status" class={classes!("status", playing.then_some("on"))}>{ status }</span>
            </div>
            if song.is_some_and(|s| s.provider == Provider::Spotify) {
                { spotify_panel(ctx) }
            }
            <div class="progress"><div class="fill" style={format!("width:{pct:.2}%")}></div></div>
            <div class="times"><span id="position">{ clock(shown) }</span><span>{ dur.map(clock).unwrap_or_else(|| "live".into()) }</span></div>
            if can && song.is_some() {
                <input id="seek" type="range" min="0" max={dur.unwrap_or(pos.max(1.0)).to_string()} step="100"
                       value={shown.to_string()} oninput={drag} onchange={seek} />
            }
            if can {
                <div class="controls">
                    <button id="play" onclick={toggle}>{ if playing { "Pause" } else { "Play" } }</button>
                    <button id="next" onclick={next}>{ "Next" }</button>
                    <label>{ "Speed " }
                        <select id="rate" onchange={rate}>
                            { for [0.5, 0.75, 1.0, 1.25, 1.5, 2.0].iter().map(|r| html! {
                                <option value={r.to_string()} selected={(*r - clock_v.rate).abs() < 1e-9}>{ format!("{r}×") }</option>
                            }) }
                        </select>
                    </label>
                </div>
            } else {
                <p class="muted small">{ format!("Speed {}× · only the host controls playback", clock_v.rate) }</p>
            }
            if blocked { <button class="primary" onclick={unblock}>{ "Click to enable audio" }</button> }
        </section>
    }
}

fn provider_name(p: Provider) -> &'static str {
    match p {
        Provider::Youtube => "YouTube",
        Provider::Spotify => "Spotify",
        Provider::Url => "URL",
    }
}

fn members(ctx: &Ctx, room: &RoomView) -> Html {
    let own = ctx.sync.as_ref().and_then(|s| s.with_info(|i| i.drift_ms));
    let host = room.is_host();
    html! {
        <section class="card">
            <h2>{ format!("Members ({})", room.member_count) }</h2>
            <ul id="members" class="list">
                { for room.members.iter().map(|m| {
                    let me = m.session_id == room.you;
                    let drift = if me { own.or(m.drift_ms) } else { m.drift_ms };
                    let transfer = {
                        let (ctx, id) = (ctx.clone(), m.session_id.clone());
                        Callback::from(move |_| ctx.run(ctx.client.transfer_host(&id)))
                    };
                    html! {
                        <li class={classes!((!m.connected).then_some("away"))}>
                            <span class={classes!("dot", m.connected.then_some("on"))}></span>
                            <span>{ &m.name }{ if me { " (you)" } else { "" } }</span>
                            if room.host.as_deref() == Some(m.session_id.as_str()) { <span class="badge">{ "host" }</span> }
                            <span class={classes!("ready", m.ready.then_some("on"))} title="ready">{ if m.ready { "ready" } else { "not ready" } }</span>
                            <span class="drift">{ drift.map(|d| format!("{d:+.1} ms")).unwrap_or_default() }</span>
                            if host && !me && m.connected { <button class="small" onclick={transfer}>{ "make host" }</button> }
                        </li>
                    }
                }) }
            </ul>
        </section>
    }
}

/// Reads a URL song's duration from its metadata (an unknown duration never ends or advances).
async fn probe_duration(url: String) -> f64 {
    let Ok(audio) = web_sys::HtmlAudioElement::new() else { return 0.0 };
    audio.set_preload("metadata");
    let p = js_sys::Promise::new(&mut |resolve, _| {
        audio.set_onloadedmetadata(Some(&resolve));
        audio.set_onerror(Some(&resolve));
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 4000);
        }
    });
    audio.set_src(&url);
    let _ = JsFuture::from(p).await;
    audio.set_onloadedmetadata(None);
    audio.set_onerror(None);
    let d = audio.duration();
    if d.is_finite() && d > 0.0 { (d * 1000.0).round() } else { 0.0 }
}

fn queue(ctx: &Ctx, room: &RoomView) -> Html {
    let add = {
        let ctx = ctx.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let Some(song) = links::song_from_link(&ctx.link) else { return };
            ctx.link.set(String::new());
            let (client, notify) = (ctx.client.clone(), ctx.notify.clone());
            spawn_local(async move {
                let song = if song.provider == Provider::Url {
                    Song { duration_ms: probe_duration(song.url.clone()).await, ..song }
                } else {
                    song
                };
                if let Err(e) = client.queue_add(song).await {
                    notify.emit(format!("could not add: {e}"));
                }
            });
        })
    };
    let can = room.can_control();
    let n = room.queue.len();
    html! {
        <section class="card">
            <h2>{ format!("Queue ({n})") }</h2>
            <form onsubmit={add} class="row">
                <input id="link" value={(*ctx.link).clone()} oninput={bind(&ctx.link)} placeholder="Audio URL, YouTube or Spotify link" />
                <button id="add" type="submit">{ "Add" }</button>
            </form>
            <ol id="queue" class="list">
                { for room.queue.iter().enumerate().map(|(i, item)| {
                    let mv = |to: usize| {
                        let (ctx, id) = (ctx.clone(), item.item_id.clone());
                        Callback::from(move |_| ctx.run(ctx.client.queue_move(&id, to)))
                    };
                    let remove = {
                        let (ctx, id) = (ctx.clone(), item.item_id.clone());
                        Callback::from(move |_| ctx.run(ctx.client.queue_remove(&id)))
                    };
                    let mine = item.added_by.as_deref() == Some(room.you.as_str());
                    html! {
                        <li>
                            <span class="grow">{ if item.song.title.is_empty() { &item.song.id } else { &item.song.title } }
                                <span class="muted">{ format!(" · {}{}", provider_name(item.song.provider),
                                    if item.song.duration_ms > 0.0 { format!(" · {}", clock(item.song.duration_ms)) } else { String::new() }) }</span></span>
                            if can && i > 0 { <button class="small" title="move up" onclick={mv(i - 1)}>{ "↑" }</button> }
                            if can && i + 1 < n { <button class="small" title="move down" onclick={mv(i + 1)}>{ "↓" }</button> }
                            if can || mine { <button class="small" title="remove" onclick={remove}>{ "✕" }</button> }
                        </li>
                    }
                }) }
            </ol>
        </section>
    }
}

fn sync_panel(ctx: &Ctx) -> Html {
    let SyncStats { offset, error_bound, rtt, min_rtt, samples, stable } = ctx.client.sync_stats();
    let now = ctx.client.server_now();
    let info = ctx.sync.as_ref().map(|s| s.info()).unwrap_or_default();
    let mode = format!("{:?}", info.mode).to_lowercase();
    // The estimate is against performance.now(); shown against this device's wall clock.
    let origin = web_sys::window().and_then(|w| w.performance()).map(|p| p.time_origin()).unwrap_or(0.0);
    html! {
        <section class="card sync">
            <h2>{ "Sync" }</h2>
            <dl class="stats">
                <dt>{ "clock offset" }</dt><dd id="offset">{ ms(offset.map(|o| o - origin), 1) }</dd>
                <dt>{ "error bound" }</dt><dd>{ error_bound.map(|e| format!("± {e:.1} ms")).unwrap_or_else(|| "—".into()) }</dd>
                <dt>{ "RTT" }</dt><dd>{ ms(rtt, 1) }{ min_rtt.map(|m| format!(" (min {m:.1})")).unwrap_or_default() }</dd>
                <dt>{ "samples" }</dt><dd>{ format!("{samples}{}", if stable { " · stable" } else { "" }) }</dd>
                <dt>{ "drift" }</dt><dd id="drift">{ info.drift_ms.map(|d| format!("{d:+.1} ms")).unwrap_or_else(|| "—".into()) }</dd>
                <dt>{ "correction" }</dt><dd id="mode">{ mode }{ format!(" · rate {:.3}", info.rate) }</dd>
                <dt>{ "seeks / rate changes" }</dt><dd>{ format!("{} / {}", info.seeks, info.rate_changes) }</dd>
            </dl>
            { chart::drift_chart(&info.history, now) }
        </section>
    }
}

/// A Spotify song plays in this page once the user gives a token (a Premium account's OAuth
/// token, scope `streaming`; `spotify.rs` keeps it in localStorage); without one the page
/// shows the position only.
fn spotify_panel(ctx: &Ctx) -> Html {
    let token = ctx.spotify_token.clone();
    if token.is_some() {
        let forget = Callback::from(move |_| {
            crate::spotify::save_token(None);
            token.set(None);
        });
        return html! {
            <p class="muted small">{ "Spotify plays in this page (Web Playback SDK). " }
                <button id="spotify-forget" class="link" onclick={forget}>{ "Forget token" }</button>
            </p>
        };
    }
    let save = Callback::from(move |e: SubmitEvent| {
        e.prevent_default();
        let value = web_sys::window()
            .and_then(|w| w.document())
            .and_then(|d| d.get_element_by_id("spotify-token"))
            .and_then(|el| el.dyn_into::<web_sys::HtmlInputElement>().ok())
            .map(|i| i.value().trim().to_owned())
            .filter(|v| !v.is_empty());
        if let Some(v) = value {
            crate::spotify::save_token(Some(&v));
            token.set(Some(v));
        }
    });
    html! {
        <form class="spotify" onsubmit={save}>
            <p class="muted small">{ "To play Spotify here, paste a Spotify Premium OAuth token (scope streaming); otherwise this page shows the position only." }</p>
            <input id="spotify-token" type="password" placeholder="Spotify token" autocomplete="off" />
            <button id="spotify-save" type="submit">{ "Play Spotify here" }</button>
        </form>
    }
}
