//! Postgres' `x AT TIME ZONE zone`, which changes the type: a `timestamptz` becomes the
//! `timestamp` a clock in `zone` shows at that instant, and a `timestamp` (read as a time in
//! `zone`) becomes a `timestamptz`. DataFusion's keeps a time zone either way, so `ts AT TIME ZONE
//! 'UTC'` printed `...+00` where Postgres prints a plain timestamp.
//!
//! `rewrite.rs` turns the operator into `pg_at_time_zone(x, zone)`. The zone is a constant: a name
//! (`Europe/Paris`, `UTC`) or an offset, which Postgres reads as POSIX does (`+02:00` is two hours
//! west of Greenwich).

use std::ops::ControlFlow;
use std::sync::Arc;

use chrono::{Offset, TimeZone};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{Array, AsArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit, TimestampMicrosecondType};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::sql::sqlparser::ast;
use rivulet_planner::types::SqlType;

/// The name `rewrite.rs` calls.
const NAME: &str = "pg_at_time_zone";

pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(AtTimeZone {
        signature: Signature::any(2, Volatility::Immutable),
    })
}

/// `x AT TIME ZONE z` as `pg_at_time_zone(x, z)`.
pub fn rewrite(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::AtTimeZone {
            timestamp,
            time_zone,
        } = expr
        {
            let args = vec![timestamp.as_ref().clone(), time_zone.as_ref().clone()];
            *expr = super::rewrite::call(NAME, args, vec![]);
        }
        ControlFlow::<()>::Continue(())
    });
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct AtTimeZone {
    signature: Signature,
}

/// Whether a value of type `t` has a time zone (the result then has none).
fn zoned(t: &DataType) -> Result<bool> {
    match t {
        DataType::Timestamp(_, tz) => Ok(tz.is_some()),
        DataType::Date32 | DataType::Date64 | DataType::Null => Ok(false),
        other => Err(DataFusionError::Plan(format!(
            "AT TIME ZONE takes a timestamp, not {other}"
        ))),
    }
}

impl ScalarUDFImpl for AtTimeZone {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        let value = args.first().ok_or_else(|| {
            DataFusionError::Plan("AT TIME ZONE takes a timestamp and a zone".into())
        })?;
        Ok(if zoned(value)? {
            DataType::Timestamp(TimeUnit::Microsecond, None)
        } else {
            SqlType::TimestampTz.arrow_type()
        })
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        Ok(Arc::new(Field::new(NAME, self.return_type(&types)?, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let zone = match args.args.get(1) {
            Some(ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(z)) | ScalarValue::Utf8View(Some(z)),
            )) => z.clone(),
            _ => {
                return Err(DataFusionError::Execution(
                    "AT TIME ZONE takes a constant time zone".into(),
                ));
            }
        };
        // A name in any case, or an offset as POSIX counts it (positive west of Greenwich),
        // as in Postgres.
        let not_recognized =
            || DataFusionError::Execution(format!("time zone \"{zone}\" not recognized"));
        let posix = super::time_zone::zone_named(&zone).ok_or_else(not_recognized)?;
        let tz: Tz = posix.parse().map_err(|_| not_recognized())?;
        let value = args
            .args
            .first()
            .ok_or_else(|| DataFusionError::Internal("AT TIME ZONE without a value".into()))?
            .to_array(rows)?;
        let out = if zoned(value.data_type())? {
            // The instant, then the wall clock of `zone` at it.
            let utc = cast(&value, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
            let utc = utc.as_primitive::<TimestampMicrosecondType>();
            let local: TimestampMicrosecondArray = utc
                .iter()
                .map(|us| {
                    let us = us?;
                    let at = chrono::DateTime::from_timestamp_micros(us)?.naive_utc();
                    let offset = tz.offset_from_utc_datetime(&at).fix().local_minus_utc();
                    Some(us + i64::from(offset) * 1_000_000)
                })
                .collect();
            Arc::new(local) as Arc<dyn Array>
        } else {
            // Arrow reads a timestamp without a zone cast to one as a time in that zone.
            let instant = cast(
                &value,
                &DataType::Timestamp(TimeUnit::Microsecond, Some(posix.as_str().into())),
            )?;
            cast(&instant, &SqlType::TimestampTz.arrow_type())?
        };
        Ok(ColumnarValue::Array(out))
    }
}
