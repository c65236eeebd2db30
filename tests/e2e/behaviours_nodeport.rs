//! Issue 12, NodePort for a destination (backube/volsync#814): the published address is a
//! node's (its ExternalIP, else its InternalIP) and the port is the node port, both in
//! status.rsyncTLS; a source given them replicates through the node.

use std::time::Duration;

use ferrosync::api::ReplicationDestination;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::Api;
use serde_json::json;

use crate::{
    env::env,
    fixtures::{STEP, event},
    lifecycle_support::OWNER,
    support::{sim::SECOND_NODE, wait},
    tree,
    volsync::{
        assert_mover_succeeded, claim_dir, copy_secret, destination, privileged_movers,
        published_image, sample_source, synced,
    },
};

#[tokio::test]
async fn a_node_port_destination_publishes_a_node_address_and_port_that_a_source_reaches() {
    let env = env();
    let dst = env.cp.namespace("np-dst").await;
    let src = env.cp.namespace("np-src").await;
    privileged_movers(&dst).await;
    privileged_movers(&src).await;
    destination(&dst, "np", json!({"serviceType": "NodePort"})).await;
    let rds: Api<ReplicationDestination> = dst.api();
    let (address, port, key) = wait::until("the NodePort endpoint", STEP, || async {
        let rd = rds.get("np").await.map_err(|e| e.to_string())?;
        let tls = rd.status.and_then(|s| s.rsync_tls);
        Ok(tls.and_then(|t| Some((t.address?, t.port?, t.key_secret?))))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", env.controller_tail()));

    // The node port of the Service, at the one node with an ExternalIP (the second).
    let svc: Service = dst
        .api()
        .get("volsync-rsync-tls-dst-np")
        .await
        .expect("service");
    let spec = svc.spec.expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("NodePort"));
    assert_eq!(Some(port), spec.ports.expect("ports")[0].node_port);
    let node: Node = Api::all(dst.client.clone())
        .get(SECOND_NODE)
        .await
        .expect("node");
    let external = node
        .status
        .and_then(|s| s.addresses)
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.type_ == "ExternalIP")
        .expect("an ExternalIP");
    assert_eq!(address, external.address);
    let note = event(&dst.client, &dst.name, "np", "ServiceAddressAssigned").await;
    assert!(note.contains(&port.to_string()), "{note}");

    copy_secret(&dst, &key, &src, "np-key").await;
    let data = sample_source(
        &src,
        "np",
        OWNER,
        json!({"keySecret": "np-key", "address": address, "port": port}),
    )
    .await;
    let rs = synced(&src, "np", Duration::from_secs(180)).await;
    assert_mover_succeeded(&rs);
    published_image(&dst, "np", STEP * 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    tree::assert_same(&data, &claim_dir(&dst, "volsync-np-dst").await);
}
