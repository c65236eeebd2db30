//! Runs the real `kubectl-ferrosync` binary against one pair's two sides, as a user would:
//! a kubeconfig with both contexts, `NO_COLOR`, and what it printed echoed into the test's
//! output for whoever reads a failure.
//!
//! The binary's path is passed in (`env!("CARGO_BIN_EXE_kubectl-ferrosync")`), because
//! cargo sets that only for test binaries, and this module is also built into the
//! `cluster` example.

use std::{
    path::Path,
    process::{Command, Output},
};

/// One pair's sides: a kubeconfig and (context, namespace) for the source and destination.
pub struct PairSides<'a> {
    pub bin: &'a str,
    pub kubeconfig: &'a Path,
    pub source: (&'a str, &'a str),
    pub dest: (&'a str, &'a str),
}

impl PairSides<'_> {
    /// Runs `kubectl ferrosync ARGS` with both sides' flags; any exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(self.bin)
            .args(args)
            .args(["--source-context", self.source.0])
            .args(["--source-namespace", self.source.1])
            .args(["--dest-context", self.dest.0])
            .args(["--dest-namespace", self.dest.1])
            .env("KUBECONFIG", self.kubeconfig)
            .env("NO_COLOR", "1")
            .output()
            .expect("running kubectl-ferrosync");
        eprintln!(
            "$ kubectl ferrosync {} -> {}\n{}",
            args.join(" "),
            out.status,
            text(&out)
        );
        out
    }

    /// Runs `args`, which must succeed; returns stdout and stderr together.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "kubectl ferrosync {args:?} failed");
        text(&out)
    }
}

/// What a command printed, stdout then stderr.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
