//! Names and labels of the objects ferrosync creates, shortened where Kubernetes limits
//! them (63 characters for Services, Jobs' pod labels and label values).

use sha2::{Digest, Sha256};

/// The longest DNS-1123 label (Service names, label values).
pub const MAX_LABEL: usize = 63;

/// `prefix + name`, or, when that exceeds 63 characters, a prefix of it plus a hash of the
/// whole, so that distinct long names stay distinct and the result stays stable.
pub fn shortened(prefix: &str, name: &str) -> String {
    let full = format!("{prefix}{name}");
    if full.len() <= MAX_LABEL {
        return full;
    }
    let digest = hex::encode(Sha256::digest(full.as_bytes()));
    let hash = &digest[..10];
    // Keep room for "-" and the hash; trim a trailing '-' so the result stays a valid label.
    let keep = MAX_LABEL - hash.len() - 1;
    let head = full[..keep].trim_end_matches(['-', '.']);
    format!("{head}-{hash}")
}

/// The destination PVC ferrosync provisions (PVC names may be up to 253 characters).
pub fn destination_pvc(rd_name: &str) -> String {
    format!("volsync-{rd_name}-dst")
}

/// The source's point-in-time copy (PVC and VolumeSnapshot).
pub fn source_pit(rs_name: &str) -> String {
    format!("volsync-{rs_name}-src")
}

/// The destination Service.
pub fn destination_service(rd_name: &str) -> String {
    shortened("volsync-rsync-tls-dst-", rd_name)
}

/// The mover Job of a side.
pub fn job(side: Side, name: &str) -> String {
    shortened(&format!("volsync-rsync-tls-{}-", side.short()), name)
}

/// The generated key Secret (Secret names may be up to 253 characters).
pub fn key_secret(name: &str) -> String {
    format!("volsync-rsync-tls-{name}")
}

/// The copy, in a mover's namespace, of the controller's image pull Secret `source`:
/// `volsync-pull-<hash>`, as VolSync names it.
pub fn pull_secret(source: &str) -> String {
    let digest = hex::encode(Sha256::digest(source.as_bytes()));
    format!("volsync-pull-{}", &digest[..10])
}

/// The `app.kubernetes.io/name` label value that selects a side's mover pods.
pub fn mover_selector(side: Side, name: &str) -> String {
    shortened(&format!("{}-", side.short()), name)
}

/// Which side of a replication an object belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// ReplicationSource.
    Source,
    /// ReplicationDestination.
    Destination,
}

impl Side {
    /// `src` or `dst`, as in object names.
    pub fn short(self) -> &'static str {
        match self {
            Side::Source => "src",
            Side::Destination => "dst",
        }
    }

    /// `source` or `destination`, as in metrics labels and mover subcommands.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_kept() {
        assert_eq!(
            destination_service("my-dest"),
            "volsync-rsync-tls-dst-my-dest"
        );
        assert_eq!(job(Side::Source, "db"), "volsync-rsync-tls-src-db");
        assert_eq!(mover_selector(Side::Destination, "db"), "dst-db");
    }

    #[test]
    fn long_names_are_shortened_stably_and_distinctly() {
        let a = "a".repeat(70);
        let b = format!("{}b", "a".repeat(69));
        let (sa, sb) = (destination_service(&a), destination_service(&b));
        assert!(sa.len() <= MAX_LABEL && sb.len() <= MAX_LABEL, "{sa} {sb}");
        assert_ne!(sa, sb);
        assert_eq!(sa, destination_service(&a), "stable");
        assert!(sa.starts_with("volsync-rsync-tls-dst-aaa"));
        let valid = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !s.ends_with('-')
                && !s.starts_with('-')
        };
        assert!(valid(&sa) && valid(&job(Side::Destination, &"x-".repeat(40))));
    }
}
