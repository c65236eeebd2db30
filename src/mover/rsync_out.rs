//! Parsing of what the rsync client prints: itemised changes (`%i %n`), `--info=stats2`
//! statistics, `--info=progress2` progress, and error lines.
//!
//! Names in rsync's output are escaped (`\#ooo`) and not fully reversible, so nothing here
//! extracts file names; the source lists symlinks by walking the tree instead. This module
//! only parses: it must never act on what it reads.

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

/// Whether a line is an itemised change printed with `--out-format=%i %n`
/// (`cL+++++++++ name`, `<f.st...... name`, `*deleting   name`). There may be millions;
/// they are counted by rsync's statistics and not echoed.
pub fn is_itemized(line: &[u8]) -> bool {
    let Some(changes) = line.get(..11) else {
        return false;
    };
    let plain = b"<>ch.".contains(&changes[0]) && b"fdLDS".contains(&changes[1]);
    (plain || changes.starts_with(b"*deleting")) && line.get(11) == Some(&b' ')
}

/// Whether rsync reported that the receiving side ran out of space or quota.
pub fn is_out_of_space(line: &str) -> bool {
    line.contains("No space left on device") || line.contains("Disk quota exceeded")
}

/// Whether an rsync stderr line reports a problem with one file or directory: rsync's
/// error lines that quote a name (`rsync: [sender] send_files failed to open "x":
/// Permission denied (13)`, `opendir "d" failed`, `... (in data)`) and `file has vanished:`.
/// Connection errors quote no name, and `rsync error:` is the final exit-code line.
pub fn is_file_error(line: &str) -> bool {
    let rsync_error = line.starts_with("rsync: ")
        || line.starts_with("rsync warning: ") && !line.contains("(code ");
    (rsync_error || line.starts_with("file has vanished: ")) && line.contains('"')
}

/// Removes the source directory from quoted names, so a line names paths relative to the
/// volume (`"/data/dir/x"` becomes `"dir/x"`), as the controller's users know them.
pub fn relative_names(line: &str, prefixes: &[String]) -> String {
    let mut out = line.to_owned();
    for prefix in prefixes.iter().filter(|p| !p.is_empty()) {
        out = out.replace(&format!("\"{prefix}"), "\"");
    }
    out
}

/// Cuts a line to at most `max` bytes on a character boundary, marking the cut with `…`.
pub fn bounded(line: &str, max: usize) -> String {
    if line.len() <= max {
        return line.to_owned();
    }
    let mut cut = max.saturating_sub('…'.len_utf8());
    while cut > 0 && !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &line[..cut])
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
    fn recognises_itemized_lines() {
        assert!(is_itemized(b"cL+++++++++ dir/new\\#012line -> x"));
        assert!(is_itemized(b"*deleting   gone/file"));
        assert!(is_itemized(b"<f.st...... big.bin"));
        assert!(!is_itemized(b"sent 1 bytes  received 2 bytes"));
        assert!(!is_itemized(b"total size is 7  speedup is 0.04"));
    }

    #[test]
    fn recognises_per_file_errors_and_makes_their_names_relative() {
        let open = "rsync: [sender] send_files failed to open \"/data/dir/secret\": \
                    Permission denied (13)";
        assert!(is_file_error(open));
        assert!(is_file_error(
            "rsync: [sender] opendir \"/data/locked\" failed: Permission denied (13)"
        ));
        assert!(is_file_error("file has vanished: \"/data/tmp/x\""));
        assert!(!is_file_error(
            "rsync error: some files/attrs were not transferred (see previous errors) \
             (code 23) at main.c(1338) [sender=3.2.7]"
        ));
        assert!(!is_file_error(
            "rsync: connection unexpectedly closed (0 bytes received so far) [sender]"
        ));
        assert_eq!(
            relative_names(open, &["/data/".to_owned()]),
            "rsync: [sender] send_files failed to open \"dir/secret\": Permission denied (13)"
        );
        assert_eq!(bounded("abcdef", 6), "abcdef");
        assert_eq!(bounded("abcdéf", 6), "abc…");
        assert!(bounded(&"é".repeat(100), 15).len() <= 15);
    }
}
