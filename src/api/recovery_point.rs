//! The recovery point objective of a pair: how old the copy's data may get before someone
//! is told. A ferrosync-only annotation (VolSync's API has no field for it) on either side
//! of a pair, written by `kubectl ferrosync replicate --rpo`, read by `kubectl ferrosync
//! status` and by the controller, which exports it for Prometheus to alert on.
//!
//! One parser for all of them, so the tool never writes a value the controller refuses.
//! Pure.

use std::time::Duration;

/// The annotation, on a ReplicationSource or a ReplicationDestination: a duration such as
/// `15m`, `1h` or `1h 30m`.
pub const ANNOTATION: &str = "ferrosync.io/recovery-point-objective";

/// The longest value read, as for the pair-name annotation (`policy::pairs`): the
/// annotation is user input copied into conditions and Events.
pub const MAX_LEN: usize = 63;

/// The smallest objective: below a second no sync can keep it.
pub const MIN_OBJECTIVE: Duration = Duration::from_secs(1);

/// The largest objective: a copy allowed to be more than a year old protects nothing, so
/// a larger value is a typo (an extra digit, `d` for `m`).
pub const MAX_OBJECTIVE: Duration = Duration::from_secs(366 * 24 * 3600);

/// Why an annotation value is not an objective.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpoError {
    /// Longer than [`MAX_LEN`] bytes.
    #[error("{len} bytes long, more than the {MAX_LEN} allowed")]
    TooLong { len: usize },
    /// Not a duration.
    #[error("{value:?} is not a duration such as 15m, 1h or 90s")]
    NotADuration { value: String },
    /// Zero, or shorter than [`MIN_OBJECTIVE`].
    #[error("{value:?} is shorter than 1s")]
    TooShort { value: String },
    /// Longer than [`MAX_OBJECTIVE`].
    #[error("{value:?} is longer than 366 days")]
    TooLarge { value: String },
}

/// The objective an annotation value states (surrounding whitespace ignored).
pub fn parse(value: &str) -> Result<Duration, RpoError> {
    if value.len() > MAX_LEN {
        return Err(RpoError::TooLong { len: value.len() });
    }
    let value = value.trim();
    let objective = humantime::parse_duration(value).map_err(|_| RpoError::NotADuration {
        value: value.into(),
    })?;
    if objective < MIN_OBJECTIVE {
        return Err(RpoError::TooShort {
            value: value.into(),
        });
    }
    if objective > MAX_OBJECTIVE {
        return Err(RpoError::TooLarge {
            value: value.into(),
        });
    }
    Ok(objective)
}

/// A command-line value for `--rpo`: checked with [`parse`], kept as the user wrote it
/// (trimmed), so that the annotation reads as typed and a second run writes the same.
pub fn argument(value: &str) -> Result<String, String> {
    parse(value)
        .map(|_| value.trim().to_string())
        .map_err(|e| e.to_string())
}

/// The objective of an object's annotations: absent, or what [`parse`] says of it.
pub fn of(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Option<Result<Duration, RpoError>> {
    annotations.get(ANNOTATION).map(|v| parse(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_to_their_seconds() {
        for (value, seconds) in [
            ("15m", 900),
            ("1h", 3600),
            ("90s", 90),
            (" 1h 30m ", 5400),
            ("2days", 172_800),
            ("1s", 1),
            ("366d", 366 * 86_400),
        ] {
            assert_eq!(parse(value), Ok(Duration::from_secs(seconds)), "{value:?}");
        }
    }

    #[test]
    fn non_durations_absurd_values_and_long_ones_are_refused_with_the_reason() {
        for value in ["", "soon", "15", "-5m", "15 minutes ago", "1h; rm -rf /"] {
            let err = parse(value).expect_err(value);
            assert!(
                matches!(err, RpoError::NotADuration { .. }),
                "{value:?}: {err}"
            );
            assert!(err.to_string().contains("15m, 1h or 90s"), "{err}");
        }
        assert!(matches!(parse("0s"), Err(RpoError::TooShort { .. })));
        assert!(matches!(parse("500ms"), Err(RpoError::TooShort { .. })));
        assert!(matches!(parse("367d"), Err(RpoError::TooLarge { .. })));
        assert!(matches!(parse("1000y"), Err(RpoError::TooLarge { .. })));
        // Overflowing u64 seconds is not a panic.
        assert!(parse("99999999999999999999999h").is_err());
        let long = format!("1h{}", " ".repeat(MAX_LEN));
        assert_eq!(
            parse(&long),
            Err(RpoError::TooLong { len: MAX_LEN + 2 }),
            "the limit applies before trimming"
        );
    }

    #[test]
    fn the_command_line_keeps_the_text_and_refuses_what_the_controller_would() {
        assert_eq!(argument(" 15m "), Ok("15m".into()));
        let err = argument("15").expect_err("no unit");
        assert!(err.contains("15m, 1h or 90s"), "{err}");
        assert!(argument("0s").is_err());
    }

    #[test]
    fn the_annotation_is_read_from_an_objects_annotations() {
        let mut annotations = std::collections::BTreeMap::new();
        assert_eq!(of(&annotations), None);
        annotations.insert(ANNOTATION.to_string(), "1h".to_string());
        assert_eq!(of(&annotations), Some(Ok(Duration::from_secs(3600))));
        annotations.insert(ANNOTATION.to_string(), "later".to_string());
        assert!(matches!(of(&annotations), Some(Err(_))));
    }
}
