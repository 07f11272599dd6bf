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
            let end = text
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(text.len());
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
    let date_ok = parse_section(
        date,
        &[('Y', 365 * DAY), ('M', 30 * DAY), ('D', DAY)],
        false,
    );
    let time_ok = time
        .map(|t| {
            parse_section(
                t,
                &[('H', 3600 * SECOND), ('M', 60 * SECOND), ('S', SECOND)],
                true,
            )
        })
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
            assert_eq!(
                parse_iso8601_duration(text),
                Some(Duration::from_secs(secs)),
                "{text}"
            );
        }
        assert_eq!(
            parse_iso8601_duration("PT1.5S"),
            Some(Duration::from_millis(1500))
        );
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
