//! Conversions at the trigger machine's boundary: the status fields between chrono and
//! Kubernetes `Time` (a `jiff::Timestamp`), and durations in Go's text form.
//!
//! Pure value conversions: never any I/O or clock read.

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff};

use super::{Error, SyncTimes};
use crate::api::SyncStatus;

/// Formats like Go's `time.Duration.String()`, which `metav1.Duration` serialises:
/// `28.818695981s`, `1m5.2s`, `1h0m0s`, `1.5ms`, `0s`.
pub fn format_duration(d: TimeDelta) -> String {
    let sign = if d < TimeDelta::zero() { "-" } else { "" };
    let d = d.abs();
    let nanos = d.subsec_nanos().unsigned_abs();
    let secs = d.num_seconds().unsigned_abs();
    if secs == 0 {
        let (value, unit, scale) = match nanos {
            0 => return "0s".to_owned(),
            1..1_000 => (nanos, "ns", 1),
            1_000..1_000_000 => (nanos, "µs", 1_000),
            _ => (nanos, "ms", 1_000_000),
        };
        return format!(
            "{sign}{}{}{unit}",
            value / scale,
            fraction(value % scale, scale)
        );
    }
    let mut out = format!("{}{}s", secs % 60, fraction(nanos, 1_000_000_000));
    if secs >= 60 {
        out = format!("{}m{out}", secs / 60 % 60);
    }
    if secs >= 3600 {
        out = format!("{}h{out}", secs / 3600);
    }
    format!("{sign}{out}")
}

/// `.ddd` for `value / scale`, trailing zeros dropped, empty when zero.
fn fraction(value: u32, scale: u32) -> String {
    if value == 0 {
        return String::new();
    }
    let width = scale.ilog10() as usize;
    format!(".{value:0width$}").trim_end_matches('0').to_owned()
}

impl SyncTimes {
    /// Reads the fields from a resource's status.
    pub fn from_status(status: &SyncStatus) -> Self {
        Self {
            last_sync_time: status.last_sync_time.as_ref().map(from_k8s),
            last_sync_start_time: status.last_sync_start_time.as_ref().map(from_k8s),
            last_sync_duration: status.last_sync_duration.clone(),
            next_sync_time: status.next_sync_time.as_ref().map(from_k8s),
            last_manual_sync: status.last_manual_sync.clone(),
        }
    }

    /// Writes the fields into a resource's status, leaving its other fields alone.
    pub fn write_to(&self, status: &mut SyncStatus) -> Result<(), Error> {
        status.last_sync_time = self.last_sync_time.map(to_k8s).transpose()?;
        status.last_sync_start_time = self.last_sync_start_time.map(to_k8s).transpose()?;
        status
            .last_sync_duration
            .clone_from(&self.last_sync_duration);
        status.next_sync_time = self.next_sync_time.map(to_k8s).transpose()?;
        status.last_manual_sync.clone_from(&self.last_manual_sync);
        Ok(())
    }
}

/// k8s `Time` (a `jiff::Timestamp`) to chrono. Every Kubernetes time fits chrono's range.
pub fn from_k8s(time: &Time) -> DateTime<Utc> {
    let (secs, nanos) = (time.0.as_second(), time.0.subsec_nanosecond());
    // jiff gives a negative fraction before 1970; chrono wants it non-negative.
    let (secs, nanos) = if nanos < 0 {
        (secs - 1, nanos + 1_000_000_000)
    } else {
        (secs, nanos)
    };
    DateTime::from_timestamp(secs, nanos.unsigned_abs()).unwrap_or_default()
}

/// chrono to k8s `Time`; fails only outside years 1-9999 (jiff's range).
pub fn to_k8s(time: DateTime<Utc>) -> Result<Time, Error> {
    jiff::Timestamp::new(time.timestamp(), time.timestamp_subsec_nanos() as i32)
        .map(Time)
        .map_err(|_| Error::TimeOutOfRange(time))
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, h, m, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn durations_format_like_go() {
        let ns = Duration::nanoseconds;
        let cases = [
            (ns(0), "0s"),
            (ns(100), "100ns"),
            (ns(2_000), "2µs"),
            (ns(1_500_000), "1.5ms"),
            (ns(999_999_999), "999.999999ms"),
            (ns(1_000_000_000), "1s"),
            (ns(28_818_695_981), "28.818695981s"),
            (Duration::milliseconds(65_200), "1m5.2s"),
            (Duration::seconds(60), "1m0s"),
            (Duration::seconds(3_600), "1h0m0s"),
            (Duration::seconds(90_061) + ns(500_000_000), "25h1m1.5s"),
            (-Duration::milliseconds(1_500), "-1.5s"),
            (-ns(5), "-5ns"),
        ];
        for (d, want) in cases {
            assert_eq!(format_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn status_round_trips_through_kubernetes_types() {
        let times = SyncTimes {
            last_sync_time: Some(t(10, 0) + Duration::nanoseconds(123)),
            last_sync_start_time: Some(
                Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59)
                    .single()
                    .expect("valid")
                    + Duration::milliseconds(250),
            ),
            last_sync_duration: Some("1s".into()),
            next_sync_time: Some(t(11, 0)),
            last_manual_sync: Some("m".into()),
        };
        let mut status = SyncStatus {
            conditions: Some(Vec::new()),
            ..SyncStatus::default()
        };
        times.write_to(&mut status).expect("in range");
        assert_eq!(SyncTimes::from_status(&status), times);
        assert_eq!(
            status.conditions,
            Some(Vec::new()),
            "other fields untouched"
        );
        let json = serde_json::to_value(&status).expect("serialises");
        assert_eq!(json["nextSyncTime"], "2024-01-01T11:00:00Z");
        let far = Utc
            .with_ymd_and_hms(20_000, 1, 1, 0, 0, 0)
            .single()
            .expect("valid");
        assert_eq!(to_k8s(far), Err(Error::TimeOutOfRange(far)));
    }
}
