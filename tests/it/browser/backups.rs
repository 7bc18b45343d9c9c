//! The Backups card in Settings, in Chromium against the real daemon and
//! PostgreSQL: what a new owner does (back up now, daily backups to a
//! stick, restore with a confirmation).

use std::time::Duration;

use super::common::{self, PrivatePostgres, TestConfig, free_port};
use super::webdriver::Browser;
use super::{assert_labelled, browser_login, start_daemon, wait_healthy};

#[test]
fn the_owner_backs_up_now_turns_on_daily_backups_to_a_stick_and_restores_in_chromium() {
    let Some(b) = Browser::start() else { return };
    let mut pg = PrivatePostgres::init(free_port());
    pg.start();
    let cfg = TestConfig::new(&pg.url(), "metrics:\n  webhook_check: \"\"\n");
    let _daemon = start_daemon(&cfg);
    wait_healthy(&cfg);
    let token = common::admin_token(&cfg);
    let base = cfg.url("");
    browser_login(&b, &base, "settings");
    b.wait_js(
        "the backups card",
        Duration::from_secs(20),
        "document.querySelector('#backup-summary p') && document.querySelector('#backups-table')",
    );
    assert_labelled(&b, "settings");
    assert_eq!(b.text("#backup-summary p"), "There is no good backup yet.");

    b.click("#backup-now");
    b.wait_js(
        "a good backup in the list",
        Duration::from_secs(60),
        "document.querySelector('#backups-table tbody tr[data-kind=backup] .badge.ok')",
    );
    assert!(b.text("#backup-summary p").starts_with("Last good backup:"));

    // Daily at 02:15 to the stick called BACKUP.
    b.exec(
        "const s = document.querySelector('#backup-dest'); s.value = 'usb'; s.dispatchEvent(new Event('change'));
         const t = document.querySelector('#backup-at'); t.value = '02:15';
         document.querySelector('#backup-daily').checked = true;",
        vec![],
    );
    b.type_into("#backup-usb-label", "BACKUP");
    b.click("#backup-save");
    common::wait_until("the settings applied", Duration::from_secs(20), || {
        let (_, v) = common::get_json_auth(&cfg.url("/api/backups"), &token)?;
        (v["destination"] == "usb:BACKUP"
            && v["settings"]["schedule"]["at"] == "02:15"
            && v["settings"]["schedule"]["enabled"] == true)
            .then_some(())
    });

    // Restore the backup made above, after the confirmation.
    b.click("#backups-table [data-action=restore]");
    b.click("dialog[open] [data-action=confirm]");
    b.wait_js(
        "the restore in the list",
        Duration::from_secs(60),
        "document.querySelector('#backups-table tbody tr[data-kind=restore] .badge.ok')",
    );
}
