//! The mover's settings: command-line flags, each with the environment variable the Job
//! sets, and their validation into values safe to write into stunnel and rsyncd configs.
//!
//! Every value that ends up in a generated config file is checked here for characters that
//! could inject extra directives (newlines, and whitespace where stunnel splits words).
//! This module must never read the key file's contents or start any process.

use std::{path::PathBuf, time::Duration};

use clap::{ArgAction, builder::BoolishValueParser};

use super::exit::{ErrorClass, Failure};

/// Settings both sides share.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// The volume to replicate (the reference mounts it at /data).
    #[arg(long, env = "DATA_DIR", default_value = "/data")]
    pub data_dir: PathBuf,
    /// Directory holding `psk.txt` (`<identity>:<hex key>`, not world-readable).
    #[arg(long, env = "KEY_DIR", default_value = "/keys")]
    pub key_dir: PathBuf,
    /// Writable scratch directory for generated configs and the control module.
    #[arg(long, env = "TMP_DIR", default_value = "/tmp")]
    pub tmp_dir: PathBuf,
    /// Privileged mover (`1`/`0`): the rsync daemon keeps uid 0 and restores owners.
    #[arg(long = "privileged", env = "PRIVILEGED_MOVER", default_value = "0",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub privileged: bool,
    /// Where the JSON summary goes at exit (the container's terminationMessagePath).
    #[arg(
        long,
        env = "TERMINATION_MESSAGE_PATH",
        default_value = "/dev/termination-log"
    )]
    pub termination_message_path: PathBuf,
    /// Lowest TLS version stunnel accepts (`TLSv1.2` on some OpenShift clusters).
    #[arg(long, env = "SSL_VERSION_MIN", default_value = "TLSv1.3")]
    pub ssl_version_min: String,
    /// Least time between two progress lines.
    #[arg(long, env = "PROGRESS_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub progress_interval: Duration,
    /// Which TLS-PSK tunnel carries rsync: the built-in one, or stunnel processes.
    #[arg(long, env = "TLS_TUNNEL", value_enum, default_value_t = Tunnel::Builtin)]
    pub tunnel: Tunnel,
}

/// The TLS-PSK tunnel implementation. Both put the same handshake on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Tunnel {
    /// In-process TLS (OpenSSL) with batched records: the default.
    #[default]
    Builtin,
    /// stunnel processes, as the reference mover: the fallback.
    Stunnel,
}

/// Settings of `ferrosync mover destination`.
#[derive(Debug, Clone, clap::Args)]
pub struct DestinationArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// Address stunnel listens on. Default: POD_IP if set, else every address.
    #[arg(long, env = "LISTEN_ADDRESS")]
    pub listen_address: Option<String>,
    /// The pod's own IP (downward API `status.podIP`), used when LISTEN_ADDRESS is unset.
    #[arg(long, env = "POD_IP")]
    pub pod_ip: Option<String>,
    /// TCP port stunnel listens on.
    #[arg(long, env = "LISTEN_PORT", default_value = "8000")]
    pub listen_port: String,
    /// Give up when no source has connected for this long (`0s` or unset: wait forever).
    #[arg(long, env = "IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Cap on the bytes a source may put in the control module (which lives in memory):
    /// a byte count, or with a `Ki`, `Mi` or `Gi` suffix.
    #[arg(long, env = "CONTROL_LIMIT", default_value = "256Mi", value_parser = super::control::parse_limit)]
    pub control_limit: u64,
    /// How long a connection may stay open without starting a transfer (rsync's daemon
    /// waits forever for a client to name its module).
    #[arg(long, env = "GREETING_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub greeting_timeout: Duration,
}

/// Settings of `ferrosync mover source`.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// Host name or IP of the destination mover's Service.
    #[arg(long, env = "DESTINATION_ADDRESS")]
    pub destination_address: Option<String>,
    /// Port of the destination mover.
    #[arg(long, env = "DESTINATION_PORT", default_value = "8000")]
    pub destination_port: String,
    /// Attempts before giving up on transient failures.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u32,
    /// Delay before the first retry; each later retry waits twice as long.
    #[arg(long, env = "RETRY_BASE_DELAY", default_value = "2s", value_parser = humantime::parse_duration)]
    pub retry_base_delay: Duration,
    /// Compression of the data stream: none, auto (rsync -z, negotiated), zstd, lz4, zlib.
    #[arg(long, env = "RSYNC_COMPRESS", value_enum, default_value_t = Compress::None)]
    pub compress: Compress,
    /// Bandwidth limit passed to rsync --bwlimit (e.g. `10m`, in rsync's syntax).
    #[arg(long, env = "RSYNC_BWLIMIT", value_parser = parse_bwlimit)]
    pub bwlimit: Option<String>,
    /// rsync --block-size: `auto` (from the largest file, see [`BlockSize::Auto`]),
    /// `rsync` (rsync's own choice per file) or a size in bytes.
    #[arg(long, env = "RSYNC_BLOCK_SIZE", default_value = "auto", value_parser = BlockSize::parse)]
    pub block_size: BlockSize,
    /// rsync --timeout: abort a connection after this long without any I/O.
    #[arg(long, env = "RSYNC_IO_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub io_timeout: Duration,
}

/// Compression choices for the data stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compress {
    /// No compression (fastest on fast links and for incompressible data).
    None,
    /// `-z`: rsync negotiates the best common algorithm, as the reference does.
    Auto,
    /// `-z --compress-choice=zstd`.
    Zstd,
    /// `-z --compress-choice=lz4`.
    Lz4,
    /// `-z --compress-choice=zlib`.
    Zlib,
}

impl Compress {
    /// The rsync arguments for this choice.
    pub fn rsync_args(self) -> &'static [&'static str] {
        match self {
            Self::None => &[],
            Self::Auto => &["-z"],
            Self::Zstd => &["-z", "--compress-choice=zstd"],
            Self::Lz4 => &["-z", "--compress-choice=lz4"],
            Self::Zlib => &["-z", "--compress-choice=zlib"],
        }
    }
}

impl Compress {
    /// Parses a choice by its name, as the environment variable takes it.
    pub fn parse(value: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(value.trim(), true).map_err(|_| {
            format!("{value:?} is not a compression choice: use none, auto, zstd, lz4 or zlib")
        })
    }
}

/// Checks an rsync `--bwlimit` value: a rate with an optional unit, as rsync reads it
/// (`0` is no limit; no unit is KiB/s; `k`, `m`, `g` with optional `b`/`ib`).
pub fn parse_bwlimit(value: &str) -> Result<String, String> {
    let v = value.trim();
    let digits_end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(digits_end);
    let number_ok = !number.is_empty()
        && number.chars().filter(|c| *c == '.').count() <= 1
        && number.chars().next().is_some_and(|c| c.is_ascii_digit())
        && !number.ends_with('.');
    let unit_ok = matches!(
        unit.to_ascii_lowercase().as_str(),
        "" | "k" | "kb" | "kib" | "m" | "mb" | "mib" | "g" | "gb" | "gib"
    );
    if number_ok && unit_ok {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "{value:?} is not a bandwidth limit: use a rate such as 500k, 10m or 1.5g (bytes per second; 0 means none)"
        ))
    }
}

/// The smallest and largest `--block-size` rsync (protocol 30+) accepts that make sense.
pub const BLOCK_SIZE_RANGE: std::ops::RangeInclusive<u32> = 512..=131_072;

/// How rsync's delta-transfer block size is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockSize {
    /// From the largest regular file of the volume (see `blocks::for_largest_file`): small
    /// blocks, so scattered page-sized writes do not resend whole 14 KB blocks.
    Auto,
    /// rsync's own rule, the square root of each file's size (at least 700 bytes).
    Rsync,
    /// This many bytes for every file.
    Bytes(u32),
}

impl BlockSize {
    /// Parses `auto`, `rsync` or a byte count in [`BLOCK_SIZE_RANGE`].
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim() {
            "auto" => Ok(Self::Auto),
            "rsync" => Ok(Self::Rsync),
            n => match n.parse::<u32>() {
                Ok(b) if BLOCK_SIZE_RANGE.contains(&b) => Ok(Self::Bytes(b)),
                _ => Err(format!(
                    "{value:?} is not a block size: use auto, rsync, or bytes from {} to {}",
                    BLOCK_SIZE_RANGE.start(),
                    BLOCK_SIZE_RANGE.end()
                )),
            },
        }
    }
}

/// Where stunnel listens on the destination.
pub fn listen_endpoint(args: &DestinationArgs, ipv6_enabled: bool) -> Result<String, Failure> {
    let port = port(&args.listen_port, "LISTEN_PORT")?;
    let host = match (&args.listen_address, &args.pod_ip) {
        (Some(addr), _) if !addr.is_empty() => host(addr, "LISTEN_ADDRESS")?,
        (_, Some(ip)) if !ip.is_empty() => host(ip, "POD_IP")?,
        // stunnel's "::" binds both families when IPv6 is on, as the reference's ":::8000".
        _ if ipv6_enabled => "::".to_owned(),
        _ => "0.0.0.0".to_owned(),
    };
    Ok(format!("{host}:{port}"))
}

/// Where the source connects.
pub fn destination_endpoint(args: &SourceArgs) -> Result<String, Failure> {
    let addr = args
        .destination_address
        .as_deref()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| config("DESTINATION_ADDRESS must be set to the destination's address"))?;
    Ok(format!(
        "{}:{}",
        host(addr, "DESTINATION_ADDRESS")?,
        port(&args.destination_port, "DESTINATION_PORT")?
    ))
}

/// Checks the shared settings that flow into generated files.
pub fn check_common(common: &Common) -> Result<(), Failure> {
    if !["TLSv1.2", "TLSv1.3"].contains(&common.ssl_version_min.as_str()) {
        return Err(config(format!(
            "SSL_VERSION_MIN must be TLSv1.2 or TLSv1.3, not {:?}",
            common.ssl_version_min
        )));
    }
    for (name, path) in [
        ("DATA_DIR", &common.data_dir),
        ("KEY_DIR", &common.key_dir),
        ("TMP_DIR", &common.tmp_dir),
    ] {
        let text = path
            .to_str()
            .ok_or_else(|| config(format!("{name} must be UTF-8")))?;
        // stunnel splits execArgs on whitespace and config values end at a newline.
        if text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\'')
        {
            return Err(config(format!(
                "{name} must not contain whitespace or quotes: {text:?}"
            )));
        }
    }
    Ok(())
}

fn host(value: &str, name: &str) -> Result<String, Failure> {
    let bare = value.trim_start_matches('[').trim_end_matches(']');
    let ok = !bare.is_empty()
        && bare.len() <= 253
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:%".contains(c));
    if ok {
        Ok(bare.to_owned())
    } else {
        Err(config(format!(
            "{name} is not a host name or IP address: {value:?}"
        )))
    }
}

fn port(value: &str, name: &str) -> Result<u16, Failure> {
    match value.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(config(format!(
            "{name} must be a TCP port from 1 to 65535, not {value:?}"
        ))),
    }
}

fn config(message: impl Into<String>) -> Failure {
    Failure::new(ErrorClass::Config, message)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Src {
        #[command(flatten)]
        args: SourceArgs,
    }

    #[derive(Parser)]
    struct Dst {
        #[command(flatten)]
        args: DestinationArgs,
    }

    #[test]
    fn source_defaults_match_the_reference_layout() {
        let a = Src::parse_from(["x", "--destination-address", "10.0.0.7"]).args;
        assert_eq!(a.common.data_dir, PathBuf::from("/data"));
        assert_eq!(a.common.key_dir, PathBuf::from("/keys"));
        assert_eq!(a.common.tmp_dir, PathBuf::from("/tmp"));
        assert!(!a.common.privileged);
        assert_eq!(destination_endpoint(&a).expect("ok"), "10.0.0.7:8000");
        assert!(check_common(&a.common).is_ok());
    }

    #[test]
    fn missing_or_hostile_values_are_config_errors() {
        let a = Src::parse_from(["x"]).args;
        assert_eq!(
            destination_endpoint(&a).expect_err("unset").class,
            ErrorClass::Config
        );
        let a = Src::parse_from(["x", "--destination-address", "a\nexec = /bin/sh"]).args;
        assert!(destination_endpoint(&a).is_err());
        let a =
            Src::parse_from(["x", "--destination-address", "h", "--destination-port", "0"]).args;
        assert!(destination_endpoint(&a).is_err());
        let a = Src::parse_from(["x", "--ssl-version-min", "TLSv1.3\nx=y"]).args;
        assert!(check_common(&a.common).is_err());
        let a = Src::parse_from(["x", "--tmp-dir", "/tmp/a b"]).args;
        assert!(check_common(&a.common).is_err());
    }

    #[test]
    fn tuning_values_are_validated() {
        for ok in ["0", "500", "500k", "10m", "1.5g", "10MB", "2MiB", "100KB"] {
            assert_eq!(parse_bwlimit(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in [
            "", "fast", "-1", "10 m", "10x", "1..5m", ".5m", "5.m", "10m;rm",
        ] {
            assert!(parse_bwlimit(bad).is_err(), "{bad}");
        }
        assert_eq!(Compress::parse("ZSTD"), Ok(Compress::Zstd));
        assert!(Compress::parse("gzip").is_err());
        assert_eq!(BlockSize::parse("auto"), Ok(BlockSize::Auto));
        assert_eq!(BlockSize::parse("rsync"), Ok(BlockSize::Rsync));
        assert_eq!(BlockSize::parse("2048"), Ok(BlockSize::Bytes(2048)));
        for bad in ["100", "1000000", "2k", ""] {
            assert!(BlockSize::parse(bad).is_err(), "{bad}");
        }
        assert!(Src::try_parse_from(["x", "--bwlimit", "fast"]).is_err());
        assert!(Src::try_parse_from(["x", "--block-size", "7"]).is_err());
    }

    #[test]
    fn listen_endpoint_prefers_explicit_then_pod_ip_then_all() {
        let d = |extra: &[&str]| {
            let mut argv = vec!["x"];
            argv.extend_from_slice(extra);
            Dst::parse_from(argv).args
        };
        assert_eq!(listen_endpoint(&d(&[]), true).expect("ok"), ":::8000");
        assert_eq!(listen_endpoint(&d(&[]), false).expect("ok"), "0.0.0.0:8000");
        assert_eq!(
            listen_endpoint(&d(&["--pod-ip", "10.1.2.3"]), true).expect("ok"),
            "10.1.2.3:8000"
        );
        assert_eq!(
            listen_endpoint(
                &d(&[
                    "--pod-ip",
                    "10.1.2.3",
                    "--listen-address",
                    "127.0.0.1",
                    "--listen-port",
                    "9"
                ]),
                true
            )
            .expect("ok"),
            "127.0.0.1:9"
        );
        assert_eq!(
            listen_endpoint(&d(&["--privileged", "1"]), false).expect("ok"),
            "0.0.0.0:8000"
        );
        assert!(d(&["--privileged", "1"]).common.privileged);
    }

    #[test]
    fn control_bounds_default_to_256_mib_and_30s_and_bad_values_are_named() {
        let d = Dst::parse_from(["x"]).args;
        assert_eq!(d.control_limit, 256 << 20);
        assert_eq!(d.greeting_timeout, Duration::from_secs(30));
        let d = Dst::parse_from(["x", "--control-limit", "1Mi", "--greeting-timeout", "2s"]).args;
        assert_eq!(
            (d.control_limit, d.greeting_timeout.as_secs()),
            (1 << 20, 2)
        );
        let err = Dst::try_parse_from(["x", "--control-limit", "lots"])
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("--control-limit") && err.contains("positive byte count"),
            "{err}"
        );
    }
}
