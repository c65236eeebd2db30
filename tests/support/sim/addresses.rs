//! Loopback addresses for pods, Services, load balancers and nodes, one plan per site.
//!
//! Every pod gets its own 127.x.y.z, so two destination movers never collide on :8000, and
//! nothing is ever sent off the machine. The ranges stay clear of 127.0.0.0/16 (where the
//! control planes listen).
//!
//! Two clusters can run side by side (`east` and `west`, DESIGN.md's two-site tests), and
//! their pod, Service and load-balancer ranges never overlap, as two real sites' ranges do
//! not: a [`Site`] names a cluster, and its [`Plan`] holds its ranges. [`Site::East`] is
//! also the one cluster of every single-cluster test, with the ranges it always had.
//!
//! Test binaries may run at the same time on one machine (several developers, or CI next
//! to a developer), each with its own simulators. So that they never hand out the same
//! address, each address is leased for the life of the process by binding a UDP socket to
//! its port 1, and each process starts at an offset of its own.

use std::{
    net::{Ipv4Addr, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

/// Host numbers per /16 that are handed out (.0.1 to .255.254).
const HOSTS: u32 = 0xfffe;

/// One of the (at most two) clusters a process runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Site {
    /// The first cluster; the only one of single-cluster tests.
    #[default]
    East,
    /// The second cluster.
    West,
}

impl Site {
    /// Both sites.
    pub const ALL: [Site; 2] = [Site::East, Site::West];

    /// Its name: the kubeconfig context and the prefix of its node names.
    pub const fn name(self) -> &'static str {
        match self {
            Site::East => "east",
            Site::West => "west",
        }
    }

    /// Its address ranges.
    pub fn plan(self) -> &'static Plan {
        match self {
            Site::East => &EAST,
            Site::West => &WEST,
        }
    }

    /// The site called `name`.
    pub fn parse(name: &str) -> Option<Site> {
        Site::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A site's address ranges, each a loopback /16 that no other site's range overlaps.
pub struct Plan {
    /// The Service CIDR (ClusterIPs), given to kube-apiserver and kube-controller-manager.
    pub service_cidr: &'static str,
    /// Pod IPs.
    pub pods: Pool,
    /// Load-balancer ingress IPs.
    pub load_balancers: Pool,
    /// Node ExternalIPs.
    pub nodes: Pool,
}

impl Plan {
    /// The `kubernetes` Service's ClusterIP: the first address of the Service CIDR, which
    /// the apiserver always gives it (what KUBERNETES_SERVICE_HOST names).
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        let network: Ipv4Addr = self
            .service_cidr
            .split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("a site's Service CIDR is an IPv4 network");
        Ipv4Addr::from(u32::from(network) + 1)
    }

    /// Whether `ip` is one of this site's ClusterIPs.
    pub fn is_cluster_ip(&self, ip: Ipv4Addr) -> bool {
        let prefix = self.service_cidr.split('.').take(2).collect::<Vec<_>>();
        let octets = ip.octets();
        prefix == [octets[0].to_string(), octets[1].to_string()]
    }
}

/// `east`: the ranges single-cluster tests always had (Services 127.64/16, load balancers
/// 127.66/16, nodes 127.67/16, pods 127.100/16).
pub static EAST: Plan = Plan {
    service_cidr: "127.64.0.0/16",
    pods: Pool::new([127, 100]),
    load_balancers: Pool::new([127, 66]),
    nodes: Pool::new([127, 67]),
};

/// `west`: Services 127.72/16, load balancers 127.74/16, nodes 127.75/16, pods 127.102/16.
pub static WEST: Plan = Plan {
    service_cidr: "127.72.0.0/16",
    pods: Pool::new([127, 102]),
    load_balancers: Pool::new([127, 74]),
    nodes: Pool::new([127, 75]),
};

/// Pod IPs of `east`: 127.100.0.0/16.
pub const POD_PREFIX: [u8; 2] = [127, 100];
/// Load-balancer ingress IPs of `east`: 127.66.0.0/16.
pub const LOAD_BALANCER_PREFIX: [u8; 2] = [127, 66];
/// Node ExternalIPs of `east`: 127.67.0.0/16.
pub const NODE_PREFIX: [u8; 2] = [127, 67];

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

/// Pod addresses of `east`.
pub static PODS: &Pool = &EAST.pods;
/// Load-balancer addresses of `east`.
pub static LOAD_BALANCERS: &Pool = &EAST.load_balancers;
/// Node external addresses of `east`.
pub static NODES: &Pool = &EAST.nodes;

/// Which site's simulators run pods under which directory: the node simulator knows only
/// its pods' directory, and takes their addresses from that site's plan.
static SITE_DIRS: Mutex<Vec<(PathBuf, Site)>> = Mutex::new(Vec::new());

/// Records that the simulators of `site` keep their state under `dir`.
pub fn register_site_dir(dir: &Path, site: Site) {
    SITE_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((dir.to_path_buf(), site));
}

/// The site whose simulators run pods under `pods_dir` (`east` when none was registered).
pub fn site_under(pods_dir: &Path) -> Site {
    let dirs = SITE_DIRS.lock().unwrap_or_else(|e| e.into_inner());
    dirs.iter()
        .find(|(dir, _)| pods_dir.starts_with(dir))
        .map_or(Site::East, |(_, site)| *site)
}

/// The pod address pool of the site whose simulators run pods under `pods_dir`.
pub fn pods_under(pods_dir: &Path) -> &'static Pool {
    &site_under(pods_dir).plan().pods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sites_ranges_never_overlap() {
        let prefixes = |p: &Plan| {
            let svc: Vec<u8> = p
                .service_cidr
                .split('.')
                .take(2)
                .map(|o| o.parse().unwrap())
                .collect();
            vec![
                [svc[0], svc[1]],
                p.pods.prefix,
                p.load_balancers.prefix,
                p.nodes.prefix,
            ]
        };
        assert_eq!(EAST.kubernetes_ip(), Ipv4Addr::new(127, 64, 0, 1));
        assert_eq!(WEST.kubernetes_ip(), Ipv4Addr::new(127, 72, 0, 1));
        let mut all: Vec<[u8; 2]> = Site::ALL.iter().flat_map(|s| prefixes(s.plan())).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "two ranges share a /16");
    }
}
