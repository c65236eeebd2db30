//! Mover image pull secrets, as VolSync handles them: the controller is configured with
//! Secrets of its own namespace (`mover.image_pull_secrets`); before a mover starts, each
//! is copied into the mover's namespace as `volsync-pull-<hash>` (applied every pass, so a
//! rotated credential follows) and the copies are named in the mover Pod's
//! imagePullSecrets. The copies are shared by every mover of the namespace, so they have
//! no owner.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use super::{apply::apply, context::Context, error::Error};
use crate::resources::{
    meta::{COMPONENT, MANAGED_BY},
    names::pull_secret as copy_name,
};

/// The copy of `original` for `namespace`: its type and data, nothing else of it.
pub fn copy_of(original: &Secret, source: &str, namespace: &str) -> Secret {
    let mut copy = Secret {
        type_: original.type_.clone(),
        data: original.data.clone(),
        ..Secret::default()
    };
    copy.metadata.name = Some(copy_name(source));
    copy.metadata.namespace = Some(namespace.into());
    copy.metadata.labels = Some(BTreeMap::from([
        (MANAGED_BY.to_string(), "ferrosync".to_string()),
        (COMPONENT.to_string(), "pull-secret".to_string()),
    ]));
    copy
}

/// Copies the configured pull secrets into `namespace`; returns the copies' names.
pub async fn ensure(ctx: &Context, namespace: &str) -> Result<Vec<String>, Error> {
    let configured = &ctx.config.mover.image_pull_secrets;
    if configured.is_empty() {
        return Ok(Vec::new());
    }
    let home = super::own_namespace();
    let originals: Api<Secret> = Api::namespaced(ctx.client.clone(), &home);
    let copies: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut names = Vec::with_capacity(configured.len());
    for source in configured {
        let Some(original) = originals.get_opt(source).await? else {
            return Err(Error::Invalid(format!(
                "mover image pull secret {source:?} (mover.image_pull_secrets) does not exist in the controller's namespace {home}"
            )));
        };
        let copy = copy_of(&original, source, namespace);
        apply(&copies, &copy).await?;
        names.push(copy_name(source));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    #[test]
    fn copies_keep_type_and_data_under_a_stable_hashed_name() {
        let mut original = Secret {
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(BTreeMap::from([(
                ".dockerconfigjson".to_string(),
                ByteString(b"{}".to_vec()),
            )])),
            ..Secret::default()
        };
        original.metadata.name = Some("regcred".into());
        original.metadata.resource_version = Some("42".into());
        original.metadata.annotations = Some(BTreeMap::from([("a".into(), "b".into())]));
        let copy = copy_of(&original, "regcred", "tenant");
        assert_eq!(copy.metadata.name, Some(copy_name("regcred")));
        assert!(copy_name("regcred").starts_with("volsync-pull-"));
        assert_eq!(copy_name("regcred").len(), "volsync-pull-".len() + 10);
        assert_ne!(copy_name("regcred"), copy_name("other"));
        assert_eq!(copy.metadata.namespace.as_deref(), Some("tenant"));
        assert_eq!((copy.type_, copy.data), (original.type_, original.data));
        assert_eq!(copy.metadata.resource_version, None);
        assert_eq!(copy.metadata.annotations, None);
    }
}
