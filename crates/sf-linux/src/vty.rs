//! One FRR daemon's vty socket, spoken to directly: what `vtysh -c` does, without starting a
//! process. `vtysh` parses its whole command graph on every start (about 40 ms of CPU); the
//! agents' BGP session read every 5 s made that the largest share of an idle gateway's CPU
//! with its children. The daemon (FRR's `vtysh_accept`) takes a command terminated by a NUL
//! byte in its VIEW node (`show` commands) and answers with the output followed by three NUL
//! bytes and the command's return code.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::DeviceError;

/// What the daemon appended to its answer: the output (before the end marker) and the return
/// code, once the whole answer is in `buf`.
pub fn answer(buf: &[u8]) -> Option<(&[u8], u8)> {
    match buf {
        [out @ .., 0, 0, 0, rc] => Some((out, *rc)),
        _ => None,
    }
}

/// Runs `cmd` on daemon `daemon` (e.g. "bgpd") of the FRR instance whose vty sockets are in
/// `dir`, within `timeout`; returns its output.
pub async fn command(
    dir: &Path,
    daemon: &str,
    cmd: &str,
    timeout: Duration,
) -> Result<String, DeviceError> {
    let path = dir.join(format!("{daemon}.vty"));
    let what = format!("{cmd} ({})", path.display());
    let io = |source| DeviceError::Spawn {
        cmd: what.clone(),
        source,
    };
    let run = async {
        let mut s = UnixStream::connect(&path).await.map_err(io)?;
        let mut req = cmd.as_bytes().to_vec();
        req.push(0);
        s.write_all(&req).await.map_err(io)?;
        let mut buf = Vec::with_capacity(16 << 10);
        loop {
            let n = s.read_buf(&mut buf).await.map_err(io)?;
            if let Some((out, rc)) = answer(&buf) {
                let out = String::from_utf8_lossy(out).into_owned();
                return match rc {
                    0 => Ok(out),
                    rc => Err(DeviceError::Command {
                        cmd: what.clone(),
                        stderr: format!("return code {rc}: {}", out.trim()),
                    }),
                };
            }
            if n == 0 {
                return Err(DeviceError::Parse {
                    cmd: what.clone(),
                    detail: "the daemon closed the socket before its end marker".into(),
                });
            }
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(DeviceError::Timeout {
            cmd: what.clone(),
            secs: timeout.as_secs_f64(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_ends_with_three_nuls_and_the_return_code() {
        assert_eq!(answer(b"{}\n\0\0\0\0"), Some((&b"{}\n"[..], 0)));
        assert_eq!(
            answer(b"% Unknown command\n\0\0\0\x02"),
            Some((&b"% Unknown command\n"[..], 2))
        );
        assert_eq!(answer(b"{\"ipv4"), None, "still arriving");
        assert_eq!(answer(b"x\0\0"), None, "the marker is not complete");
        assert_eq!(answer(b"\0\0\0\0"), Some((&b""[..], 0)), "no output");
    }

    /// A stand-in daemon on a socket pair: the request arrives NUL-terminated, an answer in
    /// pieces is put together, and a non-zero return code is an error.
    #[tokio::test]
    async fn a_command_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::UnixListener::bind(dir.path().join("bgpd.vty")).unwrap();
        tokio::spawn(async move {
            for reply in [
                &[&b"{\"ipv4Unicast\""[..], b":{}}\n", b"\0\0", b"\0\0"][..],
                &[b"% no\n\0\0\0\x01"],
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut req = vec![0u8; 64];
                let n = s.read(&mut req).await.unwrap();
                assert_eq!(&req[..n], b"show bgp summary json\0");
                for part in reply {
                    s.write_all(part).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        let t = Duration::from_secs(2);
        let out = command(dir.path(), "bgpd", "show bgp summary json", t)
            .await
            .unwrap();
        assert_eq!(out, "{\"ipv4Unicast\":{}}\n");
        let err = command(dir.path(), "bgpd", "show bgp summary json", t).await;
        assert!(matches!(err, Err(DeviceError::Command { .. })), "{err:?}");
        let gone = command(dir.path(), "zebra", "show bgp summary json", t).await;
        assert!(matches!(gone, Err(DeviceError::Spawn { .. })), "{gone:?}");
    }
}
