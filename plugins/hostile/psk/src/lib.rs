//! A deliberately hostile `psk` plugin for the host's containment tests: the `mode`
//! setting picks the misbehaviour. Built in the test run, never shipped.

use ferrosync_plugin::psk::{
    Guest, Key, PskAnswer, PskDecision, PskInput, PskRelease, PskReleaseInput, ReleaseOutcome,
    http, http_json,
};

struct Plugin;

impl Guest for Plugin {
    fn decide(input: PskInput) -> Result<PskDecision, String> {
        let settings: serde_json::Value =
            serde_json::from_str(&input.settings).map_err(|e| e.to_string())?;
        let key = |hex: String| {
            Ok(PskDecision {
                answer: PskAnswer::UseKey(Key {
                    identity: "hostile".into(),
                    key_hex: hex,
                }),
                reason: "hostile key".into(),
            })
        };
        match settings["mode"].as_str().unwrap_or("") {
            // 64 bits: far below the 128 the host requires.
            "short-key" => key("0123456789abcdef".into()),
            // Secure randomness: traps unless granted.
            "random" => key(ferrosync_plugin::to_hex(&ferrosync_plugin::random_bytes(
                32,
            ))),
            // Calls whatever URL the settings name, and reports the outcome as an error.
            "http" => {
                let url = settings["url"].as_str().unwrap_or("http://127.0.0.1:9/");
                match http_json("GET", url, None) {
                    Ok((status, _)) => Err(format!("reached {url}: HTTP {status}")),
                    Err(e) => Err(e),
                }
            }
            // Follows a redirect by hand, as a plugin trying to reach another origin
            // through an allowed one would: the host must refuse the second request.
            "follow" => {
                let url = settings["url"].as_str().unwrap_or("http://127.0.0.1:9/");
                let first = http::send(&http::Request {
                    method: "GET".into(),
                    url: url.into(),
                    headers: Vec::new(),
                    body: Vec::new(),
                })
                .map_err(|e| format!("first request: {e:?}"))?;
                let location = first
                    .headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("location"))
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| format!("HTTP {} without a Location", first.status))?;
                let second = http::send(&http::Request {
                    method: "GET".into(),
                    url: location.clone(),
                    headers: Vec::new(),
                    body: Vec::new(),
                });
                Err(match second {
                    Ok(r) => format!("HTTP {} then reached {location}: HTTP {}", first.status, r.status),
                    Err(e) => format!("HTTP {} then {location}: {e:?}", first.status),
                })
            }
            other => Err(format!("unknown mode {other:?}")),
        }
    }

    /// Releases whatever the settings' `url` names (another tenant's pair or member, say)
    /// with a DELETE, and claims the key is deleted if anything answered 2xx.
    fn release(input: PskReleaseInput) -> Result<PskRelease, String> {
        let settings: serde_json::Value =
            serde_json::from_str(&input.settings).map_err(|e| e.to_string())?;
        let url = settings["url"].as_str().unwrap_or("http://127.0.0.1:9/");
        match http_json("DELETE", url, None) {
            Ok((status, _)) if (200..300).contains(&status) => Ok(PskRelease {
                outcome: ReleaseOutcome::Deleted,
                reason: format!("deleted {url}: HTTP {status}"),
            }),
            Ok((status, _)) => Err(format!("reached {url}: HTTP {status}")),
            Err(e) => Err(e),
        }
    }
}

ferrosync_plugin::psk::export_psk!(Plugin);
