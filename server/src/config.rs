//! Typed configuration: `config/default.toml` (compiled in) → optional file → `QUORUM__*`
//! environment variables. Unknown keys are rejected at every level, and nothing outside this
//! module reads the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// The defaults, compiled into the binary so it runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Values that must never be used as a signing key outside demo mode.
const PLACEHOLDER_MARKERS: &[&str] = &["change-me", "changeme", "placeholder", "example", "secret"];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub demo: bool,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub secrets: SecretsConfig,
    pub limits: LimitsConfig,
    pub executor: ExecutorConfig,
    pub workflow: WorkflowConfig,
    pub rate_limit: RateLimitConfig,
    pub log: LogConfig,
    pub slack: SlackConfig,
}

/// Slack: a bot token (messages, threads, updates, direct messages, approve / reject buttons) or
/// an incoming webhook (messages only). Neither set: nothing is sent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    pub bot_token: Secret,
    pub webhook_url: Secret,
    /// Verifies that interactions (button clicks, modal submissions) come from Slack.
    pub signing_secret: Secret,
    /// Channel for PODs that name none.
    pub default_channel: String,
    pub api_base_url: String,
    /// Base URL of the portal in links; empty means `server.public_url`.
    pub portal_url: String,
}

/// How the portal talks to Slack, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlackMode {
    Off,
    Bot,
    Webhook,
}

impl SlackMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Bot => "bot",
            Self::Webhook => "webhook",
        }
    }
}

impl SlackConfig {
    pub fn mode(&self) -> SlackMode {
        if !self.bot_token.is_empty() {
            SlackMode::Bot
        } else if !self.webhook_url.is_empty() {
            SlackMode::Webhook
        } else {
            SlackMode::Off
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutorConfig {
    pub max_concurrent: usize,
    pub max_per_instance: u32,
    pub max_per_author: u32,
    /// The `quorum-sandbox` binary; empty means next to the running `quorum`.
    pub sandbox_bin: String,
    /// Where the guest compiled for this host is kept; empty means `<data_dir>/sandbox-cache`.
    pub sandbox_cache_dir: String,
    /// Data segment cap of each sandbox child, in MiB (`RLIMIT_DATA`), beyond `limits.memory_mb`.
    pub sandbox_data_mb: u64,
    /// Sandbox children kept started and waiting for a job (each still runs one job only).
    pub sandbox_pool: usize,
    /// Fork children from a template process that has already loaded the guest and started
    /// QuickJS, rather than starting each from scratch.
    pub sandbox_template: bool,
    /// PostgreSQL target connections kept open after an execution, per instance and database,
    /// for the next one (reset first); 0 opens a new connection for every execution.
    pub target_idle: usize,
    /// How long a kept target connection may wait before it is closed.
    pub target_idle_secs: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    pub pending_ttl_secs: i64,
    pub approval_ttl_secs: i64,
    pub execution_window_secs: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    pub master_key: Secret,
}

/// Execution limits; the same shape, all optional, is an instance's override.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Wall-clock time for a whole execution.
    pub wall_ms: u32,
    /// One statement or `db.*` call.
    pub db_call_ms: u32,
    /// The script's linear memory.
    pub memory_mb: u32,
    /// `db.*` calls per script.
    pub max_calls: u32,
    /// Rows stored per result, and rows handed to a script per call.
    pub max_rows: u32,
    pub max_result_bytes: u64,
    /// Bytes of `console` output kept per script.
    pub max_log_bytes: u64,
}

impl LimitsConfig {
    /// Inclusive bounds each limit must stay within, for defaults and overrides alike.
    pub const WALL_MS: (u32, u32) = (100, 300_000);
    pub const DB_CALL_MS: (u32, u32) = (100, 300_000);
    pub const MEMORY_MB: (u32, u32) = (16, 1024);
    pub const MAX_CALLS: (u32, u32) = (1, 1_000_000);
    pub const MAX_ROWS: (u32, u32) = (1, 1_000_000);
    pub const MAX_RESULT_BYTES: (u64, u64) = (1024, 256 * 1024 * 1024);
    pub const MAX_LOG_BYTES: (u64, u64) = (1024, 64 * 1024 * 1024);

    /// The first limit outside its bounds, as "name must be between a and b".
    pub fn out_of_bounds(&self) -> Option<String> {
        let check = |name: &str, v: u64, (lo, hi): (u64, u64)| {
            (!(lo..=hi).contains(&v)).then(|| format!("{name} must be between {lo} and {hi}"))
        };
        let w = |(a, b): (u32, u32)| (u64::from(a), u64::from(b));
        check("wall_ms", self.wall_ms.into(), w(Self::WALL_MS))
            .or_else(|| check("db_call_ms", self.db_call_ms.into(), w(Self::DB_CALL_MS)))
            .or_else(|| check("memory_mb", self.memory_mb.into(), w(Self::MEMORY_MB)))
            .or_else(|| check("max_calls", self.max_calls.into(), w(Self::MAX_CALLS)))
            .or_else(|| check("max_log_bytes", self.max_log_bytes, Self::MAX_LOG_BYTES))
            .or_else(|| check("max_rows", self.max_rows.into(), w(Self::MAX_ROWS)))
            .or_else(|| {
                check(
                    "max_result_bytes",
                    self.max_result_bytes,
                    Self::MAX_RESULT_BYTES,
                )
            })
            .or_else(|| {
                (self.db_call_ms > self.wall_ms)
                    .then(|| "db_call_ms must not exceed wall_ms".to_owned())
            })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub public_url: String,
    pub trusted_proxies: Vec<IpNet>,
    pub hsts: bool,
    pub body_limit_bytes: usize,
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub jwt_secret: Secret,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_ttl_secs: i64,
    pub leeway_secs: i64,
    pub refresh_idle_secs: i64,
    pub refresh_absolute_secs: i64,
    pub max_sessions_per_user: u32,
    pub cookie_secure: bool,
    pub lockout_delay_after: u32,
    pub lockout_max_delay_secs: i64,
    pub lockout_lock_after: u32,
    pub password_min_length: usize,
    pub hash_concurrency: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub auth_per_minute: u32,
    pub auth_burst: u32,
    pub api_per_second: u32,
    pub api_burst: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A secret string: redacted in `Debug` and when the configuration is printed.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_empty() {
            "\"\""
        } else {
            "\"[redacted]\""
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.is_empty() { "" } else { "[redacted]" })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads the layered configuration. `file` is the optional `--config` path.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("QUORUM__").split("__").lowercase(true));
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a complete configuration from TOML layered over the defaults (tests, tools).
    pub fn from_toml_over_defaults(toml: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Toml::string(DEFAULT_TOML))
            .merge(Toml::string(toml))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let a = &self.auth;
        if !(600..=900).contains(&a.access_ttl_secs) {
            return invalid(
                "auth.access_ttl_secs must be between 600 and 900 (10-15 minutes)".into(),
            );
        }
        if !(0..=60).contains(&a.leeway_secs) {
            return invalid("auth.leeway_secs must be between 0 and 60".into());
        }
        if a.refresh_idle_secs <= 0 || a.refresh_absolute_secs < a.refresh_idle_secs {
            return invalid(
                "auth.refresh_idle_secs must be positive and not above auth.refresh_absolute_secs"
                    .into(),
            );
        }
        if a.max_sessions_per_user == 0 {
            return invalid("auth.max_sessions_per_user must be at least 1".into());
        }
        if a.lockout_delay_after == 0 || a.lockout_lock_after <= a.lockout_delay_after {
            return invalid(
                "auth.lockout_lock_after must be above auth.lockout_delay_after, which must be at least 1"
                    .into(),
            );
        }
        if a.password_min_length < 8 {
            return invalid("auth.password_min_length must be at least 8".into());
        }
        if !a.jwt_secret.is_empty() {
            let key = a.jwt_secret.expose();
            if key.len() < 32 {
                return invalid("auth.jwt_secret must be at least 32 bytes".into());
            }
            let lower = key.to_ascii_lowercase();
            if !self.demo && PLACEHOLDER_MARKERS.iter().any(|m| lower.contains(m)) {
                return invalid(
                    "auth.jwt_secret is a placeholder; generate one with `openssl rand -base64 48`"
                        .into(),
                );
            }
        }
        if self.executor.max_per_instance == 0 || self.executor.max_per_author == 0 {
            return invalid(
                "executor.max_per_instance and executor.max_per_author must be at least 1".into(),
            );
        }
        if !(64..=65_536).contains(&self.executor.sandbox_data_mb) {
            return invalid("executor.sandbox_data_mb must be between 64 and 65536".into());
        }
        if self.executor.sandbox_pool > 16 {
            return invalid("executor.sandbox_pool must be between 0 and 16".into());
        }
        if self.executor.target_idle > 64 {
            return invalid("executor.target_idle must be between 0 and 64".into());
        }
        if !(1..=3600).contains(&self.executor.target_idle_secs) {
            return invalid("executor.target_idle_secs must be between 1 and 3600".into());
        }
        let w = &self.workflow;
        if w.pending_ttl_secs < 60 || w.approval_ttl_secs < 60 || w.execution_window_secs < 60 {
            return invalid("workflow durations must be at least 60 seconds".into());
        }
        if let Some(problem) = self.limits.out_of_bounds() {
            return invalid(format!("limits.{problem}"));
        }
        if !self.secrets.master_key.is_empty()
            && crate::secrets::SecretBox::from_base64(self.secrets.master_key.expose()).is_err()
        {
            return invalid("secrets.master_key must be 32 random bytes, base64-encoded (`openssl rand -base64 32`)".into());
        }
        let r = &self.rate_limit;
        if r.auth_per_minute == 0 || r.auth_burst == 0 || r.api_per_second == 0 || r.api_burst == 0
        {
            return invalid("rate_limit values must all be at least 1".into());
        }
        if self.server.body_limit_bytes < 1024 {
            return invalid("server.body_limit_bytes must be at least 1024".into());
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections must be at least 1".into());
        }
        self.validate_slack()?;
        let url = self.database.url.expose();
        if !url.is_empty()
            && !url.starts_with("sqlite:")
            && !url.starts_with("postgres://")
            && !url.starts_with("postgresql://")
        {
            return invalid(
                "database.url must start with sqlite:, postgres:// or postgresql://".into(),
            );
        }
        Ok(())
    }

    /// The effective store URL (`database.url`, or the SQLite file under `data_dir`).
    fn validate_slack(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        let s = &self.slack;
        let http = |u: &str| u.starts_with("https://") || u.starts_with("http://");
        if !s.bot_token.is_empty() && !s.bot_token.expose().starts_with("xox") {
            return invalid("slack.bot_token must be a Slack bot token (xoxb-…)");
        }
        if !s.webhook_url.is_empty() && !http(s.webhook_url.expose()) {
            return invalid("slack.webhook_url must be an https:// URL");
        }
        if !http(&s.api_base_url) {
            return invalid("slack.api_base_url must be an http(s):// URL");
        }
        if !s.portal_url.is_empty() && !http(&s.portal_url) {
            return invalid("slack.portal_url must be an http(s):// URL");
        }
        if s.mode() != SlackMode::Off && s.default_channel.is_empty() {
            return invalid(
                "slack.default_channel is required when Slack is configured (PODs without a channel post there)",
            );
        }
        if !s.signing_secret.is_empty() && s.bot_token.is_empty() {
            return invalid(
                "slack.signing_secret needs slack.bot_token: approving from Slack answers through the Web API",
            );
        }
        Ok(())
    }

    /// Base URL of links to the portal in Slack messages.
    pub fn portal_url(&self) -> String {
        if self.slack.portal_url.is_empty() {
            self.public_url()
        } else {
            self.slack.portal_url.trim_end_matches('/').to_owned()
        }
    }

    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("quorum.db").display())
        } else {
            self.database.url.expose().to_owned()
        }
    }

    /// Base URL used in links.
    pub fn public_url(&self) -> String {
        if self.server.public_url.is_empty() {
            format!("http://{}", self.server.addr)
        } else {
            self.server.public_url.trim_end_matches('/').to_owned()
        }
    }

    /// The configuration as TOML with secrets redacted (`quorum check-config`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_name_every_key() {
        let c = Config::from_toml_over_defaults("").expect("defaults are valid");
        assert_eq!(c.server.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url(), "sqlite://data/quorum.db");
        // Every key of the struct is present in default.toml: re-serialising the defaults gives
        // back exactly the keys of the file.
        let from_file: toml::Table = toml::from_str(DEFAULT_TOML).expect("toml");
        let from_struct: toml::Table = toml::from_str(&c.to_redacted_toml()).expect("toml");
        assert_eq!(keys(&from_file), keys(&from_struct));
    }

    fn keys(t: &toml::Table) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in t {
            match v {
                toml::Value::Table(inner) => {
                    out.extend(keys(inner).into_iter().map(|s| format!("{k}.{s}")))
                }
                _ => out.push(k.clone()),
            }
        }
        out.sort();
        out
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml_over_defaults("[server]\nadress = \"127.0.0.1:1\"")
            .expect_err("must fail");
        assert!(err.to_string().contains("adress"), "{err}");
        assert!(Config::from_toml_over_defaults("colour = 1").is_err());
    }

    #[test]
    fn short_and_placeholder_keys_are_refused_outside_demo() {
        let short = Config::from_toml_over_defaults("[auth]\njwt_secret = \"tooshort\"")
            .expect_err("must fail");
        assert!(short.to_string().contains("32 bytes"), "{short}");
        let placeholder = "[auth]\njwt_secret = \"CHANGE-ME-to-a-random-value-of-48-bytes-please\"";
        assert!(Config::from_toml_over_defaults(placeholder).is_err());
        let demo = format!("demo = true\n{placeholder}");
        assert!(Config::from_toml_over_defaults(&demo).is_ok());
        let good = "[auth]\njwt_secret = \"q8Jd9xk2LrT0vN4mW7bZp1sY6cF3hA5eU8iO2gK9\"";
        assert!(Config::from_toml_over_defaults(good).is_ok());
    }

    #[test]
    fn executor_keys_out_of_range_are_refused_by_name() {
        for (toml, key) in [
            ("[executor]\nsandbox_pool = 17", "executor.sandbox_pool"),
            ("[executor]\ntarget_idle = 65", "executor.target_idle"),
            (
                "[executor]\ntarget_idle_secs = 0",
                "executor.target_idle_secs",
            ),
            (
                "[executor]\ntarget_idle_secs = 3601",
                "executor.target_idle_secs",
            ),
        ] {
            let err = Config::from_toml_over_defaults(toml).expect_err(toml);
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
        // The ends of each range are accepted; 0 turns kept connections off.
        for toml in [
            "[executor]\nsandbox_pool = 16\ntarget_idle = 0\ntarget_idle_secs = 1",
            "[executor]\nsandbox_pool = 0\ntarget_idle = 64\ntarget_idle_secs = 3600",
        ] {
            assert!(Config::from_toml_over_defaults(toml).is_ok(), "{toml}");
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let c = Config::from_toml_over_defaults(
            "[auth]\njwt_secret = \"q8Jd9xk2LrT0vN4mW7bZp1sY6cF3hA5eU8iO2gK9\"\n[database]\nurl = \"postgres://u:hunter2hunter2@db/q\"",
        )
        .expect("valid");
        let printed = format!("{c:?}\n{}", c.to_redacted_toml());
        assert!(!printed.contains("q8Jd9xk2"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("[redacted]"));
    }
}
