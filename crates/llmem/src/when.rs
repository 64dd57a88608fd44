//! Dates as people say them: calendar dates (`8 May 2023`) and the relative time expressions of
//! a message (`yesterday`, `last Saturday`, `two years ago`) resolved against the date it was
//! said, so that a memory read months later still says when things happened.

use llmem_core::Timestamp;
use llmem_core::time::MONTHS;
use llmem_core::time::WEEKDAYS;

/// A calendar date (proleptic Gregorian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilDate {
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    /// Minutes after midnight.
    pub minute: u32,
}

impl CivilDate {
    /// Days since 1970-01-01 (the usual era-based civil-date arithmetic).
    pub fn days(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    pub fn from_days(z: i64) -> CivilDate {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        CivilDate {
            year: (yoe + era * 400 + i64::from(m <= 2)) as i32,
            month: m,
            day: d,
            minute: 0,
        }
    }

    /// 0 = Monday.
    pub fn weekday(self) -> usize {
        (self.days() + 3).rem_euclid(7) as usize
    }

    pub fn plus_days(self, n: i64) -> CivilDate {
        CivilDate::from_days(self.days() + n)
    }

    /// Milliseconds since the Unix epoch (UTC).
    pub fn millis(self) -> i64 {
        (self.days() * 1440 + i64::from(self.minute)) * 60_000
    }

    /// The UTC calendar date of `t`.
    pub fn from_timestamp(t: Timestamp) -> CivilDate {
        let minutes = t.millis().div_euclid(60_000);
        CivilDate {
            minute: minutes.rem_euclid(1440) as u32,
            ..CivilDate::from_days(minutes.div_euclid(1440))
        }
    }

    pub fn timestamp(self) -> Timestamp {
        Timestamp::from_millis(self.millis())
    }

    pub fn month_name(m: u32) -> &'static str {
        MONTHS[(m.clamp(1, 12) - 1) as usize]
    }

    /// `8 May 2023`.
    pub fn long(self) -> String {
        format!(
            "{} {} {}",
            self.day,
            CivilDate::month_name(self.month),
            self.year
        )
    }

    /// The year and month `k` months after this date's.
    pub fn month_offset(self, k: i32) -> (i32, u32) {
        let idx = self.year * 12 + self.month as i32 - 1 + k;
        (idx.div_euclid(12), (idx.rem_euclid(12) + 1) as u32)
    }
}

fn number_word(w: &str) -> Option<i64> {
    let n = match w {
        "a" | "an" | "one" => 1,
        "two" | "couple" => 2,
        "three" | "few" => 3,
        "four" => 4,
        "five" => 5,
        "six" => 6,
        "seven" => 7,
        "eight" => 8,
        "nine" => 9,
        "ten" => 10,
        _ => return w.parse().ok(),
    };
    Some(n)
}

/// Resolves the relative time expressions of `text` said on `date` into absolute ones, e.g.
/// `yesterday = 7 May 2023`, `last week = the week before 8 May 2023`. Memory keeps them next
/// to the text, so that "when" questions asked months later find a date, not "yesterday".
pub fn resolve_times(text: &str, date: CivilDate) -> Vec<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: String| {
        if !out.contains(&s) {
            out.push(s);
        }
    };
    let month = |k: i32| {
        let (y, m) = date.month_offset(k);
        format!("{} {y}", CivilDate::month_name(m))
    };
    for (i, w) in words.iter().enumerate() {
        let next = words.get(i + 1).map(String::as_str).unwrap_or("");
        let prev = if i > 0 { words[i - 1].as_str() } else { "" };
        match (w.as_str(), next) {
            ("yesterday", _) => add(format!("yesterday = {}", date.plus_days(-1).long())),
            ("today" | "tonight", _) => add(format!("{w} = {}", date.long())),
            ("last", "night") => add(format!("last night = {}", date.plus_days(-1).long())),
            ("last" | "this" | "next", "week" | "weekend") => {
                let rel = match w.as_str() {
                    "last" => "before",
                    "next" => "after",
                    _ => "of",
                };
                add(format!("{w} {next} = the {next} {rel} {}", date.long()));
            }
            ("last" | "this" | "next", "month") => {
                let k = match w.as_str() {
                    "last" => -1,
                    "next" => 1,
                    _ => 0,
                };
                add(format!("{w} month = {}", month(k)));
            }
            ("last" | "this" | "next", "year") => {
                let k = match w.as_str() {
                    "last" => -1,
                    "next" => 1,
                    _ => 0,
                };
                add(format!("{w} year = {}", date.year + k));
            }
            ("last", day) if WEEKDAYS.contains(&day) => {
                let target = WEEKDAYS.iter().position(|d| *d == day).unwrap_or(0);
                let back = (date.weekday() + 7 - target - 1) % 7 + 1;
                add(format!(
                    "last {day} = {}",
                    date.plus_days(-(back as i64)).long()
                ));
            }
            ("ago", _) if i >= 2 => {
                let unit = prev.trim_end_matches('s');
                let Some(n) = number_word(&words[i - 2]) else {
                    continue;
                };
                let phrase = format!("{} {prev} ago", words[i - 2]);
                match unit {
                    "day" => add(format!("{phrase} = {}", date.plus_days(-n).long())),
                    "week" => add(format!(
                        "{phrase} = the week of {}",
                        date.plus_days(-7 * n).long()
                    )),
                    "month" => add(format!("{phrase} = {}", month(-(n as i32)))),
                    "year" => add(format!("{phrase} = {}", i64::from(date.year) - n)),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    out
}

/// `text` followed by its resolved time expressions, if any: `I went yesterday. (yesterday = 7
/// May 2023)`.
pub fn with_times(text: &str, said: Timestamp) -> String {
    let times = resolve_times(text, CivilDate::from_timestamp(said));
    if times.is_empty() {
        text.to_owned()
    } else {
        format!("{text} ({})", times.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn may8() -> CivilDate {
        CivilDate {
            year: 2023,
            month: 5,
            day: 8,
            minute: 13 * 60 + 56,
        }
    }

    #[test]
    fn dates_count_days_and_round_trip_timestamps() {
        let x = may8();
        assert_eq!(x.weekday(), 0, "8 May 2023 was a Monday");
        assert_eq!(x.plus_days(-8).long(), "30 April 2023");
        let mar1 = CivilDate {
            year: 2024,
            month: 3,
            day: 1,
            minute: 9,
        };
        assert_eq!(mar1.plus_days(-1).long(), "29 February 2024");
        assert_eq!(CivilDate::from_days(0).long(), "1 January 1970");
        assert_eq!(CivilDate::from_timestamp(x.timestamp()), x);
        assert_eq!(
            CivilDate::from_timestamp(Timestamp::from_millis(-1)).long(),
            "31 December 1969"
        );
    }

    #[test]
    fn relative_times_resolve_against_the_date_said() {
        let x = may8();
        let r = resolve_times(
            "I went to a support group yesterday, and last Saturday we moved. Two weeks ago too; last year as well. Last month!",
            x,
        );
        assert_eq!(
            r,
            [
                "yesterday = 7 May 2023",
                "last saturday = 6 May 2023",
                "two weeks ago = the week of 24 April 2023",
                "last year = 2022",
                "last month = April 2023",
            ]
        );
        assert!(resolve_times("Nothing relative here.", x).is_empty());
        assert_eq!(
            resolve_times("last monday", x),
            ["last monday = 1 May 2023"],
            "said on a Monday, last Monday is a week back"
        );
        assert_eq!(
            with_times("See you next week!", x.timestamp()),
            "See you next week! (next week = the week after 8 May 2023)"
        );
        assert_eq!(with_times("Hi.", x.timestamp()), "Hi.");
    }
}
