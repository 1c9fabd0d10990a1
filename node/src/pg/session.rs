//! A Postgres client's session: who it is, the settings it `SET`, the
//! statements it sends for its session rather than for data (answered
//! here), and cancellation of its running query.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use atoll_auth::Caller;
use atoll_query::pg_catalog::{SETTINGS, setting};
use parking_lot::Mutex;
use pgwire::messages::startup::SecretKey;

/// The setting that lets a query answer from the partitions it can reach.
pub const ALLOW_PARTIAL: &str = "atoll.allow_partial";
/// Postgres's own name for a query's time limit (milliseconds).
const STATEMENT_TIMEOUT: &str = "statement_timeout";
/// What the session's own settings show until it sets them.
const OWN_DEFAULTS: [(&str, &str); 2] = [(ALLOW_PARTIAL, "default"), (STATEMENT_TIMEOUT, "0")];

/// One connection's session.
#[derive(Default)]
pub struct Session {
    caller: Mutex<Option<Caller>>,
    settings: Mutex<BTreeMap<String, String>>,
    /// Queries started, and the last one a cancel request named: a query
    /// stops when `cancelled` reaches its number.
    started: AtomicU64,
    cancelled: tokio::sync::watch::Sender<u64>,
}

impl Session {
    pub fn caller(&self) -> Option<Caller> {
        self.caller.lock().clone()
    }

    pub fn set_caller(&self, caller: Caller) {
        *self.caller.lock() = Some(caller);
    }

    /// The session's `atoll.allow_partial`, if it set one.
    pub fn allow_partial(&self) -> Option<bool> {
        self.settings
            .lock()
            .get(ALLOW_PARTIAL)
            .and_then(|v| parse_bool(v))
    }

    /// The session's `statement_timeout`, if it set one other than 0.
    pub fn timeout(&self) -> Option<Duration> {
        let ms = self
            .settings
            .lock()
            .get(STATEMENT_TIMEOUT)
            .and_then(|v| parse_millis(v))?;
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// A new query's number, and what tells it that it was cancelled.
    pub fn begin_query(&self) -> Cancel {
        let number = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        Cancel {
            number,
            cancelled: self.cancelled.subscribe(),
        }
    }

    /// Stops the running query, if one is running (a cancel that arrives
    /// between queries stops nothing, as in Postgres).
    pub fn cancel(&self) {
        let current = self.started.load(Ordering::SeqCst);
        self.cancelled.send_replace(current);
    }

    fn set(&self, name: &str, value: &str) -> Result<(), SessionError> {
        let name = name.to_ascii_lowercase();
        let valid = match name.as_str() {
            ALLOW_PARTIAL => parse_bool(value).is_some(),
            STATEMENT_TIMEOUT => parse_millis(value).is_some(),
            _ => true,
        };
        if !valid {
            return Err((
                "22023",
                format!("invalid value for parameter \"{name}\": \"{value}\""),
            ));
        }
        self.settings.lock().insert(name, value.to_string());
        Ok(())
    }

    fn show(&self, name: &str) -> Result<String, SessionError> {
        let lower = name.to_ascii_lowercase();
        if let Some(v) = self.settings.lock().get(&lower) {
            return Ok(v.clone());
        }
        OWN_DEFAULTS
            .iter()
            .find(|(n, _)| *n == lower)
            .map(|(_, v)| *v)
            .or_else(|| setting(name))
            .map(str::to_string)
            .ok_or_else(|| {
                (
                    "42704",
                    format!("unrecognized configuration parameter \"{name}\""),
                )
            })
    }

    /// Every setting with its value, for `SHOW ALL`.
    fn all(&self) -> Vec<(String, String)> {
        let mut all: BTreeMap<String, String> = SETTINGS
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
            .collect();
        all.extend(
            OWN_DEFAULTS
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string())),
        );
        all.extend(self.settings.lock().clone());
        all.into_iter().collect()
    }
}

/// A refused session statement: its SQLSTATE and message.
pub type SessionError = (&'static str, String);

/// What a running query watches to learn it was cancelled.
pub struct Cancel {
    number: u64,
    cancelled: tokio::sync::watch::Receiver<u64>,
}

impl Cancel {
    /// Resolves when this query is cancelled.
    pub async fn cancelled(&mut self) {
        let number = self.number;
        if self.cancelled.wait_for(|c| *c >= number).await.is_err() {
            // The session is gone: so is whoever would cancel.
            std::future::pending::<()>().await;
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" | "t" => Some(true),
        "off" | "false" | "no" | "0" | "f" => Some(false),
        _ => None,
    }
}

/// Milliseconds as Postgres takes them: a number, or with a unit.
fn parse_millis(v: &str) -> Option<u64> {
    let v = v.trim();
    let (digits, unit) = v
        .find(|c: char| !c.is_ascii_digit())
        .map_or((v, ""), |i| v.split_at(i));
    let n: u64 = digits.parse().ok()?;
    let factor = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1000,
        "min" => 60_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// The live sessions, by the key a cancel request names.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<CancelKey, Weak<Session>>>);

/// A session's process id and secret.
type CancelKey = (i32, Vec<u8>);

impl Sessions {
    pub fn register(&self, pid: i32, secret: &SecretKey, session: &Arc<Session>) {
        let mut all = self.0.lock();
        all.retain(|_, s| s.strong_count() > 0);
        all.insert((pid, secret.to_bytes().to_vec()), Arc::downgrade(session));
    }

    pub fn cancel(&self, pid: i32, secret: &SecretKey) {
        let found = self
            .0
            .lock()
            .get(&(pid, secret.to_bytes().to_vec()))
            .and_then(Weak::upgrade);
        if let Some(session) = found {
            session.cancel();
        }
    }
}

/// A statement about the session rather than the data.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionStatement {
    Begin,
    Commit,
    Rollback,
    Set {
        name: String,
        value: String,
    },
    /// `RESET name`; None: `RESET ALL` / `DISCARD ALL`.
    Reset(Option<String>),
    Show(String),
    ShowAll,
}

/// The statement if it is one of the session's (`SHOW TABLES` and
/// `SHOW COLUMNS` are DataFusion's, and left to the engine).
pub fn session_statement(sql: &str) -> Option<SessionStatement> {
    let q = sql.trim().trim_end_matches(';').trim();
    let mut words = q.split_whitespace();
    let first = words.next()?.to_ascii_lowercase();
    let rest: Vec<&str> = words.collect();
    match first.as_str() {
        "begin" | "start" => Some(SessionStatement::Begin),
        "commit" | "end" => Some(SessionStatement::Commit),
        "rollback" | "abort" => Some(SessionStatement::Rollback),
        "reset" | "discard" => {
            let name = rest
                .first()
                .map(|n| n.trim_matches('"').to_ascii_lowercase());
            let all = first == "discard" || name.as_deref().is_none_or(|n| n == "all");
            Some(SessionStatement::Reset(if all { None } else { name }))
        }
        "set" => Some(parse_set(&rest)),
        "show" if rest.len() == 1 => {
            let name = rest[0].trim_matches('"');
            match name.to_ascii_lowercase().as_str() {
                "tables" | "functions" => None,
                "all" => Some(SessionStatement::ShowAll),
                _ => Some(SessionStatement::Show(name.to_string())),
            }
        }
        "show" if rest.len() == 2 && rest[0].eq_ignore_ascii_case("time") => {
            Some(SessionStatement::Show("TimeZone".into()))
        }
        _ => None,
    }
}

/// `SET [SESSION | LOCAL] name { TO | = } value`, or `SET TIME ZONE value`.
fn parse_set(words: &[&str]) -> SessionStatement {
    let mut words = words.to_vec();
    if words
        .first()
        .is_some_and(|w| w.eq_ignore_ascii_case("session") || w.eq_ignore_ascii_case("local"))
    {
        words.remove(0);
    }
    let joined = words.join(" ");
    let (name, value) = if joined.to_ascii_lowercase().starts_with("time zone") {
        (
            "TimeZone".to_string(),
            joined["time zone".len()..].to_string(),
        )
    } else if let Some((n, v)) = joined.split_once('=') {
        (n.trim().to_string(), v.to_string())
    } else {
        let mut parts = joined.splitn(2, char::is_whitespace);
        let n = parts.next().unwrap_or_default().to_string();
        let v = parts.next().unwrap_or_default().trim();
        let v = v
            .strip_prefix("to ")
            .or_else(|| v.strip_prefix("TO "))
            .unwrap_or(v);
        (n, v.to_string())
    };
    let value = value.trim().trim_matches('\'').to_string();
    SessionStatement::Set {
        name: name.trim_matches('"').to_string(),
        value,
    }
}

/// What a session statement answers: a command tag, or one row of values
/// under column names (`SHOW`).
pub enum Answer {
    Tag(&'static str),
    Rows(Vec<String>, Vec<Vec<String>>),
}

impl Session {
    pub fn answer(&self, statement: &SessionStatement) -> Result<Answer, SessionError> {
        Ok(match statement {
            SessionStatement::Begin => Answer::Tag("BEGIN"),
            SessionStatement::Commit => Answer::Tag("COMMIT"),
            SessionStatement::Rollback => Answer::Tag("ROLLBACK"),
            SessionStatement::Reset(None) => {
                self.settings.lock().clear();
                Answer::Tag("RESET")
            }
            SessionStatement::Reset(Some(name)) => {
                self.settings.lock().remove(name);
                Answer::Tag("RESET")
            }
            SessionStatement::Set { name, value } => {
                self.set(name, value)?;
                Answer::Tag("SET")
            }
            SessionStatement::Show(name) => Answer::Rows(
                vec![name.to_ascii_lowercase()],
                vec![vec![self.show(name)?]],
            ),
            SessionStatement::ShowAll => Answer::Rows(
                vec!["name".into(), "setting".into()],
                self.all().into_iter().map(|(n, v)| vec![n, v]).collect(),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_statements_are_recognised() {
        assert_eq!(session_statement("BEGIN;"), Some(SessionStatement::Begin));
        assert_eq!(
            session_statement("SET atoll.allow_partial = on"),
            Some(SessionStatement::Set {
                name: "atoll.allow_partial".into(),
                value: "on".into()
            })
        );
        assert_eq!(
            session_statement("set session statement_timeout to '5s'"),
            Some(SessionStatement::Set {
                name: "statement_timeout".into(),
                value: "5s".into()
            })
        );
        assert_eq!(
            session_statement("SET TIME ZONE 'UTC'"),
            Some(SessionStatement::Set {
                name: "TimeZone".into(),
                value: "UTC".into()
            })
        );
        assert_eq!(
            session_statement("SHOW server_version"),
            Some(SessionStatement::Show("server_version".into()))
        );
        assert_eq!(session_statement("SHOW TABLES"), None);
        assert_eq!(
            session_statement("RESET statement_timeout"),
            Some(SessionStatement::Reset(Some("statement_timeout".into())))
        );
        assert_eq!(
            session_statement("RESET ALL"),
            Some(SessionStatement::Reset(None))
        );
        assert_eq!(
            session_statement("DISCARD ALL"),
            Some(SessionStatement::Reset(None))
        );
        assert_eq!(session_statement("SHOW COLUMNS FROM events"), None);
        assert_eq!(session_statement("SELECT 1"), None);
    }

    #[test]
    fn settings_are_checked_and_shown() {
        let s = Session::default();
        assert_eq!(s.allow_partial(), None);
        s.answer(&session_statement("SET atoll.allow_partial = on").unwrap())
            .ok()
            .unwrap();
        assert_eq!(s.allow_partial(), Some(true));
        assert!(
            s.answer(&session_statement("SET atoll.allow_partial = maybe").unwrap())
                .is_err()
        );
        s.answer(&session_statement("SET statement_timeout = '2s'").unwrap())
            .ok()
            .unwrap();
        assert_eq!(s.timeout(), Some(Duration::from_secs(2)));
        assert!(s.show("nonsense").is_err());
        assert_eq!(s.show("server_version").unwrap(), "16.0");
    }

    #[test]
    fn a_cancel_stops_the_running_query_only() {
        let s = Session::default();
        let first = s.begin_query();
        s.cancel();
        let second = s.begin_query();
        assert!(*first.cancelled.borrow() >= first.number);
        assert!(*second.cancelled.borrow() < second.number);
    }
}
