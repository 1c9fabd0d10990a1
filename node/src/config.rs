//! `atoll serve` flags; each can also be set by an `ATOLL_*` variable.

use std::time::Duration;

use atoll_query::QueryConfig;
use clap::Args;

/// A byte count written as `1048576`, `64MiB`, `2GiB`, `512KB`...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub usize);

/// A flag or setting that cannot be used, named with what would be.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0:?} is not a size like 512MiB")]
    NotASize(String),
    #[error("unknown size unit {0:?}: use B, KiB, MiB, GiB (or KB, MB, GB)")]
    SizeUnit(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
    #[error("{0:?} is not a number")]
    NotANumber(String),
    #[error("{0} is not a power of two between 1 and 65536")]
    Partitions(u32),
    #[error("{0:?} is not a duration such as 30m or 1h, or `never`")]
    CompressAfter(String),
    #[error("{0:?} is not a duration of more than zero, such as 90m, 24h or 7d")]
    Retention(String),
    #[error("cannot read the machine's memory size: give --memory-limit")]
    MachineMemory,
    #[error(
        "--query-memory ({queries}) must be less than --memory-limit ({limit}): queries count within it"
    )]
    QueryMemory { queries: String, limit: String },
    #[error("cannot read --admin-key-file {path}: {error}")]
    AdminKeyFile { path: String, error: String },
    #[error("the admin key must be at least 16 characters (it guards everything)")]
    ShortAdminKey,
    #[error("give the admin key once: --admin-key-file or --admin-key (ATOLL_ADMIN_KEY), not both")]
    TwoAdminKeys,
    #[error(
        "refusing to serve without API keys on {0}, which is not a loopback address: give an admin key (--admin-key-file or ATOLL_ADMIN_KEY), or pass --insecure-no-auth to serve anyone who reaches the port"
    )]
    PublicWithoutAuth(String),
}

impl std::str::FromStr for ByteSize {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: usize = num
            .parse()
            .map_err(|_| ConfigError::NotASize(s.to_string()))?;
        let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => return Err(ConfigError::SizeUnit(other.to_string())),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| ConfigError::TooLarge(s.to_string()))
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the HTTP API and dashboard (port 0 picks a free port).
    #[arg(long, env = "ATOLL_HTTP_ADDR", default_value = "127.0.0.1:7070")]
    pub http_addr: String,

    /// This node's name in the cluster, stable across restarts (default: the
    /// HTTP address).
    #[arg(long, env = "ATOLL_NODE_NAME")]
    pub node_name: Option<String>,

    /// Address of the internal Arrow Flight service (replication, queries).
    #[arg(long, env = "ATOLL_FLIGHT_ADDR", default_value = "127.0.0.1:7071")]
    pub flight_addr: String,

    /// UDP address for gossip (port 0 picks a free port).
    #[arg(long, env = "ATOLL_GOSSIP_ADDR", default_value = "127.0.0.1:7072")]
    pub gossip_addr: String,

    /// Address the other nodes reach this node's Flight service at, when it
    /// is not `--flight-addr` (a 0.0.0.0 bind, NAT, a proxy in between).
    #[arg(long, env = "ATOLL_FLIGHT_ADVERTISE_ADDR")]
    pub flight_advertise_addr: Option<String>,

    /// Address the other nodes send gossip to, when it is not
    /// `--gossip-addr` (a 0.0.0.0 bind, NAT, a proxy in between).
    #[arg(long, env = "ATOLL_GOSSIP_ADVERTISE_ADDR")]
    pub gossip_advertise_addr: Option<String>,

    /// Gossip address of a node of the cluster to join (repeatable). Without
    /// seeds the node founds a cluster of its own.
    #[arg(long = "seed", env = "ATOLL_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,

    /// Name of the cluster; nodes of one cluster share it.
    #[arg(long, env = "ATOLL_CLUSTER_NAME", default_value = "atoll")]
    pub cluster_name: String,

    /// Secret shared by the nodes of a cluster: gossip and internal calls
    /// without it are refused. Generated (and printed) for a founding node
    /// when not given; required to join.
    #[arg(long, env = "ATOLL_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,

    /// Replicas of each partition (N), capped by the number of nodes.
    #[arg(long, env = "ATOLL_REPLICAS", default_value_t = 3)]
    pub replicas: usize,

    /// Replicas that must hold an event before it is acknowledged (W);
    /// default: a majority of N.
    #[arg(long, env = "ATOLL_WRITE_QUORUM")]
    pub write_quorum: Option<usize>,

    /// Milliseconds between gossip rounds.
    #[arg(long, env = "ATOLL_GOSSIP_INTERVAL_MS", default_value_t = 200)]
    pub gossip_interval_ms: u64,

    /// Partitions of the ring (a power of two), fixed for a cluster's life.
    #[arg(long, env = "ATOLL_PARTITIONS", default_value_t = atoll_ring::DEFAULT_PARTITIONS,
          value_parser = parse_partitions)]
    pub partitions: u32,

    /// Largest ingest request body, before and after decompression.
    #[arg(long, env = "ATOLL_MAX_BODY_BYTES", default_value = "64MiB")]
    pub max_body_bytes: ByteSize,

    /// Tables this node holds at most (a request creating one more gets
    /// 422); give every node of a cluster the same.
    #[arg(long, env = "ATOLL_MAX_TABLES", default_value_t = 1_000)]
    pub max_tables: usize,

    /// Ingest requests decoded and stored at once; more wait for a turn (at
    /// most `--ingest-queue-wait-ms`, then 503 with Retry-After, nothing of
    /// them stored), so
    /// that many large or compressed bodies cannot exhaust memory together.
    #[arg(long, env = "ATOLL_MAX_CONCURRENT_INGEST", default_value_t = 8)]
    pub max_concurrent_ingest: usize,

    /// How long an ingest request waits for its turn before it gets 503.
    #[arg(long, env = "ATOLL_INGEST_QUEUE_WAIT_MS", default_value_t = 10_000)]
    pub ingest_queue_wait_ms: u64,

    /// Rows at which a partition's append buffer is sealed into one batch.
    #[arg(long, env = "ATOLL_SEAL_ROWS", default_value_t = 32 * 1024)]
    pub seal_rows: usize,

    /// Milliseconds after which a partition's append buffer is sealed anyway.
    #[arg(long, env = "ATOLL_SEAL_INTERVAL_MS", default_value_t = 1000)]
    pub seal_interval_ms: u64,

    /// How long events are kept, by their `time`, in tables without a
    /// `retention` setting (e.g. `24h`, `7d`); older batches are dropped and
    /// scans skip older rows. Default: until the table is dropped.
    #[arg(long, env = "ATOLL_RETENTION", value_parser = retention_arg)]
    pub retention: Option<Duration>,

    /// Sealed batches made (sealed or merged) at least this long ago (e.g.
    /// `1h`, `30m`) are kept LZ4-compressed in memory and decompressed when
    /// a scan reads them; `0s` packs them as they are sealed, `never` keeps
    /// every batch plain.
    #[arg(long, env = "ATOLL_COMPRESS_AFTER", default_value = "1h")]
    pub compress_after: CompressAfter,

    /// Directory of this node's write-ahead log and snapshots. Without it
    /// the node keeps its data in memory only: a restart loses what it held
    /// (replicas on other nodes keep theirs).
    #[arg(long, env = "ATOLL_DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,

    /// When the log is fsync'ed: `always` (before every acknowledgement;
    /// concurrent requests share one fsync), `interval=MS` (acknowledged
    /// once written to the OS, fsync'ed every MS), or `never`.
    #[arg(long, env = "ATOLL_FSYNC", default_value = "always")]
    pub fsync: atoll_store::wal::FsyncPolicy,

    /// Partitions this node catches up (or hands hints back for) at once;
    /// 0 pauses handoff: moves stay pending and returning replicas stay
    /// incomplete until it is raised again (by a restart with another value).
    #[arg(long, env = "ATOLL_TRANSFER_LIMIT", default_value_t = 2)]
    pub transfer_limit: usize,

    /// Memory this node may use for data and queries (e.g. `8GiB`); near
    /// it, cold batches are compressed and then the oldest events evicted.
    /// Default: half of the machine's memory (or of its cgroup's limit).
    #[arg(long, env = "ATOLL_MEMORY_LIMIT")]
    pub memory_limit: Option<ByteSize>,

    /// Memory all running queries of this node may hold together, within
    /// --memory-limit. Default: a quarter of it.
    #[arg(long, env = "ATOLL_QUERY_MEMORY")]
    pub query_memory: Option<ByteSize>,

    /// Memory one query may hold (within --query-memory). Default: half of
    /// --query-memory.
    #[arg(long, env = "ATOLL_QUERY_MEMORY_PER_QUERY")]
    pub query_memory_per_query: Option<ByteSize>,

    /// Longest a query may run, in milliseconds; a request may ask for less.
    #[arg(long, env = "ATOLL_QUERY_TIMEOUT_MS", default_value_t = 30_000)]
    pub query_timeout_ms: u64,

    /// Queries running at once; further ones wait (see --query-queue-wait-ms).
    #[arg(long, env = "ATOLL_MAX_CONCURRENT_QUERIES", default_value_t = 16)]
    pub max_concurrent_queries: usize,

    /// Live views (the dashboard's Live mode, `POST /v1/live`) this node
    /// coordinates at once; as an owner it serves at most 4 times as many
    /// subscriptions. Further ones are answered 503.
    #[arg(long, env = "ATOLL_MAX_LIVE_SESSIONS", default_value_t = 16)]
    pub max_live_sessions: usize,

    /// How long a query waits for a slot before it is answered 503.
    #[arg(long, env = "ATOLL_QUERY_QUEUE_WAIT_MS", default_value_t = 2_000)]
    pub query_queue_wait_ms: u64,

    /// Rows a JSON query answer holds at most (`stats.truncated` says when
    /// more were cut); Arrow answers are streamed whole.
    #[arg(long, env = "ATOLL_MAX_RESULT_ROWS", default_value_t = 10_000)]
    pub max_result_rows: usize,

    /// Answer queries with the partitions that can be reached when some have
    /// no reachable replica (`stats.coverage` < 1), instead of failing with
    /// 503; a request's `allow_partial` overrides it.
    #[arg(long, env = "ATOLL_ALLOW_PARTIAL")]
    pub allow_partial: bool,

    /// Parallel streams per query scan (default: the number of cores).
    #[arg(long, env = "ATOLL_QUERY_PARALLELISM")]
    pub query_parallelism: Option<usize>,

    /// Most bytes one call of a function whose output size is an argument
    /// (`repeat`, `lpad`, `range`, `array_repeat`...) may make for a batch;
    /// as list elements, a sixteenth of it (256MiB: 16M elements). Over it
    /// the query gets a 400 naming the function.
    #[arg(long, env = "ATOLL_MAX_FUNCTION_OUTPUT", default_value = "256MiB")]
    pub max_function_output: ByteSize,

    /// File holding the first admin key (its first line). With an admin
    /// key, every `/v1/` request on this node needs an API key
    /// (docs/security.md); without one the node serves only on a loopback
    /// address, unless `--insecure-no-auth`.
    #[arg(long, env = "ATOLL_ADMIN_KEY_FILE")]
    pub admin_key_file: Option<std::path::PathBuf>,

    /// The admin key itself (at least 16 characters). On a command line it
    /// shows in `ps`: prefer `--admin-key-file` or `ATOLL_ADMIN_KEY`.
    #[arg(long, env = "ATOLL_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// Serve without API keys on a non-loopback address (anyone who can
    /// reach the port can read, write and drop everything).
    #[arg(long, env = "ATOLL_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// Serve `/metrics` without an API key (for a scraper that has none).
    #[arg(long, env = "ATOLL_OPEN_METRICS")]
    pub open_metrics: bool,

    /// Another name clients reach this node by (a DNS name, `host:port`);
    /// requests with any other `Host` are refused, so that a DNS-rebinding
    /// page cannot reach the node (repeatable). A node on 0.0.0.0 takes any.
    #[arg(
        long = "allowed-host",
        env = "ATOLL_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,

    /// A site (`https://host:port`) whose pages may call this node from a
    /// browser, besides the node's own dashboard (repeatable).
    #[arg(
        long = "allowed-origin",
        env = "ATOLL_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Address to serve OpenTelemetry's OTLP over gRPC on (traces and
    /// logs; e.g. `0.0.0.0:4317`). Off unless given; OTLP over HTTP is
    /// always on the HTTP port (`/v1/traces`, `/v1/logs`).
    #[arg(long, env = "ATOLL_OTLP_GRPC_ADDR")]
    pub otlp_grpc_addr: Option<String>,

    /// Address to serve the Postgres wire protocol on (`psql`, drivers;
    /// e.g. `127.0.0.1:5432`). Off unless given.
    #[arg(long, env = "ATOLL_PG_ADDR")]
    pub pg_addr: Option<String>,

    /// Address to serve Arrow Flight SQL on (ADBC, JDBC, dataframes; e.g.
    /// `127.0.0.1:8815`). Off unless given; not the internal Flight port.
    #[arg(long, env = "ATOLL_FLIGHT_SQL_ADDR")]
    pub flight_sql_addr: Option<String>,

    /// Certificate chain (PEM) to serve the HTTP API and dashboard over
    /// HTTPS instead of HTTP (with `--tls-key`); with `--internal-tls`,
    /// Flight between nodes too.
    #[arg(long, env = "ATOLL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, env = "ATOLL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Encrypt the internal Flight service (replication, handoff, query
    /// fragments) with `--tls-cert`, and call peers over TLS. Every node of
    /// a cluster sets it, or none.
    #[arg(long, env = "ATOLL_INTERNAL_TLS")]
    pub internal_tls: bool,

    /// Certificates (PEM) that peers' Flight certificates must chain to:
    /// the cluster's CA. Default: `--tls-cert` itself (every node shares
    /// one certificate).
    #[arg(long, env = "ATOLL_TLS_CA", requires = "internal_tls")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// The name every node's certificate carries, checked on internal TLS
    /// connections. Default: the host of the peer's Flight address (its
    /// certificate then names that IP address or DNS name).
    #[arg(long, env = "ATOLL_INTERNAL_TLS_NAME", requires = "internal_tls")]
    pub internal_tls_name: Option<String>,

    /// Once serving, write the node's name and the addresses it bound (JSON:
    /// `node`, `http_addr`, `http_url`, `flight_addr`, `gossip_addr`, and
    /// `otlp_grpc_addr`, `pg_addr`, `flight_sql_addr` when served) to this
    /// file, so
    /// that scripts starting nodes on port 0 learn the ports they got.
    #[arg(long, env = "ATOLL_READY_FILE")]
    pub ready_file: Option<std::path::PathBuf>,

    /// Log filter, as in RUST_LOG (e.g. `info`, `atoll_query=debug`).
    #[arg(long, env = "ATOLL_LOG", default_value = "info")]
    pub log: String,
}

fn parse_partitions(s: &str) -> Result<u32, ConfigError> {
    let n: u32 = s
        .parse()
        .map_err(|_| ConfigError::NotANumber(s.to_string()))?;
    if n.is_power_of_two() && n <= 65_536 {
        Ok(n)
    } else {
        Err(ConfigError::Partitions(n))
    }
}

/// `--compress-after`: an age, or `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressAfter(pub Option<Duration>);

impl std::str::FromStr for CompressAfter {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "never" | "off" => Ok(CompressAfter(None)),
            t => humantime::parse_duration(t)
                .map(|d| CompressAfter(Some(d)))
                .map_err(|_| ConfigError::CompressAfter(text.to_string())),
        }
    }
}

fn retention_arg(text: &str) -> Result<Duration, ConfigError> {
    atoll_store::parse_retention(text).ok_or_else(|| ConfigError::Retention(text.to_string()))
}

/// The defaults of `atoll serve` with no flags, from the flags' own
/// declarations (one source), ignoring `ATOLL_*` variables: a library's
/// configuration must not change with its host's environment.
impl Default for ServeArgs {
    fn default() -> ServeArgs {
        use clap::{FromArgMatches, builder::Resettable};
        let command = ServeArgs::augment_args(clap::Command::new("atoll"))
            .mut_args(|a| a.env(Resettable::Reset));
        let matches = command
            .try_get_matches_from(["atoll"])
            .expect("every flag of atoll serve has a default or is optional");
        ServeArgs::from_arg_matches(&matches).expect("the defaults are valid")
    }
}

impl ServeArgs {
    /// The node's certificate (`--tls-cert`/`--tls-key`), read and checked.
    pub fn certificate(&self) -> Result<Option<crate::tls::NodeCertificate>, crate::tls::TlsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => crate::tls::NodeCertificate::load(cert, key).map(Some),
            _ if self.internal_tls => Err(crate::tls::TlsError::Needs("--internal-tls")),
            _ => Ok(None),
        }
    }

    /// TLS on Flight between nodes, when `--internal-tls` asks for it.
    pub fn internal_tls(
        &self,
        certificate: Option<&crate::tls::NodeCertificate>,
    ) -> Result<Option<atoll_cluster::tls::InternalTls>, crate::tls::TlsError> {
        let Some(cert) = certificate.filter(|_| self.internal_tls) else {
            return Ok(None);
        };
        let ca = match &self.tls_ca {
            Some(path) => crate::tls::load_ca(path)?,
            None => cert.cert_pem.clone(),
        };
        Ok(Some(atoll_cluster::tls::InternalTls::new(
            &ca,
            self.internal_tls_name.clone(),
        )))
    }

    /// The bootstrap admin key, if one is given (checked), and whether
    /// serving on `doors` (every address clients reach: HTTP, OTLP/gRPC)
    /// without one is allowed: only when all are loopback addresses.
    pub fn admin_key(&self, doors: &[std::net::SocketAddr]) -> Result<Option<String>, ConfigError> {
        let from_file = match &self.admin_key_file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| ConfigError::AdminKeyFile {
                        path: path.display().to_string(),
                        error: e.to_string(),
                    })?;
                Some(text.lines().next().unwrap_or("").trim().to_string())
            }
            None => None,
        };
        let key = match (from_file, &self.admin_key) {
            (Some(_), Some(_)) => return Err(ConfigError::TwoAdminKeys),
            (Some(k), None) => Some(k),
            (None, k) => k.as_ref().map(|k| k.trim().to_string()),
        };
        match key {
            Some(k) if k.len() < 16 => Err(ConfigError::ShortAdminKey),
            Some(k) => Ok(Some(k)),
            None if self.insecure_no_auth => Ok(None),
            None => match doors.iter().find(|a| !a.ip().is_loopback()) {
                None => Ok(None),
                Some(public) => Err(ConfigError::PublicWithoutAuth(public.to_string())),
            },
        }
    }

    pub fn seal_interval(&self) -> Duration {
        Duration::from_millis(self.seal_interval_ms)
    }

    pub fn query_config(&self, budget: &crate::memory::MemoryBudget) -> QueryConfig {
        let defaults = QueryConfig::default();
        QueryConfig {
            target_partitions: self.query_parallelism.unwrap_or(defaults.target_partitions),
            pool_bytes: budget.queries,
            query_bytes: budget.per_query,
            timeout: Duration::from_millis(self.query_timeout_ms),
            max_concurrent: self.max_concurrent_queries,
            queue_wait: Duration::from_millis(self.query_queue_wait_ms),
            max_json_rows: self.max_result_rows,
            allow_partial: self.allow_partial,
            max_function_bytes: self.max_function_output.0,
            max_live_sessions: self.max_live_sessions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!("64MiB".parse(), Ok(ByteSize(64 << 20)));
        assert_eq!("2 GiB".parse(), Ok(ByteSize(2 << 30)));
        assert_eq!("1000".parse(), Ok(ByteSize(1000)));
        assert_eq!("5MB".parse(), Ok(ByteSize(5_000_000)));
        assert!("lots".parse::<ByteSize>().is_err());
        assert_eq!(
            "5 parsecs".parse::<ByteSize>(),
            Err(ConfigError::SizeUnit("parsecs".into()))
        );
    }

    #[test]
    fn partitions_are_powers_of_two() {
        assert_eq!(parse_partitions("64"), Ok(64));
        assert!(parse_partitions("48").is_err());
        assert!(parse_partitions("0").is_err());
    }
}
