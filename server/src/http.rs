//! HTTP routes (warp): `/api` ([`crate::api`]), `/healthz`, `/metrics` and the web app. `/ws` upgrades are taken by
//! the accept loop before warp (see `ws/mod.rs`).

use std::path::PathBuf;

use warp::{Filter, Reply, http::StatusCode};

use crate::{engine::Engine, metrics::METRICS};

/// Shown at `/` when no built web app is found.
const PLACEHOLDER: &str = "<!doctype html><meta charset=utf-8><title>Unisono</title>\
<h1>Unisono</h1><p>The server is running. Connect a client to <code>/ws</code>; see \
<code>docs/protocol.md</code>. Build the web app to serve it here.</p>";

/// Every route of the server.
pub fn routes(
    engine: Engine,
    web_dir: PathBuf,
    api_keys: std::sync::Arc<crate::api::ApiKeys>,
    max_body: u64,
) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone + Send + Sync + 'static {
    let api = crate::api::routes(engine.clone(), api_keys, max_body);
    let with_engine = {
        let engine = engine.clone();
        warp::any().map(move || engine.clone())
    };
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
    // Deep links such as `/r/CODE`, and the admin dashboard `/admin`, load the app, which
    // routes on the client.
    let admin = warp::path("admin").and(warp::path::end()).and(warp::fs::file(index.clone()));
    let spa = warp::get().and(warp::path("r")).and(warp::fs::file(index)).or(admin);
    let placeholder = warp::get().and(warp::path::end()).map(|| warp::reply::html(PLACEHOLDER));

    let app = warp::get()
        .and(warp::any().and_then(move || async move { if has_web { Ok(()) } else { Err(warp::reject::not_found()) } }))
        .untuple_one()
        .and(static_files.or(spa))
        .map(|r| Box::new(r) as Box<dyn Reply>)
        .or(placeholder.map(|r| Box::new(r) as Box<dyn Reply>))
        .unify();

    api.map(|r| Box::new(r) as Box<dyn Reply>)
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
