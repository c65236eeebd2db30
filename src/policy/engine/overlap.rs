//! The late overlap of bindings, asked apart from any decision: whether, with the
//! namespace's labels as they are now, more than one binding selects it for a decision
//! point. Configuration alone refuses every overlap it can see (`scope::check`); what is
//! left comes from labels set later, where the fixed precedence decides. The controller
//! asks on every pass and shows the answer as a condition, so an overlap is visible while
//! it lasts, not only when a decision happens to be made.

use super::PolicyEngine;
use crate::policy::{
    namespaces::NamespaceError,
    scope::{self, DEFAULT_BINDING},
    types::DecisionPoint,
};

/// More than one binding selects a namespace for a decision point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingOverlap {
    pub point: DecisionPoint,
    /// The binding that answers, by precedence.
    pub binding: String,
    /// The bindings that also select the namespace, and lose.
    pub overruled: Vec<String>,
}

impl BindingOverlap {
    /// What happened and what to do, for a condition, an Event and logs.
    pub fn message(&self) -> String {
        format!(
            "the namespace is selected by binding {} by name and by binding(s) {} by label; \
             by the fixed precedence (namespaces by name, then by label, then the default) \
             {} answers the {} decision. Remove the namespace from one of them",
            self.binding,
            self.overruled.join(", "),
            self.binding,
            self.point
        )
    }
}

impl PolicyEngine {
    /// Whether any binding selects namespaces by label (only then can overlaps appear
    /// after load, and only then do namespace label changes matter to the controller).
    pub fn selects_by_labels(&self) -> bool {
        let set = self.current();
        [DecisionPoint::CopyMethod, DecisionPoint::ServiceType]
            .into_iter()
            .any(|p| scope::needs_labels(&set.binding_configs, p))
    }

    /// The overlap at `point` for objects in `namespace`, with its labels as they are
    /// now; `None` when exactly one binding (or the default) selects it.
    pub async fn binding_overlap(
        &self,
        point: DecisionPoint,
        namespace: &str,
    ) -> Result<Option<BindingOverlap>, NamespaceError> {
        let set = self.current();
        if !scope::needs_labels(&set.binding_configs, point) {
            return Ok(None);
        }
        let labels = self.inner.options.namespaces.labels(namespace).await?;
        let selection = scope::select(&set.binding_configs, point, namespace, Some(&labels));
        if selection.overruled.is_empty() {
            return Ok(None);
        }
        let binding = selection
            .binding
            .and_then(|i| set.binding_configs.get(i))
            .map_or(DEFAULT_BINDING, |b| b.name.as_str())
            .to_owned();
        Ok(Some(BindingOverlap {
            point,
            binding,
            overruled: selection.overruled,
        }))
    }
}
