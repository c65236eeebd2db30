//! Loopback addresses for pods and load balancers.
//!
//! Every pod gets its own 127.x.y.z, so two destination movers never collide on :8000, and
//! nothing is ever sent off the machine. The ranges stay clear of 127.0.0.0/16 (where the
//! control plane listens) and of the Service CIDR 127.64.0.0/16 (ClusterIPs).

use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicU32, Ordering},
};

/// Pod IPs: 127.100.0.0/16.
pub const POD_PREFIX: [u8; 2] = [127, 100];
/// Load-balancer ingress IPs: 127.66.0.0/16.
pub const LOAD_BALANCER_PREFIX: [u8; 2] = [127, 66];

/// Hands out addresses of one /16 in order. Addresses are not reused: a run makes far
/// fewer than 65 000 pods, and reuse would let a late connection reach the wrong pod.
pub struct Pool {
    prefix: [u8; 2],
    next: AtomicU32,
}

impl Pool {
    /// A pool of `prefix.0.0/16`, starting at `.0.1`.
    pub const fn new(prefix: [u8; 2]) -> Self {
        Pool {
            prefix,
            next: AtomicU32::new(1),
        }
    }

    /// The next free address.
    pub fn allocate(&self) -> Ipv4Addr {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        assert!(
            n < 0xffff,
            "the {:?}/16 address pool is exhausted",
            self.prefix
        );
        Ipv4Addr::new(self.prefix[0], self.prefix[1], (n >> 8) as u8, n as u8)
    }
}

/// Pod addresses.
pub static PODS: Pool = Pool::new(POD_PREFIX);
/// Load-balancer addresses.
pub static LOAD_BALANCERS: Pool = Pool::new(LOAD_BALANCER_PREFIX);
