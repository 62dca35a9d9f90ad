//! Database instances the portal can run work against, and the rules for their settings.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::LimitsConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Postgres,
    Mongodb,
    Sqlite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// Runs as soon as the last required approval lands.
    #[default]
    OnApproval,
    /// Waits for the author to press Run.
    Manual,
}

macro_rules! str_enum {
    ($t:ty { $($v:ident = $s:literal),* $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$v),)* _ => None }
            }
        }
    };
}

str_enum!(Engine { Postgres = "postgres", Mongodb = "mongodb", Sqlite = "sqlite" });
str_enum!(TlsMode { Disable = "disable", Prefer = "prefer", Require = "require", VerifyCa = "verify-ca", VerifyFull = "verify-full" });
str_enum!(RunMode { OnApproval = "on_approval", Manual = "manual" });

/// Per-instance overrides of the execution limits; absent fields use the configured defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_call_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_result_bytes: Option<u64>,
}

impl LimitOverrides {
    pub fn apply(&self, defaults: LimitsConfig) -> LimitsConfig {
        LimitsConfig {
            wall_ms: self.wall_ms.unwrap_or(defaults.wall_ms),
            db_call_ms: self.db_call_ms.unwrap_or(defaults.db_call_ms),
            memory_mb: self.memory_mb.unwrap_or(defaults.memory_mb),
            max_calls: self.max_calls.unwrap_or(defaults.max_calls),
            max_log_bytes: self.max_log_bytes.unwrap_or(defaults.max_log_bytes),
            max_rows: self.max_rows.unwrap_or(defaults.max_rows),
            max_result_bytes: self.max_result_bytes.unwrap_or(defaults.max_result_bytes),
        }
    }
}

/// Environment labels: short lowercase words such as `production`, `staging`, `demo`.
pub fn valid_environment(label: &str) -> bool {
    let mut chars = label.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && label.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Host names and IP literals; no schemes, paths, spaces or control characters.
pub fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(c))
}

/// A SQLite path relative to the data directory that cannot climb out of it.
pub fn valid_sqlite_path(path: &str) -> bool {
    let p = std::path::Path::new(path);
    !path.is_empty()
        && path.len() <= 255
        && !path.contains('\0')
        && p.is_relative()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// A MongoDB URI that carries no password (credentials go in the sealed secret).
pub fn valid_mongodb_uri(uri: &str) -> Result<(), &'static str> {
    let rest = uri
        .strip_prefix("mongodb://")
        .or_else(|| uri.strip_prefix("mongodb+srv://"))
        .ok_or("uri must start with mongodb:// or mongodb+srv://")?;
    if uri.len() > 2048 || uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("uri is too long or contains spaces or control characters");
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@')
        && userinfo.contains(':')
    {
        return Err("uri must not contain a password; put it in `secret`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_hosts_paths_uris() {
        assert!(valid_environment("production"));
        assert!(valid_environment("eu-staging_2"));
        assert!(!valid_environment("Prod"));
        assert!(!valid_environment(""));
        assert!(valid_host("db.internal"));
        assert!(valid_host("10.0.0.5"));
        assert!(valid_host("[::1]"));
        assert!(!valid_host("db internal"));
        assert!(!valid_host("http://db/x"));
        assert!(valid_sqlite_path("demo-shop.db"));
        assert!(valid_sqlite_path("targets/shop.db"));
        for bad in ["", "/etc/passwd", "../quorum.db", "a/../../b.db", "./x.db"] {
            assert!(!valid_sqlite_path(bad), "{bad}");
        }
        assert!(valid_mongodb_uri("mongodb://reader@db1:27017,db2:27017/?replicaSet=rs0").is_ok());
        assert!(valid_mongodb_uri("mongodb+srv://cluster.example.net").is_ok());
        assert!(valid_mongodb_uri("mongodb://reader:pw@db1").is_err());
        assert!(valid_mongodb_uri("postgres://db").is_err());
    }

    #[test]
    fn overrides_apply_over_defaults() {
        let d = LimitsConfig {
            wall_ms: 30_000,
            db_call_ms: 10_000,
            memory_mb: 128,
            max_calls: 1000,
            max_log_bytes: 1 << 20,
            max_rows: 10_000,
            max_result_bytes: 1 << 20,
        };
        let o = LimitOverrides {
            max_rows: Some(5),
            ..Default::default()
        };
        assert_eq!(o.apply(d), LimitsConfig { max_rows: 5, ..d });
        assert_eq!(LimitOverrides::default().apply(d), d);
    }
}
