//! Pure builders of the Kubernetes objects ferrosync creates: PVCs, snapshots, Services,
//! Secrets and Jobs. Nothing here performs I/O.
