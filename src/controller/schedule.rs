//! Standard cron for `trigger.schedule`: parses a 5-field expression or an `@` descriptor
//! exactly as robfig/cron (the reference's library) reads it, and finds the next fire time
//! in UTC through the `cron` crate.
//!
//! The `cron` crate differs from standard cron: it wants a seconds field, numbers Sunday 1,
//! ANDs day-of-month with day-of-week, and lacks `@annually`. So this module parses the
//! expression itself into value sets and hands the crate an explicit canonical expression
//! (seconds `0`, plain value lists, weekday names), splitting the OR of the two day fields
//! into two schedules. Nothing of the crate's own syntax reaches it.
//!
//! It must never do I/O or read the clock: callers pass the instant to search from.

use std::{fmt::Write as _, str::FromStr};

use chrono::{DateTime, Utc};

/// Why a schedule was rejected. The text goes into the Error condition, so it names the
/// expression, the field and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not five fields and not a descriptor.
    #[error(
        "invalid schedule {expr:?}: expected 5 fields (minute hour day-of-month month day-of-week) or a descriptor such as @daily, found {found} field(s)"
    )]
    FieldCount { expr: String, found: usize },
    /// An `@` word that is not one of the supported descriptors.
    #[error(
        "invalid schedule {expr:?}: unknown descriptor; use one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly (@every is not supported)"
    )]
    Descriptor { expr: String },
    /// `CRON_TZ=`/`TZ=` prefixes: robfig accepts them, but schedules here are always UTC.
    #[error(
        "invalid schedule {expr:?}: time zone prefixes are not supported; schedules are evaluated in UTC"
    )]
    TimeZone { expr: String },
    /// One field is malformed or out of range.
    #[error("invalid schedule {expr:?}: {field} field {token:?}: {problem}")]
    Field {
        expr: String,
        field: &'static str,
        token: String,
        problem: String,
    },
    /// Valid syntax that can never match, such as `0 0 30 2 *` (robfig accepts it and then
    /// never fires; an error is clearer).
    #[error(
        "invalid schedule {expr:?}: it never fires (no listed month has any of the listed days)"
    )]
    Never { expr: String },
    /// The `cron` crate refused our canonical translation: a bug here, not in the input.
    #[error("schedule {expr:?}: internal translation {translated:?} was rejected: {reason}")]
    Translate {
        expr: String,
        translated: String,
        reason: String,
    },
}

/// The allowed values of one field.
struct Bounds {
    name: &'static str,
    min: u32,
    /// The end of `*` and of open-ended steps (`N/step`).
    max: u32,
    /// The largest value accepted when written explicitly: 7 (Sunday) for day-of-week.
    explicit_max: u32,
    names: &'static [&'static str],
    /// The value of `names[0]`.
    names_base: u32,
}

/// A numeric-only field.
const fn numeric(name: &'static str, min: u32, max: u32) -> Bounds {
    Bounds {
        name,
        min,
        max,
        explicit_max: max,
        names: &[],
        names_base: 0,
    }
}

const MINUTE: Bounds = numeric("minute", 0, 59);
const HOUR: Bounds = numeric("hour", 0, 23);
const DOM: Bounds = numeric("day-of-month", 1, 31);
const MONTH: Bounds = Bounds {
    name: "month",
    min: 1,
    max: 12,
    explicit_max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    names_base: 1,
};
// Standard cron accepts 7 as Sunday; robfig's `*` and `N/step` stop at 6, which we keep,
// since `1/2` must not gain Sunday.
const DOW: Bounds = Bounds {
    name: "day-of-week",
    min: 0,
    max: 6,
    explicit_max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    names_base: 0,
};

/// The weekday names the `cron` crate understands, indexed by standard number (0 = Sunday).
const CRATE_DOW: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One parsed field: the set of values (bit n = value n) and whether it was written as an
/// unrestricted `*`/`?` (robfig's "star bit"), which decides AND versus OR of the day fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    bits: u64,
    star: bool,
}

impl Field {
    fn has(self, value: u32) -> bool {
        self.bits & (1 << value) != 0
    }
}

/// The five parsed fields, in robfig's semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    minute: Field,
    hour: Field,
    dom: Field,
    month: Field,
    dow: Field,
}

/// A parsed standard cron schedule, evaluated in UTC.
#[derive(Debug, Clone)]
pub struct Schedule {
    source: String,
    fields: Fields,
    /// One schedule, or two whose earlier next time wins (day-of-month OR day-of-week).
    parts: Vec<cron::Schedule>,
}

impl Schedule {
    /// Parses a 5-field expression or a descriptor, rejecting what standard cron rejects
    /// and schedules that can never fire.
    pub fn parse(expr: &str) -> Result<Self, Error> {
        let tokens: Vec<&str> = expr.split_whitespace().collect();
        let fields_text = match tokens.as_slice() {
            // robfig's `@every <duration>` is not allowed by the API's pattern either.
            [first, rest @ ..] if first.starts_with('@') => match (rest, descriptor(first)) {
                ([], Some(fields)) => fields,
                _ => {
                    return Err(Error::Descriptor {
                        expr: expr.to_owned(),
                    });
                }
            },
            [first, ..] if first.starts_with("TZ=") || first.starts_with("CRON_TZ=") => {
                return Err(Error::TimeZone {
                    expr: expr.to_owned(),
                });
            }
            [_, _, _, _, _] => expr,
            _ => {
                return Err(Error::FieldCount {
                    expr: expr.to_owned(),
                    found: tokens.len(),
                });
            }
        };
        let mut it = fields_text.split_whitespace();
        let mut next = |b: &Bounds| parse_field(expr, it.next().unwrap_or_default(), b);
        let fields = Fields {
            minute: next(&MINUTE)?,
            hour: next(&HOUR)?,
            dom: next(&DOM)?,
            month: next(&MONTH)?,
            dow: next(&DOW)?,
        };
        let either = !fields.dom.star && !fields.dow.star;
        if fields.dow.star && !dom_possible(fields.dom, fields.month) {
            return Err(Error::Never {
                expr: expr.to_owned(),
            });
        }
        let all_days = Field {
            bits: u64::MAX,
            star: true,
        };
        let variants = if either {
            // Standard cron ORs two restricted day fields; the crate ANDs them, so each
            // restriction gets its own schedule with the other day field unrestricted.
            vec![(fields.dom, all_days), (all_days, fields.dow)]
        } else {
            vec![(fields.dom, fields.dow)]
        };
        let parts = variants
            .into_iter()
            .map(|(dom, dow)| {
                let translated = render(&fields, dom, dow);
                cron::Schedule::from_str(&translated).map_err(|err| Error::Translate {
                    expr: expr.to_owned(),
                    translated,
                    reason: err.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            source: expr.to_owned(),
            fields,
            parts,
        })
    }

    /// The expression as the user wrote it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The expressions handed to the `cron` crate (one, or two for the day-field OR); shown
    /// in logs and tests so the translation can be checked.
    pub fn translated(&self) -> Vec<&str> {
        self.parts.iter().map(cron::Schedule::source).collect()
    }

    /// The first fire time strictly after `after`, whole minutes only. `None` only past the
    /// crate's last supported year (2100).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.parts
            .iter()
            .filter_map(|part| part.after(&after).next())
            .min()
    }

    /// Whether `at` is a fire time (a whole minute that matches), in standard semantics.
    pub fn matches(&self, at: DateTime<Utc>) -> bool {
        use chrono::{Datelike, Timelike};
        let f = &self.fields;
        let dom = f.dom.has(at.day());
        let dow = f.dow.has(at.weekday().num_days_from_sunday());
        let day = if f.dom.star || f.dow.star {
            dom && dow
        } else {
            dom || dow
        };
        at.second() == 0
            && at.nanosecond() == 0
            && f.minute.has(at.minute())
            && f.hour.has(at.hour())
            && f.month.has(at.month())
            && day
    }
}

impl FromStr for Schedule {
    type Err = Error;

    fn from_str(expr: &str) -> Result<Self, Error> {
        Self::parse(expr)
    }
}

/// The 5-field meaning of each descriptor robfig accepts (without `@every`, which the API's
/// pattern does not allow). `@weekly` is Sunday, as in robfig.
fn descriptor(word: &str) -> Option<&'static str> {
    // robfig matches descriptors case-sensitively; so do we.
    Some(match word {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return None,
    })
}

/// Parses one field: a comma list of `*`, `?`, `N`, `N-M`, each optionally `/step`.
fn parse_field(expr: &str, text: &str, b: &Bounds) -> Result<Field, Error> {
    let fail = |token: &str, problem: String| Error::Field {
        expr: expr.to_owned(),
        field: b.name,
        token: token.to_owned(),
        problem,
    };
    let mut field = Field {
        bits: 0,
        star: false,
    };
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step = step
                    .parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0 && step.bytes().all(|c| c.is_ascii_digit()))
                    .ok_or_else(|| {
                        fail(
                            part,
                            format!("step {step:?} must be a positive whole number"),
                        )
                    })?;
                (range, Some(step))
            }
            None => (part, None),
        };
        let (start, end, star) = if range == "*" || range == "?" {
            (b.min, b.max, step.is_none_or(|s| s == 1))
        } else {
            let val = |text: &str| value(text, b).map_err(|problem| fail(part, problem));
            match range.split_once('-') {
                Some((lo, hi)) => (val(lo)?, val(hi)?, false),
                // robfig reads `N/step` as `N-max/step`.
                None if step.is_some() => (val(range)?, b.max.max(val(range)?), false),
                None => (val(range)?, val(range)?, false),
            }
        };
        if start > end {
            return Err(fail(
                part,
                format!("range start {start} is after its end {end}"),
            ));
        }
        for v in (start..=end).step_by(step.unwrap_or(1) as usize) {
            // Only day-of-week has explicit_max beyond max: 7 is Sunday again.
            field.bits |= 1 << if v > b.max { v - 7 } else { v };
        }
        field.star |= star;
    }
    Ok(field)
}

/// One value: a number within the field's bounds, or (month, day-of-week) a 3-letter name.
fn value(text: &str, b: &Bounds) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        return Ok(b.names_base + i as u32);
    }
    let allowed = if b.names.is_empty() {
        format!("{}-{}", b.min, b.explicit_max)
    } else {
        format!(
            "{}-{} or {}-{}",
            b.min,
            b.explicit_max,
            b.names[0].to_uppercase(),
            b.names[b.names.len() - 1].to_uppercase()
        )
    };
    if text.is_empty() || !text.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!("{text:?} is not a number (allowed: {allowed})"));
    }
    match text.parse::<u32>() {
        Ok(v) if (b.min..=b.explicit_max).contains(&v) => Ok(v),
        _ => Err(format!("{text} is out of range (allowed: {allowed})")),
    }
}

/// Whether some listed month has some listed day (February counts 29: leap years exist).
fn dom_possible(dom: Field, month: Field) -> bool {
    const DAYS: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    (1..=12).any(|m| month.has(m) && (1..=DAYS[m as usize]).any(|d| dom.has(d)))
}

/// The crate's 6-field form: seconds `0`, then each field as `*` or an explicit list, with
/// weekday names so the crate's 1-based numbering never matters.
fn render(f: &Fields, dom: Field, dow: Field) -> String {
    let list = |field: Field, b: &Bounds, names: Option<&[&str; 7]>| {
        let values: Vec<u32> = (b.min..=b.max).filter(|v| field.has(*v)).collect();
        if values.len() == (b.max - b.min + 1) as usize {
            return "*".to_owned();
        }
        let mut out = String::new();
        for (i, v) in values.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = match names {
                Some(names) => write!(out, "{sep}{}", names[*v as usize]),
                None => write!(out, "{sep}{v}"),
            };
        }
        out
    };
    format!(
        "0 {} {} {} {} {}",
        list(f.minute, &MINUTE, None),
        list(f.hour, &HOUR, None),
        list(dom, &DOM, None),
        list(f.month, &MONTH, None),
        list(dow, &DOW, Some(&CRATE_DOW)),
    )
}

#[cfg(test)]
mod tests;
