//! Splitting a SQL query request into statements and classifying each by its leading keyword.
//! The executor refuses transaction control and session changes outright (they could end the
//! read-only or all-or-nothing transaction it wraps the work in), and in read mode refuses writes
//! before they are sent; the database's read-only transaction is the backstop.

/// What a statement does, as far as the executor cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementClass {
    /// Returns rows and changes nothing (SELECT, WITH … SELECT, VALUES, TABLE, SHOW, EXPLAIN).
    Read,
    /// Changes data or schema (INSERT, UPDATE, DELETE, MERGE, CREATE, ALTER, DROP, …).
    Write,
    /// Never allowed: transaction control, session settings, COPY, DO, CALL, ATTACH, PRAGMA, …
    Forbidden,
}

impl StatementClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Forbidden => "forbidden",
        }
    }
}

/// Why a statement may not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A write (or anything not a plain read) in a read request.
    ReadOnly,
    /// Transaction control, session changes and the like: never, in any request.
    Forbidden,
}

/// The one rule for every statement the portal runs, from a query request or a script's
/// `db.query`: read requests run only reads; nothing may touch the transaction or session the
/// portal wraps the work in.
pub fn admit(class: StatementClass, mode: crate::domain::workflow::Mode) -> Result<(), Refusal> {
    use crate::domain::workflow::Mode;
    match (class, mode) {
        (StatementClass::Read, _) | (StatementClass::Write, Mode::Write) => Ok(()),
        (_, Mode::Read) => Err(Refusal::ReadOnly),
        (StatementClass::Forbidden, Mode::Write) => Err(Refusal::Forbidden),
    }
}

/// Quoting rules that differ between the SQL dialects we split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `$tag$ … $tag$` strings.
    Postgres,
    /// `[identifier]` and `` `identifier` ``; no dollar quoting.
    Sqlite,
}

/// Splits on `;` outside quotes, dollar quotes, identifiers and comments; drops empty statements.
pub fn split_statements(sql: &str, dialect: Dialect) -> Vec<String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '[' if dialect == Dialect::Sqlite => {
                while i < chars.len() {
                    current.push(chars[i]);
                    i += 1;
                    if chars[i - 1] == ']' {
                        break;
                    }
                }
            }
            '\'' | '"' | '`' if c != '`' || dialect == Dialect::Sqlite => {
                current.push(c);
                i += 1;
                while i < chars.len() {
                    current.push(chars[i]);
                    if chars[i] == c {
                        if i + 1 < chars.len() && chars[i + 1] == c {
                            current.push(c);
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                while i < chars.len() && chars[i] != '\n' {
                    current.push(chars[i]);
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                current.push_str("/*");
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    current.push(chars[i]);
                    i += 1;
                }
                if i < chars.len() {
                    current.push_str("*/");
                    i += 2;
                }
            }
            '$' if dialect == Dialect::Postgres => {
                // A dollar-quote tag: $$ or $name$ (not $1 parameters).
                let mut j = i + 1;
                while j < chars.len()
                    && (chars[j].is_alphanumeric() || chars[j] == '_')
                    && !chars[i + 1].is_ascii_digit()
                {
                    j += 1;
                }
                if j < chars.len()
                    && chars[j] == '$'
                    && !chars.get(i + 1).is_some_and(char::is_ascii_digit)
                {
                    let tag: String = chars[i..=j].iter().collect();
                    current.push_str(&tag);
                    i = j + 1;
                    let tag_chars: Vec<char> = tag.chars().collect();
                    while i < chars.len() && !chars[i..].starts_with(&tag_chars) {
                        current.push(chars[i]);
                        i += 1;
                    }
                    if i < chars.len() {
                        current.push_str(&tag);
                        i += tag_chars.len();
                    }
                } else {
                    current.push(c);
                    i += 1;
                }
            }
            ';' => {
                if !strip_comments(&current).trim().is_empty() {
                    out.push(current.trim().to_owned());
                }
                current.clear();
                i += 1;
            }
            _ => {
                current.push(c);
                i += 1;
            }
        }
    }
    if !strip_comments(&current).trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

/// The statement without leading comments and whitespace.
fn strip_comments(s: &str) -> &str {
    let mut rest = s.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after
                .split_once('\n')
                .map(|(_, r)| r)
                .unwrap_or("")
                .trim_start();
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after
                .split_once("*/")
                .map(|(_, r)| r)
                .unwrap_or("")
                .trim_start();
        } else {
            return rest;
        }
    }
}

/// The first keyword, upper-cased (after comments and opening parentheses).
pub fn leading_keyword(stmt: &str) -> String {
    strip_comments(stmt)
        .trim_start_matches(|c: char| c == '(' || c.is_whitespace())
        .chars()
        .take_while(|c| c.is_ascii_alphabetic() || *c == '_')
        .collect::<String>()
        .to_ascii_uppercase()
}

pub fn classify(stmt: &str) -> StatementClass {
    let keyword = leading_keyword(stmt);
    match keyword.as_str() {
        "SELECT" | "VALUES" | "TABLE" | "SHOW" | "EXPLAIN" => {
            // SELECT … INTO creates a table; EXPLAIN ANALYZE runs the statement.
            let upper = stmt.to_ascii_uppercase();
            if (keyword == "SELECT" && upper.split_whitespace().any(|w| w == "INTO"))
                || (keyword == "EXPLAIN" && upper.contains("ANALYZE"))
            {
                StatementClass::Write
            } else {
                StatementClass::Read
            }
        }
        // WITH may wrap a data-modifying statement; treat it as a write unless it clearly is not.
        "WITH" => {
            let upper = stmt.to_ascii_uppercase();
            let writes = ["INSERT ", "UPDATE ", "DELETE ", "MERGE "]
                .iter()
                .any(|w| upper.contains(w));
            if writes {
                StatementClass::Write
            } else {
                StatementClass::Read
            }
        }
        "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "UPSERT" | "REPLACE" | "CREATE" | "ALTER"
        | "DROP" | "TRUNCATE" | "GRANT" | "REVOKE" | "COMMENT" | "REINDEX" | "CLUSTER"
        | "REFRESH" | "ANALYZE" | "SECURITY" => StatementClass::Write,
        _ => StatementClass::Forbidden,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn admission_follows_the_mode() {
        use crate::domain::workflow::Mode;
        let cases = [
            (StatementClass::Read, Mode::Read, Ok(())),
            (StatementClass::Read, Mode::Write, Ok(())),
            (StatementClass::Write, Mode::Write, Ok(())),
            (StatementClass::Write, Mode::Read, Err(Refusal::ReadOnly)),
            (
                StatementClass::Forbidden,
                Mode::Read,
                Err(Refusal::ReadOnly),
            ),
            (
                StatementClass::Forbidden,
                Mode::Write,
                Err(Refusal::Forbidden),
            ),
        ];
        for (class, mode, expected) in cases {
            assert_eq!(admit(class, mode), expected, "{class:?} in {mode:?}");
        }
    }

    use super::*;

    #[test]
    fn splits_outside_quotes_comments_and_dollar_quotes() {
        let sql = "SELECT 'a;b'; -- c;d\nSELECT \"x;y\" FROM t; /* e;f */ SELECT $$g;h$$, $tag$i;j$tag$;;\n  ";
        let parts = split_statements(sql, Dialect::Postgres);
        assert_eq!(parts.len(), 3, "{parts:?}");
        assert_eq!(parts[0], "SELECT 'a;b'");
        assert!(parts[2].ends_with("$tag$i;j$tag$"), "{parts:?}");
        assert_eq!(
            split_statements("SELECT $1; SELECT 'it''s;'", Dialect::Postgres),
            ["SELECT $1", "SELECT 'it''s;'"]
        );
        assert!(split_statements("-- only a comment\n;", Dialect::Postgres).is_empty());
        // SQLite has no dollar quoting: a `$a$` cannot hide a second statement from the splitter.
        let smuggled = "SELECT $a$; COMMIT; UPDATE t SET x = 1 -- $a$";
        assert_eq!(split_statements(smuggled, Dialect::Sqlite).len(), 3);
        assert_eq!(
            split_statements("SELECT [a;b], `c;d` FROM t; SELECT 2", Dialect::Sqlite).len(),
            2
        );
    }

    #[test]
    fn classes() {
        for (sql, class) in [
            ("SELECT 1", StatementClass::Read),
            ("  -- why\n(SELECT 1)", StatementClass::Read),
            ("WITH x AS (SELECT 1) SELECT * FROM x", StatementClass::Read),
            (
                "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                StatementClass::Write,
            ),
            ("SELECT * INTO copy FROM t", StatementClass::Write),
            ("EXPLAIN ANALYZE DELETE FROM t", StatementClass::Write),
            ("update t set a = 1", StatementClass::Write),
            ("COMMIT", StatementClass::Forbidden),
            ("SET TRANSACTION READ WRITE", StatementClass::Forbidden),
            ("set statement_timeout = 0", StatementClass::Forbidden),
            ("BEGIN", StatementClass::Forbidden),
            ("COPY t TO PROGRAM 'id'", StatementClass::Forbidden),
            ("DO $$ BEGIN END $$", StatementClass::Forbidden),
            ("ATTACH DATABASE 'x' AS y", StatementClass::Forbidden),
            ("PRAGMA writable_schema = 1", StatementClass::Forbidden),
        ] {
            assert_eq!(classify(sql), class, "{sql}");
        }
    }
}
