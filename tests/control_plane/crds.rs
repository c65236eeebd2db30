//! The CRDs install and are served: ours, and the VolumeSnapshot CRDs the controller uses.

use kube::{Api, core::ApiResource, discovery::Discovery};

use crate::support::control_plane;

#[tokio::test]
async fn crds_are_installed_and_served() {
    let cp = control_plane();
    let client = cp.client().await;
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    for (group, kinds) in [
        (
            "volsync.backube",
            &["ReplicationSource", "ReplicationDestination"][..],
        ),
        (
            "snapshot.storage.k8s.io",
            &[
                "VolumeSnapshot",
                "VolumeSnapshotContent",
                "VolumeSnapshotClass",
            ][..],
        ),
    ] {
        let served = discovery
            .get(group)
            .unwrap_or_else(|| panic!("group {group} is not served"));
        let names: Vec<String> = served
            .recommended_resources()
            .into_iter()
            .map(|(r, _)| r.kind)
            .collect();
        for kind in kinds {
            assert!(
                names.iter().any(|n| n == kind),
                "{group} serves {names:?}, not {kind}"
            );
        }
    }
    // Listing works, i.e. the storage version is usable, not just discoverable.
    let gvk = kube::core::GroupVersionKind::gvk("volsync.backube", "v1alpha1", "ReplicationSource");
    let resource = ApiResource::from_gvk(&gvk);
    let api: Api<kube::core::DynamicObject> = Api::all_with(client, &resource);
    api.list(&Default::default())
        .await
        .expect("listing ReplicationSources");
    assert!(
        cp.version.starts_with("v1.35"),
        "apiserver version {}",
        cp.version
    );
}
