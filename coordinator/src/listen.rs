//! The coordinator's gRPC listening socket. It owns one decision: the accept backlog.
//!
//! A coordinator restart under a fleet sees every agent reconnect within a few hundred
//! milliseconds. `std`'s (and so tonic's `serve(addr)`) backlog is 128: past it the kernel
//! drops the SYNs, each dropped agent retransmits after 1 s, then 3 s, and its connect timeout
//! turns that into a failed session and a longer backoff. Measured with `sf-bench fanout`
//! (`TcpExtListenOverflows` moved during every restart at 1,000 agents). The kernel clamps the
//! value asked here to `net.core.somaxconn` (4,096 by default since Linux 5.4).

use std::net::SocketAddr;

use tokio::net::TcpSocket;
use tonic::transport::server::TcpIncoming;

/// Accept backlog asked for (the kernel clamps it to `net.core.somaxconn`).
pub const LISTEN_BACKLOG: u32 = 65_535;

/// Binds `addr` with [`LISTEN_BACKLOG`], `SO_REUSEADDR` (a restarted coordinator binds again
/// while the old one's connections sit in TIME_WAIT) and `TCP_NODELAY` on accepted
/// connections (tonic's default, which [`TcpIncoming::from`] would drop).
pub fn grpc_listener(addr: SocketAddr) -> std::io::Result<TcpIncoming> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpIncoming::from(listener).with_nodelay(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A burst of connections larger than std's backlog of 128, none accepted yet (the
    /// server busy with handshakes): every connect completes at once. With a 128 backlog the
    /// kernel drops the SYNs past it, and those connects take a 1 s retransmit or more.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reconnect_burst_is_not_dropped_by_the_backlog() {
        let incoming = grpc_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        const BURST: usize = 600;
        let t = Instant::now();
        let conns = futures::future::join_all((0..BURST).map(|_| async move {
            let t = Instant::now();
            let c = tokio::time::timeout(
                Duration::from_millis(900),
                tokio::net::TcpStream::connect(addr),
            )
            .await;
            (c, t.elapsed())
        }))
        .await;
        let slow = conns
            .iter()
            .filter(|(c, _)| !matches!(c, Ok(Ok(_))))
            .count();
        assert_eq!(
            slow,
            0,
            "{slow} of {BURST} connects did not complete within 900 ms ({:?} in all)",
            t.elapsed()
        );
        drop(incoming);
    }
}
