//! What a query's filters rule out before anything is read: batches whose
//! time range cannot match, and for a table with a partition key, every
//! partition but those its `key = literal` (or `IN`) filter hashes to.

use atoll_store::ColumnType;
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use datafusion::scalar::ScalarValue;

/// A half-open `[from, to)` range of microseconds; `None` is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl TimeRange {
    fn lower(&mut self, from: i64) {
        self.from = Some(self.from.map_or(from, |f| f.max(from)));
    }

    fn upper(&mut self, to: i64) {
        self.to = Some(self.to.map_or(to, |t| t.min(to)));
    }
}

/// Intersects the bounds that conjuncts of the form `time <op> literal`
/// (or `BETWEEN`) put on `column`; other filters are ignored, which is
/// safe because DataFusion still applies every filter.
pub fn time_range(filters: &[Expr], column: &str) -> TimeRange {
    let mut range = TimeRange::default();
    for f in filters {
        collect(f, column, &mut range);
    }
    range
}

fn collect(expr: &Expr, column: &str, range: &mut TimeRange) {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            collect(left, column, range);
            collect(right, column, range);
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, value) = match (is_column(left, column), is_column(right, column)) {
                (true, false) => (*op, micros(right)),
                (false, true) => (op.swap().unwrap_or(*op), micros(left)),
                _ => return,
            };
            let Some(v) = value else { return };
            match op {
                Operator::Gt | Operator::GtEq => range.lower(if op == Operator::Gt {
                    v.saturating_add(1)
                } else {
                    v
                }),
                Operator::Lt => range.upper(v),
                Operator::LtEq => range.upper(v.saturating_add(1)),
                Operator::Eq => {
                    range.lower(v);
                    range.upper(v.saturating_add(1));
                }
                _ => {}
            }
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_column(expr, column) => {
            if let Some(lo) = micros(low) {
                range.lower(lo);
            }
            if let Some(hi) = micros(high) {
                range.upper(hi.saturating_add(1));
            }
        }
        _ => {}
    }
}

/// The partitions a filter on the partition key `column` (of type `ty`)
/// confines a query to, or None when no filter does. Values hash as ingest
/// hashes them (their text); only literals of the column's own type count,
/// so that a literal that would be cast never picks the wrong partition.
pub fn key_partitions(
    filters: &[Expr],
    column: &str,
    ty: ColumnType,
    partitions: u32,
) -> Option<Vec<u32>> {
    let values = filters.iter().find_map(|f| key_values(f, column))?;
    let keys = values
        .iter()
        .map(|v| key_text(v, ty))
        .collect::<Option<Vec<String>>>()?;
    let mut out: Vec<u32> = keys
        .iter()
        .map(|k| atoll_ring::partition_for_key(k.as_bytes(), partitions))
        .collect();
    out.sort_unstable();
    out.dedup();
    Some(out)
}

fn key_values<'a>(expr: &'a Expr, column: &str) -> Option<Vec<&'a ScalarValue>> {
    let plain_column = |e: &Expr| matches!(e, Expr::Column(c) if c.name == column);
    let literal = |e: &'a Expr| match e {
        Expr::Literal(v, _) => Some(v),
        _ => None,
    };
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => key_values(left, column).or_else(|| key_values(right, column)),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => match (plain_column(left), plain_column(right)) {
            (true, false) => Some(vec![literal(right)?]),
            (false, true) => Some(vec![literal(left)?]),
            _ => None,
        },
        Expr::InList(InList {
            expr,
            list,
            negated: false,
        }) if plain_column(expr) => list.iter().map(literal).collect(),
        _ => None,
    }
}

fn key_text(value: &ScalarValue, ty: ColumnType) -> Option<String> {
    match (value, ty) {
        (
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
            ColumnType::Utf8,
        ) => Some(s.clone()),
        (ScalarValue::Int64(Some(i)), ColumnType::Int64) => Some(i.to_string()),
        (ScalarValue::Boolean(Some(b)), ColumnType::Boolean) => Some(b.to_string()),
        _ => None,
    }
}

fn is_column(expr: &Expr, column: &str) -> bool {
    match expr {
        Expr::Column(c) => c.name == column,
        Expr::Cast(c) => is_column(&c.expr, column),
        _ => false,
    }
}

/// A timestamp literal as microseconds, rounded outward to whole µs is not
/// needed: sub-µs parts only appear with nanosecond literals, and batch
/// bounds are in µs, so flooring keeps every matching batch.
fn micros(expr: &Expr) -> Option<i64> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    match value {
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMicrosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(v.div_euclid(1_000)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    #[test]
    fn key_filters_pick_the_partitions_ingest_hashes_to() {
        let at = |k: &str| atoll_ring::partition_for_key(k.as_bytes(), 64);
        let eq = col("user").eq(lit("u1"));
        assert_eq!(
            key_partitions(&[eq], "user", ColumnType::Utf8, 64),
            Some(vec![at("u1")])
        );
        let flipped = lit("u2").eq(col("user"));
        let other = col("time").gt(lit(5i64));
        assert_eq!(
            key_partitions(&[other.clone(), flipped], "user", ColumnType::Utf8, 64),
            Some(vec![at("u2")])
        );
        let mut both = vec![at("a"), at("b")];
        both.sort_unstable();
        both.dedup();
        let list = col("user").in_list(vec![lit("a"), lit("b")], false);
        assert_eq!(
            key_partitions(&[list], "user", ColumnType::Utf8, 64),
            Some(both)
        );
        let int = col("shard").eq(lit(7i64));
        assert_eq!(
            key_partitions(&[int], "shard", ColumnType::Int64, 64),
            Some(vec![at("7")])
        );
        let mismatched = col("shard").eq(lit("7"));
        assert_eq!(
            key_partitions(&[mismatched], "shard", ColumnType::Int64, 64),
            None
        );
        let negated = col("user").in_list(vec![lit("a")], true);
        assert_eq!(
            key_partitions(&[negated, other], "user", ColumnType::Utf8, 64),
            None
        );
        let or = col("user").eq(lit("a")).or(col("user").eq(lit("b")));
        assert_eq!(key_partitions(&[or], "user", ColumnType::Utf8, 64), None);
    }

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(
            Some(v),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn bounds_from_comparisons() {
        let r = time_range(&[col("time").gt_eq(ts(10)), col("time").lt(ts(20))], "time");
        assert_eq!(
            r,
            TimeRange {
                from: Some(10),
                to: Some(20)
            }
        );
        let r = time_range(
            &[col("time").gt(ts(10)).and(col("time").lt_eq(ts(20)))],
            "time",
        );
        assert_eq!(
            r,
            TimeRange {
                from: Some(11),
                to: Some(21)
            }
        );
        let r = time_range(&[ts(10).lt(col("time"))], "time");
        assert_eq!(
            r,
            TimeRange {
                from: Some(11),
                to: None
            }
        );
        let r = time_range(&[col("time").between(ts(5), ts(7))], "time");
        assert_eq!(
            r,
            TimeRange {
                from: Some(5),
                to: Some(8)
            }
        );
        let nanos = lit(ScalarValue::TimestampNanosecond(Some(1_500), None));
        assert_eq!(
            time_range(&[col("time").eq(nanos)], "time"),
            TimeRange {
                from: Some(1),
                to: Some(2)
            }
        );
    }

    #[test]
    fn other_filters_leave_the_range_open() {
        let r = time_range(
            &[
                col("x").gt(ts(10)),
                col("time").gt(ts(1)).or(col("time").lt(ts(0))),
            ],
            "time",
        );
        assert_eq!(r, TimeRange::default());
        assert_eq!(
            time_range(&[col("time").not_eq(ts(3))], "time"),
            TimeRange::default()
        );
    }
}
