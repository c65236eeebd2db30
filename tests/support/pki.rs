//! The control plane's throwaway PKI, made with the `openssl` command line: one CA that
//! signs the apiserver's serving certificate and every client certificate, and the
//! service-account signing key.
//!
//! The apiserver maps a client certificate's CN to the user name and each O to a group,
//! which is how tests act as `admin` (group `system:masters`) or as a ServiceAccount.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// ECDSA P-256: fast to generate, accepted by Go's TLS stack and by rustls.
const KEY_ARGS: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

/// Files of the PKI, all under one directory.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The directory holding every key and certificate.
    pub dir: PathBuf,
    /// The CA certificate: trusted for serving and client certificates alike.
    pub ca_cert: PathBuf,
    ca_key: PathBuf,
    /// The apiserver's serving certificate (SANs 127.0.0.1, localhost, and the `kubernetes`
    /// Service's ClusterIP and names) and its key.
    pub serving: (PathBuf, PathBuf),
    /// The service-account token signing key (its public half is derived from it).
    pub service_account_key: PathBuf,
    /// The apiserver's client certificate towards kubelets (`pods/log`, `exec`, proxy):
    /// a kubelet, or the node simulator, authenticates it against [`Pki::ca_cert`].
    pub kubelet_client: Cert,
}

/// A certificate and its key.
#[derive(Clone, Debug)]
pub struct Cert {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

fn openssl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .map_err(|e| format!("running openssl (apt-get install openssl): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

impl Pki {
    /// Creates the CA, the serving certificate and the service-account key in `dir`, for
    /// the first site's apiserver.
    pub fn create(dir: &Path) -> Result<Pki, String> {
        Self::create_for(dir, super::sim::Site::East.plan().kubernetes_ip())
    }

    /// [`Pki::create`] for an apiserver whose `kubernetes` Service has `cluster_ip`, which
    /// its serving certificate then covers (in-cluster clients connect to it).
    pub fn create_for(dir: &Path, cluster_ip: std::net::Ipv4Addr) -> Result<Pki, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let ca_cert = dir.join("ca.crt");
        let ca_key = dir.join("ca.key");
        let mut args = vec![
            "req",
            "-x509",
            "-nodes",
            "-days",
            "7",
            "-subj",
            "/CN=ferrosync-test-ca",
        ];
        args.extend(KEY_ARGS);
        args.extend(["-keyout", s(&ca_key), "-out", s(&ca_cert)]);
        openssl(&args)?;
        let pki = Pki {
            dir: dir.to_path_buf(),
            ca_cert,
            ca_key,
            serving: (dir.join("serving.crt"), dir.join("serving.key")),
            service_account_key: dir.join("service-account.key"),
            kubelet_client: Cert {
                cert: dir.join("kubelet-client.crt"),
                key: dir.join("kubelet-client.key"),
            },
        };
        // Also the `kubernetes` Service's ClusterIP and names, which in-cluster clients use.
        let names = format!(
            "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:{cluster_ip},DNS:kubernetes,\
             DNS:kubernetes.default,DNS:kubernetes.default.svc,\
             DNS:kubernetes.default.svc.cluster.local"
        );
        pki.sign(
            "/CN=kube-apiserver",
            &pki.serving.0,
            &pki.serving.1,
            &[names.as_str(), "extendedKeyUsage=serverAuth"],
        )?;
        pki.sign(
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            &pki.kubelet_client.cert,
            &pki.kubelet_client.key,
            &["extendedKeyUsage=clientAuth"],
        )?;
        let sa_key = s(&pki.service_account_key);
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            sa_key,
        ])?;
        Ok(pki)
    }

    /// Mints a client certificate for `user` in `groups`, named `<file_stem>.{crt,key}`.
    pub fn client_cert(
        &self,
        file_stem: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<Cert, String> {
        // openssl's -subj syntax uses '/' and '=' as separators; Kubernetes user and group
        // names used in tests never need them.
        for name in groups.iter().chain([&user]) {
            if name.contains(['/', '=', '+', '\\']) {
                return Err(format!(
                    "unsupported character in certificate name {name:?}"
                ));
            }
        }
        let subject: String = groups
            .iter()
            .map(|g| format!("/O={g}"))
            .chain([format!("/CN={user}")])
            .collect();
        let cert = Cert {
            cert: self.dir.join(format!("{file_stem}.crt")),
            key: self.dir.join(format!("{file_stem}.key")),
        };
        self.sign(
            &subject,
            &cert.cert,
            &cert.key,
            &["extendedKeyUsage=clientAuth"],
        )?;
        Ok(cert)
    }

    /// Mints a serving certificate named `<file_stem>.{crt,key}` for `sans` (openssl
    /// syntax: `IP:127.1.0.5`, `DNS:node-1`), e.g. for the node simulator's kubelet
    /// endpoint, which the apiserver verifies against [`Pki::ca_cert`].
    pub fn serving_cert(
        &self,
        file_stem: &str,
        common_name: &str,
        sans: &[&str],
    ) -> Result<Cert, String> {
        let cert = Cert {
            cert: self.dir.join(format!("{file_stem}.crt")),
            key: self.dir.join(format!("{file_stem}.key")),
        };
        let san = format!("subjectAltName={}", sans.join(","));
        let subject = format!("/CN={common_name}");
        self.sign(
            &subject,
            &cert.cert,
            &cert.key,
            &[&san, "extendedKeyUsage=serverAuth"],
        )?;
        Ok(cert)
    }

    fn sign(
        &self,
        subject: &str,
        cert: &Path,
        key: &Path,
        extensions: &[&str],
    ) -> Result<(), String> {
        let mut args = vec!["req", "-x509", "-nodes", "-days", "7", "-subj", subject];
        args.extend(["-CA", s(&self.ca_cert), "-CAkey", s(&self.ca_key)]);
        args.extend(KEY_ARGS);
        args.extend(["-keyout", s(key), "-out", s(cert)]);
        // A leaf, never a CA: rustls refuses a CA certificate used as an end entity.
        args.extend(["-addext", "basicConstraints=critical,CA:FALSE"]);
        args.extend(["-addext", "keyUsage=critical,digitalSignature"]);
        for ext in extensions {
            args.extend(["-addext", ext]);
        }
        openssl(&args)
    }
}
