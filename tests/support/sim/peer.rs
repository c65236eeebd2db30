//! Which simulated cluster a loopback connection comes from.
//!
//! Every process here shares the host's loopback, and a connection to any 127.x address
//! comes from 127.0.0.1, so the address says nothing about the client. The kernel still
//! knows: the client's socket is in `/proc/net/tcp` (local end = our peer, remote end = our
//! listening address) with an inode, that inode is an open file of exactly one process,
//! and a pod's process has its cluster's simulator directory in its mount table (its
//! volumes and termination-log file are bound from there). The routing simulator uses this
//! to serve a cluster's ClusterIPs to that cluster's pods only (see `routing`).

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::Path,
};

/// Where a connection comes from, as far as clusters go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A pod of the cluster whose simulators live in the given directory.
    Pod,
    /// A pod of another simulated cluster (its simulator directory's name).
    ForeignPod(String),
    /// Anything else: the test process, a controller, a user on the node, or a client
    /// that could not be found (it may have gone already).
    Host,
}

/// The prefix of every simulator directory's name (`sim::start` makes them).
pub const SIM_DIR_PREFIX: &str = "ferrosync-sim-";

/// The origin of the TCP connection whose client end is `peer` and whose server end is
/// `local`, from the point of view of the cluster whose simulators live in `own_dir`.
pub fn origin(peer: SocketAddr, local: SocketAddr, own_dir: &Path) -> Origin {
    let (SocketAddr::V4(peer), SocketAddr::V4(local)) = (peer, local) else {
        return Origin::Host;
    };
    let Some(inode) = std::fs::read_to_string("/proc/net/tcp")
        .ok()
        .and_then(|table| socket_inode(&table, peer, local))
    else {
        return Origin::Host;
    };
    let Some(pid) = owner_of(inode) else {
        return Origin::Host;
    };
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    let own = own_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    classify_mounts(&mounts, &own)
}

/// The origin a process's mount table (`/proc/<pid>/mountinfo`) shows: a pod's binds come
/// from its simulator directory.
pub fn classify_mounts(mountinfo: &str, own_dir_name: &str) -> Origin {
    let mut foreign = None;
    for line in mountinfo.lines() {
        // Field 4 is the mount's root within its filesystem: the bind's source.
        let Some(root) = line.split(' ').nth(3) else {
            continue;
        };
        let Some(start) = root.find(SIM_DIR_PREFIX) else {
            continue;
        };
        let name = root[start..].split('/').next().unwrap_or_default();
        if name == own_dir_name {
            return Origin::Pod;
        }
        foreign.get_or_insert_with(|| name.to_string());
    }
    foreign.map_or(Origin::Host, Origin::ForeignPod)
}

/// `/proc/net/tcp`'s form of an IPv4 socket address: the address as a native-endian u32
/// in hex, the port in big-endian hex.
fn proc_form(addr: SocketAddrV4) -> String {
    let ip = u32::from_ne_bytes(addr.ip().octets());
    format!("{ip:08X}:{:04X}", addr.port())
}

/// The inode of the socket with local end `client` and remote end `server` in a
/// `/proc/net/tcp` table.
pub fn socket_inode(table: &str, client: SocketAddrV4, server: SocketAddrV4) -> Option<u64> {
    let (local, remote) = (proc_form(client), proc_form(server));
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| fields.get(9)?.parse().ok())
            .flatten()
            .filter(|inode| *inode != 0)
    })
}

/// The process holding the socket `inode` open.
fn owner_of(inode: u64) -> Option<u32> {
    let wanted = format!("socket:[{inode}]");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

/// 127.0.0.1, the source of every loopback connection that did not bind one.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_client_socket_in_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:9C40 0500487F:1F40 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 20 4 30 10 -1\n";
        let client = SocketAddrV4::new(LOOPBACK, 0x9c40);
        let server = SocketAddrV4::new(Ipv4Addr::new(127, 72, 0, 5), 8000);
        if cfg!(target_endian = "little") {
            assert_eq!(socket_inode(table, client, server), Some(4242));
        }
        let other = SocketAddrV4::new(Ipv4Addr::new(127, 72, 0, 6), 8000);
        assert_eq!(socket_inode(table, client, other), None);
    }

    #[test]
    fn a_pods_mounts_name_its_cluster() {
        let line = |root: &str| {
            format!("36 35 0:30 {root} /dev/termination-log rw,nosuid - tmpfs tmpfs rw\n")
        };
        let own = line("/ferrosync-sim-aaa/pods/ns_p/log");
        let foreign = line("/ferrosync-sim-bbb/storage/pv-1");
        let host = line("/");
        assert_eq!(classify_mounts(&own, "ferrosync-sim-aaa"), Origin::Pod);
        assert_eq!(
            classify_mounts(&foreign, "ferrosync-sim-aaa"),
            Origin::ForeignPod("ferrosync-sim-bbb".into())
        );
        assert_eq!(classify_mounts(&host, "ferrosync-sim-aaa"), Origin::Host);
    }
}
