//! Roles, and what each may do.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::AuthError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Writes events (to its tables, when it has a scope).
    Ingest,
    /// Reads: queries, table descriptions, cluster status.
    Query,
    /// Everything: tables, keys, the cluster.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Query => "query",
            Role::Admin => "admin",
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    /// Write events into a table.
    Ingest(&'a str),
    /// Write events into tables the request names in its body (a door
    /// asks before reading the body, then each table as `Ingest`).
    IngestSomewhere,
    /// Run SQL (each table it reads is then a [`Need::Read`]).
    Query,
    /// Read a table's events.
    Read(&'a str),
    /// See a table's description (its columns and settings).
    Describe(&'a str),
    /// See the cluster's state and the node's metrics.
    Status,
    /// Read and keep the dashboard's saved views and boards (they name
    /// tables and hold SQL, so a key limited to some tables may not).
    Saved,
    /// Change tables, keys or the cluster.
    Admin,
}

/// Who sent a request, as far as permissions go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's name (for logs; never the secret).
    pub name: String,
    pub role: Role,
    /// Tables the key is limited to; None: all.
    pub tables: Option<BTreeSet<String>>,
    /// The registry id of the key (None for the bootstrap admin key and
    /// when authentication is off).
    pub key_id: Option<String>,
}

impl Caller {
    /// Anyone, on a node without authentication.
    pub fn open() -> Caller {
        Caller {
            name: "anonymous".into(),
            role: Role::Admin,
            tables: None,
            key_id: None,
        }
    }

    pub(crate) fn bootstrap_admin() -> Caller {
        Caller {
            name: "admin".into(),
            role: Role::Admin,
            tables: None,
            key_id: None,
        }
    }

    /// Whether this caller may do what a request needs; the refusal says
    /// which role or table it would take.
    pub fn may(&self, need: Need<'_>) -> Result<(), AuthError> {
        let role_ok = match need {
            Need::Admin => self.role == Role::Admin,
            Need::Ingest(_) | Need::IngestSomewhere => {
                matches!(self.role, Role::Ingest | Role::Admin)
            }
            Need::Query | Need::Read(_) | Need::Status | Need::Saved => {
                matches!(self.role, Role::Query | Role::Admin)
            }
            Need::Describe(_) => true,
        };
        if !role_ok {
            return Err(AuthError::Forbidden(format!(
                "key {:?} has role {}, which may not {}",
                self.name,
                self.role.name(),
                describe(need)
            )));
        }
        match need {
            // The cluster's state and the metrics name every table.
            Need::Status if self.tables.is_some() => Err(AuthError::Forbidden(format!(
                "key {:?} is limited to some tables, and the cluster's state and metrics name them all",
                self.name
            ))),
            Need::Saved if self.tables.is_some() => Err(AuthError::Forbidden(format!(
                "key {:?} is limited to some tables, and saved views and boards may name any table",
                self.name
            ))),
            Need::Ingest(t) | Need::Read(t) | Need::Describe(t) if !self.sees(t) => {
                Err(AuthError::Forbidden(format!(
                    "key {:?} is limited to tables {:?}, not {t:?}",
                    self.name,
                    self.tables.iter().flatten().collect::<Vec<_>>()
                )))
            }
            _ => Ok(()),
        }
    }

    /// Whether a table is within this caller's scope.
    pub fn sees(&self, table: &str) -> bool {
        self.tables.as_ref().is_none_or(|t| t.contains(table))
    }
}

fn describe(need: Need<'_>) -> String {
    match need {
        Need::Ingest(t) => {
            format!("write events to table {t:?} (that takes an ingest or admin key)")
        }
        Need::IngestSomewhere => "write events (that takes an ingest or admin key)".into(),
        Need::Query => "run queries (that takes a query or admin key)".into(),
        Need::Read(t) => format!("read table {t:?} (that takes a query or admin key)"),
        Need::Describe(t) => format!("see table {t:?}"),
        Need::Status => "see the cluster's state (that takes a query or admin key)".into(),
        Need::Saved => "see or save views and boards (that takes a query or admin key)".into(),
        Need::Admin => "change tables, keys or the cluster (that takes an admin key)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(role: Role, tables: Option<&[&str]>) -> Caller {
        Caller {
            name: "k".into(),
            role,
            tables: tables.map(|t| t.iter().map(|s| s.to_string()).collect()),
            key_id: Some("id".into()),
        }
    }

    #[test]
    fn roles_and_scopes_hold() {
        let ingest = key(Role::Ingest, Some(&["web"]));
        assert!(ingest.may(Need::Ingest("web")).is_ok());
        assert!(ingest.may(Need::Ingest("jobs")).is_err());
        assert!(ingest.may(Need::Query).is_err());
        assert!(ingest.may(Need::Admin).is_err());
        assert!(ingest.may(Need::Describe("web")).is_ok());
        assert!(ingest.may(Need::Describe("jobs")).is_err());
        let query = key(Role::Query, None);
        assert!(query.may(Need::Read("anything")).is_ok());
        assert!(query.may(Need::Ingest("web")).is_err());
        assert!(query.may(Need::Status).is_ok());
        assert!(query.may(Need::Saved).is_ok(), "a query key keeps views");
        assert!(ingest.may(Need::Saved).is_err());
        let scoped = key(Role::Query, Some(&["web"]));
        assert!(
            scoped.may(Need::Status).is_err(),
            "metrics name every table"
        );
        let err = scoped.may(Need::Saved).unwrap_err();
        assert!(err.to_string().contains("saved views"), "{err}");
        let err = scoped.may(Need::Read("jobs")).unwrap_err();
        assert!(
            err.to_string().contains("limited to tables [\"web\"]"),
            "{err}"
        );
        let admin = key(Role::Admin, None);
        for need in [
            Need::Admin,
            Need::Query,
            Need::Ingest("x"),
            Need::Status,
            Need::Saved,
        ] {
            assert!(admin.may(need).is_ok());
        }
        assert!(Caller::open().may(Need::Admin).is_ok());
    }
}
