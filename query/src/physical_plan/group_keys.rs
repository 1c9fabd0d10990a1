//! Group indices for an aggregate grouped by one column: each key's group,
//! numbered in the order keys were first seen, found without DataFusion's
//! general hash table (why: `physical_plan::one_key_aggregate`).
//!
//! Integer keys close together (statuses, codes, hours) are found by
//! array index. Strings of up to 16 bytes (service, region and endpoint
//! names, user ids) are hashed and compared as one 128-bit integer, the
//! bytes themselves, instead of through an offset into a string buffer;
//! longer strings are hashed as bytes.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{DataFusionError, Result};

/// Integer keys found by array index: this many consecutive values.
pub const DENSE: usize = 1 << 16;

/// Marks a slot of the array whose key has no group yet.
const NO_GROUP: u32 = u32::MAX;

/// What an aggregate of one key needs of its key's groups.
pub trait GroupKeys: Send {
    /// Every row's group, into `out` (as many as `keys` has rows).
    fn assign(&mut self, keys: &ArrayRef, out: &mut Vec<usize>) -> Result<()>;
    fn groups(&self) -> usize;
    /// Memory held, for the query's pool.
    fn bytes(&self) -> usize;
    /// The key of every group, in group order, and a fresh start.
    fn take(&mut self) -> Result<ArrayRef>;
    /// The rows of each group among `keys` (new keys get groups), for an
    /// aggregate of `count(*)`s only: where it can, without a group index
    /// a row (`scratch` holds them otherwise).
    fn count(&mut self, keys: &ArrayRef, scratch: &mut Vec<usize>) -> Result<GroupCounts> {
        self.assign(keys, scratch)?;
        Ok(histogram(scratch, self.groups()))
    }
}

/// Groups present in a batch, and the rows of each.
pub type GroupCounts = (Vec<usize>, Vec<i64>);

/// Interleaved counters of a batch's rows per group: consecutive rows of
/// one group add to different counters instead of waiting on one.
const LANES: usize = 4;

/// Rows per group, from each row's group: counted in an array when there
/// are few groups, else one row at a time.
pub fn histogram(indices: &[usize], groups: usize) -> GroupCounts {
    if groups * LANES > indices.len().max(1024) {
        return (indices.to_vec(), vec![1; indices.len()]);
    }
    present(lane_counts(indices.iter().copied(), groups))
}

/// The groups counted at least once, and their counts.
fn present(counts: Vec<u32>) -> GroupCounts {
    counts
        .into_iter()
        .enumerate()
        .filter(|(_, n)| *n > 0)
        .map(|(group, n)| (group, n as i64))
        .unzip()
}

/// How many of `slots` fall on each of `0..len`.
fn lane_counts(slots: impl Iterator<Item = usize>, len: usize) -> Vec<u32> {
    let mut lanes = vec![0u32; len * LANES];
    for (i, slot) in slots.enumerate() {
        lanes[slot * LANES + i % LANES] += 1;
    }
    lanes.chunks_exact(LANES).map(|l| l.iter().sum()).collect()
}

/// `key`'s slot in the array of `base`, and whether it is a group of a
/// key near the base, without a branch.
#[inline(always)]
fn probe(base: i64, table: &[u32; DENSE], key: i64) -> (usize, bool) {
    let offset = key.wrapping_sub(base) as u64;
    let slot = table[(offset as usize) & (DENSE - 1)];
    (slot as usize, (offset < DENSE as u64) & (slot != NO_GROUP))
}

/// The key index for a key of type `t`, if there is one.
pub fn for_type(t: &DataType) -> Option<Box<dyn GroupKeys>> {
    match t {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => Some(Box::new(TypedInts {
            keys: IntKeys::default(),
            key_type: t.clone(),
        })),
        DataType::Utf8 => Some(Box::new(StrKeys::default())),
        _ => None,
    }
}

/// Integer keys of one type, found as `i64`s.
struct TypedInts {
    keys: IntKeys,
    key_type: DataType,
}

impl GroupKeys for TypedInts {
    fn assign(&mut self, keys: &ArrayRef, out: &mut Vec<usize>) -> Result<()> {
        let keys = cast(keys, &DataType::Int64)?;
        self.keys.assign_ints(keys.as_primitive::<Int64Type>(), out);
        Ok(())
    }

    fn groups(&self) -> usize {
        self.keys.groups()
    }

    fn bytes(&self) -> usize {
        self.keys.bytes()
    }

    fn take(&mut self) -> Result<ArrayRef> {
        let keys: ArrayRef = Arc::new(self.keys.take_ints());
        Ok(cast(&keys, &self.key_type)?)
    }

    /// A batch whose keys all have groups near the base is counted in one
    /// pass, group by group, without a group index a row.
    fn count(&mut self, keys: &ArrayRef, scratch: &mut Vec<usize>) -> Result<GroupCounts> {
        let ints = cast(keys, &DataType::Int64)?;
        let ints = ints.as_primitive::<Int64Type>();
        if ints.null_count() == 0
            && let Some(counts) = self.keys.count_known(ints.values())
        {
            return Ok(present(counts));
        }
        self.keys.assign_ints(ints, scratch);
        Ok(histogram(scratch, self.keys.groups()))
    }
}

/// Integer keys: those within [`DENSE`] of the first key by array index,
/// the others (and null) by a hash map.
#[derive(Default)]
pub struct IntKeys {
    /// The key of `table[0]`: set by the first non-null key.
    base: Option<i64>,
    /// Allocated with the base (fixed length: indexing needs no bounds
    /// check once the offset is below [`DENSE`]).
    table: Option<Box<[u32; DENSE]>>,
    far: HashMap<i64, u32>,
    null: Option<u32>,
    /// Every group's key (None: the null group), by group index.
    keys: Vec<Option<i64>>,
}

impl IntKeys {
    fn groups(&self) -> usize {
        self.keys.len()
    }

    fn bytes(&self) -> usize {
        self.table.as_ref().map_or(0, |_| DENSE * 4)
            + self.far.capacity() * 16
            + self.keys.capacity() * std::mem::size_of::<Option<i64>>()
    }

    /// The array and its base, once the first key set them.
    fn dense(&self) -> Option<(i64, &[u32; DENSE])> {
        Some((self.base?, self.table.as_deref()?))
    }

    /// The group of a key seen before near the base: the one lookup most
    /// rows take.
    #[inline(always)]
    fn known_group(&self, key: i64) -> Option<usize> {
        let (base, table) = self.dense()?;
        let (slot, known) = probe(base, table, key);
        known.then_some(slot)
    }

    /// Every row's group into `out`, without a branch a row, when all the
    /// keys are known and near the base (the common batch); false (and
    /// `out` to be cleared) when some is not.
    fn all_known(&self, values: &[i64], out: &mut Vec<usize>) -> bool {
        let Some((base, table)) = self.dense() else {
            return false;
        };
        let mut missing = false;
        out.extend(values.iter().map(|&key| {
            let (slot, known) = probe(base, table, key);
            missing |= !known;
            slot
        }));
        !missing
    }

    /// Rows per group when every key has a group near the base (None when
    /// some has not, or there are too many groups to count in an array):
    /// one pass, no branch a row.
    fn count_known(&self, values: &[i64]) -> Option<Vec<u32>> {
        let (base, table) = self.dense()?;
        if self.keys.len() * LANES > values.len().max(1024) {
            return None;
        }
        let mut missing = false;
        // An unknown key counts on group 0; the counts are then dropped.
        let slots = values.iter().map(|&key| {
            let (slot, known) = probe(base, table, key);
            missing |= !known;
            if known { slot } else { 0 }
        });
        let counts = lane_counts(slots, self.keys.len());
        (!missing).then_some(counts)
    }

    #[inline(never)]
    fn group_of(&mut self, key: i64) -> usize {
        let base = *self
            .base
            .get_or_insert(key.saturating_sub(DENSE as i64 / 2));
        let offset = key.wrapping_sub(base) as u64;
        if offset < DENSE as u64 {
            let table = self
                .table
                .get_or_insert_with(|| vec![NO_GROUP; DENSE].try_into().expect("DENSE slots"));
            let slot = &mut table[offset as usize];
            if *slot == NO_GROUP {
                *slot = self.keys.len() as u32;
                self.keys.push(Some(key));
            }
            return *slot as usize;
        }
        let next = self.keys.len() as u32;
        let group = *self.far.entry(key).or_insert(next);
        if group == next {
            self.keys.push(Some(key));
        }
        group as usize
    }

    fn null_group(&mut self) -> usize {
        let next = self.keys.len() as u32;
        let group = *self.null.get_or_insert(next);
        if group == next {
            self.keys.push(None);
        }
        group as usize
    }

    /// Every row's group, into `out`.
    fn assign_ints(&mut self, keys: &Int64Array, out: &mut Vec<usize>) {
        out.clear();
        out.reserve(keys.len());
        if keys.null_count() == 0 {
            let values = keys.values();
            if self.all_known(values, out) {
                return;
            }
            out.clear();
        }
        for key in keys.iter() {
            out.push(match key {
                Some(key) => self.known_group(key).unwrap_or_else(|| self.group_of(key)),
                None => self.null_group(),
            });
        }
    }

    /// The keys of every group, and a fresh start.
    fn take_ints(&mut self) -> Int64Array {
        if let (Some(base), Some(table)) = (self.base.take(), self.table.as_mut()) {
            for key in self.keys.iter().flatten() {
                let offset = key.wrapping_sub(base) as u64;
                if offset < DENSE as u64 {
                    table[offset as usize] = NO_GROUP;
                }
            }
        }
        self.far.clear();
        self.null = None;
        Int64Array::from(std::mem::take(&mut self.keys))
    }
}

/// String keys. One of up to 16 bytes whose last byte is not 0 is its
/// bytes as a little-endian `u128` (zero padding cannot be confused with
/// its own bytes then); other strings are keyed by their bytes.
#[derive(Default)]
pub struct StrKeys {
    short: hashbrown::HashMap<u128, u32>,
    long: hashbrown::HashMap<Box<[u8]>, u32>,
    /// Bytes of the long keys (held in the map besides the key column).
    long_bytes: usize,
    null: Option<u32>,
    /// Every group's key, by group index, as a string array's parts.
    offsets: Vec<i32>,
    bytes: Vec<u8>,
}

/// The low `len` bytes of a `u128`.
fn low_bytes(len: usize) -> u128 {
    if len >= 16 {
        u128::MAX
    } else {
        (1u128 << (len * 8)) - 1
    }
}

impl StrKeys {
    fn new_group(&mut self, key: &[u8]) -> u32 {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.bytes.extend_from_slice(key);
        self.offsets.push(self.bytes.len() as i32);
        (self.offsets.len() - 2) as u32
    }

    /// The key of `values[start..end]`, when it has one as an integer.
    #[inline(always)]
    fn short_key(values: &[u8], start: usize, end: usize) -> Option<u128> {
        let len = end - start;
        if len == 0 || len > 16 || values[end - 1] == 0 {
            return None;
        }
        Some(match values.get(start..start + 16) {
            Some(wide) => u128::from_le_bytes(wide.try_into().ok()?) & low_bytes(len),
            None => {
                let mut buf = [0u8; 16];
                buf[..len].copy_from_slice(&values[start..end]);
                u128::from_le_bytes(buf)
            }
        })
    }

    fn group_of(&mut self, values: &[u8], start: usize, end: usize) -> usize {
        if let Some(key) = Self::short_key(values, start, end) {
            if let Some(&group) = self.short.get(&key) {
                return group as usize;
            }
            let group = self.new_group(&values[start..end]);
            self.short.insert(key, group);
            return group as usize;
        }
        let key = &values[start..end];
        if let Some(&group) = self.long.get(key) {
            return group as usize;
        }
        let group = self.new_group(key);
        self.long_bytes += key.len();
        self.long.insert(key.into(), group);
        group as usize
    }

    fn null_group(&mut self) -> usize {
        if let Some(group) = self.null {
            return group as usize;
        }
        let group = self.new_group(b"");
        self.null = Some(group);
        group as usize
    }
}

impl GroupKeys for StrKeys {
    fn assign(&mut self, keys: &ArrayRef, out: &mut Vec<usize>) -> Result<()> {
        let keys = keys.as_string_opt::<i32>().ok_or_else(|| {
            DataFusionError::Internal(format!("string keys of type {}", keys.data_type()))
        })?;
        let (offsets, values) = (keys.value_offsets(), keys.values().as_slice());
        // Every group's key in one string array: its offsets are `i32`.
        if self.bytes.len() + values.len() > i32::MAX as usize {
            return Err(DataFusionError::ResourcesExhausted(
                "the keys of one aggregate's groups are over 2 GiB".into(),
            ));
        }
        out.clear();
        out.reserve(keys.len());
        for row in 0..keys.len() {
            let group = if keys.is_null(row) {
                self.null_group()
            } else {
                self.group_of(values, offsets[row] as usize, offsets[row + 1] as usize)
            };
            out.push(group);
        }
        Ok(())
    }

    fn groups(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    fn bytes(&self) -> usize {
        self.short.capacity() * 32
            + self.long_bytes
            + self.long.capacity() * 24
            + self.offsets.capacity() * 4
            + self.bytes.capacity()
    }

    fn take(&mut self) -> Result<ArrayRef> {
        let groups = self.groups();
        let mut offsets = std::mem::take(&mut self.offsets);
        if offsets.is_empty() {
            offsets.push(0);
        }
        let nulls = self
            .null
            .take()
            .map(|at| NullBuffer::from_iter((0..groups).map(|g| g != at as usize)));
        let array = StringArray::try_new(
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            std::mem::take(&mut self.bytes).into(),
            nulls,
        )?;
        self.short.clear();
        self.long.clear();
        self.long_bytes = 0;
        Ok(Arc::new(array))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings_of(g: &mut StrKeys, keys: Vec<Option<&str>>) -> Vec<usize> {
        let mut out = Vec::new();
        let keys: ArrayRef = Arc::new(StringArray::from(keys));
        g.assign(&keys, &mut out).unwrap();
        out
    }

    #[test]
    fn counting_known_keys_agrees_with_counting_by_group() {
        let mut g = for_type(&DataType::Int32).unwrap();
        let batch = |v: Vec<Option<i32>>| Arc::new(arrow::array::Int32Array::from(v)) as ArrayRef;
        let mut scratch = Vec::new();
        // New keys: group by group (groups in order of first key).
        let got = g
            .count(
                &batch(vec![Some(5), Some(3), Some(5), Some(5)]),
                &mut scratch,
            )
            .unwrap();
        assert_eq!(got, (vec![0, 1], vec![3, 1]));
        let got = g
            .count(&batch(vec![Some(4), Some(5), Some(4)]), &mut scratch)
            .unwrap();
        assert_eq!(got, (vec![0, 2], vec![1, 2]));
        // Every key known: one pass.
        let got = g
            .count(
                &batch(vec![Some(5), Some(4), Some(4), Some(3), Some(4)]),
                &mut scratch,
            )
            .unwrap();
        assert_eq!(got, (vec![0, 1, 2], vec![1, 1, 3]));
        // A null and a far key.
        let got = g
            .count(
                &batch(vec![Some(3), None, Some(1 << 30), None]),
                &mut scratch,
            )
            .unwrap();
        assert_eq!(got, (vec![1, 3, 4], vec![1, 2, 1]));
        let keys = g.take().unwrap();
        let keys: Vec<Option<i32>> = keys
            .as_primitive::<arrow::datatypes::Int32Type>()
            .iter()
            .collect();
        assert_eq!(keys, vec![Some(5), Some(3), Some(4), None, Some(1 << 30)]);
    }

    #[test]
    fn strings_short_long_empty_null_and_trailing_zeros_are_told_apart() {
        let mut g = StrKeys::default();
        let long = "a key of more than sixteen bytes";
        // Each key once, in the order of their groups.
        let distinct = vec![
            Some("ab"),
            Some("ab\0"),
            Some(""),
            None,
            Some(long),
            Some("0123456789abcdef"),
        ];
        let mut first = distinct.clone();
        first.insert(5, Some("ab"));
        let got = strings_of(&mut g, first);
        assert_eq!(got, vec![0, 1, 2, 3, 4, 0, 5]);
        // A later batch, sliced so that keys end near its buffer's end.
        let batch: ArrayRef = Arc::new(StringArray::from(vec![
            "zz",
            "ab",
            long,
            "0123456789abcdef",
            "ab\0",
        ]));
        let mut out = Vec::new();
        g.assign(&batch.slice(1, 4), &mut out).unwrap();
        assert_eq!(out, vec![0, 4, 5, 1]);
        let keys = g.take().unwrap();
        let keys = keys.as_string::<i32>();
        let back: Vec<Option<&str>> = keys.iter().collect();
        assert_eq!(back, distinct);
        assert_eq!(g.groups(), 0);
        assert_eq!(strings_of(&mut g, vec![Some("x"), Some("ab")]), vec![0, 1]);
    }

    fn groups_of(g: &mut IntKeys, keys: Vec<Option<i64>>) -> Vec<usize> {
        let mut out = Vec::new();
        g.assign_ints(&Int64Array::from(keys), &mut out);
        out
    }

    #[test]
    fn near_far_and_null_keys_each_get_one_group() {
        let mut g = IntKeys::default();
        let far = i64::MAX;
        let got = groups_of(
            &mut g,
            vec![Some(200), Some(404), Some(200), None, Some(far), None],
        );
        assert_eq!(got, vec![0, 1, 0, 2, 3, 2]);
        let got = groups_of(&mut g, vec![Some(i64::MIN), Some(far), Some(404)]);
        assert_eq!(got, vec![4, 3, 1]);
        assert_eq!(
            g.keys,
            vec![Some(200), Some(404), None, Some(far), Some(i64::MIN)]
        );
    }

    #[test]
    fn taking_the_groups_starts_over() {
        let mut g = IntKeys::default();
        groups_of(&mut g, vec![Some(7), Some(9), None, Some(1 << 40)]);
        let keys = g.take_ints();
        assert_eq!(keys.len(), 4);
        assert_eq!(keys.null_count(), 1);
        assert_eq!(g.groups(), 0);
        // A new base: keys far from the old one are near now.
        let got = groups_of(&mut g, vec![Some(1 << 40), Some(9), Some(1 << 40)]);
        assert_eq!(got, vec![0, 1, 0]);
        let table = g.table.as_ref().unwrap();
        assert_eq!(table.iter().filter(|s| **s != NO_GROUP).count(), 1);
        assert_eq!(g.far.len(), 1);
    }
}
