//! Whether an object this controller applies must be applied again: only when what it
//! would apply differs from what it applied last, or the stored object no longer holds
//! it (someone changed a field ferrosync owns). An unchanged object costs no request,
//! where a server-side apply on every pass would cost one each time.
//!
//! Pure; the caller keeps the digest of its last apply and reads the stored object from
//! a cache.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A digest of what is applied: equal digests, equal apply requests.
pub fn digest<T: Serialize>(desired: &T) -> String {
    let bytes = serde_json::to_vec(desired).unwrap_or_default();
    format!("{:x}", Sha256::digest(bytes))
}

/// Whether applying `desired` again would change nothing: it is what was applied last
/// (`last`, a [`digest`]), and `stored` still holds every field of it. Fields only in
/// `stored` (set by the apiserver or other managers) do not matter: an apply leaves them.
pub fn up_to_date<T: Serialize, S: Serialize>(desired: &T, last: Option<&str>, stored: &S) -> bool {
    let (Ok(want), Ok(have)) = (serde_json::to_value(desired), serde_json::to_value(stored)) else {
        return false;
    };
    last == Some(digest(desired).as_str()) && holds(&have, &want)
}

/// Whether `have` holds every field of `want`, recursively; lists element by element.
fn holds(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(have), Value::Object(want)) => want
            .iter()
            .all(|(k, w)| have.get(k).is_some_and(|h| holds(h, w))),
        (Value::Array(have), Value::Array(want)) => {
            have.len() == want.len() && have.iter().zip(want).all(|(h, w)| holds(h, w))
        }
        (have, want) => have == want,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn desired() -> Value {
        json!({
            "metadata": {"name": "s", "annotations": {"a": "1"}},
            "spec": {"type": "ClusterIP", "ports": [{"port": 8000, "targetPort": 8000}]},
        })
    }

    fn stored() -> Value {
        json!({
            "metadata": {"name": "s", "uid": "u", "annotations": {"a": "1", "other": "x"}},
            "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.1",
                     "ports": [{"port": 8000, "targetPort": 8000, "protocol": "TCP"}]},
            "status": {},
        })
    }

    #[test]
    fn an_unchanged_object_applied_before_is_not_applied_again() {
        let last = digest(&desired());
        assert!(up_to_date(&desired(), Some(&last), &stored()));
    }

    #[test]
    fn a_new_desired_object_or_none_applied_yet_is_applied() {
        assert!(!up_to_date(&desired(), None, &stored()), "after a restart");
        let mut changed = desired();
        changed["metadata"]["annotations"] = json!({});
        // Dropping an annotation changes the apply (it removes it) though the stored object
        // still holds everything asked.
        assert!(!up_to_date(&changed, Some(&digest(&desired())), &stored()));
        assert!(up_to_date(&changed, Some(&digest(&changed)), &stored()));
    }

    #[test]
    fn a_field_changed_by_someone_else_is_applied_again() {
        let last = digest(&desired());
        let mut edited = stored();
        edited["spec"]["type"] = json!("NodePort");
        assert!(!up_to_date(&desired(), Some(&last), &edited));
        let mut fewer = stored();
        fewer["spec"]["ports"] = json!([]);
        assert!(!up_to_date(&desired(), Some(&last), &fewer));
        let mut unannotated = stored();
        unannotated["metadata"]["annotations"] = json!({"other": "x"});
        assert!(!up_to_date(&desired(), Some(&last), &unannotated));
    }
}
