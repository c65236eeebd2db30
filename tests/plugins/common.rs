//! Shared fixtures: builds the plugins once per run, and builds engines and inputs.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, OnceLock},
    time::Duration,
};

use ferrosync::{
    api::{CopyMethod, ServiceType},
    policy::{
        CopyMethodInput, EngineConfig, EngineOptions, FailureMode, Grants, Limits, PluginSpec,
        PointConfig, PolicyConfig, PolicyEngine, PskInput, PvcInfo, ServiceTypeInput, Side,
        StorageClassInfo, Topology, credentials::CredentialSource, http::HttpTransport,
        plugin::sha256_hex,
    },
};

pub fn root() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
}

/// A copy at `to` of the shipped bundle `policies/<bundle>`, for a test to change.
pub fn copy_bundle(bundle: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(root().join("policies").join(bundle)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The outcome of `scripts/build-plugins.sh`, run once per test binary.
pub struct Build {
    pub success: bool,
    pub output: String,
}

/// Builds every plugin from source (and checks the sample plugins' pins) once.
pub fn build() -> &'static Build {
    static BUILD: OnceLock<Build> = OnceLock::new();
    BUILD.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("scripts/build-plugins.sh"))
            .output()
            .expect("run scripts/build-plugins.sh");
        Build {
            success: out.status.success(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    })
}

/// The freshly built component of a plugin package.
pub fn wasm(package: &str) -> PathBuf {
    build();
    // FERROSYNC_PLUGINS_TARGET_DIR: where scripts/build-plugins.sh builds (CI keeps it
    // outside the clone).
    let target = std::env::var_os("FERROSYNC_PLUGINS_TARGET_DIR")
        .map_or_else(|| root().join("plugins/target"), PathBuf::from);
    let path = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")));
    assert!(
        path.exists(),
        "{} not built:\n{}",
        path.display(),
        build().output
    );
    path
}

pub fn digest(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).expect("read component"))
}

/// A spec for a freshly built plugin with the given settings.
pub fn spec(package: &str, settings: serde_json::Value) -> PluginSpec {
    let path = wasm(package);
    PluginSpec {
        name: package.into(),
        sha256: digest(&path),
        wasm: path,
        settings,
        limits: Limits::default(),
        grants: Grants::default(),
    }
}

pub fn point(spec: PluginSpec, on_failure: FailureMode) -> Option<PointConfig> {
    Some(PointConfig {
        on_failure,
        ..PointConfig::inline(spec)
    })
}

/// A shipped (or copied) bundle, pinned and capped by the operator exactly as it asks.
pub fn bundle_point(dir: &Path, on_failure: FailureMode) -> Option<PointConfig> {
    Some(PointConfig {
        on_failure,
        ..PointConfig::bundle_as_written(dir).expect("bundle reads")
    })
}

/// A config with the shipped multi-cluster bundle for service-type: the "good plugin"
/// that must keep working next to a hostile one.
pub fn config_with_good_neighbour() -> PolicyConfig {
    PolicyConfig {
        service_type: bundle_point(&root().join("policies/multi-cluster"), FailureMode::Fail),
        engine: EngineConfig {
            epoch_tick: Duration::from_millis(2),
            ..EngineConfig::default()
        },
        ..PolicyConfig::default()
    }
}

pub async fn engine(config: &PolicyConfig) -> PolicyEngine {
    PolicyEngine::new(config, EngineOptions::default())
        .await
        .expect("engine loads")
}

pub async fn engine_with(
    config: &PolicyConfig,
    credentials: Arc<dyn CredentialSource>,
    transport: Option<Arc<dyn HttpTransport>>,
) -> PolicyEngine {
    let mut options = EngineOptions {
        credentials,
        ..EngineOptions::default()
    };
    if let Some(t) = transport {
        options.transport = t;
    }
    PolicyEngine::new(config, options)
        .await
        .expect("engine loads")
}

pub fn copy_input() -> CopyMethodInput {
    CopyMethodInput {
        pvc: PvcInfo {
            name: "data".into(),
            namespace: "app".into(),
            capacity: Some("1Gi".into()),
            access_modes: vec!["ReadWriteOnce".into()],
            ..Default::default()
        },
        storage_class: Some(StorageClassInfo {
            name: "gp2".into(),
            provisioner: "ebs.csi.aws.com".into(),
            parameters: Default::default(),
        }),
        requested: Some(CopyMethod::Clone),
        snapshot_classes: vec!["ebs-snapclass".into()],
        storage_classes: vec!["gp2".into(), "gp3".into()],
        clone_failure: None,
    }
}

pub fn service_input() -> ServiceTypeInput {
    ServiceTypeInput {
        namespace: "dr".into(),
        name: "db".into(),
        labels: Default::default(),
        requested: None,
        topology: Topology {
            node_count: 3,
            provider_id_prefixes: vec!["aws".into()],
            load_balancer_ingress_seen: true,
            ..Default::default()
        },
    }
}

pub fn psk_input(side: Side, pair: Option<&str>) -> PskInput {
    PskInput {
        side,
        namespace: "dr".into(),
        name: "db".into(),
        labels: Default::default(),
        annotations: pair
            .map(|p| [("ferrosync.io/psk-pair".to_owned(), p.to_owned())].into())
            .unwrap_or_default(),
        key_secret_name: "volsync-rsync-tls-db".into(),
        key_secret_exists: false,
        member: String::new(),
    }
}

/// The good neighbour still decides, by plugin, after whatever happened next door.
pub async fn assert_good_neighbour_works(engine: &PolicyEngine) {
    let d = engine
        .service_type(&service_input())
        .await
        .expect("the good plugin still decides");
    assert_eq!(d.decision.service_type, ServiceType::LoadBalancer);
    assert_eq!(
        d.provenance.plugin.as_deref(),
        Some("service-type-by-topology")
    );
    let event = d.provenance.event(&d.decision.reason);
    assert!(!event.warning);
    assert_eq!(event.reason, "PolicyDecision");
    assert!(
        event.message.contains("plugin service-type-by-topology"),
        "{}",
        event.message
    );
}

/// A copy of the shipped multi-cluster bundle that a test changes under a running engine.
pub struct Reloadable {
    pub _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub config: PolicyConfig,
    pub engine: PolicyEngine,
}

impl Reloadable {
    /// The copy, and an engine deciding service types with it.
    pub async fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("multi-cluster");
        copy_bundle("multi-cluster", &dir);
        let config = PolicyConfig {
            service_type: bundle_point(&dir, FailureMode::Fail),
            ..PolicyConfig::default()
        };
        let engine = engine(&config).await;
        Reloadable {
            _tmp: tmp,
            dir,
            config,
            engine,
        }
    }
}
