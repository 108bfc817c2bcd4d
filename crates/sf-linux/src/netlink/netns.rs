//! Sockets of other network namespaces without entering them for good: a short-lived thread
//! `setns`es into `/run/netns/NAME` (which moves only that thread), runs a closure there and
//! ends. What the closure opens stays bound to that namespace: a netlink socket talks to the
//! namespace it was created in, and a `/proc/sys/net/...` file opened there reads and writes
//! that namespace's sysctl, whichever thread uses them later. So one agent holds one
//! long-lived socket per namespace, driven by its own runtime, instead of running
//! `ip -n NAME` / `ip netns exec NAME` (a process that unshares and remounts) per question.
//!
//! A socket keeps its namespace alive: drop it before (or when) the namespace is deleted,
//! or the namespace and everything in it outlive `ip netns del`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Netlink, NetlinkError};

/// Where `ip netns` mounts named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// The path of named namespace `name`.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Identity of a namespace file (device, inode): a namespace deleted and re-created under
/// the same name has another one.
pub type NsId = (u64, u64);

/// The identity of the namespace mounted at `path`.
pub fn id_of(path: &Path) -> std::io::Result<NsId> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Runs `f` on a thread inside the namespace at `path` (inside the caller's tokio runtime,
/// so that sockets made there are driven by it), and returns its result with the identity
/// of the namespace it ran in. Blocks the caller for the thread's life (tens of µs).
pub fn within<T, F>(path: &Path, f: F) -> std::io::Result<(T, NsId)>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let rt = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            let _rt = rt.enter();
            let ns = File::open(path)?;
            let m = ns.metadata()?;
            // SAFETY: setns on an open namespace file; it changes only this thread, which
            // ends right after `f`.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok((f(), (m.dev(), m.ino())))
        })
        .join()
        .map_err(|_| std::io::Error::other("namespace thread panicked"))?
    })
}

impl Netlink {
    /// Opens a socket in the namespace at `path`; also returns the namespace's identity.
    /// Must run inside a tokio runtime (which then drives the socket).
    pub fn open_in(path: &Path) -> Result<(Self, NsId), NetlinkError> {
        let (nl, id) = within(path, Netlink::open).map_err(NetlinkError::Open)?;
        Ok((nl?, id))
    }
}
