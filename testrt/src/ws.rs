//! A WebSocket (RFC 6455) echo server: a stand-in for n8n's push channel, so
//! tests can drive arasuld's reverse proxy through an upgrade. After the
//! handshake the server sends one `hello` text message describing the
//! request it received (path, query, headers), then echoes every message.

use std::io::{self, Read, Write};
use std::time::Duration;

use serde_json::{Value, json};

use crate::http::{MAX_BODY, Request};
use crate::util::{base64_decode, base64_encode, sha1};

/// The paths that accept an upgrade: testrt's own and n8n's push path.
pub const PATHS: [&str; 2] = ["/testrt/ws", "/rest/push"];
/// RFC 6455 §1.3: appended to the client's key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// A quiet WebSocket is closed after this long (the HTTP read timeout is
/// far shorter: a push channel idles between messages).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest message (after reassembly) echoed; the same cap as a request body.
pub const MAX_MESSAGE: usize = MAX_BODY;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xa;

/// Close codes (RFC 6455 §7.4.1).
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
const CLOSE_INVALID_DATA: u16 = 1007;
const CLOSE_TOO_BIG: u16 = 1009;

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    base64_encode(&sha1(format!("{key}{GUID}").as_bytes()))
}

/// Whether a header holds `token` in its comma-separated list
/// (`Connection: keep-alive, Upgrade`).
fn has_token(req: &Request, header: &str, token: &str) -> bool {
    req.header(header)
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Checks an upgrade request (RFC 6455 §4.2.1) → the accept value, or why
/// it is refused (answered 400).
pub fn handshake(req: &Request) -> Result<String, &'static str> {
    if !has_token(req, "upgrade", "websocket") || !has_token(req, "connection", "upgrade") {
        return Err("expected a WebSocket upgrade (Upgrade: websocket, Connection: upgrade)");
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err("Sec-WebSocket-Version must be 13");
    }
    let key = req.header("sec-websocket-key").unwrap_or("");
    if base64_decode(key).is_none_or(|k| k.len() != 16) {
        return Err("Sec-WebSocket-Key must be 16 bytes in base64");
    }
    Ok(accept_key(key))
}

/// The 101 answer that switches the connection to WebSocket frames.
pub fn write_upgrade(w: &mut impl Write, accept: &str) -> io::Result<()> {
    write!(
        w,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )?;
    w.flush()
}

/// The first message on every WebSocket: what the request looked like when
/// it reached testrt, so a test can check what a proxy forwarded.
pub fn hello(req: &Request) -> Value {
    json!({
        "type": "hello",
        "path": req.path,
        "query": req.query,
        "headers": req.header_map(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    /// Unmasked.
    pub payload: Vec<u8>,
}

/// Encodes one frame. Servers send unmasked frames (`mask: None`); a client
/// (the tests) masks every frame.
pub fn encode(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

#[derive(Debug)]
pub enum FrameError {
    Io(io::Error),
    /// The peer broke the protocol: closed with 1002 and this reason.
    Protocol(&'static str),
    /// Larger than `MAX_MESSAGE`: closed with 1009.
    TooBig,
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Reads one client frame (RFC 6455 §5.2): masked, no extension bits,
/// control frames short and final. `max` caps the payload before any
/// allocation.
pub fn read_frame(r: &mut impl Read, max: usize) -> Result<Frame, FrameError> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head)?;
    let fin = head[0] & 0x80 != 0;
    let opcode = head[0] & 0x0f;
    if head[0] & 0x70 != 0 {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    if head[1] & 0x80 == 0 {
        return Err(FrameError::Protocol("client frames must be masked"));
    }
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            let n = u64::from_be_bytes(b);
            if n >> 63 != 0 {
                return Err(FrameError::Protocol("64-bit length with the top bit set"));
            }
            n
        }
        n => u64::from(n),
    };
    if opcode >= 8 && (!fin || len > 125) {
        return Err(FrameError::Protocol(
            "control frames must be final and at most 125 bytes",
        ));
    }
    if len > max as u64 {
        return Err(FrameError::TooBig);
    }
    let mut key = [0u8; 4];
    r.read_exact(&mut key)?;
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload)?;
    payload
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b ^= key[i % 4]);
    Ok(Frame {
        fin,
        opcode,
        payload,
    })
}

fn send(w: &mut impl Write, opcode: u8, payload: &[u8]) -> io::Result<()> {
    w.write_all(&encode(true, opcode, payload, None))?;
    w.flush()
}

fn send_close(w: &mut impl Write, code: u16, reason: &str) -> io::Result<()> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    send(w, OP_CLOSE, &payload)
}

/// How an echo session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Messages echoed (a fragmented message counts once).
    pub messages: usize,
    /// Why it ended, for the log.
    pub why: String,
}

/// Sends `hello`, then echoes every text and binary message (fragments are
/// reassembled and echoed as one frame), answers pings with pongs and a
/// close with a close, until the peer closes, goes quiet past the read
/// timeout, or breaks the protocol (then a close with the RFC's code).
pub fn echo(r: &mut impl Read, w: &mut impl Write, hello: &str) -> io::Result<Ended> {
    send(w, OP_TEXT, hello.as_bytes())?;
    let mut messages = 0;
    // The first frame's opcode and the payload so far of a fragmented message.
    let mut partial: Option<(u8, Vec<u8>)> = None;
    let end = |messages, why: &str| {
        Ok(Ended {
            messages,
            why: why.to_string(),
        })
    };
    loop {
        let room = MAX_MESSAGE - partial.as_ref().map_or(0, |(_, p)| p.len());
        let f = match read_frame(r, room) {
            Ok(f) => f,
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return end(messages, "peer closed the connection without a close frame");
            }
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                send_close(w, CLOSE_GOING_AWAY, "idle")?;
                return end(messages, "idle timeout");
            }
            Err(FrameError::Io(e)) => return Err(e),
            Err(FrameError::Protocol(why)) => {
                send_close(w, CLOSE_PROTOCOL_ERROR, why)?;
                return end(messages, why);
            }
            Err(FrameError::TooBig) => {
                send_close(w, CLOSE_TOO_BIG, "message too big")?;
                return end(messages, "message too big");
            }
        };
        let complete = match (f.opcode, partial.take()) {
            (OP_PING, p) => {
                partial = p;
                send(w, OP_PONG, &f.payload)?;
                continue;
            }
            (OP_PONG, p) => {
                partial = p;
                continue;
            }
            (OP_CLOSE, _) => {
                // Echo the status code (RFC 6455 §5.5.1); a 1-byte body is invalid.
                if f.payload.len() == 1 {
                    send_close(w, CLOSE_PROTOCOL_ERROR, "close payload of 1 byte")?;
                } else {
                    send(w, OP_CLOSE, &f.payload[..f.payload.len().min(2)])?;
                }
                return end(messages, "closed by the peer");
            }
            (OP_TEXT | OP_BINARY, None) => (f.opcode, f.payload),
            (OP_CONTINUATION, Some((op, mut p))) => {
                p.extend_from_slice(&f.payload);
                (op, p)
            }
            (OP_TEXT | OP_BINARY, Some(_)) => {
                let why = "a new message began inside a fragmented one";
                send_close(w, CLOSE_PROTOCOL_ERROR, why)?;
                return end(messages, why);
            }
            (OP_CONTINUATION, None) => {
                let why = "continuation frame without a message";
                send_close(w, CLOSE_PROTOCOL_ERROR, why)?;
                return end(messages, why);
            }
            _ => {
                send_close(w, CLOSE_PROTOCOL_ERROR, "reserved opcode")?;
                return end(messages, "reserved opcode");
            }
        };
        if !f.fin {
            partial = Some(complete);
            continue;
        }
        let (op, payload) = complete;
        if op == OP_TEXT && std::str::from_utf8(&payload).is_err() {
            send_close(w, CLOSE_INVALID_DATA, "text message is not UTF-8")?;
            return end(messages, "text message is not UTF-8");
        }
        send(w, op, &payload)?;
        messages += 1;
    }
}
