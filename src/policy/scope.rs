//! Scoping: which bundle answers a decision for an object.
//!
//! The `[policy]` section's own decision points are the cluster-wide default. Each
//! `[[policy.bindings]]` entry serves some decision points for the namespaces it selects:
//! a list of names, or a label selector. Exactly one bundle answers each decision, by a
//! fixed precedence:
//!
//! 1. a binding whose `namespaces` lists the object's namespace;
//! 2. a binding whose `namespace_selector` matches the namespace's labels;
//! 3. the cluster-wide default.
//!
//! Overlaps that configuration alone shows are refused at load: one namespace listed by
//! two bindings of the same point, or two selectors of the same point that some labels
//! could satisfy together. What is left can only arise from labels set later (a listed
//! namespace that a selector also matches): precedence 1 decides, and the decision says
//! which bindings lost so the controller can warn.
//!
//! The psk point is different: both sides of a pair must get their key from the same
//! bundle, or the keys differ and they never pair, and the two sides usually live in
//! different namespaces (often in different clusters). So a binding's psk plugin is
//! selected by the object's authorised pair name (`psk_pair_prefixes`), never by its
//! namespace: the same pair name selects the same binding on both sides, wherever they
//! live. Prefixes of two bindings may not overlap (one a prefix of the other), so the
//! choice never depends on order. Objects without a pair use the default psk plugin.
//!
//! Pure: the engine looks up namespace labels and hands them in.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{config::PointConfig, types::DecisionPoint};

/// The name under which the cluster-wide default appears in status and metrics.
pub const DEFAULT_BINDING: &str = "default";

/// Why a set of bindings is refused. Messages say what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// A binding's own entry is wrong.
    #[error("binding {binding:?}: {message}")]
    Binding { binding: String, message: String },
    /// Two bindings could both answer the same decision for one object.
    #[error(
        "bindings {first:?} and {second:?} overlap at the {point} decision point: {why}; make them disjoint (exactly one bundle answers each decision)"
    )]
    Overlap {
        point: DecisionPoint,
        first: String,
        second: String,
        why: String,
    },
}

/// One binding: a name, what it selects, and its decision points.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingConfig {
    /// Shown in `status.policy`, Events, metrics and logs.
    pub name: String,
    /// Namespaces served by name (precedence over any selector).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces served by their labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Pair-name prefixes (the `ferrosync.io/psk-pair` annotation, once authorised) whose
    /// keys this binding's psk plugin supplies. Required with `psk`, and only with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub psk_pair_prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_method: Option<PointConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_type: Option<PointConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psk: Option<PointConfig>,
    /// Candidate plugins run beside this binding's, never acted on.
    #[serde(default, skip_serializing_if = "super::shadow::ShadowConfig::is_empty")]
    pub shadow: super::shadow::ShadowConfig,
}

impl BindingConfig {
    /// The binding's configuration of `point`.
    pub fn point(&self, point: DecisionPoint) -> Option<&PointConfig> {
        match point {
            DecisionPoint::CopyMethod => self.copy_method.as_ref(),
            DecisionPoint::ServiceType => self.service_type.as_ref(),
            DecisionPoint::Psk => self.psk.as_ref(),
        }
    }
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`), with the same
/// meaning; an empty selector matches every namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelExpression>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelExpression {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A `matchExpressions` operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector (Kubernetes semantics).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator {
                    Operator::In => value.is_some_and(|v| e.values.contains(v)),
                    Operator::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }

    fn check(&self) -> Result<(), String> {
        for e in &self.match_expressions {
            let needs_values = matches!(e.operator, Operator::In | Operator::NotIn);
            if needs_values == e.values.is_empty() {
                return Err(format!(
                    "match_expressions key {:?}: {:?} {}",
                    e.key,
                    e.operator,
                    if needs_values {
                        "needs values"
                    } else {
                        "takes no values"
                    }
                ));
            }
        }
        Ok(())
    }

    /// What the selector demands of each key it mentions.
    fn constraints(&self) -> BTreeMap<&str, KeyConstraint> {
        let mut out: BTreeMap<&str, KeyConstraint> = BTreeMap::new();
        for (k, v) in &self.match_labels {
            out.entry(k).or_default().allow(std::iter::once(v.clone()));
        }
        for e in &self.match_expressions {
            let c = out.entry(&e.key).or_default();
            match e.operator {
                Operator::In => c.allow(e.values.iter().cloned()),
                Operator::NotIn => c.not_in.extend(e.values.iter().cloned()),
                Operator::Exists => c.present = true,
                Operator::DoesNotExist => c.absent = true,
            }
        }
        out
    }

    /// Whether no set of labels can satisfy both selectors; `Some(why)` when provably
    /// disjoint, `None` when some labels might satisfy both. Sound, not complete: a
    /// `None` for selectors that happen to be disjoint only makes the check stricter.
    pub fn disjoint_from(&self, other: &LabelSelector) -> Option<String> {
        let (a, b) = (self.constraints(), other.constraints());
        for (key, ca) in &a {
            let Some(cb) = b.get(key) else { continue };
            if let (Some(va), Some(vb)) = (&ca.only, &cb.only)
                && va.is_disjoint(vb)
            {
                return Some(format!("label {key} cannot be both {va:?} and {vb:?}"));
            }
            if (ca.requires_presence() && cb.absent) || (cb.requires_presence() && ca.absent) {
                return Some(format!("label {key} cannot be both present and absent"));
            }
            for (x, y) in [(ca, cb), (cb, ca)] {
                if let Some(only) = &x.only
                    && only.is_subset(&y.not_in)
                {
                    return Some(format!("label {key} in {only:?} is excluded by NotIn"));
                }
            }
        }
        None
    }
}

#[derive(Default)]
struct KeyConstraint {
    /// The value must be one of these (intersection of matchLabels and In).
    only: Option<BTreeSet<String>>,
    not_in: BTreeSet<String>,
    present: bool,
    absent: bool,
}

impl KeyConstraint {
    fn allow(&mut self, values: impl Iterator<Item = String>) {
        let values: BTreeSet<String> = values.collect();
        self.only = Some(match self.only.take() {
            Some(old) => old.intersection(&values).cloned().collect(),
            None => values,
        });
    }

    fn requires_presence(&self) -> bool {
        self.present || self.only.is_some()
    }
}

/// Refuses a set of bindings that could let two bundles answer one decision, or that
/// could split a pair's psk between bundles.
pub fn check(bindings: &[BindingConfig]) -> Result<(), ScopeError> {
    let mut names = BTreeSet::new();
    for b in bindings {
        let bad = |message: String| ScopeError::Binding {
            binding: b.name.clone(),
            message,
        };
        if b.name.is_empty() || b.name == DEFAULT_BINDING {
            return Err(bad(format!(
                "a binding needs a name other than {DEFAULT_BINDING:?} (the cluster-wide default)"
            )));
        }
        if !names.insert(b.name.as_str()) {
            return Err(bad("two bindings have this name".into()));
        }
        if !b.namespaces.is_empty() && b.namespace_selector.is_some() {
            return Err(bad(
                "set `namespaces` or `namespace_selector`, not both (two bindings make both)"
                    .into(),
            ));
        }
        if let Some(sel) = &b.namespace_selector {
            sel.check().map_err(&bad)?;
        }
        let by_namespace = b.copy_method.is_some() || b.service_type.is_some();
        if by_namespace && b.namespaces.is_empty() && b.namespace_selector.is_none() {
            return Err(bad(
                "copy_method and service_type need `namespaces` or `namespace_selector`".into(),
            ));
        }
        match (&b.psk, b.psk_pair_prefixes.is_empty()) {
            (Some(_), true) => {
                return Err(bad(
                    "psk needs `psk_pair_prefixes`: a psk plugin is chosen by the pair name, so \
                     both sides of a pair, in any namespace, get their key from the same bundle"
                        .into(),
                ));
            }
            (None, false) => {
                return Err(bad("`psk_pair_prefixes` without a psk plugin".into()));
            }
            _ => {}
        }
        if b.psk_pair_prefixes.iter().any(String::is_empty) {
            return Err(bad("an empty pair prefix would take every pair".into()));
        }
    }
    for (i, a) in bindings.iter().enumerate() {
        for b in &bindings[i + 1..] {
            for point in [DecisionPoint::CopyMethod, DecisionPoint::ServiceType] {
                if a.point(point).is_none() || b.point(point).is_none() {
                    continue;
                }
                let overlap = |why: String| ScopeError::Overlap {
                    point,
                    first: a.name.clone(),
                    second: b.name.clone(),
                    why,
                };
                if let Some(ns) = a.namespaces.iter().find(|n| b.namespaces.contains(n)) {
                    return Err(overlap(format!("both list namespace {ns}")));
                }
                if let (Some(sa), Some(sb)) = (&a.namespace_selector, &b.namespace_selector)
                    && sa.disjoint_from(sb).is_none()
                {
                    return Err(overlap(
                        "a namespace could carry labels both selectors match".into(),
                    ));
                }
            }
            for pa in &a.psk_pair_prefixes {
                for pb in &b.psk_pair_prefixes {
                    if pa.starts_with(pb.as_str()) || pb.starts_with(pa.as_str()) {
                        return Err(ScopeError::Overlap {
                            point: DecisionPoint::Psk,
                            first: a.name.clone(),
                            second: b.name.clone(),
                            why: format!("pair prefixes {pa:?} and {pb:?} overlap"),
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// Which binding answers, for an object in a namespace (or with a pair, for psk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Index into the bindings; `None` for the cluster-wide default.
    pub binding: Option<usize>,
    /// Other bindings that also selected the namespace and lost to precedence (labels
    /// changed after load); empty normally.
    pub overruled: Vec<String>,
}

impl Selection {
    fn default_binding() -> Self {
        Selection {
            binding: None,
            overruled: Vec::new(),
        }
    }
}

/// Whether any binding of `point` selects by labels (so labels must be looked up).
pub fn needs_labels(bindings: &[BindingConfig], point: DecisionPoint) -> bool {
    point != DecisionPoint::Psk
        && bindings
            .iter()
            .any(|b| b.point(point).is_some() && b.namespace_selector.is_some())
}

/// The binding answering `point` for an object in `namespace` whose labels are
/// `labels` (`None` when no binding needs them). Not for psk: see [`select_psk`].
pub fn select(
    bindings: &[BindingConfig],
    point: DecisionPoint,
    namespace: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Selection {
    let serving = || {
        bindings
            .iter()
            .enumerate()
            .filter(move |(_, b)| b.point(point).is_some())
    };
    let listed = serving().find(|(_, b)| b.namespaces.iter().any(|n| n == namespace));
    let mut by_label = serving().filter(
        |(_, b)| matches!((&b.namespace_selector, labels), (Some(s), Some(l)) if s.matches(l)),
    );
    match listed {
        Some((i, _)) => Selection {
            binding: Some(i),
            overruled: by_label.map(|(_, b)| b.name.clone()).collect(),
        },
        None => match by_label.next() {
            Some((i, _)) => Selection {
                binding: Some(i),
                // Not reachable with checked bindings (their selectors are disjoint);
                // kept so that order still decides, visibly, if that ever changes.
                overruled: by_label.map(|(_, b)| b.name.clone()).collect(),
            },
            None => Selection::default_binding(),
        },
    }
}

/// The binding supplying the key of an object whose authorised pair is `pair`.
pub fn select_psk(bindings: &[BindingConfig], pair: Option<&str>) -> Selection {
    let Some(pair) = pair else {
        return Selection::default_binding();
    };
    let found = bindings.iter().position(|b| {
        b.psk.is_some()
            && b.psk_pair_prefixes
                .iter()
                .any(|p| pair.starts_with(p.as_str()))
    });
    Selection {
        binding: found,
        overruled: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selector(match_labels: &[(&str, &str)], exprs: Vec<LabelExpression>) -> LabelSelector {
        LabelSelector {
            match_labels: labels(match_labels),
            match_expressions: exprs,
        }
    }

    fn expr(key: &str, operator: Operator, values: &[&str]) -> LabelExpression {
        LabelExpression {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn binding(name: &str) -> BindingConfig {
        BindingConfig {
            name: name.into(),
            copy_method: Some(PointConfig::default()),
            ..BindingConfig::default()
        }
    }

    #[test]
    fn selector_semantics() {
        let s = selector(
            &[("team", "a")],
            vec![
                expr("tier", Operator::In, &["gold", "silver"]),
                expr("legacy", Operator::DoesNotExist, &[]),
                expr("zone", Operator::NotIn, &["x"]),
            ],
        );
        assert!(s.matches(&labels(&[("team", "a"), ("tier", "gold")])));
        assert!(!s.matches(&labels(&[("team", "b"), ("tier", "gold")])));
        assert!(!s.matches(&labels(&[("team", "a"), ("tier", "bronze")])));
        assert!(!s.matches(&labels(&[("team", "a"), ("tier", "gold"), ("legacy", "")])));
        assert!(!s.matches(&labels(&[("team", "a"), ("tier", "gold"), ("zone", "x")])));
        assert!(LabelSelector::default().matches(&labels(&[])));
    }

    #[test]
    fn disjointness_is_sound() {
        let a = selector(&[("team", "a")], vec![]);
        let b = selector(&[("team", "b")], vec![]);
        let any_team = selector(&[], vec![expr("team", Operator::Exists, &[])]);
        let no_team = selector(&[], vec![expr("team", Operator::DoesNotExist, &[])]);
        let not_a = selector(&[], vec![expr("team", Operator::NotIn, &["a"])]);
        let other_key = selector(&[("env", "prod")], vec![]);
        assert!(a.disjoint_from(&b).is_some());
        assert!(a.disjoint_from(&no_team).is_some());
        assert!(a.disjoint_from(&not_a).is_some());
        assert!(not_a.disjoint_from(&a).is_some());
        assert!(a.disjoint_from(&any_team).is_none());
        assert!(a.disjoint_from(&other_key).is_none());
        assert!(a.disjoint_from(&LabelSelector::default()).is_none());
        // Sound: whenever it says disjoint, no labels in this sample match both.
        let samples = [
            labels(&[]),
            labels(&[("team", "a")]),
            labels(&[("team", "b")]),
            labels(&[("team", "a"), ("env", "prod")]),
            labels(&[("env", "prod")]),
        ];
        let all = [&a, &b, &any_team, &no_team, &not_a, &other_key];
        for x in all {
            for y in all {
                if x.disjoint_from(y).is_some() {
                    assert!(samples.iter().all(|l| !(x.matches(l) && y.matches(l))));
                }
            }
        }
    }

    #[test]
    fn visible_overlaps_are_refused() {
        let mut a = binding("a");
        a.namespaces = vec!["shared".into(), "x".into()];
        let mut b = binding("b");
        b.namespaces = vec!["shared".into()];
        let err = check(&[a.clone(), b.clone()]).unwrap_err();
        assert!(err.to_string().contains("namespace shared"), "{err}");
        // Different points: no overlap.
        b.copy_method = None;
        b.service_type = Some(PointConfig::default());
        check(&[a, b]).unwrap();

        let mut s1 = binding("s1");
        s1.namespace_selector = Some(selector(&[("team", "a")], vec![]));
        let mut s2 = binding("s2");
        s2.namespace_selector = Some(selector(&[("env", "prod")], vec![]));
        assert!(matches!(
            check(&[s1.clone(), s2.clone()]),
            Err(ScopeError::Overlap { .. })
        ));
        s2.namespace_selector = Some(selector(&[("team", "b")], vec![]));
        check(&[s1, s2]).unwrap();
    }

    #[test]
    fn psk_bindings_go_by_disjoint_pair_prefixes() {
        let mut p = BindingConfig {
            name: "vault-a".into(),
            psk: Some(PointConfig::default()),
            ..BindingConfig::default()
        };
        let err = check(std::slice::from_ref(&p)).unwrap_err();
        assert!(err.to_string().contains("psk_pair_prefixes"), "{err}");
        p.psk_pair_prefixes = vec!["team-a-".into()];
        let mut q = p.clone();
        q.name = "vault-b".into();
        q.psk_pair_prefixes = vec!["team-a-eu-".into()];
        assert!(matches!(
            check(&[p.clone(), q.clone()]),
            Err(ScopeError::Overlap {
                point: DecisionPoint::Psk,
                ..
            })
        ));
        q.psk_pair_prefixes = vec!["team-b-".into()];
        let both = [p, q];
        check(&both).unwrap();
        // Both sides of a pair select the same binding, whatever their namespaces.
        assert_eq!(select_psk(&both, Some("team-b-db")).binding, Some(1));
        assert_eq!(select_psk(&both, Some("team-a-db")).binding, Some(0));
        assert_eq!(select_psk(&both, Some("other")).binding, None);
        assert_eq!(select_psk(&both, None).binding, None);
    }

    #[test]
    fn precedence_list_then_selector_then_default() {
        let mut listed = binding("listed");
        listed.namespaces = vec!["app".into()];
        let mut labelled = binding("labelled");
        labelled.namespace_selector = Some(selector(&[("team", "a")], vec![]));
        let both = [labelled, listed];
        check(&both).unwrap();
        let team_a = labels(&[("team", "a")]);
        let p = DecisionPoint::CopyMethod;
        assert_eq!(
            select(&both, p, "app", Some(&team_a)),
            Selection {
                binding: Some(1),
                overruled: vec!["labelled".into()]
            }
        );
        assert_eq!(select(&both, p, "app", Some(&labels(&[]))).binding, Some(1));
        assert_eq!(select(&both, p, "web", Some(&team_a)).binding, Some(0));
        assert_eq!(select(&both, p, "web", Some(&labels(&[]))).binding, None);
        // A point no binding serves is the default's everywhere.
        assert_eq!(
            select(&both, DecisionPoint::ServiceType, "app", Some(&team_a)).binding,
            None
        );
        assert!(needs_labels(&both, p));
        assert!(!needs_labels(&both, DecisionPoint::ServiceType));
    }

    #[test]
    fn malformed_bindings_are_refused() {
        let mut unnamed = binding("");
        unnamed.namespaces = vec!["x".into()];
        assert!(check(&[unnamed]).is_err());
        let nowhere = binding("nowhere");
        assert!(check(&[nowhere]).is_err());
        let mut both = binding("both");
        both.namespaces = vec!["x".into()];
        both.namespace_selector = Some(LabelSelector::default());
        assert!(check(&[both]).is_err());
        let mut bad_expr = binding("bad");
        bad_expr.namespace_selector = Some(selector(&[], vec![expr("team", Operator::In, &[])]));
        assert!(check(&[bad_expr]).is_err());
    }
}
