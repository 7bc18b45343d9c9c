//! What outlives a restart while the DB cannot take it: the revocation mark
//! (secrets dir) and the session spool (state dir). Small files written
//! atomically, all of it blocking: async callers use `spawn_blocking` (the
//! logout handlers too: one small fsync before they answer). A broken file
//! never stops the daemon: it is logged, and auth fails closed (every
//! session issued before now is revoked) rather than bring back a session
//! someone logged out.

use chrono::{DateTime, Utc};

use super::{Auth, RevocationMark, lock};

/// How far [`Auth::sync_spool`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolSync {
    /// The DB is away or failing (or a logout must not be lost): write
    /// whatever changed since the last write.
    Always,
    /// The DB has taken the writes: only a file that exists is brought up
    /// to date (rewritten with what is still owed, or removed), so a
    /// healthy DB costs no disk writes.
    Tidy,
}

impl Auth {
    /// At open: the mark on disk, then the spool a previous run left (its
    /// sessions and revocations apply at once, its writes go to the DB).
    pub(super) fn restore_durable_state(&self, now: DateTime<Utc>) {
        self.take_up_mark(now);
        let Some(spool) = &self.spool else {
            return;
        };
        match spool.load() {
            Ok(writes) if writes.is_empty() => {}
            Ok(writes) => {
                tracing::info!(
                    path = %spool.path().display(),
                    writes = writes.len(),
                    "session changes the database never got were taken up from the spool"
                );
                lock(&self.sessions).replay(writes, now);
            }
            Err(e) => self.fail_closed(&e, now),
        }
    }

    /// Adds the mark on disk (ours, or one `admin set-password` wrote) to
    /// the one the sessions are checked against.
    pub(super) fn take_up_mark(&self, now: DateTime<Utc>) {
        match self.secrets.read_revocation_mark() {
            Ok(mark) => lock(&self.sessions).apply_mark(&mark),
            Err(e) => self.fail_closed(&e, now),
        }
    }

    fn fail_closed(&self, cause: &anyhow::Error, now: DateTime<Utc>) {
        tracing::error!(
            error = %format!("{cause:#}"),
            "cannot tell which sessions were logged out: every session issued before now is revoked (log in again)"
        );
        let mut mark = RevocationMark::default();
        mark.revoke_through(now, None);
        lock(&self.sessions).apply_mark(&mark);
        if let Err(e) = self.persist_mark() {
            tracing::error!(error = %format!("{e:#}"), "revocation not saved");
        }
    }

    /// Writes the sessions' mark into the secrets dir (merged with the file).
    pub(super) fn persist_mark(&self) -> anyhow::Result<()> {
        let mark = lock(&self.sessions).mark().clone();
        self.secrets.add_revocation_mark(&mark).map(drop)
    }

    /// Brings the spool file in line with the session writes the DB does
    /// not have yet (those being written included). Snapshot and write
    /// happen under the spool's lock, so concurrent callers (a logout, the
    /// persister) land on disk in order and the newest snapshot wins.
    /// Blocking.
    pub fn sync_spool(&self, how: SpoolSync) -> anyhow::Result<()> {
        let Some(spool) = &self.spool else {
            return Ok(());
        };
        let mut state = spool.lock();
        let (generation, writes) = lock(&self.sessions).unpersisted();
        let nothing_to_do = state.written == Some(generation)
            || (!state.on_disk && (how == SpoolSync::Tidy || writes.is_empty()));
        if nothing_to_do {
            return Ok(());
        }
        spool.store(&mut state, writes)?;
        state.written = Some(generation);
        Ok(())
    }
}
