//! The decision path: built-in default, cache, credentials, a sandboxed run on a blocking
//! thread, validation, then fallback or failure as configured, with metrics and logs.
//!
//! Every path returns a decision with provenance or a [`PolicyError`]; none may panic or
//! wait without bound (the run is bounded by fuel and the epoch deadline).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    super::{
        cache::DecisionCache,
        config::FailureMode,
        credentials::CredentialScope,
        execute::{self, CopyMethodPoint, Point, PskPoint, ServiceTypePoint},
        http::Credential,
        key_wait::WaitKey,
        metrics::{DecisionLabels, FailureLabels, PluginLabels, ShadowLabels},
        outcome::{Decided, DecidedBy, Failure, FailureKind, PolicyError, Provenance},
        pairs::AuthorisedPair,
        plugin::LoadedPlugin,
        release::{PskRelease, PskReleaseInput, PskReleasePoint},
        scope::{self, DEFAULT_BINDING, Selection},
        shadow::{self, Comparable, ObjectOf, ShadowComparison, ShadowOutcome, ShadowRecord},
        types::*,
    },
    PluginSet, PolicyEngine, Scope,
};

impl PolicyEngine {
    /// Chooses a source's copy method.
    ///
    /// `Ok` carries the decision to use and its provenance: record `provenance.summary()`
    /// and the decision's `reason` in an Event and the status; when `provenance.failure` is
    /// set (a fallback), also a Warning Event with `failure.kind.event_reason()`. `Err`
    /// means the point is configured to `fail`: set the Error condition to its message.
    pub async fn copy_method(
        &self,
        input: &CopyMethodInput,
    ) -> Result<Decided<CopyMethodDecision>, PolicyError> {
        let set = self.current();
        let point = DecisionPoint::CopyMethod;
        let selection = self.select(&set, point, &input.pvc.namespace).await?;
        let scope = set.scope(selection.binding);
        let credentials = set.credential_policy.scope(None);
        let decided = self
            .decide::<CopyMethodPoint>(
                scope.active.of(point),
                input,
                Some(&self.inner.caches.copy_method),
                credentials,
            )
            .await;
        self.scoped::<CopyMethodPoint>(decided, scope, selection, input, &set)
            .await
    }

    /// Chooses a destination's Service type and annotations; apply them with
    /// [`ServiceTypeDecision::merged_annotations`], so the user's `serviceAnnotations` win.
    /// Results as for [`PolicyEngine::copy_method`].
    pub async fn service_type(
        &self,
        input: &ServiceTypeInput,
    ) -> Result<Decided<ServiceTypeDecision>, PolicyError> {
        let set = self.current();
        let point = DecisionPoint::ServiceType;
        let selection = self.select(&set, point, &input.namespace).await?;
        let scope = set.scope(selection.binding);
        let credentials = set.credential_policy.scope(None);
        let decided = self
            .decide::<ServiceTypePoint>(
                scope.active.of(point),
                input,
                Some(&self.inner.caches.service_type),
                credentials,
            )
            .await;
        self.scoped::<ServiceTypePoint>(decided, scope, selection, input, &set)
            .await
    }

    /// The binding answering `point` for an object in `namespace`; an error when its
    /// labels are needed and cannot be read (transient: the reconcile retries).
    async fn select(
        &self,
        set: &PluginSet,
        point: DecisionPoint,
        namespace: &str,
    ) -> Result<Selection, PolicyError> {
        if !scope::needs_labels(&set.binding_configs, point) {
            return Ok(scope::select(&set.binding_configs, point, namespace, None));
        }
        match self.inner.options.namespaces.labels(namespace).await {
            Ok(labels) => Ok(scope::select(
                &set.binding_configs,
                point,
                namespace,
                Some(&labels),
            )),
            Err(e) => {
                let failure = Failure {
                    kind: FailureKind::Internal,
                    message: format!("choosing the binding: {e}"),
                };
                Err(PolicyError::PluginFailed {
                    point,
                    plugin: "(bindings)".into(),
                    failure,
                    provenance: Box::new(provenance(point, None, DecidedBy::BuiltIn)),
                })
            }
        }
    }

    /// Marks a decision with the binding that answered, and runs the binding's shadow
    /// candidate, if any, on the same input: its answer is compared and recorded, never
    /// used.
    async fn scoped<P: Point>(
        &self,
        decided: Result<Decided<P::Decision>, PolicyError>,
        scope: &Scope,
        selection: Selection,
        input: &P::Input,
        set: &PluginSet,
    ) -> Result<Decided<P::Decision>, PolicyError>
    where
        P::Decision: Comparable,
        P::Input: ObjectOf,
    {
        let mark = |p: &mut Provenance| {
            p.binding = scope.name.clone();
            p.overruled = selection.overruled.clone();
        };
        let mut decided = match decided {
            Ok(mut d) => {
                mark(&mut d.provenance);
                d
            }
            Err(PolicyError::PluginFailed {
                point,
                plugin,
                failure,
                mut provenance,
            }) => {
                mark(&mut provenance);
                return Err(PolicyError::PluginFailed {
                    point,
                    plugin,
                    failure,
                    provenance,
                });
            }
        };
        let Some(candidate) = scope.shadow.of(P::POINT) else {
            return Ok(decided);
        };
        let name = candidate.name.clone();
        let shadow = self
            .decide::<P>(
                Some(candidate),
                input,
                None,
                set.credential_policy.scope(None),
            )
            .await;
        let candidate = match &shadow {
            Ok(d) if d.provenance.failure.is_none() => Ok(&d.decision),
            Ok(d) => Err(d
                .provenance
                .failure
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()),
            Err(e) => Err(e.to_string()),
        };
        let (outcome, answer) = shadow::compare(&decided.decision, candidate);
        self.metrics()
            .shadow
            .get_or_create(&ShadowLabels {
                point: P::POINT.as_str().into(),
                binding: scope.name.clone(),
                plugin: name.clone(),
                outcome: outcome.as_str().into(),
            })
            .inc();
        let (namespace, object) = input.object();
        let mut comparison = ShadowComparison {
            plugin: name,
            outcome,
            active: decided.decision.compared(),
            candidate: answer,
            first_difference: false,
        };
        comparison.first_difference = self.inner.shadow_log.record(ShadowRecord {
            at: std::time::SystemTime::now(),
            binding: scope.name.clone(),
            point: P::POINT,
            namespace,
            name: object,
            comparison: comparison.clone(),
        });
        if outcome != ShadowOutcome::Agree {
            tracing::info!(
                point = P::POINT.as_str(),
                binding = %scope.name,
                candidate = %comparison.plugin,
                outcome = outcome.as_str(),
                active = %comparison.active,
                would = %comparison.candidate,
                "shadow plugin answered differently; not acted on"
            );
        }
        decided.provenance.shadow = Some(comparison);
        Ok(decided)
    }

    /// The shadow log: candidates' answers that differed or failed, oldest first.
    pub fn shadow_log(&self) -> Vec<ShadowRecord> {
        self.inner.shadow_log.entries()
    }

    /// Supplies a replication's key. Ask only when the user gave no `keySecret`. A key
    /// (`UseKey`, or one generated for `GenerateLocally`) goes into the generated key
    /// Secret (`volsync-rsync-tls-<name>` of a destination, `ferrosync-source-key-<name>`
    /// of a source), published in `status.rsyncTLS.keySecret`;
    /// `NotAvailableYet` is transient: requeue. Never cached: keys must not linger in
    /// memory. Results as for [`PolicyEngine::copy_method`].
    ///
    /// A replication told `NotAvailableYet` is not asked again until its backoff
    /// (`engine.key_retry_min`..`key_retry_max`, with jitter) has passed: until then the
    /// same answer comes back, `decided_by: cache`, without running the plugin.
    pub async fn psk(&self, input: &PskInput) -> Result<Decided<PskDecision>, PolicyError> {
        self.psk_for_pair(input, None).await
    }

    /// [`PolicyEngine::psk`] for an object whose pair the host authorised: the plugin's
    /// credential may then go to that pair's `[policy.credentials]` targets, and nowhere
    /// else a pair is substituted.
    pub async fn psk_for_pair(
        &self,
        input: &PskInput,
        pair: Option<&AuthorisedPair>,
    ) -> Result<Decided<PskDecision>, PolicyError> {
        let set = self.current();
        let member = Some(input.member.as_str()).filter(|m| !m.is_empty());
        let credentials = set.credential_policy.scope_for(pair, member);
        // By the pair name, never the namespace: both sides of a pair get their key from
        // the same bundle wherever they live (see `scope`).
        let selection = scope::select_psk(&set.binding_configs, pair.map(|p| p.as_str()));
        let scope = set.scope(selection.binding);
        let plugin = scope.active.of(DecisionPoint::Psk);
        let ask = self.decide::<PskPoint>(plugin.clone(), input, None, credentials);
        let decided = self.with_key_backoff(input, plugin.as_deref(), ask).await;
        self.scoped::<PskPoint>(decided, scope, selection, input, &set)
            .await
    }

    /// The psk plugin's `release` for `input`, its credential scoped to `pair` and the
    /// input's member; see [`PolicyEngine::psk_release`].
    pub(crate) async fn release_with_scope(
        &self,
        pair: &AuthorisedPair,
        input: &PskReleaseInput,
    ) -> Result<Decided<PskRelease>, PolicyError> {
        let set = self.current();
        let credentials = set
            .credential_policy
            .scope_for(Some(pair), Some(input.member.as_str()));
        // The bundle that gave the pair its key releases it: chosen by the pair's name,
        // as for the key (see `scope`).
        let selection = scope::select_psk(&set.binding_configs, Some(pair.as_str()));
        let plugin = set.scope(selection.binding).active.of(DecisionPoint::Psk);
        self.decide::<PskReleasePoint>(plugin, input, None, credentials)
            .await
    }

    /// Whether a psk plugin is loaded whose credential the operator lets reach member
    /// paths (a `{member}` target): only then do the objects of a pair join it, and
    /// need a release when deleted.
    pub fn tracks_pair_members(&self) -> bool {
        let set = self.current();
        set.scopes().any(|s| s.active.psk.is_some()) && set.credential_policy.has_member_targets()
    }

    /// `ask` (the psk plugin's run, not started yet), unless `input`'s replication was told
    /// `NotAvailableYet` and its backoff has not passed: then that answer again, unasked.
    async fn with_key_backoff(
        &self,
        input: &PskInput,
        plugin: Option<&LoadedPlugin>,
        ask: impl Future<Output = Result<Decided<PskDecision>, PolicyError>>,
    ) -> Result<Decided<PskDecision>, PolicyError> {
        let Some(p) = plugin else {
            return ask.await;
        };
        let waits = &self.inner.key_waits;
        let key = WaitKey::of(input);
        if let Some((decision, left)) = waits.pending(&key, &p.sha256, Instant::now()) {
            tracing::debug!(
                namespace = %input.namespace,
                name = %input.name,
                ask_again_in = ?left,
                "still waiting for the key; not asking the psk plugin yet"
            );
            self.metrics()
                .decisions
                .get_or_create(&labels(DecisionPoint::Psk, &p.name, "waiting"))
                .inc();
            return Ok(Decided {
                decision,
                provenance: provenance(DecisionPoint::Psk, Some(p), DecidedBy::Cache),
            });
        }
        let decided = ask.await;
        match &decided {
            Ok(d)
                if d.provenance.decided_by == DecidedBy::Plugin
                    && d.decision.answer == PskAnswer::NotAvailableYet =>
            {
                let delay = waits.not_available(key, &p.sha256, d.decision.clone(), Instant::now());
                tracing::debug!(
                    namespace = %input.namespace,
                    name = %input.name,
                    ask_again_in = ?delay,
                    "the key is not available yet"
                );
            }
            _ => waits.forget(&key),
        }
        decided
    }

    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(point = P::POINT.as_str(), plugin = plugin.as_ref().map(|p| p.name.as_str()))
    )]
    async fn decide<P: Point>(
        &self,
        plugin: Option<Arc<LoadedPlugin>>,
        input: &P::Input,
        cache: Option<&DecisionCache<P::Decision>>,
        scope: CredentialScope,
    ) -> Result<Decided<P::Decision>, PolicyError> {
        let point = P::POINT;
        let metrics = self.metrics();
        let Some(plugin) = plugin else {
            metrics
                .decisions
                .get_or_create(&labels(point, "none", "builtin"))
                .inc();
            return Ok(Decided {
                decision: P::builtin(input),
                provenance: provenance(point, None, DecidedBy::BuiltIn),
            });
        };

        let start = Instant::now();
        let cache = cache.filter(|c| plugin.pure && c.enabled());
        let key = cache.and_then(|_| {
            DecisionCache::<P::Decision>::key(&plugin.sha256, &plugin.settings_json, input)
        });
        if let (Some(cache), Some(key)) = (cache, &key)
            && let Some(decision) = cache.get(key)
        {
            metrics
                .decisions
                .get_or_create(&labels(point, &plugin.name, "cached"))
                .inc();
            let mut provenance = provenance(point, Some(&plugin), DecidedBy::Cache);
            provenance.latency = start.elapsed();
            return Ok(Decided {
                decision,
                provenance,
            });
        }

        // Everything from here on (credentials, a slot, the run) fits in the point's
        // deadline, so one slow dependency cannot hold a reconcile without bound.
        let deadline = tokio::time::Instant::from_std(start + plugin.deadline);
        let late = |what: String| Failure {
            kind: FailureKind::Timeout,
            message: format!(
                "{what}: the {point} decision point's deadline of {} passed",
                humantime::format_duration(plugin.deadline)
            ),
        };
        let credential = match &plugin.credential {
            Some(r) if plugin.http.is_some() => {
                let resolved =
                    tokio::time::timeout_at(deadline, self.inner.options.credentials.resolve(r))
                        .await;
                match resolved {
                    Ok(Ok(value)) => Some(Credential {
                        header: r.header.clone(),
                        value,
                        scope,
                    }),
                    Ok(Err(e)) => {
                        let failure = Failure {
                            kind: FailureKind::Credentials,
                            message: e.to_string(),
                        };
                        let prov = provenance(point, Some(&plugin), DecidedBy::Plugin);
                        return self.failed::<P>(&plugin, input, failure, prov);
                    }
                    Err(_) => {
                        let failure = late(format!("reading Secret {}", r.secret));
                        let prov = provenance(point, Some(&plugin), DecidedBy::Plugin);
                        return self.failed::<P>(&plugin, input, failure, prov);
                    }
                }
            }
            _ => None,
        };

        // The permit moves into the blocking task: if the caller gives up waiting, the
        // run still counts against the limit until it ends (by fuel or deadline at the
        // latest). The semaphore is never closed, so acquiring only waits.
        let slots = self.inner.permits.of(point).clone();
        let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, slots.acquire_owned()).await else {
            let failure = late(format!(
                "every {point} slot was busy (engine.max_concurrency or the point's \
                 concurrency)"
            ));
            let mut prov = provenance(point, Some(&plugin), DecidedBy::Plugin);
            prov.latency = start.elapsed();
            return self.failed::<P>(&plugin, input, failure, prov);
        };
        let left = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .min(plugin.limits.timeout);
        if left.is_zero() {
            let failure = late("no time was left to run the plugin".into());
            let prov = provenance(point, Some(&plugin), DecidedBy::Plugin);
            return self.failed::<P>(&plugin, input, failure, prov);
        }

        let wit_input = P::to_wit(input, &plugin.settings_json);
        let execution = {
            let inner = self.inner.clone();
            let run_plugin = plugin.clone();
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                execute::run::<P>(
                    &inner.engine,
                    &run_plugin,
                    inner.tick,
                    inner.options.transport.clone(),
                    credential,
                    &wit_input,
                    left,
                )
            })
            .await
        };
        let execution = match execution {
            Ok(x) => x,
            Err(e) => execute::Execution {
                result: Err(Failure {
                    kind: FailureKind::Internal,
                    message: format!("the plugin's blocking task failed: {e}"),
                }),
                fuel_used: 0,
                latency: start.elapsed(),
                denials: Vec::new(),
            },
        };
        let plugin_labels = PluginLabels {
            point: point.as_str().into(),
            plugin: plugin.name.clone(),
        };
        metrics
            .latency
            .get_or_create(&plugin_labels)
            .observe(execution.latency.as_secs_f64());
        metrics
            .fuel
            .get_or_create(&plugin_labels)
            .observe(execution.fuel_used as f64);

        let mut prov = provenance(point, Some(&plugin), DecidedBy::Plugin);
        prov.fuel_used = execution.fuel_used;
        prov.latency = execution.latency;
        prov.denials = execution.denials;
        let validated = execution.result.and_then(|out| {
            P::validate(out, input).map_err(|e| Failure {
                kind: FailureKind::InvalidOutput,
                message: e.to_string(),
            })
        });
        match validated {
            Ok(decision) => {
                metrics
                    .decisions
                    .get_or_create(&labels(point, &plugin.name, "plugin"))
                    .inc();
                if let (Some(cache), Some(key)) = (cache, key) {
                    cache.put(key, decision.clone());
                }
                Ok(Decided {
                    decision,
                    provenance: prov,
                })
            }
            Err(failure) => self.failed::<P>(&plugin, input, failure, prov),
        }
    }

    fn failed<P: Point>(
        &self,
        plugin: &LoadedPlugin,
        input: &P::Input,
        failure: Failure,
        mut prov: Provenance,
    ) -> Result<Decided<P::Decision>, PolicyError> {
        let point = P::POINT;
        let metrics = self.metrics();
        metrics
            .failures
            .get_or_create(&FailureLabels {
                point: point.as_str().into(),
                plugin: plugin.name.clone(),
                kind: failure.kind.as_str().into(),
            })
            .inc();
        tracing::warn!(
            point = point.as_str(),
            plugin = %plugin.name,
            kind = failure.kind.as_str(),
            message = %failure.message,
            on_failure = ?plugin.on_failure,
            "policy plugin failed"
        );
        prov.failure = Some(failure.clone());
        match plugin.on_failure {
            FailureMode::Fallback => {
                metrics
                    .decisions
                    .get_or_create(&labels(point, &plugin.name, "fallback"))
                    .inc();
                prov.decided_by = DecidedBy::Fallback;
                Ok(Decided {
                    decision: P::builtin(input),
                    provenance: prov,
                })
            }
            FailureMode::Fail => {
                metrics
                    .decisions
                    .get_or_create(&labels(point, &plugin.name, "failed"))
                    .inc();
                Err(PolicyError::PluginFailed {
                    point,
                    plugin: plugin.name.clone(),
                    failure,
                    provenance: Box::new(prov),
                })
            }
        }
    }
}

fn labels(point: DecisionPoint, plugin: &str, outcome: &str) -> DecisionLabels {
    DecisionLabels {
        point: point.as_str().into(),
        plugin: plugin.into(),
        outcome: outcome.into(),
    }
}

fn provenance(point: DecisionPoint, plugin: Option<&LoadedPlugin>, by: DecidedBy) -> Provenance {
    Provenance {
        point,
        decided_by: by,
        plugin: plugin.map(|p| p.name.clone()),
        sha256: plugin.map(|p| p.sha256.clone()),
        failure: None,
        fuel_used: 0,
        latency: Duration::ZERO,
        denials: Vec::new(),
        binding: DEFAULT_BINDING.into(),
        overruled: Vec::new(),
        shadow: None,
    }
}
