use k8s_openapi::api::batch::v1::Job;

use super::*;
use crate::resources::meta::{CLEANUP, fixtures::owner};

fn build(side: Side, privileged: bool, options: &MoverOptions) -> Job {
    let owner = owner("ReplicationSource", "db");
    mover_job(&MoverJob {
        owner: &owner,
        side,
        image: "mover:1",
        backoff_limit: 2,
        pvc: "volsync-db-src",
        key_secret: "keys",
        options,
        privileged,
        destination: (side == Side::Source).then_some(("10.0.0.1", 8000)),
        progress_interval: std::time::Duration::from_secs(3),
        extras: MoverExtras::default(),
        extra_env: vec![("TLS_TUNNEL".into(), "builtin".into())],
    })
}

fn pod(job: &Job) -> &PodSpec {
    job.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
}

fn env_of(job: &Job) -> BTreeMap<String, Option<String>> {
    pod(job).containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect()
}

#[test]
fn unprivileged_mover_is_locked_down() {
    let job = build(Side::Source, false, &MoverOptions::default());
    assert_eq!(
        job.metadata.name.as_deref(),
        Some("volsync-rsync-tls-src-db")
    );
    assert_eq!(job.spec.as_ref().and_then(|s| s.backoff_limit), Some(2));
    let pod = pod(&job);
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let sc = pod.containers[0]
        .security_context
        .clone()
        .expect("security context");
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.clone().and_then(|c| c.drop),
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(sc.capabilities.and_then(|c| c.add), None);
    let psc = pod.security_context.clone().expect("pod security context");
    assert_eq!(
        (psc.run_as_user, psc.fs_group, psc.run_as_non_root),
        (Some(DEFAULT_MOVER_UID), Some(DEFAULT_MOVER_UID), Some(true))
    );
    assert_eq!(env_of(&job)["PRIVILEGED_MOVER"].as_deref(), Some("0"));
}

#[test]
fn privileged_mover_gets_the_reference_capabilities_and_root() {
    let job = build(Side::Destination, true, &MoverOptions::default());
    let sc = pod(&job).containers[0]
        .security_context
        .clone()
        .expect("sc");
    assert_eq!(sc.run_as_user, Some(0));
    let added = sc.capabilities.and_then(|c| c.add).expect("added");
    assert_eq!(
        added,
        PRIVILEGED_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(env_of(&job)["PRIVILEGED_MOVER"].as_deref(), Some("1"));
    assert!(
        !env_of(&job).contains_key("DESTINATION_ADDRESS"),
        "only the source dials out"
    );
}

#[test]
fn volumes_and_mounts_match_the_reference() {
    let job = build(Side::Source, false, &MoverOptions::default());
    let pod = pod(&job);
    let volumes = pod.volumes.clone().expect("volumes");
    assert_eq!(
        volumes[0]
            .persistent_volume_claim
            .as_ref()
            .map(|p| p.claim_name.as_str()),
        Some("volsync-db-src")
    );
    assert_eq!(
        volumes[1].secret.as_ref().and_then(|s| s.default_mode),
        Some(0o600)
    );
    assert_eq!(
        volumes[2]
            .empty_dir
            .as_ref()
            .and_then(|e| e.medium.as_deref()),
        Some("Memory")
    );
    // A key holder must not be able to fill the node's memory through the control module.
    assert_eq!(
        volumes[2]
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.as_ref())
            .map(|q| q.0.as_str()),
        Some("320Mi")
    );
    let mounts: Vec<_> = pod.containers[0]
        .volume_mounts
        .clone()
        .expect("mounts")
        .into_iter()
        .map(|m| m.mount_path)
        .collect();
    assert_eq!(mounts, ["/data", "/keys", "/tmp"]);
    let env = env_of(&job);
    assert_eq!(env["DESTINATION_ADDRESS"].as_deref(), Some("10.0.0.1"));
    assert_eq!(env["DESTINATION_PORT"].as_deref(), Some("8000"));
    assert_eq!(env["PROGRESS_INTERVAL"].as_deref(), Some("3s"));
    assert_eq!(env["TLS_TUNNEL"].as_deref(), Some("builtin"));
}

#[test]
fn user_options_apply_but_cannot_override_selector_labels() {
    let options = MoverOptions {
        mover_pod_labels: Some(BTreeMap::from([
            ("team".to_string(), "db".to_string()),
            (APP_NAME.to_string(), "hijack".to_string()),
        ])),
        mover_service_account: Some("mover-sa".into()),
        mover_security_context: Some(PodSecurityContext {
            run_as_user: Some(1234),
            fs_group: Some(5678),
            ..Default::default()
        }),
        ..Default::default()
    };
    let job = build(Side::Destination, false, &options);
    let template_labels = job
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.clone())
        .and_then(|m| m.labels)
        .expect("labels");
    assert_eq!(template_labels["team"], "db");
    assert_eq!(template_labels[APP_NAME], "dst-db");
    assert_eq!(template_labels[CLEANUP], "uid-db");
    let pod = pod(&job);
    assert_eq!(pod.service_account_name.as_deref(), Some("mover-sa"));
    assert_eq!(
        pod.security_context.as_ref().and_then(|s| s.run_as_user),
        Some(1234)
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
}
