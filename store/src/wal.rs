//! The write-ahead log and snapshots of a node's data (`--data-dir`).
//!
//! Every write is framed and appended to the current log segment before it
//! is acknowledged; one thread writes and fsyncs what concurrent requests
//! appended since its last round, so they share fsyncs (group commit).
//! Now and then a checkpoint rotates to a new segment, captures the whole
//! store as it is at that instant (no write half-applied: writers hold the
//! gate while they log and apply), writes it as a snapshot and deletes the
//! segments and snapshots behind it. Recovery reads the newest complete
//! snapshot and then the segments from its number on.
//!
//! A frame is `u32 length | u64 xxh3 of the payload | payload`; a frame
//! whose length runs past the file or whose checksum differs is a torn
//! tail (the process died mid-write): it and everything after it in that
//! file are cut, never read as data.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::ipc::CompressionType;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use parking_lot::{Condvar, Mutex, RwLock};

/// When the log is fsync'ed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before every acknowledgement (shared by concurrent requests).
    Always,
    /// Every so often; a write is acknowledged once the OS has it, so it
    /// survives the process being killed but not a power cut in between.
    Interval(Duration),
    /// Never by Atoll (the OS writes back when it likes).
    Never,
}

/// An `--fsync` value that is none of the policies.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an fsync policy: use always, interval=MS or never")]
pub struct BadFsyncPolicy(pub String);

impl std::str::FromStr for FsyncPolicy {
    type Err = BadFsyncPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => other
                .strip_prefix("interval=")
                .and_then(|ms| ms.parse::<u64>().ok())
                .filter(|&ms| ms > 0)
                .map(|ms| FsyncPolicy::Interval(Duration::from_millis(ms)))
                .ok_or_else(|| BadFsyncPolicy(s.to_string())),
        }
    }
}

/// What the log holds.
#[derive(Debug, Clone)]
pub enum Record {
    /// Rows of one partition, this node's own or held for `hint_for`.
    Batch {
        table: String,
        partition: u32,
        hint_for: Option<String>,
        batch: RecordBatch,
    },
    /// A table dropped at `micros` (the drop's name across the cluster).
    Drop { table: String, micros: i64 },
    /// A table's settings (as JSON) and when they were set; also how a
    /// snapshot names a table that holds no rows.
    Settings {
        table: String,
        settings: String,
        version: i64,
    },
}

const BATCH: u8 = 1;
const DROP: u8 = 2;
const SETTINGS: u8 = 3;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(bad("record shorter than its fields"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> io::Result<i64> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn str(&mut self) -> io::Result<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| bad("a name is not UTF-8"))
    }
}

impl Record {
    fn encode(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        match self {
            Record::Batch {
                table,
                partition,
                hint_for,
                batch,
            } => {
                out.push(BATCH);
                put_str(&mut out, table);
                out.extend_from_slice(&partition.to_le_bytes());
                put_str(&mut out, hint_for.as_deref().unwrap_or(""));
                write_ipc(batch, &mut out)?;
            }
            Record::Drop { table, micros } => {
                out.push(DROP);
                put_str(&mut out, table);
                out.extend_from_slice(&micros.to_le_bytes());
            }
            Record::Settings {
                table,
                settings,
                version,
            } => {
                out.push(SETTINGS);
                put_str(&mut out, table);
                out.extend_from_slice(&version.to_le_bytes());
                put_str(&mut out, settings);
            }
        }
        Ok(out)
    }

    fn decode(payload: &[u8]) -> io::Result<Record> {
        let mut c = Cursor(payload);
        match c.u8()? {
            BATCH => {
                let table = c.str()?;
                let partition = c.u32()?;
                let hint = c.str()?;
                let batch = read_ipc(c.0)?;
                Ok(Record::Batch {
                    table,
                    partition,
                    hint_for: (!hint.is_empty()).then_some(hint),
                    batch,
                })
            }
            DROP => Ok(Record::Drop {
                table: c.str()?,
                micros: c.i64()?,
            }),
            SETTINGS => Ok(Record::Settings {
                table: c.str()?,
                version: c.i64()?,
                settings: c.str()?,
            }),
            kind => Err(bad(format!("unknown record kind {kind}"))),
        }
    }
}

/// A batch as an Arrow IPC stream, LZ4-compressed (the log's, the
/// snapshots' and handoff's form of a batch).
pub fn write_ipc(batch: &RecordBatch, out: &mut Vec<u8>) -> io::Result<()> {
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::LZ4_FRAME))
        .map_err(io::Error::other)?;
    let mut writer = StreamWriter::try_new_with_options(out, &batch.schema(), options)
        .map_err(io::Error::other)?;
    writer.write(batch).map_err(io::Error::other)?;
    writer.finish().map_err(io::Error::other)
}

/// Refuses an IPC stream whose messages claim more bytes than it holds.
/// Arrow's reader allocates (and zeroes) what a message's length prefix
/// and body length say before reading, so 20 bytes claiming 2 GB took
/// seconds and gigabytes (found by `store/tests/fuzz.rs`).
fn check_ipc_sizes(bytes: &[u8]) -> io::Result<()> {
    let mut rest = bytes;
    let word = |b: &[u8]| u32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
    while rest.len() >= 4 {
        let mut len = word(rest);
        rest = &rest[4..];
        if len == u32::MAX {
            if rest.len() < 4 {
                break;
            }
            len = word(rest);
            rest = &rest[4..];
        }
        if len == 0 {
            break;
        }
        let len = len as usize;
        if len > rest.len() {
            return Err(bad("an IPC message longer than its stream"));
        }
        let message = arrow::ipc::root_as_message(&rest[..len])
            .map_err(|e| bad(format!("an unreadable IPC message: {e}")))?;
        rest = &rest[len..];
        let body = usize::try_from(message.bodyLength()).unwrap_or(usize::MAX);
        if body > rest.len() {
            return Err(bad("an IPC body longer than its stream"));
        }
        rest = &rest[body..];
    }
    Ok(())
}

/// The batch of an IPC stream made by `write_ipc`.
pub fn read_ipc(bytes: &[u8]) -> io::Result<RecordBatch> {
    read_ipc_projected(bytes, None)
}

/// The same, decoding only the columns at `projection` (indexes).
pub fn read_ipc_projected(bytes: &[u8], projection: Option<Vec<usize>>) -> io::Result<RecordBatch> {
    check_ipc_sizes(bytes)?;
    // Arrow's IPC decoder panics on some damaged buffer layouts: damage
    // is an error like any other.
    std::panic::catch_unwind(|| {
        StreamReader::try_new(bytes, projection)
            .map_err(io::Error::other)?
            .next()
            .ok_or_else(|| bad("an IPC stream without a batch"))?
            .map_err(io::Error::other)
    })
    .unwrap_or_else(|_| Err(bad("damaged IPC data: its buffers do not fit its layout")))
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 12);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads the frames of a file until its end or a torn frame; answers the
/// payloads and the length of the good prefix.
fn read_frames(path: &Path) -> io::Result<(Vec<Vec<u8>>, u64, bool)> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut reader = BufReader::new(file);
    let mut payloads = Vec::new();
    let mut good = 0u64;
    loop {
        let mut head = [0u8; 12];
        match read_full(&mut reader, &mut head)? {
            0 => return Ok((payloads, good, false)),
            12 => {}
            _ => return Ok((payloads, good, true)),
        }
        let len = u32::from_le_bytes(head[..4].try_into().expect("4")) as usize;
        let sum = u64::from_le_bytes(head[4..].try_into().expect("8"));
        // A length past the end of the file is damage, refused before a
        // buffer of that size is made.
        if len as u64 > size.saturating_sub(good + 12) {
            return Ok((payloads, good, true));
        }
        let mut payload = vec![0u8; len];
        if read_full(&mut reader, &mut payload)? < len
            || xxhash_rust::xxh3::xxh3_64(&payload) != sum
        {
            return Ok((payloads, good, true));
        }
        good += 12 + len as u64;
        payloads.push(payload);
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What recovery found, for the start-up log.
#[derive(Debug, Default, Clone)]
pub struct Recovered {
    pub snapshot_records: usize,
    pub log_records: usize,
    /// Files whose tail was torn and cut.
    pub torn: Vec<String>,
}

struct Active {
    segment: u64,
    file: File,
    pending: Vec<u8>,
    next_lsn: u64,
    /// The last lsn in `pending` or before.
    appended: u64,
    /// Bytes logged since the last checkpoint.
    since_checkpoint: u64,
    /// The active segment's length at its last fsync, and the bytes
    /// written to it since: what a failed write or fsync rewrites.
    synced_len: u64,
    unsynced: Vec<u8>,
}

/// The highest lsn acknowledged as durable, or why the log failed.
type Durable = Result<u64, Arc<std::io::Error>>;

pub struct Wal {
    dir: PathBuf,
    policy: FsyncPolicy,
    active: Mutex<Active>,
    wake: Condvar,
    /// Writers hold it shared while they log and apply a record; a
    /// checkpoint holds it exclusively while it rotates and captures.
    gate: RwLock<()>,
    durable: tokio::sync::watch::Sender<Durable>,
    checkpointing: Mutex<()>,
    last_snapshot_bytes: Mutex<u64>,
}

fn segment_name(n: u64) -> String {
    format!("{n:020}.log")
}

fn snapshot_name(n: u64) -> String {
    format!("{n:020}.snapshot")
}

/// The numbered files of a directory with that extension, in order.
fn numbered(dir: &Path, ext: &str) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) == Some(ext)
            && let Some(n) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
        {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Wal {
    /// Opens (creating) the log in `dir`, first handing every record of the
    /// newest snapshot and of the log after it to `apply`, in order.
    pub fn open(
        dir: &Path,
        policy: FsyncPolicy,
        mut apply: impl FnMut(Record),
    ) -> io::Result<(Arc<Wal>, Recovered)> {
        fs::create_dir_all(dir)?;
        let mut recovered = Recovered::default();
        for (_, path) in numbered(dir, "tmp")? {
            fs::remove_file(path)?;
        }
        let snapshots = numbered(dir, "snapshot")?;
        let from = snapshots.last().map_or(0, |(n, _)| *n);
        let mut snapshot_bytes = 0;
        if let Some((_, path)) = snapshots.last() {
            snapshot_bytes = fs::metadata(path)?.len();
            let (payloads, _, torn) = read_frames(path)?;
            if torn {
                tracing::error!(file = %path.display(), "a snapshot is damaged; its readable part is loaded");
                recovered.torn.push(path.display().to_string());
            }
            for p in payloads {
                apply(Record::decode(&p)?);
                recovered.snapshot_records += 1;
            }
        }
        let mut last = from;
        let segments = numbered(dir, "log")?;
        let newest = segments.last().map(|(n, _)| *n);
        for (n, path) in segments {
            if n < from {
                fs::remove_file(&path)?;
                continue;
            }
            last = last.max(n);
            let (payloads, good, torn) = read_frames(&path)?;
            if torn && Some(n) != newest {
                // Only the newest segment can end torn (the process died
                // while writing it): damage in an older one would silently
                // drop its later records while the next segment's replay.
                return Err(bad(format!(
                    "log segment {} is damaged before its end, and newer segments follow: the records after the damage cannot be replayed. Move {} aside to start this node empty (it then catches up from its replicas), or restore it from a copy",
                    path.display(),
                    dir.display()
                )));
            }
            for p in payloads {
                apply(Record::decode(&p)?);
                recovered.log_records += 1;
            }
            if torn {
                tracing::warn!(file = %path.display(), kept_bytes = good, "cut a torn log tail");
                OpenOptions::new().write(true).open(&path)?.set_len(good)?;
                recovered.torn.push(path.display().to_string());
            }
        }
        for (n, path) in snapshots {
            if n < from {
                fs::remove_file(path)?;
            }
        }
        let segment = last + 1;
        let file = create_segment(dir, segment)?;
        let (durable, _) = tokio::sync::watch::channel(Ok(0));
        let wal = Arc::new(Wal {
            dir: dir.to_path_buf(),
            policy,
            active: Mutex::new(Active {
                segment,
                file,
                pending: Vec::new(),
                next_lsn: 1,
                appended: 0,
                since_checkpoint: 0,
                synced_len: 0,
                unsynced: Vec::new(),
            }),
            wake: Condvar::new(),
            gate: RwLock::new(()),
            durable,
            checkpointing: Mutex::new(()),
            last_snapshot_bytes: Mutex::new(snapshot_bytes),
        });
        let writer = Arc::downgrade(&wal);
        std::thread::Builder::new()
            .name("atoll-wal".into())
            .spawn(move || {
                let mut last_sync = std::time::Instant::now();
                while let Some(wal) = writer.upgrade() {
                    wal.write_round(&mut last_sync);
                }
            })?;
        Ok((wal, recovered))
    }

    /// Logs a record and applies it (with `apply`) as one step that a
    /// checkpoint cannot split; answers the record's lsn, to `wait` for,
    /// and what `apply` answered.
    /// While the log is failing it takes no record (its buffer would grow
    /// without bound and nothing would be acknowledged anyway).
    pub fn log<T>(&self, record: &Record, apply: impl FnOnce() -> T) -> io::Result<(u64, T)> {
        if let Err(e) = &*self.durable.borrow() {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        let framed = frame(&record.encode()?);
        let _gate = self.gate.read();
        let lsn = {
            let mut a = self.active.lock();
            a.pending.extend_from_slice(&framed);
            a.since_checkpoint += framed.len() as u64;
            let lsn = a.next_lsn;
            a.next_lsn += 1;
            a.appended = lsn;
            lsn
        };
        self.wake.notify_one();
        Ok((lsn, apply()))
    }

    /// Resolves once the record of `lsn` is as durable as the policy says.
    pub async fn wait(&self, lsn: u64) -> std::io::Result<()> {
        let mut rx = self.durable.subscribe();
        let seen = rx
            .wait_for(|d| d.as_ref().map_or(true, |&d| d >= lsn))
            .await
            .map_err(|_| std::io::Error::other("the log writer stopped"))?;
        seen.as_ref()
            .map(|_| ())
            .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))
    }

    /// Why the log is failing (a write or an fsync that failed, retried
    /// every half second), if it is.
    pub fn failure(&self) -> Option<String> {
        self.durable.borrow().as_ref().err().map(|e| e.to_string())
    }

    /// Writes what was appended since the last round, fsyncs as the
    /// policy says and publishes the lsn now durable. A write or fsync
    /// that fails puts the log in failure: the bytes not known to be on
    /// disk are cut from the segment and kept, new records are refused,
    /// and each round (every half second) tries again; the first that
    /// succeeds ends the failure.
    fn write_round(&self, last_sync: &mut std::time::Instant) {
        let failing = self.failure().is_some();
        let (hi, file) = {
            let mut a = self.active.lock();
            if failing || a.pending.is_empty() {
                let wait = match self.policy {
                    FsyncPolicy::Interval(d) if !failing => d.min(Duration::from_millis(500)),
                    _ => Duration::from_millis(500),
                };
                self.wake.wait_for(&mut a, wait);
            }
            let pending = std::mem::take(&mut a.pending);
            if let Err(e) = a.file.write_all(&pending) {
                a.pending = pending;
                self.rewind(&mut a);
                self.fail("cannot write the log", e);
                return;
            }
            a.unsynced.extend_from_slice(&pending);
            (a.appended, a.file.try_clone())
        };
        let sync = failing
            || match self.policy {
                FsyncPolicy::Always => true,
                FsyncPolicy::Interval(d) => last_sync.elapsed() >= d,
                FsyncPolicy::Never => false,
            };
        if sync {
            if let Err(e) = file.and_then(|f| f.sync_data()) {
                let mut a = self.active.lock();
                let newer = std::mem::take(&mut a.pending);
                a.pending = std::mem::take(&mut a.unsynced);
                a.pending.extend_from_slice(&newer);
                self.rewind(&mut a);
                self.fail("cannot fsync the log", e);
                return;
            }
            *last_sync = std::time::Instant::now();
        }
        if sync || self.policy == FsyncPolicy::Never {
            let mut a = self.active.lock();
            let written = a.unsynced.len() as u64;
            a.synced_len += written;
            a.unsynced.clear();
        }
        if failing {
            tracing::info!("the write-ahead log works again: writes are acknowledged");
        }
        self.durable.send_if_modified(|d| match d {
            Ok(d) if *d < hi => {
                *d = hi;
                true
            }
            Ok(_) => false,
            Err(_) => {
                *d = Ok(hi);
                true
            }
        });
    }

    /// Cuts the active segment back to its last fsync (a failed write may
    /// have left part of a frame), keeping the bytes in `pending`.
    fn rewind(&self, a: &mut Active) {
        if !a.unsynced.is_empty() {
            let mut kept = std::mem::take(&mut a.unsynced);
            kept.extend_from_slice(&a.pending);
            a.pending = kept;
        }
        if let Err(e) = a.file.set_len(a.synced_len) {
            tracing::error!(error = %e, "cannot cut the log back to its last fsync");
        }
    }

    fn fail(&self, what: &str, e: std::io::Error) {
        let error = std::io::Error::new(e.kind(), format!("{what}: {e}"));
        if self.failure().is_none() {
            tracing::error!(%error, "the write-ahead log failed: writes are no longer acknowledged until it works again");
        }
        let _ = self.durable.send_replace(Err(Arc::new(error)));
    }

    /// Bytes logged since the last snapshot, and that snapshot's size: a
    /// checkpoint pays once the log outgrows the snapshot.
    pub fn growth(&self) -> (u64, u64) {
        (
            self.active.lock().since_checkpoint,
            *self.last_snapshot_bytes.lock(),
        )
    }

    /// Rotates the log, captures the store with `capture` (no write in
    /// between), writes it as a snapshot and deletes what it replaces.
    pub fn checkpoint(&self, capture: impl FnOnce() -> io::Result<Vec<Record>>) -> io::Result<u64> {
        let _one = self.checkpointing.lock();
        if let Some(why) = self.failure() {
            return Err(io::Error::other(format!(
                "no checkpoint while the log fails: {why}"
            )));
        }
        let (segment, records) = {
            let _gate = self.gate.write();
            let mut a = self.active.lock();
            let pending = std::mem::take(&mut a.pending);
            if let Err(e) = a.file.write_all(&pending).and_then(|()| a.file.sync_data()) {
                a.pending = pending;
                self.rewind(&mut a);
                return Err(e);
            }
            let file = create_segment(&self.dir, a.segment + 1)?;
            a.segment += 1;
            a.file = file;
            (a.synced_len, a.unsynced) = (0, Vec::new());
            a.since_checkpoint = 0;
            (a.segment, capture()?)
        };
        let tmp = self.dir.join(format!("{segment:020}.tmp"));
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        for r in &records {
            out.write_all(&frame(&r.encode()?))?;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        fs::rename(&tmp, self.dir.join(snapshot_name(segment)))?;
        sync_dir(&self.dir)?;
        for (n, path) in numbered(&self.dir, "log")? {
            if n < segment {
                fs::remove_file(path)?;
            }
        }
        for (n, path) in numbered(&self.dir, "snapshot")? {
            if n < segment {
                fs::remove_file(path)?;
            }
        }
        *self.last_snapshot_bytes.lock() = bytes;
        Ok(bytes)
    }
}

fn create_segment(dir: &Path, n: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(segment_name(n)))?;
    sync_dir(dir)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema};

    fn batch(x: i64) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("time", crate::ColumnType::Timestamp.data_type(), false),
            Field::new("x", arrow::datatypes::DataType::Int64, true),
        ]);
        let b = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(TimestampMicrosecondArray::from(vec![x]).with_timezone("UTC")),
                Arc::new(Int64Array::from(vec![x])),
            ],
        )
        .unwrap();
        crate::writes::with_write_id(&b, x as u64).unwrap()
    }

    fn put(x: i64) -> Record {
        Record::Batch {
            table: "t".into(),
            partition: x as u32 % 4,
            hint_for: (x % 2 == 0).then(|| "n2".to_string()),
            batch: batch(x),
        }
    }

    /// The x of every batch record found on opening, and what recovery saw.
    fn reopen(dir: &Path) -> (Vec<i64>, Recovered, Arc<Wal>) {
        let mut xs = Vec::new();
        let (wal, rec) = Wal::open(dir, FsyncPolicy::Always, |r| {
            if let Record::Batch { batch, .. } = r {
                let x = batch.column_by_name("x").unwrap();
                xs.push(x.as_any().downcast_ref::<Int64Array>().unwrap().value(0));
            }
        })
        .unwrap();
        (xs, rec, wal)
    }

    async fn log_all(wal: &Wal, xs: impl IntoIterator<Item = i64>) {
        for x in xs {
            let (lsn, ()) = wal.log(&put(x), || ()).unwrap();
            wal.wait(lsn).await.unwrap();
        }
    }

    /// A log holding writes 1, 2 and 3, closed; its directory and segment.
    async fn three_logged() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, wal) = reopen(dir.path());
        log_all(&wal, 1..=3).await;
        drop(wal);
        let seg = only_segment(dir.path());
        (dir, seg)
    }

    fn only_segment(dir: &Path) -> PathBuf {
        let logs = numbered(dir, "log").unwrap();
        logs.into_iter()
            .map(|(_, p)| p)
            .find(|p| fs::metadata(p).unwrap().len() > 0)
            .expect("a segment with data")
    }

    #[tokio::test]
    async fn records_come_back_in_order_with_their_fields() {
        let dir = tempfile::tempdir().unwrap();
        let (_, rec, wal) = reopen(dir.path());
        assert_eq!(rec.log_records + rec.snapshot_records, 0, "an empty dir");
        log_all(&wal, 1..=5).await;
        let (lsn, ()) = wal
            .log(
                &Record::Drop {
                    table: "t".into(),
                    micros: 42,
                },
                || (),
            )
            .unwrap();
        wal.wait(lsn).await.unwrap();
        drop(wal);
        let mut seen = Vec::new();
        Wal::open(dir.path(), FsyncPolicy::Never, |r| seen.push(r)).unwrap();
        assert_eq!(seen.len(), 6);
        match &seen[1] {
            Record::Batch {
                table,
                partition,
                hint_for,
                batch,
            } => {
                assert_eq!((table.as_str(), *partition), ("t", 2));
                assert_eq!(hint_for.as_deref(), Some("n2"));
                assert_eq!(crate::writes::ids_in(batch), [2].into());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&seen[5], Record::Drop { micros: 42, .. }));
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_never_read() {
        let (dir, seg) = three_logged().await;
        let len = fs::metadata(&seg).unwrap().len();
        // Half of a fourth frame, as a crash mid-write leaves it.
        let mut torn = frame(&put(4).encode().unwrap());
        torn.truncate(torn.len() / 2);
        OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap()
            .write_all(&torn)
            .unwrap();
        let (xs, rec, wal) = reopen(dir.path());
        assert_eq!(xs, vec![1, 2, 3]);
        assert_eq!(rec.torn.len(), 1);
        assert_eq!(fs::metadata(&seg).unwrap().len(), len, "the tail was cut");
        log_all(&wal, [5]).await;
        drop(wal);
        assert_eq!(
            reopen(dir.path()).0,
            vec![1, 2, 3, 5],
            "appends after the cut read back"
        );
    }

    #[tokio::test]
    async fn a_corrupted_frame_ends_its_file() {
        let (dir, seg) = three_logged().await;
        let mut bytes = fs::read(&seg).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        fs::write(&seg, bytes).unwrap();
        let (xs, rec, _) = reopen(dir.path());
        assert_eq!(xs, vec![1, 2], "the damaged frame and what follows are cut");
        assert_eq!(rec.torn.len(), 1);
    }

    #[tokio::test]
    async fn damage_before_newer_segments_refuses_to_start() {
        let (dir, seg) = three_logged().await;
        let (_, _, wal) = reopen(dir.path());
        log_all(&wal, [4]).await;
        drop(wal);
        let mut bytes = fs::read(&seg).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        fs::write(&seg, bytes).unwrap();
        let err = match Wal::open(dir.path(), FsyncPolicy::Never, |_| ()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a log damaged in its middle opened"),
        };
        assert!(
            err.contains("damaged before its end") && err.contains("replicas"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_length_past_the_end_is_refused_before_allocating() {
        let (dir, seg) = three_logged().await;
        // A frame header claiming 4 GiB, where a few bytes follow.
        let mut bytes = fs::read(&seg).unwrap();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 8]);
        bytes.extend_from_slice(b"short");
        fs::write(&seg, bytes).unwrap();
        let (xs, rec, _) = reopen(dir.path());
        assert_eq!(xs, vec![1, 2, 3]);
        assert_eq!(rec.torn.len(), 1, "cut as a torn tail");
    }

    #[tokio::test]
    async fn a_checkpoint_replaces_the_log_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, wal) = reopen(dir.path());
        log_all(&wal, 1..=3).await;
        // The store as the capture sees it: the three writes merged.
        wal.checkpoint(|| Ok(vec![put(1), put(2), put(3)])).unwrap();
        assert_eq!(
            numbered(dir.path(), "log").unwrap().len(),
            1,
            "old segments gone"
        );
        log_all(&wal, [4]).await;
        drop(wal);
        let (xs, rec, wal) = reopen(dir.path());
        assert_eq!(xs, vec![1, 2, 3, 4]);
        assert_eq!((rec.snapshot_records, rec.log_records), (3, 1));
        drop(wal);
        // A snapshot whose log is gone still loads.
        for (_, p) in numbered(dir.path(), "log").unwrap() {
            fs::remove_file(p).unwrap();
        }
        assert_eq!(reopen(dir.path()).0, vec![1, 2, 3]);
    }

    #[test]
    fn fsync_policies_parse() {
        assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
        assert_eq!("never".parse(), Ok(FsyncPolicy::Never));
        assert_eq!(
            "interval=50".parse(),
            Ok(FsyncPolicy::Interval(Duration::from_millis(50)))
        );
        for bad in ["sometimes", "interval=", "interval=0", "interval=x"] {
            assert!(
                bad.parse::<FsyncPolicy>()
                    .unwrap_err()
                    .to_string()
                    .contains("always"),
                "{bad}"
            );
        }
    }
}
