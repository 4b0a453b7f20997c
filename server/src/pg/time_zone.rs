//! The session's `TimeZone`, as Postgres applies it.
//!
//! A `timestamptz` is an instant: Rivulet stores and computes it in UTC (Arrow's
//! `Timestamp(µs, "+00:00")`). The session's zone decides what is local about it, as in
//! Postgres: its text output (`2024-03-04 19:00:00-05`), the reading of text without an offset
//! (`'2024-03-05 00:00'::timestamptz` is midnight in the zone), casts to and from `timestamp`,
//! `date` and `time`, `date_trunc`, `extract`/`date_part`, `to_char`, `make_timestamptz`,
//! `to_timestamp(text, template)`, `current_date`, and adding days or months (`+ interval '1
//! day'` keeps the wall clock across a daylight-saving change).
//!
//! [`setting`] reads a `SET TIME ZONE` value as Postgres' `check_timezone` does; the session
//! keeps the zone in its DataFusion configuration ([`SessionZone`]), and [`in_session_zone`]
//! rewrites a planned query so that each of those operations computes in that zone, with the
//! zone written into the plan: a materialized view keeps the zone of the session that created it
//! (stored with its settings), whoever reads it later. The wire layer prints `timestamptz`
//! values in the reading session's zone ([`crate::text_out`]).

use std::str::FromStr;
use std::sync::Arc;

use chrono::{Offset, TimeZone};
use chrono_tz::OffsetName;
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, ScalarValue, extensions_options};
use datafusion::config::{ConfigExtension, ConfigOptions};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::{Cast, ScalarFunction};
use datafusion::logical_expr::{
    BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator, ScalarUDF, Volatility,
};
use datafusion::sql::sqlparser::ast;

use crate::error::{SqlError, sqlstate};

extensions_options! {
    /// The session's time zone, where the planner and functions read it.
    pub struct SessionZone {
        /// The zone as Arrow reads it: an IANA name (`America/New_York`) or an offset east of
        /// Greenwich (`-05:00`).
        pub zone: String, default = "UTC".to_string()
    }
}

impl ConfigExtension for SessionZone {
    const PREFIX: &'static str = "rivulet_session";
}

/// The zone of a session whose settings are `options`, as Arrow reads it; `None` for UTC.
pub fn of(options: &ConfigOptions) -> Option<&str> {
    let zone = options.extensions.get::<SessionZone>()?.zone.as_str();
    (!is_utc(zone)).then_some(zone)
}

/// Sets the zone `options` plan with.
pub fn configure(options: &mut ConfigOptions, zone: &str) {
    match options.extensions.get_mut::<SessionZone>() {
        Some(z) => z.zone = zone.to_string(),
        None => options.extensions.insert(SessionZone {
            zone: zone.to_string(),
        }),
    }
}

/// Whether `zone` (as Arrow reads it) is UTC.
pub fn is_utc(zone: &str) -> bool {
    matches!(zone, "UTC" | "+00:00" | "Etc/UTC" | "GMT" | "Etc/GMT" | "Z")
}

/// A `TimeZone` setting: as `SHOW` answers it, and as Arrow reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub shown: String,
    pub zone: String,
}

/// The name of the setting, as Postgres spells it in errors.
const NAME: &str = "TimeZone";

/// `text` read as Postgres' `check_timezone` reads a `TimeZone` value: a number of hours east
/// of Greenwich (`-7`, `5.5`), a zone name in any case (`europe/berlin` is `Europe/Berlin`), or
/// a POSIX zone without daylight-saving rules, whose offset is hours *west* (`UTC+5`, `+05:30`,
/// `<+0330>-03:30`). Anything else is 22023, as in Postgres.
pub fn setting(text: &str) -> Result<Setting, SqlError> {
    let trimmed = text.trim();
    if let Some(rest) = strip_prefix_ci(trimmed, "interval") {
        let offset = rest
            .trim()
            .trim_matches('\'')
            .split_whitespace()
            .next()
            .and_then(parse_offset);
        return offset.map(from_east).ok_or_else(|| invalid(text));
    }
    if let Ok(hours) = trimmed.parse::<f64>()
        && hours.is_finite()
        && hours.abs() < 24.0 * 7.0
    {
        return Ok(from_east((hours * 3600.0).round() as i32));
    }
    match zone_named(trimmed) {
        // A name is shown as the zone database spells it, an offset as it was written.
        Some(zone) if !zone.starts_with(['+', '-']) => Ok(Setting {
            shown: zone.clone(),
            zone,
        }),
        Some(zone) => Ok(Setting {
            shown: trimmed.to_string(),
            zone,
        }),
        None => Err(invalid(text)),
    }
}

/// The setting of `SET TIME ZONE value`: a number of hours, an `INTERVAL`, a string, or `LOCAL`
/// and `DEFAULT` (`None`: the default).
pub fn set_time_zone(value: &ast::Expr) -> Result<Option<Setting>, SqlError> {
    match value {
        ast::Expr::Identifier(i)
            if i.quote_style.is_none()
                && (i.value.eq_ignore_ascii_case("local")
                    || i.value.eq_ignore_ascii_case("default")) =>
        {
            Ok(None)
        }
        ast::Expr::Interval(interval) => {
            let text = match interval.value.as_ref() {
                ast::Expr::Value(v) => match &v.value {
                    ast::Value::SingleQuotedString(s) => s.clone(),
                    other => other.to_string(),
                },
                other => other.to_string(),
            };
            setting(&format!("interval {text}")).map(Some)
        }
        ast::Expr::UnaryOp {
            op: ast::UnaryOperator::Minus,
            expr,
        } => setting(&format!("-{}", literal_text(expr))).map(Some),
        other => setting(&literal_text(other)).map(Some),
    }
}

fn literal_text(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        ast::Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

fn invalid(text: &str) -> SqlError {
    SqlError::new(
        sqlstate::INVALID_PARAMETER_VALUE,
        format!("invalid value for parameter \"{NAME}\": \"{text}\""),
    )
    // Postgres points at no position for a setting's value.
    .while_running()
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// A zone `seconds` east of Greenwich, as Postgres shows one set by a number or an interval:
/// `<-07>+07` (a POSIX name in brackets, then the POSIX offset, west positive).
fn from_east(seconds: i32) -> Setting {
    let iso = compact_offset(seconds);
    let posix = compact_offset(-seconds);
    Setting {
        shown: format!("<{iso}>{posix}"),
        zone: offset_text(seconds),
    }
}

/// `+07`, `-07:30`, `+05:30:15`: Postgres' short offset.
fn compact_offset(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let s = seconds.unsigned_abs();
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    match (m, sec) {
        (0, 0) => format!("{sign}{h:02}"),
        (_, 0) => format!("{sign}{h:02}:{m:02}"),
        _ => format!("{sign}{h:02}:{m:02}:{sec:02}"),
    }
}

/// `-05:30`: an offset east of Greenwich as Arrow reads it.
fn offset_text(seconds: i32) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let s = seconds.unsigned_abs();
    format!("{sign}{:02}:{:02}", s / 3600, s / 60 % 60)
}

/// `[+-]hh[:mm[:ss]]` (or `hhmm`) in seconds, positive without a sign.
fn parse_offset(text: &str) -> Option<i32> {
    let (sign, digits) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => (1, text),
    };
    let parts: Vec<&str> = digits.split(':').collect();
    let numbers: Option<Vec<i32>> = match parts.as_slice() {
        [hhmm] if hhmm.len() == 4 => Some(vec![hhmm[..2].parse().ok()?, hhmm[2..].parse().ok()?]),
        parts => parts.iter().map(|p| p.parse().ok()).collect(),
    };
    let numbers = numbers?;
    if numbers.is_empty()
        || numbers.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let (h, m, s) = (
        numbers[0],
        numbers.get(1).copied().unwrap_or(0),
        numbers.get(2).copied().unwrap_or(0),
    );
    if h > 167 || m > 59 || s > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60 + s))
}

/// A zone named in text as `AT TIME ZONE` and `make_timestamptz` read it, as the name Arrow
/// reads: an IANA name in any case (`europe/berlin`), or a POSIX zone without daylight-saving
/// rules, its offset counted west (`UTC+2`, `+05:30`, `<+0330>-03:30`).
pub fn zone_named(text: &str) -> Option<String> {
    let trimmed = text.trim();
    if let Some(tz) = chrono_tz::TZ_VARIANTS
        .iter()
        .find(|tz| tz.name().eq_ignore_ascii_case(trimmed))
    {
        return Some(tz.name().to_string());
    }
    posix_offset(trimmed).map(|west| offset_text(-west))
}

/// The offset (seconds west of Greenwich) of a POSIX zone without daylight-saving rules: a
/// name of three or more letters or one in angle brackets (either may be left out, as Postgres
/// allows), then the offset.
fn posix_offset(text: &str) -> Option<i32> {
    let rest = if let Some(inner) = text.strip_prefix('<') {
        let end = inner.find('>')?;
        &inner[end + 1..]
    } else {
        let letters = text.bytes().take_while(u8::is_ascii_alphabetic).count();
        if letters != 0 && letters < 3 {
            return None;
        }
        &text[letters..]
    };
    parse_offset(rest)
}

/// `plan` with every operation whose result depends on the time zone computed in `zone` (as
/// Arrow reads it), and casts of `timestamptz` to text in Postgres' form whatever the zone.
pub fn in_session_zone(plan: LogicalPlan, zone: Option<&str>) -> Result<LogicalPlan> {
    // Whether a zone is one Arrow reads is checked when the session sets it.
    let zone: Option<Arc<str>> = zone.filter(|z| Tz::from_str(z).is_ok()).map(Into::into);
    super::map_plan_expressions(plan, true, |e, schema| in_zone(e, schema, zone.as_ref()))
}

/// `x` of a `timestamptz` type labelled with `zone`: the same instants, which Arrow's kernels
/// then read in that zone.
fn labelled(x: Expr, unit: TimeUnit, zone: &Arc<str>) -> Expr {
    Expr::Cast(Cast::new(
        Box::new(x),
        DataType::Timestamp(unit, Some(Arc::clone(zone))),
    ))
}

fn cast(x: Expr, t: DataType) -> Expr {
    Expr::Cast(Cast::new(Box::new(x), t))
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// A `timestamptz` type's unit.
fn zoned(t: &DataType) -> Option<TimeUnit> {
    match t {
        DataType::Timestamp(unit, Some(_)) => Some(*unit),
        _ => None,
    }
}

/// `x` (of type `from`) as the text Postgres' output function writes ([`super::output`]), a
/// `timestamptz` in the session's `zone`.
fn output_text(x: Expr, from: &DataType, zone: Option<&Arc<str>>) -> Expr {
    let value = match (from, zone) {
        (DataType::Timestamp(unit, Some(_)), Some(z)) => labelled(x, *unit, z),
        _ => x,
    };
    super::output::text(value)
}

/// `x` where Postgres makes it text without a cast, with [`output_text`] if Arrow would write
/// its type otherwise (with `booleans`, a boolean too: `concat` and `format` write `t`, where
/// `||` casts it to `true`). Returns whether it changed.
fn implicit_text(
    x: Expr,
    schema: &DFSchema,
    zone: Option<&Arc<str>>,
    booleans: bool,
) -> Result<(Expr, bool)> {
    let t = x.get_type(schema)?;
    if super::output::by_output_function(&t) || (booleans && t == DataType::Boolean) {
        Ok((output_text(x, &t, zone), true))
    } else {
        Ok((x, false))
    }
}

/// The wall clock in `zone` of the instants `x` (a `timestamptz` of `unit`).
fn wall_clock(x: Expr, unit: TimeUnit, zone: &Arc<str>) -> Expr {
    Expr::ScalarFunction(ScalarFunction::new_udf(
        datafusion::functions::datetime::to_local_time(),
        vec![labelled(x, unit, zone)],
    ))
}

/// One expression of [`in_session_zone`].
fn in_zone(e: Expr, schema: &DFSchema, zone: Option<&Arc<str>>) -> Result<Transformed<Expr>> {
    match e {
        Expr::Cast(Cast { expr, field }) => {
            let from = expr.get_type(schema)?;
            let to = field.data_type().clone();
            // A value's text as Postgres' output function writes it ([`super::output`]), a
            // `timestamptz` in the session's zone (Arrow's cast writes `2024-03-05T03:00:00Z`).
            if super::output::by_output_function(&from) && is_text(&to) {
                let text = output_text(*expr, &from, zone);
                return Ok(Transformed::yes(if to == DataType::Utf8 {
                    text
                } else {
                    cast(text, to)
                }));
            }
            let Some(zone) = zone else {
                return Ok(Transformed::no(Expr::Cast(Cast { expr, field })));
            };
            match (&from, &to) {
                // Text without an offset, a `timestamp` or a `date` to a `timestamptz`: the
                // wall clock in the session's zone.
                (from, DataType::Timestamp(unit, Some(target)))
                    if target.as_ref() != zone.as_ref()
                        && (is_text(from)
                            || matches!(
                                from,
                                DataType::Timestamp(_, None) | DataType::Date32 | DataType::Date64
                            )) =>
                {
                    Ok(Transformed::yes(cast(
                        local_instant(*expr, from, *unit, zone),
                        to,
                    )))
                }
                // A `timestamptz` to a `timestamp`, `date` or `time`: its wall clock.
                (DataType::Timestamp(unit, Some(_)), to)
                    if matches!(
                        to,
                        DataType::Timestamp(_, None)
                            | DataType::Date32
                            | DataType::Date64
                            | DataType::Time32(_)
                            | DataType::Time64(_)
                    ) =>
                {
                    Ok(Transformed::yes(cast(
                        wall_clock(*expr, *unit, zone),
                        to.clone(),
                    )))
                }
                _ => Ok(Transformed::no(Expr::Cast(Cast { expr, field }))),
            }
        }
        // Values made text without a cast: `'a' || x`, `concat`, `concat_ws` and `format`.
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::StringConcat,
            right,
        }) => {
            let (left, l) = implicit_text(*left, schema, zone, false)?;
            let (right, r) = implicit_text(*right, schema, zone, false)?;
            let e = Expr::BinaryExpr(BinaryExpr::new(
                Box::new(left),
                Operator::StringConcat,
                Box::new(right),
            ));
            Ok(if l || r {
                Transformed::yes(e)
            } else {
                Transformed::no(e)
            })
        }
        Expr::ScalarFunction(mut f)
            if matches!(f.func.name(), "concat" | "concat_ws" | "format") =>
        {
            // `concat_ws`'s separator and `format`'s template are text already.
            let skip = usize::from(f.func.name() != "concat");
            let mut changed = false;
            let args = std::mem::take(&mut f.args);
            for (i, arg) in args.into_iter().enumerate() {
                let (arg, done) = if i < skip {
                    (arg, false)
                } else {
                    implicit_text(arg, schema, zone, true)?
                };
                changed |= done;
                f.args.push(arg);
            }
            let e = Expr::ScalarFunction(f);
            if let Some(zone) = zone {
                // The call may still compute in the zone.
                let Expr::ScalarFunction(f) = e else {
                    return Ok(Transformed::no(e));
                };
                let done = function(f, schema, zone)?;
                return Ok(Transformed::new_transformed(
                    done.data,
                    changed || done.transformed,
                ));
            }
            Ok(if changed {
                Transformed::yes(e)
            } else {
                Transformed::no(e)
            })
        }
        Expr::ScalarFunction(f) if zone.is_some() => {
            let Some(zone) = zone else {
                return Ok(Transformed::no(Expr::ScalarFunction(f)));
            };
            function(f, schema, zone)
        }
        // JSON of a `timestamptz` has the session's offset.
        Expr::AggregateFunction(mut agg)
            if zone.is_some()
                && matches!(
                    agg.func.name(),
                    "json_agg" | "jsonb_agg" | "json_object_agg" | "jsonb_object_agg"
                ) =>
        {
            let Some(zone) = zone else {
                return Ok(Transformed::no(Expr::AggregateFunction(agg)));
            };
            let args = std::mem::take(&mut agg.params.args);
            let (args, changed) = zoned_args(args, schema, zone)?;
            agg.params.args = args;
            let e = Expr::AggregateFunction(agg);
            Ok(if changed {
                Transformed::yes(e)
            } else {
                Transformed::no(e)
            })
        }
        e @ (Expr::InList(_) | Expr::Between(_)) => match zone {
            Some(zone) => listed(e, schema, zone),
            None => Ok(Transformed::no(e)),
        },
        Expr::BinaryExpr(b) if zone.is_some() => {
            let Some(zone) = zone else {
                return Ok(Transformed::no(Expr::BinaryExpr(b)));
            };
            if matches!(b.op, Operator::Plus | Operator::Minus) {
                let done = interval_arithmetic(b, schema, zone)?;
                if done.transformed {
                    return Ok(done);
                }
                let Expr::BinaryExpr(b) = done.data else {
                    return Ok(done);
                };
                return mixed(b, schema, zone);
            }
            mixed(b, schema, zone)
        }
        other => Ok(Transformed::no(other)),
    }
}

/// Functions that read a `timestamptz` in the session's zone get it labelled with the zone,
/// and keep their result's type; those that make one from a wall clock read it in the zone.
fn function(f: ScalarFunction, schema: &DFSchema, zone: &Arc<str>) -> Result<Transformed<Expr>> {
    let name = f.func.name().to_string();
    match name.as_str() {
        // `date_trunc(unit, x)`; `pg_extract(field, x)`; `to_char(x, template)`.
        "date_trunc" | super::extract::NAME | "to_char" => {
            let at = if name == "to_char" { 0 } else { 1 };
            let Some(arg) = f.args.get(at).map(|a| a.get_type(schema)).transpose()? else {
                return Ok(Transformed::no(Expr::ScalarFunction(f)));
            };
            // `date_trunc` of a date truncates the `timestamptz` of its midnight in the zone.
            let date = name == "date_trunc" && matches!(arg, DataType::Date32 | DataType::Date64);
            let Some(unit) = zoned(&arg).or(date.then_some(TimeUnit::Microsecond)) else {
                return Ok(Transformed::no(Expr::ScalarFunction(f)));
            };
            let original = Expr::ScalarFunction(f.clone()).get_type(schema)?;
            let mut args = f.args;
            let x = std::mem::replace(&mut args[at], Expr::Literal(ScalarValue::Null, None));
            let x = if date {
                local_instant(x, &arg, unit, zone)
            } else {
                x
            };
            args[at] = labelled(x, unit, zone);
            let call = Expr::ScalarFunction(ScalarFunction::new_udf(f.func, args));
            Ok(Transformed::yes(match zoned(&original) {
                Some(_) => cast(call, original),
                None => call,
            }))
        }
        // The fields of a wall clock in the session's zone; `to_timestamp(text, template)`
        // without a zone in its template likewise.
        "make_timestamptz" if f.args.len() == 6 => Ok(Transformed::yes(from_wall_clock(
            Expr::ScalarFunction(f),
            schema,
            zone,
        )?)),
        name if name == super::to_date::TO_TIMESTAMP
            && f.args.len() == 2
            && !template_has_zone(&f.args[1]) =>
        {
            Ok(Transformed::yes(from_wall_clock(
                Expr::ScalarFunction(f),
                schema,
                zone,
            )?))
        }
        // JSON of a `timestamptz` has the session's offset.
        "to_json" | "to_jsonb" | "json_build_object" | "json_build_array"
        | "jsonb_build_object" | "jsonb_build_array" => {
            let (args, changed) = zoned_args(f.args, schema, zone)?;
            let call = Expr::ScalarFunction(ScalarFunction::new_udf(f.func, args));
            Ok(if changed {
                Transformed::yes(call)
            } else {
                Transformed::no(call)
            })
        }
        // Today in the session's zone.
        "current_date" if f.args.is_empty() => {
            let mut utc = ConfigOptions::default();
            utc.execution.time_zone = Some("+00:00".into());
            let now = Expr::ScalarFunction(ScalarFunction::new_udf(
                datafusion::functions::datetime::now(&utc),
                vec![],
            ));
            let unit = zoned(&now.get_type(schema)?).unwrap_or(TimeUnit::Nanosecond);
            Ok(Transformed::yes(cast(
                wall_clock(now, unit, zone),
                DataType::Date32,
            )))
        }
        _ => Ok(Transformed::no(Expr::ScalarFunction(f))),
    }
}

/// `args` of a function that writes JSON with each `timestamptz` labelled with `zone` (also the
/// fields of a row, `named_struct(..)`, as `row_to_json(t)` passes one: `whole_row.rs`), and
/// whether one was.
fn zoned_args(args: Vec<Expr>, schema: &DFSchema, zone: &Arc<str>) -> Result<(Vec<Expr>, bool)> {
    let mut changed = false;
    let mut out = Vec::with_capacity(args.len());
    for a in args {
        match a {
            Expr::ScalarFunction(f) if f.func.name() == "named_struct" => {
                let (fields, zoned) = zoned_args(f.args, schema, zone)?;
                changed |= zoned;
                out.push(Expr::ScalarFunction(ScalarFunction::new_udf(
                    f.func, fields,
                )));
            }
            a => match zoned(&a.get_type(schema)?) {
                Some(unit) => {
                    changed = true;
                    out.push(labelled(a, unit, zone));
                }
                None => out.push(a),
            },
        }
    }
    Ok((out, changed))
}

/// `x`, a `timestamptz` computed as if its fields were UTC's, with them read in `zone` instead.
fn from_wall_clock(x: Expr, schema: &DFSchema, zone: &Arc<str>) -> Result<Expr> {
    let t = x.get_type(schema)?;
    let Some(unit) = zoned(&t) else {
        return Ok(x);
    };
    let naive = cast(x, DataType::Timestamp(unit, None));
    let wall = DataType::Timestamp(unit, None);
    Ok(cast(local_instant(naive, &wall, unit, zone), t))
}

/// Whether a `to_timestamp` template (a constant) reads a zone (`TZ`, `TZH`, `TZM`, `OF`); a
/// template that is not a constant counts as one that does.
fn template_has_zone(template: &Expr) -> bool {
    match template {
        Expr::Literal(
            ScalarValue::Utf8(Some(t))
            | ScalarValue::Utf8View(Some(t))
            | ScalarValue::LargeUtf8(Some(t)),
            _,
        ) => {
            let upper = t.to_ascii_uppercase();
            upper.contains("TZ") || upper.contains("OF")
        }
        _ => true,
    }
}

/// `x ± interval` (or `interval + x`) of a `timestamptz`: days and months added to the wall
/// clock in the session's zone, as Postgres adds them.
fn interval_arithmetic(
    b: BinaryExpr,
    schema: &DFSchema,
    zone: &Arc<str>,
) -> Result<Transformed<Expr>> {
    let left = b.left.get_type(schema)?;
    let right = b.right.get_type(schema)?;
    let interval = |t: &DataType| matches!(t, DataType::Interval(_));
    let (unit, original) = match (zoned(&left), zoned(&right)) {
        (Some(unit), None) if interval(&right) => (unit, left.clone()),
        (None, Some(unit)) if interval(&left) && b.op == Operator::Plus => (unit, right.clone()),
        _ => return Ok(Transformed::no(Expr::BinaryExpr(b))),
    };
    let BinaryExpr {
        left: l,
        op,
        right: r,
    } = b;
    let (l, r) = if zoned(&left).is_some() {
        (labelled(*l, unit, zone), *r)
    } else {
        (*l, labelled(*r, unit, zone))
    };
    let sum = Expr::BinaryExpr(BinaryExpr::new(Box::new(l), op, Box::new(r)));
    Ok(Transformed::yes(cast(sum, original)))
}

/// `strings` parsed as `target` ([`crate::text::parse_column`]), a `timestamptz` without an
/// offset read as a wall clock in `zone` (the session's; `None` for UTC).
pub fn parse_text(
    strings: &ArrayRef,
    target: &DataType,
    opts: &datafusion::arrow::compute::CastOptions,
    zone: Option<&str>,
) -> std::result::Result<ArrayRef, datafusion::arrow::error::ArrowError> {
    match (target, zone) {
        (DataType::Timestamp(unit, Some(_)), Some(zone)) => {
            let local = DataType::Timestamp(*unit, Some(zone.into()));
            match crate::text::parse_column(strings, &local, opts) {
                Ok(parsed) => datafusion::arrow::compute::cast(&parsed, target),
                // A wall clock in a daylight-saving change, read as Postgres reads it.
                Err(e) => {
                    let tz = Tz::from_str(zone)?;
                    let text = datafusion::arrow::compute::cast(strings, &DataType::Utf8)?;
                    let instants = texts_in_zone(text.as_string::<i32>(), &tz).map_err(|_| e)?;
                    let instants: ArrayRef = Arc::new(instants.with_timezone("+00:00"));
                    datafusion::arrow::compute::cast(&instants, target)
                }
            }
        }
        _ => crate::text::parse_column(strings, target, opts),
    }
}

/// The zone of one `timestamptz` value: its offset east of Greenwich in seconds, and its
/// abbreviation as Postgres' `to_char` prints it (`EST`, `CET`, `UTC`, `+05:30`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueZone {
    pub offset: i32,
    pub abbreviation: String,
}

/// A `timestamptz` array's wall clocks and zones.
pub struct Local {
    /// The wall clocks, as `timestamp` (microseconds without a zone).
    pub clocks: ArrayRef,
    /// Each value's zone (`None` for a NULL).
    pub zones: Vec<Option<ValueZone>>,
}

/// The wall clocks and zones of `array`'s instants in the zone its type is labelled with, if it
/// is a `timestamptz`.
pub fn local(array: &ArrayRef) -> Result<Option<Local>> {
    let DataType::Timestamp(_, Some(label)) = array.data_type() else {
        return Ok(None);
    };
    let tz = Tz::from_str(label)?;
    let named = chrono_tz::Tz::from_str(label).ok();
    let utc_label = is_utc(label);
    let micros =
        datafusion::arrow::compute::cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let micros = micros.as_primitive::<TimestampMicrosecondType>();
    let mut clocks = Vec::with_capacity(micros.len());
    let mut zones = Vec::with_capacity(micros.len());
    for v in micros.iter() {
        let Some(v) = v else {
            clocks.push(None);
            zones.push(None);
            continue;
        };
        let utc = chrono::DateTime::from_timestamp_micros(v)
            .ok_or_else(|| DataFusionError::Execution(format!("timestamp {v} out of range")))?
            .naive_utc();
        let offset = tz.offset_from_utc_datetime(&utc).fix().local_minus_utc();
        let abbreviation = if utc_label {
            "UTC".to_string()
        } else {
            named
                .and_then(|n| {
                    n.offset_from_utc_datetime(&utc)
                        .abbreviation()
                        .map(str::to_string)
                })
                .unwrap_or_else(|| compact_offset(offset))
        };
        clocks.push(Some(v + i64::from(offset) * 1_000_000));
        zones.push(Some(ValueZone {
            offset,
            abbreviation,
        }));
    }
    Ok(Some(Local {
        clocks: Arc::new(TimestampMicrosecondArray::from(clocks)),
        zones,
    }))
}

/// The instant wall clock `naive` is in `tz`: one the zone skips (a daylight-saving gap) read
/// with the offset before the change, one it repeats as the later instant, as Postgres reads them
/// (Arrow refuses both).
fn wall_clock_instant(tz: &Tz, naive: chrono::NaiveDateTime) -> i64 {
    match tz.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) => t.timestamp_micros(),
        chrono::LocalResult::Ambiguous(a, b) => a.timestamp_micros().max(b.timestamp_micros()),
        chrono::LocalResult::None => {
            let before = naive - chrono::Duration::hours(12);
            let offset = tz.offset_from_utc_datetime(&before).fix();
            (naive - offset).and_utc().timestamp_micros()
        }
    }
}

/// Timestamps as text, those without an offset read as wall clocks in `tz`
/// ([`wall_clock_instant`]), as microseconds since the epoch.
fn texts_in_zone(
    text: &datafusion::arrow::array::StringArray,
    tz: &Tz,
) -> std::result::Result<TimestampMicrosecondArray, datafusion::arrow::error::ArrowError> {
    use datafusion::arrow::compute::kernels::cast_utils::string_to_datetime;
    let mut out = Vec::with_capacity(text.len());
    for s in text.iter() {
        let Some(s) = s else {
            out.push(None);
            continue;
        };
        out.push(Some(match string_to_datetime(tz, s) {
            Ok(t) => t.timestamp_micros(),
            // Refused for its wall clock (read alone), or not a timestamp at all.
            Err(e) => match string_to_datetime(&chrono::Utc, s) {
                Ok(wall) => wall_clock_instant(tz, wall.naive_utc()),
                Err(_) => return Err(e),
            },
        }));
    }
    Ok(TimestampMicrosecondArray::from(out))
}

/// Whether a value of type `t` beside a `timestamptz` is read as a wall clock (Postgres casts a
/// `timestamp`, a `date` and a quoted literal to `timestamptz` in the session's zone).
fn wall(t: &DataType) -> bool {
    is_text(t)
        || matches!(
            t,
            DataType::Timestamp(_, None) | DataType::Date32 | DataType::Date64
        )
}

/// `x`, a wall clock of type `from` (text, `timestamp` or `date`), as the instant of type `to`
/// (a `timestamptz` of `unit`) it is in `zone`.
fn as_instant(x: Expr, from: &DataType, to: &DataType, unit: TimeUnit, zone: &Arc<str>) -> Expr {
    let x = match x {
        // Postgres' forms Arrow does not read (`2024-03-05 10:00`, without seconds).
        Expr::Literal(ScalarValue::Utf8(Some(text)), meta) => {
            let text = super::datetime_input::timestamp(&text).unwrap_or(text);
            Expr::Literal(ScalarValue::Utf8(Some(text)), meta)
        }
        x => x,
    };
    cast(local_instant(x, from, unit, zone), to.clone())
}

/// The instants that `x` (text, a `timestamp` or a `date`, of type `from`) names as wall clocks
/// in `zone` (text with an offset: that offset), as a `timestamptz` of UTC.
fn local_instant(x: Expr, from: &DataType, unit: TimeUnit, zone: &Arc<str>) -> Expr {
    let x = if matches!(from, DataType::Date32 | DataType::Date64) {
        cast(x, DataType::Timestamp(unit, None))
    } else {
        x
    };
    Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(local_instant_udf()),
        vec![
            x,
            Expr::Literal(ScalarValue::Utf8(Some(zone.to_string())), None),
        ],
    ))
}

/// `pg_local_instant(x, zone)`: see [`local_instant`]. A wall clock the zone skips (in a
/// daylight-saving gap) is read with the offset before the change, one it repeats as the later
/// instant, as Postgres reads them (Arrow refuses both).
fn local_instant_udf() -> ScalarUDF {
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()));
    super::functions::function_of(
        "pg_local_instant",
        &[2],
        utc,
        Volatility::Immutable,
        |args, _| {
            let [value, zone] = args else {
                return Err(DataFusionError::Internal(
                    "pg_local_instant takes a value and a zone".into(),
                ));
            };
            let zone = datafusion::arrow::compute::cast(zone, &DataType::Utf8)?;
            let zone = zone.as_string::<i32>();
            if zone.is_empty() || zone.is_null(0) {
                return Err(DataFusionError::Internal(
                    "pg_local_instant without its zone".into(),
                ));
            }
            let tz = Tz::from_str(zone.value(0))?;
            let out: TimestampMicrosecondArray = match value.data_type() {
                DataType::Timestamp(_, None) => {
                    let naive = datafusion::arrow::compute::cast(
                        value,
                        &DataType::Timestamp(TimeUnit::Microsecond, None),
                    )?;
                    naive
                        .as_primitive::<TimestampMicrosecondType>()
                        .iter()
                        .map(|v| {
                            let naive = chrono::DateTime::from_timestamp_micros(v?)?.naive_utc();
                            Some(wall_clock_instant(&tz, naive))
                        })
                        .collect()
                }
                t if is_text(t) => {
                    let text = datafusion::arrow::compute::cast(value, &DataType::Utf8)?;
                    texts_in_zone(text.as_string::<i32>(), &tz)?
                }
                other => {
                    return Err(DataFusionError::Internal(format!(
                        "pg_local_instant of {other}"
                    )));
                }
            };
            Ok(Arc::new(out.with_timezone("+00:00")) as ArrayRef)
        },
    )
}

/// `x IN (..)` and `x BETWEEN a AND b` of a `timestamptz` `x`: the others read as wall clocks
/// in the session's zone.
fn listed(e: Expr, schema: &DFSchema, zone: &Arc<str>) -> Result<Transformed<Expr>> {
    let (x, others): (&Expr, Vec<&Expr>) = match &e {
        Expr::InList(l) => (&l.expr, l.list.iter().collect()),
        Expr::Between(b) => (&b.expr, vec![&b.low, &b.high]),
        _ => return Ok(Transformed::no(e)),
    };
    let t = x.get_type(schema)?;
    let Some(unit) = zoned(&t) else {
        return Ok(Transformed::no(e));
    };
    let mut types = Vec::with_capacity(others.len());
    for o in others {
        types.push(o.get_type(schema)?);
    }
    if !types.iter().any(wall) {
        return Ok(Transformed::no(e));
    }
    let mut types = types.into_iter();
    let mut convert = |o: Expr| match types.next() {
        Some(from) if wall(&from) => as_instant(o, &from, &t, unit, zone),
        _ => o,
    };
    Ok(Transformed::yes(match e {
        Expr::InList(mut l) => {
            l.list = l.list.into_iter().map(&mut convert).collect();
            Expr::InList(l)
        }
        Expr::Between(mut b) => {
            b.low = Box::new(convert(*b.low));
            b.high = Box::new(convert(*b.high));
            Expr::Between(b)
        }
        other => other,
    }))
}

/// A `timestamptz` compared with (or less) a `timestamp`, a `date` or a quoted literal: the
/// other read as a wall clock in the session's zone, as Postgres converts it (DataFusion's
/// coercion would read it in UTC).
fn mixed(b: BinaryExpr, schema: &DFSchema, zone: &Arc<str>) -> Result<Transformed<Expr>> {
    use Operator::*;
    if !matches!(
        b.op,
        Eq | NotEq | Lt | LtEq | Gt | GtEq | IsDistinctFrom | IsNotDistinctFrom | Minus
    ) {
        return Ok(Transformed::no(Expr::BinaryExpr(b)));
    }
    let left = b.left.get_type(schema)?;
    let right = b.right.get_type(schema)?;
    let BinaryExpr {
        left: l,
        op,
        right: r,
    } = b;
    let (l, r) = match (zoned(&left), zoned(&right)) {
        (Some(unit), None) if wall(&right) => (*l, as_instant(*r, &right, &left, unit, zone)),
        (None, Some(unit)) if wall(&left) => (as_instant(*l, &left, &right, unit, zone), *r),
        _ => {
            return Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr::new(l, op, r))));
        }
    };
    Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
        Box::new(l),
        op,
        Box::new(r),
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> (String, String) {
        let s = setting(text).unwrap();
        (s.shown, s.zone)
    }

    #[test]
    fn reads_settings_as_postgres() {
        assert_eq!(
            set("America/New_York"),
            ("America/New_York".into(), "America/New_York".into())
        );
        assert_eq!(
            set("europe/berlin"),
            ("Europe/Berlin".into(), "Europe/Berlin".into())
        );
        assert_eq!(set("utc"), ("UTC".into(), "UTC".into()));
        assert_eq!(set("-7"), ("<-07>+07".into(), "-07:00".into()));
        assert_eq!(set("7.5"), ("<+07:30>-07:30".into(), "+07:30".into()));
        assert_eq!(
            set("interval '+03:00'"),
            ("<+03>-03".into(), "+03:00".into())
        );
        assert_eq!(set("+05:30"), ("+05:30".into(), "-05:30".into()));
        assert_eq!(set("UTC+5"), ("UTC+5".into(), "-05:00".into()));
        assert_eq!(
            set("<+0330>-03:30"),
            ("<+0330>-03:30".into(), "+03:30".into())
        );
        assert_eq!(set("Etc/GMT+5"), ("Etc/GMT+5".into(), "Etc/GMT+5".into()));
        for bad in ["Nowhere/Land", "Z", "", "UT+1", "+25:99"] {
            let e = setting(bad).unwrap_err();
            assert_eq!(e.code, sqlstate::INVALID_PARAMETER_VALUE, "{bad}");
        }
    }
}
