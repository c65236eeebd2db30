//! Parsing of what the rsync client prints: itemised changes (`%i %n`), `--info=stats2`
//! statistics, `--info=progress2` progress, and error lines.
//!
//! rsync escapes unprintable bytes in names as `\#ooo` (octal; a literal `\#` is escaped
//! too), so every name here round-trips to its exact bytes, including newlines and
//! non-UTF-8 bytes. This module only parses: it must never act on what it reads.

/// Counters and lines taken from one rsync run's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// "Total bytes sent".
    pub bytes_sent: u64,
    /// "Total bytes received".
    pub bytes_received: u64,
    /// "Number of regular files transferred".
    pub files_transferred: u64,
    /// "Number of deleted files".
    pub files_deleted: u64,
    /// The `sent … received …` and `total size is …` lines, verbatim.
    pub lines: Vec<String>,
}

impl Stats {
    /// Takes what it knows from one output line; returns whether the line was a stats line.
    pub fn absorb(&mut self, line: &str) -> bool {
        let field = |prefix: &str| line.strip_prefix(prefix).and_then(leading_number);
        if let Some(n) = field("Total bytes sent:") {
            self.bytes_sent = n;
        } else if let Some(n) = field("Total bytes received:") {
            self.bytes_received = n;
        } else if let Some(n) = field("Number of regular files transferred:") {
            self.files_transferred = n;
        } else if let Some(n) = field("Number of deleted files:") {
            self.files_deleted = n;
        } else if is_summary_line(line) {
            self.lines.push(line.to_owned());
        } else {
            return is_stats2_line(line);
        }
        true
    }
}

/// The two lines the controller keeps in `latestMoverStatus.logs`, as in the reference.
pub fn is_summary_line(line: &str) -> bool {
    (line.starts_with("sent ") && line.contains(" received ")) || line.starts_with("total size is ")
}

fn is_stats2_line(line: &str) -> bool {
    const PREFIXES: [&str; 8] = [
        "Number of ",
        "Total file size:",
        "Total transferred file size:",
        "Literal data:",
        "Matched data:",
        "File list ",
        "Total bytes ",
        "Total ",
    ];
    PREFIXES.iter().any(|p| line.starts_with(p))
}

/// Parses a number as rsync prints it at the default human-readable level: `1,234,567`.
fn leading_number(text: &str) -> Option<u64> {
    let digits: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// One `--info=progress2` update: bytes so far, percent, files transferred so far.
pub fn parse_progress2(line: &str) -> Option<(u64, u8, u64)> {
    let mut words = line.split_whitespace();
    let bytes = words.next()?;
    if !bytes.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let bytes = leading_number(bytes)?;
    let percent = words.next()?.strip_suffix('%')?.parse().ok()?;
    let files = line
        .split_once("xfr#")
        .and_then(|(_, rest)| leading_number(rest))
        .unwrap_or(0);
    Some((bytes, percent, files))
}

/// One itemised line printed with `--out-format=%i %n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Itemized {
    /// The 11-character change summary (`cL+++++++++`, `<f.st......`, `*deleting  `).
    pub changes: String,
    /// The path relative to the transfer root, exact bytes.
    pub name: Vec<u8>,
}

impl Itemized {
    /// Parses a line; `None` for lines that are not itemised changes.
    pub fn parse(line: &[u8]) -> Option<Self> {
        let changes = std::str::from_utf8(line.get(..11)?).ok()?;
        let first = changes.as_bytes()[0];
        let kind = changes.as_bytes()[1];
        let itemized = (b"<>ch.".contains(&first) && b"fdLDS".contains(&kind))
            || changes.starts_with("*deleting");
        if !itemized || line.get(11) != Some(&b' ') {
            return None;
        }
        Some(Self {
            changes: changes.to_owned(),
            name: unescape(&line[12..]),
        })
    }

    /// A symlink created or changed on the receiver: what the reference collects (`cL`).
    pub fn is_symlink_change(&self) -> bool {
        self.changes.starts_with("cL")
    }
}

/// Undoes rsync's `\#ooo` escaping of names in its output.
pub fn unescape(escaped: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        if escaped[i] == b'\\' && escaped.get(i + 1) == Some(&b'#') {
            if let Some(byte) = escaped
                .get(i + 2..i + 5)
                .filter(|o| o.iter().all(|d| (b'0'..=b'7').contains(d)))
                .and_then(|o| u8::from_str_radix(std::str::from_utf8(o).ok()?, 8).ok())
            {
                out.push(byte);
                i += 5;
                continue;
            }
        }
        out.push(escaped[i]);
        i += 1;
    }
    out
}

/// Whether rsync reported that the receiving side ran out of space or quota.
pub fn is_out_of_space(line: &str) -> bool {
    line.contains("No space left on device") || line.contains("Disk quota exceeded")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorbs_stats2_output() {
        let out = "Number of files: 21,003 (reg: 21,000, dir: 3)\n\
                   Number of created files: 2 (reg: 1, link: 1)\n\
                   Number of deleted files: 4\n\
                   Number of regular files transferred: 1,234\n\
                   Total bytes sent: 1,048,576\n\
                   Total bytes received: 45\n\
                   \n\
                   sent 1,048,576 bytes  received 45 bytes  386.00 bytes/sec\n\
                   total size is 7  speedup is 0.04\n";
        let mut stats = Stats::default();
        for line in out.lines() {
            stats.absorb(line);
        }
        assert_eq!(stats.bytes_sent, 1_048_576);
        assert_eq!(stats.bytes_received, 45);
        assert_eq!(stats.files_transferred, 1234);
        assert_eq!(stats.files_deleted, 4);
        assert_eq!(stats.lines.len(), 2);
    }

    #[test]
    fn parses_progress2_lines() {
        assert_eq!(
            parse_progress2("    104,857,600  48%  100.00MB/s    0:00:01 (xfr#5, to-chk=10/20)"),
            Some((104_857_600, 48, 5))
        );
        assert_eq!(
            parse_progress2("          0   0%    0.00kB/s    0:00:00"),
            Some((0, 0, 0))
        );
        assert_eq!(parse_progress2("sent 1 bytes"), None);
        assert_eq!(parse_progress2("Number of files: 3"), None);
    }

    #[test]
    fn itemized_names_round_trip_to_exact_bytes() {
        let line = b"cL+++++++++ dir/new\\#012line \\#377 -> x";
        let item = Itemized::parse(line).expect("itemized");
        assert!(item.is_symlink_change());
        assert_eq!(item.name, b"dir/new\nline \xff -> x".to_vec());
        let del = Itemized::parse(b"*deleting   gone/file").expect("deleting");
        assert_eq!(del.name, b"gone/file");
        assert!(Itemized::parse(b"sent 1 bytes  received 2 bytes").is_none());
        assert!(Itemized::parse(b"<f+++++++++ a").is_some_and(|i| !i.is_symlink_change()));
        assert_eq!(unescape(b"a\\#13x\\"), b"a\\#13x\\".to_vec());
    }
}
