//! Postgres binary wire formats to the text Postgres itself would print, so that one `.slt`
//! expectation serves both protocols (tokio-postgres always asks for binary results).

use std::error::Error;

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime};
use tokio_postgres::types::Type;

type BoxError = Box<dyn Error + Sync + Send>;

fn be<const N: usize>(raw: &[u8], at: usize) -> Result<[u8; N], BoxError> {
    raw.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| "short binary value".into())
}

fn epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default()
}

/// `HH:MM:SS` plus the fraction without trailing zeros, as Postgres prints times.
fn time_text(t: NaiveTime) -> String {
    let s = t.format("%H:%M:%S%.6f").to_string();
    let s = s.trim_end_matches('0');
    s.trim_end_matches('.').to_string()
}

/// A `regtype` (a type's OID) as Postgres prints it: the type's SQL name (`integer`, `integer[]`).
fn regtype_text(oid: u32) -> String {
    let Some(t) = Type::from_oid(oid) else {
        return oid.to_string();
    };
    let (name, array) = match t.kind() {
        tokio_postgres::types::Kind::Array(elem) => (elem.name(), "[]"),
        _ => (t.name(), ""),
    };
    let sql = match name {
        "bool" => "boolean",
        "int2" => "smallint",
        "int4" => "integer",
        "int8" => "bigint",
        "float4" => "real",
        "float8" => "double precision",
        "varchar" => "character varying",
        "time" => "time without time zone",
        "timestamp" => "timestamp without time zone",
        "timestamptz" => "timestamp with time zone",
        "char" => "\"char\"",
        other => other,
    };
    format!("{sql}{array}")
}

/// The text form of one binary value of type `ty`.
pub fn to_text(ty: &Type, raw: &[u8]) -> Result<String, BoxError> {
    Ok(match *ty {
        Type::DATE => {
            let days = i32::from_be_bytes(be(raw, 0)?);
            (epoch().date() + Duration::days(days.into()))
                .format("%Y-%m-%d")
                .to_string()
        }
        Type::TIME => {
            let micros = i64::from_be_bytes(be(raw, 0)?);
            time_text(NaiveTime::MIN + Duration::microseconds(micros))
        }
        Type::TIMESTAMP | Type::TIMESTAMPTZ => {
            let micros = i64::from_be_bytes(be(raw, 0)?);
            let ts = epoch() + Duration::microseconds(micros);
            let text = format!("{} {}", ts.date().format("%Y-%m-%d"), time_text(ts.time()));
            if *ty == Type::TIMESTAMPTZ {
                format!("{text}+00")
            } else {
                text
            }
        }
        Type::INTERVAL => {
            let micros = i64::from_be_bytes(be(raw, 0)?);
            let days = i32::from_be_bytes(be(raw, 8)?);
            let months = i32::from_be_bytes(be(raw, 12)?);
            interval_text(months, days, micros)
        }
        Type::NUMERIC => numeric_text(raw)?,
        // jsonb's binary form: its version (1), then the text.
        Type::JSONB => match raw.split_first() {
            Some((1, text)) => String::from_utf8(text.to_vec())?,
            _ => return Err(format!("jsonb of an unknown version: {raw:?}").into()),
        },
        // uuid's binary form: its 16 bytes.
        Type::UUID if raw.len() == 16 => {
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            )
        }
        Type::BYTEA => {
            let mut s = String::from("\\x");
            for b in raw {
                s.push_str(&format!("{b:02x}"));
            }
            s
        }
        Type::OID => u32::from_be_bytes(be(raw, 0)?).to_string(),
        Type::REGTYPE => regtype_text(u32::from_be_bytes(be(raw, 0)?)),
        Type::BOOL => if raw.first() == Some(&1) { "t" } else { "f" }.to_string(),
        Type::INT2 => i16::from_be_bytes(be(raw, 0)?).to_string(),
        Type::INT4 => i32::from_be_bytes(be(raw, 0)?).to_string(),
        Type::INT8 => i64::from_be_bytes(be(raw, 0)?).to_string(),
        Type::FLOAT4 => f32::from_be_bytes(be(raw, 0)?).to_string(),
        Type::FLOAT8 => f64::from_be_bytes(be(raw, 0)?).to_string(),
        Type::RECORD => record_text(raw)?,
        _ => match ty.kind() {
            tokio_postgres::types::Kind::Array(elem) => array_text(elem, raw)?,
            _ => String::from_utf8(raw.to_vec())?,
        },
    })
}

/// A one-dimensional array (`ndim`, flags, element OID, length, lower bound, then each element's
/// length and bytes) as Postgres prints it: `{1,NULL,"a b"}`.
fn array_text(elem: &Type, raw: &[u8]) -> Result<String, BoxError> {
    let ndim = i32::from_be_bytes(be(raw, 0)?);
    if ndim == 0 {
        return Ok("{}".into());
    }
    if ndim != 1 {
        return Err(format!("{ndim}-dimensional array").into());
    }
    let len = i32::from_be_bytes(be(raw, 12)?);
    let mut at = 20;
    let mut items = Vec::new();
    for _ in 0..len {
        let n = i32::from_be_bytes(be(raw, at)?);
        at += 4;
        if n < 0 {
            items.push("NULL".to_string());
            continue;
        }
        let bytes = raw.get(at..at + n as usize).ok_or("short array element")?;
        at += n as usize;
        let text = to_text(elem, bytes)?;
        let plain = !text.is_empty()
            && !text.eq_ignore_ascii_case("null")
            && !text.contains(|c: char| c.is_whitespace() || "{},\"\\".contains(c));
        items.push(if plain {
            text
        } else {
            format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
        });
    }
    Ok(format!("{{{}}}", items.join(",")))
}

/// A row (its field count, then each field's type OID, length and bytes) as Postgres'
/// `record_out` prints it: `(1,"a b",)`.
fn record_text(raw: &[u8]) -> Result<String, BoxError> {
    let fields = i32::from_be_bytes(be(raw, 0)?);
    let mut at = 4;
    let mut items = Vec::new();
    for _ in 0..fields {
        let oid = u32::from_be_bytes(be(raw, at)?);
        let n = i32::from_be_bytes(be(raw, at + 4)?);
        at += 8;
        if n < 0 {
            items.push(String::new());
            continue;
        }
        let bytes = raw.get(at..at + n as usize).ok_or("short record field")?;
        at += n as usize;
        let ty = Type::from_oid(oid).ok_or_else(|| format!("record field of type {oid}"))?;
        let text = to_text(&ty, bytes)?;
        let plain = !text.is_empty()
            && !text.contains(|c: char| c.is_ascii_whitespace() || "\"\\(),".contains(c));
        items.push(if plain {
            text
        } else {
            format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\"\""))
        });
    }
    Ok(format!("({})", items.join(",")))
}

fn plural(n: i64, unit: &str) -> String {
    // Postgres: "1 year", "-1 years".
    if n == 1 {
        format!("{n} {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Postgres' `postgres` interval style: `1 year 2 mons 3 days 04:05:06`.
fn interval_text(months: i32, days: i32, micros: i64) -> String {
    let mut parts = Vec::new();
    let (years, mons) = (months / 12, months % 12);
    if years != 0 {
        parts.push(plural(years.into(), "year"));
    }
    if mons != 0 {
        parts.push(plural(mons.into(), "mon"));
    }
    if days != 0 {
        parts.push(plural(days.into(), "day"));
    }
    if micros != 0 || parts.is_empty() {
        let sign = if micros < 0 { "-" } else { "" };
        let m = micros.unsigned_abs();
        let (h, rest) = (m / 3_600_000_000, m % 3_600_000_000);
        let (min, rest) = (rest / 60_000_000, rest % 60_000_000);
        let (s, frac) = (rest / 1_000_000, rest % 1_000_000);
        let mut t = format!("{sign}{h:02}:{min:02}:{s:02}");
        if frac != 0 {
            let f = format!("{frac:06}");
            t.push('.');
            t.push_str(f.trim_end_matches('0'));
        }
        parts.push(t);
    }
    parts.join(" ")
}

/// NUMERIC: `ndigits, weight, sign, dscale` then base-10000 digits.
fn numeric_text(raw: &[u8]) -> Result<String, BoxError> {
    let ndigits = i16::from_be_bytes(be(raw, 0)?) as usize;
    let weight = i16::from_be_bytes(be(raw, 2)?) as i32;
    let sign = u16::from_be_bytes(be(raw, 4)?);
    let dscale = u16::from_be_bytes(be(raw, 6)?) as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        digits.push(i16::from_be_bytes(be(raw, 8 + 2 * i)?) as i32);
    }
    let digit = |pos: i32| -> i32 {
        let idx = weight - pos;
        if idx < 0 {
            0
        } else {
            digits.get(idx as usize).copied().unwrap_or(0)
        }
    };
    let mut int_part = String::new();
    if weight < 0 {
        int_part.push('0');
    } else {
        for pos in (0..=weight).rev() {
            let d = digit(pos);
            if int_part.is_empty() {
                int_part.push_str(&d.to_string())
            } else {
                int_part.push_str(&format!("{d:04}"))
            }
        }
    }
    let mut frac = String::new();
    let mut pos = -1;
    while frac.len() < dscale {
        frac.push_str(&format!("{:04}", digit(pos)));
        pos -= 1;
    }
    frac.truncate(dscale);
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    out.push_str(&int_part);
    if dscale > 0 {
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_numerics() {
        assert_eq!(
            interval_text(14, 3, 4 * 3_600_000_000 + 5_500_000),
            "1 year 2 mons 3 days 04:00:05.5"
        );
        assert_eq!(interval_text(0, 0, 0), "00:00:00");
        // 12345.678 with dscale 3: weight 1, digits [1, 2345, 6780]
        let raw = [0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1A, 0x7C];
        assert_eq!(numeric_text(&raw).unwrap(), "12345.678");
    }
}
