//! Running one decision in a fresh Store: limits set, the plugin instantiated from its
//! `InstancePre`, `decide` called, and the outcome classified.
//!
//! This runs on a blocking thread and must never panic on anything a plugin does: every
//! trap, limit and error becomes a [`Failure`].

use std::{sync::Arc, time::Duration, time::Instant};

use wasmtime::{Engine, Store, Trap};

use super::{
    bindings::wit,
    defaults, guest_text,
    http::{Credential, HttpGate, HttpTransport, ResolvedGrant},
    outcome::{Failure, FailureKind},
    plugin::{LoadedPlugin, Pre},
    sandbox::{CapabilityDenied, HostState, MemoryLimitHit},
    types::{
        CopyMethodDecision, CopyMethodInput, DecisionPoint, PskDecision, PskInput,
        ServiceTypeDecision, ServiceTypeInput,
    },
    validate,
};

/// One decision point's types and functions, so the engine is written once.
pub(crate) trait Point: 'static {
    const POINT: DecisionPoint;
    type Input: serde::Serialize + Send + Sync;
    type Decision: Clone + Send + Sync + 'static;
    type WitIn: Send + 'static;
    type WitOut: Send + 'static;

    fn to_wit(input: &Self::Input, settings: &str) -> Self::WitIn;
    async fn call(
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

pub(crate) fn wrong_pre() -> wasmtime::Error {
    wasmtime::format_err!("plugin loaded for another decision point")
}

/// Implements [`Point`] for one export of one plugin world. Every point is the same
/// engine-facing glue around four differing names (the world, its export, the input and
/// decision types) and three pure functions, so the glue is written once here and each
/// point states only what is its own.
///
/// `world` names both the [`DecisionPoint`] and the [`Pre`] variant, which match.
macro_rules! point {
    (
        $(#[$doc:meta])*
        $name:ident {
            world: $world:ident,
            export: $export:ident,
            input: $input:ty => $wit_in:ty,
            decision: $decision:ty => $wit_out:ty,
            to_wit: $to_wit:expr,
            validate: $validate:expr,
            builtin: $builtin:expr $(,)?
        }
    ) => {
        $(#[$doc])*
        pub(crate) struct $name;

        impl $crate::policy::execute::Point for $name {
            const POINT: $crate::policy::types::DecisionPoint =
                $crate::policy::types::DecisionPoint::$world;
            type Input = $input;
            type Decision = $decision;
            type WitIn = $wit_in;
            type WitOut = $wit_out;

            fn to_wit(input: &Self::Input, settings: &str) -> Self::WitIn {
                ($to_wit)(input, settings)
            }
            async fn call(
                pre: &$crate::policy::plugin::Pre,
                store: &mut wasmtime::Store<$crate::policy::sandbox::HostState>,
                input: &Self::WitIn,
            ) -> wasmtime::Result<Result<Self::WitOut, String>> {
                let $crate::policy::plugin::Pre::$world(pre) = pre else {
                    return Err($crate::policy::execute::wrong_pre());
                };
                pre.instantiate_async(&mut *store)
                    .await?
                    .$export(&mut *store, input)
                    .await
            }
            fn validate(
                out: Self::WitOut,
                input: &Self::Input,
            ) -> Result<Self::Decision, $crate::policy::validate::InvalidOutput> {
                ($validate)(out, input)
            }
            fn builtin(input: &Self::Input) -> Self::Decision {
                ($builtin)(input)
            }
        }
    };
}
pub(crate) use point;

point! {
    CopyMethodPoint {
        world: CopyMethod,
        export: call_decide,
        input: CopyMethodInput => wit::CopyMethodInput,
        decision: CopyMethodDecision => wit::CopyMethodDecision,
        to_wit: CopyMethodInput::to_wit,
        validate: validate::copy_method,
        builtin: defaults::copy_method,
    }
}

point! {
    ServiceTypePoint {
        world: ServiceType,
        export: call_decide,
        input: ServiceTypeInput => wit::ServiceTypeInput,
        decision: ServiceTypeDecision => wit::ServiceTypeDecision,
        to_wit: ServiceTypeInput::to_wit,
        validate: |out, _| validate::service_type(out),
        builtin: defaults::service_type,
    }
}

point! {
    PskPoint {
        world: Psk,
        export: call_decide,
        input: PskInput => wit::PskInput,
        decision: PskDecision => wit::PskDecision,
        to_wit: PskInput::to_wit,
        validate: |out, _| validate::psk(out),
        builtin: defaults::psk,
    }
}

/// What one run produced.
pub(crate) struct Execution<O> {
    pub result: Result<O, Failure>,
    pub fuel_used: u64,
    pub latency: Duration,
    pub denials: Vec<String>,
}

/// Epoch ticks that cover `timeout`, plus one for the tick already under way.
pub(crate) fn deadline_ticks(timeout: Duration, tick: Duration) -> u64 {
    let tick = tick.as_nanos().max(1);
    (timeout.as_nanos().div_ceil(tick) as u64).saturating_add(1)
}

/// Fuel the plugin may burn between two host checkpoints. Compiled code keeps its fuel
/// count in a register and writes it back only at calls, returns and these checkpoints,
/// so a loop without calls that an epoch deadline stops would otherwise be reported with
/// the fuel it had when it entered the loop (a few thousand units, however long it ran).
/// At a checkpoint the store yields, which costs about a microsecond: every 100,000
/// units (some 50 µs of wasm), well under 1 % of the run, and the count is exact to
/// within one slice.
pub(crate) const FUEL_SLICE: u64 = 100_000;

/// Runs `decide` in a fresh, limited Store, for at most `timeout` (the plugin's limit, or
/// less when its decision point's deadline leaves less). Blocking.
pub(crate) fn run<P: Point>(
    engine: &Engine,
    plugin: &LoadedPlugin,
    tick: Duration,
    transport: Arc<dyn HttpTransport>,
    credential: Option<Credential>,
    input: &P::WitIn,
    timeout: Duration,
) -> Execution<P::WitOut> {
    // Latency covers what every decision pays: a fresh Store, instantiation and the call.
    let start = Instant::now();
    let grant = plugin
        .http
        .as_ref()
        .and_then(|g| ResolvedGrant::new(g, credential).ok())
        .map(|g| g.read_only(plugin.shadow));
    let limits = &plugin.limits;
    let memory = (limits.memory_mib as usize).saturating_mul(1 << 20);
    let gate = HttpGate::new(grant, transport, start + timeout);
    let state = HostState::new(memory, plugin.random, gate);
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // Fuel is enabled engine-wide and the slice is non-zero, so these cannot fail.
    let _ = store.fuel_async_yield_interval(Some(FUEL_SLICE));
    let _ = store.set_fuel(limits.fuel);
    store.set_epoch_deadline(deadline_ticks(timeout, tick));
    store.epoch_deadline_trap();

    // Nothing in the call waits on I/O (host calls are synchronous); the future only
    // yields at fuel checkpoints, so polling it on this blocking thread is all it needs.
    let outcome = futures::executor::block_on(P::call(&plugin.pre, &mut store, input));
    let fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
    let denials = std::mem::take(&mut store.data_mut().http.denials)
        .into_iter()
        .map(guest_text::bounded)
        .collect();
    let result = match outcome {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(message)) => Err(Failure {
            kind: FailureKind::PluginError,
            message: guest_text::bounded(message),
        }),
        Err(err) => Err(classify(
            &err,
            plugin,
            timeout,
            fuel_used,
            store.data().stderr(),
        )),
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

/// Innermost frames of a trap's backtrace in which one function must recur for an
/// out-of-bounds access to count as the plugin's stack running out.
const RECURSION_FRAMES: usize = 8;

/// How often the most frequent function recurs among the trap's innermost frames (wasmtime
/// keeps 20 by default), when it recurs at least [`RECURSION_FRAMES`] times.
///
/// Plugins keep their stack at the bottom of linear memory (the wasm linker's layout), and
/// one frame too many wraps the stack pointer below 0: the next access to the frame, a
/// plain store or the `memory.fill` that zeroes it, is out of bounds. wasmtime reports that
/// as any other out-of-bounds access, without the address when a bulk-memory call traps;
/// what tells them apart is the recursion leading to it.
fn recursion_at_trap(err: &wasmtime::Error) -> Option<usize> {
    let frames = err.downcast_ref::<wasmtime::WasmBacktrace>()?.frames();
    let mut counts = std::collections::HashMap::new();
    for frame in frames {
        *counts.entry(frame.func_index()).or_insert(0usize) += 1;
    }
    counts
        .into_values()
        .max()
        .filter(|&n| n >= RECURSION_FRAMES)
}

fn classify(
    err: &wasmtime::Error,
    plugin: &LoadedPlugin,
    timeout: Duration,
    fuel: u64,
    stderr: String,
) -> Failure {
    let limits = &plugin.limits;
    let (kind, message) = if let Some(trap) = err.downcast_ref::<Trap>() {
        match trap {
            Trap::OutOfFuel => (
                FailureKind::OutOfFuel,
                format!("ran out of fuel after {fuel} units (limit {})", limits.fuel),
            ),
            Trap::Interrupt => (
                FailureKind::Timeout,
                if timeout < limits.timeout {
                    format!(
                        "stopped after {} by its decision point's deadline (its own time limit is {}), having used {fuel} units of fuel",
                        humantime::format_duration(timeout),
                        humantime::format_duration(limits.timeout)
                    )
                } else {
                    format!(
                        "exceeded its time limit of {} after using {fuel} units of fuel",
                        humantime::format_duration(limits.timeout)
                    )
                },
            ),
            Trap::StackOverflow => (
                FailureKind::StackOverflow,
                "stack overflow: its calls nested deeper than the host's wasm stack allows (unbounded recursion?)".into(),
            ),
            Trap::MemoryOutOfBounds if let Some(n) = recursion_at_trap(err) => (
                FailureKind::StackOverflow,
                format!(
                    "stack overflow: its stack in linear memory ran out (an out-of-bounds access with one function {n} times among the innermost calls: recursion deeper than the stack it was built with, see `-zstack-size` in scripts/build-plugins.sh)"
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
        message: guest_text::bounded(message),
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
}
