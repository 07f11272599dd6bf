//! Time: [`Timestamp`] and the ISO-8601 durations of resource configuration.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in time, UTC, with microsecond resolution (what the index stores and orders by).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Self = Self(0);

    /// From microseconds since the Unix epoch.
    pub const fn from_unix_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_unix_micros(&self) -> i64 {
        self.0
    }

    /// The wall clock now. Only the edges (server, jobs) call this; the model takes times as
    /// arguments.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// This time plus `duration`, saturating at the far future.
    pub fn saturating_add(self, duration: Duration) -> Self {
        let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(micros))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_micros(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

impl Timestamp {
    /// RFC 3339 in UTC with microseconds, e.g. `2026-11-22T00:30:00.123456+00:00` (the form
    /// .NET's `DateTimeOffset` prints, which Altinn clients parse).
    pub fn to_rfc3339(&self) -> String {
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}+00:00",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }

    /// HTTP's date format (RFC 9110 §5.6.7 IMF-fixdate), e.g. `Sun, 22 Nov 2026 00:30:00 GMT`:
    /// what TUS's `Upload-Expires` and HTTP date headers carry. Whole seconds.
    pub fn to_http_date(&self) -> String {
        const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] =
            ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        let secs = self.0.div_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        // 1970-01-01 was a Thursday.
        let weekday = DAYS[days.rem_euclid(7) as usize];
        let month = MONTHS[(m - 1) as usize];
        format!(
            "{weekday}, {d:02} {month} {y:04} {:02}:{:02}:{:02} GMT",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
    /// The last year [`Timestamp::parse_rfc3339`] accepts.
    pub const MAX_YEAR: i64 = 200_000;

    /// Parses RFC 3339 / ISO 8601 date-times with an offset (`Z` or `±HH:MM`), optional
    /// fraction; a bare date-time without offset is read as UTC, and a bare date as midnight UTC.
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        let text = text.trim();
        let (date, rest) = text.split_at(text.find(['T', 't', ' ']).unwrap_or(text.len()));
        let mut parts = date.split('-');
        let y: i64 = parts.next()?.parse().ok()?;
        let m: i64 = parts.next()?.parse().ok()?;
        let d: i64 = parts.next()?.parse().ok()?;
        // Beyond the year 200,000 the microseconds since 1970 overflow an i64 (at about
        // 292,000): not a date-time anyone means (`from=20269999-12-31` once did overflow).
        if parts.next().is_some()
            || !(1..=12).contains(&m)
            || !(1..=31).contains(&d)
            || y > Self::MAX_YEAR
        {
            return None;
        }
        let mut micros = days_from_civil(y, m, d) * 86_400 * 1_000_000;
        if rest.is_empty() {
            return Some(Self(micros));
        }
        let rest = &rest[1..];
        let (clock, offset) = match rest.find(['Z', 'z', '+', '-']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let mut hms = clock.split(':');
        let h: i64 = hms.next()?.parse().ok()?;
        let mi: i64 = hms.next()?.parse().ok()?;
        let (s, frac) = match hms.next() {
            Some(sec) => match sec.split_once('.') {
                Some((s, f)) => (s.parse::<i64>().ok()?, f),
                None => (sec.parse().ok()?, ""),
            },
            None => (0, ""),
        };
        if h > 23 || mi > 59 || s > 60 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let frac_micros: i64 = if frac.is_empty() {
            0
        } else {
            format!("{:0<6}", &frac[..frac.len().min(6)]).parse().ok()?
        };
        micros += ((h * 60 + mi) * 60 + s) * 1_000_000 + frac_micros;
        let offset_secs = match offset {
            "" | "Z" | "z" => 0,
            o => {
                let sign = if o.starts_with('-') { -1 } else { 1 };
                let (oh, om) = o[1..].split_once(':').unwrap_or((&o[1..], "0"));
                let hours = oh.parse::<i64>().ok()?.checked_mul(3600)?;
                hours.checked_add(om.parse::<i64>().ok()?.checked_mul(60)?)?.checked_mul(sign)?
            }
        };
        let micros = micros.checked_sub(offset_secs.checked_mul(1_000_000)?)?;
        // An offset may carry it past the last year too.
        let end = days_from_civil(Self::MAX_YEAR + 1, 1, 1) * 86_400 * 1_000_000;
        (micros < end).then_some(Self(micros))
    }
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(e) => Self(-i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX)),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}µs)", self.0)
    }
}

/// Parses an ISO-8601 duration the way .NET's `XmlConvert.ToTimeSpan` (which Altinn uses) does:
/// `P[nY][nM][nD][T[nH][nM][n[.f]S]]`, at least one component, a year counting 365 days and a
/// month 30. Returns `None` for anything else, including negative durations, which no resource
/// setting can use.
pub fn parse_iso8601_duration(input: &str) -> Option<Duration> {
    let rest = input.strip_prefix('P')?;
    if rest.is_empty() {
        return None;
    }
    let (date, time) = match rest.split_once('T') {
        Some((_, "")) => return None,
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut micros: u128 = 0;
    let mut n_parts = 0;
    // Each section is a run of `<number><unit>` with units in a fixed order.
    let mut parse_section = |text: &str, units: &[(char, u128)], allow_fraction: bool| -> bool {
        let mut text = text;
        let mut next_unit = 0;
        while !text.is_empty() {
            let end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
            let (number, tail) = text.split_at(end);
            let Some(unit) = tail.chars().next() else {
                return false;
            };
            let Some(pos) = units[next_unit..].iter().position(|(u, _)| *u == unit) else {
                return false;
            };
            let (_, unit_micros) = units[next_unit + pos];
            next_unit += pos + 1;
            let (whole, fraction) = match number.split_once('.') {
                Some((w, f)) if allow_fraction && unit == 'S' && !f.is_empty() => (w, f),
                Some(_) => return false,
                None => (number, ""),
            };
            if whole.is_empty() || whole.len() > 12 {
                return false;
            }
            let Ok(whole) = whole.parse::<u128>() else {
                return false;
            };
            micros += whole * unit_micros;
            if !fraction.is_empty() {
                let digits: String = fraction.chars().chain("000000".chars()).take(6).collect();
                let Ok(frac) = digits.parse::<u128>() else {
                    return false;
                };
                micros += frac;
            }
            n_parts += 1;
            text = &tail[unit.len_utf8()..];
        }
        true
    };
    const SECOND: u128 = 1_000_000;
    const DAY: u128 = 86_400 * SECOND;
    let date_ok = parse_section(date, &[('Y', 365 * DAY), ('M', 30 * DAY), ('D', DAY)], false);
    let time_ok = time
        .map(|t| parse_section(t, &[('H', 3600 * SECOND), ('M', 60 * SECOND), ('S', SECOND)], true))
        .unwrap_or(true);
    if !date_ok || !time_ok || n_parts == 0 {
        return None;
    }
    Some(Duration::from_micros(u64::try_from(micros).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;
    const D: u64 = 24 * H;

    #[test]
    fn parses_what_altinn_accepts() {
        for (text, secs) in [
            ("P30D", 30 * D),
            ("PT2H", 2 * H),
            ("PT24H", 24 * H),
            ("P1Y", 365 * D),
            ("P1M", 30 * D),
            ("P1DT12H", D + 12 * H),
            ("PT90M", 90 * 60),
            ("PT0S", 0),
            ("P365D", 365 * D),
        ] {
            assert_eq!(parse_iso8601_duration(text), Some(Duration::from_secs(secs)), "{text}");
        }
        assert_eq!(parse_iso8601_duration("PT1.5S"), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn http_dates_are_imf_fixdate() {
        // 2026-11-22 is a Sunday; 1970-01-01 a Thursday; 2000-02-29 a Tuesday.
        let t = Timestamp::from_unix_micros(1_795_307_400_123_456);
        assert_eq!(t.to_http_date(), "Sun, 22 Nov 2026 00:30:00 GMT");
        assert_eq!(Timestamp::EPOCH.to_http_date(), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            Timestamp::from_unix_micros(951_782_400_000_000 + 3_723_000_000).to_http_date(),
            "Tue, 29 Feb 2000 01:02:03 GMT"
        );
    }

    #[test]
    fn rfc3339_round_trips_and_reads_offsets() {
        let t = Timestamp::from_unix_micros(1_795_307_400_123_456);
        let text = t.to_rfc3339();
        assert_eq!(text, "2026-11-22T00:30:00.123456+00:00");
        assert_eq!(Timestamp::parse_rfc3339(&text), Some(t));
        assert_eq!(Timestamp::parse_rfc3339("2026-11-22T01:30:00.123456+01:00"), Some(t));
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-22T00:30:00Z"),
            Some(Timestamp::from_unix_micros(1_795_307_400_000_000))
        );
        assert_eq!(Timestamp::parse_rfc3339("1970-01-01"), Some(Timestamp::EPOCH));
        assert_eq!(Timestamp::EPOCH.to_rfc3339(), "1970-01-01T00:00:00.000000+00:00");
        let last = format!("{}-12-31T23:59:59.999999Z", Timestamp::MAX_YEAR);
        let t = Timestamp::parse_rfc3339(&last).unwrap();
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
        // Found by fuzzing (fuzz/regressions/timestamp): these overflowed.
        for bad in [
            "",
            "2026-13-01",
            "yesterday",
            "2026-11-22T25:00:00Z",
            "20269999-12-31t23:59:59.99999:01",
            "2026-01-01T00:00+99999999999999999:00",
            "2026-01-01T00:00-2562047788015:00",
            &format!("{}-12-31T23:59:59-01:00", Timestamp::MAX_YEAR),
        ] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in [
            "",
            "P",
            "PT",
            "30D",
            "P30",
            "PT2",
            "P2H",
            "PT2D",
            "P1D1Y",
            "-P1D",
            "P1.5D",
            "P30DT",
            "p30d",
            "P 30D",
            "PT2H2H",
            "P99999999999999D",
        ] {
            assert_eq!(parse_iso8601_duration(bad), None, "{bad:?} was accepted");
        }
    }
}
