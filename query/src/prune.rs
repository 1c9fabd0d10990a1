//! Time bounds from a query's filters, so that whole batches whose time
//! range cannot match are never read.

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
