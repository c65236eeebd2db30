//! The kubelet's HTTPS endpoint, as far as the API server uses it for `pods/log`:
//! `GET /containerLogs/<namespace>/<pod>/<container>` with `tailLines` and `limitBytes`,
//! served from the container's log file. The API server reaches it at the Node's
//! InternalIP and `daemonEndpoints.kubeletEndpoint.Port`.
//!
//! Not modelled: authentication and authorisation of the caller (the API server sends no
//! client certificate here), `follow` (the log so far is returned and the stream ends),
//! `timestamps`, `sinceSeconds`, previous containers, exec, attach, port-forward, metrics.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    },
};

/// Where each running pod's container logs are: (namespace, pod) → the pod's directory.
fn pods() -> &'static Mutex<HashMap<(String, String), PathBuf>> {
    static PODS: OnceLock<Mutex<HashMap<(String, String), PathBuf>>> = OnceLock::new();
    PODS.get_or_init(Default::default)
}

/// Makes a pod's logs (`<dir>/<container>.log`) readable through the endpoint.
pub fn register(namespace: &str, pod: &str, dir: &Path) {
    pods()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((namespace.into(), pod.into()), dir.to_path_buf());
}

/// Forgets a deleted pod.
pub fn forget(namespace: &str, pod: &str) {
    pods()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&(namespace.to_string(), pod.to_string()));
}

/// Serves the endpoint on `listener` with the serving certificate `cert`/`key` (PEM).
pub fn serve(listener: TcpListener, cert: &Path, key: &Path) -> Result<(), String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("kubelet serving certificate: {e}"))?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let (status, body) = respond(&read_head(&mut tls).await);
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(&body).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    Ok(())
}

/// The request line and headers (bodies are never needed for GET).
async fn read_head<S: AsyncReadExt + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn respond(head: &str) -> (&'static str, Vec<u8>) {
    let target = head.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    if path == "/healthz" {
        return ("200 OK", b"ok".to_vec());
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["containerLogs", ns, pod, container] = parts[..] else {
        return ("404 Not Found", b"not simulated".to_vec());
    };
    let dir = pods()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(ns.to_string(), pod.to_string()))
        .cloned();
    let Some(log) = dir.and_then(|d| std::fs::read(d.join(format!("{container}.log"))).ok()) else {
        return (
            "404 Not Found",
            format!("container {container:?} of {ns}/{pod} not found").into_bytes(),
        );
    };
    let mut body: &[u8] = &log;
    if let Some(n) = param("tailLines") {
        // The last n lines: cut after the (n+1)-th newline from the end, ignoring a final one.
        let trimmed = body.strip_suffix(b"\n").unwrap_or(body);
        let cut = trimmed
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, b)| **b == b'\n')
            .nth(n.saturating_sub(1))
            .map_or(0, |(i, _)| i + 1);
        body = if n == 0 { &[] } else { &body[cut..] };
    }
    if let Some(limit) = param("limitBytes") {
        body = &body[..body.len().min(limit)];
    }
    ("200 OK", body.to_vec())
}
