//! Runs the real `ferrosync controller` binary against a test control plane, with its
//! probe endpoint on a free loopback port and its log in the control plane's directory.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use super::{ControlPlane, process, wait};

/// A running `ferrosync controller`; dropping it kills it.
pub struct RunningController {
    child: Child,
    /// Where /healthz and /readyz are served.
    pub addr: std::net::SocketAddr,
    /// Where /metrics is served.
    pub metrics_addr: std::net::SocketAddr,
    metrics_tls: Option<MetricsTls>,
    /// Its combined stdout/stderr.
    pub log: PathBuf,
}

/// /metrics over HTTPS with authentication, as deployed: the serving certificate (as a
/// mounted Secret would provide it), the CA that signed it, and the bearer token
/// [`RunningController::get`] sends.
#[derive(Clone)]
pub struct MetricsTls {
    /// PEM certificate and key files.
    pub cert: PathBuf,
    /// The key.
    pub key: PathBuf,
    /// The CA a client verifies the certificate with.
    pub ca: PathBuf,
    /// A token allowed to read /metrics.
    pub token: String,
}

impl RunningController {
    /// Starts the controller with `kubeconfig` (admin or a ServiceAccount's) and extra
    /// environment (`FERROSYNC_*` configuration).
    /// /metrics is plain HTTP on loopback (the development mode).
    pub fn start(cp: &ControlPlane, kubeconfig: &Path, env: &[(&str, &str)]) -> RunningController {
        Self::start_with(cp, kubeconfig, env, None)
    }

    /// As [`Self::start`], with /metrics over HTTPS and authenticated when `tls` is given.
    pub fn start_with(
        cp: &ControlPlane,
        kubeconfig: &Path,
        env: &[(&str, &str)],
        tls: Option<MetricsTls>,
    ) -> RunningController {
        let port = process::free_port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let metrics_addr: std::net::SocketAddr = ([127, 0, 0, 1], process::free_port()).into();
        let log = cp.dir.join(format!("controller-{port}.log"));
        let file = std::fs::File::create(&log).expect("controller log");
        let mut cmd = Command::new(ferrosync_binary());
        cmd.arg("controller")
            .env("KUBECONFIG", kubeconfig)
            .env("FERROSYNC_SERVER__LISTEN", addr.to_string())
            .env("FERROSYNC_METRICS__LISTEN", metrics_addr.to_string())
            .env("FERROSYNC_METRICS__SECURE", tls.is_some().to_string())
            .env("FERROSYNC_LOG__FORMAT", "json")
            // Short retries, so a test sees a state change within its deadline.
            .env("FERROSYNC_REQUEUE__ERROR_MIN", "100ms")
            .env("FERROSYNC_REQUEUE__ERROR_MAX", "1s")
            .envs(env.iter().copied())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file);
        if let Some(tls) = &tls {
            cmd.env("FERROSYNC_METRICS__CERT_FILE", &tls.cert)
                .env("FERROSYNC_METRICS__KEY_FILE", &tls.key);
        }
        let child = process::spawn(cmd).expect("starting ferrosync controller");
        RunningController {
            child,
            addr,
            metrics_addr,
            metrics_tls: tls,
            log,
        }
    }

    /// GET `path`: /metrics on the metrics endpoint (with the allowed token when it is
    /// HTTPS), anything else on the probe endpoint. The status code and body, or `None`
    /// when nothing answers (yet).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        if path == "/metrics" {
            let token = self.metrics_tls.as_ref().map(|t| t.token.clone());
            return self.get_metrics(token.as_deref());
        }
        fetch(&agent(None), &format!("http://{}{path}", self.addr), None)
    }

    /// GET /metrics with `token` as the bearer token (none: no Authorization header).
    pub fn get_metrics(&self, token: Option<&str>) -> Option<(u16, String)> {
        match &self.metrics_tls {
            Some(tls) => fetch(
                &agent(Some(&tls.ca)),
                &format!("https://{}/metrics", self.metrics_addr),
                token,
            ),
            None => fetch(
                &agent(None),
                &format!("http://{}/metrics", self.metrics_addr),
                token,
            ),
        }
    }

    /// Polls `path` until it answers `status`; returns the body.
    pub async fn wait_for_status(
        &mut self,
        path: &str,
        status: u16,
        timeout: Duration,
    ) -> Result<String, String> {
        let what = format!("{path} to answer {status}");
        let result = wait::until(&what, timeout, || {
            let exited = self.child.try_wait().ok().flatten();
            let answer = self.get(path);
            async move {
                if let Some(code) = exited {
                    return Err(format!("the controller exited ({code})"));
                }
                Ok(answer
                    .filter(|(code, _)| *code == status)
                    .map(|(_, body)| body))
            }
        })
        .await;
        result.map_err(|e| format!("{e}; controller log:\n{}", self.log_text()))
    }

    /// The controller's process id (for resource measurements).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the controller has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RunningController {
    fn drop(&mut self) {
        process::kill_group(&mut self.child);
    }
}

/// An HTTP client; with `ca`, HTTPS servers are verified against that CA only.
fn agent(ca: Option<&Path>) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).expect("reading the metrics CA");
        let cert = ureq::tls::Certificate::from_pem(&pem).expect("a PEM certificate");
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![
                    cert,
                ])))
                .build(),
        );
    }
    config.build().into()
}

fn fetch(agent: &ureq::Agent, url: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.call().ok()?;
    let body = response.body_mut().read_to_string().unwrap_or_default();
    Some((response.status().as_u16(), body))
}

/// The `ferrosync` binary cargo built for this test (or, outside `cargo test`, the dev one).
pub fn ferrosync_binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_ferrosync") {
        Some(path) => PathBuf::from(path),
        None => super::bins::cargo_target_dir().join("debug/ferrosync"),
    }
}
