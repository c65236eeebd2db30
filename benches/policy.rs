//! Policy decision latency, p50 and p99, side by side for each sample plugin:
//! - cold: a new engine, compilation included, then one decision;
//! - warm: compiled, `InstancePre` ready; each decision still gets a fresh Store and
//!   instantiation (the sandbox time the host measures, and the full async API call with
//!   its hop to a blocking thread);
//! - cache hit: a repeated pure decision served from the decision cache;
//! - native: the same decision written in Rust (settings parsed per call, as the plugin does).
//!
//! A report, not a pass/fail timing. Run: `cargo bench --bench policy` (plugins must be
//! built first: `scripts/build-plugins.sh`).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use ferrosync::{
    api::{CopyMethod, ServiceType, psk::Psk},
    policy::{
        CopyMethodInput, DecidedBy, EngineConfig, EngineOptions, FailureMode, PointConfig,
        PolicyConfig, PolicyEngine, PskInput, PvcInfo, ServiceTypeInput, Side, StorageClassInfo,
        Topology,
        credentials::{CredentialPolicy, StaticCredentials},
        http::{HttpError, HttpLimits, HttpRequest, HttpResponse, HttpTransport},
        pairs,
        plugin::BundleFile,
    },
};
use serde::Deserialize;

const WARM: usize = 5000;
const COLD: usize = 10;

fn bundle(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("policies")
        .join(name)
}

fn config(point: &str, name: &str, cache_entries: usize) -> PolicyConfig {
    let p = Some(PointConfig {
        on_failure: FailureMode::Fail,
        ..PointConfig::bundle_as_written(&bundle(name)).expect("bundle")
    });
    let mut c = PolicyConfig {
        engine: EngineConfig {
            cache_entries,
            ..EngineConfig::default()
        },
        // The shipped vault bundle's layout, as an operator configures it.
        credentials: CredentialPolicy::new(
            vec!["https://vault.vault.svc:8200/v1/secret/data/ferrosync/psk/{pair}".into()],
            vec![],
        ),
        ..PolicyConfig::default()
    };
    match point {
        "copy-method" => c.copy_method = p,
        "service-type" => c.service_type = p,
        _ => c.psk = p,
    }
    c
}

/// A vault that always has the key: the HTTP exchange costs no network time.
struct FixedVault;

const VAULT_BODY: &str = r#"{"data":{"data":{"psk":"ferrosync:3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a3f2a"},"metadata":{"version":1}}}"#;

impl HttpTransport for FixedVault {
    fn send(&self, _: &HttpRequest, _: HttpLimits) -> Result<HttpResponse, HttpError> {
        Ok(HttpResponse {
            status: 200,
            headers: vec![],
            body: VAULT_BODY.as_bytes().to_vec(),
        })
    }
}

fn options() -> EngineOptions {
    EngineOptions {
        credentials: Arc::new(StaticCredentials::new().with("ferrosync-vault-token", "token", "t")),
        transport: Arc::new(FixedVault),
        ..EngineOptions::default()
    }
}

fn copy_input() -> CopyMethodInput {
    CopyMethodInput {
        pvc: PvcInfo {
            name: "data".into(),
            namespace: "app".into(),
            capacity: Some("10Gi".into()),
            access_modes: vec!["ReadWriteOnce".into()],
            volume_mode: Some("Filesystem".into()),
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

fn service_input() -> ServiceTypeInput {
    ServiceTypeInput {
        namespace: "dr".into(),
        name: "db".into(),
        labels: [("app".to_owned(), "db".to_owned())].into(),
        requested: None,
        topology: Topology {
            node_count: 6,
            regions: vec!["eu-west-1".into()],
            zones: vec!["eu-west-1a".into(), "eu-west-1b".into()],
            provider_id_prefixes: vec!["aws".into()],
            load_balancer_ingress_seen: true,
            service_export_crd: false,
        },
    }
}

fn psk_input() -> PskInput {
    PskInput {
        side: Side::Source,
        namespace: "dr".into(),
        name: "db".into(),
        annotations: [("ferrosync.io/psk-pair".to_owned(), "db-eu-us".to_owned())].into(),
        key_secret_name: "volsync-rsync-tls-db".into(),
        ..Default::default()
    }
}

// ---- native equivalents ---------------------------------------------------------------

#[derive(Deserialize, Default)]
struct Driver {
    #[serde(default)]
    clone: bool,
    #[serde(default)]
    snapshot: bool,
    #[serde(default)]
    snapshot_class: Option<String>,
    #[serde(default)]
    pit_storage_class: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    prefer: Option<String>,
}

#[derive(Deserialize, Default)]
struct DriverSettings {
    #[serde(default)]
    drivers: BTreeMap<String, Driver>,
}

fn native_copy_method(
    settings: &str,
    input: &CopyMethodInput,
) -> (CopyMethod, Option<String>, Option<String>) {
    let s: DriverSettings = serde_json::from_str(settings).unwrap_or_default();
    let prov = input
        .storage_class
        .as_ref()
        .map(|c| c.provisioner.as_str())
        .unwrap_or("");
    let d = s.drivers.get(prov);
    let (clone, snap) = d.map(|d| (d.clone, d.snapshot)).unwrap_or((true, true));
    let class = d
        .and_then(|d| d.snapshot_class.clone())
        .filter(|c| input.snapshot_classes.contains(c))
        .or_else(|| input.snapshot_classes.first().cloned());
    let sc = d
        .and_then(|d| d.pit_storage_class.clone())
        .filter(|c| input.storage_classes.contains(c));
    match input.requested {
        Some(CopyMethod::Clone) if clone && input.clone_failure.is_none() => {
            (CopyMethod::Clone, None, sc)
        }
        Some(CopyMethod::Clone) if snap && class.is_some() => (CopyMethod::Snapshot, class, sc),
        _ => (CopyMethod::Direct, None, None),
    }
}

#[derive(Deserialize, Default)]
struct TopoSettings {
    #[serde(default)]
    load_balancer_providers: Vec<String>,
    #[serde(default)]
    annotations: BTreeMap<String, BTreeMap<String, String>>,
}

fn native_service_type(
    settings: &str,
    input: &ServiceTypeInput,
) -> (ServiceType, BTreeMap<String, String>) {
    let s: TopoSettings = serde_json::from_str(settings).unwrap_or_default();
    let t = &input.topology;
    let provider = t
        .provider_id_prefixes
        .iter()
        .find(|p| s.load_balancer_providers.contains(p));
    match (input.requested, provider) {
        (Some(r), _) => (r, BTreeMap::new()),
        (None, _) if t.service_export_crd => (ServiceType::ClusterIP, BTreeMap::new()),
        (None, Some(p)) => (
            ServiceType::LoadBalancer,
            s.annotations.get(p).cloned().unwrap_or_default(),
        ),
        _ => (ServiceType::ClusterIP, BTreeMap::new()),
    }
}

fn native_psk(input: &PskInput, body: &[u8]) -> Option<Psk> {
    let pair = input.annotations.get("ferrosync.io/psk-pair")?;
    let _url = format!("https://vault.vault.svc:8200/v1/secret/data/ferrosync/psk/{pair}");
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Psk::parse(v.pointer("/data/data/psk")?.as_str()?).ok()
}

// ---- measurement ----------------------------------------------------------------------

struct Stats {
    p50: Duration,
    p99: Duration,
    n: usize,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let n = v.len();
    Stats {
        p50: v[n / 2],
        p99: v[(n * 99 / 100).min(n - 1)],
        n,
    }
}

fn fmt(s: &Stats) -> String {
    format!("{:>9.1?} / {:>9.1?}", s.p50, s.p99)
}

fn settings_json(name: &str) -> String {
    let b = BundleFile::read(&bundle(name)).expect("bundle");
    serde_json::to_string(&b.plugin.settings).expect("settings")
}

struct Row {
    plugin: &'static str,
    cold: Stats,
    warm_sandbox: Stats,
    warm_api: Stats,
    cache: Option<Stats>,
    native: Stats,
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut rows = Vec::new();
    for (point, name, plugin) in [
        ("copy-method", "aws-ebs", "copy-method-by-driver"),
        ("service-type", "multi-cluster", "service-type-by-topology"),
        ("psk", "vault", "psk-from-vault"),
    ] {
        let row = rt.block_on(async {
            let decide = |engine: PolicyEngine| async move {
                match point {
                    "copy-method" => engine
                        .copy_method(&copy_input())
                        .await
                        .map(|d| d.provenance),
                    "service-type" => engine
                        .service_type(&service_input())
                        .await
                        .map(|d| d.provenance),
                    _ => {
                        let input = psk_input();
                        let ns = [(pairs::PREFIXES_ANNOTATION.to_owned(), "db-".to_owned())];
                        let pair = pairs::authorise("dr", &input.annotations, &ns.into())
                            .expect("authorised");
                        engine
                            .psk_for_pair(&input, pair.as_ref())
                            .await
                            .map(|d| d.provenance)
                    }
                }
                .expect("decides")
            };

            let mut cold = Vec::new();
            for _ in 0..COLD {
                let t = Instant::now();
                let engine = PolicyEngine::new(&config(point, name, 0), options())
                    .await
                    .expect("loads");
                decide(engine).await;
                cold.push(t.elapsed());
            }

            let engine = PolicyEngine::new(&config(point, name, 0), options())
                .await
                .expect("loads");
            for _ in 0..200 {
                decide(engine.clone()).await;
            }
            let (mut sandbox, mut api) = (Vec::new(), Vec::new());
            for _ in 0..WARM {
                let t = Instant::now();
                let prov = decide(engine.clone()).await;
                api.push(t.elapsed());
                assert_eq!(prov.decided_by, DecidedBy::Plugin);
                sandbox.push(prov.latency);
            }

            let cache = if point == "psk" {
                None
            } else {
                let cached = PolicyEngine::new(&config(point, name, 1024), options())
                    .await
                    .expect("loads");
                decide(cached.clone()).await;
                let mut hits = Vec::new();
                for _ in 0..WARM {
                    let t = Instant::now();
                    let prov = decide(cached.clone()).await;
                    hits.push(t.elapsed());
                    assert_eq!(prov.decided_by, DecidedBy::Cache);
                }
                Some(stats(hits))
            };

            let settings = settings_json(name);
            let mut native = Vec::new();
            for _ in 0..WARM {
                let t = Instant::now();
                match point {
                    "copy-method" => {
                        std::hint::black_box(native_copy_method(&settings, &copy_input()));
                    }
                    "service-type" => {
                        std::hint::black_box(native_service_type(&settings, &service_input()));
                    }
                    _ => {
                        std::hint::black_box(native_psk(&psk_input(), VAULT_BODY.as_bytes()));
                    }
                }
                native.push(t.elapsed());
            }
            Row {
                plugin,
                cold: stats(cold),
                warm_sandbox: stats(sandbox),
                warm_api: stats(api),
                cache,
                native: stats(native),
            }
        });
        rows.push(row);
    }

    println!("p50 / p99 per decision ({WARM} warm, {COLD} cold iterations)\n");
    println!(
        "| plugin | cold (compile + decide) | warm: Store + instantiate + call | warm: async API call | cache hit | native Rust |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.plugin,
            fmt(&r.cold),
            fmt(&r.warm_sandbox),
            fmt(&r.warm_api),
            r.cache
                .as_ref()
                .map(fmt)
                .unwrap_or_else(|| "not cached (keys)".into()),
            fmt(&r.native),
        );
        let _ = r.cold.n;
    }
}
