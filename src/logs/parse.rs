//! One raw line → [`LogLine`]. JSON lines first (the daemon's tracing
//! layer: `timestamp`, `level`, `fields.message`; the self-healing trail:
//! `at`, `severity`, `description`; common keys of other writers), then
//! plain text, best effort: a leading timestamp and a level word are picked
//! up when present, else both are null and the message is the line.

use serde_json::{Map, Value};

use super::{Level, LogLine, Source, parse_time};

const TIME_KEYS: [&str; 4] = ["timestamp", "ts", "time", "at"];
const LEVEL_KEYS: [&str; 3] = ["level", "severity", "lvl"];
const MESSAGE_KEYS: [&str; 4] = ["message", "msg", "description", "step"];
/// Top-level keys never repeated as `key=value` after the message.
const SKIPPED_KEYS: [&str; 5] = ["fields", "span", "spans", "target", "id"];

pub fn parse_line(source: Source, raw: &str) -> LogLine {
    let trimmed = raw.trim();
    if trimmed.starts_with('{')
        && let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(trimmed)
    {
        return from_json(source, raw, &obj);
    }
    from_text(source, raw)
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The first of `keys` that holds a string, with that string.
fn first_str<'a>(
    obj: &'a Map<String, Value>,
    keys: &[&'static str],
) -> Option<(&'static str, &'a str)> {
    keys.iter()
        .find_map(|k| obj.get(*k).and_then(Value::as_str).map(|v| (*k, v)))
}

fn from_json(source: Source, raw: &str, obj: &Map<String, Value>) -> LogLine {
    let ts_key = first_str(obj, &TIME_KEYS);
    let level_key = first_str(obj, &LEVEL_KEYS);
    let ts = ts_key.and_then(|(_, v)| super::parse_time(v));
    let level = level_key.and_then(|(_, v)| Level::parse(v));
    let mut extra: Vec<String> = Vec::new();
    // tracing's JSON layer: the event's fields sit under `fields`.
    let fields = obj.get("fields").and_then(Value::as_object);
    let mut message = fields
        .and_then(|f| f.get("message"))
        .and_then(scalar)
        .map(|m| (m, "fields.message"));
    if let Some(f) = fields {
        for (k, v) in f {
            if k == "message" {
                continue;
            }
            extra.push(format!(
                "{k}={}",
                scalar(v).unwrap_or_else(|| v.to_string())
            ));
        }
    }
    if message.is_none() {
        message = MESSAGE_KEYS
            .iter()
            .find_map(|k| obj.get(*k).and_then(scalar).map(|m| (m, *k)));
    }
    let used = [
        ts_key.map(|(k, _)| k),
        level_key.map(|(k, _)| k),
        message.as_ref().map(|(_, k)| *k),
    ];
    for (k, v) in obj {
        if used.contains(&Some(k.as_str())) || SKIPPED_KEYS.contains(&k.as_str()) {
            continue;
        }
        if let Some(s) = scalar(v) {
            extra.push(format!("{k}={s}"));
        }
    }
    let mut message = message.map(|(m, _)| m).unwrap_or_default();
    for e in extra {
        if !message.is_empty() {
            message.push(' ');
        }
        message.push_str(&e);
    }
    LogLine {
        source,
        ts,
        level,
        message,
        raw: raw.to_owned(),
    }
}

/// `2026-01-01T10:00:00Z ERROR text`, `2026-01-01 10:00:00 [warn] text`,
/// `[2026-01-01T10:00:00Z] INFO: text`, `WARN text`, or anything else.
fn from_text(source: Source, raw: &str) -> LogLine {
    let mut rest = raw.trim();
    let mut ts = None;
    let token = |s: &str| -> (String, usize) {
        let end = s.find(char::is_whitespace).unwrap_or(s.len());
        (s[..end].to_string(), end)
    };
    let clean = |t: &str| {
        t.trim_matches(|c| c == '[' || c == ']' || c == ':' || c == '<' || c == '>')
            .to_string()
    };
    // A timestamp as one token, or as a date and a time token.
    let (t1, e1) = token(rest);
    if let Some(t) = parse_time(&clean(&t1)) {
        ts = Some(t);
        rest = rest[e1..].trim_start();
    } else if let Some(after) = rest.get(e1..) {
        let (t2, e2) = token(after.trim_start());
        let both = format!("{} {}", clean(&t1), clean(&t2));
        if let Some(t) = parse_time(&both) {
            ts = Some(t);
            let skip = after.len() - after.trim_start().len();
            rest = after[skip + e2..].trim_start();
        }
    }
    let (t, e) = token(rest);
    let level = Level::parse(&clean(&t));
    if level.is_some() {
        rest = rest[e..].trim_start();
    }
    LogLine {
        source,
        ts,
        level,
        message: rest.to_string(),
        raw: raw.to_owned(),
    }
}
