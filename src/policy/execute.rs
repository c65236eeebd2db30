//! Running one decision in a fresh Store: limits set, the plugin instantiated from its
//! `InstancePre`, `decide` called, and the outcome classified.
//!
//! This runs on a blocking thread and must never panic on anything a plugin does: every
//! trap, limit and error becomes a [`Failure`].

use std::{sync::Arc, time::Duration, time::Instant};

use wasmtime::{Engine, Store, Trap};

use super::{
    bindings::wit,
    defaults,
    http::{Credential, HttpGate, HttpTransport, ResolvedGrant},
    outcome::{Failure, FailureKind},
    plugin::{LoadedPlugin, Pre},
    sandbox::{CapabilityDenied, HostState, MemoryLimitHit},
    types::{
        CopyMethodDecision, CopyMethodInput, DecisionPoint, PskDecision, PskInput,
        ServiceTypeDecision, ServiceTypeInput,
    },
    validate::{self, MAX_REASON_BYTES},
};

/// One decision point's types and functions, so the engine is written once.
pub(crate) trait Point: 'static {
    const POINT: DecisionPoint;
    type Input: serde::Serialize + Send + Sync;
    type Decision: Clone + Send + Sync + 'static;
    type WitIn: Send + 'static;
    type WitOut: Send + 'static;

    fn to_wit(input: &Self::Input, settings: &str) -> Self::WitIn;
    fn call(
        pre: &Pre,
        store: &mut Store<HostState>,
        input: &Self::WitIn,
    ) -> wasmtime::Result<Result<Self::WitOut, String>>;
    fn validate(
        out: Self::WitOut,
        input: &Self::Input,
    ) -> Result<Self::Decision, validate::InvalidOutput>;
    fn builtin(input: &Self::Input) -> Self::Decision;
}

fn wrong_pre() -> wasmtime::Error {
    wasmtime::format_err!("plugin loaded for another decision point")
}

pub(crate) struct CopyMethodPoint;
impl Point for CopyMethodPoint {
    const POINT: DecisionPoint = DecisionPoint::CopyMethod;
    type Input = CopyMethodInput;
    type Decision = CopyMethodDecision;
    type WitIn = wit::CopyMethodInput;
    type WitOut = wit::CopyMethodDecision;

    fn to_wit(input: &Self::Input, settings: &str) -> Self::WitIn {
        input.to_wit(settings)
    }
    fn call(
        pre: &Pre,
        store: &mut Store<HostState>,
        input: &Self::WitIn,
    ) -> wasmtime::Result<Result<Self::WitOut, String>> {
        let Pre::CopyMethod(pre) = pre else {
            return Err(wrong_pre());
        };
        pre.instantiate(&mut *store)?
            .call_decide(&mut *store, input)
    }
    fn validate(
        out: Self::WitOut,
        input: &Self::Input,
    ) -> Result<Self::Decision, validate::InvalidOutput> {
        validate::copy_method(out, input)
    }
    fn builtin(input: &Self::Input) -> Self::Decision {
        defaults::copy_method(input)
    }
}

pub(crate) struct ServiceTypePoint;
impl Point for ServiceTypePoint {
    const POINT: DecisionPoint = DecisionPoint::ServiceType;
    type Input = ServiceTypeInput;
    type Decision = ServiceTypeDecision;
    type WitIn = wit::ServiceTypeInput;
    type WitOut = wit::ServiceTypeDecision;

    fn to_wit(input: &Self::Input, settings: &str) -> Self::WitIn {
        input.to_wit(settings)
    }
    fn call(
        pre: &Pre,
        store: &mut Store<HostState>,
        input: &Self::WitIn,
    ) -> wasmtime::Result<Result<Self::WitOut, String>> {
        let Pre::ServiceType(pre) = pre else {
            return Err(wrong_pre());
        };
        pre.instantiate(&mut *store)?
            .call_decide(&mut *store, input)
    }
    fn validate(
        out: Self::WitOut,
        _input: &Self::Input,
    ) -> Result<Self::Decision, validate::InvalidOutput> {
        validate::service_type(out)
    }
    fn builtin(input: &Self::Input) -> Self::Decision {
        defaults::service_type(input)
    }
}

pub(crate) struct PskPoint;
impl Point for PskPoint {
    const POINT: DecisionPoint = DecisionPoint::Psk;
    type Input = PskInput;
    type Decision = PskDecision;
    type WitIn = wit::PskInput;
    type WitOut = wit::PskDecision;

    fn to_wit(input: &Self::Input, settings: &str) -> Self::WitIn {
        input.to_wit(settings)
    }
    fn call(
        pre: &Pre,
        store: &mut Store<HostState>,
        input: &Self::WitIn,
    ) -> wasmtime::Result<Result<Self::WitOut, String>> {
        let Pre::Psk(pre) = pre else {
            return Err(wrong_pre());
        };
        pre.instantiate(&mut *store)?
            .call_decide(&mut *store, input)
    }
    fn validate(
        out: Self::WitOut,
        _input: &Self::Input,
    ) -> Result<Self::Decision, validate::InvalidOutput> {
        validate::psk(out)
    }
    fn builtin(input: &Self::Input) -> Self::Decision {
        defaults::psk(input)
    }
}

/// What one run produced.
pub(crate) struct Execution<O> {
    pub result: Result<O, Failure>,
    pub fuel_used: u64,
    pub latency: Duration,
    pub denials: Vec<String>,
}

/// Shortens guest-provided text before it reaches logs, Events and errors.
pub(crate) fn truncate(mut s: String) -> String {
    if s.len() > MAX_REASON_BYTES {
        let mut cut = MAX_REASON_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("… (truncated)");
    }
    s
}

/// Epoch ticks that cover `timeout`, plus one for the tick already under way.
pub(crate) fn deadline_ticks(timeout: Duration, tick: Duration) -> u64 {
    let tick = tick.as_nanos().max(1);
    (timeout.as_nanos().div_ceil(tick) as u64).saturating_add(1)
}

/// Runs `decide` in a fresh, limited Store. Blocking.
pub(crate) fn run<P: Point>(
    engine: &Engine,
    plugin: &LoadedPlugin,
    tick: Duration,
    transport: Arc<dyn HttpTransport>,
    credential: Option<Credential>,
    input: &P::WitIn,
) -> Execution<P::WitOut> {
    // Latency covers what every decision pays: a fresh Store, instantiation and the call.
    let start = Instant::now();
    let grant = plugin
        .http
        .as_ref()
        .and_then(|g| ResolvedGrant::new(g, credential).ok());
    let limits = &plugin.limits;
    let memory = (limits.memory_mib as usize).saturating_mul(1 << 20);
    let gate = HttpGate::new(grant, transport, start + limits.timeout);
    let state = HostState::new(memory, plugin.random, gate);
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // Fuel is enabled engine-wide, so this cannot fail.
    let _ = store.set_fuel(limits.fuel);
    store.set_epoch_deadline(deadline_ticks(limits.timeout, tick));
    store.epoch_deadline_trap();

    let outcome = P::call(&plugin.pre, &mut store, input);
    let fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
    let denials = std::mem::take(&mut store.data_mut().http.denials);
    let result = match outcome {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(message)) => Err(Failure {
            kind: FailureKind::PluginError,
            message: truncate(message),
        }),
        Err(err) => Err(classify(&err, plugin, fuel_used, store.data().stderr())),
    };
    // Dropping the Store resets the instance's memory for reuse: part of every decision's
    // cost, so it is inside the measured time.
    drop(store);
    let latency = start.elapsed();
    Execution {
        result,
        fuel_used,
        latency,
        denials,
    }
}

fn classify(err: &wasmtime::Error, plugin: &LoadedPlugin, fuel: u64, stderr: String) -> Failure {
    let limits = &plugin.limits;
    let (kind, message) = if let Some(trap) = err.downcast_ref::<Trap>() {
        match trap {
            Trap::OutOfFuel => (
                FailureKind::OutOfFuel,
                format!("ran out of fuel after {fuel} units (limit {})", limits.fuel),
            ),
            Trap::Interrupt => (
                FailureKind::Timeout,
                format!(
                    "exceeded its time limit of {}",
                    humantime::format_duration(limits.timeout)
                ),
            ),
            other => (FailureKind::Trap, format!("trapped: {other}")),
        }
    } else if let Some(hit) = err.downcast_ref::<MemoryLimitHit>() {
        (FailureKind::MemoryLimit, hit.to_string())
    } else if let Some(denied) = err.downcast_ref::<CapabilityDenied>() {
        (FailureKind::CapabilityDenied, denied.to_string())
    } else {
        (FailureKind::Trap, format!("{:#}", err))
    };
    let message = if stderr.is_empty() {
        message
    } else {
        format!("{message}; stderr: {stderr}")
    };
    Failure {
        kind,
        message: truncate(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_covers_the_timeout() {
        let tick = Duration::from_millis(5);
        assert_eq!(deadline_ticks(Duration::from_millis(250), tick), 51);
        assert_eq!(deadline_ticks(Duration::from_millis(1), tick), 2);
        assert_eq!(
            deadline_ticks(Duration::from_secs(1), Duration::ZERO),
            1_000_000_001
        );
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        let s = "é".repeat(MAX_REASON_BYTES);
        let t = truncate(s);
        assert!(t.len() <= MAX_REASON_BYTES + 20);
        assert!(t.ends_with("(truncated)"));
        assert_eq!(truncate("short".into()), "short");
    }
}
