//! Postgres' `to_char(value, template)` for timestamps, dates, intervals and numbers, replacing
//! DataFusion's (which reads chrono's `%Y-%m-%d`, so `to_char(ts, 'YYYY-MM-DD')` printed the
//! template itself).
//!
//! **Date and time templates**: `HH HH12 HH24 MI SS MS US FF1..FF6 SSSS SSSSS AM PM A.M. P.M.`
//! (and lower case), `Y,YYY YYYY YYY YY Y IYYY IYY IY I BC AD B.C. A.D. MONTH Month month MON Mon
//! mon MM DAY Day day DY Dy dy DDD IDDD DD D ID W WW IW CC J Q RM rm TZ tz TZH TZM OF`, the `FM`
//! (no padding), `FX` and `TM` prefixes and the `TH`/`th` ordinal suffix, `"quoted text"` (a
//! backslash in it takes the next character as is; outside quotes a backslash only escapes a
//! quote); anything else is copied. A timestamp with a time zone is shown in the zone its type is
//! labelled with, the session's ([`super::time_zone`]), with the zone's abbreviation for `TZ`
//! (`EST`, `CET`); one without has an empty `TZ` and `OF` `+00`, as in Postgres.
//!
//! **Number templates**: `9 0 . D , G S MI PL SG PR L B C SP V RN rn TH th EEEE FM`, written the
//! way Postgres' `NUM_processor` (`formatting.c`) writes them, position by position, so odd
//! templates give Postgres' odd answers too:
//!
//! - the value is first printed as its type's `to_char` prints it: a numeric rounded half away
//!   from zero to the template's decimals (`0.50`); an int with zero decimals appended; a float
//!   through C's `%.*f` with at most 15 significant digits (a real 6; `NaN`, `Infinity`), so a
//!   fraction position past them writes C's end of string and the text stops there; `V` first
//!   multiplies by ten per `9` after it (an int4 wrapping as Postgres' does); an integer part
//!   longer than the template's positions becomes all `#`;
//! - blank integer positions lead, then the sign (a blank for plus, `<` under `PR`) just before
//!   the first digit; the last integer position shows `0` for a zero integer part unless
//!   decimals follow (`9.99` of 0.5 is `  .50`); `0` positions are zero-filled from the first;
//! - `S` puts the sign before the first digit or after the last, `MI`/`PL`/`SG` where they stand
//!   (`PL` alone also keeps the leading sign position), `PR` closes with `>` after the last digit;
//!   `,`/`G` show only after a digit; `L` is the C locale's currency symbol, a blank; `B`, `C`,
//!   `SP` print nothing; `TH` adds the ordinal of a non-negative integer;
//! - `FM` drops the padding, the blanks for a plus, and trailing fraction zeros in `9` positions
//!   (keeping the point: `FM99.99` of 12 is `12.`);
//! - `RN` prints the value rounded to an integer in Roman numerals, right-aligned in 15
//!   characters, or 15 `#` outside 1..3999; `EEEE` prints `d.dde+NN` alone, the exponent taken
//!   before rounding for a numeric or int8 (`10.00e+02`), after it for a float or int4.
//!
//! Templates Postgres refuses (two decimal points, `V` with one, `S` with `MI`, `EEEE` or `RN`
//! with other patterns, ...) are refused with its SQLSTATE and message. As in Postgres an int2
//! is formatted as a float8, and an empty template gives an empty text.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int32Type, Int64Type,
    IntervalMonthDayNanoType, IntervalUnit, TimeUnit, TimestampMicrosecondType,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

use super::time_zone::ValueZone;
use crate::error::{SqlError, sqlstate};

/// The `to_char` function.
pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(ToChar {
        signature: Signature::new(TypeSignature::Any(2), Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToChar {
    signature: Signature,
}

impl ScalarUDFImpl for ToChar {
    fn name(&self) -> &str {
        "to_char"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [value, template] = arrays.as_slice() else {
            return Err(DataFusionError::Plan(
                "to_char takes a value and a template".into(),
            ));
        };
        let template = cast(template, &DataType::Utf8)?;
        let template = template.as_string::<i32>();
        let mut out = StringBuilder::with_capacity(n, n * 16);
        let values = Values::of(value)?;
        let mut layouts = None;
        for i in 0..n {
            // Postgres: an empty template formats a date, time or interval as NULL.
            let empty_for_datetime =
                template.value(i).is_empty() && !matches!(values, Values::Number(_));
            if value.is_null(i) || template.is_null(i) || empty_for_datetime {
                out.append_null();
                continue;
            }
            out.append_value(values.format(i, template.value(i), &mut layouts)?);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// The first argument, as the formatter reads it.
enum Values {
    /// Wall clocks in microseconds since the epoch, and a `timestamptz`'s zone of each.
    Timestamp(ArrayRef, Option<Vec<Option<ValueZone>>>),
    Date(ArrayRef),
    Interval(ArrayRef),
    Number(Numbers),
}

/// A number argument, by the Postgres type whose `to_char` formats it.
enum Numbers {
    /// Unscaled values and their scale.
    Numeric(ArrayRef, i8),
    Int4(ArrayRef),
    Int8(ArrayRef),
    Float4(ArrayRef),
    Float8(ArrayRef),
}

impl Numbers {
    /// Row `i` as the number formatter reads it.
    fn text(&self, i: usize, layout: &NumLayout) -> Result<NumText> {
        Ok(match self {
            Numbers::Numeric(a, scale) => {
                NumText::numeric(a.as_primitive::<Decimal128Type>().value(i), *scale, layout)
            }
            Numbers::Int4(a) => {
                let v = a.as_primitive::<Int32Type>().value(i);
                NumText::int(i64::from(v), false, layout)?
            }
            Numbers::Int8(a) => NumText::int(a.as_primitive::<Int64Type>().value(i), true, layout)?,
            Numbers::Float4(a) => {
                let v = a.as_primitive::<Float32Type>().value(i);
                NumText::float(f64::from(v), true, layout)
            }
            Numbers::Float8(a) => {
                NumText::float(a.as_primitive::<Float64Type>().value(i), false, layout)
            }
        })
    }
}

impl Values {
    fn of(value: &ArrayRef) -> Result<Values> {
        Ok(match value.data_type() {
            DataType::Timestamp(..) => match super::time_zone::local(value)? {
                // A `timestamptz` in the zone its type is labelled with (the session's).
                Some(local) => Values::Timestamp(local.clocks, Some(local.zones)),
                None => Values::Timestamp(
                    cast(value, &DataType::Timestamp(TimeUnit::Microsecond, None))?,
                    None,
                ),
            },
            DataType::Date32 | DataType::Date64 => Values::Date(cast(value, &DataType::Date32)?),
            DataType::Interval(_) | DataType::Duration(_) => Values::Interval(cast(
                value,
                &DataType::Interval(IntervalUnit::MonthDayNano),
            )?),
            DataType::Decimal128(_, s) => Values::Number(Numbers::Numeric(Arc::clone(value), *s)),
            DataType::Decimal256(_, s) => Values::Number(Numbers::Numeric(
                cast(value, &DataType::Decimal128(38, *s))?,
                *s,
            )),
            // Postgres has no to_char(smallint): the call resolves to the float8 one.
            DataType::Int8 | DataType::Int16 => {
                Values::Number(Numbers::Float8(cast(value, &DataType::Float64)?))
            }
            DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
                Values::Number(Numbers::Int4(cast(value, &DataType::Int32)?))
            }
            DataType::Int64 | DataType::UInt32 => {
                Values::Number(Numbers::Int8(cast(value, &DataType::Int64)?))
            }
            t if t.is_integer() => Values::Number(Numbers::Numeric(
                cast(value, &DataType::Decimal128(38, 0))?,
                0,
            )),
            DataType::Float16 | DataType::Float32 => {
                Values::Number(Numbers::Float4(cast(value, &DataType::Float32)?))
            }
            t if t.is_floating() => {
                Values::Number(Numbers::Float8(cast(value, &DataType::Float64)?))
            }
            t => {
                return Err(DataFusionError::Plan(format!(
                    "function to_char({t}, text) does not exist"
                )));
            }
        })
    }

    /// Row `i` formatted by `template`; `layouts` keeps the last number template parsed.
    fn format(
        &self,
        i: usize,
        template: &str,
        layouts: &mut Option<(String, NumLayout)>,
    ) -> Result<String> {
        let number = match self {
            Values::Timestamp(a, zones) => {
                let micros = a.as_primitive::<TimestampMicrosecondType>().value(i);
                let at = chrono::DateTime::from_timestamp_micros(micros)
                    .ok_or_else(|| DataFusionError::Execution("timestamp out of range".into()))?
                    .naive_utc();
                let zone = zones
                    .as_ref()
                    .and_then(|z| z.get(i))
                    .and_then(Option::as_ref);
                return Ok(format_datetime(&at, zone, template));
            }
            Values::Date(a) => {
                let days = a.as_primitive::<Date32Type>().value(i);
                let date = NaiveDate::from_num_days_from_ce_opt(days + 719_163)
                    .ok_or_else(|| DataFusionError::Execution("date out of range".into()))?;
                return Ok(format_datetime(
                    &date.and_time(chrono::NaiveTime::MIN),
                    None,
                    template,
                ));
            }
            Values::Interval(a) => {
                let v = a.as_primitive::<IntervalMonthDayNanoType>().value(i);
                return format_interval(v.months, v.days, v.nanoseconds, template);
            }
            Values::Number(number) => number,
        };
        // Postgres answers an empty number template before reading it.
        if template.is_empty() {
            return Ok(String::new());
        }
        let (_, layout) = match layouts.take() {
            Some((t, layout)) if t == template => layouts.insert((t, layout)),
            _ => layouts.insert((template.to_string(), NumLayout::parse(template)?)),
        };
        let text = number.text(i, layout)?;
        format_number(&text, layout)
    }
}

/// The English ordinal suffix of `n`.
fn ordinal(n: i64, upper: bool) -> &'static str {
    let n = n.unsigned_abs();
    let s = match (n % 100, n % 10) {
        (11..=13, _) => "th",
        (_, 1) => "st",
        (_, 2) => "nd",
        (_, 3) => "rd",
        _ => "th",
    };
    if upper {
        match s {
            "st" => "ST",
            "nd" => "ND",
            "rd" => "RD",
            _ => "TH",
        }
    } else {
        s
    }
}

pub(super) const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
pub(super) const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
pub(super) const ROMAN: [&str; 12] = [
    "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII",
];

/// How a word field is capitalized, from how the template spells it (`MONTH`, `Month`, `month`).
#[derive(Clone, Copy)]
enum Case {
    Upper,
    Title,
    Lower,
}

fn case_of(spelled: &str) -> Case {
    let mut chars = spelled.chars().filter(|c| c.is_alphabetic());
    match (chars.next(), chars.next()) {
        (Some(a), Some(b)) if a.is_uppercase() && b.is_uppercase() => Case::Upper,
        (Some(a), _) if a.is_uppercase() => Case::Title,
        _ => Case::Lower,
    }
}

fn cased(word: &str, case: Case) -> String {
    match case {
        Case::Upper => word.to_uppercase(),
        Case::Title => word.to_string(),
        Case::Lower => word.to_lowercase(),
    }
}

/// The date and time fields, longest first (so `MONTH` wins over `MON` and `MM`, `DDD` over
/// `DD`); matched without regard to case, which only decides how words are capitalized.
const FIELDS: &[&str] = &[
    "Y,YYY", "YYYY", "YYY", "YY", "IYYY", "IYY", "IY", "IDDD", "ID", "IW", "HH24", "HH12", "HH",
    "MONTH", "MON", "MM", "MI", "MS", "SSSSS", "SSSS", "SS", "US", "FF1", "FF2", "FF3", "FF4",
    "FF5", "FF6", "A.M.", "P.M.", "AM", "PM", "B.C.", "A.D.", "BC", "AD", "DAY", "DDD", "DD", "DY",
    "D", "WW", "W", "CC", "J", "Q", "RM", "TZH", "TZM", "TZ", "OF", "Y", "I",
];

/// `at` (a wall clock, in `zone` for a `timestamptz`) formatted by a Postgres date/time
/// `template` (see the module documentation).
pub fn format_datetime(at: &NaiveDateTime, zone: Option<&ValueZone>, template: &str) -> String {
    let formatted: Result<String> = format_template(template, |field, spelled, fill| {
        Ok(field_value(at, zone, field, spelled, fill))
    });
    formatted.unwrap_or_default()
}

/// An interval's parts as Postgres' `to_char` reads them: years and months from the months, the
/// days, and hours (not wrapped at 24), minutes, seconds and microseconds from the time, all
/// with the interval's signs.
struct IntervalParts {
    years: i64,
    months: i64,
    days: i64,
    hours: i64,
    minutes: i64,
    seconds: i64,
    micros: i64,
}

/// An interval formatted by a date/time `template`: the time fields, `DD` (days), `MM` and the
/// year fields; names of months and days are refused, as in Postgres.
fn format_interval(months: i32, days: i32, nanos: i64, template: &str) -> Result<String> {
    let micros = nanos / 1000;
    let parts = IntervalParts {
        years: i64::from(months / 12),
        months: i64::from(months % 12),
        days: i64::from(days),
        hours: micros / 3_600_000_000,
        minutes: micros / 60_000_000 % 60,
        seconds: micros / 1_000_000 % 60,
        micros: micros % 1_000_000,
    };
    format_template(template, |field, _spelled, fill| {
        let num = |n: i64, width: usize| padded(n, width, fill);
        // C's `%0*d`, whose width counts the sign: Postgres' `DD` of -1 day is `-1`.
        let signed = |n: i64, width: usize| {
            let text = if fill {
                n.to_string()
            } else {
                format!("{n:0width$}")
            };
            (text, Some(n))
        };
        let p = &parts;
        Ok(match field.to_ascii_uppercase().as_str() {
            "HH24" => num(p.hours, 2),
            "HH" | "HH12" => num(if p.hours % 12 == 0 { 12 } else { p.hours % 12 }, 2),
            "MI" => num(p.minutes, 2),
            "SS" => num(p.seconds, 2),
            "MS" => num(p.micros / 1000, 3),
            "US" | "FF6" => num(p.micros, 6),
            "FF1" => num(p.micros / 100_000, 1),
            "FF2" => num(p.micros / 10_000, 2),
            "FF3" => num(p.micros / 1000, 3),
            "FF4" => num(p.micros / 100, 4),
            "FF5" => num(p.micros / 10, 5),
            "SSSS" | "SSSSS" => num(p.hours * 3600 + p.minutes * 60 + p.seconds, 0),
            "DD" => signed(p.days, 2),
            // Postgres' day of the "year" of an interval: months of 30 days, then its days.
            "DDD" => signed((p.years * 12 + p.months) * 30 + p.days, 3),
            "MM" => num(p.months, 2),
            "YYYY" => num(p.years, 4),
            "YYY" => num(p.years % 1000, 3),
            "YY" => num(p.years % 100, 2),
            "Y" => num(p.years % 10, 1),
            "AM" | "PM" | "A.M." | "P.M." => {
                let pm = p.hours % 24 >= 12;
                let marker = match (field.contains('.'), pm) {
                    (false, false) => "AM",
                    (false, true) => "PM",
                    (true, false) => "A.M.",
                    (true, true) => "P.M.",
                };
                (marker.to_string(), None)
            }
            _ => {
                return Err(DataFusionError::External(Box::new(
                    SqlError::new(
                        sqlstate::INVALID_DATETIME_FORMAT,
                        "invalid format specification for an interval value",
                    )
                    .with_hint("Intervals are not tied to specific calendar dates."),
                )));
            }
        })
    })
}

/// Walks a Postgres date/time `template`: modifiers, quoted text and escapes here, each field's
/// text from `value_of(field, as spelled, under FM)`.
fn format_template(
    template: &str,
    value_of: impl Fn(&str, &str, bool) -> Result<(String, Option<i64>)>,
) -> Result<String> {
    let mut out = String::with_capacity(template.len() + 8);
    let mut rest = template;
    let mut fill = false;
    while !rest.is_empty() {
        // Modifiers that apply to the next field.
        if let Some(tail) = strip_ci(rest, "FM") {
            fill = true;
            rest = tail;
            continue;
        }
        // TM (translated names) writes names unpadded, as FM does; the C locale's are English.
        if let Some(tail) = strip_ci(rest, "TM") {
            fill = true;
            rest = tail;
            continue;
        }
        if let Some(tail) = strip_ci(rest, "FX") {
            rest = tail;
            continue;
        }
        if let Some(tail) = rest.strip_prefix('"') {
            // Quoted text, with backslash escapes, up to the closing quote.
            let mut chars = tail.char_indices();
            let mut end = tail.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.push(chars.next().map_or('\\', |(_, next)| next)),
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            rest = &tail[end.min(tail.len())..];
            // FM applies to the field right after it: quoted text in between takes it
            // (`FM"x"DD` of the 7th is `x07`, as in Postgres).
            fill = false;
            continue;
        }
        // Outside quotes a backslash only escapes a quote; elsewhere it is copied.
        if let Some(tail) = rest.strip_prefix("\\\"") {
            out.push('"');
            rest = tail;
            fill = false;
            continue;
        }
        let Some(field) = FIELDS.iter().find(|f| {
            rest.len() >= f.len()
                && rest.is_char_boundary(f.len())
                && rest[..f.len()].eq_ignore_ascii_case(f)
        }) else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
            fill = false;
            continue;
        };
        let spelled = &rest[..field.len()];
        rest = &rest[field.len()..];
        let (text, number) = value_of(field, spelled, fill)?;
        out.push_str(&text);
        // The ordinal suffix of a numeric field.
        if let Some(n) = number {
            if let Some(tail) = rest.strip_prefix("TH") {
                out.push_str(ordinal(n, true));
                rest = tail;
            } else if let Some(tail) = rest.strip_prefix("th") {
                out.push_str(ordinal(n, false));
                rest = tail;
            }
        }
        fill = false;
    }
    Ok(out)
}

/// A numeric field: zero-padded to `width` digits after its sign, unpadded under `FM`; with its
/// number, for an ordinal suffix.
fn padded(n: i64, width: usize, fill: bool) -> (String, Option<i64>) {
    let text = if fill {
        n.to_string()
    } else if n < 0 {
        format!("-{:0width$}", -n, width = width)
    } else {
        format!("{n:0width$}")
    };
    (text, Some(n))
}

/// `rest` after `prefix`, compared without regard to ASCII case.
pub(super) fn strip_ci<'a>(rest: &'a str, prefix: &str) -> Option<&'a str> {
    (rest.len() >= prefix.len()
        && rest.is_char_boundary(prefix.len())
        && rest[..prefix.len()].eq_ignore_ascii_case(prefix))
    .then(|| &rest[prefix.len()..])
}

/// One field's text, and its number for an ordinal suffix.
fn field_value(
    at: &NaiveDateTime,
    zone: Option<&ValueZone>,
    field: &str,
    spelled: &str,
    fill: bool,
) -> (String, Option<i64>) {
    let num = |n: i64, width: usize| padded(n, width, fill);
    let word = |w: &str, pad: usize| -> (String, Option<i64>) {
        let w = cased(w, case_of(spelled));
        if fill {
            (w, None)
        } else {
            (format!("{w:<pad$}"), None)
        }
    };
    let year = i64::from(at.year());
    let iso = at.iso_week();
    let hour12 = match at.hour() % 12 {
        0 => 12,
        h => h,
    };
    let micros = i64::from(at.nanosecond() / 1000);
    let pm = at.hour() >= 12;
    let upper = spelled.chars().next().is_some_and(char::is_uppercase);
    let marker = |am: &str, pm_: &str| -> (String, Option<i64>) {
        let m = if pm { pm_ } else { am };
        (
            if upper {
                m.to_string()
            } else {
                m.to_lowercase()
            },
            None,
        )
    };
    match field.to_ascii_uppercase().as_str() {
        "HH" | "HH12" => num(i64::from(hour12), 2),
        "HH24" => num(i64::from(at.hour()), 2),
        "MI" => num(i64::from(at.minute()), 2),
        "SS" => num(i64::from(at.second()), 2),
        "MS" => num(micros / 1000, 3),
        "US" => num(micros, 6),
        "FF1" => num(micros / 100_000, 1),
        "FF2" => num(micros / 10_000, 2),
        "FF3" => num(micros / 1000, 3),
        "FF4" => num(micros / 100, 4),
        "FF5" => num(micros / 10, 5),
        "FF6" => num(micros, 6),
        "SSSS" | "SSSSS" => num(i64::from(at.num_seconds_from_midnight()), 0),
        "AM" | "PM" => marker("AM", "PM"),
        "A.M." | "P.M." => marker("A.M.", "P.M."),
        "BC" | "AD" => marker_era(year, upper, false),
        "B.C." | "A.D." => marker_era(year, upper, true),
        "Y,YYY" => {
            let y = year.abs();
            (format!("{},{:03}", y / 1000, y % 1000), Some(y))
        }
        "YYYY" => num(year, 4),
        "YYY" => num(year % 1000, 3),
        "YY" => num(year % 100, 2),
        "Y" => num(year % 10, 1),
        "IYYY" => num(i64::from(iso.year()), 4),
        "IYY" => num(i64::from(iso.year()) % 1000, 3),
        "IY" => num(i64::from(iso.year()) % 100, 2),
        "I" => num(i64::from(iso.year()) % 10, 1),
        "MONTH" => word(MONTHS[at.month0() as usize], 9),
        "MON" => word(&MONTHS[at.month0() as usize][..3], 0),
        "MM" => num(i64::from(at.month()), 2),
        "DAY" => word(DAYS[at.weekday().num_days_from_sunday() as usize], 9),
        "DY" => word(&DAYS[at.weekday().num_days_from_sunday() as usize][..3], 0),
        "DDD" => num(i64::from(at.ordinal()), 3),
        "IDDD" => num(
            i64::from(iso.week0()) * 7 + i64::from(at.weekday().number_from_monday()),
            3,
        ),
        "DD" => num(i64::from(at.day()), 2),
        "D" => num(i64::from(at.weekday().number_from_sunday()), 1),
        "ID" => num(i64::from(at.weekday().number_from_monday()), 1),
        "W" => num(i64::from(at.day0() / 7 + 1), 1),
        "WW" => num(i64::from(at.ordinal0() / 7 + 1), 2),
        "IW" => num(i64::from(iso.week()), 2),
        "CC" => {
            let cc = if year > 0 {
                (year + 99) / 100
            } else {
                -((-year + 99) / 100)
            };
            num(cc, 2)
        }
        "J" => num(i64::from(at.date().num_days_from_ce()) + 1_721_425, 0),
        "Q" => num(i64::from(at.month0() / 3 + 1), 1),
        "RM" => {
            let r = ROMAN[at.month0() as usize];
            let r = if spelled.starts_with('r') {
                r.to_lowercase()
            } else {
                r.to_string()
            };
            if fill {
                (r, None)
            } else {
                (format!("{r:<4}"), None)
            }
        }
        "TZ" => (
            match zone {
                Some(z) => cased(&z.abbreviation, case_of(spelled)),
                None => String::new(),
            },
            None,
        ),
        "TZH" => {
            let offset = zone.map_or(0, |z| z.offset);
            let sign = if offset < 0 { '-' } else { '+' };
            (format!("{sign}{:02}", offset.unsigned_abs() / 3600), None)
        }
        "TZM" => {
            let offset = zone.map_or(0, |z| z.offset);
            (format!("{:02}", offset.unsigned_abs() / 60 % 60), None)
        }
        "OF" => {
            let offset = zone.map_or(0, |z| z.offset);
            let sign = if offset < 0 { '-' } else { '+' };
            let s = offset.unsigned_abs();
            let text = if s.is_multiple_of(3600) {
                format!("{sign}{:02}", s / 3600)
            } else {
                format!("{sign}{:02}:{:02}", s / 3600, s / 60 % 60)
            };
            (text, None)
        }
        _ => (spelled.to_string(), None),
    }
}

fn marker_era(year: i64, upper: bool, dotted: bool) -> (String, Option<i64>) {
    let m = match (year > 0, dotted) {
        (true, false) => "AD",
        (false, false) => "BC",
        (true, true) => "A.D.",
        (false, true) => "B.C.",
    };
    (
        if upper {
            m.to_string()
        } else {
            m.to_lowercase()
        },
        None,
    )
}

/// A number template's element (Postgres' `NUM_keywords`); `Char` is copied as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumNode {
    Comma,
    Point,
    Zero,
    Nine,
    Blank,
    Currency,
    Decimal,
    Exponent,
    Fill,
    Group,
    Local,
    Minus,
    Plus,
    Brackets,
    /// `RN` (true) or `rn`.
    Roman(bool),
    SignAny,
    Spell,
    Sign,
    /// `TH` (true) or `th`.
    Ordinal(bool),
    Shift,
    Char(char),
}

/// The patterns in Postgres' order of trial: the first the template continues with wins. Each is
/// spelled all upper or all lower case (`Fm` is two characters).
const NUM_PATTERNS: &[(&str, NumNode)] = &[
    (",", NumNode::Comma),
    (".", NumNode::Point),
    ("0", NumNode::Zero),
    ("9", NumNode::Nine),
    ("B", NumNode::Blank),
    ("C", NumNode::Currency),
    ("D", NumNode::Decimal),
    ("EEEE", NumNode::Exponent),
    ("FM", NumNode::Fill),
    ("G", NumNode::Group),
    ("L", NumNode::Local),
    ("MI", NumNode::Minus),
    ("PL", NumNode::Plus),
    ("PR", NumNode::Brackets),
    ("RN", NumNode::Roman(true)),
    ("SG", NumNode::SignAny),
    ("SP", NumNode::Spell),
    ("S", NumNode::Sign),
    ("TH", NumNode::Ordinal(true)),
    ("V", NumNode::Shift),
    ("b", NumNode::Blank),
    ("c", NumNode::Currency),
    ("d", NumNode::Decimal),
    ("eeee", NumNode::Exponent),
    ("fm", NumNode::Fill),
    ("g", NumNode::Group),
    ("l", NumNode::Local),
    ("mi", NumNode::Minus),
    ("pl", NumNode::Plus),
    ("pr", NumNode::Brackets),
    ("rn", NumNode::Roman(false)),
    ("sg", NumNode::SignAny),
    ("sp", NumNode::Spell),
    ("s", NumNode::Sign),
    ("th", NumNode::Ordinal(false)),
    ("v", NumNode::Shift),
];

// What a template asks for (Postgres' `NUM_F_*`).
const F_DECIMAL: u16 = 1 << 0;
const F_LDECIMAL: u16 = 1 << 1;
const F_ZERO: u16 = 1 << 2;
const F_BLANK: u16 = 1 << 3;
const F_FILL: u16 = 1 << 4;
const F_LSIGN: u16 = 1 << 5;
const F_BRACKET: u16 = 1 << 6;
const F_MINUS: u16 = 1 << 7;
const F_PLUS: u16 = 1 << 8;
const F_ROMAN: u16 = 1 << 9;
const F_MULTI: u16 = 1 << 10;
const F_PLUS_POST: u16 = 1 << 11;
const F_MINUS_POST: u16 = 1 << 12;
const F_EEEE: u16 = 1 << 13;

/// Where `S` puts the sign: before the first digit or after the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum LocaleSign {
    #[default]
    None,
    Pre,
    Post,
}

/// A parsed number template (Postgres' `NUMDesc` and its nodes).
#[derive(Debug, Clone, Default)]
struct NumLayout {
    nodes: Vec<NumNode>,
    flags: u16,
    /// Digit positions before the decimal point, after it, and `9`s after `V` (a `0` after `V`
    /// counts as an integer position, as in Postgres).
    pre: usize,
    post: usize,
    multi: usize,
    lsign: LocaleSign,
    /// Integer positions before `S`.
    pre_lsign_num: usize,
    /// One plus the integer position of the first `0`, and the position after the last `0`.
    zero_start: usize,
    zero_end: usize,
}

/// A number template Postgres refuses (42601), in its words.
fn template_error(message: &str, detail: Option<&str>) -> DataFusionError {
    let mut error = SqlError::new(sqlstate::SYNTAX_ERROR, message);
    if let Some(detail) = detail {
        error = error.with_detail(detail);
    }
    DataFusionError::External(Box::new(error))
}

impl NumLayout {
    fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    fn parse(template: &str) -> Result<NumLayout> {
        let mut layout = NumLayout::default();
        let mut rest = template;
        while let Some(c) = rest.chars().next() {
            if let Some((name, node)) = NUM_PATTERNS.iter().find(|(name, _)| rest.starts_with(name))
            {
                layout.prepare(*node)?;
                layout.nodes.push(*node);
                rest = &rest[name.len()..];
            } else if let Some(quoted) = rest.strip_prefix('"') {
                // Quoted text up to the closing quote; a backslash takes the next character as is.
                let mut chars = quoted.char_indices();
                rest = "";
                while let Some((i, c)) = chars.next() {
                    match c {
                        '"' => {
                            rest = &quoted[i + 1..];
                            break;
                        }
                        '\\' => {
                            let escaped = chars.next().map_or('\\', |(_, next)| next);
                            layout.nodes.push(NumNode::Char(escaped));
                        }
                        c => layout.nodes.push(NumNode::Char(c)),
                    }
                }
            } else if let Some(tail) = rest.strip_prefix("\\\"") {
                // Outside quotes a backslash only escapes a quote.
                layout.nodes.push(NumNode::Char('"'));
                rest = tail;
            } else {
                layout.nodes.push(NumNode::Char(c));
                rest = &rest[c.len_utf8()..];
            }
        }
        Ok(layout)
    }

    /// Takes one pattern into account, refusing the combinations Postgres refuses
    /// (`NUMDesc_prepare`).
    fn prepare(&mut self, node: NumNode) -> Result<()> {
        let fail = |message: &str| Err(template_error(message, None));
        if self.has(F_EEEE) && node != NumNode::Exponent {
            return fail("\"EEEE\" must be the last pattern used");
        }
        match node {
            NumNode::Nine => {
                if self.has(F_BRACKET) {
                    return fail("\"9\" must be ahead of \"PR\"");
                }
                if self.has(F_MULTI) {
                    self.multi += 1;
                } else if self.has(F_DECIMAL) {
                    self.post += 1;
                } else {
                    self.pre += 1;
                }
            }
            NumNode::Zero => {
                if self.has(F_BRACKET) {
                    return fail("\"0\" must be ahead of \"PR\"");
                }
                if !self.has(F_ZERO | F_DECIMAL) {
                    self.flags |= F_ZERO;
                    self.zero_start = self.pre + 1;
                }
                if self.has(F_DECIMAL) {
                    self.post += 1;
                } else {
                    self.pre += 1;
                }
                self.zero_end = self.pre + self.post;
            }
            NumNode::Blank => {
                if self.pre == 0 && self.post == 0 && !self.has(F_ZERO) {
                    self.flags |= F_BLANK;
                }
            }
            NumNode::Point | NumNode::Decimal => {
                if node == NumNode::Decimal {
                    self.flags |= F_LDECIMAL;
                }
                if self.has(F_DECIMAL) {
                    return fail("multiple decimal points");
                }
                if self.has(F_MULTI) {
                    return fail("cannot use \"V\" and decimal point together");
                }
                self.flags |= F_DECIMAL;
            }
            NumNode::Fill => self.flags |= F_FILL,
            NumNode::Sign => {
                if self.has(F_LSIGN) {
                    return fail("cannot use \"S\" twice");
                }
                if self.has(F_PLUS | F_MINUS | F_BRACKET) {
                    return fail("cannot use \"S\" and \"PL\"/\"MI\"/\"SG\"/\"PR\" together");
                }
                if !self.has(F_DECIMAL) {
                    self.lsign = LocaleSign::Pre;
                    self.pre_lsign_num = self.pre;
                    self.flags |= F_LSIGN;
                } else if self.lsign == LocaleSign::None {
                    self.lsign = LocaleSign::Post;
                    self.flags |= F_LSIGN;
                }
            }
            NumNode::Minus => {
                if self.has(F_LSIGN) {
                    return fail("cannot use \"S\" and \"MI\" together");
                }
                self.flags |= F_MINUS;
                if self.has(F_DECIMAL) {
                    self.flags |= F_MINUS_POST;
                }
            }
            NumNode::Plus => {
                if self.has(F_LSIGN) {
                    return fail("cannot use \"S\" and \"PL\" together");
                }
                self.flags |= F_PLUS;
                if self.has(F_DECIMAL) {
                    self.flags |= F_PLUS_POST;
                }
            }
            NumNode::SignAny => {
                if self.has(F_LSIGN) {
                    return fail("cannot use \"S\" and \"SG\" together");
                }
                self.flags |= F_MINUS | F_PLUS;
            }
            NumNode::Brackets => {
                if self.has(F_LSIGN | F_PLUS | F_MINUS) {
                    return fail("cannot use \"PR\" and \"S\"/\"PL\"/\"MI\"/\"SG\" together");
                }
                self.flags |= F_BRACKET;
            }
            NumNode::Roman(_) => {
                if self.has(F_ROMAN) {
                    return fail("cannot use \"RN\" twice");
                }
                self.flags |= F_ROMAN;
            }
            NumNode::Shift => {
                if self.has(F_DECIMAL) {
                    return fail("cannot use \"V\" and decimal point together");
                }
                self.flags |= F_MULTI;
            }
            NumNode::Exponent => {
                if self.has(F_EEEE) {
                    return fail("cannot use \"EEEE\" twice");
                }
                if self.has(
                    F_BLANK | F_FILL | F_LSIGN | F_BRACKET | F_MINUS | F_PLUS | F_ROMAN | F_MULTI,
                ) {
                    return Err(template_error(
                        "\"EEEE\" is incompatible with other formats",
                        Some(
                            "\"EEEE\" may only be used together with digit and decimal point \
                             patterns.",
                        ),
                    ));
                }
                self.flags |= F_EEEE;
            }
            NumNode::Comma
            | NumNode::Currency
            | NumNode::Group
            | NumNode::Local
            | NumNode::Spell
            | NumNode::Ordinal(_)
            | NumNode::Char(_) => {}
        }
        if self.has(F_ROMAN) && self.flags & !(F_ROMAN | F_FILL) != 0 {
            return Err(template_error(
                "\"RN\" is incompatible with other formats",
                Some("\"RN\" may only be used together with \"FM\"."),
            ));
        }
        Ok(())
    }
}

/// One value as Postgres' `NUM_processor` reads it (what `numeric_to_char` and its siblings
/// prepare).
#[derive(Debug)]
struct NumText {
    /// The digits without the sign, as the type's output function prints them rounded to the
    /// template's decimals (`0.50`, `12`); `#`s where the integer digits overflow; a Roman
    /// numeral; or, under `EEEE`, the whole result.
    number: String,
    /// `-`, `+`, or nothing for Roman numerals and `EEEE`.
    sign: Option<char>,
    /// Integer positions left blank before the first digit.
    pre_spaces: usize,
    /// The template's integer and fraction positions as the value's type adjusts them (`V` adds
    /// integer positions; a float has at most 15 significant digits, a real 6).
    pre: usize,
    post: usize,
}

impl NumText {
    /// `digits` (`int[.frac]`, no sign) in `pre` integer positions: blanks before them, or all
    /// `#` when there are more integer digits than positions.
    fn placed(digits: String, negative: bool, pre: usize, post: usize) -> NumText {
        let int_len = digits.find('.').unwrap_or(digits.len());
        let sign = Some(if negative { '-' } else { '+' });
        if int_len > pre {
            let number = format!("{}.{}", "#".repeat(pre), "#".repeat(post));
            NumText {
                number,
                sign,
                pre_spaces: 0,
                pre,
                post,
            }
        } else {
            NumText {
                number: digits,
                sign,
                pre_spaces: pre - int_len,
                pre,
                post,
            }
        }
    }

    /// A text printed whole (a Roman numeral, or the result under `EEEE`).
    fn whole(number: String) -> NumText {
        NumText {
            number,
            sign: None,
            pre_spaces: 0,
            pre: 0,
            post: 0,
        }
    }

    /// A numeric (`v / 10^scale`).
    fn numeric(v: i128, scale: i8, layout: &NumLayout) -> NumText {
        let abs = v.unsigned_abs();
        let scale = i64::from(scale);
        if layout.has(F_ROMAN) {
            // Rounded half away from zero to an int4; beyond it, `#`s.
            let n = fixed(abs, scale, 0)
                .parse::<i64>()
                .ok()
                .map(|n| if v < 0 { -n } else { n })
                .and_then(|n| i32::try_from(n).ok())
                .unwrap_or(i32::MAX);
            return NumText::whole(roman(n));
        }
        if layout.has(F_EEEE) {
            return NumText::whole(scientific(v < 0, abs, scale, layout.post));
        }
        let shift = i64::try_from(layout.multi).unwrap_or(i64::MAX);
        let digits = fixed(abs, scale.saturating_sub(shift), layout.post);
        let negative = v < 0 && digits.bytes().any(|d| matches!(d, b'1'..=b'9'));
        NumText::placed(digits, negative, layout.pre + layout.multi, layout.post)
    }

    /// An int4 (`int8` false) or int8.
    fn int(v: i64, int8: bool, layout: &NumLayout) -> Result<NumText> {
        if layout.has(F_ROMAN) {
            return Ok(NumText::whole(roman(i32::try_from(v).unwrap_or(i32::MAX))));
        }
        if layout.has(F_EEEE) {
            // Postgres goes through a numeric for an int8, a float for an int4.
            return Ok(NumText::whole(if int8 {
                scientific(v < 0, u128::from(v.unsigned_abs()), 0, layout.post)
            } else {
                c_exponent(v as f64, layout.post)
            }));
        }
        let mut v = v;
        if layout.has(F_MULTI) {
            let power = u32::try_from(layout.multi)
                .ok()
                .and_then(|n| 10i64.checked_pow(n));
            if int8 {
                v = power.and_then(|p| v.checked_mul(p)).ok_or_else(|| {
                    DataFusionError::External(Box::new(SqlError::new(
                        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                        "bigint out of range",
                    )))
                })?;
            } else {
                // Postgres multiplies by `(int32) pow(10, n)`, which is INT_MIN past int4 on
                // x86, and wraps.
                let power = power
                    .and_then(|p| i32::try_from(p).ok())
                    .unwrap_or(i32::MIN);
                let v4 = i32::try_from(v).unwrap_or_default();
                v = i64::from(v4.wrapping_mul(power));
            }
        }
        let mut digits = v.unsigned_abs().to_string();
        if layout.post > 0 {
            digits.push('.');
            digits.push_str(&"0".repeat(layout.post));
        }
        Ok(NumText::placed(
            digits,
            v < 0,
            layout.pre + layout.multi,
            layout.post,
        ))
    }

    /// A float8, or a float4 (`float4`, the value widened from it).
    fn float(v: f64, float4: bool, layout: &NumLayout) -> NumText {
        if layout.has(F_ROMAN) {
            let r = v.round_ties_even();
            let n = if (-2_147_483_648.0..2_147_483_648.0).contains(&r) {
                r as i32
            } else {
                i32::MAX
            };
            return NumText::whole(roman(n));
        }
        let (pre, post) = (layout.pre, layout.post);
        if layout.has(F_EEEE) {
            if !v.is_finite() {
                return NumText::whole(format!(" {}.{}", "#".repeat(pre), "#".repeat(post + 4)));
            }
            return NumText::whole(c_exponent(v, post));
        }
        let mut v = v;
        if layout.has(F_MULTI) {
            let power = 10f64.powf(layout.multi as f64);
            v = if float4 {
                f64::from(v as f32 * power as f32)
            } else {
                v * power
            };
        }
        // Postgres shows no more significant digits than the type holds.
        let digits = if float4 { 6 } else { 15 };
        let int_len = c_fixed(v.abs(), 0).len();
        let post = if int_len >= digits {
            0
        } else {
            post.min(digits - int_len)
        };
        let text = c_fixed(v, post);
        match text.strip_prefix('-') {
            Some(digits) => NumText::placed(digits.to_string(), true, pre + layout.multi, post),
            None => NumText::placed(text, false, pre + layout.multi, post),
        }
    }
}

/// `abs / 10^scale` rounded half away from zero to `post` decimals, as Postgres' `numeric_out`
/// prints it: at least one integer digit, a point only with decimals.
fn fixed(abs: u128, scale: i64, post: usize) -> String {
    let mut digits = abs.to_string().into_bytes();
    let frac_len = usize::try_from(scale).unwrap_or(0);
    if scale < 0 {
        let zeros = usize::try_from(scale.unsigned_abs()).unwrap_or(0);
        digits.resize(digits.len() + zeros, b'0');
    } else if digits.len() <= frac_len {
        let mut padded = vec![b'0'; frac_len + 1 - digits.len()];
        padded.append(&mut digits);
        digits = padded;
    }
    let int_len = digits.len() - frac_len;
    let round_up = digits.get(int_len + post).is_some_and(|d| *d >= b'5');
    digits.resize(int_len + post, b'0');
    if round_up {
        let mut carry = true;
        for d in digits.iter_mut().rev() {
            if *d == b'9' {
                *d = b'0';
            } else {
                *d += 1;
                carry = false;
                break;
            }
        }
        if carry {
            digits.insert(0, b'1');
        }
    }
    let (int, frac) = digits.split_at(digits.len() - post);
    let first = int
        .iter()
        .position(|d| *d != b'0')
        .unwrap_or(int.len().saturating_sub(1));
    let mut text = String::from_utf8_lossy(int.get(first..).unwrap_or(b"0")).into_owned();
    if post > 0 {
        text.push('.');
        text.push_str(&String::from_utf8_lossy(frac));
    }
    text
}

/// Postgres' `numeric_out_sci` with a blank for a plus: `d.ddd` with `post` decimals and the
/// exponent of the first digit, taken before rounding (999.995 with two decimals is
/// `10.00e+02`).
fn scientific(negative: bool, abs: u128, scale: i64, post: usize) -> String {
    let (mantissa, exponent) = if abs == 0 {
        (fixed(0, 0, post), 0)
    } else {
        let first = i64::try_from(abs.to_string().len()).unwrap_or(0) - 1;
        (fixed(abs, first, post), first - scale)
    };
    format!(
        "{}{mantissa}e{}{:02}",
        if negative { '-' } else { ' ' },
        if exponent < 0 { '-' } else { '+' },
        exponent.unsigned_abs()
    )
}

/// C's `%+.*e` with a blank for a plus: `d.ddd` with `post` decimals, correctly rounded.
fn c_exponent(v: f64, post: usize) -> String {
    let text = format!("{:.*e}", post, v.abs());
    let (mantissa, exponent) = text.split_once('e').unwrap_or((text.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    format!(
        "{}{mantissa}e{}{:02}",
        if v.is_sign_negative() { '-' } else { ' ' },
        if exponent < 0 { '-' } else { '+' },
        exponent.unsigned_abs()
    )
}

/// Postgres' `%.*f`: C's, with `NaN` and `Infinity` spelled as Postgres spells them.
fn c_fixed(v: f64, post: usize) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v < 0.0 { "-Infinity" } else { "Infinity" }.into()
    } else {
        format!("{v:.post$}")
    }
}

/// `n` in Roman numerals (upper case), or 15 `#` outside 1..3999.
fn roman(n: i32) -> String {
    const ONES: [&str; 10] = ["", "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX"];
    const TENS: [&str; 10] = ["", "X", "XX", "XXX", "XL", "L", "LX", "LXX", "LXXX", "XC"];
    const HUNDREDS: [&str; 10] = ["", "C", "CC", "CCC", "CD", "D", "DC", "DCC", "DCCC", "CM"];
    let Ok(n @ 1..=3999) = usize::try_from(n) else {
        return "#".repeat(15);
    };
    let digit = |table: &[&'static str; 10], d: usize| table.get(d % 10).copied().unwrap_or("");
    format!(
        "{}{}{}{}",
        "M".repeat(n / 1000),
        digit(&HUNDREDS, n / 100),
        digit(&TENS, n / 10),
        digit(&ONES, n)
    )
}

/// The ordinal suffix Postgres gives the digits `number` (`get_th`): refused when they do not
/// end in a digit (`NaN`).
fn number_ordinal(number: &str, upper: bool) -> Result<&'static str> {
    let bytes = number.as_bytes();
    let Some(last) = bytes.last().filter(|d| d.is_ascii_digit()) else {
        return Err(DataFusionError::External(Box::new(SqlError::new(
            sqlstate::INVALID_TEXT_REPRESENTATION,
            format!("\"{number}\" is not a number"),
        ))));
    };
    let teen = bytes.len() > 1 && bytes.get(bytes.len() - 2) == Some(&b'1');
    let suffix = match (teen, last) {
        (false, b'1') => ("ST", "st"),
        (false, b'2') => ("ND", "nd"),
        (false, b'3') => ("RD", "rd"),
        _ => ("TH", "th"),
    };
    Ok(if upper { suffix.0 } else { suffix.1 })
}

/// `text` written by the number template `layout`, as Postgres' `NUM_processor` writes it.
fn format_number(text: &NumText, layout: &NumLayout) -> Result<String> {
    if layout.has(F_EEEE) {
        return Ok(text.number.clone());
    }
    let mut w = NumWriter::new(text, layout);
    for node in &layout.nodes {
        w.node(*node)?;
    }
    // A NUL written from past the end of the digits ends Postgres' C string there.
    let mut out = w.out;
    if let Some(end) = out.find('\0') {
        out.truncate(end);
    }
    Ok(out)
}

/// The state of `NUM_processor` writing one value.
struct NumWriter<'a> {
    flags: u16,
    lsign: LocaleSign,
    post: usize,
    number: &'a [u8],
    /// The next byte of `number` to write.
    at: usize,
    sign: Option<char>,
    sign_wrote: bool,
    /// Digit and point positions written so far.
    curr: i64,
    /// The position after which a trailing sign or `PR`'s bracket goes, less one.
    count: i64,
    /// Leading blank positions, and the integer position of the first `0`.
    pre_spaces: i64,
    zero_start: i64,
    /// Whether a digit has been written (a group separator shows only after one).
    num_in: bool,
    /// Under `FM` with a point: the last fraction digit to show (the point when none).
    last_relevant: Option<usize>,
    out: String,
}

impl<'a> NumWriter<'a> {
    fn new(text: &'a NumText, layout: &NumLayout) -> NumWriter<'a> {
        let mut flags = layout.flags;
        let mut lsign = layout.lsign;
        let mut pre_lsign_num = layout.pre_lsign_num;
        let (mut pre, mut post, mut pre_spaces) = (text.pre, text.post, text.pre_spaces);
        let mut sign = text.sign;
        if layout.has(F_ROMAN) {
            lsign = LocaleSign::None;
            pre_lsign_num = 0;
            (pre, post, pre_spaces) = (0, 0, 0);
            sign = None;
            flags &= F_ROMAN | F_FILL;
        }
        let fill = flags & F_FILL != 0;
        let sign_wrote = if flags & (F_PLUS | F_MINUS) != 0 {
            // MI, PL and SG write the sign themselves; PL alone also leaves a blank before.
            !(flags & F_PLUS != 0 && flags & F_MINUS == 0)
        } else {
            if sign != Some('-') && fill {
                flags &= !F_BRACKET;
            }
            if lsign == LocaleSign::Pre && pre == pre_lsign_num {
                lsign = LocaleSign::Post;
            }
            sign == Some('+') && fill && flags & F_LSIGN == 0
        };
        let number = text.number.as_bytes();
        let mut last_relevant = None;
        if fill && flags & F_DECIMAL != 0 {
            last_relevant = number.iter().position(|c| *c == b'.').map(|point| {
                let last = number
                    .iter()
                    .rposition(|c| *c != b'0')
                    .filter(|last| *last > point)
                    .unwrap_or(point);
                // `0` positions keep their digits.
                match layout.zero_end.checked_sub(text.pre_spaces) {
                    Some(zeros) if zeros > 0 => last.max(zeros.min(number.len() - 1)),
                    _ => last,
                }
            });
        }
        let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let mut count = as_i64(pre) + as_i64(post) - 1;
        if !sign_wrote && pre_spaces == 0 {
            count += 1;
        }
        NumWriter {
            flags,
            lsign,
            post,
            zero_start: as_i64(layout.zero_start.saturating_sub(1)),
            number,
            at: 0,
            sign,
            sign_wrote,
            curr: 0,
            count,
            pre_spaces: as_i64(pre_spaces),
            num_in: false,
            last_relevant,
            out: String::new(),
        }
    }

    fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// The byte of `number` at `i`, NUL past its end.
    fn byte(&self, i: usize) -> u8 {
        self.number.get(i).copied().unwrap_or(0)
    }

    fn sign_char(&self) -> char {
        if self.sign == Some('-') { '-' } else { '+' }
    }

    fn node(&mut self, node: NumNode) -> Result<()> {
        let fill = self.has(F_FILL);
        match node {
            NumNode::Nine | NumNode::Zero | NumNode::Point | NumNode::Decimal => self.digit(node),
            NumNode::Comma | NumNode::Group => {
                if self.num_in {
                    self.out.push(',');
                } else if !fill {
                    self.out.push(' ');
                }
            }
            // The C locale's currency symbol is a blank.
            NumNode::Local => self.out.push(' '),
            NumNode::Roman(upper) => {
                let text = String::from_utf8_lossy(self.number.get(self.at..).unwrap_or(b""));
                let text = if upper {
                    text.into_owned()
                } else {
                    text.to_lowercase()
                };
                if fill {
                    self.out.push_str(&text);
                } else {
                    self.out.push_str(&format!("{text:>15}"));
                }
            }
            NumNode::Ordinal(upper) => {
                let skip = self.has(F_ROMAN | F_DECIMAL)
                    || self.number.first() == Some(&b'#')
                    || self.sign == Some('-');
                if !skip {
                    let number = String::from_utf8_lossy(self.number);
                    self.out.push_str(number_ordinal(&number, upper)?);
                }
            }
            NumNode::Minus => match self.sign {
                Some('-') => self.out.push('-'),
                _ if fill => {}
                _ => self.out.push(' '),
            },
            NumNode::Plus => match self.sign {
                Some('+') => self.out.push('+'),
                _ if fill => {}
                _ => self.out.push(' '),
            },
            NumNode::SignAny => self.out.push(self.sign.unwrap_or('\0')),
            NumNode::Char(c) => self.out.push(c),
            NumNode::Blank
            | NumNode::Currency
            | NumNode::Exponent
            | NumNode::Fill
            | NumNode::Brackets
            | NumNode::Spell
            | NumNode::Sign
            | NumNode::Shift => {}
        }
        Ok(())
    }

    /// A digit or point position (`NUM_numpart_to_char`).
    fn digit(&mut self, node: NumNode) {
        if self.has(F_ROMAN) {
            return;
        }
        let fill = self.has(F_FILL);
        let zero = self.has(F_ZERO);
        self.num_in = false;
        // A zero integer part before a fraction is left blank ("9.9" of 0.1 is "  .1").
        let predec_space = !zero && self.at == 0 && self.byte(0) == b'0' && self.post != 0;
        let point_last = self.last_relevant.is_some_and(|i| self.byte(i) == b'.');

        // The sign goes just before the first digit written.
        if !self.sign_wrote
            && (self.curr >= self.pre_spaces || (zero && self.zero_start == self.curr))
            && (!predec_space || point_last)
        {
            if self.has(F_LSIGN) {
                if self.lsign == LocaleSign::Pre {
                    self.out.push(self.sign_char());
                    self.sign_wrote = true;
                }
            } else if self.has(F_BRACKET) {
                self.out
                    .push(if self.sign == Some('+') { ' ' } else { '<' });
                self.sign_wrote = true;
            } else if self.sign == Some('+') {
                if !fill {
                    self.out.push(' ');
                }
                self.sign_wrote = true;
            } else if self.sign == Some('-') {
                self.out.push('-');
                self.sign_wrote = true;
            }
        }

        if self.curr < self.pre_spaces && (self.zero_start > self.curr || !zero) {
            if !fill {
                self.out.push(' ');
            }
        } else if zero && self.curr < self.pre_spaces && self.zero_start <= self.curr {
            self.out.push('0');
            self.num_in = true;
        } else {
            let c = self.byte(self.at);
            if c == b'.' {
                self.out.push('.');
            } else if self
                .last_relevant
                .is_some_and(|last| self.at > last && node != NumNode::Zero)
            {
                // Under FM, trailing zeros in `9` positions are dropped.
            } else if predec_space {
                if !fill {
                    self.out.push(' ');
                } else if point_last {
                    self.out.push('0');
                }
            } else {
                self.out.push(char::from(c));
                self.num_in = true;
            }
            if c != 0 {
                self.at += 1;
            }
        }

        let mut end = self.count + i64::from(self.pre_spaces > 0) + i64::from(self.has(F_DECIMAL));
        if self.last_relevant == Some(self.at) {
            end = self.curr;
        }
        if self.curr + 1 == end {
            if self.sign_wrote && self.has(F_BRACKET) {
                self.out
                    .push(if self.sign == Some('+') { ' ' } else { '>' });
            } else if self.has(F_LSIGN) && self.lsign == LocaleSign::Post {
                self.out.push(self.sign_char());
            }
        }
        self.curr += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    /// Outputs of PostgreSQL 15 for the same values and templates.
    #[test]
    fn datetime_templates_match_postgres() {
        let at = ts("2026-03-07 14:05:09.123456");
        assert_eq!(
            format_datetime(
                &at,
                None,
                "YYYY-MM-DD HH24:MI:SS.US Day Month FMDay FMMonth Mon DY dy ddd IW IYYY Q W WW J CC RM am A.M. TZ OF"
            ),
            "2026-03-07 14:05:09.123456 Saturday  March     Saturday March Mar SAT sat 066 10 2026 1 1 10 2461107 21 III  pm P.M.  +00"
        );
        // FM reaches only the field right after it; TM names are unpadded.
        assert_eq!(
            format_datetime(&at, None, "FM\"x\"DD|TMMonth|TMDay|FMHH12"),
            "x07|March|Saturday|2"
        );
    }

    /// Backslashes in a date/time template, as PostgreSQL 18 reads them: outside quotes one only
    /// escapes a quote; inside, it takes the next character as is.
    #[test]
    fn datetime_backslashes_match_postgres() {
        let at = ts("2024-03-07 14:05:09");
        for (template, expected) in [
            (r"\\YYYY", r"\\2024"),
            (r"\YYYY", r"\2024"),
            (r#"\"YYYY"#, r#""2024"#),
            (r#""a\"b"YYYY"#, r#"a"b2024"#),
            (r#""a\\b"YYYY"#, r"a\b2024"),
            (r#""\YYYY""#, "YYYY"),
            (r"YYYY\", r"2024\"),
            (r#""YYYY\"#, r"YYYY\"),
            (r"\MM", r"\03"),
            (r#"\\"MM""#, r#"\"03"#),
            (r#"\\\"MM"#, r#"\\"03"#),
            (r"FM\YYYY", r"\2024"),
        ] {
            assert_eq!(format_datetime(&at, None, template), expected, "{template}");
        }
    }

    /// `to_char(value::ty, template)` through the function's dispatch; an error as
    /// `ERROR <SQLSTATE>: <message>`.
    fn number_to_char(value: &str, ty: &str, template: &str) -> String {
        use datafusion::arrow::array::{
            Decimal128Array, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
        };
        let array: ArrayRef = match ty {
            "numeric" => {
                let digits = value.trim_start_matches('-');
                let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
                let unscaled: i128 = format!("{int}{frac}").parse().unwrap();
                let unscaled = if value.starts_with('-') {
                    -unscaled
                } else {
                    unscaled
                };
                Arc::new(
                    Decimal128Array::from(vec![unscaled])
                        .with_precision_and_scale(38, frac.len() as i8)
                        .unwrap(),
                )
            }
            "int2" => Arc::new(Int16Array::from(vec![value.parse::<i16>().unwrap()])),
            "int4" => Arc::new(Int32Array::from(vec![value.parse::<i32>().unwrap()])),
            "int8" => Arc::new(Int64Array::from(vec![value.parse::<i64>().unwrap()])),
            "float4" => Arc::new(Float32Array::from(vec![value.parse::<f32>().unwrap()])),
            "float8" => Arc::new(Float64Array::from(vec![value.parse::<f64>().unwrap()])),
            _ => panic!("no type {ty}"),
        };
        match Values::of(&array).and_then(|v| v.format(0, template, &mut None)) {
            Ok(text) => text,
            Err(DataFusionError::External(e)) => {
                let e = e.downcast_ref::<SqlError>().unwrap();
                format!("ERROR {}: {}", e.code, e.message)
            }
            Err(e) => panic!("to_char({value}::{ty}, '{template}'): {e}"),
        }
    }

    /// PostgreSQL 18's answers (from a live server) for a value of a type and a template; an
    /// error as `ERROR <SQLSTATE>: <message>`.
    const NUMBER_CASES: &[(&str, &str, &str, &str)] = &[
        ("0", "numeric", "9999", "    0"),
        ("-0.5", "numeric", "9999", "   -1"),
        ("1234.5678", "numeric", "9999", " 1235"),
        ("-98765.4", "numeric", "9999", "-####"),
        ("12", "numeric", "9999", "   12"),
        ("0.001", "numeric", "9999", "    0"),
        ("999.995", "numeric", "9999", " 1000"),
        ("-7", "numeric", "9999", "   -7"),
        ("1000000", "numeric", "9999", " ####"),
        ("3.5", "numeric", "9999", "    4"),
        ("0", "numeric", "S9999", "   +0"),
        ("-0.5", "numeric", "S9999", "   -1"),
        ("1234.5678", "numeric", "S9999", "+1235"),
        ("-98765.4", "numeric", "S9999", "-####"),
        ("0", "numeric", "9999S", "   0+"),
        ("-7", "numeric", "9999S", "   7-"),
        ("3.5", "numeric", "9999S", "   4+"),
        ("0", "numeric", "9999MI", "   0 "),
        ("-7", "numeric", "9999MI", "   7-"),
        ("-7", "numeric", "MI9999", "-   7"),
        ("12", "numeric", "MI9999", "   12"),
        ("0", "numeric", "999PR", "   0 "),
        ("-7", "numeric", "999PR", "  <7>"),
        ("1000000", "numeric", "999PR", " ### "),
        ("-98765.4", "numeric", "9999PR", "<####>"),
        ("12", "numeric", "9999PR", "   12 "),
        ("0", "numeric", "FM999PR", "0"),
        ("12", "numeric", "FM999PR", "12"),
        ("-7", "numeric", "FM999PR", "<7>"),
        ("0", "numeric", "999,999,999", "           0"),
        ("1234.5678", "numeric", "999,999,999", "       1,235"),
        ("1000000", "numeric", "999,999,999", "   1,000,000"),
        ("-98765.4", "numeric", "999,999,999", "     -98,765"),
        ("0", "numeric", "FM9999.99", "0."),
        ("12", "numeric", "FM9999.99", "12."),
        ("1234.5678", "numeric", "FM9999.99", "1234.57"),
        ("0.001", "numeric", "FM9999.99", "0."),
        ("0", "numeric", "9999.99", "     .00"),
        ("-0.5", "numeric", "9999.99", "    -.50"),
        ("999.995", "numeric", "9999.99", " 1000.00"),
        ("1234.5678", "numeric", "FM0.999", "#.###"),
        ("0.001", "numeric", "FM0.999", "0.001"),
        ("0", "numeric", "FM0.999", "0."),
        ("0", "numeric", "9999PL", "    0+"),
        ("-0.5", "numeric", "9999PL", "   -1 "),
        ("1234.5678", "numeric", "9999PL", " 1235+"),
        ("-98765.4", "numeric", "9999PL", "-#### "),
        ("12", "numeric", "PL9999", "+   12"),
        ("-7", "numeric", "PL9999", "    -7"),
        ("0", "numeric", "SG9999", "+   0"),
        ("-0.5", "numeric", "SG9999", "-   1"),
        ("12", "numeric", "9999SG", "  12+"),
        ("-7", "numeric", "9999SG", "   7-"),
        ("1234.5678", "numeric", "RN", "        MCCXXXV"),
        ("12", "numeric", "RN", "            XII"),
        ("0", "numeric", "RN", "###############"),
        ("-7", "numeric", "RN", "###############"),
        ("1000000", "numeric", "RN", "###############"),
        ("3.5", "numeric", "RN", "             IV"),
        ("3999", "numeric", "RN", "      MMMCMXCIX"),
        ("4000", "numeric", "RN", "###############"),
        ("1234.5678", "numeric", "FMRN", "MCCXXXV"),
        ("3999", "numeric", "FMRN", "MMMCMXCIX"),
        ("0", "numeric", "FMRN", "###############"),
        ("12", "numeric", "rn", "            xii"),
        ("3.5", "numeric", "FMrn", "iv"),
        ("12", "numeric", "\"n=\"RN\".\"", "n=            XII."),
        ("0", "numeric", "99th", "  0th"),
        ("-0.5", "numeric", "99th", " -1"),
        ("1234.5678", "numeric", "99th", " ##"),
        ("12", "numeric", "99th", " 12th"),
        ("1", "numeric", "99th", "  1st"),
        ("2", "numeric", "99th", "  2nd"),
        ("3", "numeric", "99th", "  3rd"),
        ("11", "numeric", "99th", " 11th"),
        ("13", "numeric", "99th", " 13th"),
        ("21", "numeric", "99th", " 21st"),
        ("22", "numeric", "99th", " 22nd"),
        ("23", "numeric", "99th", " 23rd"),
        ("101", "numeric", "99th", " ##"),
        ("112", "numeric", "99th", " ##"),
        ("1", "numeric", "99TH", "  1ST"),
        ("22", "numeric", "99TH", " 22ND"),
        ("3.5", "numeric", "99TH", "  4TH"),
        ("1", "numeric", "FM99th", "1st"),
        ("-1", "numeric", "FM99th", "-1"),
        ("1", "numeric", "99.9th", "  1.0"),
        ("0", "int4", "9999th", "    0th"),
        ("-7", "int4", "9999th", "   -7"),
        ("3", "int4", "9999th", "    3rd"),
        ("22", "int4", "FM9999TH", "22ND"),
        ("0", "numeric", "L9999", "     0"),
        ("-0.5", "numeric", "L9999", "    -1"),
        ("12", "numeric", "9999L", "   12 "),
        ("0", "numeric", "B9999.99", "     .00"),
        ("12", "numeric", "B9999.99", "   12.00"),
        ("0", "numeric", "9999V99", "      0"),
        ("-0.5", "numeric", "9999V99", "    -50"),
        ("1234.5678", "numeric", "9999V99", " 123457"),
        ("-98765.4", "numeric", "9999V99", "-######"),
        ("12", "numeric", "9999V99", "   1200"),
        ("-1.25", "numeric", "99V9PR", " <13>"),
        ("0", "int4", "0000V00", " 000000"),
        ("-7", "int4", "0000V00", "-000007"),
        ("1", "int4", "9V9999999999", " -2147483648"),
        ("-7", "int8", "9999V99", "   -700"),
        (
            "1",
            "int8",
            "9V99999999999999999999",
            "ERROR 22003: bigint out of range",
        ),
        ("12.345", "float8", "9999V99", "   1234"),
        ("-0.5", "float8", "9999V99", "    -50"),
        ("1.255", "float4", "99V99", "  126"),
        ("999.995", "numeric", "99.9EEEE", " 10.0e+02"),
        ("0.001", "numeric", "99.9EEEE", " 1.0e-03"),
        ("999.995", "numeric", "9.99EEEE", " 10.00e+02"),
        ("0", "numeric", "9.99EEEE", " 0.00e+00"),
        ("-0.5", "numeric", "9.99EEEE", "-5.00e-01"),
        ("1234.5678", "numeric", "9.99EEEE", " 1.23e+03"),
        ("-98765.4", "numeric", "9.99EEEE", "-9.88e+04"),
        ("999.995", "float8", "9.99EEEE", " 1.00e+03"),
        ("-0", "float8", "9.99EEEE", "-0.00e+00"),
        ("NaN", "float8", "9.99EEEE", " #.######"),
        ("999995", "int4", "9.99EEEE", " 1.00e+06"),
        ("999995", "int8", "9.99EEEE", " 10.00e+05"),
        ("1234.5678", "numeric", "EEEE", " 1e+03"),
        ("0", "numeric", "EEEE", " 0e+00"),
        ("1.5", "numeric", "\"x\"9.9EEEE", " 1.5e+00"),
        ("0", "float8", "FM9999.9999", "0."),
        ("-98765.4", "float8", "FM9999.9999", "-####.####"),
        ("1234.5678", "float8", "FM9999.9999", "1234.5678"),
        ("-0", "float8", "9.9", " -.0"),
        ("0.25", "float8", "9.9", "  .2"),
        ("0.35", "float8", "9.9", "  .3"),
        ("0.5", "float8", "9", " 0"),
        ("1.5", "float8", "9", " 2"),
        ("2.5", "float8", "9", " 2"),
        ("NaN", "float8", "9.99", " #.##"),
        ("Infinity", "float8", "9.99", " #.##"),
        ("NaN", "float8", "9999", "  NaN"),
        ("-Infinity", "float8", "9999", "-####"),
        (
            "NaN",
            "float8",
            "9999th",
            "ERROR 22P02: \"NaN\" is not a number",
        ),
        (
            "1.5",
            "float8",
            "9.9999999999999999999",
            " 1.50000000000000",
        ),
        (
            "123456789012345678",
            "float8",
            "99999999999999999999",
            "   123456789012345680",
        ),
        ("1.1", "float4", "9.9999999", " 1.10000"),
        ("123456.789", "float4", "999999.99", " 123457"),
        ("12", "int2", "9.99", " #.##"),
        ("-32768", "int2", "99999", "-32768"),
        ("12", "numeric", "9090.99", "  012.00"),
        ("1234.5678", "numeric", "9090.99", " 1234.57"),
        ("0", "numeric", "9090.99", "  000.00"),
        ("0.5", "numeric", ".99", " .##"),
        ("1.5", "numeric", ".99", " .##"),
        ("99", "numeric", "9.9", " #.#"),
        ("0.001", "numeric", "9.9", "  .0"),
        ("1234.5678", "numeric", "99G999", "  1,235"),
        ("12", "numeric", "99G999", "     12"),
        ("12", "numeric", "FM99G999", "12"),
        ("3.5", "numeric", "9D99", " 3.50"),
        ("-0.5", "numeric", "S9.99", " -.50"),
        ("0", "numeric", "S9.99", " +.00"),
        ("-0.5", "numeric", "9.99S", " .50-"),
        ("0", "numeric", "9.99S", " .00+"),
        ("1.5", "numeric", "FM9.99S", "1.5+"),
        ("-1.5", "numeric", "FM9.99S", "1.5-"),
        ("-1.5", "numeric", "FM9.99PR", "<1.5>"),
        ("-0.5", "numeric", "9.99MI", " .50-"),
        ("1.5", "numeric", "FM9.99MI", "1.5"),
        ("12", "numeric", "FM0009.90", "0012.00"),
        ("0.001", "numeric", "FM0009.90", "0000.00"),
        ("1234.5678", "numeric", "FM0009.90", "1234.57"),
        ("0.5", "numeric", "FM90.09", "0.5"),
        ("0", "numeric", "0.0", " 0.0"),
        ("0", "numeric", "FM0.0", "0.0"),
        ("0", "numeric", "FM9.0", ".0"),
        ("1234.5678", "numeric", "\"USD \"9,999.99", "USD  1,234.57"),
        ("-7", "numeric", "\"USD \"9,999.99", "USD     -7.00"),
        ("12", "numeric", "", ""),
        ("12", "int4", "", ""),
        ("12", "float8", "", ""),
        (
            "1",
            "numeric",
            "FMEEEE",
            "ERROR 42601: \"EEEE\" is incompatible with other formats",
        ),
        (
            "1",
            "numeric",
            "9V9.9",
            "ERROR 42601: cannot use \"V\" and decimal point together",
        ),
        (
            "1",
            "numeric",
            "9.9V9",
            "ERROR 42601: cannot use \"V\" and decimal point together",
        ),
        (
            "1",
            "numeric",
            "9.9.9",
            "ERROR 42601: multiple decimal points",
        ),
        (
            "1",
            "numeric",
            "9EEEE9",
            "ERROR 42601: \"EEEE\" must be the last pattern used",
        ),
        (
            "1",
            "numeric",
            "9EEEEEEEE",
            "ERROR 42601: cannot use \"EEEE\" twice",
        ),
        ("1", "numeric", "S9S", "ERROR 42601: cannot use \"S\" twice"),
        (
            "1",
            "numeric",
            "S9MI",
            "ERROR 42601: cannot use \"S\" and \"MI\" together",
        ),
        (
            "1",
            "numeric",
            "PR9",
            "ERROR 42601: \"9\" must be ahead of \"PR\"",
        ),
        (
            "1",
            "numeric",
            "9PRPR0",
            "ERROR 42601: \"0\" must be ahead of \"PR\"",
        ),
        (
            "1",
            "numeric",
            "RNRN",
            "ERROR 42601: cannot use \"RN\" twice",
        ),
        (
            "1",
            "numeric",
            "RN9.9",
            "ERROR 42601: \"RN\" is incompatible with other formats",
        ),
        (
            "1",
            "numeric",
            "S9EEEE",
            "ERROR 42601: \"EEEE\" is incompatible with other formats",
        ),
        (
            "12345678901234567890123456789012345678",
            "numeric",
            "9999999999999999999999999999999999999999.99",
            "   12345678901234567890123456789012345678.00",
        ),
        (
            "-12345678901234567890.12345678901234567",
            "numeric",
            "9999999999999999999999999999999999999999.99",
            "                    -12345678901234567890.12",
        ),
        (
            "-12345678901234567890.12345678901234567",
            "numeric",
            "FM9999999999999999999999999999999999999999.99999999999999999999999999",
            "-12345678901234567890.12345678901234567",
        ),
        ("12", "numeric", "99.", " 12"),
        ("12", "numeric", "99.x", " 12"),
        ("12", "numeric", "9\"9\"9", " 192"),
        ("5", "numeric", "\\\"9\\\"", "\" 5\""),
        ("5", "numeric", "\"a\\\"b\"9", "a\"b 5"),
        ("12", "numeric", "a9b9c", "a 12"),
        ("1.5", "numeric", "€9.99", "€ 1.50"),
        ("12", "numeric", "9 9", " 1 2"),
        ("12", "numeric", "SP9C9", " 12"),
        ("5", "numeric", "Fm99", "Fm  5"),
        ("5", "numeric", "9,9,9", "     5"),
        ("5", "numeric", "FM9,9,9", "5"),
        ("-1.5", "numeric", "0999.99S", "0001.50-"),
        ("-1.5", "numeric", "FM0999.9990PR", "<0001.5000>"),
        ("12.3", "numeric", "999.99", "  12.30"),
        ("-12.3", "numeric", "999.99", " -12.30"),
        ("1234567.891", "numeric", "9,999,999.99", " 1,234,567.89"),
        ("12345", "int4", "999", " ###"),
        ("-5", "int8", "S999", "  -5"),
        ("5", "int4", "999MI", "  5 "),
        ("-5", "int4", "999PR", "  <5>"),
        ("42", "int8", "0000", " 0042"),
        ("1234.5", "numeric", "FM9G999D00", "1,234.50"),
        ("7", "int4", "FM9th", "7th"),
        ("-0.004", "numeric", "0.99", " 0.00"),
        ("123", "int4", "999th", " 123rd"),
        ("1234.5678", "float8", "9999.99", " 1234.57"),
        ("-1234", "int4", "9G999SG", "1,234-"),
        ("1234.5", "numeric", "9,999.99", " 1,234.50"),
        ("-1234.5", "numeric", "9G999D99S", "1,234.50-"),
        ("0.5", "numeric", "0.00", " 0.50"),
        ("42", "int4", "000099", " 000042"),
        ("12.3", "numeric", "FM999.99", "12.3"),
    ];

    #[test]
    fn number_templates_match_postgres() {
        let wrong: Vec<String> = NUMBER_CASES
            .iter()
            .filter_map(|(value, ty, template, expected)| {
                let got = number_to_char(value, ty, template);
                (got != *expected).then(|| {
                    format!(
                        "to_char({value}::{ty}, '{template}'): Postgres {expected:?}, here {got:?}"
                    )
                })
            })
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn refused_number_templates_carry_postgres_detail() {
        for (template, detail) in [
            (
                "FM9.9EEEE",
                "\"EEEE\" may only be used together with digit and decimal point patterns.",
            ),
            ("FMRN.", "\"RN\" may only be used together with \"FM\"."),
        ] {
            let Err(DataFusionError::External(e)) = NumLayout::parse(template) else {
                panic!("{template} was accepted");
            };
            let e = e.downcast_ref::<SqlError>().unwrap();
            assert_eq!(e.code, sqlstate::SYNTAX_ERROR);
            assert_eq!(e.detail.as_deref(), Some(detail), "{template}");
        }
    }

    /// A NULL value or template gives NULL, and a refused template is not read for NULL rows.
    #[test]
    fn nulls_give_null() {
        use datafusion::arrow::array::{Int32Array, StringArray};
        use datafusion::arrow::datatypes::Field;
        use datafusion::config::ConfigOptions;
        let values: ArrayRef = Arc::new(Int32Array::from(vec![Some(5), None, Some(7)]));
        let templates: ArrayRef =
            Arc::new(StringArray::from(vec![Some("9th"), Some("9.9.9"), None]));
        let out = udf()
            .invoke_with_args(ScalarFunctionArgs {
                args: vec![
                    ColumnarValue::Array(Arc::clone(&values)),
                    ColumnarValue::Array(Arc::clone(&templates)),
                ],
                arg_fields: vec![
                    Arc::new(Field::new("v", DataType::Int32, true)),
                    Arc::new(Field::new("t", DataType::Utf8, true)),
                ],
                number_rows: 3,
                return_field: Arc::new(Field::new("r", DataType::Utf8, true)),
                config_options: Arc::new(ConfigOptions::default()),
            })
            .unwrap()
            .to_array(3)
            .unwrap();
        let out = out.as_string::<i32>();
        assert_eq!(out.value(0), " 5th");
        assert!(out.is_null(1));
        assert!(out.is_null(2));
    }

    /// Templates are user input: odd ones give some text, never a panic.
    #[test]
    fn odd_templates_do_not_panic() {
        let at = ts("0001-01-01 00:00:00");
        let templates = [
            "",
            "FM",
            "\"unterminated",
            "\\",
            "é9.9é",
            "9.9.9",
            "D,G,9",
            "FMFMFM9",
            "PRPR9",
            "SG9S",
            "EEEE",
            "9EEEE9",
            "TH",
            "99999999999999999999999999999999999999999.9999",
            "Y,YYYY,YYY",
            "ééMONTHéé",
            "\"a\\\"b\"",
            "FMTHth",
            "rmRMrm",
            "ff9FF7",
            "RN",
            "FMrn",
            "RNRN",
            "9RN",
            "V",
            "9V999999999999999999999999999999999999999",
            "0V0",
            "L9B9C9SP9",
            "9th",
            "THth99",
            "PL9MI",
            "9S.9",
            "SG9.99SG",
            "FM0999.9990PR",
            "9.99EEEEEEEE",
            "FM9.",
            "9.\\\"\\",
            "\"\\",
            "é",
        ];
        let arrays: Vec<ArrayRef> = {
            use datafusion::arrow::array::{
                Decimal128Array, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
            };
            let decimals = |scale: i8| -> ArrayRef {
                Arc::new(
                    Decimal128Array::from(vec![0, -1, i128::MAX, i128::MIN, 5, -999_995])
                        .with_precision_and_scale(38, scale)
                        .unwrap(),
                )
            };
            vec![
                decimals(0),
                decimals(3),
                decimals(38),
                decimals(-5),
                Arc::new(Int16Array::from(vec![0, i16::MIN, i16::MAX])),
                Arc::new(Int32Array::from(vec![0, -1, i32::MIN, i32::MAX])),
                Arc::new(Int64Array::from(vec![0, -1, i64::MIN, i64::MAX])),
                Arc::new(Float32Array::from(vec![
                    f32::NAN,
                    f32::NEG_INFINITY,
                    -0.0,
                    f32::MAX,
                    f32::MIN_POSITIVE,
                ])),
                Arc::new(Float64Array::from(vec![
                    f64::NAN,
                    f64::INFINITY,
                    -0.0,
                    1e300,
                    -1e-300,
                    f64::MAX,
                ])),
            ]
        };
        for t in templates {
            let zone = ValueZone {
                offset: -19_800,
                abbreviation: "-05:30".into(),
            };
            format_datetime(&at, Some(&zone), t);
            for array in &arrays {
                let values = Values::of(array).unwrap();
                for i in 0..array.len() {
                    // Errors are fine (Postgres refuses some of these too); panics are not.
                    let _ = values.format(i, t, &mut None);
                }
            }
        }
    }
}
