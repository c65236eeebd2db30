//! Loopback addresses for pods and load balancers.
//!
//! Every pod gets its own 127.x.y.z, so two destination movers never collide on :8000, and
//! nothing is ever sent off the machine. The ranges stay clear of 127.0.0.0/16 (where the
//! control plane listens) and of the Service CIDR 127.64.0.0/16 (ClusterIPs).
//!
//! Test binaries may run at the same time on one machine (several developers, or CI next
//! to a developer), each with its own simulators. So that they never hand out the same
//! address, each address is leased for the life of the process by binding a UDP socket to
//! its port 1, and each process starts at an offset of its own.

use std::{
    net::{Ipv4Addr, UdpSocket},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

/// Pod IPs: 127.100.0.0/16.
pub const POD_PREFIX: [u8; 2] = [127, 100];
/// Load-balancer ingress IPs: 127.66.0.0/16.
pub const LOAD_BALANCER_PREFIX: [u8; 2] = [127, 66];
/// Node ExternalIPs: 127.67.0.0/16.
pub const NODE_PREFIX: [u8; 2] = [127, 67];
/// Host numbers per /16 that are handed out (.0.1 to .255.254).
const HOSTS: u32 = 0xfffe;

/// Hands out addresses of one /16, each leased by this process.
pub struct Pool {
    prefix: [u8; 2],
    next: AtomicU32,
    leases: Mutex<Vec<UdpSocket>>,
}

impl Pool {
    /// A pool of `prefix.0.0/16`.
    pub const fn new(prefix: [u8; 2]) -> Self {
        Pool {
            prefix,
            next: AtomicU32::new(0),
            leases: Mutex::new(Vec::new()),
        }
    }

    /// The next address no process on this machine holds. Addresses are not reused: a
    /// late connection must never reach a newer pod.
    pub fn allocate(&self) -> Ipv4Addr {
        // Spread processes over the range, so they rarely even probe the same address.
        let offset = std::process::id().wrapping_mul(2_654_435_761) % HOSTS;
        for _ in 0..HOSTS {
            let n = (offset + self.next.fetch_add(1, Ordering::Relaxed)) % HOSTS + 1;
            let ip = Ipv4Addr::new(self.prefix[0], self.prefix[1], (n >> 8) as u8, n as u8);
            if let Ok(lease) = UdpSocket::bind((ip, 1)) {
                self.leases
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(lease);
                return ip;
            }
        }
        panic!("no free address left in {:?}.0.0/16", self.prefix);
    }
}

/// Pod addresses.
pub static PODS: Pool = Pool::new(POD_PREFIX);
/// Load-balancer addresses.
pub static LOAD_BALANCERS: Pool = Pool::new(LOAD_BALANCER_PREFIX);
/// Node external addresses.
pub static NODES: Pool = Pool::new(NODE_PREFIX);
