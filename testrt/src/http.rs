//! A minimal HTTP/1.1 request reader and response writers: enough for JSON
//! clients (reqwest/hyper, curl, the `openai` Python client). Every response
//! closes the connection (a WebSocket upgrade keeps it: see `ws`).

use std::io::{self, BufRead, Read, Write};

/// Largest request head (request line + headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Query string without the `?`, empty when there is none.
    pub query: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The headers as a JSON object (names lower-cased; a repeated header's
    /// values joined with ", ", as HTTP allows), so a test can see what a
    /// proxy forwarded.
    pub fn header_map(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.headers {
            match m.get_mut(k) {
                Some(serde_json::Value::String(prev)) => {
                    prev.push_str(", ");
                    prev.push_str(v);
                }
                _ => {
                    m.insert(k.clone(), serde_json::Value::String(v.clone()));
                }
            }
        }
        m
    }
}

#[derive(Debug)]
pub enum ParseError {
    /// The peer closed the connection before sending a request line.
    Closed,
    Io(io::Error),
    Bad(&'static str),
    TooLarge,
}

impl From<io::Error> for ParseError {
    fn from(e: io::Error) -> Self {
        ParseError::Io(e)
    }
}

/// Reads one line ending in `\n`, with the line ending stripped. `budget`
/// caps the bytes the head may use in total.
fn read_line(r: &mut impl BufRead, budget: &mut usize) -> Result<Option<String>, ParseError> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if n > *budget {
        return Err(ParseError::TooLarge);
    }
    *budget -= n;
    if buf.last() != Some(&b'\n') {
        return Err(ParseError::Bad("truncated line"));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| ParseError::Bad("non-UTF-8 header"))
}

/// Reads one request: head, then a body framed by `Content-Length` or
/// `Transfer-Encoding: chunked`.
pub fn read_request(r: &mut impl BufRead) -> Result<Request, ParseError> {
    let mut budget = MAX_HEAD;
    let line = loop {
        match read_line(r, &mut budget)? {
            None => return Err(ParseError::Closed),
            // Tolerate stray empty lines before the request line (RFC 9112 §2.2).
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Bad("malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(ParseError::Bad("unsupported HTTP version"));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ParseError::Bad("malformed method"));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    if !path.starts_with('/') {
        return Err(ParseError::Bad("request target is not a path"));
    }
    let mut headers = Vec::new();
    loop {
        let Some(l) = read_line(r, &mut budget)? else {
            return Err(ParseError::Bad("connection closed inside headers"));
        };
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(ParseError::Bad("malformed header"));
        };
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path,
        query,
        headers,
        body: Vec::new(),
    };
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        req.body = read_chunked(r)?;
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| ParseError::Bad("bad Content-Length"))?;
        if len > MAX_BODY {
            return Err(ParseError::TooLarge);
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        req.body = body;
    }
    Ok(req)
}

fn read_chunked(r: &mut impl BufRead) -> Result<Vec<u8>, ParseError> {
    let mut body = Vec::new();
    let mut budget = MAX_HEAD;
    loop {
        let Some(line) = read_line(r, &mut budget)? else {
            return Err(ParseError::Bad("connection closed inside chunked body"));
        };
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_hex, 16).map_err(|_| ParseError::Bad("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                match read_line(r, &mut budget)? {
                    None => return Ok(body),
                    Some(l) if l.is_empty() => return Ok(body),
                    Some(_) => {}
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(ParseError::TooLarge);
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(ParseError::Bad("chunk not followed by CRLF"));
        }
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A complete response with a body of known length.
pub fn write_full(
    w: &mut impl Write,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    )?;
    if !head_only {
        w.write_all(body)?;
    }
    w.flush()
}

pub fn write_json(w: &mut impl Write, status: u16, v: &serde_json::Value) -> io::Result<()> {
    write_full(
        w,
        status,
        "application/json; charset=utf-8",
        v.to_string().as_bytes(),
        false,
    )
}

/// The head of a streamed response: `Transfer-Encoding: chunked`, so each
/// piece reaches the client as soon as it is written.
fn write_stream_head(w: &mut impl Write, status: u16, content_type: &str) -> io::Result<()> {
    write!(
        w,
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        reason(status)
    )?;
    w.flush()
}

/// One chunk, flushed at once (a client waiting for the next token sees it
/// now, not when a buffer fills).
fn write_chunk(w: &mut impl Write, data: &[u8]) -> io::Result<()> {
    write!(w, "{:x}\r\n", data.len())?;
    w.write_all(data)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

/// The last chunk of a streamed response.
fn write_last_chunk(w: &mut impl Write) -> io::Result<()> {
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

/// A streamed response, one JSON object per line (NDJSON), as Ollama streams.
pub struct NdjsonStream<'a, W: Write> {
    w: &'a mut W,
}

impl<'a, W: Write> NdjsonStream<'a, W> {
    pub fn start(w: &'a mut W, status: u16) -> io::Result<Self> {
        write_stream_head(w, status, "application/x-ndjson")?;
        Ok(NdjsonStream { w })
    }

    pub fn send(&mut self, v: &serde_json::Value) -> io::Result<()> {
        let mut line = v.to_string();
        line.push('\n');
        write_chunk(self.w, line.as_bytes())
    }

    pub fn finish(self) -> io::Result<()> {
        write_last_chunk(self.w)
    }
}

/// A streamed response of server-sent events (`text/event-stream`), one
/// `data: …` event per chunk, as Ollama's OpenAI-compatible endpoints
/// stream.
pub struct SseStream<'a, W: Write> {
    w: &'a mut W,
}

impl<'a, W: Write> SseStream<'a, W> {
    pub fn start(w: &'a mut W, status: u16) -> io::Result<Self> {
        write_stream_head(w, status, "text/event-stream")?;
        Ok(SseStream { w })
    }

    /// One event whose data is `v` as compact JSON (a single line).
    pub fn send(&mut self, v: &serde_json::Value) -> io::Result<()> {
        self.data(&v.to_string())
    }

    /// One event with a raw data line (`[DONE]`).
    pub fn data(&mut self, data: &str) -> io::Result<()> {
        write_chunk(self.w, format!("data: {data}\n\n").as_bytes())
    }

    pub fn finish(self) -> io::Result<()> {
        write_last_chunk(self.w)
    }
}

/// Decodes a chunked body (used by tests to read streamed responses).
#[cfg(test)]
pub fn decode_chunked(mut data: &[u8]) -> Vec<u8> {
    read_chunked(&mut data).expect("valid chunked body")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Request, ParseError> {
        read_request(&mut raw.as_bytes())
    }

    #[test]
    fn parses_get_with_query() {
        let r = parse("GET /api/tags?x=1 HTTP/1.1\r\nHost: a\r\nX-Y:  z \r\n\r\n").unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/api/tags");
        assert_eq!(r.query, "x=1");
        assert_eq!(r.header("x-y"), Some("z"));
        assert_eq!(r.header("HOST"), Some("a"));
        assert!(r.body.is_empty());
    }

    #[test]
    fn parses_content_length_body() {
        let r = parse(
            "POST /api/show HTTP/1.1\r\ncontent-length: 17\r\n\r\n{\"model\":\"abcd\"}\nEXTRA",
        )
        .unwrap();
        assert_eq!(r.body, b"{\"model\":\"abcd\"}\n");
    }

    #[test]
    fn parses_chunked_body() {
        let r = parse(
            "POST /api/embed HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\nTrailer: x\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"{\"a\":1}");
    }

    #[test]
    fn bare_lf_line_endings_are_accepted() {
        let r = parse("GET / HTTP/1.0\nHost: a\n\n").unwrap();
        assert_eq!(r.path, "/");
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(parse(""), Err(ParseError::Closed)));
        assert!(matches!(parse("HELLO\r\n\r\n"), Err(ParseError::Bad(_))));
        assert!(matches!(
            parse("GET / SPDY/3\r\n\r\n"),
            Err(ParseError::Bad(_))
        ));
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nno-colon\r\n\r\n"),
            Err(ParseError::Bad(_))
        ));
        assert!(matches!(
            parse("POST / HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n"),
            Err(ParseError::TooLarge)
        ));
        assert!(matches!(
            parse("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort"),
            Err(ParseError::Io(_))
        ));
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(parse(&huge), Err(ParseError::TooLarge)));
    }

    #[test]
    fn ndjson_stream_is_chunked_lines() {
        let mut out = Vec::new();
        let mut s = NdjsonStream::start(&mut out, 200).unwrap();
        s.send(&serde_json::json!({"a": 1})).unwrap();
        s.send(&serde_json::json!({"b": 2})).unwrap();
        s.finish().unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("Transfer-Encoding: chunked"));
        assert_eq!(
            decode_chunked(body.as_bytes()),
            b"{\"a\":1}\n{\"b\":2}\n".to_vec()
        );
    }

    #[test]
    fn sse_stream_is_one_event_per_chunk() {
        let mut out = Vec::new();
        let mut s = SseStream::start(&mut out, 200).unwrap();
        s.send(&serde_json::json!({"a": "x\ny"})).unwrap();
        s.data("[DONE]").unwrap();
        s.finish().unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("Content-Type: text/event-stream"), "{head}");
        assert!(head.contains("Transfer-Encoding: chunked"));
        // Chunk sizes: each event is a chunk of its own.
        assert!(
            body.starts_with("14\r\ndata: {\"a\":\"x\\ny\"}\n\n\r\n"),
            "{body}"
        );
        assert_eq!(
            decode_chunked(body.as_bytes()),
            b"data: {\"a\":\"x\\ny\"}\n\ndata: [DONE]\n\n".to_vec()
        );
    }

    #[test]
    fn header_map_joins_repeated_headers() {
        let r = parse("GET / HTTP/1.1\r\nX-A: 1\r\nCookie: a=1\r\nx-a: 2\r\n\r\n").unwrap();
        let m = r.header_map();
        assert_eq!(m["x-a"], "1, 2");
        assert_eq!(m["cookie"], "a=1");
        assert_eq!(m.len(), 2);
    }
}
