//! Signed bundles on the real apiserver: the controller requires components signed by
//! the team's key (cosign's raw blob format, made here with openssl). The signed aws-ebs
//! bundle decides; a next component signed by another key is refused at reload, and the
//! old set keeps deciding for new objects.

use std::{path::Path, process::Command, time::Duration};

use ferrosync::api::ReplicationSource;
use kube::Api;
use serde_json::json;

use crate::{
    env::{SERIAL, env},
    fixtures::pvc,
    lifecycle_own_support::{aws_ebs_bundle, copy_method_of},
    lifecycle_support::{create_rs, snapshot_destination, source_spec},
    support::wait,
};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn key_pair(dir: &Path, name: &str) {
    let key = format!("{name}.key");
    openssl(
        dir,
        &[
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
            &key,
        ],
    );
    openssl(
        dir,
        &["ec", "-in", &key, "-pubout", "-out", &format!("{name}.pub")],
    );
}

/// `file.sig` as `cosign sign-blob --key` writes it: base64 of the DER signature.
fn sign(dir: &Path, name: &str, file: &Path) {
    let der = dir.join("sig.der").to_string_lossy().into_owned();
    let file = file.to_string_lossy();
    openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-sign",
            &format!("{name}.key"),
            "-out",
            &der,
            &file,
        ],
    );
    openssl(
        dir,
        &["base64", "-A", "-in", &der, "-out", &format!("{file}.sig")],
    );
}

#[tokio::test]
async fn a_wrongly_signed_bundle_is_refused_while_the_old_set_serves() {
    let _one_at_a_time = SERIAL.lock().await;
    let env = env();
    let dir = env
        .cp
        .dir
        .join(format!("signatures-{}", std::process::id()));
    // The simulator's driver is treated as EBS: the plugin chooses Snapshot.
    let bundle = aws_ebs_bundle(&dir.join("aws-ebs"), true);
    let policy = bundle.join("policy.toml");
    key_pair(&dir, "team");
    key_pair(&dir, "stranger");
    let component = bundle.join("copy-method-by-driver.wasm");
    sign(&dir, "team", &component);
    let bytes = std::fs::read(&component).expect("component");
    let pin = ferrosync::policy::plugin::sha256_hex(&bytes);
    let mut next = bytes.clone();
    next.push(0);
    let next_pin = ferrosync::policy::plugin::sha256_hex(&next);

    let config = dir.join("controller.toml");
    std::fs::write(
        &config,
        format!(
            "[policy.engine]\nreload_interval = \"300ms\"\n\
             [policy.signatures]\npublic_keys = [{:?}]\n\
             [policy.copy_method]\nbundle = {:?}\nsha256 = [{pin:?}, {next_pin:?}]\non_failure = \"fail\"\n",
            dir.join("team.pub").to_string_lossy(),
            bundle.to_string_lossy()
        ),
    )
    .expect("config");
    let controller = env.controller(&[("FERROSYNC_CONFIG", &config.to_string_lossy())]);
    let dst = env.cp.namespace("sig-dst").await;
    let src = env.cp.namespace("sig-src").await;
    snapshot_destination(&dst, "signed", 1, json!({})).await;
    let (address, key) = crate::volsync::published(&dst, "signed").await;
    crate::volsync::copy_secret(&dst, &key, &src, "signed-key").await;
    let api: Api<ReplicationSource> = src.api();
    let spec = |pvc: &str| {
        source_spec(
            "signed",
            pvc,
            &address,
            json!({"manual": "one"}),
            json!({"copyMethod": "Clone"}),
        )
    };
    pvc("first").create(&src).await;
    create_rs(&src, "first", spec("first")).await;
    let first = copy_method_of(&api, "first").await;
    assert_eq!(first.value, "Snapshot", "{first:?}");
    assert_eq!(first.decided_by, "copy-method-by-driver", "{first:?}");

    // The next component, pinned, but signed by a stranger.
    std::fs::write(&component, &next).expect("write");
    let text = std::fs::read_to_string(&policy).expect("read");
    std::fs::write(&policy, text.replace(&pin, &next_pin)).expect("write");
    sign(&dir, "stranger", &component);
    wait::until(
        "the reload to be refused",
        Duration::from_secs(60),
        || async {
            let log = std::fs::read_to_string(&controller.log).unwrap_or_default();
            Ok((log.contains("policy reload refused")
                && log.contains("not made by any trusted key"))
            .then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.controller_tail()));

    // A new object is still decided by the signed plugin that was loaded.
    pvc("second").create(&src).await;
    create_rs(&src, "second", spec("second")).await;
    let second = copy_method_of(&api, "second").await;
    assert_eq!(second.value, "Snapshot", "{second:?}");
    assert_eq!(second.decided_by, "copy-method-by-driver", "{second:?}");
    assert_ne!(second.fallback, Some(true));
    drop(controller);
}
