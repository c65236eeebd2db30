//! Host bindings of the WIT contract in `plugins/wit/`, one module per world.
//!
//! The `types` and `http` interfaces are generated once (in `copy_method`) and shared by
//! the other worlds, so the host has one set of record types. Generated code only: no
//! logic belongs here.

#![allow(missing_docs, clippy::all)]

/// The `copy-method` world, and the shared `types` and `http` interfaces.
pub mod copy_method {
    wasmtime::component::bindgen!({
        path: "plugins/wit",
        world: "ferrosync:policy/copy-method",
        // Called with `call_async`: the store yields every fuel slice, which is what
        // keeps its fuel count exact when an epoch deadline interrupts a loop.
        exports: { default: async },
    });
}

/// The `service-type` world.
pub mod service_type {
    wasmtime::component::bindgen!({
        path: "plugins/wit",
        world: "ferrosync:policy/service-type",
        exports: { default: async },
        with: {
            "ferrosync:policy/types": super::copy_method::ferrosync::policy::types,
            "ferrosync:policy/http": super::copy_method::ferrosync::policy::http,
        },
    });
}

/// The `psk` world.
pub mod psk {
    wasmtime::component::bindgen!({
        path: "plugins/wit",
        world: "ferrosync:policy/psk",
        exports: { default: async },
        with: {
            "ferrosync:policy/types": super::copy_method::ferrosync::policy::types,
            "ferrosync:policy/http": super::copy_method::ferrosync::policy::http,
        },
    });
}

pub use copy_method::ferrosync::policy::{http, types as wit};
