//! The time values users type: ages (`30m`, `12h`, `7d`, `4w`) for
//! `--since`, `--older-than` and `PFLOW_TRACE_RETENTION`, and points in time
//! (RFC 3339 or `YYYY-MM-DD`, taken as midnight UTC).

use super::HistoryError;
use chrono::{DateTime, NaiveDate, Utc};
use std::time::Duration;

const AGE_HINT: &str = "use a number with a unit: 30m, 12h, 7d or 4w";

/// Parses an age: a positive whole number followed by `m`, `h`, `d` or `w`.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let unit_at = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("no unit; {AGE_HINT}"))?;
    let (num, unit) = s.split_at(unit_at);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("no number before the unit; {AGE_HINT}"))?;
    let secs = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        other => return Err(format!("unknown unit `{other}`; {AGE_HINT}")),
    };
    if n == 0 {
        return Err(format!("must be more than zero; {AGE_HINT}"));
    }
    n.checked_mul(secs)
        .filter(|s| *s < 1_000 * 365 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| "too long: at most 1000 years".to_string())
}

/// `--since`: an age back from `now`, an RFC 3339 time, or a `YYYY-MM-DD` date (UTC).
pub fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, HistoryError> {
    let bad = |reason: String| HistoryError::BadValue {
        what: "--since",
        value: s.to_string(),
        reason,
    };
    let t = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    if t.starts_with(|c: char| c.is_ascii_digit()) && t.contains('-') {
        return Err(bad(
            "not a date: use YYYY-MM-DD or RFC 3339 (2025-01-31T12:00:00Z)".into(),
        ));
    }
    let age = parse_age(t).map_err(|e| bad(format!("{e}, or a date (YYYY-MM-DD or RFC 3339)")))?;
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| bad("too far back".into()))
}

/// An age as `--older-than` takes it.
pub fn parse_older_than(s: &str) -> Result<Duration, HistoryError> {
    parse_age(s).map_err(|reason| HistoryError::BadValue {
        what: "--older-than",
        value: s.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_in_every_unit() {
        assert_eq!(parse_age("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_age("12h").unwrap(), Duration::from_secs(12 * 3600));
        assert_eq!(parse_age("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_age(" 4w ").unwrap(), Duration::from_secs(28 * 86_400));
    }

    #[test]
    fn bad_ages_say_why() {
        assert!(parse_age("7").unwrap_err().contains("no unit"));
        assert!(parse_age("d").unwrap_err().contains("no number"));
        assert!(parse_age("7y").unwrap_err().contains("unknown unit `y`"));
        assert!(parse_age("7 d").unwrap_err().contains("unknown unit"));
        assert!(parse_age("0d").unwrap_err().contains("more than zero"));
        assert!(parse_age("-3d").is_err());
        assert!(parse_age("99999999999999w")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn since_takes_ages_and_dates() {
        let now = DateTime::parse_from_rfc3339("2025-03-10T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_since("7d", now).unwrap().to_rfc3339(),
            "2025-03-03T12:00:00+00:00"
        );
        assert_eq!(
            parse_since("2025-01-31", now).unwrap().to_rfc3339(),
            "2025-01-31T00:00:00+00:00"
        );
        assert_eq!(
            parse_since("2025-01-31T10:00:00+02:00", now)
                .unwrap()
                .to_rfc3339(),
            "2025-01-31T08:00:00+00:00"
        );
        let e = parse_since("2025-13-01", now).unwrap_err().to_string();
        assert!(e.contains("--since") && e.contains("YYYY-MM-DD"), "{e}");
        let e = parse_since("yesterday", now).unwrap_err().to_string();
        assert!(e.contains("`yesterday`") && e.contains("7d"), "{e}");
    }
}
