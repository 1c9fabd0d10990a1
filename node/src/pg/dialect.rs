//! Postgres idioms that clients send and DataFusion does not plan,
//! rewritten into SQL it does before the statement reaches the engine
//! (which then checks it like any other). Each rewrite is narrow: a
//! spelling of Postgres's own (`OPERATOR(pg_catalog.~)`, `::regclass`,
//! `COLLATE pg_catalog.default`), or a client's fixed text (Grafana's
//! schema filter, psql's lookups of column defaults and collations,
//! which Atoll does not have).

use std::sync::LazyLock;

use atoll_query::pg_catalog::table_oid;
use regex::{Captures, Regex};

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("the rewrite patterns are valid")
}

/// `OPERATOR(pg_catalog.~)` is `~`.
static OPERATOR: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)OPERATOR\s*\(\s*pg_catalog\.([~!<>=*+\-/%^|&#@]+)\s*\)"));
/// `COLLATE pg_catalog.default`: every text compares the same way here.
static COLLATE: LazyLock<Regex> =
    LazyLock::new(|| re(r#"(?i)\s+COLLATE\s+(pg_catalog\.)?("default"|default|"C"|"POSIX")"#));
/// `'events'::regclass` is the table's OID.
static REGCLASS_LITERAL: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)'([^']*)'\s*::\s*(pg_catalog\.)?regclass\b"));
/// Casts to the catalog's reference types show their OIDs as text.
static REG_CAST: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?i)::\s*(pg_catalog\.)?(regclass|regtype|regnamespace|regproc|regprocedure|regrole)\b")
});
static OID_CAST: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)::\s*(pg_catalog\.)?(oid|xid)\b"));
/// `::pg_catalog.text` is `::text`; `::name` and `::"char"` are text.
static TYPE_PREFIX: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)::\s*pg_catalog\."));
static NAME_CAST: LazyLock<Regex> = LazyLock::new(|| re(r#"(?i)::\s*(name|"char")(\b|$)"#));
/// Grafana's filter on the schemas of `search_path`: Atoll's is `public`.
static GRAFANA_SEARCH_PATH: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?is)\(\s*SELECT\s+CASE\s+WHEN\s+trim\(s\[i\]\).*?string_to_array\(current_setting\('search_path'\),\s*','\)\s+s\s*\)",
    )
});
/// psql's column default and collation lookups (`\d`): none here.
static PSQL_DEFAULT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?is)\(\s*SELECT\s+(pg_catalog\.)?pg_get_expr\(d\.adbin,\s*d\.adrelid(,\s*true)?\)\s+FROM\s+pg_catalog\.pg_attrdef\s+d\s+WHERE\s+[^()]*\)",
    )
});
static PSQL_COLLATION: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?is)\(\s*SELECT\s+c\.collname\s+FROM\s+pg_catalog\.pg_collation\s+c,\s*pg_catalog\.pg_type\s+t\s+WHERE\s+[^()]*\)",
    )
});

/// psql's list of a policy's roles: Atoll has no policies.
static PSQL_POLICY_ROLES: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?is)(pg_catalog\.)?array_to_string\(\s*array\(\s*select\s+rolname\s+from\s+pg_catalog\.pg_roles\s+where\s+oid\s*=\s*any\s*\(pol\.polroles\)\s+order\s+by\s+1\s*\)\s*,\s*','\s*\)",
    )
});
/// `pg_catalog.lower(x)`: DataFusion's own functions have no schema.
static FUNCTION_SCHEMA: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)\bpg_catalog\.([a-z_][a-z0-9_]*)\s*\("));

/// psql's list of the publications a table is in (`\\d`): Atoll has
/// none. The statement is replaced whole (it reads `generate_series`).
static PSQL_PUBLICATIONS: LazyLock<Regex> = LazyLock::new(|| {
    re(r"(?is)^\s*SELECT\s+pubname\b.*\bFROM\s+pg_catalog\.pg_publication\s+p\b.*$")
});

/// `sql` as DataFusion plans it.
pub fn rewrite(sql: &str) -> String {
    // Cheap test first: most statements are plain queries.
    let lower = sql.to_ascii_lowercase();
    if !lower.contains("pg_")
        && !lower.contains("::")
        && !lower.contains("collate")
        && !lower.contains("search_path")
    {
        return sql.to_string();
    }
    if PSQL_PUBLICATIONS.is_match(sql) {
        return "SELECT pubname, NULL AS qual, NULL AS attrs FROM pg_catalog.pg_publication WHERE false"
            .into();
    }
    let sql = GRAFANA_SEARCH_PATH.replace_all(sql, "('public')");
    let sql = PSQL_DEFAULT.replace_all(&sql, "NULL");
    let sql = PSQL_COLLATION.replace_all(&sql, "NULL");
    let sql = PSQL_POLICY_ROLES.replace_all(&sql, "NULL");
    let sql = FUNCTION_SCHEMA.replace_all(&sql, "$1(");
    let sql = OPERATOR.replace_all(&sql, "$1");
    let sql = COLLATE.replace_all(&sql, "");
    let sql = REGCLASS_LITERAL.replace_all(&sql, |c: &Captures| {
        let name = c[1]
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .trim_matches('"');
        table_oid(name).to_string()
    });
    let sql = REG_CAST.replace_all(&sql, "::text");
    let sql = OID_CAST.replace_all(&sql, "::bigint");
    let sql = TYPE_PREFIX.replace_all(&sql, "::");
    let sql = NAME_CAST.replace_all(&sql, "::text$2");
    sql.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_spellings_become_datafusion_sql() {
        assert_eq!(
            rewrite(
                "WHERE c.relname OPERATOR(pg_catalog.~) '^(events)$' COLLATE pg_catalog.default"
            ),
            "WHERE c.relname ~ '^(events)$'"
        );
        assert_eq!(
            rewrite("WHERE attrelid = 'public.events'::regclass"),
            format!("WHERE attrelid = {}", table_oid("events"))
        );
        assert_eq!(
            rewrite("SELECT c.oid::pg_catalog.regclass, x::pg_catalog.text, y::oid, n::name"),
            "SELECT c.oid::text, x::text, y::bigint, n::text"
        );
        assert_eq!(rewrite("SELECT 1"), "SELECT 1");
        // A string that merely mentions a cast is left alone when it has
        // none of the spellings.
        assert_eq!(rewrite("SELECT 'a::b'"), "SELECT 'a::b'");
    }

    #[test]
    fn grafanas_search_path_filter_is_public() {
        let sql = r#"SELECT table_name FROM information_schema.tables WHERE quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )"#;
        assert_eq!(
            rewrite(sql),
            "SELECT table_name FROM information_schema.tables WHERE quote_ident(table_schema) IN ('public')"
        );
    }
}
