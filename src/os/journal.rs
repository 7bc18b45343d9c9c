//! Logging to journald over its native protocol when systemd connected our
//! stdout or stderr to the journal: each entry carries its PRIORITY (so
//! `journalctl -p warning` works) and its fields as journal fields, and only
//! journald's time stamp. Owns the journal socket; it does not decide what
//! is logged (main's filter does) nor write the JSON log file.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber, span};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// journald's socket for native entries.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// A field value longer than this is cut: journald's own line limit is
/// 48 KiB, and a datagram must stay well under the socket's buffer.
const MAX_VALUE: usize = 32 * 1024;

/// Whether `fd` is the journal stream `$JOURNAL_STREAM` names (`DEV:INODE`
/// in decimal, systemd.exec(5)). The variable alone is not enough: a child
/// may inherit it with other stdio.
pub fn is_journal_stream(journal_stream: Option<&str>, fd: impl AsFd) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(parse_journal_stream) else {
        return false;
    };
    rustix::fs::fstat(fd).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

fn parse_journal_stream(v: &str) -> Option<(u64, u64)> {
    let (dev, ino) = v.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The syslog priority of a level: error 3, warning 4, info 6, debug and
/// trace 7.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Sends every event to journald as one entry: MESSAGE is the line the
/// stdout format would print (spans, message, `key=value` fields, no time);
/// PRIORITY, SYSLOG_IDENTIFIER, TARGET, CODE_FILE and CODE_LINE; and each
/// field of the event and its spans as `F_<NAME>` (tracing-journald's names).
pub struct JournalLayer {
    socket: UnixDatagram,
    path: PathBuf,
    identifier: String,
}

impl JournalLayer {
    /// Fails when nothing listens at `path` (an empty datagram, which
    /// journald discards, is sent to find out).
    pub fn connect(path: &Path, identifier: &str) -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.send_to(&[], path)?;
        Ok(JournalLayer {
            socket,
            path: path.to_path_buf(),
            identifier: identifier.to_string(),
        })
    }
}

/// A span's fields, formatted (for MESSAGE) and as journal fields.
struct SpanFields {
    text: String,
    fields: Vec<(String, String)>,
}

impl<S> Layer<S> for JournalLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = SpanFields {
            text: format_fields(attrs),
            fields: Vec::new(),
        };
        attrs.record(&mut Collect(&mut fields.fields));
        span.extensions_mut().insert(fields);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        if let Some(f) = ext.get_mut::<SpanFields>() {
            let more = format_fields(values);
            if !more.is_empty() {
                if !f.text.is_empty() {
                    f.text.push(' ');
                }
                f.text.push_str(&more);
            }
            values.record(&mut Collect(&mut f.fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut message = String::new();
        let mut fields = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                message.push_str(span.name());
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    if !f.text.is_empty() {
                        let _ = write!(message, "{{{}}}", f.text);
                    }
                    fields.extend(f.fields.iter().cloned());
                }
                message.push(':');
            }
            message.push(' ');
        }
        message.push_str(&format_fields(event));
        event.record(&mut Collect(&mut fields));

        let mut entry = Vec::with_capacity(256 + message.len());
        put(&mut entry, "PRIORITY", &priority(meta.level()).to_string());
        put(&mut entry, "SYSLOG_IDENTIFIER", &self.identifier);
        put(&mut entry, "MESSAGE", &message);
        put(&mut entry, "TARGET", meta.target());
        if let Some(file) = meta.file() {
            put(&mut entry, "CODE_FILE", file);
        }
        if let Some(line) = meta.line() {
            put(&mut entry, "CODE_LINE", &line.to_string());
        }
        for (name, value) in &fields {
            put(&mut entry, name, value);
        }
        if self.socket.send_to(&entry, &self.path).is_err() {
            // journald went away: the stream systemd gave us still reaches
            // the journal (or whoever reads it), with the priority as prefix.
            let _ = writeln!(io::stderr(), "<{}>{message}", priority(meta.level()));
        }
    }
}

fn format_fields(fields: impl RecordFields) -> String {
    let mut text = String::new();
    let _ = DefaultFields::new().format_fields(Writer::new(&mut text), fields);
    text
}

/// Collects every field but `message` as `(F_NAME, value)`.
struct Collect<'a>(&'a mut Vec<(String, String)>);

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() != "message" {
            self.0.push((journal_name(field.name()), value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() != "message" {
            self.0
                .push((journal_name(field.name()), format!("{value:?}")));
        }
    }
}

/// `F_` and the field's name in journald's alphabet (A–Z, 0–9, `_`; at most
/// 64 characters).
fn journal_name(field: &str) -> String {
    let mut name = String::from("F_");
    name.extend(field.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    name.truncate(64);
    name
}

/// One field in the native protocol: `NAME=value\n`, or for a value with a
/// newline `NAME\n`, its length as a little-endian u64, the value, `\n`.
fn put(entry: &mut Vec<u8>, name: &str, value: &str) {
    let value = cut(value);
    entry.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }
    entry.extend_from_slice(value.as_bytes());
    entry.push(b'\n');
}

fn cut(value: &str) -> &str {
    if value.len() <= MAX_VALUE {
        return value;
    }
    let mut end = MAX_VALUE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;
    use tracing_subscriber::layer::SubscriberExt;

    /// Parses datagrams in the native protocol into name → values.
    fn parse(mut d: &[u8]) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        while !d.is_empty() {
            let nl = d.iter().position(|&b| b == b'\n').unwrap();
            let line = &d[..nl];
            let (name, value, rest) = match line.iter().position(|&b| b == b'=') {
                Some(eq) => (&line[..eq], &line[eq + 1..], &d[nl + 1..]),
                None => {
                    let len = u64::from_le_bytes(d[nl + 1..nl + 9].try_into().unwrap()) as usize;
                    let value = &d[nl + 9..nl + 9 + len];
                    assert_eq!(d[nl + 9 + len], b'\n');
                    (line, value, &d[nl + 10 + len..])
                }
            };
            out.entry(String::from_utf8(name.to_vec()).unwrap())
                .or_default()
                .push(String::from_utf8(value.to_vec()).unwrap());
            d = rest;
        }
        out
    }

    fn receive(sock: &UnixDatagram) -> BTreeMap<String, Vec<String>> {
        let mut buf = vec![0u8; 256 * 1024];
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = sock.recv(&mut buf).unwrap();
        parse(&buf[..n])
    }

    #[test]
    fn entries_carry_priority_the_full_line_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let journal = UnixDatagram::bind(&path).unwrap();
        let layer = JournalLayer::connect(&path, "arasuld").unwrap();
        assert!(
            receive(&journal).is_empty(),
            "the probe is an empty datagram"
        );
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("worker", name = "healing");
            let _in = span.enter();
            tracing::warn!(error = "no route\nto host", retry_in = ?Duration::from_secs(2), "database unreachable");
            tracing::info!("started");
        });
        let warn = receive(&journal);
        assert_eq!(warn["PRIORITY"], ["4"]);
        assert_eq!(warn["SYSLOG_IDENTIFIER"], ["arasuld"]);
        assert_eq!(
            warn["MESSAGE"],
            [
                "worker{name=\"healing\"}: database unreachable error=\"no route\\nto host\" retry_in=2s"
            ]
        );
        assert_eq!(
            warn["F_ERROR"],
            ["no route\nto host"],
            "binary encoding keeps the newline"
        );
        assert_eq!(warn["F_RETRY_IN"], ["2s"]);
        assert_eq!(
            warn["F_NAME"],
            ["healing"],
            "span fields are journal fields too"
        );
        assert_eq!(warn["TARGET"], [module_path!()]);
        assert_eq!(warn["CODE_FILE"], [file!()]);
        let info = receive(&journal);
        assert_eq!(info["PRIORITY"], ["6"]);
        assert_eq!(info["MESSAGE"], ["worker{name=\"healing\"}: started"]);
    }

    #[test]
    fn connecting_fails_when_no_journal_listens() {
        let dir = tempfile::tempdir().unwrap();
        assert!(JournalLayer::connect(&dir.path().join("socket"), "arasuld").is_err());
    }

    #[test]
    fn journal_stream_must_name_the_descriptor_itself() {
        let file = tempfile::tempfile().unwrap();
        let st = rustix::fs::fstat(&file).unwrap();
        let mine = format!("{}:{}", st.st_dev, st.st_ino);
        assert!(is_journal_stream(Some(&mine), &file));
        let other = format!("{}:{}", st.st_dev, st.st_ino + 1);
        assert!(!is_journal_stream(Some(&other), &file));
        assert!(!is_journal_stream(None, &file));
        assert!(!is_journal_stream(Some("garbage"), &file));
        assert!(!is_journal_stream(Some(""), &file));
    }

    #[test]
    fn names_and_values_fit_journald() {
        assert_eq!(journal_name("retry_in"), "F_RETRY_IN");
        assert_eq!(journal_name("a.b-c"), "F_A_B_C");
        assert_eq!(journal_name(&"x".repeat(100)).len(), 64);
        let long = "é".repeat(MAX_VALUE);
        let mut entry = Vec::new();
        put(&mut entry, "MESSAGE", &long);
        assert!(entry.len() <= MAX_VALUE + "MESSAGE=\n".len());
        assert!(
            std::str::from_utf8(&entry).is_ok(),
            "cut on a char boundary"
        );
    }
}
