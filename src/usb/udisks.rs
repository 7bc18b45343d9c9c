//! UDisks2 over D-Bus (zbus): the filesystems that appear, read-only mounts
//! of those not mounted yet. Only non-system block devices (`HintSystem`
//! false: removable media) are considered, so internal partitions are never
//! mounted.

use std::collections::HashMap;
use std::path::PathBuf;

use zbus::{OwnedObjectPath, Variant as Value};

pub const SERVICE: &str = "org.freedesktop.UDisks2";
pub const ROOT: &str = "/org/freedesktop/UDisks2";
pub const FILESYSTEM: &str = "org.freedesktop.UDisks2.Filesystem";

#[zbus::proxy(
    interface = "org.freedesktop.UDisks2.Filesystem",
    default_service = "org.freedesktop.UDisks2"
)]
pub trait Filesystem {
    #[zbus(property)]
    fn mount_points(&self) -> zbus::Result<Vec<Vec<u8>>>;

    fn mount(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<String>;

    fn unmount(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.UDisks2.Block",
    default_service = "org.freedesktop.UDisks2"
)]
pub trait Block {
    #[zbus(property)]
    fn hint_system(&self) -> zbus::Result<bool>;

    #[zbus(property)]
    fn id_label(&self) -> zbus::Result<String>;
}

/// Connects to `address`, or the system bus when `None`.
pub async fn connect(address: Option<&str>) -> zbus::Result<zbus::Connection> {
    match address {
        Some(a) => zbus::connection::Builder::address(a).build().await,
        None => zbus::connection::Builder::system().build().await,
    }
}

/// The object manager of UDisks2.
pub async fn object_manager(
    conn: &zbus::Connection,
) -> zbus::Result<zbus::fdo::ObjectManagerProxy<'static>> {
    zbus::fdo::ObjectManagerProxy::builder(conn)
        .destination(SERVICE)
        .path(ROOT)
        .build()
        .await
}

/// Where the filesystem at `object` is mounted: its first mount point, or a
/// fresh read-only mount when it has none and `mount` is set. `Ok(None)` for
/// system devices and unmounted ones we may not mount.
pub async fn mount_point(
    conn: &zbus::Connection,
    object: &OwnedObjectPath,
    mount: bool,
) -> zbus::Result<Option<PathBuf>> {
    let block = BlockProxy::builder(conn)
        .path(object.clone())
        .build()
        .await?;
    // A device without the Block interface is not something we mount.
    if block.hint_system().await.unwrap_or(true) {
        return Ok(None);
    }
    let fs = FilesystemProxy::builder(conn)
        .path(object.clone())
        .build()
        .await?;
    if let Some(p) = first_mount_point(fs.mount_points().await?) {
        return Ok(Some(p));
    }
    if !mount {
        return Ok(None);
    }
    let opts = HashMap::from([
        ("options", Value::from("ro")),
        ("auth.no_user_interaction", Value::from(true)),
    ]);
    match fs.mount(opts).await {
        Ok(p) => Ok(Some(PathBuf::from(p))),
        // Mounted meanwhile by someone else (desktop automounter): use theirs.
        Err(e) => match first_mount_point(fs.mount_points().await?) {
            Some(p) => Ok(Some(p)),
            None => Err(e),
        },
    }
}

/// The removable filesystem labelled `label`, mounted read-write (for
/// backups): its mount point when that is writable; else, with `mount`,
/// mounted `rw` (a read-only mount, as the update worker makes them, is
/// unmounted first). `Ok(None)`: no such stick, or it may not be mounted.
pub async fn writable_mount(
    conn: &zbus::Connection,
    label: &str,
    mount: bool,
) -> zbus::Result<Option<PathBuf>> {
    let om = object_manager(conn).await?;
    for (object, ifaces) in om.get_managed_objects().await? {
        if !ifaces.keys().any(|i| i.as_str() == FILESYSTEM) {
            continue;
        }
        let block = BlockProxy::builder(conn)
            .path(object.clone())
            .build()
            .await?;
        if block.hint_system().await.unwrap_or(true)
            || block.id_label().await.unwrap_or_default() != label
        {
            continue;
        }
        let fs = FilesystemProxy::builder(conn)
            .path(object.clone())
            .build()
            .await?;
        let quiet = || HashMap::from([("auth.no_user_interaction", Value::from(true))]);
        if let Some(p) = first_mount_point(fs.mount_points().await?) {
            if !read_only(&p) {
                return Ok(Some(p));
            }
            if !mount {
                return Ok(None);
            }
            fs.unmount(quiet()).await?;
        } else if !mount {
            return Ok(None);
        }
        let mut opts = quiet();
        opts.insert("options", Value::from("rw"));
        return fs.mount(opts).await.map(|p| Some(PathBuf::from(p)));
    }
    Ok(None)
}

/// The filesystem at `p` is mounted read-only.
pub fn read_only(p: &std::path::Path) -> bool {
    rustix::fs::statvfs(p).is_ok_and(|st| st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

/// UDisks2 gives mount points as NUL-terminated byte strings.
fn first_mount_point(points: Vec<Vec<u8>>) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    points.into_iter().find_map(|mut p| {
        while p.last() == Some(&0) {
            p.pop();
        }
        (!p.is_empty()).then(|| PathBuf::from(std::ffi::OsString::from_vec(p)))
    })
}
