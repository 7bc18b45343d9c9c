//! The container of a bundle: a strict subset of an uncompressed ustar
//! archive, read one 512-byte header at a time (never a whole member in
//! memory) and written by `bundle create`. Only regular files with short
//! (≤ 100 byte) relative names exist in format 1; every other header kind is
//! refused with a reason. Knows nothing of signatures or manifests.

use std::io::{self, Write};

use super::manifest::MAX_NAME_LEN;

pub const BLOCK: usize = 512;
/// First member of every bundle.
pub const MANIFEST_NAME: &str = "manifest.json";
/// Second member: the signature over the exact bytes of the first.
pub const SIGNATURE_NAME: &str = "manifest.sig";
/// File name extension of bundles.
pub const EXTENSION: &str = "araupdate";

/// A regular-file member header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHeader {
    pub name: String,
    pub size: u64,
}

/// What one 512-byte header block is.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// A regular file.
    File(MemberHeader),
    /// An all-zero block: the end-of-archive marker.
    End,
}

/// Bytes of padding after a member of `size` bytes.
pub fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// Parses one header block strictly; `Err` says why the member is refused.
pub fn parse_header(block: &[u8; BLOCK]) -> Result<Header, String> {
    if block.iter().all(|b| *b == 0) {
        return Ok(Header::End);
    }
    let stored = parse_octal(&block[148..156]).ok_or("header checksum field is not a number")?;
    let sum: u64 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u64
            }
        })
        .sum();
    if stored != sum {
        return Err("header checksum mismatch (not a tar archive, or corrupted)".into());
    }
    let magic = &block[257..265];
    if magic != b"ustar\x0000" && magic != b"ustar  \x00" {
        return Err("not a ustar header (format 1 bundles are ustar archives)".into());
    }
    let raw_name = field_str(&block[0..100]);
    let shown = String::from_utf8_lossy(raw_name).into_owned();
    let kind = match block[156] {
        b'0' | 0 => None,
        b'1' => Some("a hard link"),
        b'2' => Some("a symbolic link"),
        b'3' => Some("a character device"),
        b'4' => Some("a block device"),
        b'5' => Some("a directory"),
        b'6' => Some("a FIFO"),
        b'7' => Some("a contiguous file"),
        b'x' | b'g' => Some("a pax extended header"),
        b'L' | b'K' => Some("a GNU long-name header"),
        _ => Some("of an unknown type"),
    };
    if let Some(kind) = kind {
        return Err(format!(
            "member {shown:?} is {kind}; only regular files are allowed"
        ));
    }
    if !field_is_clean(&block[0..100]) {
        return Err(format!("member name {shown:?} contains a NUL byte"));
    }
    if block[345..500].iter().any(|b| *b != 0) {
        return Err(format!(
            "member name {shown:?} uses the ustar prefix field (names longer than {MAX_NAME_LEN} bytes are not allowed)"
        ));
    }
    if block[157..257].iter().any(|b| *b != 0) {
        return Err(format!("member {shown:?} has a link target"));
    }
    let name = std::str::from_utf8(raw_name)
        .map_err(|_| format!("member name {shown:?} is not UTF-8"))?
        .to_owned();
    check_member_name(&name)?;
    let size =
        parse_size(&block[124..136]).ok_or_else(|| format!("member {name:?}: bad size field"))?;
    Ok(Header::File(MemberHeader { name, size }))
}

/// Refuses names that could point outside the staging dir, whatever the
/// manifest says.
pub fn check_member_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("member with an empty name".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "member name {name:?} is longer than {MAX_NAME_LEN} bytes"
        ));
    }
    if name.starts_with('/') {
        return Err(format!("member name {name:?} is an absolute path"));
    }
    if name.split('/').any(|c| c == "..") {
        return Err(format!("member name {name:?} contains \"..\""));
    }
    if name
        .bytes()
        .any(|b| b == 0 || b == b'\\' || b.is_ascii_control())
    {
        return Err(format!("member name {name:?} contains a control character"));
    }
    Ok(())
}

/// Bytes up to the first NUL.
fn field_str(f: &[u8]) -> &[u8] {
    let end = f.iter().position(|b| *b == 0).unwrap_or(f.len());
    &f[..end]
}

/// No non-NUL byte after the first NUL.
fn field_is_clean(f: &[u8]) -> bool {
    let end = f.iter().position(|b| *b == 0).unwrap_or(f.len());
    f[end..].iter().all(|b| *b == 0)
}

/// Octal digits, optionally space-padded in front, ended by NUL/space.
fn parse_octal(f: &[u8]) -> Option<u64> {
    let s = f
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| **b != 0 && **b != b' ');
    let mut v: u64 = 0;
    let mut n = 0;
    for b in s {
        if !(b'0'..=b'7').contains(b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add((b - b'0') as u64)?;
        n += 1;
    }
    (n > 0).then_some(v)
}

/// Octal, or GNU base-256 (high bit of the first byte) for ≥ 8 GiB members.
fn parse_size(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        if f[0] != 0x80 || f[1..4].iter().any(|b| *b != 0) {
            return None;
        }
        return Some(f[4..].iter().fold(0u64, |a, b| (a << 8) | *b as u64));
    }
    parse_octal(f)
}

/// A ustar header for a regular file (mode 0644, owner 0, `mtime` seconds).
pub fn file_header(name: &str, size: u64, mtime: u64) -> Result<[u8; BLOCK], String> {
    check_member_name(name)?;
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    if size < 0o77777777777 {
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    h[136..148].copy_from_slice(format!("{:011o}\0", mtime.min(0o77777777777)).as_bytes());
    h[156] = b'0';
    h[257..265].copy_from_slice(b"ustar\x0000");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| *b as u64).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

/// Writes members one after another, then the end marker.
pub struct BundleWriter<W: Write> {
    out: W,
    mtime: u64,
}

impl<W: Write> BundleWriter<W> {
    pub fn new(out: W, mtime: u64) -> Self {
        BundleWriter { out, mtime }
    }

    pub fn append_bytes(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.append_reader(name, data.len() as u64, &mut &data[..])
    }

    /// Copies exactly `size` bytes from `src` as member `name`.
    pub fn append_reader(
        &mut self,
        name: &str,
        size: u64,
        src: &mut dyn io::Read,
    ) -> io::Result<()> {
        let h = file_header(name, size, self.mtime).map_err(io::Error::other)?;
        self.out.write_all(&h)?;
        let copied = io::copy(&mut io::Read::take(src, size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{name}: expected {size} bytes, got {copied} (file changed while bundling?)"
                ),
            ));
        }
        self.out.write_all(&[0u8; BLOCK][..padding(size) as usize])
    }

    /// Writes the two zero blocks that end the archive; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_header_parses_back() {
        let h = file_header("payload/a.tar", 1234, 5).unwrap();
        assert_eq!(
            parse_header(&h).unwrap(),
            Header::File(MemberHeader {
                name: "payload/a.tar".into(),
                size: 1234
            })
        );
        let big = file_header("payload/big", 20 << 30, 5).unwrap();
        assert!(matches!(parse_header(&big).unwrap(), Header::File(m) if m.size == 20 << 30));
    }

    #[test]
    fn corrupted_header_is_refused() {
        let mut h = file_header("payload/a", 1, 0).unwrap();
        h[0] = b'q';
        assert!(parse_header(&h).unwrap_err().contains("checksum"));
    }
}
