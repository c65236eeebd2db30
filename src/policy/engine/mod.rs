//! [`PolicyEngine`]: the controller's entry point to policy decisions.
//!
//! One wasmtime `Engine` (fuel and epoch interruption on, optionally pooled), one linker,
//! components cached by sha256, an `InstancePre` per plugin, and the current plugin set
//! behind a lock that a reload swaps whole. Each decision gets a fresh Store on a blocking
//! thread, behind its decision point's own semaphore and within its deadline. The engine must never let a plugin failure escape as a
//! panic or hang: failures become a fallback or a `PolicyError`, always reported.

use std::{
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::Semaphore;
use wasmtime::{Engine, component::Linker};

mod decide;
mod overlap;

pub use overlap::BindingOverlap;

use super::{
    cache::DecisionCache,
    config::{FailureMode, PointConfig, PolicyConfig},
    credentials::{CredentialPolicy, CredentialSource, NoCredentials},
    http::{HttpTransport, LiveTransport},
    key_wait::KeyWaits,
    metrics::{PolicyMetrics, ReloadLabels},
    namespaces::{NamespaceLabels, StaticNamespaceLabels},
    plugin::{self, ComponentCache, LoadError, LoadedPlugin},
    sandbox::{self, HostState},
    scope::{self, BindingConfig, DEFAULT_BINDING},
    shadow::ShadowLog,
    signature::Trust,
    types::*,
};

/// Largest memory any plugin may be configured with (the pooling allocator's slot size).
pub const MAX_PLUGIN_MEMORY_MIB: u32 = 512;

/// Bytes of each pooled linear memory reset with memset instead of madvise.
const KEEP_RESIDENT: usize = 512 << 10;

/// What the engine is built with besides configuration.
pub struct EngineOptions {
    /// Resolves the Secrets named by HTTP grants.
    pub credentials: Arc<dyn CredentialSource>,
    /// Sends granted HTTP requests (live, or a replay for `policy test`).
    pub transport: Arc<dyn HttpTransport>,
    /// Where decisions are counted.
    pub metrics: PolicyMetrics,
    /// Namespace labels, for bindings that select namespaces by label.
    pub namespaces: Arc<dyn NamespaceLabels>,
    /// Where `[policy.oci] pull_secret` is read from (the controller: its namespace).
    pub pull_secrets: Arc<dyn super::oci::PullSecretSource>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            credentials: Arc::new(NoCredentials),
            transport: Arc::new(LiveTransport),
            metrics: PolicyMetrics::default(),
            namespaces: Arc::new(StaticNamespaceLabels::default()),
            pull_secrets: Arc::new(super::oci::LocalDockerConfig),
        }
    }
}

/// One plugin as loaded, for logs, `policy check` and status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PluginInfo {
    pub point: DecisionPoint,
    pub name: String,
    pub sha256: String,
    pub on_failure: FailureMode,
    /// The binding it serves (`default` for the cluster-wide default).
    pub binding: String,
    /// A shadow candidate: recorded, never acted on.
    pub shadow: bool,
}

/// One decision point's plugin per point (any may be absent: the built-in answers).
#[derive(Default)]
pub(super) struct Points {
    copy_method: Option<Arc<LoadedPlugin>>,
    service_type: Option<Arc<LoadedPlugin>>,
    psk: Option<Arc<LoadedPlugin>>,
}

impl Points {
    pub(super) fn of(&self, point: DecisionPoint) -> Option<Arc<LoadedPlugin>> {
        match point {
            DecisionPoint::CopyMethod => self.copy_method.clone(),
            DecisionPoint::ServiceType => self.service_type.clone(),
            DecisionPoint::Psk => self.psk.clone(),
        }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        [&self.copy_method, &self.service_type, &self.psk]
            .into_iter()
            .flatten()
    }
}

/// The plugins of the default or of one binding: active, and shadow candidates.
pub(super) struct Scope {
    pub(super) name: String,
    pub(super) active: Points,
    pub(super) shadow: Points,
}

struct PluginSet {
    /// The cluster-wide default.
    default: Scope,
    /// `[[policy.bindings]]`, in configuration order, with their configurations (which
    /// `scope::select` reads).
    bindings: Vec<Scope>,
    binding_configs: Vec<BindingConfig>,
    /// `[policy.credentials]`: where injected credentials may go.
    credential_policy: CredentialPolicy,
}

impl Default for PluginSet {
    fn default() -> Self {
        PluginSet {
            default: Scope {
                name: DEFAULT_BINDING.into(),
                active: Points::default(),
                shadow: Points::default(),
            },
            bindings: Vec::new(),
            binding_configs: Vec::new(),
            credential_policy: CredentialPolicy::default(),
        }
    }
}

impl PluginSet {
    fn scope(&self, binding: Option<usize>) -> &Scope {
        binding
            .and_then(|i| self.bindings.get(i))
            .unwrap_or(&self.default)
    }

    fn scopes(&self) -> impl Iterator<Item = &Scope> {
        std::iter::once(&self.default).chain(&self.bindings)
    }

    fn all(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.scopes()
            .flat_map(|s| s.active.all().chain(s.shadow.all()))
    }
}

struct Caches {
    copy_method: DecisionCache<CopyMethodDecision>,
    service_type: DecisionCache<ServiceTypeDecision>,
}

/// Drives epoch deadlines: increments the engine's epoch every tick until dropped.
struct EpochTicker(Arc<AtomicBool>);

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // A plain thread rather than a tokio task: deadlines must hold even when the
        // async runtime is starved, and the CLI and benchmarks have no runtime of their own.
        let spawned = std::thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the policy epoch ticker; deadlines rely on fuel alone");
        }
        EpochTicker(stop)
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Each decision point's slots: a slow plugin at one point (a vault taking seconds) never
/// holds up decisions at another.
struct Permits {
    copy_method: Arc<Semaphore>,
    service_type: Arc<Semaphore>,
    psk: Arc<Semaphore>,
}

impl Permits {
    fn new(config: &PolicyConfig) -> Self {
        let n = |p: DecisionPoint| Arc::new(Semaphore::new(point_concurrency(config, p)));
        Permits {
            copy_method: n(DecisionPoint::CopyMethod),
            service_type: n(DecisionPoint::ServiceType),
            psk: n(DecisionPoint::Psk),
        }
    }

    fn of(&self, point: DecisionPoint) -> &Arc<Semaphore> {
        match point {
            DecisionPoint::CopyMethod => &self.copy_method,
            DecisionPoint::ServiceType => &self.service_type,
            DecisionPoint::Psk => &self.psk,
        }
    }
}

/// A point's concurrency: the default's setting, else the engine's; at least one. The
/// point's slots are shared by every binding, so bindings cannot add threads.
fn point_concurrency(config: &PolicyConfig, point: DecisionPoint) -> usize {
    config
        .point(point)
        .and_then(|p| p.concurrency)
        .unwrap_or(config.engine.max_concurrency)
        .max(1)
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    components: ComponentCache,
    set: RwLock<Arc<PluginSet>>,
    permits: Permits,
    key_waits: KeyWaits,
    caches: Caches,
    tick: Duration,
    options: EngineOptions,
    last_reload_error: Mutex<Option<String>>,
    shadow_log: ShadowLog,
    _ticker: EpochTicker,
}

/// The policy host. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct PolicyEngine {
    inner: Arc<Inner>,
}

fn config_has_shadow(policy: &PolicyConfig) -> bool {
    policy.all_points().iter().any(|(_, _, _, shadow)| *shadow)
}

fn wasmtime_engine(policy: &PolicyConfig) -> Result<Engine, LoadError> {
    let cfg = &policy.engine;
    let mut config = wasmtime::Config::new();
    config.consume_fuel(true).epoch_interruption(true);
    if cfg.pooling {
        // Every point's slots can be busy at once; a reload briefly doubles a point's runs.
        // Shadow candidates run beside the active plugin: count each point twice when any
        // candidate is configured.
        let shadows = config_has_shadow(policy);
        let concurrency: usize = [
            DecisionPoint::CopyMethod,
            DecisionPoint::ServiceType,
            DecisionPoint::Psk,
        ]
        .into_iter()
        .map(|p| point_concurrency(policy, p) * if shadows { 2 } else { 1 })
        .sum();
        let slots = u32::try_from(concurrency).unwrap_or(u32::MAX / 64).max(1) * 4;
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 8)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_core_instances_per_component(32)
            .max_memory_size((MAX_PLUGIN_MEMORY_MIB as usize) << 20)
            .total_stacks(slots)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config).map_err(|e| LoadError::Invalid {
        plugin: "(engine)".into(),
        message: format!("{e:#}"),
    })
}

impl PolicyEngine {
    /// Builds the engine and loads every configured plugin. Any load failure is an error:
    /// at start-up there is no old set to keep.
    pub async fn new(config: &PolicyConfig, options: EngineOptions) -> Result<Self, LoadError> {
        let engine = wasmtime_engine(config)?;
        let linker = sandbox::linker(&engine).map_err(|e| LoadError::Invalid {
            plugin: "(linker)".into(),
            message: format!("{e:#}"),
        })?;
        let entries = config.engine.cache_entries;
        let inner = Arc::new(Inner {
            _ticker: EpochTicker::start(engine.clone(), config.engine.epoch_tick),
            engine,
            linker,
            components: ComponentCache::default(),
            set: RwLock::new(Arc::new(PluginSet::default())),
            permits: Permits::new(config),
            key_waits: KeyWaits::new(config.engine.key_retry_min, config.engine.key_retry_max),
            caches: Caches {
                copy_method: DecisionCache::new(entries),
                service_type: DecisionCache::new(entries),
            },
            tick: config.engine.epoch_tick,
            options,
            last_reload_error: Mutex::new(None),
            shadow_log: ShadowLog::default(),
        });
        let this = PolicyEngine { inner };
        let set = this.build_set(config).await?;
        this.swap(set);
        Ok(this)
    }

    /// The metrics this engine records into.
    pub fn metrics(&self) -> &PolicyMetrics {
        &self.inner.options.metrics
    }

    /// The plugins currently serving decisions.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        let set = self.current();
        set.scopes()
            .flat_map(|s| {
                let info = move |p: &Arc<LoadedPlugin>, shadow: bool| PluginInfo {
                    point: p.point,
                    name: p.name.clone(),
                    sha256: p.sha256.clone(),
                    on_failure: p.on_failure,
                    binding: s.name.clone(),
                    shadow,
                };
                s.active
                    .all()
                    .map(move |p| info(p, false))
                    .chain(s.shadow.all().map(move |p| info(p, true)))
            })
            .collect()
    }

    /// Why the last reload was refused, until one succeeds.
    pub fn last_reload_error(&self) -> Option<String> {
        self.inner
            .last_reload_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Loads and checks a whole new set, then swaps it in atomically. On any failure the
    /// old set keeps serving and the error says why.
    pub async fn reload(&self, config: &PolicyConfig) -> Result<Vec<PluginInfo>, LoadError> {
        let result = self.build_set(config).await;
        let label = if result.is_ok() { "ok" } else { "failed" };
        self.metrics()
            .reloads
            .get_or_create(&ReloadLabels {
                result: label.into(),
            })
            .inc();
        let mut last = self
            .inner
            .last_reload_error
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(set) => {
                self.metrics().reload_refused.set(0);
                *last = None;
                drop(last);
                self.swap(set);
                let plugins = self.plugins();
                tracing::info!(?plugins, "policy plugins reloaded");
                Ok(plugins)
            }
            Err(e) => {
                self.metrics().reload_refused.set(1);
                tracing::error!(error = %e, "policy reload refused; the previous plugins keep serving");
                *last = Some(e.to_string());
                Err(e)
            }
        }
    }

    async fn build_set(&self, config: &PolicyConfig) -> Result<PluginSet, LoadError> {
        let inner = self.inner.clone();
        // Bundles named by OCI reference are pulled (or found in the cache) and verified
        // first; from then on they load as directories.
        let config = super::oci::materialise(config, inner.options.pull_secrets.as_ref())
            .await
            .map_err(LoadError::Oci)?;
        // Compilation is CPU-bound: keep it off the async executor.
        tokio::task::spawn_blocking(move || {
            let trust = Trust::load(&config.signatures).map_err(|source| LoadError::Signature {
                plugin: "(signatures)".into(),
                source,
            })?;
            let load = |point, cfg: Option<&PointConfig>, shadow: bool| {
                cfg.map(|c| {
                    plugin::load(
                        &inner.engine,
                        &inner.linker,
                        &inner.components,
                        point,
                        c,
                        trust.as_ref(),
                    )
                    .map(|mut p| {
                        p.shadow = shadow;
                        if shadow {
                            // A candidate gets no credential (see `shadow`).
                            p.credential = None;
                        }
                        Arc::new(p)
                    })
                })
                .transpose()
            };
            let points = |of: [Option<&PointConfig>; 3], shadow: bool| {
                let [copy_method, service_type, psk] = of;
                Ok::<_, LoadError>(Points {
                    copy_method: load(DecisionPoint::CopyMethod, copy_method, shadow)?,
                    service_type: load(DecisionPoint::ServiceType, service_type, shadow)?,
                    psk: load(DecisionPoint::Psk, psk, shadow)?,
                })
            };
            let all = [
                DecisionPoint::CopyMethod,
                DecisionPoint::ServiceType,
                DecisionPoint::Psk,
            ];
            config
                .credentials
                .validate()
                .map_err(|e| LoadError::Invalid {
                    plugin: "(credentials)".into(),
                    message: e.to_string(),
                })?;
            scope::check(&config.bindings).map_err(|e| LoadError::Invalid {
                plugin: "(bindings)".into(),
                message: e.to_string(),
            })?;
            let default = Scope {
                name: DEFAULT_BINDING.into(),
                active: points(all.map(|p| config.point(p)), false)?,
                shadow: points(all.map(|p| config.shadow.point(p)), true)?,
            };
            let bindings = config
                .bindings
                .iter()
                .map(|b| {
                    Ok(Scope {
                        name: b.name.clone(),
                        active: points(all.map(|p| b.point(p)), false)?,
                        shadow: points(all.map(|p| b.shadow.point(p)), true)?,
                    })
                })
                .collect::<Result<Vec<_>, LoadError>>()?;
            let set = PluginSet {
                default,
                bindings,
                binding_configs: config.bindings.clone(),
                credential_policy: config.credentials.clone(),
            };
            for p in set.all() {
                if p.limits.memory_mib > MAX_PLUGIN_MEMORY_MIB {
                    return Err(LoadError::Invalid {
                        plugin: p.name.clone(),
                        message: format!("memory_mib above {MAX_PLUGIN_MEMORY_MIB}"),
                    });
                }
            }
            Ok(set)
        })
        .await
        .map_err(|e| LoadError::Invalid {
            plugin: "(loader)".into(),
            message: e.to_string(),
        })?
    }

    fn swap(&self, set: PluginSet) {
        let keep: Vec<String> = set.all().map(|p| p.sha256.clone()).collect();
        *self.inner.set.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        self.inner.caches.copy_method.clear();
        self.inner.caches.service_type.clear();
        self.inner
            .components
            .retain(&keep.iter().map(String::as_str).collect::<Vec<_>>());
    }

    fn current(&self) -> Arc<PluginSet> {
        self.inner
            .set
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
