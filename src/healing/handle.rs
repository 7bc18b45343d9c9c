//! The cheap, cloneable way to reach the self-healing worker from outside it
//! (the API's reboot route, anything else with a record for the trail):
//! commands over an mpsc, each answered on its own oneshot, as with the
//! supervisor. The worker is the one owner of reboots and of the trail;
//! nobody else builds a `RebootCtx` or writes `self_healing.log`.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::reboot::{Refused, SavedState};
use super::record::HealingRecord;

/// Commands waiting for the worker at most; a sender waits beyond that.
const QUEUE: usize = 64;

/// The `check` of a reboot refused because no worker took the request.
pub const NOT_RUNNING: &str = "healing_not_running";

/// What the worker is asked to do.
pub(crate) enum Command {
    /// The five safety checks (with the workflows drained), the state saved,
    /// logind asked; the outcome recorded in the trail before the reply.
    Reboot {
        reason: String,
        reply: oneshot::Sender<Result<SavedState, Refused>>,
    },
    /// Into the trail: the log at once, Postgres now if it is up (buffered
    /// otherwise), alerts as for the worker's own records.
    Record {
        record: HealingRecord,
        reply: oneshot::Sender<()>,
    },
}

/// No worker took the command: it is not running (stopped for good, or
/// never started, as in tests that build the state without it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the self-healing worker is not running")]
pub struct NotRunning;

#[derive(Clone)]
pub struct HealingHandle {
    tx: mpsc::Sender<Command>,
}

/// The worker's end; it outlives restarts of the worker, so commands sent
/// while it backs off wait for the next run. Once the worker is gone for
/// good it is dropped, and every command waiting or sent answers
/// [`NotRunning`].
#[derive(Clone)]
pub(crate) struct HealingInbox(Arc<Mutex<mpsc::Receiver<Command>>>);

impl HealingInbox {
    /// The receiver, held by one run of the worker at a time.
    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, mpsc::Receiver<Command>> {
        self.0.lock().await
    }
}

impl HealingHandle {
    /// A handle and the inbox the worker reads.
    pub(crate) fn new() -> (HealingHandle, HealingInbox) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (HealingHandle { tx }, HealingInbox(Arc::new(Mutex::new(rx))))
    }

    /// A handle with no worker behind it: every command answers
    /// [`NotRunning`] at once. For tests of other parts.
    pub fn detached() -> HealingHandle {
        HealingHandle::new().0
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NotRunning> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| NotRunning)?;
        rx.await.map_err(|_| NotRunning)
    }

    /// Reboots the box after every safety check (SPEC §7), waiting up to
    /// `healing.reboot.drain_timeout` for workflows; `Ok` once logind
    /// accepted, with the state saved for the check after the next start.
    /// The outcome is in the trail (`reboot` or `reboot_refused`) before
    /// this returns. No worker: refused with the check [`NOT_RUNNING`].
    pub async fn request_reboot(&self, reason: &str) -> Result<SavedState, Refused> {
        let reason = reason.to_string();
        self.ask(|reply| Command::Reboot { reason, reply })
            .await
            .unwrap_or_else(|NotRunning| {
                Err(Refused {
                    check: NOT_RUNNING,
                    message: NotRunning.to_string(),
                })
            })
    }

    /// Adds `record` to the trail; returns once it is in the log (and in
    /// Postgres, if it is up).
    pub async fn record(&self, record: HealingRecord) -> Result<(), NotRunning> {
        self.ask(|reply| Command::Record { record, reply }).await
    }
}

impl std::fmt::Debug for HealingHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealingHandle")
            .field("worker_listening", &!self.tx.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::healing::record::{EventKind, Severity};

    fn note() -> HealingRecord {
        HealingRecord::recorded(EventKind::FailedCleared, Severity::Info, None, "note")
    }

    #[tokio::test]
    async fn a_handle_without_a_worker_answers_at_once() {
        let h = HealingHandle::detached();
        assert_eq!(h.record(note()).await, Err(NotRunning));
        let refused = h.request_reboot("test").await.unwrap_err();
        assert_eq!(refused.check, NOT_RUNNING);
    }

    #[tokio::test]
    async fn commands_waiting_when_the_worker_goes_answer_not_running() {
        let (h, inbox) = HealingHandle::new();
        let waiting = tokio::spawn({
            let h = h.clone();
            async move { h.record(note()).await }
        });
        // The command is queued: nobody reads yet.
        while inbox.lock().await.is_empty() {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished());
        // The worker is gone for good: its inbox is dropped with the queue.
        drop(inbox);
        assert_eq!(waiting.await.unwrap(), Err(NotRunning));
        let refused = h.request_reboot("test").await.unwrap_err();
        assert_eq!(refused.check, NOT_RUNNING);
    }

    #[tokio::test]
    async fn a_worker_that_reads_answers_each_command() {
        let (h, inbox) = HealingHandle::new();
        let worker = tokio::spawn(async move {
            let mut rx = inbox.lock().await;
            let mut got = Vec::new();
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    Command::Record { record, reply } => {
                        got.push(record);
                        let _ = reply.send(());
                    }
                    Command::Reboot { reason, reply } => {
                        let _ = reply.send(Err(Refused {
                            check: "reboot_disabled",
                            message: reason,
                        }));
                    }
                }
            }
            got
        });
        assert_eq!(h.record(note()).await, Ok(()));
        let refused = h.request_reboot("why").await.unwrap_err();
        assert_eq!(
            (refused.check, refused.message.as_str()),
            ("reboot_disabled", "why")
        );
        drop(h);
        let got = worker.await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event_type, EventKind::FailedCleared);
    }
}
