//! Executions: their statuses, error kinds, per-statement reports and stored result sets.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! str_enum {
    ($t:ident { $($v:ident = $s:literal),* $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $t { $($v),* }
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

str_enum!(ExecStatus {
    Queued = "queued",
    Running = "running",
    Succeeded = "succeeded",
    Failed = "failed",
    TimedOut = "timed_out",
    Interrupted = "interrupted",
});

str_enum!(ErrorKind {
    DbError = "db_error",
    Timeout = "timeout",
    ReadOnlyViolation = "read_only_violation",
    ForbiddenStatement = "forbidden_statement",
    TargetUnavailable = "target_unavailable",
    Interrupted = "interrupted",
    Unsupported = "unsupported",
    Syntax = "syntax",
    Script = "script",
    MemoryLimit = "memory_limit",
    StackOverflow = "stack_overflow",
    OutputLimit = "output_limit",
    CallLimit = "call_limit",
    Internal = "internal",
});

impl ErrorKind {
    /// The execution status an error of this kind ends in.
    pub fn status(self) -> ExecStatus {
        match self {
            ErrorKind::Timeout => ExecStatus::TimedOut,
            ErrorKind::Interrupted => ExecStatus::Interrupted,
            _ => ExecStatus::Failed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecError {
    pub kind: ErrorKind,
    pub message: String,
    /// PostgreSQL SQLSTATE or SQLite result code, when the database gave one.
    pub sqlstate: Option<String>,
    /// 0-based index of the statement that failed.
    pub statement: Option<usize>,
    /// Scripts: the 1-based line and column of the script where it failed, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

impl ExecError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            sqlstate: None,
            statement: None,
            line: None,
            column: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatementReport {
    pub index: usize,
    /// The statement (first 500 characters).
    pub sql: String,
    /// `read` or `write`.
    pub class: String,
    pub rows_returned: u64,
    pub rows_affected: u64,
    pub duration_ms: f64,
    /// Rows beyond the limits were not stored.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Column {
    pub name: String,
    /// The database's type name (e.g. `INT8`, `TEXT`, `NUMERIC`).
    #[serde(rename = "type")]
    pub type_name: String,
}

/// Rows of one statement as stored: values are JSON (NULL → null, numerics as strings, bytes as
/// base64, instants as ISO 8601).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultSet {
    pub statement: usize,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<serde_json::Value>>,
    pub truncated: bool,
}

/// One `console` line of a script, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// `log`, `info`, `warn` or `error`.
    pub level: String,
    pub message: String,
    /// Milliseconds since the script started.
    pub at_ms: u64,
}

/// One `db.*` call a script made, as the executor ran it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CallRecord {
    pub seq: u32,
    /// `query`, or the MongoDB method.
    pub op: String,
    /// The statement (first 500 characters) or the collection.
    pub target: String,
    /// Milliseconds since the script started.
    pub at_ms: u64,
    pub duration_ms: f64,
    /// Rows returned, or affected by a write.
    pub rows: u64,
    pub error: Option<String>,
}

/// What the sandbox child reported about itself.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, ToSchema)]
pub struct SandboxReport {
    /// The console output was cut at `max_log_bytes`.
    pub logs_truncated: bool,
    pub peak_memory_bytes: u64,
    /// CPU time the child used on the script, from its job's arrival to its outcome, in
    /// milliseconds (user and system; 0 in records made before it was counted).
    #[serde(default)]
    #[schema(required = true)]
    pub cpu_ms: f64,
    /// seccomp filter installed in the child.
    pub seccomp: bool,
    /// Landlock: `full`, `partial` or `unsupported` (by the kernel).
    pub landlock: String,
    pub no_new_privs: bool,
}

/// What a script run leaves behind besides rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScriptReport {
    pub result: Option<serde_json::Value>,
    pub logs: Vec<LogLine>,
    pub calls: Vec<CallRecord>,
    pub sandbox: SandboxReport,
}

/// RFC 4180 CSV: a header, CRLF line ends, fields quoted when they hold `,` `"` CR or LF, NULL as
/// an empty field.
pub fn to_csv(result: &ResultSet) -> String {
    fn field(out: &mut String, v: &str) {
        if v.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&v.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(v);
        }
    }
    let mut out = String::new();
    for (i, c) in result.columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(&mut out, &c.name);
    }
    out.push_str("\r\n");
    for row in &result.rows {
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match v {
                serde_json::Value::Null => {}
                serde_json::Value::String(s) => field(&mut out, s),
                other => field(&mut out, &other.to_string()),
            }
        }
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let r = ResultSet {
            statement: 0,
            columns: vec![
                Column {
                    name: "id".into(),
                    type_name: "INT8".into(),
                },
                Column {
                    name: "note, text".into(),
                    type_name: "TEXT".into(),
                },
            ],
            rows: vec![
                vec![json!(1), json!("plain")],
                vec![json!(2), json!("has \"quotes\", commas\nand lines")],
                vec![json!(3), json!(null)],
                vec![json!(4), json!("ünïcødé ✓")],
            ],
            truncated: false,
        };
        assert_eq!(
            to_csv(&r),
            "id,\"note, text\"\r\n1,plain\r\n2,\"has \"\"quotes\"\", commas\nand lines\"\r\n3,\r\n4,ünïcødé ✓\r\n"
        );
    }
}
