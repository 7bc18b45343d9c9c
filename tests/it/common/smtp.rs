//! A real SMTP server for the notification tests: aiosmtpd (PyPI; scripts/test
//! installs it) with its own Mailbox handler, every message a file in
//! `<maildir>/new/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

/// aiosmtpd's own Mailbox handler: every message a file in `dir/new/`.
pub struct SmtpServer {
    pub port: u16,
    pub maildir: PathBuf,
    child: Child,
}

impl SmtpServer {
    pub fn start(port: u16, maildir: &Path) -> SmtpServer {
        let ok = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "the SMTP tests need aiosmtpd: python3 -m pip install aiosmtpd (scripts/test does)"
        );
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd");
        wait_until("aiosmtpd to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        SmtpServer {
            port,
            maildir: maildir.to_path_buf(),
            child,
        }
    }

    /// Every message received so far (headers and body as text).
    pub fn messages(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        let mut out: Vec<String> = dir
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect();
        out.sort();
        out
    }

    pub fn of_kind(&self, kind: &str) -> Vec<String> {
        let header = format!("X-Arasul-Kind: {kind}\n");
        self.messages()
            .into_iter()
            .filter(|m| m.replace("\r\n", "\n").contains(&header))
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
