//! Enough of Postgres's `pg_catalog` for the clients that browse a
//! database before they query it (`psql`'s `\dt` and `\d`, Grafana's
//! pickers, DBeaver and Metabase at connect): the catalog tables built
//! from the store's tables when a query names them, and the catalog
//! functions those clients call. Atoll has no indexes, constraints,
//! defaults, policies or inheritance, so the tables that describe them are
//! empty with the columns clients read.
//!
//! Lives here, beside the SQL catalog, because every door answers the same
//! SQL: `pg_catalog.pg_class` reads the same from `/v1/query` as from
//! `psql`. Rewriting what clients send into SQL DataFusion plans is the
//! Postgres door's business (`atoll-node`).

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, ListArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use atoll_store::Store;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::MemTable;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The schema name clients qualify catalog tables with.
pub const PG_CATALOG: &str = "pg_catalog";
/// The one database.
pub const DATABASE: &str = "atoll";
/// The one role every table belongs to.
const OWNER: &str = "atoll";
const OWNER_OID: i64 = 10;
const PG_CATALOG_OID: i64 = 11;
const PUBLIC_OID: i64 = 2200;
const INFORMATION_SCHEMA_OID: i64 = 13_000;
const DATABASE_OID: i64 = 16_384;
const HEAP_AM_OID: i64 = 2;
const DEFAULT_COLLATION_OID: i64 = 100;

/// What Postgres type a column of this Arrow type is shown as: its OID.
pub fn pg_type_oid(t: &DataType) -> u32 {
    match t {
        DataType::Int64 | DataType::Int32 | DataType::Int16 | DataType::Int8 => 20,
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => 20,
        DataType::Float64 | DataType::Float32 | DataType::Float16 => 701,
        DataType::Boolean => 16,
        DataType::Timestamp(_, Some(_)) => 1184,
        DataType::Timestamp(_, None) => 1114,
        DataType::List(f) | DataType::LargeList(f) if is_string(f.data_type()) => 1009,
        _ => 25,
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// The types Atoll's columns have, as `pg_type` and `format_type` know them:
/// (oid, typname, SQL name, length, category, element).
const TYPES: &[(i64, &str, &str, i64, &str, i64)] = &[
    (16, "bool", "boolean", 1, "B", 0),
    (19, "name", "name", 64, "S", 0),
    (20, "int8", "bigint", 8, "N", 0),
    (21, "int2", "smallint", 2, "N", 0),
    (23, "int4", "integer", 4, "N", 0),
    (25, "text", "text", -1, "S", 0),
    (26, "oid", "oid", 4, "N", 0),
    (700, "float4", "real", 4, "N", 0),
    (701, "float8", "double precision", 8, "N", 0),
    (1009, "_text", "text[]", -1, "A", 25),
    (1043, "varchar", "character varying", -1, "S", 0),
    (1082, "date", "date", 4, "D", 0),
    (1114, "timestamp", "timestamp without time zone", 8, "D", 0),
    (1184, "timestamptz", "timestamp with time zone", 8, "D", 0),
    (1700, "numeric", "numeric", -1, "N", 0),
];

/// A table's OID: stable for its name, so that the queries a client sends
/// one after another (find the table, then its columns) agree.
pub fn table_oid(name: &str) -> i64 {
    // FNV-1a, into the range Postgres gives user objects.
    let mut hash: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    DATABASE_OID + 1 + i64::from(hash % (1 << 30))
}

/// Schema `pg_catalog`: its tables are made from the store's tables each
/// time a query names one (they are small: a row per table or column).
pub struct PgCatalogSchema {
    store: Arc<Store>,
}

impl PgCatalogSchema {
    pub fn new(store: Arc<Store>) -> PgCatalogSchema {
        PgCatalogSchema { store }
    }
}

impl fmt::Debug for PgCatalogSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PgCatalogSchema")
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|(name, _)| name.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let Some((_, columns)) = TABLES.iter().find(|(n, _)| *n == name) else {
            return Ok(None);
        };
        let tables = user_tables(&self.store);
        let rows = rows_of(name, &tables);
        Ok(Some(Arc::new(mem_table(columns, rows)?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.iter().any(|(n, _)| *n == name)
    }
}

/// Column kinds of catalog tables.
#[derive(Clone, Copy)]
enum C {
    Oid,
    Int,
    Float,
    Text,
    Bool,
    /// A text array (`reloptions`, `stxkind`...).
    Texts,
}

impl C {
    fn data_type(self) -> DataType {
        match self {
            C::Oid | C::Int => DataType::Int64,
            C::Float => DataType::Float64,
            C::Text => DataType::Utf8,
            C::Bool => DataType::Boolean,
            C::Texts => DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
        }
    }
}

type Columns = &'static [(&'static str, C)];

/// Every catalog table served, with the columns clients read.
const TABLES: &[(&str, Columns)] = &[
    (
        "pg_namespace",
        &[
            ("oid", C::Oid),
            ("nspname", C::Text),
            ("nspowner", C::Oid),
            ("nspacl", C::Text),
        ],
    ),
    (
        "pg_class",
        &[
            ("oid", C::Oid),
            ("relname", C::Text),
            ("relnamespace", C::Oid),
            ("reltype", C::Oid),
            ("reloftype", C::Oid),
            ("relowner", C::Oid),
            ("relam", C::Oid),
            ("relfilenode", C::Oid),
            ("reltablespace", C::Oid),
            ("relpages", C::Int),
            ("reltuples", C::Float),
            ("relallvisible", C::Int),
            ("reltoastrelid", C::Oid),
            ("relhasindex", C::Bool),
            ("relisshared", C::Bool),
            ("relpersistence", C::Text),
            ("relkind", C::Text),
            ("relnatts", C::Int),
            ("relchecks", C::Int),
            ("relhasrules", C::Bool),
            ("relhastriggers", C::Bool),
            ("relhassubclass", C::Bool),
            ("relrowsecurity", C::Bool),
            ("relforcerowsecurity", C::Bool),
            ("relispopulated", C::Bool),
            ("relreplident", C::Text),
            ("relispartition", C::Bool),
            ("relrewrite", C::Oid),
            ("relacl", C::Text),
            ("reloptions", C::Texts),
            ("relpartbound", C::Text),
        ],
    ),
    (
        "pg_attribute",
        &[
            ("attrelid", C::Oid),
            ("attname", C::Text),
            ("atttypid", C::Oid),
            ("attstattarget", C::Int),
            ("attlen", C::Int),
            ("attnum", C::Int),
            ("attndims", C::Int),
            ("attcacheoff", C::Int),
            ("atttypmod", C::Int),
            ("attbyval", C::Bool),
            ("attalign", C::Text),
            ("attstorage", C::Text),
            ("attcompression", C::Text),
            ("attnotnull", C::Bool),
            ("atthasdef", C::Bool),
            ("atthasmissing", C::Bool),
            ("attidentity", C::Text),
            ("attgenerated", C::Text),
            ("attisdropped", C::Bool),
            ("attislocal", C::Bool),
            ("attinhcount", C::Int),
            ("attcollation", C::Oid),
            ("attacl", C::Text),
            ("attoptions", C::Texts),
        ],
    ),
    (
        "pg_type",
        &[
            ("oid", C::Oid),
            ("typname", C::Text),
            ("typnamespace", C::Oid),
            ("typowner", C::Oid),
            ("typlen", C::Int),
            ("typbyval", C::Bool),
            ("typtype", C::Text),
            ("typcategory", C::Text),
            ("typisdefined", C::Bool),
            ("typdelim", C::Text),
            ("typrelid", C::Oid),
            ("typelem", C::Oid),
            ("typarray", C::Oid),
            ("typnotnull", C::Bool),
            ("typbasetype", C::Oid),
            ("typtypmod", C::Int),
            ("typndims", C::Int),
            ("typcollation", C::Oid),
        ],
    ),
    (
        "pg_database",
        &[
            ("oid", C::Oid),
            ("datname", C::Text),
            ("datdba", C::Oid),
            ("encoding", C::Int),
            ("datcollate", C::Text),
            ("datctype", C::Text),
            ("datistemplate", C::Bool),
            ("datallowconn", C::Bool),
            ("datconnlimit", C::Int),
            ("datacl", C::Text),
        ],
    ),
    (
        "pg_am",
        &[("oid", C::Oid), ("amname", C::Text), ("amtype", C::Text)],
    ),
    (
        "pg_roles",
        &[
            ("oid", C::Oid),
            ("rolname", C::Text),
            ("rolsuper", C::Bool),
            ("rolinherit", C::Bool),
            ("rolcreaterole", C::Bool),
            ("rolcreatedb", C::Bool),
            ("rolcanlogin", C::Bool),
            ("rolreplication", C::Bool),
            ("rolconnlimit", C::Int),
            ("rolvaliduntil", C::Text),
            ("rolbypassrls", C::Bool),
        ],
    ),
    (
        "pg_user",
        &[
            ("usename", C::Text),
            ("usesysid", C::Oid),
            ("usecreatedb", C::Bool),
            ("usesuper", C::Bool),
        ],
    ),
    (
        "pg_tables",
        &[
            ("schemaname", C::Text),
            ("tablename", C::Text),
            ("tableowner", C::Text),
            ("tablespace", C::Text),
            ("hasindexes", C::Bool),
            ("hasrules", C::Bool),
            ("hastriggers", C::Bool),
            ("rowsecurity", C::Bool),
        ],
    ),
    (
        "pg_views",
        &[
            ("schemaname", C::Text),
            ("viewname", C::Text),
            ("viewowner", C::Text),
            ("definition", C::Text),
        ],
    ),
    (
        "pg_matviews",
        &[
            ("schemaname", C::Text),
            ("matviewname", C::Text),
            ("matviewowner", C::Text),
            ("definition", C::Text),
        ],
    ),
    (
        "pg_settings",
        &[
            ("name", C::Text),
            ("setting", C::Text),
            ("unit", C::Text),
            ("category", C::Text),
            ("short_desc", C::Text),
        ],
    ),
    (
        "pg_attrdef",
        &[
            ("oid", C::Oid),
            ("adrelid", C::Oid),
            ("adnum", C::Int),
            ("adbin", C::Text),
        ],
    ),
    (
        "pg_collation",
        &[
            ("oid", C::Oid),
            ("collname", C::Text),
            ("collnamespace", C::Oid),
        ],
    ),
    (
        "pg_index",
        &[
            ("indexrelid", C::Oid),
            ("indrelid", C::Oid),
            ("indnatts", C::Int),
            ("indisunique", C::Bool),
            ("indisprimary", C::Bool),
            ("indisexclusion", C::Bool),
            ("indimmediate", C::Bool),
            ("indisclustered", C::Bool),
            ("indisvalid", C::Bool),
            ("indisreplident", C::Bool),
            ("indkey", C::Text),
            ("indexprs", C::Text),
            ("indpred", C::Text),
        ],
    ),
    (
        "pg_constraint",
        &[
            ("oid", C::Oid),
            ("conname", C::Text),
            ("connamespace", C::Oid),
            ("contype", C::Text),
            ("condeferrable", C::Bool),
            ("condeferred", C::Bool),
            ("convalidated", C::Bool),
            ("conrelid", C::Oid),
            ("contypid", C::Oid),
            ("conindid", C::Oid),
            ("conparentid", C::Oid),
            ("confrelid", C::Oid),
            ("conkey", C::Texts),
            ("confkey", C::Texts),
        ],
    ),
    (
        "pg_inherits",
        &[
            ("inhrelid", C::Oid),
            ("inhparent", C::Oid),
            ("inhseqno", C::Int),
            ("inhdetachpending", C::Bool),
        ],
    ),
    (
        "pg_policy",
        &[
            ("oid", C::Oid),
            ("polname", C::Text),
            ("polrelid", C::Oid),
            ("polcmd", C::Text),
            ("polpermissive", C::Bool),
            ("polroles", C::Text),
            ("polqual", C::Text),
            ("polwithcheck", C::Text),
        ],
    ),
    (
        "pg_statistic_ext",
        &[
            ("oid", C::Oid),
            ("stxrelid", C::Oid),
            ("stxname", C::Text),
            ("stxnamespace", C::Oid),
            ("stxowner", C::Oid),
            ("stxstattarget", C::Int),
            ("stxkeys", C::Texts),
            ("stxkind", C::Texts),
        ],
    ),
    (
        "pg_publication",
        &[
            ("oid", C::Oid),
            ("pubname", C::Text),
            ("puballtables", C::Bool),
        ],
    ),
    (
        "pg_publication_rel",
        &[
            ("oid", C::Oid),
            ("prpubid", C::Oid),
            ("prrelid", C::Oid),
            ("prqual", C::Text),
            ("prattrs", C::Texts),
        ],
    ),
    (
        "pg_publication_namespace",
        &[("oid", C::Oid), ("pnpubid", C::Oid), ("pnnspid", C::Oid)],
    ),
    (
        "pg_trigger",
        &[
            ("oid", C::Oid),
            ("tgrelid", C::Oid),
            ("tgname", C::Text),
            ("tgenabled", C::Text),
            ("tgisinternal", C::Bool),
        ],
    ),
    (
        "pg_rewrite",
        &[("oid", C::Oid), ("rulename", C::Text), ("ev_class", C::Oid)],
    ),
    (
        "pg_description",
        &[
            ("objoid", C::Oid),
            ("classoid", C::Oid),
            ("objsubid", C::Int),
            ("description", C::Text),
        ],
    ),
    (
        "pg_proc",
        &[
            ("oid", C::Oid),
            ("proname", C::Text),
            ("pronamespace", C::Oid),
            ("prorettype", C::Oid),
            ("prokind", C::Text),
        ],
    ),
    (
        "pg_enum",
        &[
            ("oid", C::Oid),
            ("enumtypid", C::Oid),
            ("enumsortorder", C::Float),
            ("enumlabel", C::Text),
        ],
    ),
    (
        "pg_extension",
        &[
            ("oid", C::Oid),
            ("extname", C::Text),
            ("extversion", C::Text),
        ],
    ),
    (
        "pg_tablespace",
        &[("oid", C::Oid), ("spcname", C::Text), ("spcowner", C::Oid)],
    ),
];

/// A user table as the catalog shows it: its name and (column, Arrow
/// type, nullable).
struct UserTable {
    name: String,
    columns: Vec<(String, DataType, bool)>,
}

fn user_tables(store: &Store) -> Vec<UserTable> {
    let mut tables: Vec<UserTable> = store
        .tables()
        .iter()
        .map(|t| UserTable {
            name: t.name().to_string(),
            columns: t
                .schema()
                .arrow()
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
                .collect(),
        })
        .collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    tables
}

/// One catalog row, in the table's column order.
type Row = Vec<ScalarValue>;

fn oid(v: i64) -> ScalarValue {
    ScalarValue::Int64(Some(v))
}
fn text(v: &str) -> ScalarValue {
    ScalarValue::Utf8(Some(v.to_string()))
}
fn null_text() -> ScalarValue {
    ScalarValue::Utf8(None)
}
fn boolean(v: bool) -> ScalarValue {
    ScalarValue::Boolean(Some(v))
}
fn null_texts() -> ScalarValue {
    ScalarValue::try_from(C::Texts.data_type()).expect("a list type has a null")
}

fn rows_of(table: &str, tables: &[UserTable]) -> Vec<Row> {
    match table {
        "pg_namespace" => [
            (PG_CATALOG_OID, PG_CATALOG),
            (PUBLIC_OID, "public"),
            (INFORMATION_SCHEMA_OID, "information_schema"),
        ]
        .iter()
        .map(|(o, n)| vec![oid(*o), text(n), oid(OWNER_OID), null_text()])
        .collect(),
        "pg_class" => tables.iter().map(class_row).collect(),
        "pg_attribute" => tables.iter().flat_map(attribute_rows).collect(),
        "pg_type" => TYPES.iter().map(type_row).collect(),
        "pg_database" => vec![vec![
            oid(DATABASE_OID),
            text(DATABASE),
            oid(OWNER_OID),
            oid(6),
            text("C"),
            text("C"),
            boolean(false),
            boolean(true),
            oid(-1),
            null_text(),
        ]],
        "pg_am" => vec![vec![oid(HEAP_AM_OID), text("heap"), text("t")]],
        "pg_roles" => vec![vec![
            oid(OWNER_OID),
            text(OWNER),
            boolean(false),
            boolean(true),
            boolean(false),
            boolean(false),
            boolean(true),
            boolean(false),
            oid(-1),
            null_text(),
            boolean(false),
        ]],
        "pg_user" => vec![vec![
            text(OWNER),
            oid(OWNER_OID),
            boolean(false),
            boolean(false),
        ]],
        "pg_tables" => tables
            .iter()
            .map(|t| {
                vec![
                    text("public"),
                    text(&t.name),
                    text(OWNER),
                    null_text(),
                    boolean(false),
                    boolean(false),
                    boolean(false),
                    boolean(false),
                ]
            })
            .collect(),
        "pg_settings" => SETTINGS
            .iter()
            .map(|(name, value)| {
                vec![
                    text(name),
                    text(value),
                    null_text(),
                    null_text(),
                    null_text(),
                ]
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn class_row(t: &UserTable) -> Row {
    vec![
        oid(table_oid(&t.name)),
        text(&t.name),
        oid(PUBLIC_OID),
        oid(0),
        oid(0),
        oid(OWNER_OID),
        oid(HEAP_AM_OID),
        oid(0),
        oid(0),
        oid(0),
        ScalarValue::Float64(Some(-1.0)),
        oid(0),
        oid(0),
        boolean(false),
        boolean(false),
        text("p"),
        text("r"),
        oid(t.columns.len() as i64),
        oid(0),
        boolean(false),
        boolean(false),
        boolean(false),
        boolean(false),
        boolean(false),
        boolean(true),
        text("d"),
        boolean(false),
        oid(0),
        null_text(),
        null_texts(),
        null_text(),
    ]
}

fn attribute_rows(t: &UserTable) -> Vec<Row> {
    t.columns
        .iter()
        .enumerate()
        .map(|(i, (name, data_type, nullable))| {
            let type_oid = i64::from(pg_type_oid(data_type));
            let (_, _, _, len, _, _) = type_of(type_oid);
            let collation = if matches!(type_oid, 25 | 1009) {
                DEFAULT_COLLATION_OID
            } else {
                0
            };
            vec![
                oid(table_oid(&t.name)),
                text(name),
                oid(type_oid),
                oid(-1),
                oid(len),
                oid(i as i64 + 1),
                oid(i64::from(type_oid == 1009)),
                oid(-1),
                oid(-1),
                boolean(len > 0),
                text(if len == 8 { "d" } else { "i" }),
                text(if len > 0 { "p" } else { "x" }),
                text(""),
                boolean(!nullable),
                boolean(false),
                boolean(false),
                text(""),
                text(""),
                boolean(false),
                boolean(true),
                oid(0),
                oid(collation),
                null_text(),
                null_texts(),
            ]
        })
        .collect()
}

fn type_of(type_oid: i64) -> (i64, &'static str, &'static str, i64, &'static str, i64) {
    TYPES
        .iter()
        .find(|t| t.0 == type_oid)
        .copied()
        .unwrap_or((25, "text", "text", -1, "S", 0))
}

fn type_row(t: &(i64, &str, &str, i64, &str, i64)) -> Row {
    let (type_oid, name, _, len, category, element) = *t;
    let array = TYPES.iter().find(|a| a.5 == type_oid).map_or(0, |a| a.0);
    vec![
        oid(type_oid),
        text(name),
        oid(PG_CATALOG_OID),
        oid(OWNER_OID),
        oid(len),
        boolean(len > 0 && len <= 8),
        text("b"),
        text(category),
        boolean(true),
        text(","),
        oid(0),
        oid(element),
        oid(array),
        boolean(false),
        oid(0),
        oid(-1),
        oid(0),
        oid(if category == "S" {
            DEFAULT_COLLATION_OID
        } else {
            0
        }),
    ]
}

fn mem_table(columns: Columns, rows: Vec<Row>) -> Result<MemTable> {
    let schema: SchemaRef = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, kind)| Field::new(*name, kind.data_type(), true))
            .collect::<Vec<_>>(),
    ));
    let arrays = columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| {
            if rows.is_empty() {
                return Ok(arrow::array::new_empty_array(&kind.data_type()));
            }
            ScalarValue::iter_to_array(rows.iter().map(|r| r[i].clone()))
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    MemTable::try_new(schema, vec![vec![batch]])
}

/// Settings `current_setting` and `pg_settings` show; the Postgres door
/// answers `SHOW` from the same list (plus what a session `SET`).
pub const SETTINGS: &[(&str, &str)] = &[
    ("server_version", "16.0"),
    ("server_version_num", "160000"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO, MDY"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "postgres"),
    ("integer_datetimes", "on"),
    ("standard_conforming_strings", "on"),
    ("search_path", "public"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "on"),
    ("default_transaction_read_only", "on"),
    ("max_identifier_length", "63"),
    ("lc_collate", "C"),
    ("lc_ctype", "C"),
    ("application_name", ""),
];

/// The value of a setting by name (case-insensitive, as Postgres).
pub fn setting(name: &str) -> Option<&'static str> {
    SETTINGS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// Registers the catalog functions clients call, each also under its
/// `pg_catalog.` name.
pub fn register_functions(state: &mut SessionState) -> Result<()> {
    for f in functions() {
        state.register_udf(Arc::new(ScalarUDF::new_from_impl(f)))?;
    }
    Ok(())
}

type Eval = fn(&[ColumnarValue]) -> Result<ColumnarValue>;

/// A catalog function: a constant, or a small mapping of its arguments.
#[derive(Debug)]
struct PgFunction {
    name: &'static str,
    aliases: Vec<String>,
    signature: Signature,
    returns: DataType,
    eval: Eval,
}

impl PartialEq for PgFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for PgFunction {}
impl std::hash::Hash for PgFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

impl ScalarUDFImpl for PgFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        (self.eval)(&args.args)
    }
}

fn function(name: &'static str, signature: Signature, returns: DataType, eval: Eval) -> PgFunction {
    PgFunction {
        name,
        aliases: vec![format!("{PG_CATALOG}.{name}")],
        signature,
        returns,
        eval,
    }
}

fn constant(value: ScalarValue) -> Result<ColumnarValue> {
    Ok(ColumnarValue::Scalar(value))
}

fn any_args() -> Signature {
    Signature::variadic_any(Volatility::Stable)
}

fn no_args() -> Signature {
    Signature::nullary(Volatility::Stable)
}

/// The first argument as text, row by row, mapped by `f`.
fn map_text(
    args: &[ColumnarValue],
    f: fn(Option<&str>) -> Option<String>,
) -> Result<ColumnarValue> {
    let Some(first) = args.first() else {
        return constant(ScalarValue::Utf8(None));
    };
    as_text(first, |strings| {
        let out: StringArray = strings.iter().map(f).collect();
        Arc::new(out)
    })
}

/// `f` over an argument read as text, its answer a scalar or an array as
/// the argument was.
fn as_text(arg: &ColumnarValue, f: impl FnOnce(&StringArray) -> ArrayRef) -> Result<ColumnarValue> {
    let array = arrow::compute::cast(&arg.to_array(1)?, &DataType::Utf8)?;
    let strings = array
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DataFusionError::Internal("cast to text".into()))?;
    let out = f(strings);
    match arg {
        ColumnarValue::Scalar(_) => {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        }
        ColumnarValue::Array(_) => Ok(ColumnarValue::Array(out)),
    }
}

fn functions() -> Vec<PgFunction> {
    let text_type = DataType::Utf8;
    let mut all = vec![
        function("version", no_args(), text_type.clone(), |_| {
            constant(text(&format!(
                "PostgreSQL 16.0 (Atoll {}) on x86_64-pc-linux-gnu",
                env!("CARGO_PKG_VERSION")
            )))
        }),
        function("current_schema", no_args(), text_type.clone(), |_| {
            constant(text("public"))
        }),
        function("current_database", no_args(), text_type.clone(), |_| {
            constant(text(DATABASE))
        }),
        function("current_user", no_args(), text_type.clone(), |_| {
            constant(text(OWNER))
        }),
        function("session_user", no_args(), text_type.clone(), |_| {
            constant(text(OWNER))
        }),
        function("current_schemas", any_args(), C::Texts.data_type(), |_| {
            let values: ArrayRef = Arc::new(StringArray::from(vec!["public"]));
            let list = ListArray::try_new(
                Arc::new(Field::new_list_field(DataType::Utf8, true)),
                arrow::buffer::OffsetBuffer::from_lengths([1]),
                values,
                None,
            )?;
            constant(ScalarValue::List(Arc::new(list)))
        }),
        function("pg_get_userbyid", any_args(), text_type.clone(), |_| {
            constant(text(OWNER))
        }),
        function("pg_encoding_to_char", any_args(), text_type.clone(), |_| {
            constant(text("UTF8"))
        }),
        function("format_type", any_args(), text_type.clone(), |args| {
            map_text(args, |oid| {
                let oid = oid?.parse::<i64>().ok()?;
                Some(type_of(oid).2.to_string())
            })
        }),
        function("quote_ident", any_args(), text_type.clone(), |args| {
            map_text(args, |name| name.map(quote_ident))
        }),
        function("parse_ident", any_args(), C::Texts.data_type(), parse_ident),
        function("current_setting", any_args(), text_type.clone(), |args| {
            map_text(args, |name| setting(name?).map(str::to_string))
        }),
    ];
    for name in [
        "pg_table_is_visible",
        "pg_type_is_visible",
        "pg_function_is_visible",
        "has_table_privilege",
        "has_schema_privilege",
        "has_database_privilege",
        "has_column_privilege",
        "has_any_column_privilege",
    ] {
        all.push(function(name, any_args(), DataType::Boolean, |_| {
            constant(boolean(true))
        }));
    }
    all.push(function(
        "pg_relation_is_publishable",
        any_args(),
        DataType::Boolean,
        |_| constant(boolean(false)),
    ));
    // Atoll has no stored expressions, comments, indexes or constraints.
    for name in [
        "pg_get_expr",
        "obj_description",
        "col_description",
        "shobj_description",
        "pg_get_indexdef",
        "pg_get_constraintdef",
        "pg_get_viewdef",
        "pg_get_triggerdef",
        "pg_get_statisticsobjdef_columns",
    ] {
        all.push(function(name, any_args(), DataType::Utf8, |_| {
            constant(ScalarValue::Utf8(None))
        }));
    }
    all
}

/// `parse_ident('public."My Table"')` is `{public,My Table}`: a qualified
/// name split at its dots, quotes removed.
fn parse_ident(args: &[ColumnarValue]) -> Result<ColumnarValue> {
    let Some(first) = args.first() else {
        return constant(null_texts());
    };
    as_text(first, |names| {
        let mut list = arrow::array::ListBuilder::new(arrow::array::StringBuilder::new());
        for name in names.iter() {
            match name {
                Some(name) => {
                    for part in split_ident(name) {
                        list.values().append_value(part);
                    }
                    list.append(true);
                }
                None => list.append(false),
            }
        }
        Arc::new(list.finish())
    })
}

fn split_ident(name: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                parts.last_mut().expect("one part").push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(String::new()),
            c if quoted => parts.last_mut().expect("one part").push(c),
            c => parts
                .last_mut()
                .expect("one part")
                .push(c.to_ascii_lowercase()),
        }
    }
    parts
}

/// An identifier as Postgres quotes it: bare when it is lower-case
/// letters, digits and underscores, in double quotes otherwise.
fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::TimeUnit;

    #[test]
    fn atoll_types_map_to_postgres_types() {
        assert_eq!(pg_type_oid(&DataType::Int64), 20);
        assert_eq!(pg_type_oid(&DataType::Float64), 701);
        assert_eq!(pg_type_oid(&DataType::Boolean), 16);
        assert_eq!(pg_type_oid(&DataType::Utf8), 25);
        let time = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(pg_type_oid(&time), 1184);
        assert_eq!(pg_type_oid(&C::Texts.data_type()), 1009);
        assert_eq!(type_of(1184).2, "timestamp with time zone");
    }

    #[test]
    fn table_oids_are_stable_and_distinct() {
        assert_eq!(table_oid("events"), table_oid("events"));
        assert_ne!(table_oid("events"), table_oid("requests"));
        assert!(table_oid("a") > DATABASE_OID);
    }

    #[test]
    fn qualified_names_are_split() {
        assert_eq!(split_ident("public.events"), ["public", "events"]);
        assert_eq!(split_ident("\"My \"\"T\".x"), ["My \"T", "x"]);
        assert_eq!(split_ident("Events"), ["events"]);
    }

    #[test]
    fn identifiers_are_quoted_as_postgres_does() {
        assert_eq!(quote_ident("events"), "events");
        assert_eq!(quote_ident("Events"), "\"Events\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
