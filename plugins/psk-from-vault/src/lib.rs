//! `psk-from-vault`: keeps the pre-shared key of a replication pair in a Vault (or
//! OpenBao) KV v2 secret, at `<mount>/data/<prefix>/<pair>`, where `<pair>` comes from the
//! `ferrosync.io/psk-pair` annotation set on both the source and the destination.
//!
//! - Destination: reads the key; when missing, generates one (needs the randomness grant)
//!   and stores it with check-and-set 0, so two writers cannot both win; a lost race
//!   re-reads the winner's key.
//! - Source: reads the key, and answers "not available yet" until it exists. It never
//!   generates.
//! - Rotation: a destination whose `ferrosync.io/rotate-key` annotation differs from the
//!   `rotation` stored with the key, and whose key Secret exists (the host asks at the
//!   start of each iteration), stores a new key with check-and-set on the version read,
//!   under an identity of its own (`<identity>.v<version>`), so the destination can accept
//!   the previous key and the new one side by side until the source has switched.
//! - Without the annotation there is no pair to share, so the host generates locally.
//! - Membership: each side records itself under `<prefix>/<pair>/members/<member>` (the
//!   host names the member; check-and-set 0, so a member already there writes nothing)
//!   before it reads or stores the key. `release`, called by the host when a side is
//!   deleted, removes that entry and, when no member remains, the key with all its
//!   versions. The two sides may be in different clusters: only the vault knows both.
//!   A member path the host does not let the token reach (an older `[policy.credentials]`)
//!   is not recorded, and the decision goes on.
//!
//! The Vault token is injected by the host, and only for the pair's path the host
//! authorised; this plugin never sees it.

use ferrosync_plugin::psk::{
    Guest, Key, PskAnswer, PskDecision, PskInput, PskRelease, PskReleaseInput, ReleaseOutcome,
    Side, http_json,
};
use serde::Deserialize;
use serde_json::{Value, json};

const PAIR_ANNOTATION: &str = "ferrosync.io/psk-pair";
const ROTATE_ANNOTATION: &str = "ferrosync.io/rotate-key";
/// Longest rotation request stored.
const MAX_ROTATION_LEN: usize = 253;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// The Vault origin, for example "https://vault.example:8200". Must be granted.
    address: String,
    /// The KV v2 mount.
    #[serde(default = "default_mount")]
    mount: String,
    /// The path under the mount where pairs live.
    #[serde(default = "default_prefix")]
    prefix: String,
    /// The identity of generated keys.
    #[serde(default = "default_identity")]
    identity: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            address: String::new(),
            mount: default_mount(),
            prefix: default_prefix(),
            identity: default_identity(),
        }
    }
}

fn default_mount() -> String {
    "secret".into()
}
fn default_prefix() -> String {
    "ferrosync/psk".into()
}
fn default_identity() -> String {
    "ferrosync".into()
}

struct Plugin;

impl Guest for Plugin {
    fn decide(input: PskInput) -> Result<PskDecision, String> {
        let s: Settings = ferrosync_plugin::settings(&input.settings)?;
        if s.address.is_empty() {
            return Err("settings.address is required".into());
        }
        let Some(pair) = ferrosync_plugin::get(&input.annotations, PAIR_ANNOTATION) else {
            return Ok(decision(
                PskAnswer::GenerateLocally,
                format!("no {PAIR_ANNOTATION} annotation: nothing to share"),
            ));
        };
        // The pair id becomes a path segment: refuse anything that could escape it.
        if pair.is_empty()
            || pair.len() > 63
            || !pair
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            || pair.starts_with('.')
        {
            return Err(format!("{PAIR_ANNOTATION} {pair:?} is not a valid pair id"));
        }
        let path = format!("{}/{}", s.prefix.trim_matches('/'), pair);
        let url = vault_url(&s, "data", &path);
        let joined = join(&s, &path, &input)?;

        let rotate = ferrosync_plugin::get(&input.annotations, ROTATE_ANNOTATION);
        if rotate.is_some_and(|r| r.len() > MAX_ROTATION_LEN) {
            return Err(format!(
                "{ROTATE_ANNOTATION} is longer than {MAX_ROTATION_LEN} characters"
            ));
        }
        if let Some(stored) = read(&url)? {
            let wanted = rotate.filter(|r| stored.rotation.as_deref() != Some(*r));
            return match (input.side, wanted) {
                (Side::Destination, Some(rotation)) if input.key_secret_exists => {
                    rotate_key(&s, &url, &path, pair, &stored, rotation)
                }
                _ => Ok(decision(
                    PskAnswer::UseKey(stored.key),
                    format!("key of pair {pair} from vault {path}{joined}"),
                )),
            };
        }
        match input.side {
            Side::Source => Ok(decision(
                PskAnswer::NotAvailableYet,
                format!("pair {pair}: the destination has not stored a key at {path} yet{joined}"),
            )),
            Side::Destination => {
                let key = Key {
                    identity: s.identity.clone(),
                    key_hex: ferrosync_plugin::to_hex(&ferrosync_plugin::random_bytes(32)),
                };
                let body = json!({
                    "options": { "cas": 0 },
                    "data": { "psk": format!("{}:{}", key.identity, key.key_hex) },
                });
                let (status, resp) = http_json("POST", &url, Some(&body))?;
                match status {
                    200 | 204 => Ok(decision(
                        PskAnswer::UseKey(key),
                        format!("generated the key of pair {pair} and stored it in vault {path}{joined}"),
                    )),
                    // check-and-set lost: another destination stored a key first; use it.
                    400 if errors(&resp).contains("check-and-set") => match read(&url)? {
                        Some(stored) => Ok(decision(
                            PskAnswer::UseKey(stored.key),
                            format!("key of pair {pair} from vault {path} (stored concurrently)"),
                        )),
                        None => Err(format!(
                            "vault {path}: check-and-set failed but no key is there"
                        )),
                    },
                    _ => Err(vault_error("store", &path, status, &resp)),
                }
            }
        }
    }

    fn release(input: PskReleaseInput) -> Result<PskRelease, String> {
        let s: Settings = ferrosync_plugin::settings(&input.settings)?;
        if s.address.is_empty() {
            return Err("settings.address is required".into());
        }
        let pair = &input.pair;
        if !valid_segment(pair) {
            return Err(format!("pair {pair:?} is not a valid pair id"));
        }
        if !valid_segment(&input.member) {
            return Err(format!("member {:?} is not a valid member id", input.member));
        }
        let path = format!("{}/{}", s.prefix.trim_matches('/'), pair);
        // Leave first, then look: a member that joins meanwhile is either seen (the key
        // stays) or joins after the key is gone and gets a new one.
        let member_url = vault_url(&s, "metadata", &format!("{path}/members/{}", input.member));
        let (status, body) = http_json("DELETE", &member_url, None)?;
        if !matches!(status, 200 | 204 | 404) {
            return Err(vault_error("leave", &path, status, &body));
        }
        let members_url = vault_url(&s, "metadata", &format!("{path}/members"));
        let (status, body) = http_json("GET", &format!("{members_url}?list=true"), None)?;
        let others = match status {
            // Its own entry again: a join sent before a hang, landing after the leave. It
            // counts for no one: the key goes with the last other member all the same.
            200 => body
                .pointer("/data/keys")
                .and_then(Value::as_array)
                .map_or(0, |keys| {
                    keys.iter()
                        .filter(|k| k.as_str() != Some(input.member.as_str()))
                        .count()
                }),
            404 => 0,
            _ => return Err(vault_error("list the members of", &path, status, &body)),
        };
        if others > 0 {
            return Ok(PskRelease {
                outcome: ReleaseOutcome::Left,
                reason: format!(
                    "left pair {pair}; {others} other member(s) remain, so its key stays in vault {path}"
                ),
            });
        }
        let key_url = vault_url(&s, "metadata", &path);
        let (status, body) = http_json("GET", &key_url, None)?;
        match status {
            404 => Ok(PskRelease {
                outcome: ReleaseOutcome::NoSuchPair,
                reason: format!("pair {pair}: vault {path} holds no key and no member"),
            }),
            200 => {
                let (status, body) = http_json("DELETE", &key_url, None)?;
                match status {
                    200 | 204 | 404 => Ok(PskRelease {
                        outcome: ReleaseOutcome::Deleted,
                        reason: format!(
                            "pair {pair}: the last member left; deleted its key (all versions) from vault {path}"
                        ),
                    }),
                    _ => Err(vault_error("delete", &path, status, &body)),
                }
            }
            _ => Err(vault_error("read the metadata of", &path, status, &body)),
        }
    }
}

/// Whether `s` is safe as one path segment.
fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && !s.starts_with('.')
        && s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// `<address>/v1/<mount>/<kind>/<path>` (`kind`: `data` or `metadata`).
fn vault_url(s: &Settings, kind: &str, path: &str) -> String {
    format!(
        "{}/v1/{}/{kind}/{path}",
        s.address.trim_end_matches('/'),
        s.mount
    )
}

/// Records the asking side as a member of the pair at `path` (nothing when the host gave
/// no member). Returns a note for the reason: empty when recorded or already there.
fn join(s: &Settings, path: &str, input: &PskInput) -> Result<String, String> {
    if input.member.is_empty() {
        return Ok(String::new());
    }
    if !valid_segment(&input.member) {
        return Err(format!("member {:?} is not a valid member id", input.member));
    }
    let url = vault_url(s, "data", &format!("{path}/members/{}", input.member));
    let side = match input.side {
        Side::Source => "source",
        Side::Destination => "destination",
    };
    let body = json!({
        "options": { "cas": 0 },
        "data": { "side": side, "namespace": input.namespace, "name": input.name },
    });
    match http_json("POST", &url, Some(&body)) {
        Ok((200 | 204, _)) => Ok(String::new()),
        // Already a member: check-and-set 0 wrote nothing.
        Ok((400, resp)) if errors(&resp).contains("check-and-set") => Ok(String::new()),
        Ok((status, resp)) => Err(vault_error("join", path, status, &resp)),
        // The operator's [policy.credentials] has no member target: go on unrecorded.
        Err(e) if e.contains("denied") => Ok(" (membership not recorded: the host allows no member path)".into()),
        Err(e) => Err(e),
    }
}

/// A pair's key as stored: the key, the KV version, and the rotation request it answers.
struct Stored {
    key: Key,
    version: u64,
    rotation: Option<String>,
}

/// Stores a new key for `rotation`, with check-and-set on the version read: of two
/// concurrent rotations one wins and the other uses the winner's key.
fn rotate_key(
    s: &Settings,
    url: &str,
    path: &str,
    pair: &str,
    stored: &Stored,
    rotation: &str,
) -> Result<PskDecision, String> {
    let key = Key {
        identity: format!("{}.v{}", s.identity, stored.version + 1),
        key_hex: ferrosync_plugin::to_hex(&ferrosync_plugin::random_bytes(32)),
    };
    let body = json!({
        "options": { "cas": stored.version },
        "data": { "psk": format!("{}:{}", key.identity, key.key_hex), "rotation": rotation },
    });
    let (status, resp) = http_json("POST", url, Some(&body))?;
    match status {
        200 | 204 => Ok(decision(
            PskAnswer::UseKey(key),
            format!("rotated the key of pair {pair} ({ROTATE_ANNOTATION} {rotation:?}) in vault {path}"),
        )),
        400 if errors(&resp).contains("check-and-set") => match read(url)? {
            Some(now) => Ok(decision(
                PskAnswer::UseKey(now.key),
                format!("key of pair {pair} from vault {path} (rotated concurrently)"),
            )),
            None => Err(format!("vault {path}: check-and-set failed but no key is there")),
        },
        _ => Err(vault_error("rotate", path, status, &resp)),
    }
}

/// Reads the key at `url`: `Ok(None)` when there is none.
fn read(url: &str) -> Result<Option<Stored>, String> {
    let (status, body) = http_json("GET", url, None)?;
    match status {
        200 => {
            let psk = body
                .pointer("/data/data/psk")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("vault {url}: secret has no string field \"psk\""))?;
            // Identities hold no ':' (the host refuses them), so the key starts after the
            // first.
            let (identity, key_hex) = psk
                .split_once(':')
                .ok_or_else(|| format!("vault {url}: \"psk\" is not <identity>:<hex>"))?;
            Ok(Some(Stored {
                key: Key {
                    identity: identity.to_owned(),
                    key_hex: key_hex.to_owned(),
                },
                version: body
                    .pointer("/data/metadata/version")
                    .and_then(Value::as_u64)
                    .unwrap_or(1),
                rotation: body
                    .pointer("/data/data/rotation")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            }))
        }
        404 => Ok(None),
        _ => Err(vault_error("read", url, status, &body)),
    }
}

fn errors(body: &Value) -> String {
    body.get("errors")
        .and_then(Value::as_array)
        .map(|e| {
            e.iter()
                .filter_map(Value::as_str)
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

fn vault_error(what: &str, path: &str, status: u16, body: &Value) -> String {
    let hint = if status == 403 {
        " (the token may not access this path)"
    } else {
        ""
    };
    format!("vault {what} {path}: HTTP {status}{hint}: {}", errors(body))
}

fn decision(answer: PskAnswer, reason: String) -> PskDecision {
    PskDecision { answer, reason }
}

ferrosync_plugin::psk::export_psk!(Plugin);
