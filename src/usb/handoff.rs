//! The USB worker wired to the daemon's updater: `UpdateManager` verifies the
//! copied bundle into staging (one update at a time: a running one makes the
//! USB bundle `update_in_progress`), and `auto` mode starts it at once.

use std::path::PathBuf;

use futures::future::BoxFuture;

use super::{UsbHandoff, UsbLog, UsbWorker};
use crate::config::Config;
use crate::tasks::Workers;
use crate::update::verify::VerifyLimits;
use crate::update::{Source, UpdateManager, Version};

impl UsbHandoff for UpdateManager {
    fn installed(&self) -> Version {
        // Unparseable would refuse every bundle in submit anyway.
        Version::parse(&self.installed_version()).unwrap_or_else(|_| Version::new(0, 0, 0))
    }

    fn submit(
        &self,
        bundle: PathBuf,
        apply: bool,
    ) -> BoxFuture<'_, Result<String, (String, String)>> {
        Box::pin(async move {
            let err = |e: crate::update::UpdateError| (e.code().to_owned(), e.to_string());
            let check = UpdateManager::submit(self, &bundle, Source::Usb)
                .await
                .map_err(err)?;
            let what = format!(
                "version {} verified (signed by {}, {}), sha256 {}",
                check.version, check.signature.key, check.signature.algorithm, check.sha256
            );
            if apply {
                self.apply().map_err(err)?;
                Ok(format!("{what}; apply started"))
            } else {
                Ok(format!("{what}; pending until applied"))
            }
        })
    }
}

/// Starts the `usb-updates` worker unless `usb.enabled` is false.
pub fn spawn(workers: &Workers, config: &Config, updates: &UpdateManager) {
    if !config.usb.enabled {
        return;
    }
    let worker = UsbWorker {
        config: config.usb.clone(),
        keys_dir: config.paths.keys_dir.clone(),
        state_dir: config.paths.state_dir.clone(),
        limits: VerifyLimits {
            max_bundle_bytes: config.update.max_bundle_bytes,
            ..VerifyLimits::default()
        },
        log: UsbLog::new(&config.paths.log_dir),
        handoff: std::sync::Arc::new(updates.clone()),
    };
    worker.spawn(workers);
}
