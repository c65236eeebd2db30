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
    /// Where /healthz, /readyz and /metrics are served.
    pub addr: std::net::SocketAddr,
    /// Its combined stdout/stderr.
    pub log: PathBuf,
}

impl RunningController {
    /// Starts the controller with `kubeconfig` (admin or a ServiceAccount's) and extra
    /// environment (`FERROSYNC_*` configuration).
    pub fn start(cp: &ControlPlane, kubeconfig: &Path, env: &[(&str, &str)]) -> RunningController {
        let port = process::free_port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let log = cp.dir.join(format!("controller-{port}.log"));
        let file = std::fs::File::create(&log).expect("controller log");
        let mut cmd = Command::new(ferrosync_binary());
        cmd.arg("controller")
            .env("KUBECONFIG", kubeconfig)
            .env("FERROSYNC_SERVER__LISTEN", addr.to_string())
            .env("FERROSYNC_LOG__FORMAT", "json")
            // Short retries, so a test sees a state change within its deadline.
            .env("FERROSYNC_REQUEUE__ERROR_MIN", "100ms")
            .env("FERROSYNC_REQUEUE__ERROR_MAX", "1s")
            .envs(env.iter().copied())
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file);
        let child = process::spawn(cmd).expect("starting ferrosync controller");
        RunningController { child, addr, log }
    }

    /// GET `path` on the probe endpoint: the status code and body, or `None` when nothing
    /// answers (yet).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let mut response = agent
            .get(&format!("http://{}{path}", self.addr))
            .call()
            .ok()?;
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Some((response.status().as_u16(), body))
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

    /// Whether the controller process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
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

/// The `ferrosync` binary cargo built for this test (or, outside `cargo test`, the dev one).
pub fn ferrosync_binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_ferrosync") {
        Some(path) => PathBuf::from(path),
        None => super::bins::cargo_target_dir().join("debug/ferrosync"),
    }
}
