//! Sync windows: the operator's times in which automatic changes wait. A window is `allow`
//! or `deny`, opens on a cron schedule in its own time zone (or once, at a `start`
//! timestamp) and stays open for its `duration`. Registry upgrades always follow the
//! windows; commits only those that say `commits: true`.
//!
//! The rule, as in Argo CD: a deny window that is open holds the change; where allow
//! windows apply, the change happens only while one of them is open; a deny window wins
//! over an allow window open at the same time. An operator's own action is never held.
//!
//! Pure: [`SyncWindows::decode`] reads the operator's file, and every decision takes `now`
//! as a value; nothing here reads the clock.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::manifest::decode::{Decoder, index, join};
use crate::manifest::{TextFile, yaml};

const TOP_FIELDS: &[&str] = &["windows"];
const WINDOW_FIELDS: &[&str] = &[
    "name", "kind", "schedule", "start", "duration", "timezone", "commits", "servers",
];

/// The longest a window may stay open: a schedule's occurrences are looked for this far
/// back.
pub const MAX_DURATION: SignedDuration = SignedDuration::from_hours(31 * 24);

/// How far ahead the next opening of an allow window is looked for.
const HORIZON: SignedDuration = SignedDuration::from_hours(400 * 24);

/// Whether a window lets changes through or holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Allow,
    Deny,
}

/// What a window can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A newer version the registry offers that a server's update policy would roll out.
    Registry,
    /// A new commit of the manifest repository.
    Commit,
}

/// When a window opens.
#[derive(Clone, Debug)]
pub enum Opens {
    /// On every match of a cron schedule, read in the window's time zone.
    Schedule {
        cron: Cron,
        text: String,
        tz: TimeZone,
        tz_name: String,
    },
    /// Once.
    At(Timestamp),
}

/// One window of the operator's file.
#[derive(Clone, Debug)]
pub struct Window {
    pub name: String,
    pub kind: Kind,
    pub opens: Opens,
    pub duration: SignedDuration,
    /// Whether new commits wait too (registry upgrades always do).
    pub commits: bool,
    /// The servers whose registry upgrades it holds; empty: all of them.
    pub servers: Vec<String>,
}

/// The operator's windows (none: nothing ever waits).
#[derive(Clone, Debug, Default)]
pub struct SyncWindows {
    pub windows: Vec<Window>,
    /// Where they came from, for messages.
    pub source: String,
}

/// A window open now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OpenWindow {
    pub name: String,
    pub kind: Kind,
    /// `registry`, and `commit` when the window holds commits too.
    pub applies_to: Vec<Change>,
    /// The servers it applies to; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    pub opened: Timestamp,
    pub until: Timestamp,
}

/// Why a change waits: the window that holds it, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Held {
    /// The window's name. For `kind: allow`, the allow window whose opening releases it
    /// (the change waits because none of the allow windows that apply is open).
    pub window: String,
    pub kind: Kind,
    pub change: Change,
    /// When the change may happen (the deny window closes, or an allow window opens);
    /// absent when no allow window opens within 400 days.
    pub until: Option<Timestamp>,
    /// What waits: the version a registry upgrade would move to, or the commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub what: Option<String>,
}

impl Window {
    fn applies(&self, change: Change, server: Option<&str>) -> bool {
        match change {
            Change::Commit => self.commits,
            Change::Registry => {
                self.servers.is_empty()
                    || server.is_some_and(|s| self.servers.iter().any(|w| w == s))
            }
        }
    }

    /// The occurrence open at `now`: (opened, closes).
    pub fn open_at(&self, now: Timestamp) -> Option<(Timestamp, Timestamp)> {
        let opened = match &self.opens {
            Opens::At(start) => Some(*start).filter(|s| *s <= now),
            Opens::Schedule { cron, tz, .. } => {
                cron.latest_at_or_before(tz, now, now.checked_sub(self.duration).ok()?)
            }
        }?;
        let closes = opened.checked_add(self.duration).ok()?;
        (now < closes).then_some((opened, closes))
    }

    /// The first opening after `now`, within `until`.
    fn next_opening(&self, now: Timestamp, until: Timestamp) -> Option<Timestamp> {
        match &self.opens {
            Opens::At(start) => Some(*start).filter(|s| *s > now && *s <= until),
            Opens::Schedule { cron, tz, .. } => cron.earliest_after(tz, now, until),
        }
    }

    fn applies_to(&self) -> Vec<Change> {
        let mut a = vec![Change::Registry];
        if self.commits {
            a.push(Change::Commit);
        }
        a
    }
}

impl SyncWindows {
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Whether `change` (of `server`, for a registry upgrade) waits at `now`, and why.
    pub fn hold(&self, change: Change, server: Option<&str>, now: Timestamp) -> Option<Held> {
        let applying: Vec<&Window> = self
            .windows
            .iter()
            .filter(|w| w.applies(change, server))
            .collect();
        // A deny window wins; of several, the one that closes last says until when.
        let deny = applying
            .iter()
            .filter(|w| w.kind == Kind::Deny)
            .filter_map(|w| w.open_at(now).map(|(_, closes)| (w, closes)))
            .max_by_key(|(_, closes)| *closes);
        if let Some((w, closes)) = deny {
            return Some(Held {
                window: w.name.clone(),
                kind: Kind::Deny,
                change,
                until: Some(closes),
                what: None,
            });
        }
        let allows: Vec<&&Window> = applying.iter().filter(|w| w.kind == Kind::Allow).collect();
        if allows.is_empty() || allows.iter().any(|w| w.open_at(now).is_some()) {
            return None;
        }
        let horizon = now.checked_add(HORIZON).unwrap_or(Timestamp::MAX);
        let next = allows
            .iter()
            .filter_map(|w| w.next_opening(now, horizon).map(|at| (w, at)))
            .min_by_key(|(_, at)| *at);
        Some(Held {
            window: next.map_or_else(|| allows[0].name.clone(), |(w, _)| w.name.clone()),
            kind: Kind::Allow,
            change,
            until: next.map(|(_, at)| at),
            what: None,
        })
    }

    /// The windows open at `now`.
    pub fn open(&self, now: Timestamp) -> Vec<OpenWindow> {
        self.windows
            .iter()
            .filter_map(|w| {
                w.open_at(now).map(|(opened, until)| OpenWindow {
                    name: w.name.clone(),
                    kind: w.kind,
                    applies_to: w.applies_to(),
                    servers: w.servers.clone(),
                    opened,
                    until,
                })
            })
            .collect()
    }

    /// The next time after `now`, and no later than `until`, at which a window opens or
    /// closes: what waits may be released then, so the sync loop wakes.
    pub fn next_boundary(&self, now: Timestamp, until: Timestamp) -> Option<Timestamp> {
        self.windows
            .iter()
            .filter_map(|w| {
                let closes = w.open_at(now).map(|(_, closes)| closes);
                let opens = w.next_opening(now, until);
                closes.into_iter().chain(opens).min()
            })
            .filter(|at| *at <= until)
            .min()
    }

    /// Reads the operator's sync windows file; problems go to `d`.
    pub fn decode(d: &mut Decoder, file: &TextFile) -> Option<SyncWindows> {
        let root = match yaml::parse(&file.text) {
            Ok(Some(root)) => root,
            Ok(None) => {
                d.error("", "the sync windows file is empty; list `windows`");
                return None;
            }
            Err(e) => {
                d.diags
                    .error(e.at, "", format!("invalid YAML: {}", e.message));
                return None;
            }
        };
        let obj = d.object(&root, "", TOP_FIELDS)?;
        let list = d.required(&obj, "windows")?;
        let items = d.list(list, "windows")?;
        let mut windows = Vec::new();
        let mut names = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let (name, window) = decode_window(d, item, &index("windows", i));
            if let Some(name) = name {
                if names.contains(&name) {
                    d.error(
                        &join(&index("windows", i), "name"),
                        format!("another window is named `{name}`"),
                    );
                }
                names.push(name);
            }
            windows.extend(window);
        }
        Some(SyncWindows {
            windows,
            source: file.path.clone(),
        })
    }
}

/// One window, and its name (also when something else about it is wrong).
fn decode_window(
    d: &mut Decoder,
    node: &yaml::Node,
    path: &str,
) -> (Option<String>, Option<Window>) {
    let Some(obj) = d.object(node, path, WINDOW_FIELDS) else {
        return (None, None);
    };
    let field = |f: &str| join(path, f);
    let name = d
        .required(&obj, "name")
        .and_then(|n| d.string(n, &field("name")));
    let kind = d.required(&obj, "kind").and_then(|n| {
        d.choice(
            n,
            &field("kind"),
            &[("allow", Kind::Allow), ("deny", Kind::Deny)],
        )
    });
    let duration = d
        .required(&obj, "duration")
        .and_then(|n| d.string(n, &field("duration")))
        .and_then(|text| {
            let parsed = crate::settings::parse_duration(&text)
                .and_then(|std| SignedDuration::try_from(std).map_err(|e| e.to_string()))
                .and_then(|sd| {
                    if sd > MAX_DURATION {
                        Err(format!("`{text}` is longer than 31 days"))
                    } else {
                        Ok(sd)
                    }
                });
            parsed
                .map_err(|message| d.error(&field("duration"), message))
                .ok()
        });
    let commits = obj
        .get("commits")
        .map_or(Some(false), |n| d.bool(n, &field("commits")));
    let servers = obj
        .get("servers")
        .map_or(Some(Vec::new()), |n| d.string_list(n, &field("servers")));
    if commits == Some(true) && servers.as_ref().is_some_and(|s| !s.is_empty()) {
        d.error(
            &field("servers"),
            "a window that holds commits holds them whole; `servers` only narrows registry upgrades (use two windows)",
        );
    }
    let timezone = obj
        .get("timezone")
        .and_then(|n| d.string(n, &field("timezone")));
    let opens = match (obj.get("schedule"), obj.get("start")) {
        (Some(_), Some(_)) | (None, None) => {
            d.error(
                path,
                "give either `schedule` (cron: minute hour day-of-month month day-of-week) or `start` (an RFC 3339 timestamp)",
            );
            None
        }
        (Some(n), None) => d.string(n, &field("schedule")).and_then(|text| {
            let cron = Cron::parse(&text)
                .map_err(|message| d.error(&field("schedule"), message))
                .ok();
            let tz_name = timezone.unwrap_or_else(|| "UTC".to_owned());
            let tz = TimeZone::get(&tz_name)
                .map_err(|e| {
                    d.error(
                        &field("timezone"),
                        format!("`{tz_name}` is not a known IANA time zone: {e}"),
                    )
                })
                .ok();
            match (cron, tz) {
                (Some(cron), Some(tz)) => Some(Opens::Schedule {
                    cron,
                    text,
                    tz,
                    tz_name,
                }),
                _ => None,
            }
        }),
        (None, Some(n)) => {
            if timezone.is_some() {
                d.error(
                    &field("timezone"),
                    "`timezone` goes with `schedule`; a `start` carries its own offset",
                );
            }
            d.string(n, &field("start")).and_then(|text| {
                text.parse::<Timestamp>()
                    .map_err(|e| {
                        d.error(
                            &field("start"),
                            format!(
                                "`{text}` is not an RFC 3339 timestamp (2026-12-05T18:00:00Z): {e}"
                            ),
                        )
                    })
                    .ok()
                    .map(Opens::At)
            })
        }
    };
    let window = (|| {
        Some(Window {
            name: name.clone()?,
            kind: kind?,
            opens: opens?,
            duration: duration?,
            commits: commits?,
            servers: servers?,
        })
    })();
    (name, window)
}

/// A five-field cron schedule: minute, hour, day of month, month, day of week (0 or 7 is
/// Sunday), each `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a list of
/// these; months and days may be named (`jan`, `mon`). `@hourly`, `@daily`, `@weekly`,
/// `@monthly` and `@yearly` stand for their usual schedules. As in cron, when both day
/// fields are restricted a day matching either one matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Whether the day-of-month and day-of-week fields were `*` (unrestricted).
    any_day: bool,
    any_weekday: bool,
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field's matching values as a bit set; `names[i]` stands for `base + i`.
fn field(
    text: &str,
    what: &str,
    lo: u32,
    hi: u32,
    names: &[&str],
    base: u32,
) -> Result<u64, String> {
    let value = |t: &str| -> Result<u32, String> {
        let lower = t.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(base + i as u32);
        }
        let v: u32 = t.parse().map_err(|_| format!("`{t}` is not a {what}"))?;
        if v < lo || v > hi {
            return Err(format!("{what} `{v}` is outside {lo}-{hi}"));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("`{s}` is not a step (a whole number above 0)"))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (from, to) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            // `a/n` runs from a to the end, as in Vixie cron.
            (v, if step > 1 { hi } else { v })
        };
        if from > to {
            return Err(format!("the range `{range}` runs backwards"));
        }
        let mut v = from;
        while v <= to {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Cron {
    pub fn parse(text: &str) -> Result<Cron, String> {
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            t if t.starts_with('@') => {
                return Err(format!(
                    "`{t}` is not a schedule; use five fields or @hourly, @daily, @weekly, @monthly, @yearly"
                ));
            }
            t => t,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(format!(
                "`{text}` has {} fields; a schedule has five: minute hour day-of-month month day-of-week",
                fields.len()
            ));
        };
        let mut weekdays = field(weekday, "day of the week", 0, 7, WEEKDAYS, 0)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Cron {
            minutes: field(minute, "minute", 0, 59, &[], 0)?,
            hours: field(hour, "hour", 0, 23, &[], 0)? as u32,
            days: field(day, "day of the month", 1, 31, &[], 0)? as u32,
            months: field(month, "month", 1, 12, MONTHS, 1)? as u16,
            weekdays: weekdays as u8,
            any_day: day == "*",
            any_weekday: weekday == "*",
        })
    }

    fn day_matches(&self, dt: DateTime) -> bool {
        let dom = self.days & (1 << dt.day()) != 0;
        let dow = self.weekdays & (1 << dt.weekday().to_sunday_zero_offset()) != 0;
        match (self.any_day, self.any_weekday) {
            (false, false) => dom || dow,
            _ => dom && dow,
        }
    }

    fn month_matches(&self, dt: DateTime) -> bool {
        self.months & (1 << dt.month()) != 0
    }

    fn hour_matches(&self, dt: DateTime) -> bool {
        self.hours & (1 << dt.hour()) != 0
    }

    fn minute_matches(&self, dt: DateTime) -> bool {
        self.minutes & (1 << dt.minute()) != 0
    }

    /// The latest firing at or before `now`, not before `not_before`. Walks the civil
    /// minutes of `tz` backwards, skipping whole months, days and hours that cannot match;
    /// a civil time a DST change skips fires at the instant after the gap.
    pub fn latest_at_or_before(
        &self,
        tz: &TimeZone,
        now: Timestamp,
        not_before: Timestamp,
    ) -> Option<Timestamp> {
        let floor = not_before.to_zoned(tz.clone()).datetime();
        let mut dt = minute_floor(now.to_zoned(tz.clone()).datetime());
        while dt >= minute_floor(floor) {
            let step = if !self.month_matches(dt) {
                dt.first_of_month().start_of_day().checked_sub(1.minute())
            } else if !self.day_matches(dt) {
                dt.start_of_day().checked_sub(1.minute())
            } else if !self.hour_matches(dt) {
                dt.with()
                    .minute(0)
                    .build()
                    .and_then(|d| d.checked_sub(1.minute()))
            } else if !self.minute_matches(dt) {
                dt.checked_sub(1.minute())
            } else {
                match tz.to_timestamp(dt) {
                    Ok(at) if at <= now && at >= not_before => return Some(at),
                    Ok(at) if at < not_before => return None,
                    _ => dt.checked_sub(1.minute()),
                }
            };
            dt = step.ok()?;
        }
        None
    }

    /// The earliest firing after `now`, no later than `until`.
    pub fn earliest_after(
        &self,
        tz: &TimeZone,
        now: Timestamp,
        until: Timestamp,
    ) -> Option<Timestamp> {
        let ceiling = until.to_zoned(tz.clone()).datetime();
        let mut dt = minute_floor(now.to_zoned(tz.clone()).datetime());
        while dt <= ceiling {
            let step = if !self.month_matches(dt) {
                dt.last_of_month().start_of_day().checked_add(1.day())
            } else if !self.day_matches(dt) {
                dt.start_of_day().checked_add(1.day())
            } else if !self.hour_matches(dt) {
                dt.with()
                    .minute(0)
                    .build()
                    .and_then(|d| d.checked_add(1.hour()))
            } else if !self.minute_matches(dt) {
                dt.checked_add(1.minute())
            } else {
                match tz.to_timestamp(dt) {
                    Ok(at) if at > now && at <= until => return Some(at),
                    Ok(at) if at > until => return None,
                    _ => dt.checked_add(1.minute()),
                }
            };
            dt = step.ok()?;
        }
        None
    }
}

fn minute_floor(dt: DateTime) -> DateTime {
    dt.with()
        .second(0)
        .subsec_nanosecond(0)
        .build()
        .unwrap_or(dt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(yaml: &str) -> SyncWindows {
        let mut d = Decoder::new("windows.yaml");
        let w = SyncWindows::decode(&mut d, &TextFile::new("windows.yaml", yaml));
        assert!(!d.diags.has_errors(), "{:?}", d.diags.into_vec());
        w.expect("windows")
    }

    fn problems(yaml: &str) -> Vec<String> {
        let mut d = Decoder::new("windows.yaml");
        let _ = SyncWindows::decode(&mut d, &TextFile::new("windows.yaml", yaml));
        d.diags.into_vec().iter().map(|x| x.to_string()).collect()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn cron_fields_read_like_crontab() {
        let c = Cron::parse("*/15 9-17 * * mon-fri").unwrap();
        let tz = TimeZone::UTC;
        // A Saturday: the next firing is Monday 09:00.
        let sat = at("2026-12-05T12:00:00Z");
        assert_eq!(
            c.earliest_after(&tz, sat, sat + SignedDuration::from_hours(100)),
            Some(at("2026-12-07T09:00:00Z"))
        );
        assert_eq!(
            c.latest_at_or_before(&tz, sat, sat - SignedDuration::from_hours(100)),
            Some(at("2026-12-04T17:45:00Z"))
        );
        assert_eq!(
            Cron::parse("0 0 * * 7").unwrap(),
            Cron::parse("0 0 * * sun").unwrap()
        );
        assert!(Cron::parse("0 0 * *").unwrap_err().contains("five"));
        assert!(Cron::parse("61 * * * *").unwrap_err().contains("0-59"));
        assert!(
            Cron::parse("5-1 * * * *")
                .unwrap_err()
                .contains("backwards")
        );
        assert!(Cron::parse("@often").is_err());
    }

    #[test]
    fn either_restricted_day_field_matches_as_in_cron() {
        // The 13th, and every Friday.
        let c = Cron::parse("0 0 13 * fri").unwrap();
        let tz = TimeZone::UTC;
        let from = at("2026-12-01T00:00:00Z");
        let until = from + SignedDuration::from_hours(24 * 30);
        let mut firings = Vec::new();
        let mut now = from;
        while let Some(next) = c.earliest_after(&tz, now, until) {
            firings.push(next.to_string());
            now = next;
        }
        assert_eq!(
            firings,
            [
                "2026-12-04T00:00:00Z",
                "2026-12-11T00:00:00Z",
                "2026-12-13T00:00:00Z",
                "2026-12-18T00:00:00Z",
                "2026-12-25T00:00:00Z",
            ]
        );
    }

    #[test]
    fn a_schedule_is_read_in_its_time_zone() {
        let w = windows(
            "windows:\n  - name: nights\n    kind: deny\n    schedule: \"0 22 * * *\"\n    duration: 8h\n    timezone: Europe/Berlin\n",
        );
        // 22:00 in Berlin in winter is 21:00 UTC.
        assert!(
            w.hold(Change::Registry, Some("a"), at("2026-12-05T20:59:00Z"))
                .is_none()
        );
        let held = w
            .hold(Change::Registry, Some("a"), at("2026-12-05T21:00:00Z"))
            .unwrap();
        assert_eq!(held.until, Some(at("2026-12-06T05:00:00Z")));
        assert_eq!(held.kind, Kind::Deny);
        // The morning after, still open from the evening before.
        assert!(
            w.hold(Change::Registry, Some("a"), at("2026-12-06T04:59:59Z"))
                .is_some()
        );
        assert!(
            w.hold(Change::Registry, Some("a"), at("2026-12-06T05:00:00Z"))
                .is_none()
        );
        // Commits are not held unless the window says so.
        assert!(
            w.hold(Change::Commit, None, at("2026-12-05T22:00:00Z"))
                .is_none()
        );
    }

    #[test]
    fn deny_wins_over_allow_and_allow_windows_hold_outside_them() {
        let w = windows(
            "windows:\n  - name: weekdays\n    kind: allow\n    schedule: \"0 9 * * mon-fri\"\n    duration: 8h\n    commits: true\n  - name: freeze\n    kind: deny\n    start: 2026-12-07T10:00:00Z\n    duration: 0.5s\n",
        );
        // Saturday: outside every allow window, held until Monday 09:00.
        let held = w
            .hold(Change::Commit, None, at("2026-12-05T12:00:00Z"))
            .unwrap();
        assert_eq!(held.kind, Kind::Allow);
        assert_eq!(held.window, "weekdays");
        assert_eq!(held.until, Some(at("2026-12-07T09:00:00Z")));
        // Monday 09:30: allowed.
        assert!(
            w.hold(Change::Registry, Some("x"), at("2026-12-07T09:30:00Z"))
                .is_none()
        );
        // The half-second freeze wins over the open allow window, registry only.
        let freeze = at("2026-12-07T10:00:00.25Z");
        let held = w.hold(Change::Registry, Some("x"), freeze).unwrap();
        assert_eq!((held.window.as_str(), held.kind), ("freeze", Kind::Deny));
        assert_eq!(held.until, Some(at("2026-12-07T10:00:00.5Z")));
        assert!(w.hold(Change::Commit, None, freeze).is_none());
        assert!(
            w.hold(Change::Registry, Some("x"), at("2026-12-07T10:00:00.5Z"))
                .is_none()
        );
        // The loop wakes when the freeze closes.
        assert_eq!(
            w.next_boundary(freeze, freeze + SignedDuration::from_hours(1)),
            Some(at("2026-12-07T10:00:00.5Z"))
        );
        let open: Vec<_> = w.open(freeze).into_iter().map(|o| o.name).collect();
        assert_eq!(open, ["weekdays", "freeze"]);
    }

    #[test]
    fn servers_narrow_registry_windows() {
        let w = windows(
            "windows:\n  - name: db-freeze\n    kind: deny\n    start: 2026-12-05T00:00:00Z\n    duration: 1h\n    servers: [db]\n",
        );
        let now = at("2026-12-05T00:30:00Z");
        assert!(w.hold(Change::Registry, Some("db"), now).is_some());
        assert!(w.hold(Change::Registry, Some("web"), now).is_none());
    }

    #[test]
    fn mistakes_are_located_and_all_reported() {
        let p = problems(
            "windows:\n  - name: a\n    kind: maybe\n    schedule: \"0 25 * * *\"\n    duration: 40d\n    timezone: Mars/Olympus\n  - name: a\n    kind: deny\n    start: yesterday\n    duration: 1h\n    commits: true\n    servers: [x]\n  - name: c\n    kind: deny\n    duration: 1h\n",
        );
        let all = p.join("\n");
        for expected in [
            "windows[0].kind",
            "windows[0].schedule",
            "outside 0-23",
            "windows[0].duration",
            "windows[0].timezone",
            "windows[1].start",
            "windows[1].servers",
            "windows[1].name",
            "windows[2]",
        ] {
            assert!(all.contains(expected), "{expected} in:\n{all}");
        }
    }
}
