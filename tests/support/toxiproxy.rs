//! Toxiproxy between a client and the test apiserver, to cut one client off: a
//! "black hole" drops every byte both ways without closing connections, as a partitioned
//! network does. Built from its Go module by `tests/cluster/build-toxiproxy.sh`.

use std::{path::PathBuf, process::Command, time::Duration};

use serde_json::json;

use super::{ControlPlane, bins, process};

/// A running toxiproxy server with one proxy in front of the apiserver.
pub struct ApiserverProxy {
    child: std::process::Child,
    api: String,
    /// The apiserver's URL through the proxy (the serving certificate is for 127.0.0.1, so
    /// TLS verification still passes).
    pub server: String,
}

const PROXY: &str = "apiserver";

impl ApiserverProxy {
    /// Starts toxiproxy and a proxy to `cp`'s apiserver on a free loopback port.
    pub fn start(cp: &ControlPlane) -> ApiserverProxy {
        let control = process::free_port();
        let listen = process::free_port();
        let log = std::fs::File::create(cp.dir.join(format!("toxiproxy-{control}.log")))
            .expect("toxiproxy log");
        let mut cmd = Command::new(binary());
        cmd.args(["-host", "127.0.0.1", "-port", &control.to_string()])
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        let child = process::spawn(cmd).expect("starting toxiproxy");
        let api = format!("http://127.0.0.1:{control}");
        let upstream = cp.server.trim_start_matches("https://").to_string();
        let body = json!({"name": PROXY, "listen": format!("127.0.0.1:{listen}"), "upstream": upstream, "enabled": true});
        let started = std::time::Instant::now();
        loop {
            match post(&format!("{api}/proxies"), &body) {
                Ok(()) => break,
                Err(e) if started.elapsed() > Duration::from_secs(30) => {
                    panic!("toxiproxy did not start: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        ApiserverProxy {
            child,
            api,
            server: format!("https://127.0.0.1:{listen}"),
        }
    }

    /// Drops everything in both directions from now on; connections stay open.
    pub fn black_hole(&self) {
        for stream in ["upstream", "downstream"] {
            let toxic = json!({"name": format!("black-hole-{stream}"), "type": "timeout", "stream": stream, "toxicity": 1.0, "attributes": {"timeout": 0}});
            post(&format!("{}/proxies/{PROXY}/toxics", self.api), &toxic)
                .unwrap_or_else(|e| panic!("adding a toxic: {e}"));
        }
    }

    /// A copy of `kubeconfig` that reaches the apiserver through this proxy.
    pub fn kubeconfig(&self, cp: &ControlPlane, kubeconfig: &std::path::Path) -> PathBuf {
        let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
        assert!(text.contains(&cp.server), "kubeconfig names {}", cp.server);
        let path = kubeconfig.with_extension(format!(
            "via-proxy-{}.kubeconfig",
            self.server.rsplit(':').next().unwrap_or("")
        ));
        std::fs::write(&path, text.replace(&cp.server, &self.server)).expect("writing kubeconfig");
        path
    }
}

impl Drop for ApiserverProxy {
    fn drop(&mut self) {
        process::kill_group(&mut self.child);
    }
}

fn post(url: &str, body: &serde_json::Value) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The toxiproxy server, built once per machine.
fn binary() -> PathBuf {
    let script = bins::repo_root().join("tests/cluster/build-toxiproxy.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("running build-toxiproxy.sh");
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
