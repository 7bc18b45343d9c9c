//! Which archives a destination keeps: the newest of each of the last
//! `keep_daily` days that have one, and the newest of each of the last
//! `keep_weekly` ISO weeks that have one (UTC). The newest archive is always
//! kept. Pure; the destinations delete what it names.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc};

/// Archive file names: `arasul-backup-<yyyymmddThhmmssZ>.tar`.
pub const PREFIX: &str = "arasul-backup-";
pub const SUFFIX: &str = ".tar";

pub fn file_name(at: DateTime<Utc>) -> String {
    format!("{PREFIX}{}{SUFFIX}", stamp(at))
}

/// `20261206T033000Z`: also the run's id.
pub fn stamp(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

/// The time in an archive's name; None for any other file (never deleted).
pub fn parse_name(name: &str) -> Option<DateTime<Utc>> {
    let s = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// The names of `names` to delete (archives only; other names are ignored).
pub fn to_delete(names: &[String], keep_daily: u32, keep_weekly: u32) -> Vec<String> {
    let mut archives: Vec<(DateTime<Utc>, &String)> = names
        .iter()
        .filter_map(|n| parse_name(n).map(|t| (t, n)))
        .collect();
    archives.sort_by_key(|a| std::cmp::Reverse(a.0));
    let mut keep: BTreeSet<&String> = BTreeSet::new();
    if let Some((_, newest)) = archives.first() {
        keep.insert(newest);
    }
    let mut days: BTreeSet<NaiveDate> = BTreeSet::new();
    let mut weeks: BTreeSet<(i32, u32)> = BTreeSet::new();
    for (at, name) in &archives {
        let day = at.date_naive();
        if !days.contains(&day) && days.len() < keep_daily as usize {
            days.insert(day);
            keep.insert(name);
        }
        let w = at.iso_week();
        let week = (w.year(), w.week());
        if !weeks.contains(&week) && weeks.len() < keep_weekly as usize {
            weeks.insert(week);
            keep.insert(name);
        }
    }
    archives
        .iter()
        .filter(|(_, n)| !keep.contains(n))
        .map(|(_, n)| (*n).clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(d: u32, h: u32) -> DateTime<Utc> {
        // 2026-11-01 is a Sunday; day numbers run on from it.
        Utc.with_ymd_and_hms(2026, 11, 1, h, 30, 0).unwrap() + chrono::Duration::days(d as i64)
    }

    #[test]
    fn names_round_trip_and_other_files_are_not_archives() {
        let t = Utc.with_ymd_and_hms(2026, 12, 6, 3, 30, 5).unwrap();
        assert_eq!(file_name(t), "arasul-backup-20261206T033005Z.tar");
        assert_eq!(parse_name(&file_name(t)), Some(t));
        for other in [
            "notes.txt",
            "arasul-backup-2026.tar",
            "arasul-backup-20261206T033005Z.tar.part",
        ] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }

    #[test]
    fn thirty_days_of_daily_runs_keep_seven_days_and_four_weeks() {
        // Two runs a day (03:30 and a manual one at 15:30) for 30 days.
        let mut names: Vec<String> = (0..30)
            .flat_map(|d| [file_name(at(d, 3)), file_name(at(d, 15))])
            .collect();
        names.push("README.txt".into());
        let gone = to_delete(&names, 7, 4);
        let kept: Vec<&String> = names.iter().filter(|n| !gone.contains(n)).collect();
        // The newest of each of the last 7 days, and the newest of 4 weeks
        // (3 of them are among those days' week: 7 days span 2 ISO weeks).
        let mut expected: Vec<String> = (23..30).map(|d| file_name(at(d, 15))).collect();
        // Day 29 = 2026-11-30 (Mon, week 49); days 23..=28 are week 48; the
        // weekly picks are the newest of weeks 49, 48, 47 and 46.
        expected.push(file_name(at(21, 15))); // Sun 2026-11-22, week 47
        expected.push(file_name(at(14, 15))); // Sun 2026-11-15, week 46
        expected.push("README.txt".into());
        expected.sort();
        let mut kept: Vec<String> = kept.into_iter().cloned().collect();
        kept.sort();
        assert_eq!(kept, expected);
        assert!(!gone.contains(&"README.txt".to_string()));
    }

    #[test]
    fn the_newest_archive_is_kept_even_with_nothing_to_keep() {
        let names = vec![file_name(at(0, 3)), file_name(at(1, 3))];
        assert_eq!(to_delete(&names, 0, 0), vec![file_name(at(0, 3))]);
        assert!(to_delete(&[], 7, 4).is_empty());
    }
}
