//! What every HTTP request passes before a handler sees it: the `Host`
//! check (a DNS-rebinding page names its own host), the `Origin` check (a
//! page of another site), the content type of requests that change state
//! (a cross-site form or `text/plain` POST cannot carry one of Atoll's),
//! and the API key. A request that passes carries its `atoll_auth::Caller`,
//! and each handler asks it whether it may do what the handler does (a
//! refusal there is a 403, counted here).
//!
//! Open without a key: `/healthz`, the dashboard's files, and `/metrics`
//! with `--open-metrics`. Everything under `/v1/` needs one when the node
//! requires keys (`--admin-key`).

use std::net::SocketAddr;
use std::sync::Arc;

use atoll_auth::{Auth, AuthError};
use atoll_errors::ErrorKind;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, DoorError};

/// Media types a state-changing request may carry: Atoll's JSON and
/// NDJSON, and those of the ingest protocols it speaks.
pub const WRITE_TYPES: &[&str] = &[
    "application/json",
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/json-seq",
    "application/x-protobuf",
    "application/protobuf",
    "application/msgpack",
    "application/x-msgpack",
];

/// The header a Honeycomb client sends its key in.
pub const HONEYCOMB_TEAM: &str = "x-honeycomb-team";

pub struct Guard {
    auth: Arc<Auth>,
    /// `Host` values this node answers to (lowercase, a port or not); None:
    /// any (a node on all interfaces has no one name).
    hosts: Option<Vec<String>>,
    /// Other sites whose pages may call this node (`scheme://host:port`).
    origins: Vec<String>,
    open_metrics: bool,
    failures: prometheus::IntCounterVec,
}

impl Guard {
    pub fn new(
        auth: Arc<Auth>,
        listen: SocketAddr,
        allowed_hosts: &[String],
        origins: &[String],
        open_metrics: bool,
        registry: &prometheus::Registry,
    ) -> prometheus::Result<Guard> {
        let failures = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "atoll_auth_failures_total",
                "Requests refused for their API key (missing, invalid, revoked) or its role (forbidden)",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(failures.clone()))?;
        let ip = listen.ip();
        let hosts = (!ip.is_unspecified()).then(|| {
            let mut names: Vec<String> = if ip.is_loopback() {
                vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()]
            } else {
                vec![match ip {
                    std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                    v4 => v4.to_string(),
                }]
            };
            names.extend(allowed_hosts.iter().map(|h| h.to_ascii_lowercase()));
            names
        });
        Ok(Guard {
            auth,
            hosts,
            origins: origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            open_metrics,
            failures,
        })
    }

    pub fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }

    /// A `Host` of this node: one of its names, with any port, or exactly
    /// an allowed `host:port`.
    fn host_ok(&self, host: &str) -> bool {
        let Some(names) = &self.hosts else {
            return true;
        };
        let host = host.to_ascii_lowercase();
        let bare = match host.rsplit_once(':') {
            Some((h, port))
                if !h.is_empty()
                    && port.chars().all(|c| c.is_ascii_digit())
                    && !host.ends_with(']') =>
            {
                h
            }
            _ => host.as_str(),
        };
        names.iter().any(|n| *n == host || *n == bare)
    }

    /// A browser's request from this node's own page, or from an allowed
    /// site (requests without `Origin` are not from a page of another site).
    fn origin_ok(&self, origin: &str, host: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        let authority = origin.split_once("://").map(|(_, a)| a);
        authority.is_some_and(|a| a == host.to_ascii_lowercase()) || self.origins.contains(&origin)
    }

    fn needs_key(&self, path: &str) -> bool {
        path.starts_with("/v1/")
            || path.starts_with("/1/")
            || (path == "/metrics" && !self.open_metrics)
    }

    /// The key a request presents: `Authorization: Bearer KEY` (the
    /// scheme in any case), or, on ingest routes only (native, Honeycomb's,
    /// OTLP's), the Honeycomb team header.
    fn presented<'h>(headers: &'h HeaderMap, path: &str) -> Option<&'h str> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, key) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(key)
            });
        let ingest = path.ends_with("/events")
            || path.starts_with("/1/")
            || path == "/v1/traces"
            || path == "/v1/logs"
            || path.starts_with("/opentelemetry.proto.collector.");
        bearer.or_else(|| {
            ingest
                .then(|| headers.get(HONEYCOMB_TEAM).and_then(|v| v.to_str().ok()))
                .flatten()
        })
    }

    /// The caller of a request to `path` with these headers (HTTP, or a
    /// gRPC door's metadata): every door authenticates through here.
    pub fn caller(&self, headers: &HeaderMap, path: &str) -> Result<atoll_auth::Caller, AuthError> {
        let now_ms = atoll_store::now_micros() / 1000;
        self.auth
            .authenticate(Guard::presented(headers, path), now_ms)
            .inspect_err(|e| self.refused(e, path))
    }

    /// Counts and logs (without the key) a refusal for a key or a role.
    pub fn refused(&self, e: &AuthError, path: &str) {
        self.failures.with_label_values(&[e.label()]).inc();
        tracing::warn!(reason = e.label(), path, error = %e, "refused a request for its API key");
    }
}

fn refuse(kind: ErrorKind, message: String) -> Response {
    ApiError::from(DoorError::new(kind, message)).into_response()
}

/// The middleware.
pub async fn guard(State(g): State<Arc<Guard>>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if !g.host_ok(&host) {
        return refuse(
            ErrorKind::Forbidden,
            format!("Host {host:?} is not a name of this node (add it with --allowed-host)"),
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && !g.origin_ok(origin, &host)
    {
        return refuse(
            ErrorKind::Forbidden,
            format!(
                "requests from pages of {origin} are refused: only this node's own dashboard (or an --allowed-origin) may call it from a browser"
            ),
        );
    }
    if matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH
    ) {
        let media = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        if !media.as_deref().is_some_and(|m| WRITE_TYPES.contains(&m)) {
            return refuse(
                ErrorKind::UnsupportedMedia,
                format!(
                    "Content-Type {} is not taken here: send one of {}",
                    media.map_or("(none)".into(), |m| format!("{m:?}")),
                    WRITE_TYPES.join(", ")
                ),
            );
        }
    }
    let path = request.uri().path().to_string();
    let keyed = g.needs_key(&path);
    if keyed {
        match g.caller(request.headers(), &path) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
            }
            Err(e) => {
                let mut response = ApiError::from(e).into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"atoll\""),
                );
                return response;
            }
        }
    }
    let response = next.run(request).await;
    if keyed && response.status() == axum::http::StatusCode::FORBIDDEN {
        g.failures.with_label_values(&["forbidden"]).inc();
    }
    response
}
