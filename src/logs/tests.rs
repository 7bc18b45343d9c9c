use std::io::Write;
use std::sync::{Arc, Mutex};

use super::*;

/// A `MakeWriter` collecting what tracing's JSON layer writes.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = Sink;
    fn make_writer(&'a self) -> Sink {
        self.clone()
    }
}

#[test]
fn lines_of_the_daemons_own_json_layer_are_parsed() {
    // The same layer `main::init_logging` installs for logging.json_file.
    let sink = Sink::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(sink.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(service = "llm", attempt = 3, "restart failed");
    });
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let raw = text.lines().next().expect("one line written");
    let line = parse_line(Source::System, raw);
    assert_eq!(line.level, Some(Level::Warn), "{raw}");
    let ts = line.ts.expect("timestamp parsed");
    assert!((Utc::now() - ts).num_seconds().abs() < 60, "{ts}");
    assert!(
        line.message.starts_with("restart failed"),
        "{}",
        line.message
    );
    assert!(line.message.contains("service=llm"), "{}", line.message);
    assert!(line.message.contains("attempt=3"), "{}", line.message);
    assert_eq!(line.raw, raw);
}

#[test]
fn self_healing_trail_lines_are_parsed() {
    use crate::healing::record::{Category, EventKind, Severity};
    let rec = crate::healing::record::HealingRecord {
        id: None,
        at: "2026-03-01T10:00:00Z".parse().unwrap(),
        event_type: EventKind::ServiceFailed,
        severity: Severity::Critical,
        category: Some(Category::A),
        service: Some("llm".into()),
        description: "gave up on llm".into(),
        action: None,
        result: "recorded".into(),
        duration_ms: None,
    };
    let raw = serde_json::to_string(&rec).unwrap();
    let line = parse_line(Source::SelfHealing, &raw);
    assert_eq!(line.ts, Some(rec.at));
    assert_eq!(line.level, Some(Level::Error));
    assert!(
        line.message.starts_with("gave up on llm"),
        "{}",
        line.message
    );
    assert!(line.message.contains("event_type=service_failed"));
    assert!(line.message.contains("service=llm"));
    let warn = raw.replace("CRITICAL", "WARNING");
    assert_eq!(
        parse_line(Source::SelfHealing, &warn).level,
        Some(Level::Warn)
    );
}

#[test]
fn plain_text_is_parsed_best_effort() {
    let l = parse_line(
        Source::Update,
        "2026-03-01T10:00:00Z ERROR image load failed",
    );
    assert_eq!(l.ts, Some("2026-03-01T10:00:00Z".parse().unwrap()));
    assert_eq!(l.level, Some(Level::Error));
    assert_eq!(l.message, "image load failed");

    let l = parse_line(Source::Update, "2026-03-01 10:00:05 [warn] slow disk");
    assert_eq!(l.ts, Some("2026-03-01T10:00:05Z".parse().unwrap()));
    assert_eq!(l.level, Some(Level::Warn));
    assert_eq!(l.message, "slow disk");

    let l = parse_line(Source::UpdateUsb, "copying bundle from /media/usb");
    assert_eq!((l.ts, l.level), (None, None));
    assert_eq!(l.message, "copying bundle from /media/usb");

    // Broken JSON is text, not an error.
    let l = parse_line(Source::System, "{\"level\":\"INFO\", trunc");
    assert_eq!(l.level, None);
    assert_eq!(l.raw, "{\"level\":\"INFO\", trunc");
}

#[test]
fn minimum_level_filter() {
    assert!(Level::Error.at_least(Level::Warn));
    assert!(Level::Warn.at_least(Level::Warn));
    assert!(!Level::Info.at_least(Level::Warn));
    let mut l = parse_line(Source::Update, "no level here");
    assert!(l.passes(None));
    assert!(!l.passes(Some(Level::Trace)));
    l.level = Some(Level::Debug);
    assert!(l.passes(Some(Level::Trace)) && !l.passes(Some(Level::Info)));
}

#[test]
fn sources_are_a_closed_set() {
    assert_eq!(Source::parse("self-healing"), Some(Source::SelfHealing));
    assert_eq!(Source::parse("UPDATE_USB"), Some(Source::UpdateUsb));
    assert_eq!(Source::parse("../etc/passwd"), None);
    assert_eq!(Source::parse("system.log"), None);
    let dir = Path::new("/var/log/arasul");
    assert_eq!(
        Source::Update.path(dir, Some(Path::new("/x/sys.json"))),
        dir.join("update.log")
    );
    assert_eq!(
        Source::System.path(dir, Some(Path::new("/x/sys.json"))),
        Path::new("/x/sys.json")
    );
}

fn write_lines(path: &Path, from: usize, to: usize) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut s = String::new();
    for i in from..to {
        s.push_str(&format!("line {i}\n"));
    }
    f.write_all(s.as_bytes()).unwrap();
}

#[test]
fn reverse_lines_cross_chunk_boundaries_and_skip_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    // Lines of varied length so boundaries fall everywhere.
    let mut text = String::new();
    for i in 0..20_000 {
        text.push_str(&format!("{i} {}\n", "x".repeat(i % 97)));
        if i % 1000 == 0 {
            text.push('\n');
        }
    }
    text.push_str("no newline at end");
    std::fs::write(&p, &text).unwrap();
    let got: Vec<String> = RevLines::open(&p)
        .unwrap()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut want: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    want.reverse();
    assert_eq!(got, want);
    assert!(
        RevLines::open(&dir.path().join("missing"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn an_overlong_line_keeps_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.log");
    let long = format!("START{}", "y".repeat(3 * MAX_LINE));
    std::fs::write(&p, format!("first\n{long}\nlast\n")).unwrap();
    let got: Vec<String> = RevLines::open(&p)
        .unwrap()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], "last");
    assert!(got[1].starts_with("START") && got[1].len() == MAX_LINE);
    assert_eq!(got[2], "first");
}

#[test]
fn follower_survives_rename_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.log");
    write_lines(&p, 0, 3);
    let mut f = Follower::at_end(p.clone());
    assert!(f.poll().unwrap().is_empty(), "old lines are not replayed");

    write_lines(&p, 3, 5);
    // A line without its newline yet waits for it.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .unwrap()
        .write_all(b"line 5 par")
        .unwrap();
    assert_eq!(f.poll().unwrap(), ["line 3", "line 4"]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .unwrap()
        .write_all(b"t\n")
        .unwrap();
    assert_eq!(f.poll().unwrap(), ["line 5 part"]);

    // Rotation by rename: the rest of the old file, then the new one.
    write_lines(&p, 6, 7);
    std::fs::rename(&p, dir.path().join("f.log.1")).unwrap();
    write_lines(&dir.path().join("f.log.1"), 7, 8);
    assert_eq!(f.poll().unwrap(), ["line 6", "line 7"]);
    write_lines(&p, 8, 10);
    assert_eq!(f.poll().unwrap(), ["line 8", "line 9"]);

    // copytruncate: the file shrinks in place.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    assert!(f.poll().unwrap().is_empty());
    write_lines(&p, 10, 11);
    assert_eq!(f.poll().unwrap(), ["line 10"]);

    // A file that does not exist yet is read from its start once created.
    let q = dir.path().join("later.log");
    let mut g = Follower::at_end(q.clone());
    assert!(g.poll().unwrap().is_empty());
    write_lines(&q, 0, 2);
    assert_eq!(g.poll().unwrap(), ["line 0", "line 1"]);
}

#[test]
fn tail_and_search_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("u.log");
    std::fs::write(
        &p,
        "2026-01-01T00:00:00Z INFO a Needle\n2026-01-01T00:00:01Z ERROR b\n\
         2026-01-01T00:00:02Z WARN c NEEDLE\nplain needle\n2026-01-01T00:00:03Z DEBUG d\n",
    )
    .unwrap();
    let t = tail(Source::Update, &p, 2, Some(Level::Warn)).unwrap();
    let msgs: Vec<&str> = t.lines.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(msgs, ["b", "c NEEDLE"]);
    assert!(!t.truncated);
    let s = search(Source::Update, &p, "needle", 10).unwrap();
    let raws: Vec<&str> = s.lines.iter().map(|l| l.raw.as_str()).collect();
    assert_eq!(
        raws,
        [
            "plain needle",
            "2026-01-01T00:00:02Z WARN c NEEDLE",
            "2026-01-01T00:00:00Z INFO a Needle"
        ]
    );
    assert_eq!(
        search(Source::Update, &p, "NEEDLE", 1).unwrap().lines.len(),
        1
    );
    let missing = tail(Source::Update, &dir.path().join("nope"), 5, None).unwrap();
    assert!(missing.lines.is_empty());
}

#[test]
fn list_names_every_source_even_before_its_file_exists() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("self_healing.log"), "{}\n").unwrap();
    let l = list(dir.path(), None);
    assert_eq!(l.len(), 4);
    let sh = l.iter().find(|f| f.source == Source::SelfHealing).unwrap();
    assert!(sh.exists && sh.size == 3 && sh.modified.is_some());
    let up = l.iter().find(|f| f.source == Source::UpdateUsb).unwrap();
    assert!(!up.exists && up.size == 0 && up.modified.is_none());
}

#[test]
fn a_tail_reads_only_the_end_of_a_big_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.log");
    write_lines(&p, 0, 400_000); // ~4.6 MB
    let t = tail(Source::Update, &p, 100, None).unwrap();
    assert_eq!(t.lines.len(), 100);
    assert_eq!(t.lines[99].message, "line 399999");
    assert_eq!(t.lines[0].message, "line 399900");
    assert_eq!(t.scanned, CHUNK as u64, "one 64 KiB step is enough");
    // A filter nothing passes reads back to the start (within MAX_SCAN).
    let size = std::fs::metadata(&p).unwrap().len();
    assert!(size > 4 * 1024 * 1024);
    let t = tail(Source::Update, &p, 10, Some(Level::Error)).unwrap();
    assert!(t.lines.is_empty() && !t.truncated);
    assert_eq!(t.scanned, size);
}
