//! The process's limit on open files (RLIMIT_NOFILE). systemd starts a
//! service with a soft limit of 1024; the daemon raises it to the hard limit
//! once at start, and the HTTP edge sizes its connection cap from the result.

use std::io;

/// Soft and hard RLIMIT_NOFILE; `None` stands for unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFileLimit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

impl std::fmt::Display for OpenFileLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: Option<u64>| v.map_or_else(|| "unlimited".to_string(), |n| n.to_string());
        write!(f, "soft {}, hard {}", show(self.soft), show(self.hard))
    }
}

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

pub fn open_files() -> io::Result<OpenFileLimit> {
    let rl = getrlimit(Resource::Nofile);
    Ok(OpenFileLimit {
        soft: rl.current,
        hard: rl.maximum,
    })
}

/// Raises the soft limit to the hard one; returns the limits before and
/// after. An unlimited hard limit is met with the kernel's ceiling
/// (`fs.nr_open`): Linux refuses an unlimited soft limit on open files.
pub fn raise_open_files() -> io::Result<(OpenFileLimit, OpenFileLimit)> {
    let before = open_files()?;
    if before.soft == before.hard {
        return Ok((before, before));
    }
    let target = match before.hard {
        Some(hard) => hard,
        None => std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20),
    };
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: before.hard,
        },
    )?;
    Ok((before, open_files()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one() {
        let (before, after) = raise_open_files().unwrap();
        assert_eq!(after.hard, before.hard);
        assert!(after.soft >= before.soft || after.soft.is_none());
        if let Some(hard) = after.hard {
            assert_eq!(after.soft, Some(hard));
        }
    }
}
