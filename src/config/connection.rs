//! Where the data lives: PostgreSQL (the record) and Redis (the queues).

use clap::Args;

/// Default of `--queue-prefix`: flowpilot's normal queue (`queue::keys`
/// holds the same name, and a test there holds them together).
pub const DEFAULT_QUEUE_PREFIX: &str = "flowpilot:queue";

/// The payload serializer a Python arq peer is configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SerializerName {
    /// Python pickle, arq's default.
    Pickle,
    /// JSON.
    Json,
    /// MessagePack.
    Msgpack,
}

impl std::str::FromStr for SerializerName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pickle" => Ok(SerializerName::Pickle),
            "json" => Ok(SerializerName::Json),
            "msgpack" => Ok(SerializerName::Msgpack),
            other => Err(format!(
                "unknown serializer `{other}` (expected pickle, json or msgpack)"
            )),
        }
    }
}

/// PostgreSQL, where every execution lives.
#[derive(Debug, Clone, Args)]
pub struct DbConfig {
    /// PostgreSQL URL, e.g. `postgres://user:pass@host:5432/flowpilot`. No
    /// default: the database is the system of record, so it must be named.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Connections in the pool. Default 10: a worker's concurrent jobs plus
    /// the maintenance loop, within PostgreSQL's default 100 for ~8 processes.
    #[arg(long, env = "FLOWPILOT_DB_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_max_connections: u32,
}

/// Redis, which moves work.
#[derive(Debug, Clone, Args)]
pub struct RedisConfig {
    /// Redis URL, `redis://host:port/db`. Default `redis://127.0.0.1:6379/0`,
    /// arq's own default.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379/0")]
    pub redis_url: String,
    /// Serializer for payloads we write: `pickle` (arq's default), `json` or
    /// `msgpack`; must match the Python side's `job_serializer`. Reading
    /// accepts all three. Default `pickle`.
    #[arg(long, env = "FLOWPILOT_SERIALIZER", default_value = "pickle")]
    pub serializer: SerializerName,
    /// Prefix of the priority queues the engine uses: `<prefix>:high`,
    /// `<prefix>` and `<prefix>:low`, plus the dead set `<prefix>:dead`.
    /// Default `flowpilot:queue`: apart from `arq:queue`, where Python arq
    /// workers started with defaults look (they would take our jobs and
    /// fail them). Give separate flowpilot installations sharing one Redis
    /// database their own prefix.
    #[arg(long, env = "FLOWPILOT_QUEUE_PREFIX", default_value = DEFAULT_QUEUE_PREFIX)]
    pub queue_prefix: String,
}
