//! The two HTTP endpoints: probes (`/healthz`, `/readyz`) in plain HTTP for the kubelet,
//! and `/metrics`, over HTTPS with the apiserver checking every caller (see
//! [`super::auth`]), or in plain HTTP without checks for development on a loopback
//! address only (the configuration refuses anything else).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;

use super::{
    Error, Exposition,
    auth::{self, Verdict},
    tls::TlsListener,
};

/// Liveness and readiness, shared between the controller and the probe endpoint.
#[derive(Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    /// Marks the controller ready (or not) to serve.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether /readyz answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Serve { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Serve { addr, source })?;
    Ok((listener, bound))
}

/// Binds `addr` and serves the probes until the task is dropped. Binding happens before
/// this returns, so a taken port is a start-up error, not a silent one.
pub async fn serve_probes(
    addr: SocketAddr,
    health: Health,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), Error> {
    let (listener, bound) = bind(addr).await?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health);
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(%err, "probe endpoint stopped");
        }
    });
    Ok((bound, task))
}

async fn readyz(State(health): State<Health>) -> (StatusCode, &'static str) {
    if health.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Who may read `/metrics`.
pub enum MetricsAccess {
    /// Anyone, in plain HTTP: development on loopback only.
    Open,
    /// Over TLS with `tls`, callers checked through the apiserver with `client`.
    Checked {
        /// The serving configuration (see [`super::tls::server_config`]).
        tls: Arc<ServerConfig>,
        /// For TokenReviews and SubjectAccessReviews.
        client: kube::Client,
    },
}

#[derive(Clone)]
struct MetricsState {
    exposition: Exposition,
    client: Option<kube::Client>,
}

/// Binds `addr` and serves `/metrics` until the task is dropped.
pub async fn serve_metrics(
    addr: SocketAddr,
    exposition: Exposition,
    access: MetricsAccess,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), Error> {
    let (listener, bound) = bind(addr).await?;
    let router = Router::new().route("/metrics", get(metrics));
    let task = match access {
        MetricsAccess::Open => {
            let app = router.with_state(MetricsState {
                exposition,
                client: None,
            });
            tokio::spawn(async move {
                if let Err(err) = axum::serve(listener, app).await {
                    tracing::error!(%err, "metrics endpoint stopped");
                }
            })
        }
        MetricsAccess::Checked { tls, client } => {
            let app = router.with_state(MetricsState {
                exposition,
                client: Some(client),
            });
            let listener =
                TlsListener::new(listener, tls).map_err(|source| Error::Serve { addr, source })?;
            tokio::spawn(async move {
                if let Err(err) = axum::serve(listener, app).await {
                    tracing::error!(%err, "metrics endpoint stopped");
                }
            })
        }
    };
    Ok((bound, task))
}

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{body}\n"),
    )
        .into_response()
}

async fn metrics(
    State(state): State<MetricsState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(client) = &state.client {
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(token) = auth::bearer_token(header) else {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized: no bearer token");
        };
        // The verb as the apiserver names it for non-resource URLs (GET -> get).
        let verb = method.as_str().to_ascii_lowercase();
        match auth::check(client, token, &verb, uri.path()).await {
            Ok(Verdict::Allowed) => {}
            Ok(Verdict::Unauthenticated) => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
            Ok(Verdict::Forbidden(reason)) => {
                tracing::debug!(%reason, "metrics request refused");
                return text(StatusCode::FORBIDDEN, &format!("Forbidden: {reason}"));
            }
            Err(err) => {
                tracing::warn!(%err, "could not check a metrics request");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "could not check the request with the Kubernetes API",
                );
            }
        }
    }
    match state.exposition.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed"),
    }
}
