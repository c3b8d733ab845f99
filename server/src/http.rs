//! HTTP routes: `/ws` (upgrade to the WebSocket edge), `/healthz`, `/metrics` and the web app.

use std::{path::PathBuf, sync::Arc};

use serde::Deserialize;
use warp::{Filter, Reply, http::StatusCode};

use crate::{engine::Engine, metrics::METRICS, ws::WsConfig};

/// The peer address of the connection a request came on (set by the accept loop).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

#[derive(Debug, Deserialize)]
struct WsQuery {
    resume: Option<String>,
}

/// Shown at `/` when no built web app is found.
const PLACEHOLDER: &str = "<!doctype html><meta charset=utf-8><title>Unisono</title>\
<h1>Unisono</h1><p>The server is running. Connect a client to <code>/ws</code>; see \
<code>docs/protocol.md</code>. Build the web app to serve it here.</p>";

/// Every route of the server.
pub fn routes(
    engine: Engine,
    ws: Arc<WsConfig>,
    web_dir: PathBuf,
) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone + Send + Sync + 'static {
    let with_engine = {
        let engine = engine.clone();
        warp::any().map(move || engine.clone())
    };
    let max = ws.max_frame_bytes;
    let ws_route = warp::path("ws")
        .and(warp::path::end())
        .and(warp::query::<WsQuery>())
        .and(warp::ws())
        .and(warp::ext::optional::<Peer>())
        .and(with_engine.clone())
        .map(move |q: WsQuery, upgrade: warp::ws::Ws, peer: Option<Peer>, engine: Engine| {
            let cfg = ws.clone();
            // Tungstenite enforces the limit while reading, before a huge frame is buffered;
            // the edge then closes with 1009.
            upgrade
                .max_message_size(max)
                .max_frame_size(max)
                .on_upgrade(move |socket| crate::ws::serve(socket, q.resume, peer.map(|p| p.0.ip()), engine, cfg))
        });

    let healthz = warp::path("healthz").and(warp::path::end()).and(with_engine).then(|engine: Engine| async move {
        let ok = engine.store().ping().await.is_ok();
        let body = serde_json::json!({
            "status": if ok { "ok" } else { "degraded" },
            "store": engine.store().backend(),
            "rooms": engine.room_count(),
            "sessions": engine.sessions().len(),
        });
        let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        warp::reply::with_status(warp::reply::json(&body), status)
    });

    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .map(|| warp::reply::with_header(METRICS.render(), "content-type", "text/plain; version=0.0.4"));

    let index = web_dir.join("index.html");
    let has_web = index.is_file();
    let static_files = warp::fs::dir(web_dir);
    // Deep links such as `/r/CODE` load the app, which routes on the client.
    let spa = warp::get().and(warp::path("r")).and(warp::fs::file(index));
    let placeholder = warp::get().and(warp::path::end()).map(|| warp::reply::html(PLACEHOLDER));

    let app = warp::get()
        .and(warp::any().and_then(move || async move { if has_web { Ok(()) } else { Err(warp::reject::not_found()) } }))
        .untuple_one()
        .and(static_files.or(spa))
        .map(|r| Box::new(r) as Box<dyn Reply>)
        .or(placeholder.map(|r| Box::new(r) as Box<dyn Reply>))
        .unify();

    ws_route
        .map(|r| Box::new(r) as Box<dyn Reply>)
        .or(healthz.map(|r| Box::new(r) as Box<dyn Reply>))
        .unify()
        .or(metrics.map(|r| Box::new(r) as Box<dyn Reply>))
        .unify()
        .or(app)
        .unify()
        .recover(|_rej: warp::Rejection| async move {
            let body = serde_json::json!({ "error": { "code": "NOT_FOUND", "message": "no such route" } });
            Ok::<_, std::convert::Infallible>(Box::new(warp::reply::with_status(
                warp::reply::json(&body),
                StatusCode::NOT_FOUND,
            )) as Box<dyn Reply>)
        })
}
