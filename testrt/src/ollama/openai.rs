//! Ollama's OpenAI-compatible API (`/v1/models`, `/v1/chat/completions`,
//! `/v1/embeddings`) as Ollama serves it: the models, answers and vectors
//! of the native API in OpenAI's shapes, so the official `openai` clients
//! work against testrt. Same checks, same token pacing, same request log.

use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{
    Answer, App, chat_prompt, dimensions, normalise_name, not_found, str_field, texts, token_count,
    vectors,
};
use crate::http::{SseStream, write_json};
use crate::util::{DEFAULT_KEEP_ALIVE, base64_encode, percent_decode};

/// What Ollama puts in `system_fingerprint`.
const FINGERPRINT: &str = "fp_ollama";

/// OpenAI's error shape. The type follows the status, as Ollama's
/// `openai.NewError` sets it.
pub(super) fn error(status: u16, message: impl Into<String>) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        404 => "not_found_error",
        _ => "api_error",
    };
    json!({"error": {"message": message.into(), "type": kind, "param": null, "code": null}})
}

fn write_error<W: Write>(w: &mut W, status: u16, message: impl Into<String>) -> io::Result<u16> {
    write_json(w, status, &error(status, message))?;
    Ok(status)
}

/// `/v1/models/{name}` → the name, percent-decoded (a client may escape the
/// `:` of a tag); `None` for any other path.
pub(super) fn model_path(path: &str) -> Option<String> {
    path.strip_prefix("/v1/models/")
        .filter(|n| !n.is_empty())
        .map(percent_decode)
}

/// `owned_by`: the name's namespace, as Ollama reports it ("library" for
/// the official models, "user" for `user/model:tag`).
fn owned_by(name: &str) -> String {
    let path = name.split('@').next().unwrap_or(name);
    let parts: Vec<&str> = path.split('/').collect();
    match parts.len() {
        0 | 1 => "library".into(),
        n => parts[n - 2].to_string(),
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn model_object(id: &str, created: SystemTime) -> Value {
    json!({"id": id, "object": "model", "created": unix_secs(created), "owned_by": owned_by(id)})
}

/// OpenAI messages → Ollama's, as Ollama converts them: a content made of
/// parts becomes one message per part (an image part carries no text here);
/// a message without content is only valid with tool calls.
fn flatten_messages(msgs: &[Value]) -> Result<Vec<Value>, String> {
    let mut out = Vec::with_capacity(msgs.len());
    for m in msgs {
        let role = m.get("role").cloned().unwrap_or(Value::Null);
        let msg = |content: &str| json!({"role": role, "content": content});
        match m.get("content") {
            Some(Value::String(c)) => out.push(msg(c)),
            Some(Value::Array(parts)) => {
                for p in parts {
                    match p.get("type").and_then(Value::as_str) {
                        Some("text") => match p.get("text").and_then(Value::as_str) {
                            Some(t) => out.push(msg(t)),
                            None => return Err("invalid message format".into()),
                        },
                        Some("image_url") => out.push(msg("")),
                        _ => return Err("invalid message format".into()),
                    }
                }
            }
            _ if m.get("tool_calls").is_some_and(Value::is_array) => out.push(msg("")),
            None | Some(Value::Null) => {
                return Err("invalid message content type: <nil>".into());
            }
            Some(_) => return Err("invalid message content type".into()),
        }
    }
    Ok(out)
}

/// The little-endian bytes of `v` in base64: OpenAI's
/// `encoding_format: "base64"` (the `openai` Python client's default).
pub fn floats_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64_encode(&bytes)
}

impl App {
    /// `GET /v1/models`: the installed models.
    pub(super) fn openai_models(&self) -> Value {
        let st = self.state();
        let data: Vec<Value> = st
            .installed
            .iter()
            .map(|(name, m)| model_object(name, m.modified_at))
            .collect();
        json!({"object": "list", "data": data})
    }

    /// `GET /v1/models/{name}`: one model, its id as asked (as Ollama does).
    pub(super) fn openai_model<W: Write>(
        &self,
        name: &str,
        w: &mut W,
        head: bool,
    ) -> io::Result<u16> {
        let modified = self
            .state()
            .installed
            .get(&normalise_name(name))
            .map(|m| m.modified_at);
        match modified {
            Some(t) => self.json(w, 200, &model_object(name, t), head),
            None => self.json(
                w,
                404,
                &error(404, format!("model '{name}' not found")),
                head,
            ),
        }
    }

    /// `POST /v1/chat/completions`: the `/api/chat` answer, whole or as
    /// server-sent `chat.completion.chunk` events ending in `[DONE]`.
    pub(super) fn openai_chat<W: Write>(&self, body: &Value, w: &mut W) -> io::Result<u16> {
        let msgs = match body.get("messages") {
            Some(Value::Array(a)) if !a.is_empty() => a,
            None | Some(Value::Null | Value::Array(_)) => {
                return write_error(w, 400, "[] is too short - 'messages'");
            }
            Some(_) => return write_error(w, 400, "messages must be an array"),
        };
        let msgs = match flatten_messages(msgs) {
            Ok(m) => m,
            Err(e) => return write_error(w, 400, e),
        };
        let raw = match self.generation_model(body, "chat") {
            Ok(raw) => raw,
            Err((status, e)) => return write_error(w, status, e),
        };
        let max_tokens = match body.get("max_tokens") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_i64() {
                Some(n) => Some(n),
                None => return write_error(w, 400, "max_tokens must be an integer"),
            },
        };
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let include_usage = body
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false);

        // The OpenAI API has no keep_alive: Ollama's default applies.
        self.keep(raw, DEFAULT_KEEP_ALIVE);
        let a = Answer::new(raw, &chat_prompt(&msgs), max_tokens);
        let id = format!("chatcmpl-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let created = unix_secs(SystemTime::now());
        let completion_tokens = a.tokens.len() as u64;
        let usage = json!({
            "prompt_tokens": a.prompt_eval_count,
            "completion_tokens": completion_tokens,
            "total_tokens": a.prompt_eval_count + completion_tokens,
        });

        if !stream {
            let v = json!({
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": raw,
                "system_fingerprint": FINGERPRINT,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": a.tokens.concat()},
                    "finish_reason": a.done_reason,
                }],
                "usage": usage,
            });
            write_json(w, 200, &v)?;
            return Ok(200);
        }

        let chunk = |content: &str, finish: Value| {
            json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": raw,
                "system_fingerprint": FINGERPRINT,
                "choices": [{
                    "index": 0,
                    "delta": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                }],
            })
        };
        let mut s = SseStream::start(w, 200)?;
        for (i, t) in a.tokens.iter().enumerate() {
            self.pace(i);
            s.send(&chunk(t, Value::Null))?;
        }
        s.send(&chunk("", json!(a.done_reason)))?;
        if include_usage {
            let mut u = chunk("", Value::Null);
            u["choices"] = json!([]);
            u["usage"] = usage;
            s.send(&u)?;
        }
        s.data("[DONE]")?;
        s.finish()?;
        Ok(200)
    }

    /// `POST /v1/embeddings`: the `/api/embed` vectors, as floats or base64.
    pub(super) fn openai_embeddings<W: Write>(&self, body: &Value, w: &mut W) -> io::Result<u16> {
        let base64 = match body.get("encoding_format") {
            None | Some(Value::Null) => false,
            Some(Value::String(f)) if f.is_empty() || f.eq_ignore_ascii_case("float") => false,
            Some(Value::String(f)) if f.eq_ignore_ascii_case("base64") => true,
            Some(f) => {
                let f = f.as_str().map_or_else(|| f.to_string(), str::to_string);
                let e = format!(
                    "Invalid value for 'encoding_format' = {f}. Supported values: ['float', 'base64']."
                );
                return write_error(w, 400, e);
            }
        };
        let inputs = match body.get("input") {
            None | Some(Value::Null) => return write_error(w, 400, "invalid input"),
            Some(Value::Array(a)) if a.is_empty() => return write_error(w, 400, "invalid input"),
            v => match texts(v) {
                Ok(t) => t,
                Err(e) => return write_error(w, 400, e),
            },
        };
        let Some(raw) = str_field(body, &["model"]) else {
            return write_error(w, 400, "model is required");
        };
        if !self.is_installed(raw) {
            return write_error(w, 404, not_found(raw));
        }
        let dim = match dimensions(body) {
            Ok(d) => d,
            Err(e) => return write_error(w, 400, e),
        };
        self.keep(raw, DEFAULT_KEEP_ALIVE);
        let data: Vec<Value> = vectors(&inputs, dim)
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let embedding = if base64 {
                    json!(floats_base64(v))
                } else {
                    json!(v)
                };
                json!({"object": "embedding", "embedding": embedding, "index": i})
            })
            .collect();
        let tokens = token_count(&inputs);
        let v = json!({
            "object": "list",
            "data": data,
            "model": raw,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        });
        write_json(w, 200, &v)?;
        Ok(200)
    }
}
