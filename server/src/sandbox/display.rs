//! The rows a script's results page shows: an explicitly returned array of objects, else the
//! last query's rows (or the last MongoDB documents), as columns in first-seen order and rows
//! of values in that order, up to the row limit.
//!
//! A large query's rows are kept as the JSON batches they were sent to the child in (the column
//! names, then each row as an array of values), and read here straight into that shape: no map
//! per row and no key string per cell, which is most of what decoding 100 000 rows into
//! `serde_json::Value` objects costs.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::domain::execution::{Column, ResultSet};

/// What the last database call that returned rows left to show.
#[derive(Debug)]
pub struct LastCall {
    pub rows: Last,
    /// The call handed the script only part of its rows (`limits.max_rows` or
    /// `limits.max_result_bytes`), so what is shown is cut too.
    pub truncated: bool,
    /// The database's type of each column, by name, as the call's `fields` gave them.
    pub types: Vec<(String, String)>,
}

impl LastCall {
    /// The types in a call result's `fields` (`[{name, type}]`); none for documents.
    pub fn types_of(value: &Value) -> Vec<(String, String)> {
        value
            .get("fields")
            .and_then(Value::as_array)
            .map(|fields| {
                fields
                    .iter()
                    .filter_map(|f| {
                        Some((
                            f["name"].as_str()?.to_owned(),
                            f["type"].as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[derive(Debug)]
pub enum Last {
    /// SQL rows: the JSON arrays they were sent to the child in.
    Batches(Vec<Vec<u8>>),
    /// MongoDB documents.
    Documents(Vec<Value>),
}

/// A call result at least this large (in JSON bytes) is read for display as soon as the call
/// is answered, on a blocking thread, while the script goes on with its rows.
const READ_AHEAD_BYTES: usize = 256 * 1024;

/// The last call's rows, as a run holds them until its outcome.
#[derive(Debug)]
pub enum Shown {
    /// As the call left them, read only if the outcome needs them.
    Kept(LastCall),
    /// A large result, being read already. It is not needed if the script returns rows of its
    /// own or makes another call; the read is then wasted, never waited for.
    Reading(tokio::task::JoinHandle<Option<ResultSet>>),
}

impl Shown {
    /// Holds `last`, starting to read it at once when it is large, unless the `previous`
    /// call's rows are still being read (so at most one read runs ahead per run).
    pub fn new(last: LastCall, previous: Option<&Shown>, max: usize) -> Self {
        let large = match &last.rows {
            Last::Batches(batches) => {
                batches.iter().map(Vec::len).sum::<usize>() >= READ_AHEAD_BYTES
            }
            Last::Documents(_) => false,
        };
        let busy = matches!(previous, Some(Shown::Reading(h)) if !h.is_finished());
        if large && !busy {
            Shown::Reading(tokio::task::spawn_blocking(move || last_rows(last, max)))
        } else {
            Shown::Kept(last)
        }
    }

    /// The rows, at most `max` of them.
    async fn rows(self, max: usize) -> Option<ResultSet> {
        match self {
            Shown::Kept(last) => last_rows(last, max),
            Shown::Reading(read) => read.await.ok().flatten(),
        }
    }
}

/// The rows to show, at most `max` of them: those the script returned, else the last call's;
/// `None` when there is nothing in the shape of rows.
pub async fn rows(value: Option<&Value>, last: Option<Shown>, max: usize) -> Option<ResultSet> {
    if let Some(returned) = value.and_then(|v| returned(v, max)) {
        return Some(returned);
    }
    last?.rows(max).await
}

/// The rows a returned value holds, at most `max` of them: an array of objects, or `{rows}`
/// with one.
fn returned(value: &Value, max: usize) -> Option<ResultSet> {
    let objects = |v: &Value| -> Option<Vec<Map<String, Value>>> {
        v.as_array()?
            .iter()
            .map(|r| r.as_object().cloned())
            .collect()
    };
    let returned = objects(value).or_else(|| value.get("rows").and_then(objects))?;
    let mut table = Table::new(max);
    returned.into_iter().for_each(|row| table.push_object(row));
    Some(table.finish())
}

/// The rows a call left, at most `max` of them; `None` for documents that are not all objects.
fn last_rows(last: LastCall, max: usize) -> Option<ResultSet> {
    let mut table = Table::new(max);
    table.more = last.truncated;
    table.types = last.types;
    match last.rows {
        Last::Batches(batches) => {
            for batch in &batches {
                // A batch is JSON the portal wrote itself; one that does not read is left out
                // whole, with any column only it named.
                let (names, rows, more) = (table.names.len(), table.rows.len(), table.more);
                let mut reader = serde_json::Deserializer::from_slice(batch);
                if reader.deserialize_seq(BatchSeed(&mut table)).is_err() {
                    table.names.truncate(names);
                    table.rows.truncate(rows);
                    table.more = more;
                }
            }
        }
        Last::Documents(documents) => {
            let objects: Option<Vec<Map<String, Value>>> = documents
                .into_iter()
                .map(|d| match d {
                    Value::Object(m) => Some(m),
                    _ => None,
                })
                .collect();
            objects?.into_iter().for_each(|row| table.push_object(row));
        }
    }
    Some(table.finish())
}

/// Columns and rows as they are gathered.
struct Table {
    names: Vec<String>,
    rows: Vec<Vec<Value>>,
    max: usize,
    /// Rows past `max` were seen.
    more: bool,
    /// Column types by name, where the database gave them; other columns are `JSON`.
    types: Vec<(String, String)>,
}

impl Table {
    fn new(max: usize) -> Self {
        Self {
            names: Vec::new(),
            rows: Vec::new(),
            max,
            more: false,
            types: Vec::new(),
        }
    }

    fn full(&self) -> bool {
        self.rows.len() >= self.max
    }

    /// The index of column `name`, added when new. Rows mostly list their columns in the same
    /// order, so the column after the previous one is tried first.
    fn column(&mut self, name: &str, next: usize) -> usize {
        if self.names.get(next).is_some_and(|n| n == name) {
            return next;
        }
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return i;
        }
        self.names.push(name.to_owned());
        self.names.len() - 1
    }

    fn push_object(&mut self, object: Map<String, Value>) {
        if self.full() {
            self.more = true;
            return;
        }
        let mut row = Vec::with_capacity(self.names.len());
        let mut next = 0;
        for (name, value) in object {
            let i = self.column(&name, next);
            put(&mut row, i, value);
            next = i + 1;
        }
        self.rows.push(row);
    }

    fn finish(mut self) -> ResultSet {
        let width = self.names.len();
        for row in &mut self.rows {
            row.resize(width, Value::Null);
        }
        ResultSet {
            statement: 0,
            columns: self
                .names
                .into_iter()
                .map(|name| {
                    let type_name = self
                        .types
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or_else(|| "JSON".to_owned(), |(_, t)| t.clone());
                    Column { name, type_name }
                })
                .collect(),
            rows: self.rows,
            truncated: self.more,
        }
    }
}

/// Sets cell `i` of `row`, with `null` in any cells skipped on the way (a later duplicate key
/// wins, as it does in a JSON object).
fn put(row: &mut Vec<Value>, i: usize, value: Value) {
    if i == row.len() {
        row.push(value);
    } else {
        if i > row.len() {
            row.resize(i, Value::Null);
            row.push(Value::Null);
        }
        row[i] = value;
    }
}

/// One batch: a JSON array of the column names, then the rows as arrays of values in that
/// order, appended to the table.
struct BatchSeed<'t>(&'t mut Table);

impl<'de> Visitor<'de> for BatchSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of column names and rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some(names) = seq.next_element::<Vec<String>>()? else {
            return Err(serde::de::Error::invalid_length(0, &self));
        };
        // Each position's column in the table: a name the batch repeats is one column, which
        // the later value fills (as a later duplicate key does in a JSON object).
        let mut columns = Vec::with_capacity(names.len());
        for name in &names {
            let next = columns.last().map_or(0, |&i| i + 1);
            columns.push(self.0.column(name, next));
        }
        loop {
            if self.0.full() {
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    self.0.more = true;
                    continue;
                }
                return Ok(());
            }
            let row = RowSeed {
                table: &mut *self.0,
                columns: &columns,
            };
            if seq.next_element_seed(row)?.is_none() {
                return Ok(());
            }
        }
    }
}

/// One row, an array of values in the batch's column order, read into a row of the table.
struct RowSeed<'t> {
    table: &'t mut Table,
    columns: &'t [usize],
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a row of {} values", self.columns.len())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut row = Vec::with_capacity(self.table.names.len());
        let mut at = 0;
        while let Some(value) = seq.next_element::<Value>()? {
            let Some(&i) = self.columns.get(at) else {
                return Err(serde::de::Error::invalid_length(at + 1, &self));
            };
            put(&mut row, i, value);
            at += 1;
        }
        self.table.rows.push(row);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What a run shows for `value` with `last` kept as the call left it.
    async fn show(value: Option<&Value>, last: Option<LastCall>, max: usize) -> Option<ResultSet> {
        rows(value, last.map(Shown::Kept), max).await
    }

    fn batches(parts: &[&str]) -> Option<LastCall> {
        Some(LastCall {
            rows: Last::Batches(parts.iter().map(|p| p.as_bytes().to_vec()).collect()),
            truncated: false,
            types: Vec::new(),
        })
    }

    #[tokio::test]
    async fn batches_become_columns_in_first_seen_order() {
        let shown = show(
            None,
            batches(&[
                r#"[["a","b"],[1,"x"],[2,"y"]]"#,
                r#"[["b","a"],["z",3]]"#,
                r#"[["a","c","b"],[4,[1],null]]"#,
                // A name the query repeats: the later value wins, in the first one's place.
                r#"[["a","a"],[5,6]]"#,
            ]),
            10,
        )
        .await
        .expect("rows");
        let names: Vec<&str> = shown.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(
            shown.rows,
            [
                vec![json!(1), json!("x"), Value::Null],
                vec![json!(2), json!("y"), Value::Null],
                vec![json!(3), json!("z"), Value::Null],
                vec![json!(4), Value::Null, json!([1])],
                vec![json!(6), Value::Null, Value::Null],
            ]
        );
        assert!(!shown.truncated);
    }

    #[tokio::test]
    async fn columns_carry_the_types_the_call_gave() {
        let reply = json!({"rows": [], "fields": [{"name": "id", "type": "INT4"}, {"name": "email", "type": "TEXT"}]});
        let last = LastCall {
            rows: Last::Batches(vec![br#"[["id","email","extra"],[1,"a@x",null]]"#.to_vec()]),
            truncated: false,
            types: LastCall::types_of(&reply),
        };
        let shown = show(None, Some(last), 10).await.expect("rows");
        let columns: Vec<(&str, &str)> = shown
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.type_name.as_str()))
            .collect();
        // A name the fields do not give stays JSON.
        assert_eq!(
            columns,
            [("id", "INT4"), ("email", "TEXT"), ("extra", "JSON")]
        );
        // A returned value is the script's own: its columns are JSON whatever the last call was.
        let returned = json!([{"id": 1}]);
        let last = LastCall {
            rows: Last::Batches(vec![br#"[["id"],[1]]"#.to_vec()]),
            truncated: false,
            types: LastCall::types_of(&reply),
        };
        let shown = show(Some(&returned), Some(last), 10).await.expect("rows");
        assert_eq!(shown.columns[0].type_name, "JSON");
        assert!(LastCall::types_of(&json!([{"_id": 1}])).is_empty());
    }

    #[tokio::test]
    async fn the_row_limit_cuts_across_batches_and_says_so() {
        let shown = show(
            None,
            batches(&[r#"[["n"],[1],[2]]"#, r#"[["n"],[3],[4]]"#]),
            3,
        )
        .await
        .expect("rows");
        assert_eq!(shown.rows, [[json!(1)], [json!(2)], [json!(3)]]);
        assert_eq!(shown.columns.len(), 1);
        assert!(shown.truncated);
        let exact = show(None, batches(&[r#"[["n"],[1],[2]]"#]), 2)
            .await
            .expect("rows");
        assert!(!exact.truncated);
        // A call the row limit already cut shows as cut, though all it handed over fits.
        let cut = Some(LastCall {
            rows: Last::Batches(vec![br#"[["n"],[1]]"#.to_vec()]),
            truncated: true,
            types: Vec::new(),
        });
        assert!(show(None, cut, 2).await.expect("rows").truncated);
    }

    #[tokio::test]
    async fn escaped_names_and_unreadable_batches() {
        let shown = show(
            None,
            batches(&[
                r#"[["a\"b"],[1]]"#,
                r#"[["a"],["#,
                // More values than names: not a batch the portal writes.
                r#"[["x"],[7],[8,9]]"#,
                r#"[["a\"b"],[2]]"#,
            ]),
            10,
        )
        .await
        .expect("rows");
        // The unreadable batches are left out whole, with the columns only they named.
        assert_eq!(shown.columns.len(), 1);
        assert_eq!(shown.columns[0].name, "a\"b");
        assert_eq!(shown.rows, [[json!(1)], [json!(2)]]);
    }

    #[tokio::test]
    async fn a_returned_array_of_objects_wins_over_the_last_query() {
        let returned = json!([{"x": 1}, {"y": 2}]);
        let shown = show(Some(&returned), batches(&[r#"[["n"],[1]]"#]), 10)
            .await
            .expect("rows");
        assert_eq!(
            shown.rows,
            [[json!(1), Value::Null], [Value::Null, json!(2)]]
        );
        let wrapped = json!({"rows": [{"x": 1}]});
        assert_eq!(
            show(Some(&wrapped), None, 10).await.expect("rows").rows,
            [[json!(1)]]
        );
        // Not rows: the last query's are shown; without one, nothing.
        let scalar = json!(42);
        assert_eq!(
            show(Some(&scalar), batches(&[r#"[["n"],[1]]"#]), 10)
                .await
                .expect("rows")
                .rows,
            [[json!(1)]]
        );
        assert!(show(Some(&scalar), None, 10).await.is_none());
        let documents = Some(LastCall {
            rows: Last::Documents(vec![json!({"_id": 1}), json!(3)]),
            truncated: false,
            types: Vec::new(),
        });
        assert!(show(None, documents, 10).await.is_none());
    }

    #[tokio::test]
    async fn a_large_result_is_read_ahead_with_the_same_rows_unless_superseded() {
        let batch = format!(
            r#"[["n","s"],{}]"#,
            (0..40_000)
                .map(|i| format!(r#"[{i},"row"]"#))
                .collect::<Vec<_>>()
                .join(",")
        );
        let large = || LastCall {
            rows: Last::Batches(vec![batch.clone().into_bytes()]),
            truncated: false,
            types: Vec::new(),
        };
        let ahead = Shown::new(large(), None, 50_000);
        assert!(matches!(ahead, Shown::Reading(_)), "{ahead:?}");
        let read = rows(None, Some(ahead), 50_000).await.expect("rows");
        let kept = show(None, Some(large()), 50_000).await.expect("rows");
        assert_eq!(
            (read.rows.len(), &read.rows, &read.columns.len()),
            (40_000, &kept.rows, &2)
        );
        // A small result is kept as it is; returned rows win over a read under way.
        let small = Shown::new(batches(&[r#"[["n"],[1]]"#]).expect("last"), None, 10);
        assert!(matches!(small, Shown::Kept(_)), "{small:?}");
        let returned = json!([{"x": 1}]);
        let ahead = Shown::new(large(), None, 50_000);
        let shown = rows(Some(&returned), Some(ahead), 50_000)
            .await
            .expect("rows");
        assert_eq!(shown.rows, [[json!(1)]]);
    }
}
