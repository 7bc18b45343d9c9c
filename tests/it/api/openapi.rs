//! `docs/openapi.json`: the served OpenAPI document, committed so that every
//! API change shows in review as a diff of that file. Pretty-printed in the
//! order it is served (utoipa keeps the code's order). `info.version` is
//! written as the package's version, so a build with another
//! `ARASUL_VERSION` (the .deb tests) still matches.
//!
//! After an intended API change:
//! `UPDATE_OPENAPI=1 cargo nextest run --test it -E 'test(openapi_snapshot)'`

use std::fmt::Write as _;
use std::path::PathBuf;

use axum::http::StatusCode;
use serde_json::Value;

use super::{call, get, json};

const REGENERATE: &str = "UPDATE_OPENAPI=1 cargo nextest run --test it -E 'test(openapi_snapshot)'";
/// How many differences the failure lists.
const SHOWN: usize = 20;

fn snapshot_path() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
}

#[tokio::test]
async fn openapi_snapshot_in_docs_matches_the_served_document() {
    let (status, _, body) = call(get("/api/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    let served = snapshot_text(&body);
    let path = snapshot_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &served).unwrap();
        eprintln!("wrote {} ({} bytes)", path.display(), served.len());
        return;
    }
    let committed = std::fs::read_to_string(&path);
    if committed.as_deref().ok() == Some(served.as_str()) {
        return;
    }
    let listed = what_differs(committed, &served);
    panic!(
        "{} differs from the served /api/openapi.json:\n{listed}\
         If the API change is intended, regenerate the file and commit it:\n  {REGENERATE}",
        path.display()
    );
}

/// The failure's list: what the committed file (or reading it) has that the
/// served document does not, and the other way round.
fn what_differs(committed: std::io::Result<String>, served: &str) -> String {
    match committed.map(|c| serde_json::from_str::<Value>(&c)) {
        Err(e) => format!("  the file cannot be read ({e})\n"),
        Ok(Err(e)) => format!("  the file is not JSON ({e})\n"),
        Ok(Ok(old)) => {
            let mut found = Vec::new();
            differences(
                &old,
                &json(served.as_bytes()),
                &mut String::new(),
                &mut found,
            );
            if found.is_empty() {
                "  the same content; only the key order or the formatting differs\n".to_owned()
            } else {
                let mut s = format!(
                    "  {} difference(s) (- only in the file, + only served, ~ changed):\n",
                    found.len()
                );
                for d in found.iter().take(SHOWN) {
                    let _ = writeln!(s, "    {d}");
                }
                if found.len() > SHOWN {
                    let _ = writeln!(s, "    … and {} more", found.len() - SHOWN);
                }
                s
            }
        }
    }
}

/// The served bytes as the committed file holds them: `info.version` set to
/// the package's, pretty-printed in the served order.
fn snapshot_text(body: &[u8]) -> String {
    let compact = std::str::from_utf8(body).expect("the document is UTF-8");
    let doc = json(body);
    let pkg = env!("CARGO_PKG_VERSION");
    let compact = match doc["info"]["version"].as_str() {
        Some(v) if v != pkg => compact.replacen(
            &format!("\"version\":{}", Value::from(v)),
            &format!("\"version\":{}", Value::from(pkg)),
            1,
        ),
        _ => compact.to_owned(),
    };
    let text = pretty(&compact);
    let reread: Value = serde_json::from_str(&text).expect("the pretty form is JSON");
    assert_eq!(reread["info"]["version"], pkg);
    let mut expected = doc;
    expected["info"]["version"] = Value::from(pkg);
    assert_eq!(reread, expected, "pretty-printing changed the document");
    text
}

/// Indents compact JSON (as `serde_json::to_vec` writes it: no whitespace
/// outside strings) the way `serde_json::to_string_pretty` does, keeping the
/// key order, which a `Value` round trip would sort.
fn pretty(compact: &str) -> String {
    fn newline(out: &mut String, depth: usize) {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    }
    let mut out = String::with_capacity(compact.len() * 2);
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut chars = compact.chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                if let Some(close) = chars.next_if(|n| matches!(n, '}' | ']')) {
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth -= 1;
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            _ => out.push(c),
        }
    }
    out.push('\n');
    out
}

/// Where `old` and `new` differ, as `- path`, `+ path` and `~ path: a → b`
/// lines (paths like `paths["/api/health"].get.responses`).
fn differences(old: &Value, new: &Value, path: &mut String, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let len = path.len();
                push_key(path, k);
                match b.get(k) {
                    Some(w) => differences(v, w, path, out),
                    None => out.push(format!("- {path}")),
                }
                path.truncate(len);
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                let len = path.len();
                push_key(path, k);
                out.push(format!("+ {path}"));
                path.truncate(len);
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                let _ = write!(path, "[{i}]");
                differences(v, w, path, out);
                path.truncate(len);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            out.push(format!("~ {path}: {} → {} items", a.len(), b.len()))
        }
        _ if old != new => out.push(format!("~ {path}: {} → {}", short(old), short(new))),
        _ => {}
    }
}

fn push_key(path: &mut String, key: &str) {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        let _ = write!(path, "[{}]", Value::from(key));
    }
}

/// A value for one line of the failure: at most 60 characters.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

#[test]
fn the_snapshot_printer_indents_like_serde_json_and_keeps_the_order() {
    // Sorted keys: exactly what serde_json's pretty printer (which sorts
    // through `Value`) writes, strings with escapes and brackets included.
    let compact = r#"{"a":{},"b":[1,{"a":[],"z":"a,b:{c}\"]"}],"c":null}"#;
    let value: Value = serde_json::from_str(compact).unwrap();
    assert_eq!(
        pretty(compact),
        serde_json::to_string_pretty(&value).unwrap() + "\n"
    );
    // Unsorted keys stay in their order.
    assert_eq!(
        pretty(r#"{"z":1,"a":[2]}"#),
        "{\n  \"z\": 1,\n  \"a\": [\n    2\n  ]\n}\n"
    );
}

#[test]
fn the_snapshot_failure_names_what_was_added_removed_and_changed() {
    let old: Value = serde_json::json!({"paths": {"/api/a": {"get": {"summary": "A"}}, "/api/gone": {}}, "tags": [1, 2]});
    let new: Value = serde_json::json!({"paths": {"/api/a": {"get": {"summary": "B"}}, "/api/new": {}}, "tags": [1]});
    let mut found = Vec::new();
    differences(&old, &new, &mut String::new(), &mut found);
    assert_eq!(
        found,
        [
            r#"~ paths["/api/a"].get.summary: "A" → "B""#,
            r#"- paths["/api/gone"]"#,
            r#"+ paths["/api/new"]"#,
            "~ tags: 2 → 1 items",
        ]
    );
}
