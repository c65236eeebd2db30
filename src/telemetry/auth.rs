//! Authentication and authorisation of `/metrics` requests through the apiserver, as
//! controller-runtime's `WithAuthenticationAndAuthorization` filter does: the bearer token
//! is checked with a TokenReview, then the caller's right to `get` the non-resource URL
//! (`/metrics`) with a SubjectAccessReview. The `ferrosync-metrics-reader` ClusterRole
//! grants exactly that right.
//!
//! Nothing is cached: Prometheus scrapes every 30 s or so, two small API calls per scrape
//! cost less than a cache that keeps honouring a revoked token.

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};

/// The outcome of checking one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Allowed,
    /// 401: no bearer token, or the apiserver does not recognise it.
    Unauthenticated,
    /// 403: the caller may not `verb` the path; the reason names the user.
    Forbidden(String),
}

/// The apiserver could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TokenReview failed.
    #[error("creating a TokenReview: {0}")]
    TokenReview(#[source] kube::Error),
    /// The SubjectAccessReview failed.
    #[error("creating a SubjectAccessReview: {0}")]
    SubjectAccessReview(#[source] kube::Error),
}

/// The token of an `Authorization: Bearer …` header value, if it is one.
pub fn bearer_token(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The review asking whether the authenticated `review`'s user may `verb` `path`; `None`
/// when the TokenReview did not authenticate.
pub fn access_review(review: &TokenReview, verb: &str, path: &str) -> Option<SubjectAccessReview> {
    let status = review.status.as_ref()?;
    if status.authenticated != Some(true) {
        return None;
    }
    let user = status.user.as_ref()?;
    Some(SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
            extra: user.extra.clone().map(|extra| extra.into_iter().collect()),
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some(path.to_string()),
                verb: Some(verb.to_string()),
            }),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// Asks the apiserver whether the bearer of `token` may `verb` the non-resource `path`.
pub async fn check(client: &Client, token: &str, verb: &str, path: &str) -> Result<Verdict, Error> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviewed = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(Error::TokenReview)?;
    let Some(access) = access_review(&reviewed, verb, path) else {
        return Ok(Verdict::Unauthenticated);
    };
    let user = access.spec.user.clone().unwrap_or_default();
    let answered = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &access)
        .await
        .map_err(Error::SubjectAccessReview)?;
    let status = answered.status.unwrap_or_default();
    if status.allowed && status.denied != Some(true) {
        Ok(Verdict::Allowed)
    } else {
        let why = status.reason.filter(|r| !r.is_empty()).unwrap_or_default();
        Ok(Verdict::Forbidden(format!(
            "user {user:?} may not {verb} {path}{}",
            if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            }
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    use super::*;

    #[test]
    fn only_bearer_tokens_are_taken() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(Some("Bearer")), None);
        assert_eq!(bearer_token(None), None);
    }

    #[test]
    fn the_access_review_carries_the_reviewed_identity_and_the_path() {
        let mut extra = BTreeMap::new();
        extra.insert("k".into(), vec!["v".into()]);
        let reviewed = TokenReview {
            status: Some(TokenReviewStatus {
                authenticated: Some(true),
                user: Some(UserInfo {
                    username: Some("system:serviceaccount:mon:prometheus".into()),
                    uid: Some("u1".into()),
                    groups: Some(vec!["system:serviceaccounts".into()]),
                    extra: Some(extra.clone()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let access = access_review(&reviewed, "get", "/metrics").expect("authenticated");
        let spec = access.spec;
        assert_eq!(
            spec.user.as_deref(),
            Some("system:serviceaccount:mon:prometheus")
        );
        assert_eq!(spec.uid.as_deref(), Some("u1"));
        assert_eq!(
            spec.groups,
            Some(vec!["system:serviceaccounts".to_string()])
        );
        assert_eq!(spec.extra, Some(extra));
        let attrs = spec.non_resource_attributes.expect("non-resource");
        assert_eq!(
            (attrs.path.as_deref(), attrs.verb.as_deref()),
            (Some("/metrics"), Some("get"))
        );
        assert!(spec.resource_attributes.is_none());
    }

    #[test]
    fn an_unauthenticated_review_asks_nothing_further() {
        let reviewed = TokenReview {
            status: Some(TokenReviewStatus {
                authenticated: Some(false),
                error: Some("invalid token".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(access_review(&reviewed, "get", "/metrics").is_none());
        assert!(access_review(&TokenReview::default(), "get", "/metrics").is_none());
    }
}
