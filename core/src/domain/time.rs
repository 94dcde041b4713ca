//! Time as the store keeps it: milliseconds since the Unix epoch, UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub type Millis = i64;

pub fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Twilio's REST dates (RFC 2822 in GMT, `Tue, 01 Dec 2026 10:00:00 +0000`) as milliseconds.
pub fn parse_twilio_date(text: &str) -> Option<Millis> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, clock, zone] = parts.as_slice() else { return None };
    if *zone != "+0000" && *zone != "GMT" {
        return None;
    }
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let mut hms = clock.split(':').map(|n| n.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    // Days from the epoch to a civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + m) * 60_000 + s * 1000)
}

/// The GMT date (`YYYY-MM-DD`) of `ms`, as Twilio's list filters take it.
pub fn date_of(ms: Millis) -> String {
    format_ms(ms)[..10].to_string()
}

/// RFC 3339 with milliseconds, for people reading `calls show`.
pub fn format_ms(ms: Millis) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_dates() {
        let at = parse_twilio_date("Tue, 01 Dec 2026 10:00:05 +0000").unwrap();
        assert_eq!(format_ms(at), "2026-12-01T10:00:05.000Z");
        assert_eq!(date_of(at), "2026-12-01");
        assert_eq!(format_ms(parse_twilio_date("Thu, 29 Feb 2024 23:59:59 +0000").unwrap()), "2024-02-29T23:59:59.000Z");
        assert_eq!(parse_twilio_date("Tue, 01 Dec 2026 10:00:05 +0200"), None, "Twilio's are GMT");
        assert_eq!(parse_twilio_date("yesterday"), None);
    }
}
