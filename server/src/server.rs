//! Process wiring: open the store, start the engine, accept connections, shut down gracefully.

use std::{convert::Infallible, sync::Arc};

use anyhow::Context;
use futures_util::future::Either;
use hyper::server::conn::http1;
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use tokio::net::TcpListener;
use tower::Service;
use tower_layer::Layer;

use crate::{
    auth::Auth,
    bus::LocalBus,
    config::Config,
    edge::PeerAddr,
    engine::{Engine, EngineConfig, Parts, directory::LocalDirectory},
    sio::SioConfig,
    store::Store,
    ws::WsConfig,
};

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let url = config.database_url();
    if config.redis_url.is_some() && !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        anyhow::bail!(
            "--redis-url needs a shared database: a cluster over SQLite would give each node its own rooms \
             (use --database-url postgres://…)"
        );
    }
    // Bound first: the port is known (`--listen …:0`) before the node announces its address;
    // connections wait in the backlog until the engine is up.
    let listener = bind(config.listen, config.listen_backlog).with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let store =
        Store::open(&url, config.commit_delay()).await.with_context(|| format!("opening the database {url}"))?;
    let node_id = config
        .node_id()
        .with_context(|| format!("reading or creating the node id in {}", config.data_dir.display()))?;
    let node: Arc<str> = node_id.as_str().into();
    let cluster = match &config.redis_url {
        Some(redis_url) => Some(
            crate::cluster::Cluster::connect(crate::cluster::ClusterConfig {
                redis_url: redis_url.clone(),
                prefix: config.redis_prefix.clone(),
                node_id: node.clone(),
                lease: std::time::Duration::from_millis(config.room_lease_ms.max(100)),
                request_timeout: std::time::Duration::from_millis(config.cluster_timeout_ms.max(10)),
                advertise: addr.to_string(),
            })
            .await
            .with_context(|| format!("joining the cluster through {redis_url}"))?,
        ),
        None => None,
    };
    let redis_directory = cluster.as_ref().map(|c| crate::cluster::directory::RedisDirectory::new(c.clone()));
    let (bus, directory): (Arc<dyn crate::bus::Bus>, Arc<dyn crate::engine::directory::Directory>) =
        match (&cluster, &redis_directory) {
            (Some(c), Some(d)) => (crate::bus::redis::RedisBus::start(c.clone()), d.clone()),
            _ => (Arc::new(LocalBus::new()), Arc::new(LocalDirectory::default())),
        };
    let engine_config = EngineConfig {
        node_id: node.clone(),
        limits: config.room_limits(),
        max_rooms: config.max_rooms,
        max_rooms_per_tenant: config.max_rooms_per_tenant,
        resume_grace: config.resume_grace(),
        joins_per_min: config.joins_per_min,
    };
    let secret = crate::auth::load_or_create_secret(config.auth.jwt_secret.as_deref(), &config.data_dir)
        .with_context(|| format!("reading or creating the JWT secret in {}", config.data_dir.display()))?;
    let auth = Arc::new(Auth::new(&secret, config.auth.anonymous, config.auth.auth_failures_per_min));
    let redis_hubs = cluster.as_ref().map(|c| crate::cluster::hubs::RedisHubs::new(c.clone()));
    let hubs = redis_hubs.clone().map(|h| h as Arc<dyn crate::engine::hubs::HubDirectory>);
    let devices = config.devices_config()?;
    let engine = Engine::start(Parts { config: engine_config, store, bus, directory, auth, devices, hubs })
        .await
        .context("restoring rooms and devices")?;
    if let (Some(c), Some(d), Some(h)) = (&cluster, redis_directory, redis_hubs) {
        crate::cluster::run(engine.clone(), c.clone(), d, h);
    }
    if config.peer_listen.is_some() || !config.peers.is_empty() {
        let cfg = crate::peers::PeersConfig {
            listen: config.peer_listen,
            dial: config.peers.clone(),
            secret: config.peer_secret.clone(),
            tenant: config.peer_tenant.clone(),
            max_line: config.peer_max_line_bytes.max(64),
        };
        let (_peers, bound) = crate::peers::Peers::start(engine.clone(), cfg).await?;
        if let Some(addr) = bound {
            println!("unisono peers listening on {addr}");
        }
    }
    let ws = Arc::new(WsConfig {
        max_frame_bytes: config.max_frame_bytes,
        session_queue: config.session_queue,
        frames_per_sec: config.frames_per_sec,
        ping_interval: config.ping_interval(),
    });
    let api_keys = Arc::new(crate::api::ApiKeys::parse(&config.api_keys).map_err(anyhow::Error::msg)?);
    let routes = crate::http::routes(engine.clone(), config.web_dir.clone(), api_keys, config.max_frame_bytes as u64);
    // Socket.IO (`/socket.io/`) in front of warp's routes, on the same port.
    let (sio_layer, io) = crate::sio::layer(
        engine.clone(),
        SioConfig {
            ping_interval: config.ping_interval(),
            ping_timeout: config.ping_timeout(),
            connect_timeout: config.connect_timeout(),
            max_event_bytes: config.max_frame_bytes,
            max_device_event_bytes: config.max_device_event_bytes,
            queue: config.session_queue,
            events_per_sec: config.frames_per_sec,
        },
    );
    // Below Socket.IO: `/ws` upgrades go to the WebSocket edge, everything else to warp.
    let routes = warp::service(routes);
    let inner = {
        let engine = engine.clone();
        tower::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            if crate::ws::is_upgrade(&req) {
                let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
                let res = crate::ws::accept(req, peer, engine.clone(), ws.clone());
                Either::Left(std::future::ready(Ok::<_, Infallible>(res)))
            } else {
                Either::Right(routes.clone().call(req))
            }
        })
    };
    let app = std::sync::Arc::new(sio_layer.layer(inner));

    tracing::info!(%addr, store = engine.store().backend(), node = %node_id, "listening");
    println!("unisono node {node_id}");
    // Tests and scripts read the bound address from this line.
    println!("unisono listening on http://{addr}");

    let trust_proxy = config.trust_proxy;
    let header_timeout = std::time::Duration::from_secs_f64(config.header_timeout_secs.max(0.1));
    // hyper's own floor; its default (~400 KiB) would let 10,000 slow-loris connections hold 4 GiB.
    let max_header_bytes = config.max_header_bytes.max(8192);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                tokio::spawn(async move {
                    // Until its first byte a connection costs only this task: the service and
                    // hyper's buffers (kilobytes) come with the request. One that sends nothing
                    // is dropped after the header timeout, as a slow one is.
                    // (`peek`, not `readable`: readiness may be reported before any byte.)
                    match tokio::time::timeout(header_timeout, stream.peek(&mut [0u8; 1])).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                    let app = (*app).clone();
                    // The peer address rides in each request's extensions, for per-address limits.
                    let service = TowerToHyperService::new(tower::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                        let ip = if trust_proxy { forwarded_for(req.headers()).unwrap_or(peer.ip()) } else { peer.ip() };
                        req.extensions_mut().insert(PeerAddr(ip));
                        if req.uri().path().starts_with("/socket.io/") {
                            unpin_read_buffer(&mut req);
                        }
                        app.clone().call(req)
                    }));
                    // HTTP/1.1 only, and no wrapper around the stream: `/ws` takes the TCP stream
                    // back from the upgrade (ws/writer.rs writes to it directly).
                    // Boxed: the connection's state (kilobytes) is allocated now, not held
                    // inline by every task still waiting above.
                    let conn = http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(header_timeout)
                        .max_header_size(max_header_bytes)
                        .max_buf_size(max_header_bytes)
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades();
                    let _ = Box::pin(conn).await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down");
    drop(listener);
    // Socket.IO transports first, without a DISCONNECT packet: socket.io-client takes one for
    // "io server disconnect" and never reconnects, so a restart would strand every such client
    // (found by the reconnect storm, benches/storm). Closed transports make it reconnect.
    if tokio::time::timeout(std::time::Duration::from_secs(5), io.close()).await.is_err() {
        tracing::warn!("Socket.IO transports still open at shutdown");
    }
    engine.shutdown().await;
    // Let writers send their close frames.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    Ok(())
}

/// Gives the request's URI and header values their own copies. hyper parses them as slices of
/// the connection's read buffer (8 KiB and up), and Socket.IO (engineioxide) keeps a WebSocket
/// request's parts for the socket's whole life: every idle socket held its whole buffer.
fn unpin_read_buffer(req: &mut hyper::Request<hyper::body::Incoming>) {
    for v in req.headers_mut().values_mut() {
        if let Ok(own) = hyper::header::HeaderValue::from_bytes(v.as_bytes()) {
            *v = own;
        }
    }
    if let Ok(own) = req.uri().to_string().parse() {
        *req.uri_mut() = own;
    }
}

/// A listener with a backlog of `backlog` (std's and tokio's `bind` ask for 128 or 1024).
fn bind(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As std's `bind`: a restarted server takes its port back at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog.max(1))
}

/// The last address of `X-Forwarded-For`: the one the trusted proxy appended.
fn forwarded_for(headers: &hyper::HeaderMap) -> Option<std::net::IpAddr> {
    let last = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).next_back()?;
    last.rsplit(',').next()?.trim().parse().ok()
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
