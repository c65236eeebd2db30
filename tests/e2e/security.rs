//! The mover's security context is really enforced: an unprivileged mover (runAsUser 1234,
//! fsGroup 5678) reads its key through fsGroup but cannot read a file only its owner and
//! root can read; with the privileged-movers annotation that file arrives, with its owner.

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt, chown},
    path::Path,
    time::Duration,
};

use ferrosync::api::MoverResult;
use serde_json::json;

use crate::{
    env::env,
    fixtures::{bound_dir, pvc},
    support::TestNamespace,
    volsync::{
        claim_dir, copy_secret, destination, privileged_movers, published, source, synced_or_failed,
    },
};

/// Readable only by its owner (and root).
const PRIVATE: &str = "private-to-4321";
/// Files the unprivileged mover can read: world-readable, or its own.
const READABLE: &[&str] = &["readme.txt", "dir/nested.txt", "own.txt"];

fn write_tree(root: &Path) {
    fs::create_dir_all(root.join("dir")).expect("mkdir");
    for name in READABLE {
        fs::write(root.join(name), format!("content of {name}\n")).expect("write");
    }
    chown(root.join("own.txt"), Some(1234), Some(0)).expect("chown");
    fs::set_permissions(root.join("own.txt"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(root.join(PRIVATE), "not for uid 1234\n").expect("write");
    chown(root.join(PRIVATE), Some(4321), Some(4321)).expect("chown");
    fs::set_permissions(root.join(PRIVATE), fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// Replicates the tree with a 1234/5678 source mover; returns the source's mover status
/// and the destination directory.
async fn replicate(
    dst: &TestNamespace,
    src: &TestNamespace,
) -> (ferrosync::api::MoverStatus, std::path::PathBuf) {
    destination(dst, "secure", json!({})).await;
    let (address, key_secret) = published(dst, "secure").await;
    copy_secret(dst, &key_secret, src, "secure-key").await;
    pvc("data").create(src).await;
    write_tree(&bound_dir(src, "data").await);
    source(
        src,
        "secure",
        "data",
        json!({"keySecret": "secure-key", "address": address,
               "moverSecurityContext": {"runAsUser": 1234, "fsGroup": 5678}}),
    )
    .await;
    let status = synced_or_failed(src, "secure", Duration::from_secs(120)).await;
    (status, claim_dir(dst, "volsync-secure-dst").await)
}

#[tokio::test]
async fn an_unprivileged_mover_syncs_what_it_can_read_and_reports_the_rest() {
    let env = env();
    let dst = env.cp.namespace("sec-dst").await;
    let src = env.cp.namespace("sec-src").await;
    let (status, out) = replicate(&dst, &src).await;
    for name in READABLE {
        let got = fs::read_to_string(out.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, format!("content of {name}\n"));
    }
    assert!(
        !out.join(PRIVATE).exists(),
        "the unreadable file must not arrive"
    );
    let logs = status.logs.clone().unwrap_or_default();
    assert!(
        logs.contains(PRIVATE) || logs.contains("some files/attrs were not transferred"),
        "the sync says that something was not transferred: {status:?}"
    );
}

/// The summary should name the file, as rsync's own error line does ("send_files failed to
/// open ...: Permission denied"): the summary's `errors` reach `latestMoverStatus.logs`.
#[tokio::test]
async fn an_unprivileged_mover_names_the_file_it_could_not_read() {
    let env = env();
    let dst = env.cp.namespace("sec-name-dst").await;
    let src = env.cp.namespace("sec-name-src").await;
    let (status, _) = replicate(&dst, &src).await;
    let logs = status.logs.clone().unwrap_or_default();
    assert!(
        logs.contains(PRIVATE),
        "the sync names the unreadable file: {status:?}"
    );
}

#[tokio::test]
async fn a_privileged_mover_syncs_the_private_file_with_its_owner() {
    let env = env();
    let dst = env.cp.namespace("priv-dst").await;
    let src = env.cp.namespace("priv-src").await;
    privileged_movers(&dst).await;
    privileged_movers(&src).await;
    let (status, out) = replicate(&dst, &src).await;
    assert_eq!(
        status.result,
        Some(ferrosync::api::Spelling::Known(MoverResult::Successful)),
        "{status:?}"
    );
    let meta = fs::metadata(out.join(PRIVATE)).expect("the private file arrived");
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (4321, 4321, 0o600)
    );
    assert_eq!(
        fs::read_to_string(out.join(PRIVATE)).expect("read"),
        "not for uid 1234\n"
    );
}
