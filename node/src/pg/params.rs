//! A bound statement's `$n` parameters as values the engine binds. Text
//! parameters are read by their declared type when it is a number or a
//! boolean and kept as text otherwise; the engine then casts each to the
//! type the plan infers for it (a timestamp compared with `time`, a
//! number sent as `'5'`). Binary parameters are read by their declared
//! type.

use arrow::datatypes::DataType;
use atoll_errors::ErrorKind;
use atoll_query::ScalarValue;
use chrono::{DateTime, FixedOffset, NaiveDateTime};
use pgwire::api::Type;
use pgwire::api::portal::Portal;
use pgwire::error::{PgWireError, PgWireResult};

use super::{Statement, pg_error};

/// The parameters of `portal`, whose statement declared `declared` types
/// (or none) and whose plan infers `inferred`.
pub fn decode(
    portal: &Portal<Statement>,
    declared: &[Option<Type>],
    inferred: &[Option<DataType>],
) -> PgWireResult<Vec<ScalarValue>> {
    (0..portal.parameter_len())
        .map(|i| {
            let declared = declared
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| *t != Type::UNKNOWN);
            let inferred = inferred.get(i).cloned().flatten();
            one(portal, i, declared, inferred)
                .map_err(|e| pg_error(ErrorKind::BadInput, format!("parameter ${}: {e}", i + 1)))
        })
        .collect()
}

fn one(
    portal: &Portal<Statement>,
    i: usize,
    declared: Option<Type>,
    inferred: Option<DataType>,
) -> Result<ScalarValue, String> {
    if portal.parameters.get(i).is_none_or(Option::is_none) {
        let t = inferred.unwrap_or(DataType::Utf8);
        return ScalarValue::try_from(&t).map_err(|e| e.to_string());
    }
    let binary = portal.parameter_format.is_binary(i);
    // Undeclared: the type Describe announced (what pgx then sends).
    let Some(t) = declared.or_else(|| inferred.as_ref().map(super::encode::pg_type)) else {
        if binary {
            return Err("a binary parameter needs its type declared".into());
        }
        return read::<String>(portal, i, &Type::TEXT).map(|s| ScalarValue::Utf8(Some(s)));
    };
    let number_or_bool = matches!(
        t,
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID | Type::FLOAT4 | Type::FLOAT8 | Type::BOOL
    );
    if !binary && !number_or_bool {
        // Text of any other type: the engine casts it to what the plan
        // needs, with DataFusion's parsing of timestamps and numbers.
        let text = std::str::from_utf8(portal.parameters[i].as_deref().unwrap_or_default())
            .map_err(|_| "text is not UTF-8".to_string())?;
        return Ok(ScalarValue::Utf8(Some(text.to_string())));
    }
    Ok(match t {
        Type::INT2 => ScalarValue::Int64(Some(read::<i16>(portal, i, &t)?.into())),
        Type::INT4 => ScalarValue::Int64(Some(read::<i32>(portal, i, &t)?.into())),
        Type::INT8 => ScalarValue::Int64(Some(read::<i64>(portal, i, &t)?)),
        Type::OID => ScalarValue::Int64(Some(read::<u32>(portal, i, &t)?.into())),
        Type::FLOAT4 => ScalarValue::Float64(Some(read::<f32>(portal, i, &t)?.into())),
        Type::FLOAT8 => ScalarValue::Float64(Some(read::<f64>(portal, i, &t)?)),
        Type::BOOL => ScalarValue::Boolean(Some(read::<bool>(portal, i, &t)?)),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            ScalarValue::Utf8(Some(read::<String>(portal, i, &t)?))
        }
        Type::TIMESTAMPTZ => {
            let at = read::<DateTime<FixedOffset>>(portal, i, &t)?;
            ScalarValue::TimestampMicrosecond(Some(at.timestamp_micros()), Some("UTC".into()))
        }
        Type::TIMESTAMP => {
            let at = read::<NaiveDateTime>(portal, i, &t)?;
            ScalarValue::TimestampMicrosecond(Some(at.and_utc().timestamp_micros()), None)
        }
        other => return Err(format!("binary parameters of type {other} are not read")),
    })
}

fn read<T>(portal: &Portal<Statement>, i: usize, t: &Type) -> Result<T, String>
where
    T: postgres_types::FromSqlOwned + for<'a> pgwire::types::FromSqlText<'a>,
{
    match portal.parameter::<T>(i, t) {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err("is null".into()),
        Err(PgWireError::FailedToParseParameter(e)) => Err(format!("is not a {t}: {e}")),
        Err(e) => Err(e.to_string()),
    }
}
