//! Helpers for ferrosync policy plugins, so a plugin is a `decide` function and little else.
//!
//! Enable exactly one world feature (`copy-method`, `service-type` or `psk`): its module
//! holds the generated bindings (`Guest`, the input and decision types) and an export
//! macro. The rest is plain helpers: settings parsing, looking up pairs, and HTTP.
//! Nothing here may reach for a capability on its own: randomness lives behind the
//! `random` feature and traps unless the host granted it.

/// The WIT contract, shared with the host (`plugins/wit/policy.wit`).
pub const WIT_PACKAGE: &str = "ferrosync:policy@0.1.0";

/// Bindings of the `copy-method` world. Export a plugin with `copy_method::export_copy_method!(T)`.
#[cfg(feature = "copy-method")]
pub mod copy_method {
    wit_bindgen::generate!({
        path: "../wit",
        world: "ferrosync:policy/copy-method",
        pub_export_macro: true,
        export_macro_name: "export_copy_method",
        default_bindings_module: "ferrosync_plugin::copy_method",
    });
    pub use self::ferrosync::policy::http;
    pub use self::ferrosync::policy::types::*;
    crate::http_helpers!();
}

/// Bindings of the `service-type` world. Export with `service_type::export_service_type!(T)`.
#[cfg(feature = "service-type")]
pub mod service_type {
    wit_bindgen::generate!({
        path: "../wit",
        world: "ferrosync:policy/service-type",
        pub_export_macro: true,
        export_macro_name: "export_service_type",
        default_bindings_module: "ferrosync_plugin::service_type",
    });
    pub use self::ferrosync::policy::http;
    pub use self::ferrosync::policy::types::*;
    crate::http_helpers!();
}

/// Bindings of the `psk` world. Export with `psk::export_psk!(T)`.
#[cfg(feature = "psk")]
pub mod psk {
    wit_bindgen::generate!({
        path: "../wit",
        world: "ferrosync:policy/psk",
        pub_export_macro: true,
        export_macro_name: "export_psk",
        default_bindings_module: "ferrosync_plugin::psk",
    });
    pub use self::ferrosync::policy::http;
    pub use self::ferrosync::policy::types::*;
    crate::http_helpers!();
}

/// Parses the plugin's settings; an empty document means "all defaults".
pub fn settings<T: serde::de::DeserializeOwned + Default>(json: &str) -> Result<T, String> {
    if json.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(json).map_err(|e| format!("invalid settings: {e}"))
}

/// The value of `key` in labels, annotations or parameters.
pub fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Builds pairs from string slices, for annotations in a decision.
pub fn pairs<const N: usize>(items: [(&str, &str); N]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `n` bytes from the host's secure random source. Traps unless randomness was granted:
/// a plugin never silently gets predictable bytes.
#[cfg(feature = "random")]
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    // getrandom only fails on platforms without a source; on wasip2 the host traps instead.
    getrandom::fill(&mut buf).expect("wasi:random is linked");
    buf
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Shared HTTP helpers, expanded inside each world module (each has its own `http` types).
#[doc(hidden)]
#[macro_export]
macro_rules! http_helpers {
    () => {
        /// Sends a request with a JSON body (or none) and returns the status and body.
        /// Errors come back as readable strings: the host refuses origins it did not grant.
        pub fn http_json(
            method: &str,
            url: &str,
            body: Option<&serde_json::Value>,
        ) -> Result<(u16, serde_json::Value), String> {
            let mut headers = Vec::new();
            let body = match body {
                Some(v) => {
                    headers.push(("content-type".to_owned(), "application/json".to_owned()));
                    serde_json::to_vec(v).map_err(|e| e.to_string())?
                }
                None => Vec::new(),
            };
            let req = http::Request {
                method: method.to_owned(),
                url: url.to_owned(),
                headers,
                body,
            };
            let resp = http::send(&req).map_err(|e| match e {
                http::Error::Denied(why) => format!("HTTP {method} {url} denied: {why}"),
                http::Error::Timeout => format!("HTTP {method} {url} timed out"),
                http::Error::TooLarge => format!("HTTP {method} {url}: response too large"),
                http::Error::Transport(why) => format!("HTTP {method} {url} failed: {why}"),
            })?;
            let value = if resp.body.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&resp.body)
                    .map_err(|e| format!("HTTP {method} {url}: response is not JSON: {e}"))?
            };
            Ok((resp.status, value))
        }
    };
}
