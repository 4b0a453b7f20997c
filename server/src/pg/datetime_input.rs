//! Postgres' text forms of timestamps and intervals that Arrow's parsers do not read, rewritten
//! into forms they do: a time of day without seconds (`2024-03-05 10:00`), and intervals as
//! Postgres prints them (`1 day 02:03:04`, `-1 years -2 mons +3 days -04:05:06.5`), with `ago`,
//! the `@` prefix, or in ISO 8601 (`P1DT2H`).
//!
//! Applied to text constants cast to those types (`'...'::interval`, `TIMESTAMP '...'`, values of
//! an INSERT into such columns) and to `INTERVAL '...'` literals. Text that is already in a form
//! Arrow reads is left as it is.

use std::ops::ControlFlow;

use datafusion::arrow::datatypes::{DataType, IntervalDayTime};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::sql::sqlparser::ast;

/// Postgres' special date/time inputs in a constant cast to `target` (a timestamp or a date):
/// `now`, `today`, `tomorrow`, `yesterday` as the statement's clock reads them (a wall clock in
/// the session's zone, as the zone pass computes it from `now()` and `current_date`), `epoch`
/// as 1970-01-01. Postgres' `infinity` and `-infinity` have no Arrow value and are refused with
/// 0A000. `None`: not one of these words.
pub fn special(text: &str, target: &DataType) -> Option<Result<Expr, crate::error::SqlError>> {
    use datafusion::functions::datetime::{current_date, now};
    let word = text.trim().to_ascii_lowercase();
    let days = |n: i32| {
        let today = Expr::ScalarFunction(ScalarFunction::new_udf(current_date(), vec![]));
        if n == 0 {
            today
        } else {
            today
                + Expr::Literal(
                    ScalarValue::IntervalDayTime(Some(IntervalDayTime::new(n, 0))),
                    None,
                )
        }
    };
    let value = match word.as_str() {
        "now" => {
            let mut utc = datafusion::config::ConfigOptions::default();
            utc.execution.time_zone = Some("+00:00".into());
            Expr::ScalarFunction(ScalarFunction::new_udf(now(&utc), vec![]))
        }
        "today" => days(0),
        "tomorrow" => days(1),
        "yesterday" => days(-1),
        "epoch" => Expr::Literal(
            ScalarValue::Utf8(Some("1970-01-01 00:00:00+00".into())),
            None,
        ),
        "infinity" | "+infinity" | "-infinity" => {
            return Some(Err(crate::error::SqlError::new(
                crate::error::sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "date/time value \"{word}\" is not supported: Rivulet's dates and timestamps are finite"
                ),
            )));
        }
        _ => return None,
    };
    Some(Ok(Expr::Cast(datafusion::logical_expr::expr::Cast::new(
        Box::new(value),
        target.clone(),
    ))))
}

/// `text` with a missing `:00` of seconds added, if it is a date and a time of day in hours and
/// minutes (followed by nothing, a fraction-less zone or `Z`).
pub fn timestamp(text: &str) -> Option<String> {
    let t = text.trim();
    let sep = t.find([' ', 'T'])?;
    let (date, rest) = t.split_at(sep);
    let time = &rest[1..];
    if !date.bytes().all(|b| b.is_ascii_digit() || b == b'-') || date.len() < 8 {
        return None;
    }
    let hours = time.bytes().take_while(u8::is_ascii_digit).count();
    if !(1..=2).contains(&hours) || time.as_bytes().get(hours) != Some(&b':') {
        return None;
    }
    let after = &time[hours + 1..];
    let minutes = after.bytes().take_while(u8::is_ascii_digit).count();
    if minutes != 2 {
        return None;
    }
    let zone = &after[2..];
    if zone.starts_with(':') || zone.starts_with('.') {
        return None;
    }
    Some(format!(
        "{date}{}{}:{}:00{zone}",
        &rest[..1],
        &time[..hours],
        &after[..2]
    ))
}

/// `text` in the unit form Arrow reads, if it is one of Postgres' interval forms Arrow does not.
pub fn interval(text: &str) -> Option<String> {
    let t = text.trim();
    let (t, at) = match t.strip_prefix('@') {
        Some(rest) => (rest.trim(), true),
        None => (t, false),
    };
    if let Some(iso) = t.strip_prefix(['P', 'p']) {
        return iso8601(iso);
    }
    let mut parts = Vec::new();
    let mut ago = false;
    let mut changed = at;
    for token in t.split_whitespace() {
        if token.eq_ignore_ascii_case("ago") {
            ago = true;
            changed = true;
        } else if token.contains(':') {
            parts.extend(time_of_day(token)?);
            changed = true;
        } else if let Some(positive) = token.strip_prefix('+') {
            // Arrow reads no `+` sign.
            parts.push(positive.to_string());
            changed = true;
        } else {
            parts.push(token.to_string());
        }
    }
    if !changed {
        return None;
    }
    if ago {
        for p in &mut parts {
            if p.parse::<f64>().is_ok() {
                *p = match p.strip_prefix('-') {
                    Some(positive) => positive.to_string(),
                    None => format!("-{p}"),
                };
            }
        }
    }
    Some(parts.join(" "))
}

/// `[-+]HH:MM[:SS[.f]]` as hours, minutes and seconds with the sign on each.
fn time_of_day(token: &str) -> Option<Vec<String>> {
    let (sign, rest) = match token.as_bytes().first()? {
        b'-' => ("-", &token[1..]),
        b'+' => ("", &token[1..]),
        _ => ("", token),
    };
    let fields: Vec<&str> = rest.split(':').collect();
    let numeric = |f: &&str| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !(2..=3).contains(&fields.len()) || !fields.iter().all(numeric) {
        return None;
    }
    let units = ["hours", "minutes", "seconds"];
    Some(
        fields
            .iter()
            .zip(units)
            .flat_map(|(f, unit)| [format!("{sign}{f}"), unit.to_string()])
            .collect(),
    )
}

/// ISO 8601's `P[nY][nM][nW][nD][T[nH][nM][nS]]` (after the `P`).
fn iso8601(text: &str) -> Option<String> {
    let (date, time) = match text.split_once(['T', 't']) {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut parts = Vec::new();
    let mut read = |part: &str, units: &[(char, &str)]| -> Option<()> {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' || c == '-' {
                number.push(c);
            } else {
                let unit = units.iter().find(|(d, _)| d.eq_ignore_ascii_case(&c))?.1;
                if number.is_empty() {
                    return None;
                }
                parts.push(format!("{number} {unit}"));
                number.clear();
            }
        }
        number.is_empty().then_some(())
    };
    read(
        date,
        &[
            ('Y', "years"),
            ('M', "months"),
            ('W', "weeks"),
            ('D', "days"),
        ],
    )?;
    if let Some(time) = time {
        read(time, &[('H', "hours"), ('M', "minutes"), ('S', "seconds")])?;
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join(" "))
}

/// Rewrites the text of `INTERVAL '...'` literals and of timestamp constants (`TIMESTAMP '...'`,
/// `'...'::timestamp`), which DataFusion parses while planning: before a table function such as
/// `generate_series` is called with them, say, so the rewrite of the plan comes too late.
pub fn literals(stmt: &mut ast::Statement) {
    let is_timestamp = |t: &ast::DataType| {
        matches!(
            t,
            ast::DataType::Timestamp(..)
                | ast::DataType::TimestampNtz(..)
                | ast::DataType::Datetime(_)
        )
    };
    let rewrite = |v: &mut ast::ValueWithSpan, with: fn(&str) -> Option<String>| {
        if let ast::Value::SingleQuotedString(text) = &v.value
            && let Some(rewritten) = with(text)
        {
            v.value = ast::Value::SingleQuotedString(rewritten);
        }
    };
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        match expr {
            ast::Expr::Interval(i) if i.leading_field.is_none() => {
                if let ast::Expr::Value(v) = i.value.as_mut() {
                    rewrite(v, interval);
                }
            }
            ast::Expr::TypedString(t) if is_timestamp(&t.data_type) => {
                rewrite(&mut t.value, timestamp);
            }
            ast::Expr::Cast {
                expr, data_type, ..
            } if is_timestamp(data_type) => {
                if let ast::Expr::Value(v) = expr.as_mut() {
                    rewrite(v, timestamp);
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `LOCALTIMESTAMP` and `LOCALTIME` (SQL's, without parentheses), which DataFusion does not
/// know, as the current time in the session's zone without one: `CAST(now() AS TIMESTAMP)` and
/// `CAST(now() AS TIME)`, which [`super::time_zone`] takes in the session's zone.
pub fn local_time(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::Function(f) = expr
            && matches!(f.args, ast::FunctionArguments::None)
            && let [ast::ObjectNamePart::Identifier(name)] = f.name.0.as_slice()
            && name.quote_style.is_none()
        {
            let data_type = match name.value.to_ascii_lowercase().as_str() {
                "localtimestamp" => ast::DataType::Timestamp(None, ast::TimezoneInfo::None),
                "localtime" => ast::DataType::Time(None, ast::TimezoneInfo::None),
                _ => return ControlFlow::<()>::Continue(()),
            };
            let now = super::rewrite::call("now", Vec::new(), Vec::new());
            *expr = ast::Expr::Cast {
                kind: ast::CastKind::Cast,
                expr: Box::new(now),
                data_type,
                array: false,
                format: None,
            };
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_without_seconds_get_them() {
        assert_eq!(
            timestamp("2024-03-05 10:00").as_deref(),
            Some("2024-03-05 10:00:00")
        );
        assert_eq!(
            timestamp("2024-03-05T9:30+02").as_deref(),
            Some("2024-03-05T9:30:00+02")
        );
        assert_eq!(timestamp("2024-03-05 10:00:01"), None);
        assert_eq!(timestamp("2024-03-05"), None);
        assert_eq!(timestamp("2024-03-05 10:00.5"), None);
    }

    #[test]
    fn postgres_intervals_become_units() {
        let i = |s: &str| interval(s);
        assert_eq!(
            i("1 day 02:03:04").as_deref(),
            Some("1 day 02 hours 03 minutes 04 seconds")
        );
        assert_eq!(
            i("-1 years -2 mons +3 days -04:05:06.5").as_deref(),
            Some("-1 years -2 mons 3 days -04 hours -05 minutes -06.5 seconds")
        );
        assert_eq!(i("10:00").as_deref(), Some("10 hours 00 minutes"));
        assert_eq!(i("P1DT2H").as_deref(), Some("1 days 2 hours"));
        assert_eq!(i("P1Y2M3W").as_deref(), Some("1 years 2 months 3 weeks"));
        assert_eq!(i("PT1.5S").as_deref(), Some("1.5 seconds"));
        assert_eq!(i("@ 1 day 2 hours ago").as_deref(), Some("-1 day -2 hours"));
        assert_eq!(i("1 day"), None);
        assert_eq!(i("P"), None);
        assert_eq!(i("1:2:3:4"), None);
    }
}
