//! The two sites: a kube client per kubeconfig context, checked for reachability first so
//! that "the cluster is gone" is told apart from every other failure.

use std::time::Duration;

use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

use super::Error;

/// How long a site may take to answer before it counts as unreachable. A lost site must
/// not stall a failover for minutes.
const REACH_TIMEOUT: Duration = Duration::from_secs(8);

/// One site of a pair: its context, a client, and the namespace to work in.
#[derive(Clone)]
pub struct Site {
    /// "source" or "destination", for messages.
    pub role: &'static str,
    /// The kubeconfig context ("current" when none was named).
    pub context: String,
    pub client: Client,
    pub namespace: String,
}

impl Site {
    /// Wraps a kube error with this site's context.
    pub fn api(&self, source: kube::Error) -> Error {
        Error::Api {
            context: self.context.clone(),
            source,
        }
    }
}

/// Connects to `context` (the current context when `None`) and proves the apiserver
/// answers. `namespace` overrides the context's namespace.
pub async fn connect(
    role: &'static str,
    context: Option<&str>,
    namespace: Option<&str>,
) -> Result<Site, Error> {
    let name = context.unwrap_or("(current)").to_string();
    let kubeconfig = Kubeconfig::read().map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..KubeConfigOptions::default()
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| Error::Kubeconfig(format!("context {name}: {e}")))?;
    config.connect_timeout = Some(REACH_TIMEOUT);
    config.read_timeout = Some(Duration::from_secs(30));
    let default_namespace = config.default_namespace.clone();
    let client =
        Client::try_from(config).map_err(|e| Error::Kubeconfig(format!("context {name}: {e}")))?;
    let unreachable = |detail: String| Error::Unreachable {
        role,
        context: name.clone(),
        detail,
    };
    match tokio::time::timeout(REACH_TIMEOUT, client.apiserver_version()).await {
        Err(_) => {
            return Err(unreachable(format!(
                "no answer within {}s",
                REACH_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Ok(Ok(_)) => {}
    }
    Ok(Site {
        role,
        context: name,
        client,
        namespace: namespace.map_or(default_namespace, str::to_string),
    })
}

/// Like [`connect`], but a site that does not answer is `None` (failover proceeds without a
/// lost source site). Other errors (a bad kubeconfig) still fail.
pub async fn connect_if_reachable(
    role: &'static str,
    context: Option<&str>,
    namespace: Option<&str>,
) -> Result<Option<Site>, Error> {
    match connect(role, context, namespace).await {
        Ok(site) => Ok(Some(site)),
        Err(Error::Unreachable {
            detail, context, ..
        }) => {
            eprintln!(
                "the {role} cluster (context {context}) is unreachable ({detail}); proceeding without it"
            );
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Both sites of `sites`, each required to answer.
pub async fn both(sites: &super::Sites) -> Result<(Site, Site), Error> {
    let source = connect(
        "source",
        sites.source_context.as_deref(),
        sites.source_namespace.as_deref(),
    )
    .await?;
    let dest_ns = sites
        .dest_namespace
        .clone()
        .unwrap_or_else(|| source.namespace.clone());
    let dest = connect("destination", sites.dest_context.as_deref(), Some(&dest_ns)).await?;
    Ok((source, dest))
}

/// Both sites, each `None` when it does not answer (said on stderr). The destination's
/// namespace defaults to the source's.
pub async fn reachable(sites: &super::Sites) -> Result<(Option<Site>, Option<Site>), Error> {
    let source = connect_if_reachable(
        "source",
        sites.source_context.as_deref(),
        sites.source_namespace.as_deref(),
    )
    .await?;
    let dest_ns = sites
        .dest_namespace
        .clone()
        .or_else(|| sites.source_namespace.clone());
    let dest = connect_if_reachable(
        "destination",
        sites.dest_context.as_deref(),
        dest_ns.as_deref(),
    )
    .await?;
    Ok((source, dest))
}

/// True when both sites are one namespace of one cluster (then the key Secret is shared,
/// not copied).
pub fn same_place(a: &Site, b: &Site) -> bool {
    a.context == b.context && a.namespace == b.namespace
}
