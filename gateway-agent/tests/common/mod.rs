//! Shared by the gateway's kernel tests that prove which `ip` processes ran (none, or only
//! the ones allowed): root detection and a logging `ip` wrapper first on PATH.

use std::path::PathBuf;

pub fn root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// An `ip` wrapper that appends its arguments to [`IpLog::log`] and runs `/usr/sbin/ip`, put
/// first on this process's PATH (process-wide: one such test per test binary). Its
/// directory is removed on drop, also after a failure.
pub struct IpLog {
    dir: PathBuf,
    pub log: PathBuf,
}

impl IpLog {
    /// Installs the wrapper in a directory named `TAG<pid>-bin` under the temp dir.
    pub fn install(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{tag}{}-bin", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("ip.log");
        let wrapper = dir.join("ip");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho \"$*\" >>{}\nexec /usr/sbin/ip \"$@\"\n",
                log.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::var("PATH").unwrap_or_default();
        std::env::set_var("PATH", format!("{}:{path}", dir.display()));
        IpLog { dir, log }
    }
}

impl Drop for IpLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
