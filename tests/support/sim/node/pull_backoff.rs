//! The kubelet's back-off after a failed image pull: the container shows `ErrImagePull`
//! until the next pod sync, then `ImagePullBackOff` while the kubelet waits (10 s, doubling
//! up to 5 min) before pulling again, so a pull secret fixed meanwhile is picked up.

use std::time::Duration;

use super::{
    pod::Deletion,
    status::{Container, ContainerState},
};

/// How long `ErrImagePull` shows before the next sync reports the back-off.
pub const NEXT_SYNC: Duration = Duration::from_secs(10);
/// The first wait before pulling again.
const FIRST: Duration = Duration::from_secs(10);
/// The longest wait (the kubelet's MaxContainerBackOff).
const MAX: Duration = Duration::from_secs(300);

/// The waits of one pod's pulls.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST }
    }
}

impl Backoff {
    /// The wait before the next pull; each is twice the one before, up to the maximum.
    pub fn next(&mut self) -> Duration {
        let now = self.next;
        self.next = (now * 2).min(MAX);
        now
    }
}

/// The containers' states while backing off, when every blocked container failed to pull
/// (anything else, a configuration error, is not retried).
pub fn backing_off(blocked: &[Container]) -> Option<Vec<Container>> {
    blocked
        .iter()
        .map(|c| match &c.state {
            ContainerState::Waiting { reason, .. } if reason == "ErrImagePull" => Some(Container {
                name: c.name.clone(),
                image: c.image.clone(),
                state: ContainerState::Waiting {
                    reason: "ImagePullBackOff".into(),
                    message: format!("Back-off pulling image {:?}", c.image),
                },
            }),
            _ => None,
        })
        .collect()
}

/// Waits `duration`; `false` when the pod was deleted meanwhile.
pub async fn pause(deletion: &mut Deletion, duration: Duration) -> bool {
    let _ = tokio::time::timeout(duration, deletion.wait_for(|d| d.is_some())).await;
    deletion.borrow().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_five_minutes() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..7).map(|_| b.next().as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
    }
}
