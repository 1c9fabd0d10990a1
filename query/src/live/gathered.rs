//! What a live subscription gathers between two messages: partial
//! aggregates per (time bucket, group) and the newest matching rows. An
//! owner's gatherings and a coordinator's merge the same way, so that no
//! count is lost while a slow reader is not reading: they add up, and only
//! the newest rows are kept.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Rows kept (the newest).
pub const MAX_SAMPLES: usize = 50;
/// (bucket, group) keys kept; more set `overflow` and are not counted.
pub const MAX_KEYS: usize = 10_000;

/// One aggregate's partial state: weight of the non-null inputs (of every
/// row, for count), their weighted sum, their min and max.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct AggState {
    pub n: f64,
    pub sum: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl AggState {
    /// Adds a value (a NaN or an infinity is left out: JSON cannot carry
    /// it, and it would spoil every sum after it).
    pub fn add(&mut self, value: f64, weight: f64) {
        if !value.is_finite() || !weight.is_finite() {
            return;
        }
        self.n += weight;
        self.sum += value * weight;
        self.min = Some(self.min.map_or(value, |m| m.min(value)));
        self.max = Some(self.max.map_or(value, |m| m.max(value)));
    }

    pub fn merge(&mut self, other: &AggState) {
        self.n += other.n;
        self.sum += other.sum;
        self.min = match (self.min, other.min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// A time bucket (its start, seconds since the epoch) and group values.
pub type Key = (i64, Vec<Option<String>>);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gathered {
    /// One entry per (bucket, group), with one state per aggregate.
    #[serde(with = "entries")]
    pub buckets: HashMap<Key, Vec<AggState>>,
    /// Matching rows as objects, oldest first.
    pub samples: Vec<Map<String, Value>>,
    /// Rows were dropped on the way (a queue was full): the counts are low.
    #[serde(default)]
    pub lost: bool,
    /// Groups past `MAX_KEYS` were not counted.
    #[serde(default)]
    pub overflow: bool,
}

impl Gathered {
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty() && self.samples.is_empty() && !self.lost && !self.overflow
    }

    /// The states of `key`, made (with `aggs` empty states) if there is
    /// room; None past `MAX_KEYS`.
    pub fn entry(&mut self, key: Key, aggs: usize) -> Option<&mut Vec<AggState>> {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_KEYS {
            self.overflow = true;
            return None;
        }
        Some(
            self.buckets
                .entry(key)
                .or_insert_with(|| vec![AggState::default(); aggs]),
        )
    }

    /// Adds rows, keeping the newest `MAX_SAMPLES`.
    pub fn add_samples(&mut self, rows: impl IntoIterator<Item = Map<String, Value>>) {
        self.samples.extend(rows);
        if self.samples.len() > MAX_SAMPLES {
            self.samples.drain(..self.samples.len() - MAX_SAMPLES);
        }
    }

    pub fn merge(&mut self, other: Gathered) {
        for (key, states) in other.buckets {
            let n = states.len();
            if let Some(mine) = self.entry(key, n) {
                for (m, o) in mine.iter_mut().zip(&states) {
                    m.merge(o);
                }
            }
        }
        let mut samples = std::mem::take(&mut self.samples);
        samples.extend(other.samples);
        // Rows from several owners: newest by time, then as they came.
        samples.sort_by(|a, b| time_of(a).cmp(time_of(b)));
        self.add_samples(samples);
        self.lost |= other.lost;
        self.overflow |= other.overflow;
    }
}

fn time_of(row: &Map<String, Value>) -> &str {
    row.get("time").and_then(Value::as_str).unwrap_or("")
}

/// The buckets as a list (JSON object keys are strings only).
mod entries {
    use super::{AggState, Key};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::HashMap;

    #[derive(Serialize, Deserialize)]
    struct Entry {
        t: i64,
        group: Vec<Option<String>>,
        aggs: Vec<AggState>,
    }

    pub fn serialize<S: Serializer>(
        map: &HashMap<Key, Vec<AggState>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let list: Vec<Entry> = map
            .iter()
            .map(|((t, group), aggs)| Entry {
                t: *t,
                group: group.clone(),
                aggs: aggs.clone(),
            })
            .collect();
        list.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<HashMap<Key, Vec<AggState>>, D::Error> {
        let list = Vec::<Entry>::deserialize(d)?;
        Ok(list.into_iter().map(|e| ((e.t, e.group), e.aggs)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(t: i64, group: &str, v: f64) -> Gathered {
        let mut g = Gathered::default();
        g.entry((t, vec![Some(group.into())]), 1)
            .unwrap()
            .iter_mut()
            .for_each(|s| s.add(v, 1.0));
        g
    }

    #[test]
    fn merging_adds_counts_and_keeps_extremes() {
        let mut a = one(10, "x", 5.0);
        a.merge(one(10, "x", 7.0));
        a.merge(one(20, "x", 1.0));
        let s = a.buckets[&(10, vec![Some("x".into())])][0];
        assert_eq!(
            (s.n, s.sum, s.min, s.max),
            (2.0, 12.0, Some(5.0), Some(7.0))
        );
        assert_eq!(a.buckets.len(), 2);
        let text = serde_json::to_vec(&a).unwrap();
        assert_eq!(serde_json::from_slice::<Gathered>(&text).unwrap(), a);
    }

    #[test]
    fn keys_and_samples_are_bounded() {
        let mut g = Gathered::default();
        for t in 0..(MAX_KEYS as i64 + 5) {
            g.merge(one(t, "x", 1.0));
        }
        assert_eq!(g.buckets.len(), MAX_KEYS);
        assert!(g.overflow);
        let rows = (0..MAX_SAMPLES + 7).map(|i| {
            let mut m = Map::new();
            m.insert(
                "time".into(),
                Value::String(format!("2026-01-01T00:00:{i:02}Z")),
            );
            m
        });
        g.add_samples(rows);
        assert_eq!(g.samples.len(), MAX_SAMPLES);
        assert_eq!(time_of(&g.samples[MAX_SAMPLES - 1]), "2026-01-01T00:00:56Z");
    }
}
