//! `policy test` reports for CI: every bundle given, loaded or not, as JSON or JUnit XML.
//!
//! Pure: the results are gathered by the command. JUnit XML is small and fixed here (one
//! `testsuite` per bundle, one `testcase` per case, a bundle that cannot load is one
//! `error`), so it is written directly with its five XML escapes rather than through an
//! XML library.

use std::{fmt::Write as _, path::PathBuf};

use serde::Serialize;

use super::golden::BundleReport;

/// One bundle's outcome: its report, or why it could not be run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", untagged)]
pub enum BundleOutcome {
    Ran(BundleReport),
    Unusable { bundle: PathBuf, error: String },
}

impl BundleOutcome {
    /// Whether every case passed.
    pub fn passed(&self) -> bool {
        matches!(self, BundleOutcome::Ran(r) if r.all_passed())
    }
}

/// Escapes text for XML attributes and content.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// The outcomes as a JUnit XML document.
pub fn junit(outcomes: &[BundleOutcome]) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for outcome in outcomes {
        match outcome {
            BundleOutcome::Ran(r) => {
                let failures = r.cases.len() - r.passed();
                let _ = writeln!(
                    xml,
                    "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\">",
                    escape(&r.bundle.display().to_string()),
                    r.cases.len()
                );
                for c in &r.cases {
                    let _ = write!(
                        xml,
                        "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.6}\"",
                        escape(&format!("{}.{}", r.point, r.plugin)),
                        escape(&c.name),
                        c.latency.as_secs_f64()
                    );
                    if c.passed {
                        xml.push_str("/>\n");
                    } else {
                        let _ = writeln!(
                            xml,
                            ">\n      <failure message=\"{}\"/>\n    </testcase>",
                            escape(&c.detail)
                        );
                    }
                }
                xml.push_str("  </testsuite>\n");
            }
            BundleOutcome::Unusable { bundle, error } => {
                let name = escape(&bundle.display().to_string());
                let _ = writeln!(
                    xml,
                    "  <testsuite name=\"{name}\" tests=\"1\" failures=\"0\" errors=\"1\">\n    \
                     <testcase classname=\"bundle\" name=\"{name}\">\n      \
                     <error message=\"{}\"/>\n    </testcase>\n  </testsuite>",
                    escape(error)
                );
            }
        }
    }
    xml.push_str("</testsuites>\n");
    xml
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::{golden::CaseReport, types::DecisionPoint};

    fn outcomes() -> Vec<BundleOutcome> {
        vec![
            BundleOutcome::Ran(BundleReport {
                bundle: "b/one".into(),
                point: DecisionPoint::CopyMethod,
                plugin: "p".into(),
                sha256: "0".repeat(64),
                cases: vec![
                    CaseReport {
                        name: "good".into(),
                        passed: true,
                        detail: String::new(),
                        fuel_used: 1,
                        latency: Duration::from_millis(1),
                    },
                    CaseReport {
                        name: "bad <one>".into(),
                        passed: false,
                        detail: "want \"Clone\" & got Snapshot".into(),
                        fuel_used: 1,
                        latency: Duration::ZERO,
                    },
                ],
            }),
            BundleOutcome::Unusable {
                bundle: "b/two".into(),
                error: "no policy.toml".into(),
            },
        ]
    }

    #[test]
    fn junit_reports_every_bundle_escaped() {
        let xml = junit(&outcomes());
        assert!(xml.contains("<testsuite name=\"b/one\" tests=\"2\" failures=\"1\""));
        assert!(xml.contains("name=\"bad &lt;one&gt;\""));
        assert!(xml.contains("message=\"want &quot;Clone&quot; &amp; got Snapshot\""));
        assert!(xml.contains("<testsuite name=\"b/two\" tests=\"1\" failures=\"0\" errors=\"1\">"));
        assert!(xml.contains("<error message=\"no policy.toml\"/>"));
        assert_eq!(xml.matches("<testsuite ").count(), 2);
        assert!(!outcomes()[0].passed() && !outcomes()[1].passed());
    }

    #[test]
    fn json_carries_reports_and_errors() {
        let json = serde_json::to_value(outcomes()).unwrap();
        assert_eq!(json[0]["cases"][1]["passed"], false);
        assert_eq!(json[1]["error"], "no policy.toml");
    }
}
