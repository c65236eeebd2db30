//! The `ferrosync:policy/http` capability: the gate every plugin request passes, and the
//! transports behind it (live with ureq, or replay of recorded exchanges for
//! `policy test`).
//!
//! The gate checks the grant and the origin allow-list *before* anything is contacted,
//! counts requests, injects credentials, and bounds time and response size. It must never
//! follow a redirect, use a proxy from the environment, or let a plugin set or read the
//! credential header.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{
    bindings::http as wit,
    config::HttpGrant,
    credentials::{CredentialScope, target_of},
};

/// A request as the transport sees it (credentials already injected).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body: Vec<u8>,
}

/// A response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub body: Vec<u8>,
}

/// Bounds of one request.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub timeout: Duration,
    pub max_response_bytes: u64,
}

/// How a request failed, as told to the plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("denied: {0}")]
    Denied(String),
    #[error("timed out")]
    Timeout,
    #[error("response too large")]
    TooLarge,
    #[error("transport: {0}")]
    Transport(String),
}

impl From<HttpError> for wit::Error {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Denied(s) => wit::Error::Denied(s),
            HttpError::Timeout => wit::Error::Timeout,
            HttpError::TooLarge => wit::Error::TooLarge,
            HttpError::Transport(s) => wit::Error::Transport(s),
        }
    }
}

/// Sends requests that already passed the gate.
pub trait HttpTransport: Send + Sync {
    fn send(&self, req: &HttpRequest, limits: HttpLimits) -> Result<HttpResponse, HttpError>;
}

/// `scheme://host:port`, lower-cased, with the scheme's default port made explicit.
pub fn origin_of(url: &str) -> Result<String, String> {
    let uri: ureq::http::Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    let scheme = uri
        .scheme_str()
        .ok_or("URL has no scheme")?
        .to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        other => return Err(format!("scheme {other:?} is not http or https")),
    };
    let authority = uri.authority().ok_or("URL has no host")?;
    if authority.as_str().contains('@') {
        return Err("URLs with user information are refused".into());
    }
    let host = authority.host().to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(default_port);
    Ok(format!("{scheme}://{host}:{port}"))
}

/// The per-decision gate: one per Store.
pub struct HttpGate {
    grant: Option<ResolvedGrant>,
    transport: Arc<dyn HttpTransport>,
    /// The decision's own deadline: no request may outlive it, since the epoch deadline
    /// cannot interrupt a host call.
    deadline: Instant,
    sent: u32,
    /// What was refused, for the decision's provenance.
    pub denials: Vec<String>,
}

/// A credential the host injects, and where it may go.
#[derive(Clone)]
pub struct Credential {
    /// The request header that carries it.
    pub header: String,
    /// Its value: never logged, never shown to the plugin.
    pub value: String,
    /// Where the operator lets it go for this decision.
    pub scope: CredentialScope,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("header", &self.header)
            .field("value", &"<redacted>")
            .field("scope", &self.scope)
            .finish()
    }
}

/// A grant with its origins normalised and its credential resolved.
pub struct ResolvedGrant {
    allow: Vec<String>,
    limits: HttpLimits,
    max_requests: u32,
    credential: Option<Credential>,
    /// Only GET and HEAD: a shadow plugin may read, never write.
    read_only: bool,
}

impl ResolvedGrant {
    /// Cuts the grant to reading (GET and HEAD), as for a shadow plugin.
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Normalises the allow-list; an origin that does not parse is a configuration error.
    pub fn new(grant: &HttpGrant, credential: Option<Credential>) -> Result<Self, String> {
        let allow = grant
            .allow
            .iter()
            .map(|o| origin_of(o).map_err(|e| format!("allow-list entry {o:?}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(ResolvedGrant {
            allow,
            limits: HttpLimits {
                timeout: grant.timeout,
                max_response_bytes: u64::from(grant.max_response_kib) * 1024,
            },
            max_requests: grant.max_requests,
            credential,
            read_only: false,
        })
    }
}

impl HttpGate {
    pub fn new(
        grant: Option<ResolvedGrant>,
        transport: Arc<dyn HttpTransport>,
        deadline: Instant,
    ) -> Self {
        HttpGate {
            grant,
            transport,
            deadline,
            sent: 0,
            denials: Vec::new(),
        }
    }

    /// Checks, then sends. Denials are recorded and returned to the plugin as errors.
    pub fn send(&mut self, req: wit::Request) -> Result<wit::Response, wit::Error> {
        match self.check_and_send(req) {
            Ok(r) => Ok(r),
            Err(HttpError::Denied(why)) => {
                tracing::warn!(%why, "policy plugin HTTP request denied");
                self.denials.push(why.clone());
                Err(wit::Error::Denied(why))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn check_and_send(&mut self, req: wit::Request) -> Result<wit::Response, HttpError> {
        let Some(grant) = &self.grant else {
            return Err(HttpError::Denied(format!(
                "no HTTP grant: {} {} refused",
                req.method, req.url
            )));
        };
        if grant.read_only
            && !(req.method.eq_ignore_ascii_case("GET") || req.method.eq_ignore_ascii_case("HEAD"))
        {
            return Err(HttpError::Denied(format!(
                "a shadow plugin may only read: {} {} refused",
                req.method, req.url
            )));
        }
        let origin = origin_of(&req.url).map_err(HttpError::Denied)?;
        if !grant.allow.contains(&origin) {
            return Err(HttpError::Denied(format!(
                "origin {origin} is not on the allow-list"
            )));
        }
        if self.sent >= grant.max_requests {
            return Err(HttpError::Denied(format!(
                "more than {} requests in one decision",
                grant.max_requests
            )));
        }
        if req.body.len() as u64 > grant.limits.max_response_bytes {
            return Err(HttpError::Denied("request body too large".into()));
        }
        if let Some(credential) = &grant.credential {
            credential_may_go(&credential.scope, &origin, &req.url)?;
        }
        self.sent += 1;
        let cred_header = grant.credential.as_ref().map(|c| c.header.as_str());
        let mut headers: Vec<(String, String)> = req
            .headers
            .into_iter()
            .filter(|(k, _)| {
                // The plugin may neither forge the credential nor steer the connection.
                !cred_header.is_some_and(|h| k.eq_ignore_ascii_case(h))
                    && !k.eq_ignore_ascii_case("host")
                    && !k.eq_ignore_ascii_case("proxy-authorization")
            })
            .collect();
        if let Some(c) = &grant.credential {
            headers.push((c.header.clone(), c.value.clone()));
        }
        let out = HttpRequest {
            method: req.method,
            url: req.url,
            headers,
            body: req.body,
        };
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HttpError::Timeout);
        }
        let limits = HttpLimits {
            timeout: grant.limits.timeout.min(left),
            ..grant.limits
        };
        let resp = self.transport.send(&out, limits)?;
        Ok(wit::Response {
            status: resp.status,
            headers: resp.headers,
            body: resp.body,
        })
    }
}

/// Whether a credentialed plugin's request may be sent: its URL must be one the operator
/// allows for this decision, and plain HTTP only to an origin explicitly allowed. The
/// plugin chooses the URL, so without this it could send the token to an endpoint that
/// reveals it (a vault's token lookup) or act on another pair's path.
fn credential_may_go(scope: &CredentialScope, origin: &str, url: &str) -> Result<(), HttpError> {
    if scope.anywhere {
        return Ok(());
    }
    if origin.starts_with("http://") && !scope.plain_http.iter().any(|o| o == origin) {
        return Err(HttpError::Denied(format!(
            "the credential is sent only over HTTPS: {origin} is not in [policy.credentials] allow_plain_http"
        )));
    }
    let target = target_of(url).map_err(HttpError::Denied)?;
    if scope.targets.contains(&target) {
        Ok(())
    } else {
        Err(HttpError::Denied(format!(
            "the credential is not sent to {target}: not a [policy.credentials] target of this object's authorised pair"
        )))
    }
}

/// The real network, through ureq: no redirects, no proxies, bounded time and size.
#[derive(Debug, Default)]
pub struct LiveTransport;

impl HttpTransport for LiveTransport {
    fn send(&self, req: &HttpRequest, limits: HttpLimits) -> Result<HttpResponse, HttpError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(limits.timeout))
            .max_redirects(0)
            .max_redirects_will_error(false)
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into();
        let mut builder = ureq::http::Request::builder()
            .method(req.method.as_str())
            .uri(req.url.as_str());
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let request = builder
            .body(req.body.clone())
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        let response = agent.run(request).map_err(map_ureq)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .into_body()
            .with_config()
            .limit(limits.max_response_bytes)
            .read_to_vec()
            .map_err(map_ureq)?;
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

fn map_ureq(e: ureq::Error) -> HttpError {
    match e {
        ureq::Error::Timeout(_) => HttpError::Timeout,
        ureq::Error::BodyExceedsLimit(_) => HttpError::TooLarge,
        other => HttpError::Transport(other.to_string()),
    }
}

/// One recorded exchange: the request to expect (method and URL) and the response to give.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    pub method: String,
    pub url: String,
    /// The response status.
    pub status: u16,
    /// The response body as JSON (most APIs plugins talk to are JSON), or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
}

/// Replays recorded exchanges in order; any other request is a transport error. Used by
/// `policy test`, so bundles with HTTP plugins are tested without a network.
#[derive(Debug, Default)]
pub struct ReplayTransport {
    queue: Mutex<VecDeque<Exchange>>,
}

impl ReplayTransport {
    /// Replaces the expected exchanges.
    pub fn load(&self, exchanges: &[Exchange]) {
        *self.queue.lock().unwrap_or_else(|p| p.into_inner()) = exchanges.iter().cloned().collect();
    }

    /// Exchanges that were expected but never requested.
    pub fn remaining(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl HttpTransport for ReplayTransport {
    fn send(&self, req: &HttpRequest, _limits: HttpLimits) -> Result<HttpResponse, HttpError> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        match queue.front() {
            Some(x) if x.method.eq_ignore_ascii_case(&req.method) && x.url == req.url => {
                let x = queue.pop_front().expect("front exists");
                Ok(HttpResponse {
                    status: x.status,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: x
                        .response
                        .map(|v| serde_json::to_vec(&v).unwrap_or_default())
                        .unwrap_or_default(),
                })
            }
            Some(x) => Err(HttpError::Transport(format!(
                "replay expected {} {}, got {} {}",
                x.method, x.url, req.method, req.url
            ))),
            None => Err(HttpError::Transport(format!(
                "replay has no recorded exchange for {} {}",
                req.method, req.url
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what would have been sent.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<HttpRequest>>);

    impl HttpTransport for Recorder {
        fn send(&self, req: &HttpRequest, _: HttpLimits) -> Result<HttpResponse, HttpError> {
            self.0.lock().unwrap().push(req.clone());
            Ok(HttpResponse {
                status: 200,
                headers: vec![],
                body: vec![],
            })
        }
    }

    fn gate(origin: &str, scope: CredentialScope) -> (HttpGate, Arc<Recorder>) {
        let grant = HttpGrant {
            allow: vec![origin.into()],
            timeout: Duration::from_secs(1),
            max_response_kib: 1,
            max_requests: 10,
            credentials: None,
        };
        let credential = Credential {
            header: "X-Vault-Token".into(),
            value: "s3cret-token".into(),
            scope,
        };
        let recorder = Arc::new(Recorder::default());
        let resolved = ResolvedGrant::new(&grant, Some(credential)).unwrap();
        let gate = HttpGate::new(
            Some(resolved),
            recorder.clone(),
            Instant::now() + Duration::from_secs(60),
        );
        (gate, recorder)
    }

    fn get(url: &str) -> wit::Request {
        wit::Request {
            method: "GET".into(),
            url: url.into(),
            headers: vec![],
            body: vec![],
        }
    }

    /// Issue 14: the token went with every request to an allowed origin, so a plugin could
    /// ask the vault's token lookup for it, or act on another pair's path.
    #[test]
    fn the_credential_goes_only_to_the_scopes_targets() {
        let (mut gate, sent) = gate(
            "https://vault:8200",
            CredentialScope {
                targets: vec!["https://vault:8200/v1/secret/data/psk/team-a-db".into()],
                ..CredentialScope::default()
            },
        );
        gate.send(get(
            "https://vault:8200/v1/secret/data/psk/team-a-db?version=2",
        ))
        .expect("the pair's own path");
        for url in [
            "https://vault:8200/v1/auth/token/lookup-self",
            "https://vault:8200/v1/secret/data/psk/team-b-db",
            "https://vault:8200/v1/secret/data/psk/team-a-db/../team-b-db",
            "https://vault:8200/v1/secret/data/psk/team-a-db%2f..%2fteam-b-db",
        ] {
            let err = gate.send(get(url)).expect_err(url);
            assert!(matches!(err, wit::Error::Denied(_)), "{url}: {err:?}");
        }
        let sent = sent.0.lock().unwrap();
        assert_eq!(sent.len(), 1, "nothing else was contacted");
        assert!(
            sent[0]
                .headers
                .contains(&("X-Vault-Token".into(), "s3cret-token".into()))
        );
        assert_eq!(gate.denials.len(), 4);
        assert!(gate.denials.iter().all(|d| !d.contains("s3cret")));
    }

    #[test]
    fn the_credential_goes_over_plain_http_only_where_allowed() {
        let target = "http://127.0.0.1:8200/v1/secret/data/psk/p";
        let scope = CredentialScope {
            targets: vec![target.into()],
            ..CredentialScope::default()
        };
        let (mut refused, sent) = gate("http://127.0.0.1:8200", scope.clone());
        let err = refused.send(get(target)).expect_err("plain http");
        assert!(format!("{err:?}").contains("allow_plain_http"), "{err:?}");
        assert!(sent.0.lock().unwrap().is_empty());
        let (mut allowed, sent) = gate(
            "http://127.0.0.1:8200",
            CredentialScope {
                plain_http: vec!["http://127.0.0.1:8200".into()],
                ..scope
            },
        );
        allowed.send(get(target)).expect("explicitly allowed");
        assert_eq!(sent.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn origins_are_normalised() {
        assert_eq!(
            origin_of("http://127.0.0.1:8200/v1/x").unwrap(),
            "http://127.0.0.1:8200"
        );
        assert_eq!(
            origin_of("HTTPS://Vault.Example/v1").unwrap(),
            "https://vault.example:443"
        );
        assert!(origin_of("ftp://x/").is_err());
        assert!(origin_of("http://user:pw@host/").is_err());
        assert!(origin_of("/relative").is_err());
    }
}
