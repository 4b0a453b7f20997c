//! Postgres' `to_date(text, template)` and `to_timestamp(text, template)`: the date or timestamp
//! a text shows, read field by field as the template lays it out (Postgres' `DCH_from_char`).
//! `rewrite.rs` turns both calls into these functions, unless the template is a chrono format
//! (it has a `%`), which DataFusion's functions of those names read.
//!
//! - Fields: `YYYY Y,YYY YYY YY Y IYYY IYY IY I MM Mon MON mon Month MONTH month RM rm DD DDD IDDD
//!   D ID Dy Day W WW IW Q CC J HH HH12 HH24 MI SS MS US FF1..FF6 SSSS SSSSS AM PM A.M. P.M. BC AD
//!   B.C. A.D. TZH TZM OF TZ` (any case where Postgres takes any case), with the `FM`, `FX` and
//!   `TM` prefixes (read as without them) and the `TH`/`th` suffix (an ordinal's letters are
//!   skipped). A number field reads its width of digits when another field follows it without a
//!   separator (`YYYYMMDD`), else every digit there is; names are matched whole or abbreviated,
//!   in any case.
//! - Separators: a blank in the template skips any blanks in the text; another non-letter,
//!   non-digit character skips one such character of the text if it has one there; `"text"`
//!   skips as many characters; blanks before a field are skipped. Text after the template's last
//!   field is ignored, as in Postgres.
//! - Years of fewer digits are Postgres' nearest to 2020 (`YY` 69 is 2069, 70 is 1970); `CC`
//!   alone gives its first year; `BC` counts back from 1 BC. `MS`, `US` and `FFn` are fractions
//!   of the second as written (`SS.MS` of `12.3` is 12.300). `IYYY`, `IW` and `ID` give an ISO
//!   week date, `DDD` a day of the year, `J` a Julian day. Fields not given are January 1st of
//!   1 BC (Postgres' year 0) at midnight.
//! - Errors, Postgres' codes and words: a field without its digits or name is 22007 `invalid
//!   value "x" for "YYYY"`; a date or time that does not exist is 22008 `date/time field value out
//!   of range: "2024-02-30"`; an hour past 12 with `AM`/`PM` is 22008 too.
//! - `to_timestamp` gives a `timestamp with time zone`: the fields are in the session's time zone
//!   ([`super::time_zone`]) unless `TZH`/`TZM`/`OF` or a `TZ` of `UTC`, `GMT` or `Z` say otherwise.

use std::sync::Arc;

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime};
use datafusion::arrow::array::TimestampMicrosecondBuilder;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Date32Builder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use super::to_char::{DAYS, MONTHS, ROMAN, strip_ci};
use crate::error::{SqlError, sqlstate};

/// The names `rewrite.rs` calls.
pub const TO_DATE: &str = "pg_to_date";
pub const TO_TIMESTAMP: &str = "pg_to_timestamp";

/// Both functions.
pub fn udfs() -> Vec<ScalarUDF> {
    [Target::Date, Target::Timestamp]
        .into_iter()
        .map(|target| {
            ScalarUDF::new_from_impl(ToDate {
                target,
                signature: Signature::exact(
                    vec![DataType::Utf8, DataType::Utf8],
                    Volatility::Immutable,
                ),
            })
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    Date,
    Timestamp,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToDate {
    target: Target,
    signature: Signature,
}

impl ScalarUDFImpl for ToDate {
    fn name(&self) -> &str {
        match self.target {
            Target::Date => TO_DATE,
            Target::Timestamp => TO_TIMESTAMP,
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(match self.target {
            Target::Date => DataType::Date32,
            Target::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = args
            .args
            .iter()
            .map(|a| {
                a.to_array(rows)
                    .and_then(|a| Ok(cast(&a, &DataType::Utf8)?))
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let [texts, templates] = arrays.as_slice() else {
            return Err(DataFusionError::Plan(format!(
                "{} takes a text and a template",
                self.name()
            )));
        };
        let (texts, templates) = (texts.as_string::<i32>(), templates.as_string::<i32>());
        // A constant template (the usual case) is parsed once.
        let mut parsed: Option<(String, Vec<Node>)> = None;
        let mut read = |text: &str, template: &str| -> Result<Read> {
            if parsed.as_ref().is_none_or(|(t, _)| t != template) {
                parsed = Some((template.to_string(), nodes(template)));
            }
            let nodes = parsed.as_ref().map_or(&[][..], |(_, n)| n.as_slice());
            read(text, nodes).map_err(|e| DataFusionError::External(Box::new(e.while_running())))
        };
        let out: ArrayRef = match self.target {
            Target::Date => {
                let mut out = Date32Builder::with_capacity(rows);
                for i in 0..rows {
                    if texts.is_null(i) || templates.is_null(i) {
                        out.append_null();
                        continue;
                    }
                    let at = read(texts.value(i), templates.value(i))?;
                    let days = at.date.signed_duration_since(epoch()).num_days();
                    let days = i32::try_from(days).map_err(|_| {
                        DataFusionError::External(Box::new(
                            out_of_range(texts.value(i)).while_running(),
                        ))
                    })?;
                    out.append_value(days);
                }
                Arc::new(out.finish())
            }
            Target::Timestamp => {
                let mut out = TimestampMicrosecondBuilder::with_capacity(rows);
                for i in 0..rows {
                    if texts.is_null(i) || templates.is_null(i) {
                        out.append_null();
                        continue;
                    }
                    let at = read(texts.value(i), templates.value(i))?;
                    let local = NaiveDateTime::new(at.date, NaiveTime::MIN)
                        .and_utc()
                        .timestamp_micros();
                    let micros = local
                        .checked_add(at.time_micros)
                        .and_then(|m| m.checked_sub(at.offset_seconds * 1_000_000))
                        .ok_or_else(|| {
                            DataFusionError::External(Box::new(
                                out_of_range(texts.value(i)).while_running(),
                            ))
                        })?;
                    out.append_value(micros);
                }
                Arc::new(out.finish().with_timezone("+00:00"))
            }
        };
        Ok(if scalar {
            ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or(NaiveDate::MIN)
}

/// One element of a template.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A field, as the template writes it (for errors), and whether `TH`/`th` follows it.
    Field(Field, String, bool),
    /// `"text"`: skips that many characters.
    Quoted(usize),
    /// A blank: skips the text's blanks.
    Blank,
    /// Another character that is no letter or digit: skips one such character.
    Separator,
    /// A letter or digit that names no field: skips one character.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// A year of this many digits (`Y,YYY` is 4 with a comma allowed).
    Year(usize),
    YearComma,
    IsoYear(usize),
    Month,
    MonthName(Width),
    Roman,
    Day,
    DayOfYear,
    IsoDayOfYear,
    DayOfWeek,
    IsoDayOfWeek,
    DayName(Width),
    WeekOfMonth,
    Week,
    IsoWeek,
    Quarter,
    Century,
    Julian,
    Hour12,
    Hour24,
    Minute,
    Second,
    /// A fraction of the second of up to this many digits (`MS` 3, `US` 6, `FFn` n).
    Fraction(u32),
    SecondsOfDay,
    Meridiem,
    Era,
    ZoneHour,
    ZoneMinute,
    Offset,
    ZoneName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Width {
    Full,
    Short,
}

/// Template patterns, longest first where one begins another; matched without regard to case.
const PATTERNS: &[(&str, Field)] = &[
    ("Y,YYY", Field::YearComma),
    ("YYYY", Field::Year(4)),
    ("YYY", Field::Year(3)),
    ("YY", Field::Year(2)),
    ("Y", Field::Year(1)),
    ("IYYY", Field::IsoYear(4)),
    ("IYY", Field::IsoYear(3)),
    ("IY", Field::IsoYear(2)),
    ("IDDD", Field::IsoDayOfYear),
    ("ID", Field::IsoDayOfWeek),
    ("IW", Field::IsoWeek),
    ("I", Field::IsoYear(1)),
    ("MONTH", Field::MonthName(Width::Full)),
    ("MON", Field::MonthName(Width::Short)),
    ("MM", Field::Month),
    ("MS", Field::Fraction(3)),
    ("MI", Field::Minute),
    ("RM", Field::Roman),
    ("DDD", Field::DayOfYear),
    ("DD", Field::Day),
    ("DAY", Field::DayName(Width::Full)),
    ("DY", Field::DayName(Width::Short)),
    ("D", Field::DayOfWeek),
    ("WW", Field::Week),
    ("W", Field::WeekOfMonth),
    ("Q", Field::Quarter),
    ("CC", Field::Century),
    ("J", Field::Julian),
    ("HH24", Field::Hour24),
    ("HH12", Field::Hour12),
    ("HH", Field::Hour12),
    ("SSSSS", Field::SecondsOfDay),
    ("SSSS", Field::SecondsOfDay),
    ("SS", Field::Second),
    ("US", Field::Fraction(6)),
    ("FF1", Field::Fraction(1)),
    ("FF2", Field::Fraction(2)),
    ("FF3", Field::Fraction(3)),
    ("FF4", Field::Fraction(4)),
    ("FF5", Field::Fraction(5)),
    ("FF6", Field::Fraction(6)),
    ("A.M.", Field::Meridiem),
    ("P.M.", Field::Meridiem),
    ("AM", Field::Meridiem),
    ("PM", Field::Meridiem),
    ("B.C.", Field::Era),
    ("A.D.", Field::Era),
    ("BC", Field::Era),
    ("AD", Field::Era),
    ("TZH", Field::ZoneHour),
    ("TZM", Field::ZoneMinute),
    ("TZ", Field::ZoneName),
    ("OF", Field::Offset),
];

/// `template` as nodes.
fn nodes(template: &str) -> Vec<Node> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        // Prefixes that change only how a value is shown.
        if let Some(after) = ["FM", "FX", "TM"].iter().find_map(|p| strip_ci(rest, p)) {
            rest = after;
            continue;
        }
        if let Some((field, written, after)) = PATTERNS
            .iter()
            .find_map(|(p, f)| strip_ci(rest, p).map(|after| (*f, &rest[..p.len()], after)))
        {
            let (ordinal, after) = match strip_ci(after, "TH") {
                Some(more) => (true, more),
                None => (false, after),
            };
            out.push(Node::Field(field, written.to_string(), ordinal));
            rest = after;
            continue;
        }
        if c == '"' {
            let body = &rest[1..];
            let end = body.find('"').unwrap_or(body.len());
            out.push(Node::Quoted(body[..end].chars().count()));
            rest = body.get(end + 1..).unwrap_or("");
            continue;
        }
        out.push(if c.is_whitespace() {
            Node::Blank
        } else if c.is_alphanumeric() {
            Node::Other
        } else {
            Node::Separator
        });
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// What a text says, as Postgres' `to_timestamp` puts it together.
struct Read {
    date: NaiveDate,
    time_micros: i64,
    offset_seconds: i64,
}

/// The fields read so far.
#[derive(Default)]
struct Fields {
    year: Option<(i64, usize)>,
    iso_year: Option<(i64, usize)>,
    bc: bool,
    century: Option<i64>,
    month: Option<i64>,
    day: Option<i64>,
    day_of_year: Option<i64>,
    iso_day_of_year: Option<i64>,
    iso_week: Option<i64>,
    iso_day: Option<i64>,
    week: Option<i64>,
    julian: Option<i64>,
    hour: Option<i64>,
    twelve_hour: bool,
    pm: Option<bool>,
    minute: Option<i64>,
    second: Option<i64>,
    fraction_micros: Option<i64>,
    seconds_of_day: Option<i64>,
    zone_hour: Option<i64>,
    zone_minute: Option<i64>,
}

/// Roman month numerals longest first (`VIII` before `VII`), as the text is matched against them.
fn roman_longest_first() -> impl Iterator<Item = (i64, &'static str)> {
    (1..=12).rev().zip(ROMAN.iter().rev().copied())
}

/// Reads `text` by `nodes`.
fn read(text: &str, nodes: &[Node]) -> std::result::Result<Read, SqlError> {
    let chars: Vec<char> = text.chars().collect();
    let mut at = 0usize;
    let mut f = Fields::default();
    let skip_blanks = |at: &mut usize| {
        while chars.get(*at).is_some_and(|c| c.is_whitespace()) {
            *at += 1;
        }
    };
    for (i, node) in nodes.iter().enumerate() {
        match node {
            Node::Blank => skip_blanks(&mut at),
            Node::Separator => {
                if chars
                    .get(at)
                    .is_some_and(|c| !c.is_alphanumeric() && !c.is_whitespace())
                {
                    at += 1;
                }
            }
            Node::Other => at = (at + 1).min(chars.len()),
            Node::Quoted(n) => at = (at + n).min(chars.len()),
            Node::Field(field, written, ordinal) => {
                skip_blanks(&mut at);
                if at >= chars.len() {
                    break;
                }
                // A field right after this one (no separator) bounds its digits to its width.
                let bounded = matches!(nodes.get(i + 1), Some(Node::Field(..)));
                read_field(&chars, &mut at, *field, written, bounded, &mut f)?;
                if *ordinal {
                    for _ in 0..2 {
                        if chars.get(at).is_some_and(|c| c.is_alphabetic()) {
                            at += 1;
                        }
                    }
                }
            }
        }
    }
    assemble(&f, text)
}

/// Reads one field at `at`.
fn read_field(
    chars: &[char],
    at: &mut usize,
    field: Field,
    written: &str,
    bounded: bool,
    f: &mut Fields,
) -> std::result::Result<(), SqlError> {
    let number = |at: &mut usize, width: usize, signed: bool| {
        read_number(chars, at, width, signed, bounded, written)
    };
    match field {
        Field::Year(n) => f.year = Some(number(at, n, false)?),
        Field::YearComma => {
            let (thousands, _) = number(at, 1, false)?;
            if chars.get(*at) == Some(&',') {
                *at += 1;
            }
            let (rest, _) = number(at, 3, false)?;
            f.year = Some((thousands * 1000 + rest, 4));
        }
        Field::IsoYear(n) => f.iso_year = Some(number(at, n, false)?),
        Field::Month => f.month = Some(number(at, 2, false)?.0),
        Field::Day => f.day = Some(number(at, 2, false)?.0),
        Field::DayOfYear => f.day_of_year = Some(number(at, 3, false)?.0),
        Field::IsoDayOfYear => f.iso_day_of_year = Some(number(at, 3, false)?.0),
        Field::DayOfWeek | Field::WeekOfMonth | Field::Quarter => {
            number(at, 1, false)?;
        }
        Field::IsoDayOfWeek => f.iso_day = Some(number(at, 1, false)?.0),
        Field::Week => f.week = Some(number(at, 2, false)?.0),
        Field::IsoWeek => f.iso_week = Some(number(at, 2, false)?.0),
        Field::Century => f.century = Some(number(at, 2, false)?.0),
        Field::Julian => f.julian = Some(number(at, 7, false)?.0),
        Field::Hour12 => {
            f.hour = Some(number(at, 2, false)?.0);
            f.twelve_hour = true;
        }
        Field::Hour24 => f.hour = Some(number(at, 2, false)?.0),
        Field::Minute => f.minute = Some(number(at, 2, false)?.0),
        Field::Second => f.second = Some(number(at, 2, false)?.0),
        Field::SecondsOfDay => f.seconds_of_day = Some(number(at, 5, false)?.0),
        Field::Fraction(max) => {
            let (value, digits) = number(at, max as usize, false)?;
            // Digits of the fraction as written: `SS.MS` of `12.3` is 12.300.
            let digits = u32::try_from(digits).unwrap_or(u32::MAX);
            let micros = if digits <= 6 {
                value * 10_i64.pow(6 - digits)
            } else {
                value / 10_i64.pow((digits - 6).min(18))
            };
            f.fraction_micros = Some(micros);
        }
        Field::ZoneHour => f.zone_hour = Some(number(at, 2, true)?.0),
        Field::ZoneMinute => f.zone_minute = Some(number(at, 2, false)?.0),
        Field::Offset => {
            let (hours, _) = number(at, 2, true)?;
            f.zone_hour = Some(hours);
            if chars.get(*at) == Some(&':') {
                *at += 1;
                f.zone_minute = Some(number(at, 2, false)?.0);
            }
        }
        Field::MonthName(width) => {
            f.month = Some(name(chars, at, &MONTHS, width, written)? + 1);
        }
        Field::DayName(width) => {
            name(chars, at, &DAYS, width, written)?;
        }
        Field::Roman => {
            let (months, numerals): (Vec<i64>, Vec<&str>) = roman_longest_first().unzip();
            let i = word_of(chars, at, &numerals, written)?;
            f.month = months.get(i).copied();
        }
        Field::Meridiem => {
            let i = word_of(chars, at, &["a.m.", "p.m.", "am", "pm"], written)?;
            f.pm = Some(i % 2 == 1);
        }
        Field::Era => {
            let i = word_of(chars, at, &["a.d.", "b.c.", "ad", "bc"], written)?;
            f.bc = i % 2 == 1;
        }
        Field::ZoneName => {
            let i = word_of(chars, at, &["utc", "gmt", "z"], written).map_err(|_| {
                SqlError::new(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "a time zone name other than UTC, GMT or Z in to_timestamp is not supported",
                )
                .with_hint("Give the offset with TZH:TZM or OF.")
            })?;
            let _ = i;
            f.zone_hour = Some(0);
        }
    }
    Ok(())
}

/// The number at `at`: up to `width` digits where `bounded` (another field follows without a
/// separator), else all the digits there, after a sign where `signed`.
fn read_number(
    chars: &[char],
    at: &mut usize,
    width: usize,
    signed: bool,
    bounded: bool,
    written: &str,
) -> std::result::Result<(i64, usize), SqlError> {
    let start = *at;
    let mut negative = false;
    if signed && matches!(chars.get(*at), Some('-' | '+')) {
        negative = chars.get(*at) == Some(&'-');
        *at += 1;
    }
    let digits_start = *at;
    while chars.get(*at).is_some_and(char::is_ascii_digit)
        && (!bounded || *at - digits_start < width)
    {
        *at += 1;
    }
    let digits: String = chars[digits_start..*at].iter().collect();
    if digits.is_empty() {
        let shown: String = chars[start..].iter().take(width.max(1)).collect();
        return Err(SqlError::new(
            sqlstate::INVALID_DATETIME_FORMAT,
            format!("invalid value \"{shown}\" for \"{written}\""),
        )
        .with_detail("Value must be an integer."));
    }
    let value: i64 = digits.parse().map_err(|_| {
        SqlError::new(
            sqlstate::DATETIME_FIELD_OVERFLOW,
            format!("value for \"{written}\" in source string is out of range"),
        )
    })?;
    Ok((if negative { -value } else { value }, digits.len()))
}

/// The index of the name (whole, or its first three letters for `Short`) the text continues
/// with, in any case.
fn name(
    chars: &[char],
    at: &mut usize,
    names: &[&str],
    width: Width,
    written: &str,
) -> std::result::Result<i64, SqlError> {
    // A whole name is tried first, then its abbreviation: Postgres reads `Mon` from "March" too.
    let whole: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let short: Vec<String> = names.iter().map(|n| n.chars().take(3).collect()).collect();
    let lists: [&[String]; 2] = match width {
        Width::Full => [&whole, &short],
        Width::Short => [&short, &whole],
    };
    for list in lists {
        let refs: Vec<&str> = list.iter().map(String::as_str).collect();
        if let Ok(i) = word_of(chars, at, &refs, written) {
            return Ok(i64::try_from(i).unwrap_or(0));
        }
    }
    Err(no_such_value(chars, *at, written))
}

/// The index of the first of `words` the text continues with (in any case), the text read past
/// it.
fn word_of(
    chars: &[char],
    at: &mut usize,
    words: &[&str],
    written: &str,
) -> std::result::Result<usize, SqlError> {
    for (i, word) in words.iter().enumerate() {
        let n = word.chars().count();
        let Some(candidate) = chars.get(*at..*at + n) else {
            continue;
        };
        if candidate
            .iter()
            .zip(word.chars())
            .all(|(a, b)| a.to_lowercase().eq(b.to_lowercase()))
        {
            *at += n;
            return Ok(i);
        }
    }
    Err(no_such_value(chars, *at, written))
}

fn no_such_value(chars: &[char], at: usize, written: &str) -> SqlError {
    let shown: String = chars
        .get(at..)
        .unwrap_or(&[])
        .iter()
        .take_while(|c| c.is_alphanumeric() || **c == '.')
        .collect();
    SqlError::new(
        sqlstate::INVALID_DATETIME_FORMAT,
        format!("invalid value \"{shown}\" for \"{written}\""),
    )
    .with_detail("The given value did not match any of the allowed values for this field.")
}

fn out_of_range(text: &str) -> SqlError {
    SqlError::new(
        sqlstate::DATETIME_FIELD_OVERFLOW,
        format!("date/time field value out of range: \"{text}\""),
    )
}

/// A year of fewer than four digits as Postgres reads it: the one nearest to 2020.
fn full_year(year: i64, digits: usize) -> i64 {
    if digits >= 4 {
        return year;
    }
    match year {
        y if y < 70 => y + 2000,
        y if y < 100 => y + 1900,
        y if y < 520 => y + 2000,
        y if y < 1000 => y + 1000,
        y => y,
    }
}

/// The date and time the fields give.
fn assemble(f: &Fields, text: &str) -> std::result::Result<Read, SqlError> {
    let bad = || out_of_range(text);
    let mut year = match (f.year, f.century) {
        (Some((y, digits)), _) => full_year(y, digits),
        (None, Some(cc)) => (cc - 1) * 100 + 1,
        // Postgres' year 0 when none is given: 1 BC.
        (None, None) => 0,
    };
    if f.bc {
        year = 1 - year;
    }
    let year = i32::try_from(year).map_err(|_| bad())?;
    let date = if let Some(j) = f.julian {
        epoch()
            .checked_add_signed(Duration::try_days(j - 2_440_588).ok_or_else(bad)?)
            .ok_or_else(bad)?
    } else if let (Some((iy, digits)), Some(week)) = (f.iso_year, f.iso_week) {
        let iy = i32::try_from(full_year(iy, digits)).map_err(|_| bad())?;
        let day = u32::try_from(f.iso_day.unwrap_or(1)).map_err(|_| bad())?;
        let weekday =
            chrono::Weekday::try_from(u8::try_from(day.saturating_sub(1)).map_err(|_| bad())?)
                .map_err(|_| bad())?;
        NaiveDate::from_isoywd_opt(iy, u32::try_from(week).map_err(|_| bad())?, weekday)
            .ok_or_else(bad)?
    } else if let (Some((iy, digits)), Some(iddd)) = (f.iso_year, f.iso_day_of_year) {
        let iy = i32::try_from(full_year(iy, digits)).map_err(|_| bad())?;
        let first = NaiveDate::from_isoywd_opt(iy, 1, chrono::Weekday::Mon).ok_or_else(bad)?;
        first
            .checked_add_signed(Duration::try_days(iddd - 1).ok_or_else(bad)?)
            .ok_or_else(bad)?
    } else if let Some(doy) = f.day_of_year {
        NaiveDate::from_yo_opt(year, u32::try_from(doy).map_err(|_| bad())?).ok_or_else(bad)?
    } else if let (Some(week), None) = (f.week, f.day) {
        // WW: the week's first day, weeks counted from January 1st.
        NaiveDate::from_ymd_opt(year, 1, 1)
            .ok_or_else(bad)?
            .checked_add_signed(Duration::try_days((week - 1) * 7).ok_or_else(bad)?)
            .ok_or_else(bad)?
    } else {
        let month = u32::try_from(f.month.unwrap_or(1)).map_err(|_| bad())?;
        let day = u32::try_from(f.day.unwrap_or(1)).map_err(|_| bad())?;
        NaiveDate::from_ymd_opt(year, month, day).ok_or_else(bad)?
    };
    let mut hour = f.hour.unwrap_or(0);
    // `HH`/`HH12` or a meridiem make it a 12-hour clock (12 AM is midnight, without a meridiem
    // too), as in Postgres.
    if f.twelve_hour || f.pm.is_some() {
        if !(1..=12).contains(&hour) {
            return Err(SqlError::new(
                sqlstate::INVALID_DATETIME_FORMAT,
                format!("hour \"{hour}\" is invalid for the 12-hour clock"),
            )
            .with_hint("Use the 24-hour clock, or give an hour between 1 and 12."));
        }
        hour = hour % 12 + if f.pm == Some(true) { 12 } else { 0 };
    }
    let (minute, second) = (f.minute.unwrap_or(0), f.second.unwrap_or(0));
    let time_micros = if let Some(s) = f.seconds_of_day {
        if !(0..86_400).contains(&s) {
            return Err(bad());
        }
        s * 1_000_000
    } else {
        if !(0..=24).contains(&hour)
            || !(0..60).contains(&minute)
            || !(0..=60).contains(&second)
            || (hour == 24 && (minute, second, f.fraction_micros.unwrap_or(0)) != (0, 0, 0))
        {
            return Err(bad());
        }
        ((hour * 60 + minute) * 60 + second) * 1_000_000
    } + f.fraction_micros.unwrap_or(0);
    let zone_hour = f.zone_hour.unwrap_or(0);
    let zone_minute = f.zone_minute.unwrap_or(0) * if zone_hour < 0 { -1 } else { 1 };
    Ok(Read {
        date,
        time_micros,
        offset_seconds: zone_hour * 3600 + zone_minute * 60,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str, template: &str) -> String {
        match read(text, &nodes(template)) {
            Ok(r) => r.date.to_string(),
            Err(e) => format!("{} {}", e.code, e.message),
        }
    }

    fn stamp(text: &str, template: &str) -> String {
        match read(text, &nodes(template)) {
            Ok(r) => {
                let micros = NaiveDateTime::new(r.date, NaiveTime::MIN)
                    .and_utc()
                    .timestamp_micros()
                    + r.time_micros
                    - r.offset_seconds * 1_000_000;
                chrono::DateTime::from_timestamp_micros(micros)
                    .map_or("?".into(), |d| d.naive_utc().to_string())
            }
            Err(e) => format!("{} {}", e.code, e.message),
        }
    }

    /// Each expectation is what PostgreSQL 18 answers.
    #[test]
    fn dates_read_as_postgres_reads_them() {
        let cases = [
            ("05 Mar 2024", "DD Mon YYYY", "2024-03-05"),
            ("2024-03-05", "YYYY-MM-DD", "2024-03-05"),
            ("20240305", "YYYYMMDD", "2024-03-05"),
            ("March 5, 2024", "Month DD, YYYY", "2024-03-05"),
            ("5/3/24", "DD/MM/YY", "2024-03-05"),
            ("2024 065", "YYYY DDD", "2024-03-05"),
            ("2024-W10-2", "IYYY-\"W\"IW-ID", "2024-03-05"),
            ("Tue 05 Mar 2024", "Dy DD Mon YYYY", "2024-03-05"),
            ("2024-3-5", "YYYY-MM-DD", "2024-03-05"),
            ("5 3 2024", "DD MM YYYY", "2024-03-05"),
            ("  2024-03-05", "YYYY-MM-DD", "2024-03-05"),
            ("2024-03-05 junk", "YYYY-MM-DD", "2024-03-05"),
            ("1,999 12 31", "Y,YYY MM DD", "1999-12-31"),
            ("99-12-31", "YY-MM-DD", "1999-12-31"),
            ("5th of March 2024", "DDth \"of\" Month YYYY", "2024-03-05"),
            ("iii 2024", "RM YYYY", "2024-03-01"),
            ("2460375", "J", "2024-03-05"),
            ("MARCH 2024", "MONTH YYYY", "2024-03-01"),
            (
                "2024-02-30",
                "YYYY-MM-DD",
                "22008 date/time field value out of range: \"2024-02-30\"",
            ),
            ("x", "YYYY", "22007 invalid value \"x\" for \"YYYY\""),
            (
                "05 Foo 2024",
                "DD Mon YYYY",
                "22007 invalid value \"Foo\" for \"Mon\"",
            ),
        ];
        for (text, template, expected) in cases {
            assert_eq!(
                date(text, template),
                expected,
                "to_date('{text}', '{template}')"
            );
        }
    }

    #[test]
    fn timestamps_read_as_postgres_reads_them() {
        let cases = [
            (
                "2024-03-05 10:11:12",
                "YYYY-MM-DD HH24:MI:SS",
                "2024-03-05 10:11:12",
            ),
            (
                "2024-03-05 10:11:12.345",
                "YYYY-MM-DD HH24:MI:SS.MS",
                "2024-03-05 10:11:12.345",
            ),
            ("12.3", "SS.MS", "0000-01-01 00:00:12.300"),
            (
                "05 Mar 2024 01:02 PM",
                "DD Mon YYYY HH12:MI AM",
                "2024-03-05 13:02:00",
            ),
            (
                "2024-03-05 1:02:03 pm",
                "YYYY-MM-DD HH12:MI:SS am",
                "2024-03-05 13:02:03",
            ),
            (
                "2024-03-05 12:00 a.m.",
                "YYYY-MM-DD HH12:MI a.m.",
                "2024-03-05 00:00:00",
            ),
            (
                "2024-03-05 10:00 +02",
                "YYYY-MM-DD HH24:MI TZH",
                "2024-03-05 08:00:00",
            ),
            (
                "2024-03-05 10:00 -03:30",
                "YYYY-MM-DD HH24:MI OF",
                "2024-03-05 13:30:00",
            ),
            ("36672", "SSSS", "0000-01-01 10:11:12"),
            ("12:30", "HH12:MI", "0000-01-01 00:30:00"),
            ("2024-01-01", "YYYY-MM-DD HH12", "2024-01-01 00:00:00"),
            (
                "2024-01-01 13",
                "YYYY-MM-DD HH",
                "22007 hour \"13\" is invalid for the 12-hour clock",
            ),
            (
                "2024-03-05 25:00",
                "YYYY-MM-DD HH24:MI",
                "22008 date/time field value out of range: \"2024-03-05 25:00\"",
            ),
            (
                "13:00 pm",
                "HH12:MI am",
                "22007 hour \"13\" is invalid for the 12-hour clock",
            ),
        ];
        for (text, template, expected) in cases {
            assert_eq!(
                stamp(text, template),
                expected,
                "to_timestamp('{text}', '{template}')"
            );
        }
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let texts = [
            "",
            " ",
            "ä€😀",
            "99999999999999999999999",
            "-",
            "2024-",
            "\"",
            "xii",
        ];
        let templates = [
            "",
            "\"",
            "\"unterminated",
            "Y,YYY",
            "FF6FF6",
            "THTH",
            "ä",
            "OFTZH",
            "J",
        ];
        for t in texts {
            for p in templates {
                let _ = read(t, &nodes(p));
            }
        }
    }
}
