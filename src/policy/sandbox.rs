//! The sandbox one decision runs in: the per-Store host state, a locked-down WASI
//! context, the linker, and the resource limiter.
//!
//! WASI is linked because std-built components import it even when unused (DESIGN §2),
//! but its context grants nothing: no preopens, environment, arguments or sockets; a fixed
//! clock; a deterministic insecure seed (std's `HashMap` needs one); and secure random
//! and timers that trap unless granted. This module must never hand a plugin anything
//! real from the host without an explicit grant.

use std::time::Duration;

use rand::RngExt as _;
use wasmtime::{
    Engine, ResourceLimiter, StoreContextMut,
    component::{Linker, Resource, ResourceTable},
};
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView,
    WasiView,
    p2::{DynPollable, pipe::MemoryOutputPipe},
};

use super::{bindings::http, http::HttpGate};

/// The WASI interface versions this host defines; older 0.2.x imports resolve to them.
const WASI_RANDOM: &str = "wasi:random/random@0.2.12";
const WASI_MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";
/// The seed behind `wasi:random/insecure-seed`: fixed, so decisions are reproducible.
const INSECURE_SEED: u128 = 0x6665_7272_6f73_796e_6320_706f_6c69_6379;
/// Most bytes one call may ask of the secure random source.
const MAX_RANDOM_BYTES: u64 = 64 * 1024;
/// The plugin's stderr is kept (for panic messages) up to this size.
pub const STDERR_CAPACITY: usize = 4096;
/// The wall clock every plugin sees: 2024-01-01T00:00:00Z.
const FIXED_WALL_CLOCK: Duration = Duration::from_secs(1_704_067_200);

/// A capability the plugin used without a grant. Traps the guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("capability not granted: {0}")]
pub struct CapabilityDenied(pub &'static str);

/// A memory growth past the plugin's limit. Traps the guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("memory limit of {limit} bytes reached (asked for {desired})")]
pub struct MemoryLimitHit {
    pub limit: usize,
    pub desired: usize,
}

/// Caps memory and tables; denials trap with [`MemoryLimitHit`], so they are reported as
/// such rather than as an allocation failure somewhere inside the guest.
pub struct Limiter {
    memory_limit: usize,
    memory_used: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Summed over all memories of the component, so extra memories cannot multiply it.
        let after = self.memory_used - current.min(self.memory_used) + desired;
        if after > self.memory_limit {
            return Err(wasmtime::Error::new(MemoryLimitHit {
                limit: self.memory_limit,
                desired: after,
            }));
        }
        self.memory_used = after;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        32
    }
    fn tables(&self) -> usize {
        32
    }
    fn memories(&self) -> usize {
        8
    }
}

/// Everything one decision's Store owns.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) http: HttpGate,
    random_granted: bool,
    stderr: MemoryOutputPipe,
}

struct FixedClock;

impl HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        FIXED_WALL_CLOCK
    }
}

impl HostMonotonicClock for FixedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl HostState {
    /// A fresh, locked-down state. Only `random_granted` and the HTTP gate open anything.
    pub fn new(memory_limit: usize, random_granted: bool, http: HttpGate) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .wall_clock(FixedClock)
            .monotonic_clock(FixedClock)
            .insecure_random_seed(INSECURE_SEED)
            .insecure_random(Deterministic::new(INSECURE_SEED.to_le_bytes().to_vec()))
            // Never consulted: the linker shadows the functions that would use it. Kept
            // predictable so a mistake here could never pass for real entropy silently.
            .secure_random(Deterministic::new(vec![0]))
            .max_random_size(MAX_RANDOM_BYTES)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter {
                memory_limit,
                memory_used: 0,
            },
            http,
            random_granted,
            stderr,
        }
    }

    /// What the plugin wrote to stderr (a panic message, typically), lossily decoded.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_owned()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl http::Host for HostState {
    fn send(&mut self, req: http::Request) -> Result<http::Response, http::Error> {
        self.http.send(req)
    }
}

/// Bytes from the thread-local CSPRNG, seeded from the OS (as `Psk::generate` uses).
fn os_random(len: u64) -> wasmtime::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    rand::rng().fill(&mut buf[..]);
    Ok(buf)
}

/// The linker every plugin is instantiated with: WASI (locked down) and
/// `ferrosync:policy/http`, with secure random and timers redefined.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::<HostState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    http::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(&mut linker, |s| s)?;

    // WasiCtxBuilder::secure_random only takes an infallible generator, and one that
    // panics escapes into the host. Redefining the functions is what makes the guest trap.
    linker.allow_shadowing(true);
    let mut random = linker.instance(WASI_RANDOM)?;
    random.func_wrap(
        "get-random-bytes",
        |store: StoreContextMut<'_, HostState>, (len,): (u64,)| {
            if !store.data().random_granted {
                return Err(wasmtime::Error::new(CapabilityDenied("secure random")));
            }
            if len > MAX_RANDOM_BYTES {
                return Err(wasmtime::format_err!("asked for {len} random bytes"));
            }
            Ok((os_random(len)?,))
        },
    )?;
    random.func_wrap(
        "get-random-u64",
        |store: StoreContextMut<'_, HostState>, (): ()| {
            if !store.data().random_granted {
                return Err(wasmtime::Error::new(CapabilityDenied("secure random")));
            }
            let b = os_random(8)?;
            Ok((u64::from_le_bytes(b.try_into().expect("8 bytes")),))
        },
    )?;

    // A timer would block the host thread where no epoch deadline can reach it.
    let mut clock = linker.instance(WASI_MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |_: StoreContextMut<'_, HostState>,
         (_,): (u64,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            Err(wasmtime::Error::new(CapabilityDenied("timers")))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |_: StoreContextMut<'_, HostState>,
         (_,): (u64,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            Err(wasmtime::Error::new(CapabilityDenied("timers")))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(linker)
}
