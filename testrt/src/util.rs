//! Pure helpers: RFC 3339 time, hashing (FNV-1a, SHA-1), base64,
//! percent-decoding, `keep_alive` durations, embeddings.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// RFC 3339 in UTC with nanoseconds, as Ollama writes times.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 → (year, month, day); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// FNV-1a, 64 bit: stable across runs and platforms.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64: a tiny deterministic generator.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn next_signed_unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// 64 lower-case hex digits derived from `seed` (a fake sha256).
pub fn fake_sha256(seed: &str) -> String {
    let mut g = SplitMix(fnv1a(seed.as_bytes()));
    (0..4).map(|_| format!("{:016x}", g.next_u64())).collect()
}

pub const EMBED_DIM: usize = 384;

/// A deterministic, L2-normalised vector of `dim` floats derived from the
/// text's hash (Ollama's `/api/embed` returns normalised vectors).
pub fn embed(text: &str, dim: usize) -> Vec<f32> {
    let mut g = SplitMix(fnv1a(text.as_bytes()));
    let mut v: Vec<f32> = (0..dim).map(|_| g.next_signed_unit()).collect();
    normalise(&mut v);
    v
}

pub fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// SHA-1 (FIPS 180-4). Only for the WebSocket handshake, where RFC 6455
/// prescribes it; never for anything that needs collision resistance.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xefcd_ab89,
        0x98ba_dcfe,
        0x1032_5476,
        0xc3d2_e1f0,
    ];
    // Padding: 0x80, zeros up to 56 mod 64, then the length in bits (BE).
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5a82_7999),
                20..=39 => (b ^ c ^ d, 0x6ed9_eba1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8f1b_bcdc),
                _ => (b ^ c ^ d, 0xca62_c1d6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (o, x) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&x.to_be_bytes());
    }
    out
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64, standard alphabet, with padding (RFC 4648 §4): what the
/// WebSocket handshake and OpenAI's `encoding_format: "base64"` use.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Strict base64 decoding (standard alphabet, padded): `None` for anything
/// else, so a malformed `Sec-WebSocket-Key` is refused.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let body = s
        .strip_suffix(b"==")
        .or_else(|| s.strip_suffix(b"="))
        .unwrap_or(s);
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in body {
        // A '=' inside the text is not in the alphabet: refused here.
        acc = acc << 6 | BASE64.iter().position(|&x| x == c)? as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Decodes `%XX` escapes (a path segment such as `llama3.2%3A1b`); anything
/// that is not a valid escape is kept as it is.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a request's `keep_alive` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Zero: unload the model now (after answering, when there is a prompt).
    Unload,
    /// Keep loaded this long after the request.
    For(Duration),
    /// Negative: keep loaded until told otherwise.
    Forever,
}

/// Ollama's default when a request names none.
pub const DEFAULT_KEEP_ALIVE: KeepAlive = KeepAlive::For(Duration::from_secs(300));

/// Interprets `keep_alive` as Ollama does: a JSON number is seconds; a
/// string is a Go duration ("5m", "1h30m", "0s", "-1m") or a bare number of
/// seconds ("0", "-1", "300"). Absent or null → the default (5 min).
pub fn parse_keep_alive(v: Option<&serde_json::Value>) -> Result<KeepAlive, String> {
    use serde_json::Value;
    let secs: f64 = match v {
        None | Some(Value::Null) => return Ok(DEFAULT_KEEP_ALIVE),
        Some(Value::Number(n)) => n.as_f64().ok_or("keep_alive: bad number")?,
        Some(Value::String(s)) => {
            let s = s.trim();
            match s.parse::<f64>() {
                Ok(n) => n,
                Err(_) => {
                    parse_go_duration(s).ok_or_else(|| format!("time: invalid duration \"{s}\""))?
                }
            }
        }
        Some(_) => return Err("keep_alive must be a number or a duration string".into()),
    };
    if !secs.is_finite() {
        return Err("keep_alive must be finite".into());
    }
    Ok(if secs < 0.0 {
        KeepAlive::Forever
    } else if secs == 0.0 {
        KeepAlive::Unload
    } else {
        KeepAlive::For(Duration::from_secs_f64(secs))
    })
}

/// A Go `time.ParseDuration` string → seconds (sign kept).
fn parse_go_duration(s: &str) -> Option<f64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    Some(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn sha1_fips_vectors() {
        assert_eq!(
            hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(hex(&sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        // 56 bytes: the padding spills into a second block.
        assert_eq!(
            hex(&sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(
            hex(&sha1(&vec![b'a'; 1_000_000])),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        );
    }

    #[test]
    fn base64_rfc4648_vectors_and_round_trip() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(
                base64_decode(enc).as_deref(),
                Some(plain.as_bytes()),
                "{enc}"
            );
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)), Some(all));
        assert_eq!(base64_encode(&[0xfb, 0xff]), "+/8=");
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9v!A==", "Zm=v", "Zg-_"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn websocket_accept_of_rfc6455_example() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let digest = sha1(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes());
        assert_eq!(base64_encode(&digest), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(base64_decode(key).map(|k| k.len()), Some(16));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("llama3.2%3A1b"), "llama3.2:1b");
        assert_eq!(percent_decode("a%2fb%20c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 5);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.000000005Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(rfc3339(t), "2099-12-31T23:59:59.000000000Z");
    }

    #[test]
    fn keep_alive_zero_in_every_spelling_unloads() {
        for v in [
            json!(0),
            json!(0.0),
            json!("0"),
            json!("0s"),
            json!("0m"),
            json!("0ms"),
        ] {
            assert_eq!(parse_keep_alive(Some(&v)), Ok(KeepAlive::Unload), "{v}");
        }
    }

    #[test]
    fn keep_alive_durations() {
        let ka = |v: serde_json::Value| parse_keep_alive(Some(&v)).unwrap();
        assert_eq!(parse_keep_alive(None), Ok(DEFAULT_KEEP_ALIVE));
        assert_eq!(parse_keep_alive(Some(&json!(null))), Ok(DEFAULT_KEEP_ALIVE));
        assert_eq!(ka(json!(30)), KeepAlive::For(Duration::from_secs(30)));
        assert_eq!(ka(json!("30")), KeepAlive::For(Duration::from_secs(30)));
        assert_eq!(ka(json!("5m")), KeepAlive::For(Duration::from_secs(300)));
        assert_eq!(
            ka(json!("1h30m")),
            KeepAlive::For(Duration::from_secs(5400))
        );
        assert_eq!(
            ka(json!("1.5s")),
            KeepAlive::For(Duration::from_millis(1500))
        );
        assert_eq!(
            ka(json!("250ms")),
            KeepAlive::For(Duration::from_millis(250))
        );
        assert_eq!(ka(json!(-1)), KeepAlive::Forever);
        assert_eq!(ka(json!("-1")), KeepAlive::Forever);
        assert_eq!(ka(json!("-1m")), KeepAlive::Forever);
        for bad in [
            json!("soon"),
            json!("5x"),
            json!("m"),
            json!(""),
            json!(true),
            json!([1]),
        ] {
            assert!(parse_keep_alive(Some(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn embeddings_are_deterministic_normalised_and_distinct() {
        let a = embed("hello world", EMBED_DIM);
        let b = embed("hello world", EMBED_DIM);
        let c = embed("hello world!", EMBED_DIM);
        assert_eq!(a.len(), EMBED_DIM);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        assert!(a.iter().all(|x| x.is_finite() && x.abs() <= 1.0));
        // Fixed across builds: the first component of a known text.
        assert_eq!(embed("", 4), embed("", 4));
    }

    #[test]
    fn fake_digest_shape() {
        let d = fake_sha256("llama3.2:1b");
        assert_eq!(d.len(), 64);
        assert!(
            d.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(d, fake_sha256("llama3.2:3b"));
    }
}
