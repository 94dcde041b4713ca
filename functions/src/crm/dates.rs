//! Times and dates as the business reads them: in its time zone (`CRM_TIME_ZONE`), in its
//! language's own form. Hebrew writes the day first with dots (`7.12.2026, 14:05:09`); English
//! gets the month's name, which no reader can take for another day (`7 Dec 2026, 14:05:09`).
//! Date filters are typed in the same form (ISO `2026-12-07` is always read too), and a day is
//! the zone's day: midnight to midnight there, 23 or 25 hours long when the clocks change.

use callkeeper_core::time::Millis;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;

#[derive(Debug, Clone)]
pub struct Clock {
    zone: TimeZone,
    /// The zone's IANA name, as the pages say it.
    pub zone_name: String,
    hebrew: bool,
}

impl Clock {
    /// `zone` was checked when the settings were read; an unknown one falls back to UTC.
    /// `hebrew`: the pages are Hebrew (else English).
    pub fn new(zone: &str, hebrew: bool) -> Clock {
        Clock { zone: TimeZone::get(zone).unwrap_or(TimeZone::UTC), zone_name: zone.to_string(), hebrew }
    }

    fn at(&self, ms: Millis) -> Option<jiff::Zoned> {
        Some(Timestamp::from_millisecond(ms).ok()?.to_zoned(self.zone.clone()))
    }

    /// A moment, to the second, in the business's zone and form.
    pub fn time(&self, ms: Millis) -> String {
        let Some(at) = self.at(ms) else { return String::new() };
        at.strftime(if self.hebrew { "%-d.%-m.%Y, %H:%M:%S" } else { "%-d %b %Y, %H:%M:%S" }).to_string()
    }

    /// The same moment for `<time datetime>`: RFC 3339 with the zone's offset.
    pub fn machine(&self, ms: Millis) -> String {
        self.at(ms).map(|at| at.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()).unwrap_or_default()
    }

    /// How a date filter is written here, for its placeholder.
    pub fn date_form(&self) -> &'static str {
        if self.hebrew {
            "dd.mm.yyyy"
        } else {
            "yyyy-mm-dd"
        }
    }

    /// A date the reader typed (`7.12.2026`, `07/12/2026` or `2026-12-07`), in their own form.
    pub fn date_text(&self, typed: &str) -> String {
        match read_date(typed) {
            Ok(date) if self.hebrew => date.strftime("%-d.%-m.%Y").to_string(),
            Ok(date) => date.to_string(),
            Err(_) => typed.to_string(),
        }
    }

    /// The first millisecond of the typed day in the zone, and the first of the day after.
    pub fn day(&self, typed: &str) -> Result<(Millis, Millis), String> {
        let date = read_date(typed)?;
        let start = |d: Date| -> Result<Millis, String> {
            let at = d.to_zoned(self.zone.clone()).map_err(|e| format!("{typed:?}: {e}"))?;
            Ok(at.timestamp().as_millisecond())
        };
        let next = date.tomorrow().map_err(|e| format!("{typed:?}: {e}"))?;
        Ok((start(date)?, start(next)?))
    }
}

/// `d.m.yyyy` (dots or slashes, day first as Israel writes it) or ISO `yyyy-mm-dd`.
fn read_date(typed: &str) -> Result<Date, String> {
    let bad = || format!("a date is dd.mm.yyyy or yyyy-mm-dd, got {typed:?}");
    let typed = typed.trim();
    let parts: Vec<&str> = typed.split(['.', '/', '-']).collect();
    let [a, b, c] = parts[..] else { return Err(bad()) };
    let (year, month, day) = if typed.contains('-') && a.len() == 4 {
        (a, b, c)
    } else if !typed.contains('-') && c.len() == 4 {
        (c, b, a)
    } else {
        return Err(bad());
    };
    let year: i16 = year.parse().map_err(|_| bad())?;
    let (month, day): (i8, i8) = (month.parse().map_err(|_| bad())?, day.parse().map_err(|_| bad())?);
    if !(1970..=9999).contains(&year) {
        return Err(bad());
    }
    Date::new(year, month, day).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-07T12:05:09.250Z
    const AT: Millis = 1_796_645_109_250;

    #[test]
    fn times_are_the_zones_in_the_languages_form() {
        let he = Clock::new("Asia/Jerusalem", true);
        assert_eq!(he.time(AT), "7.12.2026, 14:05:09");
        assert_eq!(he.machine(AT), "2026-12-07T14:05:09+02:00");
        let en = Clock::new("Europe/London", false);
        assert_eq!(en.time(AT), "7 Dec 2026, 12:05:09");
        assert_eq!(Clock::new("America/New_York", false).time(AT), "7 Dec 2026, 07:05:09");
    }

    #[test]
    fn a_typed_day_is_the_zones_day_in_either_form() {
        let he = Clock::new("Asia/Jerusalem", true);
        let (start, end) = he.day("7.12.2026").unwrap();
        assert_eq!(he.time(start), "7.12.2026, 00:00:00");
        assert_eq!(end - start, 86_400_000);
        assert_eq!(he.day("2026-12-07").unwrap(), (start, end));
        assert_eq!(he.day("07/12/2026").unwrap(), (start, end));
        assert_eq!(he.date_text("2026-12-07"), "7.12.2026");
        assert_eq!(Clock::new("UTC", false).date_text("7.12.2026"), "2026-12-07");
        let utc = Clock::new("UTC", false);
        assert_eq!(utc.day("1970-01-01").unwrap().0, 0);
        assert_eq!(utc.day("2024-02-29").unwrap(), (1_709_164_800_000, 1_709_251_200_000));
        // The day the clocks go forward in Israel (27 March 2026) is 23 hours long.
        let (start, end) = he.day("27.3.2026").unwrap();
        assert_eq!(end - start, 23 * 3_600_000);
        for bad in ["12/7", "2026-13-01", "31.2.2026", "7.12.26", "tomorrow", "1.1.1969", "1.257.2026", "-1.3.2026"] {
            assert!(he.day(bad).unwrap_err().contains("dd.mm.yyyy"), "{bad}");
        }
    }
}
