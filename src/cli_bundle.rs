//! `arasuld bundle keygen|create|verify|inspect`: the vendor's tooling for
//! `.araupdate` bundles, in the daemon's own binary so that what `create`
//! writes is exactly what the box's verifier reads. Needs no config and no
//! running daemon; `verify` runs the same checks as an upload.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use ring::digest;

use crate::update::Version;
use crate::update::bundle::{BundleWriter, EXTENSION, MANIFEST_NAME, SIGNATURE_NAME};
use crate::update::keys::{self, SigningKey, TrustedKeys};
use crate::update::manifest::{
    self, Components, ConfigComponent, ImageComponent, Manifest, MigrationComponent,
    ModelComponent, PackageComponent,
};
use crate::update::verify::{self, VerifyLimits};

/// Defined with the rest of the command line (the man page is rendered from it).
pub use crate::cli::{BundleCommand, CreateArgs};

/// Runs a `bundle` subcommand with the config's paths.
pub fn run(cmd: BundleCommand, paths: &crate::config::PathsConfig) -> ExitCode {
    let keys_dir = paths.keys_dir.as_path();
    let r = match cmd {
        BundleCommand::Keygen { out } => keygen(&out),
        BundleCommand::Create(args) => create(&args, &paths.services_file).map(|(m, size, sha)| {
            println!(
                "{}: version {} (min {}), {} payload file(s), {size} bytes, sha256 {sha}",
                args.out.display(),
                m.version,
                m.min_version,
                m.payload().len()
            );
        }),
        BundleCommand::Verify {
            keys,
            installed,
            staging,
            keep_staging,
            max_bytes,
            file,
        } => {
            let installed = installed.unwrap_or_else(installed_version);
            let limits = VerifyLimits {
                max_bundle_bytes: max_bytes,
                ..VerifyLimits::default()
            };
            return verify_cmd(
                &file,
                keys.as_deref().unwrap_or(keys_dir),
                &installed,
                staging.as_deref(),
                keep_staging,
                &limits,
            );
        }
        BundleCommand::Inspect { keys, file } => inspect(&file, keys.as_deref()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arasuld bundle: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// This build's version: what `bundle verify` compares against by default.
pub fn installed_version() -> Version {
    Version::parse(crate::build_info::VERSION).unwrap_or_else(|_| Version::new(0, 0, 0))
}

fn keygen(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (private, public) = keys::generate_ed25519().map_err(anyhow::Error::msg)?;
    let key_path = dir.join("update-signing.key");
    let pub_path = dir.join("update-signing.pem");
    for p in [&key_path, &pub_path] {
        if p.exists() {
            bail!("{} exists; not overwriting a key", p.display());
        }
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .with_context(|| format!("creating {}", key_path.display()))?;
    f.write_all(private.as_bytes())?;
    f.sync_all()?;
    fs::write(&pub_path, public).with_context(|| format!("writing {}", pub_path.display()))?;
    println!(
        "private key: {} (keep it secret)\npublic key:  {} (copy to /etc/arasul/keys/ on the box)",
        key_path.display(),
        pub_path.display()
    );
    Ok(())
}

fn verify_cmd(
    file: &Path,
    keys_dir: &Path,
    installed: &Version,
    staging: Option<&Path>,
    keep: bool,
    limits: &VerifyLimits,
) -> ExitCode {
    let keys = match TrustedKeys::load(keys_dir) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{}: REFUSED (no_trusted_key): {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let r = match staging {
        Some(dir) => verify::verify_bundle(file, &keys, installed, dir, limits).map(|v| {
            if !keep {
                let _ = fs::remove_dir_all(&v.staging_dir);
            }
            (v.manifest, v.signature, v.size, v.sha256)
        }),
        None => verify::check_bundle(file, &keys, installed, limits)
            .map(|c| (c.manifest, c.signature, c.size, c.sha256)),
    };
    match r {
        Ok((m, sig, size, sha)) => {
            println!(
                "{}: OK: version {} (installed {installed}), signed by {} ({}), {} payload file(s), {size} bytes, sha256 {sha}",
                file.display(),
                m.version,
                sig.key,
                sig.algorithm,
                m.payload().len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let hint = match &e {
                verify::BundleError::NoTrustedKey => format!(" (keys dir: {})", keys_dir.display()),
                _ => String::new(),
            };
            eprintln!("{}: REFUSED ({}): {e}{hint}", file.display(), e.code());
            ExitCode::FAILURE
        }
    }
}

fn inspect(file: &Path, keys_dir: Option<&Path>) -> anyhow::Result<()> {
    let head = verify::read_head(file, &VerifyLimits::default())
        .map_err(|e| anyhow::anyhow!("{} ({})", e, e.code()))?;
    match keys_dir {
        None => println!("signature: not checked (give --keys DIR to check it)"),
        Some(dir) => {
            let keys = TrustedKeys::load(dir)?;
            match keys.verify(&head.manifest_bytes, &head.signature) {
                _ if keys.is_empty() => println!("signature: no trusted key in {}", dir.display()),
                Some(s) => println!("signature: valid, key {} ({})", s.key, s.algorithm),
                None => println!(
                    "signature: NOT valid for any trusted key ({})",
                    keys.describe().join(", ")
                ),
            }
        }
    }
    println!("size: {} bytes", head.size);
    match Manifest::parse(&head.manifest_bytes) {
        Ok(_) => {}
        Err(e) => println!("manifest: does not pass the checks: {e}"),
    }
    io::stdout().write_all(&head.manifest_bytes)?;
    Ok(())
}

/// A payload file on disk and its place in the bundle.
struct Input {
    file: String,
    path: PathBuf,
    size: u64,
    sha256: String,
}

fn hash_file(path: &Path) -> anyhow::Result<(u64, String)> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(ctx.finish().as_ref())))
}

fn input(file: String, path: &Path) -> anyhow::Result<Input> {
    manifest::check_payload_name(&file).map_err(anyhow::Error::msg)?;
    let (size, sha256) = hash_file(path)?;
    Ok(Input {
        file,
        path: path.to_owned(),
        size,
        sha256,
    })
}

fn base_name(path: &Path) -> anyhow::Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .with_context(|| format!("{}: no usable file name", path.display()))
}

/// Removes a dir of temporary image tarballs however `create` ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Builds, signs and writes the bundle (to a temp file, renamed at the end).
/// Returns the manifest, the bundle's size and sha256.
pub fn create(a: &CreateArgs, services_file: &Path) -> anyhow::Result<(Manifest, u64, String)> {
    if a.out.extension().is_none_or(|x| x != EXTENSION) {
        bail!("{}: a bundle's name ends in .{EXTENSION}", a.out.display());
    }
    let key_pem =
        fs::read_to_string(&a.key).with_context(|| format!("reading {}", a.key.display()))?;
    let key =
        SigningKey::from_pem(&key_pem).map_err(|e| anyhow::anyhow!("{}: {e}", a.key.display()))?;
    let out_dir = match a.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let tmp = TempDir(out_dir.join(format!(".{}.parts", base_name(&a.out)?)));
    let _ = fs::remove_dir_all(&tmp.0);
    fs::create_dir_all(&tmp.0).with_context(|| format!("creating {}", tmp.0.display()))?;

    let mut inputs = Vec::new();
    let mut images = Vec::new();
    for spec in &a.images {
        let (service, image) = spec
            .split_once('=')
            .with_context(|| format!("--image {spec}: expected SERVICE=IMAGE"))?;
        let path = tmp.0.join(format!("image-{service}.tar"));
        let status = std::process::Command::new("docker")
            .arg("save")
            .arg("-o")
            .arg(&path)
            .arg(image)
            .status()
            .context("running docker save")?;
        if !status.success() {
            bail!("docker save {image} failed ({status})");
        }
        images.push((service.to_owned(), image.to_owned(), path));
    }
    for spec in &a.image_tars {
        let mut parts = spec.splitn(3, '=');
        let (Some(service), Some(image), Some(file)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!("--image-tar {spec}: expected SERVICE=IMAGE=FILE");
        };
        images.push((service.to_owned(), image.to_owned(), PathBuf::from(file)));
    }
    let mut components = Components::default();
    for (service, image, path) in images {
        let i = input(format!("payload/image-{service}.tar"), &path)?;
        components.images.push(ImageComponent {
            service,
            image,
            file: i.file.clone(),
            size: i.size,
            sha256: i.sha256.clone(),
        });
        inputs.push(i);
    }
    for spec in &a.models {
        let (service, model) = spec
            .split_once('=')
            .with_context(|| format!("--model {spec}: expected SERVICE=MODEL"))?;
        let backend = crate::ai::pulls::backend_of(service)
            .with_context(|| format!("--model {spec}: SERVICE is llm or embeddings"))?;
        crate::ai::check_model_name(model).map_err(anyhow::Error::msg)?;
        let store = match &a.model_store {
            Some(s) => s.clone(),
            None => {
                let catalog = crate::docker::load_catalog(services_file).map_err(|e| {
                    let e: Vec<String> = e.iter().map(ToString::to_string).collect();
                    anyhow::anyhow!("{}: {}", services_file.display(), e.join("; "))
                })?;
                catalog
                    .services
                    .iter()
                    .find(|s| s.role == backend.role())
                    .and_then(crate::ai::admission::store_dir)
                    .with_context(|| {
                        format!("no {service} runtime with a host model store in {}: name one with --model-store", services_file.display())
                    })?
            }
        };
        let safe: String = model
            .chars()
            .map(|c| if c == ':' { '-' } else { c })
            .collect();
        let path = tmp.0.join(format!("model-{service}-{safe}.tar"));
        crate::update::model_tar::write_model(&store, model, &path)?;
        let i = input(format!("payload/model-{service}-{safe}.tar"), &path)?;
        components.models.push(ModelComponent {
            service: service.to_owned(),
            name: model.to_owned(),
            file: i.file.clone(),
            size: i.size,
            sha256: i.sha256.clone(),
        });
        inputs.push(i);
    }
    for path in &a.migrations {
        let name = base_name(path)?;
        let i = input(format!("payload/migration-{name}"), path)?;
        let first = fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        components.migrations.push(MigrationComponent {
            name,
            file: i.file.clone(),
            size: i.size,
            sha256: i.sha256.clone(),
            transactional: first != "-- arasul:no-transaction",
        });
        inputs.push(i);
    }
    for path in &a.configs {
        let name = base_name(path)?;
        let i = input(format!("payload/config-{name}"), path)?;
        components.configs.push(ConfigComponent {
            name,
            file: i.file.clone(),
            size: i.size,
            sha256: i.sha256.clone(),
        });
        inputs.push(i);
    }
    if let Some(path) = &a.package {
        let i = input(format!("payload/package-{}", base_name(path)?), path)?;
        components.package = Some(PackageComponent {
            file: i.file.clone(),
            size: i.size,
            sha256: i.sha256.clone(),
        });
        inputs.push(i);
    }
    let now = chrono::Utc::now();
    let manifest = Manifest {
        format: manifest::FORMAT,
        version: a.version.clone(),
        min_version: a.min_version.clone(),
        build_hash: a
            .build_hash
            .clone()
            .unwrap_or_else(|| crate::build_info::BUILD_HASH.to_owned()),
        created_at: chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now),
        release_notes: a.notes.clone(),
        requires_reboot: a.requires_reboot,
        components,
    };
    let bytes = manifest.to_bytes();
    // What the box will check: the bytes must parse back to the same manifest.
    Manifest::parse(&bytes).map_err(anyhow::Error::msg)?;
    let sig = key.sign(&bytes).map_err(anyhow::Error::msg)?;

    let part = tmp.0.join("bundle.part");
    let f = File::create(&part).with_context(|| format!("creating {}", part.display()))?;
    let mut w = BundleWriter::new(
        BufWriter::with_capacity(1 << 20, f),
        now.timestamp().max(0) as u64,
    );
    w.append_bytes(MANIFEST_NAME, &bytes)?;
    w.append_bytes(SIGNATURE_NAME, &sig)?;
    // Payload in manifest order (the order `Manifest::payload` gives).
    for entry in manifest.payload() {
        let i = inputs
            .iter()
            .find(|i| i.file == entry.file)
            .context("payload entry without input")?;
        let mut src =
            File::open(&i.path).with_context(|| format!("opening {}", i.path.display()))?;
        w.append_reader(&i.file, i.size, &mut src)
            .with_context(|| format!("adding {}", i.path.display()))?;
    }
    let f = w
        .finish()?
        .into_inner()
        .map_err(|e| anyhow::anyhow!("writing {}: {}", part.display(), e.error()))?;
    f.sync_all()?;
    drop(f);
    let (size, sha) = hash_file(&part)?;
    fs::rename(&part, &a.out).with_context(|| format!("writing {}", a.out.display()))?;
    Ok((manifest, size, sha))
}
