//! The daemon's log files as data: which files there are ([`Source`]), one
//! line parsed into a [`LogLine`], the last lines of a file read backwards
//! ([`tail`]), a bounded case-insensitive search ([`search`]), and a
//! [`Follower`] that picks up appended lines and survives rotation. Plain
//! `std::fs`, no axum; the API calls these from `spawn_blocking`.
//!
//! A source is an enum, never a path from a request: the files opened are
//! the four names below inside `paths.log_dir` (the system log is
//! `logging.json_file` when that is set, as the daemon writes it there).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

mod parse;

pub use parse::parse_line;

/// Bytes read per step when reading backwards.
const CHUNK: usize = 64 * 1024;
/// Longer lines are cut to this many bytes (their start is kept).
pub const MAX_LINE: usize = 64 * 1024;
/// Most bytes one tail (with a level filter) or one search reads per file;
/// beyond it the answer says `truncated`.
pub const MAX_SCAN: u64 = 64 * 1024 * 1024;
/// Most new bytes one [`Follower::poll`] reads; the rest comes next poll.
const MAX_POLL: u64 = 1024 * 1024;

/// The log files the API serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = LogSource)]
pub enum Source {
    /// The daemon's own JSON lines (tracing).
    System,
    /// The self-healing audit trail (JSON lines).
    SelfHealing,
    /// Updates applied through the API.
    Update,
    /// Updates found on a USB stick.
    UpdateUsb,
}

impl Source {
    pub const ALL: [Source; 4] = [
        Source::System,
        Source::SelfHealing,
        Source::Update,
        Source::UpdateUsb,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Source::System => "system",
            Source::SelfHealing => "self_healing",
            Source::Update => "update",
            Source::UpdateUsb => "update_usb",
        }
    }

    /// The one definition of each file name; the writers' `LOG_FILE`s are these.
    pub const fn file_name(self) -> &'static str {
        match self {
            Source::System => "system.log",
            Source::SelfHealing => "self_healing.log",
            Source::Update => "update.log",
            Source::UpdateUsb => "update_usb.log",
        }
    }

    /// `system`, `self_healing`, `update`, `update_usb` (also with `-`).
    pub fn parse(s: &str) -> Option<Source> {
        let s = s.trim().to_ascii_lowercase().replace('-', "_");
        Source::ALL.into_iter().find(|src| src.name() == s)
    }

    /// The file of this source: `log_dir/<file_name>`, except the system
    /// log, which is `json_file` when the daemon is configured to write one.
    pub fn path(self, log_dir: &Path, json_file: Option<&Path>) -> PathBuf {
        match (self, json_file) {
            (Source::System, Some(p)) => p.to_path_buf(),
            _ => log_dir.join(self.file_name()),
        }
    }
}

/// Severity, most severe first (`Error < Warn < …` in `Ord`).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[schema(as = LogLevel)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    /// `error`, `warn(ing)`, `info`, `debug`, `trace`, and the usual aliases
    /// (`critical`/`fatal` → error, `notice` → info); case-insensitive.
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "error" | "err" | "critical" | "crit" | "fatal" | "alert" | "emerg" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" | "notice" => Level::Info,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => return None,
        })
    }

    /// Whether a line at `self` passes a "minimum level" filter of `min`.
    pub fn at_least(self, min: Level) -> bool {
        self <= min
    }
}

/// One line of a log file.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LogLine {
    pub source: Source,
    /// When the line says it was written; null when it does not say.
    pub ts: Option<DateTime<Utc>>,
    /// Null when the line carries no level (plain text).
    pub level: Option<Level>,
    /// The message, with the line's other fields as `key=value` after it.
    pub message: String,
    /// The line as written (cut to 64 KiB).
    pub raw: String,
}

impl LogLine {
    /// Whether the line passes a minimum-level filter; lines without a
    /// level pass only when there is no filter.
    pub fn passes(&self, min: Option<Level>) -> bool {
        match (min, self.level) {
            (None, _) => true,
            (Some(min), Some(l)) => l.at_least(min),
            (Some(_), None) => false,
        }
    }
}

/// One file of [`list`].
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct LogFile {
    pub source: Source,
    pub path: String,
    /// Whether the file exists (update logs appear only after an update).
    pub exists: bool,
    /// Bytes; 0 when it does not exist.
    pub size: u64,
    /// Last modification; null when it does not exist.
    pub modified: Option<DateTime<Utc>>,
}

/// Every source, whether or not its file exists yet.
pub fn list(log_dir: &Path, json_file: Option<&Path>) -> Vec<LogFile> {
    Source::ALL
        .into_iter()
        .map(|source| {
            let path = source.path(log_dir, json_file);
            let meta = std::fs::metadata(&path).ok().filter(|m| m.is_file());
            LogFile {
                source,
                exists: meta.is_some(),
                size: meta.as_ref().map_or(0, |m| m.len()),
                modified: meta
                    .and_then(|m| m.modified().ok())
                    .map(DateTime::<Utc>::from),
                path: path.display().to_string(),
            }
        })
        .collect()
}

/// Lines of a file from the end backwards, without reading the rest of it.
/// Empty lines are skipped; a line longer than [`MAX_LINE`] keeps its start.
pub struct RevLines {
    file: File,
    /// File offset of `buf[0]`.
    pos: u64,
    /// Bytes not yet returned: a line's tail end, possibly several lines.
    buf: Vec<u8>,
    /// Bytes read so far.
    pub scanned: u64,
    done: bool,
}

impl RevLines {
    /// Opens `path` positioned at its end; a missing file yields nothing.
    pub fn open(path: &Path) -> io::Result<Option<RevLines>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        Ok(Some(RevLines {
            file,
            pos: len,
            buf: Vec::new(),
            scanned: 0,
            done: false,
        }))
    }

    fn read_chunk(&mut self) -> io::Result<()> {
        let n = CHUNK.min(self.pos as usize);
        let start = self.pos - n as u64;
        let mut chunk = vec![0u8; n];
        self.file.seek(SeekFrom::Start(start))?;
        self.file.read_exact(&mut chunk)?;
        self.pos = start;
        self.scanned += n as u64;
        chunk.extend_from_slice(&self.buf);
        self.buf = chunk;
        // A line with no newline in sight: keep its start only.
        if !self.buf.contains(&b'\n') && self.buf.len() > MAX_LINE {
            self.buf.truncate(MAX_LINE);
        }
        Ok(())
    }

    fn next_bytes(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.buf.iter().rposition(|&b| b == b'\n') {
                let mut line = self.buf.split_off(i + 1);
                self.buf.truncate(i);
                if line.is_empty() {
                    continue;
                }
                line.truncate(MAX_LINE);
                return Ok(Some(line));
            }
            if self.pos == 0 {
                if self.done || self.buf.is_empty() {
                    self.done = true;
                    return Ok(None);
                }
                self.done = true;
                let mut line = std::mem::take(&mut self.buf);
                line.truncate(MAX_LINE);
                return Ok(Some(line));
            }
            self.read_chunk()?;
        }
    }
}

impl Iterator for RevLines {
    type Item = io::Result<String>;

    fn next(&mut self) -> Option<io::Result<String>> {
        self.next_bytes()
            .map(|o| o.map(|b| lossy_line(&b)))
            .transpose()
    }
}

fn lossy_line(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.strip_suffix('\r').unwrap_or(&s).to_owned()
}

/// What [`tail`] and [`search`] found.
#[derive(Debug, Default)]
pub struct Found {
    pub lines: Vec<LogLine>,
    /// The scan stopped at [`MAX_SCAN`] before the start of the file.
    pub truncated: bool,
    /// Bytes read from the file.
    pub scanned: u64,
}

/// The last `n` lines of `source` at or above `min` level, oldest first.
/// Reads backwards from the end; without a filter it reads only as far as
/// those lines go, with one at most [`MAX_SCAN`] bytes.
pub fn tail(source: Source, path: &Path, n: usize, min: Option<Level>) -> io::Result<Found> {
    let mut found = Found::default();
    let Some(mut rev) = RevLines::open(path)? else {
        return Ok(found);
    };
    while found.lines.len() < n {
        if rev.scanned > MAX_SCAN {
            found.truncated = true;
            break;
        }
        let Some(raw) = rev.next().transpose()? else {
            break;
        };
        let line = parse_line(source, &raw);
        if line.passes(min) {
            found.lines.push(line);
        }
    }
    found.lines.reverse();
    found.scanned = rev.scanned;
    Ok(found)
}

/// Lines of `source` containing `needle` (case-insensitive), newest first,
/// at most `limit`, reading at most [`MAX_SCAN`] bytes from the end.
pub fn search(source: Source, path: &Path, needle: &str, limit: usize) -> io::Result<Found> {
    let mut found = Found::default();
    let Some(mut rev) = RevLines::open(path)? else {
        return Ok(found);
    };
    let needle = needle.to_lowercase();
    while found.lines.len() < limit {
        if rev.scanned > MAX_SCAN {
            found.truncated = true;
            break;
        }
        let Some(raw) = rev.next().transpose()? else {
            break;
        };
        if raw.to_lowercase().contains(&needle) {
            found.lines.push(parse_line(source, &raw));
        }
    }
    found.scanned = rev.scanned;
    Ok(found)
}

/// Follows a file as it grows, like `tail -F`: starts at its end (or at
/// the start of a file created later), returns complete new lines on each
/// [`poll`](Follower::poll), and copes with rotation by rename (drains the
/// old file, then reads the new one from its start) and truncation in
/// place (`copytruncate`: reads again from the start).
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    ino: u64,
    dev: u64,
    pos: u64,
    /// Bytes of a line whose newline has not been written yet.
    partial: Vec<u8>,
}

impl Follower {
    /// Positioned at the current end of `path` (missing: waits for it).
    pub fn at_end(path: PathBuf) -> Follower {
        let mut f = Follower {
            path,
            file: None,
            ino: 0,
            dev: 0,
            pos: 0,
            partial: Vec::new(),
        };
        if let Ok(file) = File::open(&f.path)
            && let Ok(m) = file.metadata()
        {
            f.ino = m.ino();
            f.dev = m.dev();
            f.pos = m.len();
            f.file = Some(file);
        }
        f
    }

    /// New complete lines since the last poll, oldest first.
    pub fn poll(&mut self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let current = std::fs::metadata(&self.path).ok();
        let same = current
            .as_ref()
            .is_some_and(|m| self.file.is_some() && m.ino() == self.ino && m.dev() == self.dev);
        if same {
            let len = current.as_ref().map_or(0, |m| m.len());
            if len < self.pos {
                // Truncated in place: what is there now is new.
                self.pos = 0;
                self.partial.clear();
            }
            self.read_new(&mut out)?;
            return Ok(out);
        }
        // Renamed away and not recreated yet: a writer holding the old file
        // open may still append there, so keep reading it.
        if current.is_none() {
            self.read_new(&mut out)?;
            return Ok(out);
        }
        // A new file under the name: finish the old one first.
        if self.file.is_some() {
            self.read_new(&mut out)?;
            if !self.partial.is_empty() {
                out.push(lossy_line(&std::mem::take(&mut self.partial)));
            }
            self.file = None;
        }
        if let Ok(file) = File::open(&self.path) {
            let m = file.metadata()?;
            self.ino = m.ino();
            self.dev = m.dev();
            self.pos = 0;
            self.file = Some(file);
            self.read_new(&mut out)?;
        }
        Ok(out)
    }

    fn read_new(&mut self, out: &mut Vec<String>) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.seek(SeekFrom::Start(self.pos))?;
        let mut data = Vec::new();
        let n = file.take(MAX_POLL).read_to_end(&mut data)?;
        self.pos += n as u64;
        let mut start = 0;
        for (i, &b) in data.iter().enumerate() {
            if b == b'\n' {
                self.partial.extend_from_slice(&data[start..i]);
                let line = std::mem::take(&mut self.partial);
                if !line.is_empty() {
                    out.push(lossy_line(&line[..line.len().min(MAX_LINE)]));
                }
                start = i + 1;
            }
        }
        let rest = &data[start..];
        let room = (MAX_LINE + 1).saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&rest[..rest.len().min(room)]);
        Ok(())
    }
}

/// RFC 3339, or the `YYYY-MM-DD HH:MM:SS[.f]` form (read as UTC).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|n| n.and_utc())
}

#[cfg(test)]
mod tests;
