//! What a live view asks for: a table, a filter (a SQL condition on each
//! event), group columns, aggregates that can be updated incrementally,
//! and the chart's bucket. The same spec, with the partitions an owner is
//! to follow, is what the coordinator sends each owner.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::QueryError;

/// Aggregates kept up to date as events arrive; others (averages,
/// percentiles, distinct counts) are refreshed by querying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LiveFn {
    Count,
    Sum,
    Min,
    Max,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveAgg {
    #[serde(rename = "fn")]
    pub func: LiveFn,
    #[serde(default)]
    pub column: Option<String>,
}

impl LiveAgg {
    /// Its value from a partial state.
    pub fn value(&self, s: &super::gathered::AggState) -> Option<f64> {
        match self.func {
            LiveFn::Count => Some(s.n),
            LiveFn::Sum => Some(s.sum),
            LiveFn::Min => s.min,
            LiveFn::Max => s.max,
        }
    }
}

pub const MAX_GROUPS: usize = 5;
pub const MAX_AGGREGATES: usize = 10;
pub const MAX_FILTER_BYTES: usize = 8 * 1024;
const MAX_BUCKET_SECONDS: i64 = 7 * 86_400;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveSpec {
    pub table: String,
    /// A SQL condition on each event (`status >= 500 AND region = 'eu'`).
    #[serde(default)]
    pub filter: Option<String>,
    #[serde(default)]
    pub group_by: Vec<String>,
    #[serde(default = "count_only")]
    pub aggregates: Vec<LiveAgg>,
    /// The chart's bucket (aligned on the epoch, as `date_bin`).
    pub bucket_seconds: i64,
    /// Set by the coordinator: the partitions an owner follows.
    #[serde(default)]
    pub partitions: BTreeSet<u32>,
}

fn count_only() -> Vec<LiveAgg> {
    vec![LiveAgg {
        func: LiveFn::Count,
        column: None,
    }]
}

impl LiveSpec {
    /// The spec's own limits (the filter is checked against the table by
    /// compiling it).
    pub fn check(&self) -> Result<(), QueryError> {
        atoll_store::validate_table_name(&self.table)
            .map_err(|e| QueryError::BadRequest(e.to_string()))?;
        let bad = |m: String| Err(QueryError::BadRequest(m));
        if !(1..=MAX_BUCKET_SECONDS).contains(&self.bucket_seconds) {
            return bad(format!(
                "bucket_seconds is 1 to {MAX_BUCKET_SECONDS}, not {}",
                self.bucket_seconds
            ));
        }
        if self.group_by.len() > MAX_GROUPS {
            return bad(format!(
                "a live view groups by at most {MAX_GROUPS} columns"
            ));
        }
        if self.aggregates.is_empty() || self.aggregates.len() > MAX_AGGREGATES {
            return bad(format!("a live view has 1 to {MAX_AGGREGATES} aggregates"));
        }
        if let Some(a) = self
            .aggregates
            .iter()
            .find(|a| a.func != LiveFn::Count && a.column.is_none())
        {
            return bad(format!("{:?} needs a column", a.func).to_lowercase());
        }
        if self
            .filter
            .as_ref()
            .is_some_and(|f| f.len() > MAX_FILTER_BYTES)
        {
            return bad(format!(
                "a live filter has at most {MAX_FILTER_BYTES} bytes"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Result<LiveSpec, String> {
        let s: LiveSpec = serde_json::from_str(text).map_err(|e| e.to_string())?;
        s.check().map_err(|e| e.to_string())?;
        Ok(s)
    }

    #[test]
    fn a_spec_says_what_is_wrong() {
        let ok = spec(r#"{"table": "events", "bucket_seconds": 10}"#).unwrap();
        assert_eq!(ok.aggregates, count_only());
        for (text, says) in [
            (
                r#"{"table": "events", "bucket_seconds": 0}"#,
                "bucket_seconds",
            ),
            (r#"{"table": "../x", "bucket_seconds": 10}"#, "table name"),
            (
                r#"{"table": "e", "bucket_seconds": 10, "aggregates": [{"fn": "sum"}]}"#,
                "needs a column",
            ),
            (
                r#"{"table": "e", "bucket_seconds": 10, "aggregates": [{"fn": "p99", "column": "x"}]}"#,
                "unknown variant",
            ),
            (
                r#"{"table": "e", "bucket_seconds": 10, "group_by": ["a","b","c","d","e","f"]}"#,
                "at most 5",
            ),
            (
                r#"{"table": "e", "bucket_seconds": 10, "sql": "x"}"#,
                "unknown field",
            ),
        ] {
            let e = spec(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
