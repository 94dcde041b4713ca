//! Business hours: when a number's normal agent answers, and what answers the rest of the time.
//!
//! Written in the business's own time zone (an IANA name; the tz database is built in, so a
//! Lambda or a slim container needs none), as one line of ranges per weekday, with dates closed.
//! A day not written is closed all day. Ranges end at or before 24:00; a night shift is two
//! ranges on two days.

use crate::domain::time::Millis;
use serde::{Deserialize, Serialize};

const DAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

/// A profile's `[hours]`, checked: the minutes of each weekday it is open, Monday first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hours {
    pub time_zone: String,
    /// Per weekday (Monday = 0): open ranges as minutes from midnight, `[from, to)`.
    pub open: [Vec<(u16, u16)>; 7],
    /// `YYYY-MM-DD` dates closed all day (holidays).
    pub closed: Vec<String>,
    pub after_hours: AfterHours,
}

/// What answers outside the hours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum AfterHours {
    /// The agent answers with these instructions and greeting instead (and is told the time).
    Agent { instructions: String, greeting: Option<String> },
    /// No agent: `message` is said, then the caller leaves a message (recorded and transcribed
    /// as every call is).
    Voicemail { message: String },
}

/// `[hours]` as a business writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursFile {
    time_zone: String,
    monday: Option<String>,
    tuesday: Option<String>,
    wednesday: Option<String>,
    thursday: Option<String>,
    friday: Option<String>,
    saturday: Option<String>,
    sunday: Option<String>,
    #[serde(default)]
    closed: Vec<String>,
}

/// `[after_hours]` as a business writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AfterHoursFile {
    mode: String,
    instructions: Option<String>,
    greeting: Option<String>,
    message: Option<String>,
}

impl Hours {
    /// Reads `[hours]` and `[after_hours]`; without `[after_hours]`, an after-hours caller leaves
    /// a message after `default_message`.
    pub fn read(file: HoursFile, after: Option<AfterHoursFile>, default_message: &str) -> Result<Hours, String> {
        jiff::tz::TimeZone::get(&file.time_zone)
            .map_err(|_| format!("hours.time_zone {:?} is not a time zone name such as Asia/Jerusalem", file.time_zone))?;
        let days = [&file.monday, &file.tuesday, &file.wednesday, &file.thursday, &file.friday, &file.saturday, &file.sunday];
        let mut open: [Vec<(u16, u16)>; 7] = Default::default();
        for (i, day) in days.into_iter().enumerate() {
            if let Some(text) = day {
                open[i] = ranges(text).map_err(|e| format!("hours.{}: {e}", DAYS[i]))?;
            }
        }
        for date in &file.closed {
            date.parse::<jiff::civil::Date>().map_err(|_| format!("hours.closed: {date:?} is not a date such as 2026-09-21"))?;
        }
        let after_hours = match after {
            None => AfterHours::Voicemail { message: default_message.to_string() },
            Some(a) => match a.mode.as_str() {
                "voicemail" => AfterHours::Voicemail { message: a.message.unwrap_or_else(|| default_message.to_string()) },
                "agent" => match a.instructions.filter(|i| !i.trim().is_empty()) {
                    Some(instructions) => AfterHours::Agent { instructions, greeting: a.greeting },
                    None => return Err("after_hours.mode = \"agent\" needs after_hours.instructions".into()),
                },
                other => return Err(format!("after_hours.mode {other:?} must be \"agent\" or \"voicemail\"")),
            },
        };
        Ok(Hours { time_zone: file.time_zone, open, closed: file.closed, after_hours })
    }

    /// Whether the business is open at `at` (ms since the epoch).
    pub fn is_open(&self, at: Millis) -> bool {
        let Some(local) = self.local(at) else { return true };
        if self.closed.iter().any(|d| d.parse::<jiff::civil::Date>().is_ok_and(|d| d == local.date())) {
            return false;
        }
        let day = local.weekday().to_monday_zero_offset() as usize;
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        self.open[day].iter().any(|&(from, to)| from <= minute && minute < to)
    }

    /// `at` in the business's time zone, as the agent is told it: "Tuesday 23:05".
    pub fn local_time(&self, at: Millis) -> String {
        match self.local(at) {
            Some(local) => {
                format!("{} {:02}:{:02}", capitalized(DAYS[local.weekday().to_monday_zero_offset() as usize]), local.hour(), local.minute())
            }
            None => String::new(),
        }
    }

    /// The week's hours, one line per open day: what the after-hours agent is told.
    pub fn describe(&self) -> String {
        let mut lines = Vec::new();
        for (i, ranges) in self.open.iter().enumerate() {
            if !ranges.is_empty() {
                let text: Vec<String> = ranges.iter().map(|&(a, b)| format!("{}-{}", clock(a), clock(b))).collect();
                lines.push(format!("{} {}", capitalized(DAYS[i]), text.join(", ")));
            }
        }
        format!("{} ({})", lines.join("; "), self.time_zone)
    }

    fn local(&self, at: Millis) -> Option<jiff::civil::DateTime> {
        let tz = jiff::tz::TimeZone::get(&self.time_zone).ok()?;
        let instant = jiff::Timestamp::from_millisecond(at).ok()?;
        Some(instant.to_zoned(tz).datetime())
    }
}

fn capitalized(day: &str) -> String {
    let mut chars = day.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

fn clock(minute: u16) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// "09:00-13:00, 16:00-19:00" as minute ranges; "closed" or "" as none.
fn ranges(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("closed") {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for part in text.split(',') {
        let (from, to) = part.trim().split_once('-').ok_or_else(|| format!("{part:?} is not a range such as 09:00-18:00"))?;
        let (from, to) = (minute_of(from)?, minute_of(to)?);
        if from >= to {
            return Err(format!("{part:?} ends before it begins (a night shift is two ranges on two days)"));
        }
        out.push((from, to));
    }
    Ok(out)
}

fn minute_of(text: &str) -> Result<u16, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a time such as 09:30");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m > 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours() -> Hours {
        let file: HoursFile = toml::from_str(
            "time_zone = \"Asia/Jerusalem\"\nsunday = \"09:00-18:00\"\nmonday = \"09:00-13:00, 16:00-19:00\"\nfriday = \"09:00-13:00\"\nclosed = [\"2026-12-24\"]\n",
        )
        .unwrap();
        Hours::read(file, None, "leave a message").unwrap()
    }

    /// Milliseconds of a time in Israel.
    fn israel(text: &str) -> Millis {
        let zoned = text.parse::<jiff::civil::DateTime>().unwrap().to_zoned(jiff::tz::TimeZone::get("Asia/Jerusalem").unwrap()).unwrap();
        zoned.timestamp().as_millisecond()
    }

    #[test]
    fn open_by_the_businesss_own_clock() {
        let h = hours();
        // Sunday 2026-12-06.
        assert!(h.is_open(israel("2026-12-06T09:00")));
        assert!(!h.is_open(israel("2026-12-06T18:00")), "a range ends before its end");
        assert!(!h.is_open(israel("2026-12-06T23:00")));
        assert!(h.is_open(israel("2026-12-07T12:59")) && !h.is_open(israel("2026-12-07T14:00")) && h.is_open(israel("2026-12-07T16:30")));
        assert!(!h.is_open(israel("2026-12-05T12:00")), "Saturday is not written: closed");
        assert!(!h.is_open(israel("2026-12-24T10:00")), "a date closed");
        // Summer time: 09:30 in Israel is 06:30 UTC in July.
        assert!(h.is_open(israel("2026-07-05T09:30")));
        assert_eq!(h.local_time(israel("2026-12-08T23:05")), "Tuesday 23:05");
        assert_eq!(h.after_hours, AfterHours::Voicemail { message: "leave a message".into() });
        assert!(h.describe().starts_with("Monday 09:00-13:00, 16:00-19:00; Friday 09:00-13:00; Sunday 09:00-18:00"));
    }

    #[test]
    fn bad_hours_are_refused_in_a_sentence() {
        let read = |text: &str| Hours::read(toml::from_str(text).unwrap(), None, "m").unwrap_err();
        assert!(read("time_zone = \"Mars/Olympus\"").contains("not a time zone"));
        assert!(read("time_zone = \"UTC\"\nmonday = \"22:00-02:00\"").contains("hours.monday: \"22:00-02:00\" ends before"));
        assert!(read("time_zone = \"UTC\"\nmonday = \"9-5\"").contains("not a time"));
        assert!(read("time_zone = \"UTC\"\nclosed = [\"24/12\"]").contains("not a date"));
        let agent = AfterHoursFile { mode: "agent".into(), instructions: None, greeting: None, message: None };
        let file: HoursFile = toml::from_str("time_zone = \"UTC\"").unwrap();
        assert!(Hours::read(file, Some(agent), "m").unwrap_err().contains("needs after_hours.instructions"));
    }
}
