//! Bundle verification, in the order SPEC §8 fixes: bounded read of the
//! manifest and signature → signature → parse → versions → every payload
//! member streamed to staging while hashed. One fd, one pass, constant memory;
//! apply works only from what this module staged. A refused bundle leaves
//! nothing in staging.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use ring::digest;
use semver::Version;

use super::bundle::{self, BLOCK, Header, MANIFEST_NAME, SIGNATURE_NAME};
use super::keys::{SignatureInfo, TrustedKeys};
use super::manifest::{Manifest, PayloadEntry, cmp_version};

/// Size of the read buffers (and of the chunks the whole-file hash sees).
const CHUNK: usize = 1 << 20;
/// Buffers in flight between the reader and the whole-file hasher thread.
const PIPE_DEPTH: usize = 3;

/// Bounds on what a bundle may make this process read into memory or disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyLimits {
    /// Whole bundle file.
    pub max_bundle_bytes: u64,
    /// `manifest.json`, read whole into memory before its signature is checked.
    pub max_manifest_bytes: u64,
    /// `manifest.sig` (an RSA-8192 signature is 1024 bytes).
    pub max_sig_bytes: u64,
}

impl Default for VerifyLimits {
    fn default() -> Self {
        VerifyLimits {
            max_bundle_bytes: 16 << 30,
            max_manifest_bytes: 1 << 20,
            max_sig_bytes: 4096,
        }
    }
}

/// Why a bundle was refused. `code()` is stable (API error codes).
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Not a well-formed format-1 bundle; the message says what is wrong.
    #[error("invalid bundle: {0}")]
    Invalid(String),
    #[error("the bundle is {size} bytes; the limit is {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("no trusted update key is configured; every bundle is refused")]
    NoTrustedKey,
    #[error("the manifest signature does not verify against any trusted key ({keys})")]
    SignatureInvalid { keys: String },
    #[error("bundle version {bundle} is not newer than the installed version {installed}")]
    VersionNotNewer { bundle: Version, installed: Version },
    #[error("the bundle needs at least version {min_version} installed; this box runs {installed}")]
    MinVersionNotMet {
        min_version: Version,
        installed: Version,
    },
    /// A payload member does not match its size or sha256 in the manifest.
    #[error("payload mismatch: {0}")]
    PayloadMismatch(String),
    #[error("cannot read the bundle: {0}")]
    Unreadable(io::Error),
    #[error("cannot write the staging copy: {0}")]
    Staging(String),
}

impl BundleError {
    /// Stable snake_case code for APIs, logs and tests.
    pub fn code(&self) -> &'static str {
        match self {
            BundleError::Invalid(_) => "invalid_bundle",
            BundleError::TooLarge { .. } => "bundle_too_large",
            BundleError::NoTrustedKey => "no_trusted_key",
            BundleError::SignatureInvalid { .. } => "signature_invalid",
            BundleError::VersionNotNewer { .. } => "version_not_newer",
            BundleError::MinVersionNotMet { .. } => "min_version_not_met",
            BundleError::PayloadMismatch(_) => "payload_mismatch",
            BundleError::Unreadable(_) => "bundle_unreadable",
            BundleError::Staging(_) => "staging_failed",
        }
    }

    /// The HTTP status an API answers with (CONTRACTS.md, updates).
    pub fn http_status(&self) -> u16 {
        match self {
            BundleError::Invalid(_)
            | BundleError::PayloadMismatch(_)
            | BundleError::Unreadable(_) => 400,
            BundleError::TooLarge { .. } => 413,
            BundleError::NoTrustedKey
            | BundleError::SignatureInvalid { .. }
            | BundleError::VersionNotNewer { .. }
            | BundleError::MinVersionNotMet { .. } => 422,
            BundleError::Staging(_) => 500,
        }
    }
}

fn invalid(msg: impl Into<String>) -> BundleError {
    BundleError::Invalid(msg.into())
}

/// A bundle that passed every check, with its payload staged.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    pub manifest: Manifest,
    pub signature: SignatureInfo,
    /// Holds `manifest.json`, `manifest.sig` and `payload/<file>`, each
    /// fsynced, owner-only. Apply reads only from here.
    pub staging_dir: PathBuf,
    /// Bytes of the bundle file.
    pub size: u64,
    /// Lowercase hex sha256 of the whole bundle file (what `sha256sum` prints).
    pub sha256: String,
}

impl VerifiedBundle {
    /// Path of a payload file (`payload/…` as in the manifest) in staging.
    pub fn staged(&self, file: &str) -> PathBuf {
        self.staging_dir.join(file)
    }
}

/// What `check_bundle` proved (nothing staged).
#[derive(Debug, Clone)]
pub struct CheckedBundle {
    pub manifest: Manifest,
    pub signature: SignatureInfo,
    pub size: u64,
    pub sha256: String,
}

/// Verifies `bundle` and stages its payload in `staging` (created; it may
/// pre-exist only as an empty dir). On any error `staging` is removed.
pub fn verify_bundle(
    bundle: &Path,
    keys: &TrustedKeys,
    installed: &Version,
    staging: &Path,
    limits: &VerifyLimits,
) -> Result<VerifiedBundle, BundleError> {
    let (file, len) = open_bundle(bundle, limits)?;
    let mut sink = StagingSink::new(staging, true);
    let r = verify_stream(file, Some(len), keys, installed, limits, &mut sink);
    match r {
        Ok(c) => {
            sink.keep();
            Ok(VerifiedBundle {
                manifest: c.manifest,
                signature: c.signature,
                staging_dir: staging.to_owned(),
                size: c.size,
                sha256: c.sha256,
            })
        }
        Err(e) => Err(e),
    }
}

/// The same checks as `verify_bundle`, writing nothing (`bundle verify`).
pub fn check_bundle(
    bundle: &Path,
    keys: &TrustedKeys,
    installed: &Version,
    limits: &VerifyLimits,
) -> Result<CheckedBundle, BundleError> {
    let (file, len) = open_bundle(bundle, limits)?;
    verify_stream(file, Some(len), keys, installed, limits, &mut Discard)
}

/// Verifies a bundle from any reader, staging nothing (fuzzing, pipes).
pub fn check_reader<R: Read + Send>(
    reader: R,
    keys: &TrustedKeys,
    installed: &Version,
    limits: &VerifyLimits,
) -> Result<CheckedBundle, BundleError> {
    verify_stream(reader, None, keys, installed, limits, &mut Discard)
}

/// The first two members of a bundle, unverified (`bundle inspect`).
#[derive(Debug, Clone)]
pub struct BundleHead {
    pub manifest_bytes: Vec<u8>,
    pub signature: Vec<u8>,
    pub size: u64,
}

/// Reads manifest and signature with the same bounds, checking nothing else.
pub fn read_head(bundle: &Path, limits: &VerifyLimits) -> Result<BundleHead, BundleError> {
    let (file, len) = open_bundle(bundle, limits)?;
    let mut src = Source::new(file, limits.max_bundle_bytes, None);
    let (manifest_bytes, signature) = read_manifest_and_sig(&mut src, limits)?;
    Ok(BundleHead {
        manifest_bytes,
        signature,
        size: len,
    })
}

fn open_bundle(path: &Path, limits: &VerifyLimits) -> Result<(File, u64), BundleError> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: a FIFO in place of the bundle must not hang the open; it
    // is refused below as not a regular file (no effect on regular files).
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(BundleError::Unreadable)?;
    let meta = file.metadata().map_err(BundleError::Unreadable)?;
    if !meta.is_file() {
        return Err(invalid(format!("{} is not a regular file", path.display())));
    }
    if meta.len() > limits.max_bundle_bytes {
        return Err(BundleError::TooLarge {
            size: meta.len(),
            limit: limits.max_bundle_bytes,
        });
    }
    Ok((file, meta.len()))
}

/// Where payload bytes go once the header checks passed.
trait Sink {
    fn begin(&mut self, manifest: &[u8], sig: &[u8]) -> Result<(), BundleError>;
    fn open(&mut self, file: &str) -> Result<(), BundleError>;
    fn write(&mut self, data: &[u8]) -> Result<(), BundleError>;
    fn close(&mut self) -> Result<(), BundleError>;
    fn finish(&mut self) -> Result<(), BundleError>;
}

struct Discard;

impl Sink for Discard {
    fn begin(&mut self, _: &[u8], _: &[u8]) -> Result<(), BundleError> {
        Ok(())
    }
    fn open(&mut self, _: &str) -> Result<(), BundleError> {
        Ok(())
    }
    fn write(&mut self, _: &[u8]) -> Result<(), BundleError> {
        Ok(())
    }
    fn close(&mut self) -> Result<(), BundleError> {
        Ok(())
    }
    fn finish(&mut self) -> Result<(), BundleError> {
        Ok(())
    }
}

/// Writes the staged copy; removes the staging dir on drop unless kept.
struct StagingSink {
    dir: PathBuf,
    sync: bool,
    created: bool,
    kept: bool,
    current: Option<(File, PathBuf)>,
}

impl StagingSink {
    fn new(dir: &Path, sync: bool) -> Self {
        StagingSink {
            dir: dir.to_owned(),
            sync,
            created: false,
            kept: false,
            current: None,
        }
    }

    fn keep(&mut self) {
        self.kept = true;
    }

    fn err(&self, what: &str, path: &Path, e: io::Error) -> BundleError {
        BundleError::Staging(format!("{what} {}: {e}", path.display()))
    }

    fn create(&self, path: &Path) -> Result<File, BundleError> {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| self.err("cannot create", path, e))
    }

    fn sync_dir(&self, path: &Path) -> Result<(), BundleError> {
        if self.sync {
            File::open(path)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.err("cannot sync", path, e))?;
        }
        Ok(())
    }
}

impl Sink for StagingSink {
    fn begin(&mut self, manifest: &[u8], sig: &[u8]) -> Result<(), BundleError> {
        if let Some(parent) = self.dir.parent() {
            fs::create_dir_all(parent).map_err(|e| self.err("cannot create", parent, e))?;
        }
        match fs::create_dir(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let empty = fs::read_dir(&self.dir)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false);
                if !empty || !self.dir.is_dir() {
                    return Err(BundleError::Staging(format!(
                        "{} exists and is not an empty directory",
                        self.dir.display()
                    )));
                }
            }
            Err(e) => return Err(self.err("cannot create", &self.dir, e)),
        }
        self.created = true;
        for (name, data) in [(MANIFEST_NAME, manifest), (SIGNATURE_NAME, sig)] {
            let path = self.dir.join(name);
            let mut f = self.create(&path)?;
            f.write_all(data)
                .map_err(|e| self.err("cannot write", &path, e))?;
            if self.sync {
                f.sync_all()
                    .map_err(|e| self.err("cannot sync", &path, e))?;
            }
        }
        let payload = self.dir.join("payload");
        fs::create_dir(&payload).map_err(|e| self.err("cannot create", &payload, e))?;
        Ok(())
    }

    fn open(&mut self, file: &str) -> Result<(), BundleError> {
        let path = self.dir.join(file);
        let f = self.create(&path)?;
        self.current = Some((f, path));
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> Result<(), BundleError> {
        if let Some((f, path)) = &mut self.current
            && let Err(e) = f.write_all(data)
        {
            let path = path.clone();
            return Err(self.err("cannot write", &path, e));
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), BundleError> {
        if let Some((f, path)) = self.current.take()
            && self.sync
        {
            f.sync_all()
                .map_err(|e| self.err("cannot sync", &path, e))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), BundleError> {
        self.sync_dir(&self.dir.join("payload"))?;
        self.sync_dir(&self.dir)
    }
}

impl Drop for StagingSink {
    fn drop(&mut self) {
        self.current = None;
        if self.created
            && !self.kept
            && let Err(e) = fs::remove_dir_all(&self.dir)
        {
            tracing::error!(dir = %self.dir.display(), "cannot remove the staging dir of a refused bundle: {e}");
        }
    }
}

/// Whole-file sha256 on a second thread, fed the read buffers themselves.
struct HashPipe {
    tx: mpsc::SyncSender<Vec<u8>>,
    back: mpsc::Receiver<Vec<u8>>,
    allocated: usize,
}

/// The bundle bytes: buffered reads, byte count and limit, and every
/// consumed buffer handed to the whole-file hasher.
struct Source<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes read from `inner` so far.
    read: u64,
    limit: u64,
    eof: bool,
    pipe: Option<HashPipe>,
}

impl<R: Read> Source<R> {
    fn new(inner: R, limit: u64, pipe: Option<HashPipe>) -> Self {
        Source {
            inner,
            buf: Vec::with_capacity(CHUNK),
            pos: 0,
            read: 0,
            limit,
            eof: false,
            pipe,
        }
    }

    /// Bytes available now; empty only at end of file.
    fn fill(&mut self) -> Result<&[u8], BundleError> {
        if self.pos == self.buf.len() && !self.eof {
            let mut next = match &mut self.pipe {
                Some(p) => {
                    let full = std::mem::take(&mut self.buf);
                    if !full.is_empty() {
                        // The hasher thread only stops when we drop the pipe.
                        let _ = p.tx.send(full);
                    }
                    if p.allocated < PIPE_DEPTH {
                        p.allocated += 1;
                        Vec::with_capacity(CHUNK)
                    } else {
                        p.back.recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK))
                    }
                }
                None => std::mem::take(&mut self.buf),
            };
            next.clear();
            let n = (&mut self.inner)
                .take(CHUNK as u64)
                .read_to_end(&mut next)
                .map_err(BundleError::Unreadable)?;
            self.pos = 0;
            self.buf = next;
            self.eof = n == 0;
            self.read += n as u64;
            if self.read > self.limit {
                return Err(BundleError::TooLarge {
                    size: self.read,
                    limit: self.limit,
                });
            }
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }

    /// Fills `out` completely; `Ok(false)` when the file ends first.
    fn read_exact(&mut self, out: &mut [u8]) -> Result<bool, BundleError> {
        Ok(self.read_upto(out)? == out.len())
    }

    /// Fills as much of `out` as the file still has; returns the count.
    fn read_upto(&mut self, out: &mut [u8]) -> Result<usize, BundleError> {
        let mut done = 0;
        while done < out.len() {
            let avail = self.fill()?;
            if avail.is_empty() {
                break;
            }
            let n = avail.len().min(out.len() - done);
            out[done..done + n].copy_from_slice(&avail[..n]);
            self.consume(n);
            done += n;
        }
        Ok(done)
    }

    fn header(&mut self, expecting: &str) -> Result<Header, BundleError> {
        let mut block = [0u8; BLOCK];
        if !self.read_exact(&mut block)? {
            return Err(if self.read == 0 {
                invalid("the file is empty")
            } else {
                invalid(format!("the bundle is truncated (expected {expecting})"))
            });
        }
        bundle::parse_header(&block).map_err(invalid)
    }

    /// Reads a member's data plus padding into memory (bounded by the caller).
    fn small_member(&mut self, name: &str, size: u64) -> Result<Vec<u8>, BundleError> {
        let mut data = vec![0u8; size as usize];
        if !self.read_exact(&mut data)? {
            return Err(invalid(format!("the bundle is truncated inside {name}")));
        }
        self.padding(name, size)?;
        Ok(data)
    }

    fn padding(&mut self, name: &str, size: u64) -> Result<(), BundleError> {
        let mut pad = [0u8; BLOCK];
        let pad = &mut pad[..bundle::padding(size) as usize];
        if !self.read_exact(pad)? {
            return Err(invalid(format!("the bundle is truncated after {name}")));
        }
        if pad.iter().any(|b| *b != 0) {
            return Err(invalid(format!("non-zero padding after {name}")));
        }
        Ok(())
    }
}

fn read_manifest_and_sig<R: Read>(
    src: &mut Source<R>,
    limits: &VerifyLimits,
) -> Result<(Vec<u8>, Vec<u8>), BundleError> {
    let mut out = Vec::new();
    for (name, limit) in [
        (MANIFEST_NAME, limits.max_manifest_bytes),
        (SIGNATURE_NAME, limits.max_sig_bytes),
    ] {
        let m = match src.header(name)? {
            Header::File(m) => m,
            Header::End => return Err(invalid(format!("the bundle ends before {name}"))),
        };
        if m.name != name {
            let pos = if name == MANIFEST_NAME {
                "first"
            } else {
                "second"
            };
            return Err(invalid(format!(
                "the {pos} member must be {name}, found {:?}{}",
                m.name,
                if name == SIGNATURE_NAME {
                    " (unsigned bundle?)"
                } else {
                    ""
                }
            )));
        }
        if m.size > limit {
            return Err(invalid(format!(
                "{name} is {} bytes; the limit is {limit} bytes",
                m.size
            )));
        }
        out.push(src.small_member(name, m.size)?);
    }
    let sig = out.pop().unwrap_or_default();
    let manifest = out.pop().unwrap_or_default();
    Ok((manifest, sig))
}

fn hex(d: &[u8]) -> String {
    hex::encode(d)
}

fn verify_stream<R: Read + Send>(
    reader: R,
    declared_len: Option<u64>,
    keys: &TrustedKeys,
    installed: &Version,
    limits: &VerifyLimits,
    sink: &mut dyn Sink,
) -> Result<CheckedBundle, BundleError> {
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(PIPE_DEPTH);
        let (back_tx, back) = mpsc::sync_channel::<Vec<u8>>(PIPE_DEPTH);
        let hasher = std::thread::Builder::new()
            .name("bundle-sha256".into())
            .spawn_scoped(scope, move || {
                let mut ctx = digest::Context::new(&digest::SHA256);
                for buf in rx {
                    ctx.update(&buf);
                    // The reader may be gone already (end or error); the
                    // buffers still queued must be hashed all the same.
                    let _ = back_tx.send(buf);
                }
                ctx.finish()
            })
            .map_err(|e| BundleError::Staging(format!("cannot start the hasher thread: {e}")))?;
        let pipe = HashPipe {
            tx,
            back,
            allocated: 1,
        };
        let mut src = Source::new(reader, limits.max_bundle_bytes, Some(pipe));
        let checked = verify_members(&mut src, keys, installed, limits, sink);
        let size = src.read;
        // Hand over the last buffer, then close the pipe so the thread ends.
        let pipe = src.pipe.take();
        if let Some(p) = pipe {
            if !src.buf.is_empty() {
                let _ = p.tx.send(std::mem::take(&mut src.buf));
            }
            drop(p.tx);
        }
        let digest = hasher
            .join()
            .map_err(|_| BundleError::Staging("the hasher thread panicked".into()))?;
        let (manifest, signature) = checked?;
        if let Some(len) = declared_len
            && len != size
        {
            return Err(invalid(format!(
                "the file changed while it was read ({len} bytes at open, {size} read)"
            )));
        }
        Ok(CheckedBundle {
            manifest,
            signature,
            size,
            sha256: hex(digest.as_ref()),
        })
    })
}

fn verify_members<R: Read>(
    src: &mut Source<R>,
    keys: &TrustedKeys,
    installed: &Version,
    limits: &VerifyLimits,
    sink: &mut dyn Sink,
) -> Result<(Manifest, SignatureInfo), BundleError> {
    // 1. Bounded read of manifest and signature.
    let (manifest_bytes, sig) = read_manifest_and_sig(src, limits)?;
    // 2. Signature, before a byte of the manifest is interpreted.
    if keys.is_empty() {
        return Err(BundleError::NoTrustedKey);
    }
    let signature =
        keys.verify(&manifest_bytes, &sig)
            .ok_or_else(|| BundleError::SignatureInvalid {
                keys: keys.names().join(", "),
            })?;
    // 3. Parse.
    let manifest = Manifest::parse(&manifest_bytes).map_err(BundleError::Invalid)?;
    // 4. Versions. Only images at the installed version: provisioning.
    let order = cmp_version(&manifest.version, installed);
    if order.is_lt() || (order.is_eq() && !manifest.is_provisioning()) {
        return Err(BundleError::VersionNotNewer {
            bundle: manifest.version.clone(),
            installed: installed.clone(),
        });
    }
    if cmp_version(&manifest.min_version, installed).is_gt() {
        return Err(BundleError::MinVersionNotMet {
            min_version: manifest.min_version.clone(),
            installed: installed.clone(),
        });
    }
    let payload = manifest.payload();
    // A bundle cannot be smaller than what it declares; refuse early.
    let needed = payload
        .iter()
        .map(|p| BLOCK as u64 + p.size + bundle::padding(p.size))
        .sum::<u64>();
    if needed > limits.max_bundle_bytes {
        return Err(BundleError::TooLarge {
            size: needed,
            limit: limits.max_bundle_bytes,
        });
    }
    // 5. Payload, streamed to staging while hashed.
    sink.begin(&manifest_bytes, &sig)?;
    for (i, want) in payload.iter().enumerate() {
        let m = match src.header(&want.file)? {
            Header::File(m) => m,
            Header::End => {
                return Err(invalid(format!("member {} is missing", want.file)));
            }
        };
        if m.name != want.file {
            return Err(invalid(misplaced(&m.name, i, &payload)));
        }
        if m.size != want.size {
            return Err(BundleError::PayloadMismatch(format!(
                "{} is {} bytes in the bundle, {} in the manifest",
                m.name, m.size, want.size
            )));
        }
        stream_member(src, want, sink)?;
    }
    // 6. Only the end marker (two or more zero blocks) may follow.
    let mut zero_blocks = 0;
    loop {
        let mut block = [0u8; BLOCK];
        match src.read_upto(&mut block)? {
            0 => break,
            BLOCK => {}
            n => {
                return Err(invalid(format!(
                    "{n} stray bytes at the end (a tar archive is whole 512-byte blocks)"
                )));
            }
        }
        if block.iter().all(|b| *b == 0) {
            zero_blocks += 1;
            continue;
        }
        if zero_blocks >= 2 {
            return Err(invalid("data after the end-of-archive marker"));
        }
        return Err(invalid(match bundle::parse_header(&block) {
            Ok(Header::File(m)) => misplaced(&m.name, payload.len(), &payload),
            Ok(Header::End) => "unexpected end marker".into(),
            Err(e) => e,
        }));
    }
    if zero_blocks < 2 {
        return Err(invalid(
            "the bundle is truncated (no end-of-archive marker)",
        ));
    }
    sink.finish()?;
    Ok((manifest, signature))
}

/// Why member `name` at payload position `i` is not the expected one.
fn misplaced(name: &str, i: usize, payload: &[PayloadEntry]) -> String {
    if name == MANIFEST_NAME
        || name == SIGNATURE_NAME
        || payload[..i].iter().any(|p| p.file == name)
    {
        format!("duplicate member {name:?}")
    } else if payload[i..].iter().any(|p| p.file == name) {
        format!(
            "member {name:?} is out of order (expected {:?}; payload members follow manifest order)",
            payload[i].file
        )
    } else {
        format!("member {name:?} is not listed in the manifest")
    }
}

fn stream_member<R: Read>(
    src: &mut Source<R>,
    want: &PayloadEntry,
    sink: &mut dyn Sink,
) -> Result<(), BundleError> {
    sink.open(&want.file)?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut left = want.size;
    while left > 0 {
        let avail = src.fill()?;
        if avail.is_empty() {
            return Err(invalid(format!(
                "the bundle is truncated inside {}",
                want.file
            )));
        }
        let n = avail.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let data = &avail[..n];
        ctx.update(data);
        sink.write(data)?;
        src.consume(n);
        left -= n as u64;
    }
    src.padding(&want.file, want.size)?;
    let got = hex(ctx.finish().as_ref());
    if got != want.sha256 {
        return Err(BundleError::PayloadMismatch(format!(
            "{}: sha256 {got}, the manifest says {}",
            want.file, want.sha256
        )));
    }
    sink.close()
}
