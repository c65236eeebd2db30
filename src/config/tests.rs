// figment::Jail closures return figment::Error, which is large by figment's design.
#![allow(clippy::result_large_err)]

use std::path::Path;

use figment::{Jail, providers::Env};

use super::*;

fn load(jail: &Jail, file: Option<&str>) -> Result<Config, Error> {
    let file = file.map(|f| jail.directory().join(f));
    Config::figment(file.as_deref(), Env::prefixed(ENV_PREFIX))
}

#[test]
fn defaults_load_without_a_file() {
    Jail::expect_with(|jail| {
        let config = load(jail, None).expect("defaults are valid");
        assert_eq!(config.server.listen.port(), 8080);
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.mover.backoff_limit, 2);
        assert_eq!(config.requeue.poll, Duration::from_secs(2));
        Ok(())
    });
}

#[test]
fn file_overrides_defaults_and_env_overrides_file() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "c.toml",
            "[log]\nformat = \"json\"\nlevel = \"debug\"\n[mover]\nbackoff_limit = 0\n",
        )?;
        jail.set_env("FERROSYNC_LOG__LEVEL", "warn");
        jail.set_env("FERROSYNC_REQUEUE__POLL", "250ms");
        let config = load(jail, Some("c.toml")).expect("valid");
        assert_eq!(config.log.format, LogFormat::Json, "from the file");
        assert_eq!(config.log.level, "warn", "environment beats the file");
        assert_eq!(config.mover.backoff_limit, 0);
        assert_eq!(config.requeue.poll, Duration::from_millis(250));
        Ok(())
    });
}

#[test]
fn unrelated_prefixed_variables_are_not_keys() {
    Jail::expect_with(|jail| {
        jail.set_env("FERROSYNC_CONFIG", "/somewhere.toml");
        jail.set_env("FERROSYNC_CACHE_DIR", "/tmp");
        load(jail, None).expect("not configuration keys");
        Ok(())
    });
}

fn error_of(jail: &Jail, toml: &str) -> String {
    jail.create_file("bad.toml", toml).expect("write");
    load(jail, Some("bad.toml"))
        .expect_err("must be rejected")
        .to_string()
}

#[test]
fn unknown_key_names_the_key_and_the_file() {
    Jail::expect_with(|jail| {
        let msg = error_of(jail, "[log]\nlevle = \"debug\"\n");
        assert!(msg.contains("levle"), "{msg}");
        assert!(msg.contains("bad.toml"), "{msg}");
        Ok(())
    });
}

#[test]
fn bad_type_names_the_key_and_the_file() {
    Jail::expect_with(|jail| {
        let msg = error_of(jail, "[mover]\nbackoff_limit = \"two\"\n");
        assert!(msg.contains("backoff_limit"), "{msg}");
        assert!(msg.contains("bad.toml"), "{msg}");
        Ok(())
    });
}

#[test]
fn bad_duration_names_the_key_and_the_file() {
    Jail::expect_with(|jail| {
        let msg = error_of(jail, "[requeue]\npoll = \"soon\"\n");
        assert!(msg.contains("poll"), "{msg}");
        assert!(msg.contains("bad.toml"), "{msg}");
        Ok(())
    });
}

#[test]
fn bad_enum_and_bad_address_are_rejected() {
    Jail::expect_with(|jail| {
        let msg = error_of(jail, "[log]\nformat = \"xml\"\n");
        assert!(msg.contains("format") && msg.contains("xml"), "{msg}");
        let msg = error_of(jail, "[server]\nlisten = \"nowhere\"\n");
        assert!(msg.contains("listen"), "{msg}");
        Ok(())
    });
}

#[test]
fn bad_environment_value_names_the_variable() {
    Jail::expect_with(|jail| {
        jail.set_env("FERROSYNC_MOVER__BACKOFF_LIMIT", "many");
        let msg = load(jail, None).expect_err("rejected").to_string();
        assert!(msg.to_lowercase().contains("mover.backoff_limit"), "{msg}");
        assert!(msg.contains("FERROSYNC_"), "{msg}");
        Ok(())
    });
}

#[test]
fn missing_explicit_file_is_an_error() {
    let err = Config::figment(
        Some(Path::new("/nonexistent/ferrosync.toml")),
        Env::prefixed("X_"),
    )
    .expect_err("missing file");
    assert!(
        err.to_string().contains("/nonexistent/ferrosync.toml"),
        "{err}"
    );
}

#[test]
fn semantic_checks_reject_inverted_backoff_and_bad_filter() {
    Jail::expect_with(|jail| {
        let msg = error_of(jail, "[requeue]\nerror_min = \"10m\"\nerror_max = \"1s\"\n");
        assert!(msg.contains("error_min"), "{msg}");
        let msg = error_of(jail, "[log]\nlevel = \"info,[[\"\n");
        assert!(msg.contains("log.level"), "{msg}");
        Ok(())
    });
}

#[test]
fn metrics_default_to_https_and_plain_http_only_on_loopback() {
    Jail::expect_with(|jail| {
        let config = load(jail, None).expect("defaults");
        assert!(config.metrics.secure);
        assert_eq!(config.metrics.listen.port(), 8443);
        assert_eq!(config.metrics.cert_file, None);

        let msg = error_of(jail, "[metrics]\nsecure = false\n");
        assert!(msg.contains("metrics.secure = false"), "{msg}");
        assert!(msg.contains("0.0.0.0:8443"), "{msg}");

        jail.create_file(
            "dev.toml",
            "[metrics]\nsecure = false\nlisten = \"127.0.0.1:9443\"\n",
        )?;
        let config = load(jail, Some("dev.toml")).expect("plain HTTP on loopback");
        assert!(!config.metrics.secure);

        let msg = error_of(jail, "[metrics]\ncert_file = \"/tls.crt\"\n");
        assert!(msg.contains("metrics.key_file"), "{msg}");
        Ok(())
    });
}
