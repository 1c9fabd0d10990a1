//! Functions whose output size is one of their arguments, bounded.
//!
//! `repeat('x', 2000000000)`, `range(0, 3000000000)` and their kin
//! allocate whatever they are asked for, in one piece, before the query's
//! memory pool sees a byte (the pool counts operators' buffers, not a
//! function's result): one such call took a node to 3.9 GB. Each is
//! registered here in place of DataFusion's own, wrapped so that it first
//! works out, from its arguments alone, how many elements and bytes it
//! would make for the whole batch, and refuses a batch over the node's
//! `--max-function-output` with an error naming the function and the
//! limit. Everything else is DataFusion's function unchanged. Literal
//! calls are caught while planning (DataFusion folds constants through the
//! same function).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, FieldRef, IntervalMonthDayNano, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};

/// How the output of a bounded function grows with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `range(start, stop[, step])`, `generate_series` (one more).
    Series { inclusive: bool },
    /// `array_repeat(element, count)`.
    ArrayRepeat,
    /// `array_resize(array, size[, value])`.
    ArrayResize,
    /// `repeat(text, count)`.
    Repeat,
    /// `lpad`/`rpad(text, length[, fill])`.
    Pad,
    /// `replace(text, from, to)`.
    Replace,
    /// `regexp_replace(text, pattern, replacement[, flags])`.
    RegexpReplace,
}

const BOUNDED: &[(&str, Growth)] = &[
    ("range", Growth::Series { inclusive: false }),
    ("generate_series", Growth::Series { inclusive: true }),
    ("array_repeat", Growth::ArrayRepeat),
    ("array_resize", Growth::ArrayResize),
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::RegexpReplace),
];

/// Bytes an element of a list counts for, when a limit in bytes is also
/// given as elements: 256 MiB is 16M elements.
const BYTES_PER_ELEMENT: usize = 16;

/// Replaces each bounded function of `state` by its bounded form.
pub fn register(state: &mut SessionState, max_bytes: usize) -> Result<()> {
    for (name, growth) in BOUNDED {
        let Some(inner) = state.scalar_functions().get(*name).cloned() else {
            continue;
        };
        let bounded = Bounded {
            inner,
            growth: *growth,
            max_bytes,
        };
        state.register_udf(Arc::new(ScalarUDF::new_from_impl(bounded)))?;
    }
    Ok(())
}

#[derive(Debug)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    growth: Growth,
    max_bytes: usize,
}

impl PartialEq for Bounded {
    fn eq(&self, other: &Self) -> bool {
        self.inner.name() == other.inner.name() && self.max_bytes == other.max_bytes
    }
}

impl Eq for Bounded {}

impl Hash for Bounded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.name().hash(state);
        self.max_bytes.hash(state);
    }
}

impl Bounded {
    fn max_elements(&self) -> u128 {
        (self.max_bytes / BYTES_PER_ELEMENT) as u128
    }

    /// Refuses a batch whose output would be over the limit.
    fn check(&self, args: &ScalarFunctionArgs) -> Result<()> {
        let rows = args.number_rows.max(1);
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<_>>()?;
        let (elements, bytes) = match self.growth {
            Growth::Series { inclusive } => (series(&arrays, inclusive)?, 0),
            Growth::ArrayRepeat => repeated(&arrays)?,
            Growth::ArrayResize => (sum(&ints(arrays.get(1))?), 0),
            Growth::Repeat => (0, times_text(&arrays)?),
            Growth::Pad => (0, padded(&arrays)?),
            Growth::Replace => (0, replaced(&arrays, false)?),
            Growth::RegexpReplace => (0, replaced(&arrays, true)?),
        };
        let name = self.inner.name();
        if elements > self.max_elements() {
            return Err(DataFusionError::Execution(format!(
                "{name} would make {elements} elements, over this node's limit of {} (--max-function-output {} bytes, {BYTES_PER_ELEMENT} bytes an element)",
                self.max_elements(),
                self.max_bytes
            )));
        }
        if bytes > self.max_bytes as u128 {
            return Err(DataFusionError::Execution(format!(
                "{name} would make {bytes} bytes, over this node's limit of {} (--max-function-output)",
                self.max_bytes
            )));
        }
        Ok(())
    }
}

/// An integer argument as Int64 values (nulls as 0).
fn ints(array: Option<&ArrayRef>) -> Result<Vec<i128>> {
    let Some(array) = array else {
        return Ok(Vec::new());
    };
    let cast = arrow::compute::cast(array, &DataType::Int64)?;
    let values: &Int64Array = cast.as_primitive();
    Ok((0..values.len())
        .map(|i| {
            if values.is_null(i) {
                0
            } else {
                values.value(i) as i128
            }
        })
        .collect())
}

fn sum(values: &[i128]) -> u128 {
    values.iter().map(|v| (*v).max(0) as u128).sum()
}

/// A string argument's byte lengths, and whether all of it is ASCII.
fn texts(array: Option<&ArrayRef>) -> Result<Vec<Option<String>>> {
    let Some(array) = array else {
        return Ok(Vec::new());
    };
    let cast = arrow::compute::cast(array, &DataType::Utf8)?;
    let s = cast.as_string::<i32>();
    Ok((0..s.len())
        .map(|i| (!s.is_null(i)).then(|| s.value(i).to_string()))
        .collect())
}

fn len_of(v: &Option<String>) -> u128 {
    v.as_ref().map_or(0, |s| s.len() as u128)
}

/// Elements of `range`/`generate_series` rows: (stop - start) / step.
fn series(arrays: &[ArrayRef], inclusive: bool) -> Result<u128> {
    if arrays.len() == 1 {
        // `range(stop)`: 0 .. stop.
        return Ok(sum(&ints(arrays.first())?) + u128::from(inclusive) * arrays[0].len() as u128);
    }
    let (starts, stops) = (nanos_or_ints(&arrays[0])?, nanos_or_ints(&arrays[1])?);
    let steps = match arrays.get(2) {
        None => vec![1; starts.len()],
        Some(step) if matches!(step.data_type(), DataType::Interval(_)) => interval_nanos(step)?,
        Some(step) => ints(Some(step))?,
    };
    let mut total = 0u128;
    for ((start, stop), step) in starts.iter().zip(&stops).zip(&steps) {
        if *step == 0 {
            continue; // DataFusion refuses a zero step itself
        }
        let span = (stop - start) / step;
        if span >= 0 {
            total += span as u128 + u128::from(inclusive);
        }
    }
    Ok(total)
}

/// Integers as they are; dates and timestamps as nanoseconds.
fn nanos_or_ints(array: &ArrayRef) -> Result<Vec<i128>> {
    let per_unit: i128 = match array.data_type() {
        DataType::Date32 => 86_400 * 1_000_000_000,
        DataType::Date64 => 1_000_000,
        DataType::Timestamp(TimeUnit::Second, _) => 1_000_000_000,
        DataType::Timestamp(TimeUnit::Millisecond, _) => 1_000_000,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000,
        _ => 1,
    };
    Ok(ints(Some(array))?
        .into_iter()
        .map(|v| v * per_unit)
        .collect())
}

/// An interval step in nanoseconds (a month counted as 28 days: the most
/// steps a span can hold).
fn interval_nanos(array: &ArrayRef) -> Result<Vec<i128>> {
    let cast = arrow::compute::cast(
        array,
        &DataType::Interval(arrow::datatypes::IntervalUnit::MonthDayNano),
    )?;
    let values = cast.as_primitive::<arrow::datatypes::IntervalMonthDayNanoType>();
    Ok((0..values.len())
        .map(|i| {
            let IntervalMonthDayNano {
                months,
                days,
                nanoseconds,
            } = values.value(i);
            const DAY: i128 = 86_400 * 1_000_000_000;
            i128::from(months) * 28 * DAY + i128::from(days) * DAY + i128::from(nanoseconds)
        })
        .collect())
}

/// `array_repeat(element, count)`: count elements per row (times the
/// element's own length when it is a list), and count times its bytes.
fn repeated(arrays: &[ArrayRef]) -> Result<(u128, u128)> {
    let counts = ints(arrays.get(1))?;
    let element = &arrays[0];
    let mut elements = 0u128;
    let mut bytes = 0u128;
    for (i, count) in counts.iter().enumerate() {
        let count = (*count).max(0) as u128;
        let (width, size) = match element.data_type() {
            DataType::List(_) => {
                let l = element.as_list::<i32>();
                (l.value_length(i).max(0) as u128, 0)
            }
            DataType::LargeList(_) => {
                let l = element.as_list::<i64>();
                (l.value_length(i).max(0) as u128, 0)
            }
            DataType::Utf8 => (1, element.as_string::<i32>().value_length(i) as u128),
            DataType::LargeUtf8 => (1, element.as_string::<i64>().value_length(i) as u128),
            _ => (1, 0),
        };
        elements += count * width.max(1);
        bytes += count * size;
    }
    Ok((elements, bytes))
}

/// `repeat(text, count)`: count times the text's bytes.
fn times_text(arrays: &[ArrayRef]) -> Result<u128> {
    let (text, counts) = (texts(arrays.first())?, ints(arrays.get(1))?);
    Ok(text
        .iter()
        .zip(&counts)
        .map(|(t, n)| len_of(t) * (*n).max(0) as u128)
        .sum())
}

/// `lpad`/`rpad(text, length[, fill])`: length characters of up to 4 bytes
/// (1 when the fill is ASCII).
fn padded(arrays: &[ArrayRef]) -> Result<u128> {
    let lengths = ints(arrays.get(1))?;
    let fills = texts(arrays.get(2))?;
    Ok(lengths
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let ascii = fills
                .get(i)
                .is_none_or(|f| f.as_ref().is_none_or(|f| f.is_ascii()));
            (*n).max(0) as u128 * if ascii { 1 } else { 4 }
        })
        .sum())
}

/// `replace(text, from, to)` and `regexp_replace`: at most one
/// replacement per `from` (per character for an empty one, or a pattern),
/// each at most the replacement's length (plus the text, for each group a
/// regex replacement refers to).
fn replaced(arrays: &[ArrayRef], regex: bool) -> Result<u128> {
    let text = texts(arrays.first())?;
    let from = texts(arrays.get(1))?;
    let to = texts(arrays.get(2))?;
    let mut total = 0u128;
    for (i, t) in text.iter().enumerate() {
        let len = len_of(t);
        let with = len_of(to.get(i).unwrap_or(&None));
        let pattern = len_of(from.get(i).unwrap_or(&None));
        let at_most = if regex || pattern == 0 {
            len + 1
        } else {
            len / pattern
        };
        let refs = to
            .get(i)
            .and_then(Option::as_ref)
            .map_or(0, |r| r.matches(['\\', '$']).count() as u128);
        let each = with + if regex { refs * len } else { 0 };
        if !regex && with <= pattern && pattern > 0 {
            total += len;
        } else {
            total += len + at_most * each;
        }
    }
    Ok(total)
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.check(&args)?;
        self.inner.invoke_with_args(args)
    }

    fn with_updated_config(&self, _config: &ConfigOptions) -> Option<ScalarUDF> {
        None
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.inner().coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}
