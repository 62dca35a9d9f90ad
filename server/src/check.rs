//! Checking a request's content before it runs: syntax errors with line and column, and for SQL
//! which statements a read or a write request may run. Nothing reaches a database.
//!
//! Scripts and MongoDB queries are parsed by the same QuickJS that would run them, inside a
//! sandbox child that compiles the wrapped source into a function it never calls. SQL is parsed
//! with `sqlparser` in the target's dialect; a parser is stricter than no parser but not the
//! server itself, so a SQL error here is advice: the database has the last word.

use serde::{Deserialize, Serialize};
use sqlparser::dialect::{PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;
use utoipa::ToSchema;

use crate::config::LimitsConfig;
use crate::domain::instance::Engine;
use crate::domain::sql::{Dialect, admit, classify, leading_keyword, split_statements};
use crate::domain::workflow::{Kind, Mode};
use crate::sandbox::Sandbox;

/// One syntax error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SyntaxIssue {
    /// 1-based line in the submitted content, when the parser says.
    pub line: Option<u32>,
    /// 1-based column, when the parser says.
    pub column: Option<u32>,
    pub message: String,
}

/// One SQL statement, as the executor would classify it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatementCheck {
    /// 0-based position in the content.
    pub index: usize,
    /// The leading keyword (`SELECT`, `UPDATE`, …).
    pub keyword: String,
    /// `read`, `write` or `forbidden` (transaction control, which the portal owns).
    pub class: String,
    /// A read request may run it.
    pub read_ok: bool,
    /// A write request may run it.
    pub write_ok: bool,
}

/// What a check found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckReport {
    /// No syntax error was found.
    pub ok: bool,
    /// What parsed the content: `quickjs` (scripts, MongoDB queries) or `sqlparser` (SQL).
    pub parser: String,
    pub errors: Vec<SyntaxIssue>,
    /// SQL only: each statement's class.
    pub statements: Vec<StatementCheck>,
}

/// Checks `content` of `kind` for an instance of `engine`. `Err` means no check could be made
/// (the sandbox is not available), which is not a verdict on the content.
pub async fn check(
    sandbox: &Sandbox,
    limits: &LimitsConfig,
    kind: Kind,
    engine: Engine,
    content: &str,
) -> Result<CheckReport, String> {
    use quorum_sandbox_protocol as proto;
    let sql = kind == Kind::Query && engine != Engine::Mongodb;
    if sql {
        return Ok(check_sql(engine, content));
    }
    let engine = match engine {
        Engine::Postgres => proto::Engine::Postgres,
        Engine::Sqlite => proto::Engine::Sqlite,
        Engine::Mongodb => proto::Engine::Mongodb,
    };
    let source_kind = if kind == Kind::Script {
        proto::SourceKind::Script
    } else {
        proto::SourceKind::Expression
    };
    let error = crate::sandbox::check_syntax(sandbox, engine, source_kind, content, limits).await?;
    let errors: Vec<SyntaxIssue> = error
        .into_iter()
        .map(|e| SyntaxIssue {
            line: e.line,
            column: e.column,
            message: e.message,
        })
        .collect();
    Ok(CheckReport {
        ok: errors.is_empty(),
        parser: "quickjs".into(),
        errors,
        statements: Vec::new(),
    })
}

fn check_sql(engine: Engine, content: &str) -> CheckReport {
    let (dialect, parsed) = if engine == Engine::Sqlite {
        (
            Dialect::Sqlite,
            Parser::parse_sql(&SQLiteDialect {}, content).map(|_| ()),
        )
    } else {
        (
            Dialect::Postgres,
            Parser::parse_sql(&PostgreSqlDialect {}, content).map(|_| ()),
        )
    };
    let mut errors = Vec::new();
    if let Err(e) = parsed {
        let text = e.to_string();
        let (line, column) = position(&text);
        let message = text
            .split(" at Line: ")
            .next()
            .unwrap_or(&text)
            .trim_start_matches("sql parser error: ")
            .to_owned();
        errors.push(SyntaxIssue {
            line,
            column,
            message,
        });
    }
    let statements: Vec<StatementCheck> = split_statements(content, dialect)
        .iter()
        .enumerate()
        .map(|(index, stmt)| {
            let class = classify(stmt);
            StatementCheck {
                index,
                keyword: leading_keyword(stmt),
                class: class.as_str().to_owned(),
                read_ok: admit(class, Mode::Read).is_ok(),
                write_ok: admit(class, Mode::Write).is_ok(),
            }
        })
        .collect();
    if statements.is_empty() && errors.is_empty() {
        errors.push(SyntaxIssue {
            line: None,
            column: None,
            message: "the query holds no statement".into(),
        });
    }
    CheckReport {
        ok: errors.is_empty(),
        parser: "sqlparser".into(),
        errors,
        statements,
    }
}

/// `(line, column)` from sqlparser's "… at Line: 3, Column: 7".
fn position(text: &str) -> (Option<u32>, Option<u32>) {
    let number = |key: &str| {
        text.rsplit_once(key).and_then(|(_, rest)| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
    };
    (number("Line: "), number("Column: "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_syntax_errors_carry_their_position() {
        let r = check_sql(Engine::Postgres, "SELECT 1;\nSELEC id FROM t");
        assert!(!r.ok);
        assert_eq!(r.errors[0].line, Some(2), "{r:?}");
        assert!(r.errors[0].column.is_some(), "{r:?}");
        assert!(!r.errors[0].message.contains("Line:"), "{r:?}");
    }

    #[test]
    fn statements_are_classified_for_each_mode() {
        let r = check_sql(
            Engine::Postgres,
            "SELECT * FROM orders WHERE id = $1; UPDATE orders SET paid = true WHERE id = 1; COMMIT",
        );
        assert!(r.ok, "{r:?}");
        let flags: Vec<(&str, bool, bool)> = r
            .statements
            .iter()
            .map(|s| (s.keyword.as_str(), s.read_ok, s.write_ok))
            .collect();
        assert_eq!(
            flags,
            [
                ("SELECT", true, true),
                ("UPDATE", false, true),
                ("COMMIT", false, false)
            ]
        );
    }

    #[test]
    fn sqlite_dialect_and_empty_content() {
        assert!(check_sql(Engine::Sqlite, "SELECT [id] FROM `orders`").ok);
        let r = check_sql(Engine::Sqlite, "  -- nothing\n");
        assert!(!r.ok);
    }
}
