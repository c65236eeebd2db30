//! `status`: both sides of every pair in one table, with the recovery point's age (what a
//! failover now would lose). Building the rows is pure; only `run` reads the clusters.

use std::{collections::BTreeMap, time::Duration};

use comfy_table::{Cell, Color, ContentArrangement, Table, presets::NOTHING};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};
use kube::{ResourceExt, api::ListParams};
use serde::Serialize;

use super::{Error, Output, Sites, contexts, keys, manifests::PAIR_LABEL};
use crate::api::{ReplicationDestination, ReplicationSource, SyncStatus};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub sites: Sites,
    /// Pairs in every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

/// One side of a pair as `status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Side {
    pub namespace: String,
    pub name: String,
    pub last_sync: Option<String>,
    pub last_sync_duration: Option<String>,
    pub next_sync: Option<String>,
    /// The Synchronizing condition's reason.
    pub state: Option<String>,
    pub message: Option<String>,
    /// Bytes and rate while a sync runs.
    pub progress: Option<String>,
    pub paused: bool,
}

/// A pair: either side may be missing (not created yet, or its site unreachable).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PairRow {
    pub pair: String,
    pub source: Option<Side>,
    pub destination: Option<Side>,
    /// Seconds since the data the copy holds was current.
    pub recovery_point_age_seconds: Option<i64>,
    pub recovery_point_objective_seconds: Option<u64>,
    pub beyond_objective: bool,
    pub latest_image: Option<String>,
    pub fenced: bool,
    /// Where the source's key comes from: "vault pair <name>" (no Secret copied) or
    /// "Secret <name>" (copied, or generated when nothing else supplies it).
    pub key_source: Option<String>,
}

/// Where a side's key comes from: its vault pair, else the Secret it names (its spec's,
/// else the one its controller made).
fn key_source(
    annotations: &BTreeMap<String, String>,
    named: Option<&str>,
    made: Option<&str>,
) -> Option<String> {
    annotations
        .get(crate::policy::pairs::PAIR_ANNOTATION)
        .map(|pair| format!("vault pair {pair}"))
        .or_else(|| named.or(made).map(|s| format!("Secret {s}")))
}

fn synchronizing(conditions: Option<&Vec<Condition>>) -> Option<&Condition> {
    conditions?.iter().find(|c| c.type_ == "Synchronizing")
}

fn side(namespace: String, name: String, sync: Option<&SyncStatus>, paused: bool) -> Side {
    let condition = sync.and_then(|s| synchronizing(s.conditions.as_ref()));
    let running = condition.is_some_and(|c| c.reason == "SyncInProgress");
    Side {
        namespace,
        name,
        last_sync: sync
            .and_then(|s| s.last_sync_time.as_ref())
            .map(|t| t.0.to_string()),
        last_sync_duration: sync.and_then(|s| s.last_sync_duration.clone()),
        next_sync: sync
            .and_then(|s| s.next_sync_time.as_ref())
            .map(|t| t.0.to_string()),
        state: condition.map(|c| c.reason.clone()),
        message: condition
            .map(|c| c.message.clone())
            .filter(|m| !m.is_empty()),
        progress: sync
            .and_then(|s| s.progress.as_ref())
            .filter(|_| running)
            .map(|p| progress_text(p.bytes_transferred, p.bytes_per_second)),
        paused,
    }
}

/// "12.0 MiB at 3.0 MiB/s".
pub fn progress_text(bytes: Option<i64>, rate: Option<i64>) -> String {
    let size = |b: i64| indicatif::HumanBytes(b.max(0) as u64).to_string();
    match (bytes, rate) {
        (Some(b), Some(r)) => format!("{} at {}/s", size(b), size(r)),
        (Some(b), None) => size(b),
        _ => "starting".into(),
    }
}

fn pair_key(labels: &BTreeMap<String, String>, name: &str) -> String {
    labels
        .get(PAIR_LABEL)
        .cloned()
        .unwrap_or_else(|| name.to_string())
}

/// A side's valid recovery point objective in seconds (an invalid one the controller
/// reports on the object; here it is as good as absent).
fn objective(annotations: &BTreeMap<String, String>) -> Option<u64> {
    crate::api::recovery_point::of(annotations)?
        .ok()
        .map(|d| d.as_secs())
}

fn last_sync(sync: Option<&SyncStatus>) -> Option<Timestamp> {
    sync?.last_sync_time.as_ref().map(|t| t.0)
}

/// The rows for these objects at `now`: joined by the pair label (by name when absent).
pub fn rows(
    sources: &[ReplicationSource],
    dests: &[ReplicationDestination],
    now: Timestamp,
) -> Vec<PairRow> {
    let mut pairs: BTreeMap<String, PairRow> = BTreeMap::new();
    let mut source_sync: BTreeMap<String, Option<Timestamp>> = BTreeMap::new();
    let mut objectives: BTreeMap<String, u64> = BTreeMap::new();
    for rs in sources {
        let key = pair_key(rs.labels(), &rs.name_any());
        let sync = rs.status.as_ref().map(|s| &s.sync);
        let row = pairs.entry(key.clone()).or_insert_with(|| PairRow {
            pair: key.clone(),
            ..PairRow::default()
        });
        row.source = Some(side(
            rs.namespace().unwrap_or_default(),
            rs.name_any(),
            sync,
            rs.spec.paused == Some(true),
        ));
        row.key_source = key_source(
            rs.annotations(),
            rs.spec
                .rsync_tls
                .as_ref()
                .and_then(|t| t.key_secret.as_deref()),
            rs.status
                .as_ref()
                .and_then(|s| s.rsync_tls.as_ref())
                .and_then(|t| t.key_secret.as_deref()),
        );
        source_sync.insert(key.clone(), last_sync(sync));
        if let Some(rpo) = objective(rs.annotations()) {
            objectives.insert(key, rpo);
        }
    }
    for rd in dests {
        let key = pair_key(rd.labels(), &rd.name_any());
        let status = rd.status.as_ref();
        let sync = status.map(|s| &s.sync);
        let row = pairs.entry(key.clone()).or_insert_with(|| PairRow {
            pair: key.clone(),
            ..PairRow::default()
        });
        row.destination = Some(side(
            rd.namespace().unwrap_or_default(),
            rd.name_any(),
            sync,
            rd.spec.paused == Some(true),
        ));
        row.latest_image = status
            .and_then(|s| s.latest_image.as_ref())
            .map(|i| format!("{}/{}", i.kind, i.name));
        row.fenced = rd.annotations().contains_key(keys::FENCED);
        if row.key_source.is_none() {
            row.key_source = key_source(
                rd.annotations(),
                None,
                status
                    .and_then(|s| s.rsync_tls.as_ref())
                    .and_then(|t| t.key_secret.as_deref()),
            );
        }
        // The destination's objective wins: its site is where a failover happens.
        if let Some(rpo) = objective(rd.annotations()) {
            objectives.insert(key.clone(), rpo);
        }
        // The copy holds what the destination last completed: that is the recovery point.
        if let Some(at) = last_sync(sync) {
            row.recovery_point_age_seconds = Some(now.duration_since(at).as_secs());
        }
    }
    for (key, row) in &mut pairs {
        if row.recovery_point_age_seconds.is_none()
            && let Some(Some(at)) = source_sync.get(key)
        {
            row.recovery_point_age_seconds = Some(now.duration_since(*at).as_secs());
        }
        row.recovery_point_objective_seconds = objectives.get(key).copied();
        row.beyond_objective = match (
            row.recovery_point_objective_seconds,
            row.recovery_point_age_seconds,
        ) {
            (Some(rpo), Some(age)) => age > rpo as i64,
            // Never synced at all is beyond any objective.
            (Some(_), None) => true,
            _ => false,
        };
    }
    pairs.into_values().collect()
}

fn age_text(seconds: Option<i64>) -> String {
    seconds.map_or("-".into(), |s| {
        humantime::format_duration(Duration::from_secs(s.max(0) as u64)).to_string()
    })
}

/// The table `status` prints.
pub fn table(rows: &[PairRow], colour: bool) -> Table {
    let mut table = Table::new();
    table
        .load_style(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    if !colour {
        table.force_no_tty();
    }
    table.set_header([
        "PAIR",
        "SOURCE",
        "DESTINATION",
        "LAST SYNC",
        "DURATION",
        "NEXT SYNC",
        "RPO AGE",
        "STATE",
        "PROGRESS",
        "LATEST IMAGE",
    ]);
    let dash = || "-".to_string();
    for row in rows {
        let src = row.source.as_ref();
        let dst = row.destination.as_ref();
        let place = |s: Option<&Side>| {
            s.map_or("(not found)".to_string(), |s| {
                format!("{}/{}", s.namespace, s.name)
            })
        };
        let state = [src, dst]
            .iter()
            .map(|s| {
                s.map_or(dash(), |s| {
                    if s.paused {
                        "Paused".into()
                    } else {
                        s.state.clone().unwrap_or_else(dash)
                    }
                })
            })
            .collect::<Vec<_>>()
            .join(" / ");
        let state = if row.fenced {
            format!("{state} (fenced)")
        } else {
            state
        };
        let mut age = age_text(row.recovery_point_age_seconds);
        if row.beyond_objective {
            age.push_str(" > RPO");
        }
        let mut age_cell = Cell::new(age);
        if colour && row.beyond_objective {
            age_cell = age_cell.fg(Color::Red);
        }
        table.add_row(vec![
            Cell::new(&row.pair),
            Cell::new(place(src)),
            Cell::new(place(dst)),
            Cell::new(
                dst.or(src)
                    .and_then(|s| s.last_sync.clone())
                    .unwrap_or_else(dash),
            ),
            Cell::new(
                src.or(dst)
                    .and_then(|s| s.last_sync_duration.clone())
                    .unwrap_or_else(dash),
            ),
            Cell::new(src.and_then(|s| s.next_sync.clone()).unwrap_or_else(dash)),
            age_cell,
            Cell::new(state),
            Cell::new(
                src.and_then(|s| s.progress.clone())
                    .or_else(|| dst.and_then(|s| s.progress.clone()))
                    .unwrap_or_else(dash),
            ),
            Cell::new(row.latest_image.clone().unwrap_or_else(dash)),
        ]);
    }
    table
}

pub async fn run(args: Args) -> Result<(), Error> {
    let (source, dest) = contexts::reachable(&args.sites).await?;
    if source.is_none() && dest.is_none() {
        return Err(Error::Unreachable {
            role: "source and destination",
            context: "both".into(),
            detail: "neither cluster answers".into(),
        });
    }
    let params = ListParams::default();
    let mut sources = Vec::new();
    if let Some(site) = &source {
        let api = if args.all_namespaces {
            kube::Api::all(site.client.clone())
        } else {
            site.sources()
        };
        sources = api.list(&params).await.map_err(|e| site.api(e))?.items;
    }
    let mut dests = Vec::new();
    if let Some(site) = &dest {
        let api = if args.all_namespaces {
            kube::Api::all(site.client.clone())
        } else {
            site.destinations()
        };
        dests = api.list(&params).await.map_err(|e| site.api(e))?.items;
    }
    let rows = rows(&sources, &dests, Timestamp::now());
    match args.output {
        Output::Table if rows.is_empty() => eprintln!("no pairs found"),
        Output::Table => println!("{}", table(&rows, super::colour())),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(|e| Error::Output(e.to_string()))?
        ),
        Output::Yaml => print!(
            "{}",
            serde_yaml_ng::to_string(&rows).map_err(|e| Error::Output(e.to_string()))?
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn rs(
        name: &str,
        pair: Option<&str>,
        last: Option<i64>,
        rpo: Option<&str>,
    ) -> ReplicationSource {
        let mut rs = ReplicationSource::new(name, Default::default());
        rs.metadata.namespace = Some("app".into());
        if let Some(p) = pair {
            rs.metadata.labels = Some(BTreeMap::from([(PAIR_LABEL.into(), p.into())]));
        }
        if let Some(r) = rpo {
            rs.metadata.annotations = Some(BTreeMap::from([(keys::RPO.into(), r.into())]));
        }
        let mut status = crate::api::ReplicationSourceStatus::default();
        status.sync.last_sync_time = last.map(|s| Time(at(s)));
        rs.status = Some(status);
        rs
    }

    fn rd(name: &str, pair: Option<&str>, last: Option<i64>) -> ReplicationDestination {
        rd_with(name, pair, last, None)
    }

    fn rd_with(
        name: &str,
        pair: Option<&str>,
        last: Option<i64>,
        rpo: Option<&str>,
    ) -> ReplicationDestination {
        let mut rd = ReplicationDestination::new(name, Default::default());
        rd.metadata.namespace = Some("dr".into());
        if let Some(p) = pair {
            rd.metadata.labels = Some(BTreeMap::from([(PAIR_LABEL.into(), p.into())]));
        }
        if let Some(r) = rpo {
            rd.metadata.annotations = Some(BTreeMap::from([(keys::RPO.into(), r.into())]));
        }
        let mut status = crate::api::ReplicationDestinationStatus::default();
        status.sync.last_sync_time = last.map(|s| Time(at(s)));
        rd.status = Some(status);
        rd
    }

    #[test]
    fn sides_join_by_pair_label_and_age_counts_from_the_destination() {
        let rows = rows(
            &[rs("db", Some("db"), Some(1_000), Some("10m"))],
            &[rd("db-copy", Some("db"), Some(900))],
            at(1_500),
        );
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.source.as_ref().unwrap().name, "db");
        assert_eq!(row.destination.as_ref().unwrap().name, "db-copy");
        assert_eq!(row.recovery_point_age_seconds, Some(600));
        assert_eq!(row.recovery_point_objective_seconds, Some(600));
        assert!(
            !row.beyond_objective,
            "exactly at the objective is within it"
        );
    }

    #[test]
    fn beyond_the_objective_is_marked() {
        let rows = rows(
            &[rs("db", None, Some(0), Some("1m"))],
            &[rd("db", None, Some(0))],
            at(61),
        );
        assert!(rows[0].beyond_objective);
        let table = table(&rows, false).to_string();
        assert!(table.contains("1m 1s > RPO"), "{table}");
    }

    #[test]
    fn a_pair_never_synced_is_beyond_any_objective_and_unpaired_sides_show_alone() {
        let rows = rows(
            &[rs("a", None, None, Some("1h"))],
            &[rd("b", None, None)],
            at(10),
        );
        assert_eq!(rows.len(), 2);
        assert!(rows[0].beyond_objective && rows[0].destination.is_none());
        assert!(!rows[1].beyond_objective && rows[1].source.is_none());
        assert!(table(&rows, false).to_string().contains("(not found)"));
    }

    #[test]
    fn the_destinations_objective_wins_and_an_invalid_one_falls_back_to_the_sources() {
        let row = |source: Option<&str>, dest: Option<&str>| {
            rows(
                &[rs("db", None, Some(0), source)],
                &[rd_with("db", None, Some(0), dest)],
                at(120),
            )
            .remove(0)
        };
        let both = row(Some("1m"), Some("1h"));
        assert_eq!(both.recovery_point_objective_seconds, Some(3600));
        assert!(!both.beyond_objective, "2m is within the destination's 1h");
        let dest_only = row(None, Some("90s"));
        assert_eq!(dest_only.recovery_point_objective_seconds, Some(90));
        assert!(dest_only.beyond_objective);
        let invalid = row(Some("1m"), Some("soon"));
        assert_eq!(invalid.recovery_point_objective_seconds, Some(60));
        let neither = row(Some("15"), None);
        assert_eq!(neither.recovery_point_objective_seconds, None);
        assert!(!neither.beyond_objective);
    }

    #[test]
    fn the_key_source_tells_a_vault_pair_from_a_secret() {
        let mut paired = rs("db", None, None, None);
        paired.metadata.annotations = Some(BTreeMap::from([(
            crate::policy::pairs::PAIR_ANNOTATION.into(),
            "geo-db".into(),
        )]));
        let mut copied = rs("web", None, None, None);
        copied.spec.rsync_tls = Some(crate::api::ReplicationSourceRsyncTLSSpec {
            key_secret: Some("volsync-rsync-tls-web".into()),
            ..Default::default()
        });
        let rows = rows(&[paired, copied], &[rd("lone", None, None)], at(0));
        let sources: Vec<_> = rows.iter().map(|r| r.key_source.as_deref()).collect();
        assert_eq!(
            sources,
            [
                Some("vault pair geo-db"),
                None,
                Some("Secret volsync-rsync-tls-web")
            ]
        );
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(json["keySource"], "vault pair geo-db");
    }

    #[test]
    fn progress_reads_as_bytes_and_rate() {
        assert_eq!(
            progress_text(Some(3 * 1024 * 1024), Some(1024 * 1024)),
            "3.00 MiB at 1.00 MiB/s"
        );
        assert_eq!(progress_text(None, None), "starting");
    }
}
