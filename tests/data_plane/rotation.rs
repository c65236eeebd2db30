//! A destination in the middle of a key rotation holds two keys in `psk.txt`, the new one
//! first and the previous one after it (issue 14): real stunnel accepts a source with
//! either, looked up by the identity it presents, and still refuses any other key.

use std::{fs, time::Duration};

use crate::{
    harness::{Env, KEY_A, Mover, free_port, sync_with},
    tree::{Check, assert_same, build_tricky},
};

/// The previous key (identity `volsync`) and the new one (its own identity).
const NEW: &str = "ferrosync.v2:4d5f60718293a4b5c6d7e8f9011223344556677889900aabbccddeeff8f1c2a9b3";

#[test]
fn a_destination_mid_rotation_accepts_the_new_and_the_previous_key() {
    let env = Env::new();
    build_tricky(&env.src, false);
    env.write_key("keys-dst", &format!("{NEW}\n{KEY_A}\n"), 0o600);

    // A source that still has the previous key, then one that has the new key.
    for (what, key) in [("previous", KEY_A), ("new", NEW)] {
        env.write_key("keys-src", key, 0o600);
        for entry in fs::read_dir(&env.dst).expect("read_dir") {
            let path = entry.expect("entry").path();
            fs::remove_dir_all(&path)
                .or_else(|_| fs::remove_file(&path))
                .expect("emptying the destination");
        }
        let (source, _) = sync_with(&env, |d| d, |s| s);
        assert_eq!(source.summary.attempts, 1, "{what} key");
        assert_same(&env.src, &env.dst, Check { owners: false });
    }

    // The previous identity with another key is refused: the lookup is by identity, and
    // the key must match.
    let wrong = format!("volsync:{}", "ab".repeat(32));
    env.write_key("keys-src", &wrong, 0o600);
    let port = free_port();
    let dest = Mover::destination(&env, port).spawn().listening();
    let source = Mover::source(&env, port)
        .var("MAX_ATTEMPTS", "2")
        .run(Duration::from_secs(60));
    source.assert_code(13);
    drop(dest);
}
