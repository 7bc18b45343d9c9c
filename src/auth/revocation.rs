//! The revocation mark: "every session created at or before T is revoked,
//! but perhaps the one that asked". Logout-all and password changes move it
//! forward and `SessionStore` refuses by it. It lives in the secrets dir
//! (`secrets::REVOCATION_MARK_FILE`) because the session table can lose a
//! revoke-all: the queued write dies with the process when the DB is down,
//! and an update rollback restores old rows. Pure data, no I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationMark {
    /// Every session created at or before this instant is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_through: Option<DateTime<Utc>>,
    /// Every session created at or before `at` but `keep` is revoked (a
    /// password change through the API keeps the caller's session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub others_through: Option<KeptSession>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeptSession {
    pub at: DateTime<Utc>,
    /// The `jti` of the session that stays valid.
    pub keep: String,
}

impl RevocationMark {
    /// When the session `jti`, created at `created_at`, was revoked by the
    /// mark; None if the mark does not cover it.
    pub fn revoked_at(&self, jti: &str, created_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let all = self.all_through.filter(|t| created_at <= *t);
        let others = self
            .others_through
            .as_ref()
            .filter(|o| created_at <= o.at && jti != o.keep)
            .map(|o| o.at);
        all.or(others)
    }

    /// The latest instant covered: sessions created after it are untouched.
    pub fn latest(&self) -> Option<DateTime<Utc>> {
        let others = self.others_through.as_ref().map(|o| o.at);
        self.all_through.max(others)
    }

    /// Revokes every session created at or before `at`, but `keep`.
    ///
    /// Only the latest `keep` is remembered: a later change with another
    /// kept session revokes the earlier kept one if it is older than `at`
    /// (it is: the caller of that later change must have been live, and the
    /// store refuses to keep a session it already revoked).
    pub fn revoke_through(&mut self, at: DateTime<Utc>, keep: Option<&str>) {
        match keep {
            None => self.all_through = self.all_through.max(Some(at)),
            Some(keep) => {
                if self.others_through.as_ref().is_none_or(|o| o.at < at) {
                    self.others_through = Some(KeptSession {
                        at,
                        keep: keep.to_owned(),
                    });
                }
            }
        }
        // A revoke-all as late as the keep-one covers it.
        if let (Some(all), Some(o)) = (self.all_through, &self.others_through)
            && all >= o.at
        {
            self.others_through = None;
        }
    }

    /// Adds what `other` revokes (e.g. the file written by another process).
    pub fn merge(&mut self, other: &RevocationMark) {
        if let Some(at) = other.all_through {
            self.revoke_through(at, None);
        }
        if let Some(o) = &other.others_through {
            self.revoke_through(o.at, Some(&o.keep));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_750_000_000_000 + ms).unwrap()
    }

    #[test]
    fn covers_sessions_created_at_or_before_the_instant_but_the_kept_one() {
        let mut m = RevocationMark::default();
        assert_eq!(m.revoked_at("a", t(0)), None);
        m.revoke_through(t(100), Some("me"));
        assert_eq!(m.revoked_at("a", t(100)), Some(t(100)));
        assert_eq!(m.revoked_at("a", t(101)), None);
        assert_eq!(m.revoked_at("me", t(50)), None);
        m.revoke_through(t(200), None);
        assert_eq!(m.revoked_at("me", t(50)), Some(t(200)));
        assert_eq!(m.others_through, None, "subsumed by the revoke-all");
        assert_eq!(m.latest(), Some(t(200)));
        // Never moves back.
        m.revoke_through(t(150), None);
        assert_eq!(m.all_through, Some(t(200)));
    }

    #[test]
    fn merge_keeps_the_latest_of_each_and_round_trips_through_json() {
        let mut disk = RevocationMark::default();
        disk.revoke_through(t(300), None);
        let mut mine = RevocationMark::default();
        mine.revoke_through(t(100), None);
        mine.revoke_through(t(400), Some("me"));
        mine.merge(&disk);
        assert_eq!(mine.all_through, Some(t(300)));
        assert_eq!(mine.others_through.as_ref().unwrap().keep, "me");
        assert_eq!(mine.revoked_at("me", t(250)), Some(t(300)));
        assert_eq!(mine.revoked_at("me", t(350)), None);
        assert_eq!(mine.revoked_at("other", t(350)), Some(t(400)));

        let json = serde_json::to_string(&mine).unwrap();
        assert_eq!(serde_json::from_str::<RevocationMark>(&json).unwrap(), mine);
        let empty: RevocationMark = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, RevocationMark::default());
        assert!(serde_json::from_str::<RevocationMark>(r#"{"all":"x"}"#).is_err());
    }
}
