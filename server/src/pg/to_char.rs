//! Postgres' `to_char(value, template)` for timestamps, dates, intervals and numbers, replacing
//! DataFusion's (which reads chrono's `%Y-%m-%d`, so `to_char(ts, 'YYYY-MM-DD')` printed the
//! template itself).
//!
//! **Date and time templates**: `HH HH12 HH24 MI SS MS US FF1..FF6 SSSS SSSSS AM PM A.M. P.M.`
//! (and lower case), `Y,YYY YYYY YYY YY Y IYYY IYY IY I BC AD B.C. A.D. MONTH Month month MON Mon
//! mon MM DAY Day day DY Dy dy DDD IDDD DD D ID W WW IW CC J Q RM rm TZ tz TZH TZM OF`, the `FM`
//! (no padding), `FX` and `TM` prefixes and the `TH`/`th` ordinal suffix, `"quoted text"` (a
//! backslash in it takes the next character as is; outside quotes a backslash only escapes a
//! quote); anything else is copied. A timestamp with a time zone is shown in UTC (the session
//! time zone here); one without has an empty `TZ` and `OF` `+00`, as in Postgres.
//!
//! **Number templates**: `9 0 . D , G S MI PL SG PR EEEE FM TH th`, with Postgres' layout: one
//! leading position for the sign unless the template places it, digits beyond the template's as
//! `#`, a group separator only after a digit, and under `FM` no padding and no trailing zeros in
//! `9` positions. The C locale: `D` is `.`, `G` is `,`.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float64Type, IntervalMonthDayNanoType, IntervalUnit,
    TimeUnit, TimestampMicrosecondType,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

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
        for i in 0..n {
            if value.is_null(i) || template.is_null(i) {
                out.append_null();
                continue;
            }
            out.append_value(values.format(i, template.value(i))?);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// The first argument, as the formatter reads it.
enum Values {
    /// Microseconds since the epoch; `true` if the type has a time zone.
    Timestamp(ArrayRef, bool),
    Date(ArrayRef),
    Interval(ArrayRef),
    /// Exact: unscaled value and scale.
    Decimal(ArrayRef, i8),
    Float(ArrayRef),
}

impl Values {
    fn of(value: &ArrayRef) -> Result<Values> {
        Ok(match value.data_type() {
            DataType::Timestamp(_, tz) => Values::Timestamp(
                cast(value, &DataType::Timestamp(TimeUnit::Microsecond, None))?,
                tz.is_some(),
            ),
            DataType::Date32 | DataType::Date64 => Values::Date(cast(value, &DataType::Date32)?),
            DataType::Interval(_) | DataType::Duration(_) => Values::Interval(cast(
                value,
                &DataType::Interval(IntervalUnit::MonthDayNano),
            )?),
            DataType::Decimal128(_, s) => Values::Decimal(Arc::clone(value), *s),
            t if t.is_integer() => Values::Decimal(cast(value, &DataType::Decimal128(38, 0))?, 0),
            t if t.is_floating() => Values::Float(cast(value, &DataType::Float64)?),
            t => {
                return Err(DataFusionError::Plan(format!(
                    "function to_char({t}, text) does not exist"
                )));
            }
        })
    }

    fn format(&self, i: usize, template: &str) -> Result<String> {
        match self {
            Values::Timestamp(a, tz) => {
                let micros = a.as_primitive::<TimestampMicrosecondType>().value(i);
                let at = chrono::DateTime::from_timestamp_micros(micros)
                    .ok_or_else(|| DataFusionError::Execution("timestamp out of range".into()))?
                    .naive_utc();
                Ok(format_datetime(&at, *tz, template))
            }
            Values::Date(a) => {
                let days = a.as_primitive::<Date32Type>().value(i);
                let date = NaiveDate::from_num_days_from_ce_opt(days + 719_163)
                    .ok_or_else(|| DataFusionError::Execution("date out of range".into()))?;
                Ok(format_datetime(
                    &date.and_time(chrono::NaiveTime::MIN),
                    false,
                    template,
                ))
            }
            Values::Interval(a) => {
                let v = a.as_primitive::<IntervalMonthDayNanoType>().value(i);
                format_interval(v.months, v.days, v.nanoseconds, template)
            }
            Values::Decimal(a, scale) => {
                let v = a.as_primitive::<Decimal128Type>().value(i);
                Ok(format_number(&Digits::exact(v, *scale), template))
            }
            Values::Float(a) => {
                let v = a.as_primitive::<Float64Type>().value(i);
                Ok(format_number(&Digits::float(v), template))
            }
        }
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

const MONTHS: [&str; 12] = [
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
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const ROMAN: [&str; 12] = [
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

/// `at` formatted by a Postgres date/time `template` (see the module documentation).
pub fn format_datetime(at: &NaiveDateTime, zoned: bool, template: &str) -> String {
    let formatted: Result<String> = format_template(template, |field, spelled, fill| {
        Ok(field_value(at, zoned, field, spelled, fill))
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
            "DD" | "DDD" => num(p.days, 2),
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
                return Err(DataFusionError::Execution(format!(
                    "invalid format specification for an interval value: \"{field}\" \
                     (intervals are not tied to specific calendar dates)"
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
        if let Some(tail) = strip_ci(rest, "FX").or_else(|| strip_ci(rest, "TM")) {
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
fn strip_ci<'a>(rest: &'a str, prefix: &str) -> Option<&'a str> {
    (rest.len() >= prefix.len()
        && rest.is_char_boundary(prefix.len())
        && rest[..prefix.len()].eq_ignore_ascii_case(prefix))
    .then(|| &rest[prefix.len()..])
}

/// One field's text, and its number for an ordinal suffix.
fn field_value(
    at: &NaiveDateTime,
    zoned: bool,
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
            if zoned {
                cased("UTC", case_of(spelled))
            } else {
                String::new()
            },
            None,
        ),
        "TZH" => ("+00".into(), None),
        "TZM" => ("00".into(), None),
        "OF" => ("+00".into(), None),
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

/// A number as decimal digits: sign, integer digits (no leading zeros; empty for 0), and the
/// fraction's digits (as many as known).
struct Digits {
    negative: bool,
    int: String,
    frac: String,
    /// For floats: the value, to round to a template's digits.
    float: Option<f64>,
}

impl Digits {
    fn exact(v: i128, scale: i8) -> Digits {
        let negative = v < 0;
        let abs = v.unsigned_abs().to_string();
        let scale = scale.max(0) as usize;
        let (int, frac) = if abs.len() > scale {
            abs.split_at(abs.len() - scale)
        } else {
            ("", abs.as_str())
        };
        let frac = format!("{frac:0>scale$}");
        Digits {
            negative,
            int: int.trim_start_matches('0').to_string(),
            frac,
            float: None,
        }
    }

    fn float(v: f64) -> Digits {
        Digits {
            negative: v.is_sign_negative() && v != 0.0,
            int: String::new(),
            frac: String::new(),
            float: Some(v),
        }
    }

    /// The digits rounded to `frac` fraction digits (half away from zero).
    fn rounded(&self, frac: usize) -> (bool, String, String) {
        if let Some(v) = self.float {
            let text = format!("{:.*}", frac, v.abs());
            let (int, f) = text.split_once('.').unwrap_or((text.as_str(), ""));
            let int = int.trim_start_matches('0').to_string();
            let zero = int.is_empty() && f.chars().all(|c| c == '0');
            return (self.negative && !zero, int, f.to_string());
        }
        let mut digits: Vec<u8> = self.int.bytes().chain(self.frac.bytes()).collect();
        let int_len = self.int.len();
        let keep = int_len + frac;
        let round_up = digits.get(keep).is_some_and(|d| *d >= b'5');
        digits.resize(keep, b'0');
        if round_up {
            let mut i = keep;
            loop {
                if i == 0 {
                    digits.insert(0, b'1');
                    break;
                }
                i -= 1;
                if digits[i] == b'9' {
                    digits[i] = b'0';
                } else {
                    digits[i] += 1;
                    break;
                }
            }
        }
        let int_len = digits.len() - frac;
        let text = String::from_utf8_lossy(&digits).to_string();
        let (int, f) = text.split_at(int_len);
        let int = int.trim_start_matches('0').to_string();
        let zero = int.is_empty() && f.bytes().all(|c| c == b'0');
        (self.negative && !zero, int, f.to_string())
    }

    /// `d.ddd` and the exponent, with `frac` digits after the point.
    fn scientific(&self, frac: usize) -> (bool, String, i32) {
        let v = match self.float {
            Some(v) => v,
            None => format!(
                "{}{}.{}",
                if self.negative { "-" } else { "" },
                if self.int.is_empty() { "0" } else { &self.int },
                self.frac
            )
            .parse::<f64>()
            .unwrap_or(0.0),
        };
        let text = format!("{:.*e}", frac, v.abs());
        let (mantissa, exp) = text.split_once('e').unwrap_or((text.as_str(), "0"));
        (v < 0.0, mantissa.to_string(), exp.parse().unwrap_or(0))
    }
}

/// One element of a number template.
#[derive(Clone, Copy, PartialEq)]
enum NumToken {
    Nine,
    Zero,
    Point,
    Group,
    Sign,
    Minus,
    Plus,
    SignAny,
    Brackets,
    Exponent,
    Ordinal(bool),
    Literal(char),
}

/// `n` formatted by a Postgres number `template` (see the module documentation).
fn format_number(n: &Digits, template: &str) -> String {
    let mut tokens = Vec::new();
    let mut fill = false;
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        let (token, len) = if let Some(_t) = strip_ci(rest, "FM") {
            fill = true;
            rest = &rest[2..];
            continue;
        } else if strip_ci(rest, "EEEE").is_some() {
            (NumToken::Exponent, 4)
        } else if strip_ci(rest, "MI").is_some() {
            (NumToken::Minus, 2)
        } else if strip_ci(rest, "PL").is_some() {
            (NumToken::Plus, 2)
        } else if strip_ci(rest, "SG").is_some() {
            (NumToken::SignAny, 2)
        } else if strip_ci(rest, "PR").is_some() {
            (NumToken::Brackets, 2)
        } else if rest.starts_with("TH") {
            (NumToken::Ordinal(true), 2)
        } else if rest.starts_with("th") {
            (NumToken::Ordinal(false), 2)
        } else {
            let t = match c {
                '9' => NumToken::Nine,
                '0' => NumToken::Zero,
                '.' | 'D' | 'd' => NumToken::Point,
                ',' | 'G' | 'g' => NumToken::Group,
                'S' | 's' => NumToken::Sign,
                c => NumToken::Literal(c),
            };
            (t, c.len_utf8())
        };
        tokens.push(token);
        rest = &rest[len..];
    }
    let point = tokens.iter().position(|t| *t == NumToken::Point);
    let is_digit = |t: &NumToken| matches!(t, NumToken::Nine | NumToken::Zero);
    let int_slots = tokens[..point.unwrap_or(tokens.len())]
        .iter()
        .filter(|t| is_digit(t))
        .count();
    let frac_slots = point.map_or(0, |p| tokens[p..].iter().filter(|t| is_digit(t)).count());
    let explicit_sign = tokens.iter().any(|t| {
        matches!(
            t,
            NumToken::Sign
                | NumToken::Minus
                | NumToken::Plus
                | NumToken::SignAny
                | NumToken::Brackets
        )
    });
    if tokens.contains(&NumToken::Exponent) {
        let (negative, mantissa, exp) = n.scientific(frac_slots);
        let sign = if negative {
            "-"
        } else if fill {
            ""
        } else {
            " "
        };
        return format!(
            "{sign}{mantissa}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        );
    }
    let (negative, int, frac) = n.rounded(frac_slots);
    let overflow = int.len() > int_slots;
    // The integer digits right-aligned in the template's integer slots.
    let first_zero = tokens[..point.unwrap_or(tokens.len())]
        .iter()
        .filter(|t| is_digit(t))
        .position(|t| *t == NumToken::Zero);
    // Under FM, the fraction's `9` positions after its last non-zero digit are dropped.
    let frac_kept = if fill {
        let kinds: Vec<NumToken> = point.map_or(Vec::new(), |p| {
            tokens[p..].iter().copied().filter(is_digit).collect()
        });
        let digits = frac.as_bytes();
        let mut keep = kinds.len();
        while keep > 0
            && kinds[keep - 1] == NumToken::Nine
            && digits.get(keep - 1).is_none_or(|d| *d == b'0')
        {
            keep -= 1;
        }
        keep
    } else {
        frac_slots
    };
    let mut out = String::new();
    let mut int_index = 0usize;
    let mut frac_index = 0usize;
    let mut printed = false;
    let mut after_point = false;
    for t in &tokens {
        match t {
            NumToken::Nine | NumToken::Zero if !after_point => {
                let slot = int_index;
                int_index += 1;
                let offset = int_slots - slot;
                let zero_fill = first_zero.is_some_and(|z| slot >= z);
                if overflow {
                    out.push('#');
                    printed = true;
                } else if offset <= int.len() {
                    out.push(char::from(int.as_bytes()[int.len() - offset]));
                    printed = true;
                } else if zero_fill {
                    out.push('0');
                    printed = true;
                } else {
                    out.push(' ');
                }
            }
            NumToken::Nine | NumToken::Zero => {
                let d = frac.as_bytes().get(frac_index).copied().unwrap_or(b'0');
                if frac_index < frac_kept {
                    out.push(if overflow { '#' } else { char::from(d) });
                }
                frac_index += 1;
            }
            NumToken::Point => {
                after_point = true;
                out.push('.');
            }
            // Under FM a separator among the dropped fraction digits goes with them.
            NumToken::Group if after_point && frac_index >= frac_kept => {}
            NumToken::Group => out.push(if printed { ',' } else { ' ' }),
            NumToken::Sign | NumToken::SignAny => out.push(if negative { '-' } else { '+' }),
            NumToken::Minus => out.push(if negative { '-' } else { ' ' }),
            NumToken::Plus => out.push(if negative { ' ' } else { '+' }),
            NumToken::Brackets => out.push(if negative { '>' } else { ' ' }),
            NumToken::Ordinal(upper) => {
                let whole = int.parse::<i64>().unwrap_or(0);
                out.push_str(ordinal(whole, *upper));
            }
            NumToken::Exponent => {}
            NumToken::Literal(c) => out.push(*c),
        }
    }
    // A sign written before the digits moves next to them; otherwise a leading position holds
    // the minus (or the bracket of PR).
    let leading_sign = matches!(tokens.first(), Some(NumToken::Sign | NumToken::SignAny));
    if leading_sign {
        // Its position stays: the text keeps its width.
        let sign = out.remove(0);
        out = place_before_digits(&format!(" {out}"), sign);
    } else if !explicit_sign || tokens.contains(&NumToken::Brackets) {
        let sign = match (negative, tokens.contains(&NumToken::Brackets)) {
            (true, true) => '<',
            (true, false) => '-',
            (false, _) => ' ',
        };
        out = place_before_digits(&format!(" {out}"), sign);
    }
    if fill {
        out = out.trim_start().to_string();
    }
    out
}

/// `text` with `sign` in the blank just before its first digit (or point).
fn place_before_digits(text: &str, sign: char) -> String {
    let chars: Vec<char> = text.chars().collect();
    let first = chars
        .iter()
        .position(|c| c.is_ascii_digit() || *c == '.' || *c == '#')
        .unwrap_or(chars.len());
    let mut out: Vec<char> = chars.clone();
    if first > 0 && out[first - 1] == ' ' {
        out[first - 1] = sign;
    } else {
        out.insert(first, sign);
    }
    out.into_iter().collect()
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
                false,
                "YYYY-MM-DD HH24:MI:SS.US Day Month FMDay FMMonth Mon DY dy ddd IW IYYY Q W WW J CC RM am A.M. TZ OF"
            ),
            "2026-03-07 14:05:09.123456 Saturday  March     Saturday March Mar SAT sat 066 10 2026 1 1 10 2461107 21 III  pm P.M.  +00"
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
            assert_eq!(
                format_datetime(&at, false, template),
                expected,
                "{template}"
            );
        }
    }

    #[test]
    fn number_templates_match_postgres() {
        let cases = [
            ("12.3", "999.99", "  12.30"),
            ("-12.3", "999.99", " -12.30"),
            ("0.5", "9.99", "  .50"),
            ("12.3", "FM999.99", "12.3"),
            ("1234567.891", "9,999,999.99", " 1,234,567.89"),
            ("12345", "999", " ###"),
            ("-5", "S999", "  -5"),
            ("5", "999MI", "  5 "),
            ("-5", "999PR", "  <5>"),
            ("42", "0000", " 0042"),
            ("1234.5", "FM9G999D00", "1,234.50"),
            ("7", "FM9th", "7th"),
            ("0", "9.99", "  .00"),
            ("-0.5", "FM990.99", "-0.5"),
            // Odd templates a user may write: literals and separators in the fraction.
            ("1.5", "FM9.9é9,9", "1.5é"),
            ("1.5", "9.9é9,9", " 1.5é0,0"),
        ];
        for (v, template, expected) in cases {
            let (int, frac) = v
                .trim_start_matches('-')
                .split_once('.')
                .unwrap_or((v.trim_start_matches('-'), ""));
            let scale = frac.len() as i8;
            let unscaled: i128 = format!("{int}{frac}").parse().unwrap();
            let unscaled = if v.starts_with('-') {
                -unscaled
            } else {
                unscaled
            };
            assert_eq!(
                format_number(&Digits::exact(unscaled, scale), template),
                expected,
                "to_char({v}, '{template}')"
            );
        }
        assert_eq!(
            format_number(&Digits::float(1234.5678), "9.999EEEE"),
            " 1.235e+03"
        );
        assert_eq!(
            format_number(&Digits::float(-0.000123), "9.99EEEE"),
            "-1.23e-04"
        );
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
        ];
        for t in templates {
            format_datetime(&at, true, t);
            for (v, scale) in [(0i128, 0i8), (-1, 3), (i128::MAX, 10), (i128::MIN + 1, 0)] {
                format_number(&Digits::exact(v, scale), t);
            }
            for v in [f64::NAN, f64::INFINITY, -0.0, 1e300, -1e-300] {
                format_number(&Digits::float(v), t);
            }
        }
    }
}
