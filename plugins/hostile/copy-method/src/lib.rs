//! A deliberately hostile `copy-method` plugin for the host's containment tests: the
//! `mode` setting picks the misbehaviour. Built in the test run, never shipped.

use ferrosync_plugin::copy_method::{CopyMethodDecision, CopyMethodInput, Guest, Method};

struct Plugin;

fn ok(reason: String) -> CopyMethodDecision {
    CopyMethodDecision {
        method: Method::Direct,
        volume_snapshot_class: None,
        storage_class: None,
        reason,
    }
}

impl Guest for Plugin {
    fn decide(input: CopyMethodInput) -> Result<CopyMethodDecision, String> {
        let settings: serde_json::Value =
            serde_json::from_str(&input.settings).map_err(|e| e.to_string())?;
        match settings["mode"].as_str().unwrap_or("") {
            // A tight loop with no calls: only fuel or the epoch deadline can stop it.
            "spin" => {
                let mut x: u64 = 1;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            // Grows memory a MiB at a time toward 4 GiB, touching it so it is real.
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![0xAB; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("hostile plugin panics on purpose"),
            // A timer would park the host thread beyond any epoch deadline.
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(ok("woke up".into()))
            }
            "trap" => std::process::abort(),
            // An invalid Kubernetes name.
            "bad-name" => Ok(CopyMethodDecision {
                method: Method::Snapshot,
                volume_snapshot_class: Some("Not_A.Valid-Name!".into()),
                storage_class: None,
                reason: "bad name".into(),
            }),
            // A valid name that does not exist.
            "missing-class" => Ok(CopyMethodDecision {
                method: Method::Clone,
                volume_snapshot_class: None,
                storage_class: Some("no-such-class".into()),
                reason: "missing class".into(),
            }),
            // Tries to read a file and the environment, and reports what it got.
            "snoop" => {
                let file = std::fs::read_to_string("/etc/hostname")
                    .map(|s| format!("read {} bytes", s.len()))
                    .unwrap_or_else(|e| format!("error: {e}"));
                let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                let args: Vec<String> = std::env::args().collect();
                let cwd = std::env::current_dir()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|e| format!("error: {e}"));
                Ok(ok(format!(
                    "file={file}; env={env:?}; args={args:?}; cwd={cwd}"
                )))
            }
            // Not hostile: std's HashMap seeds itself from wasi:random/insecure-seed, which
            // stays available (and deterministic) without the randomness grant.
            "hashmap" => {
                let map: std::collections::HashMap<u32, u32> = (0..16).map(|i| (i, i)).collect();
                let order: Vec<String> = map.keys().map(|k| k.to_string()).collect();
                Ok(ok(format!("order={}", order.join(","))))
            }
            // Direct, yet naming classes (that exist) which a Direct copy never uses.
            "direct-with-classes" => Ok(CopyMethodDecision {
                method: Method::Direct,
                volume_snapshot_class: Some("ebs-snapclass".into()),
                storage_class: Some("gp3".into()),
                reason: "direct, with classes".into(),
            }),
            // A reason that would read differently than it is: a right-to-left override,
            // zero-width characters, bidi isolates, and a line break.
            "bidi-reason" => Ok(ok(
                "fine\u{202E}exe.txt\u{202C} \u{2066}x\u{2069}a\u{200B}b\u{FEFF}\nnext".into(),
            )),
            // The same disguises in an error of its own.
            "bidi-error" => Err("denied\u{202E}gnp.exe\u{200B}\u{2067}!".into()),
            // Recursion whose frames live on the plugin's own stack in linear memory (the
            // buffer's address is taken): 64 KiB of it hold about 60 frames.
            "recurse" => Ok(ok(format!("depth {}", deep(std::hint::black_box(1 << 20))))),
            // A 64 MiB reason string.
            "big-output" => Ok(ok("x".repeat(64 << 20))),
            // A 64 MiB error string.
            "big-error" => Err("e".repeat(64 << 20)),
            other => Err(format!("unknown mode {other:?}")),
        }
    }
}

/// One KiB of stack per call, kept in linear memory because its address escapes.
#[inline(never)]
fn deep(n: u64) -> u64 {
    let mut frame = [0u8; 1024];
    frame[(n % 1024) as usize] = n as u8;
    std::hint::black_box(&mut frame);
    if n == 0 {
        return u64::from(frame[0]);
    }
    deep(n - 1) + u64::from(frame[(n % 7) as usize])
}

ferrosync_plugin::copy_method::export_copy_method!(Plugin);
