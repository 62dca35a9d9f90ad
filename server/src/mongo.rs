//! MongoDB targets: connecting (probe, database list) and the wrapped handle scripts and
//! mongosh-style queries reach one MongoDB database through.
//!
//! Values cross the sandbox boundary as canonical Extended JSON, so `ObjectId`, dates, `Long`,
//! `Decimal128` and binary keep their types both ways. The handle checks every call before
//! anything is sent: read requests run only reads (no `$out` / `$merge`), and no request may run
//! JavaScript on the database server (`$where`, `$function`, `$accumulator`), which would escape
//! the sandbox's limits. Write requests run in one transaction when the server supports them.

use std::time::{Duration, Instant};

use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{Error as MongoError, ErrorKind as MongoErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, Credential, ServerAddress, Tls, TlsOptions};
use mongodb::{Client, ClientSession, Collection, Database};
use quorum_sandbox_protocol::{DbOp, ErrorKind as K};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use crate::config::LimitsConfig;
use crate::domain::instance::TlsMode;
use crate::domain::workflow::Mode;
use crate::sandbox::{Handle, Reply};
use crate::store::Instance;
use crate::targets::{CONNECT_TIMEOUT, IdleKey, TargetError};

/// Databases of the server itself, never offered to requests.
const SYSTEM_DATABASES: [&str; 3] = ["admin", "config", "local"];

/// Stages and operators that write from a read request.
const WRITING_STAGES: [&str; 2] = ["$out", "$merge"];
/// Operators that run JavaScript on the database server.
const SERVER_JAVASCRIPT: [&str; 3] = ["$where", "$function", "$accumulator"];

const WRITE_METHODS: [&str; 7] = [
    "insertOne",
    "insertMany",
    "updateOne",
    "updateMany",
    "replaceOne",
    "deleteOne",
    "deleteMany",
];

fn clean(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(500).collect()
}

fn unavailable(e: &MongoError) -> TargetError {
    TargetError::Unavailable(describe(e))
}

/// A client for the instance, authenticated as its configured user.
pub async fn connect(
    instance: &Instance,
    secret: Option<&SecretString>,
    app_name: &str,
) -> Result<Client, TargetError> {
    let mut options = match (&instance.uri, &instance.host) {
        (Some(uri), _) => tokio::time::timeout(CONNECT_TIMEOUT, ClientOptions::parse(uri))
            .await
            .map_err(|_| TargetError::Unavailable("resolving the URI took too long".into()))?
            .map_err(|e| TargetError::Misconfigured(describe(&e)))?,
        (None, Some(host)) => {
            let mut o = ClientOptions::default();
            o.hosts = vec![ServerAddress::Tcp {
                host: host.clone(),
                port: Some(instance.port.unwrap_or(27017)),
            }];
            o.direct_connection = Some(true);
            o.tls = Some(match instance.tls_mode {
                TlsMode::Disable | TlsMode::Prefer => Tls::Disabled,
                TlsMode::Require => Tls::Enabled(
                    TlsOptions::builder()
                        .allow_invalid_certificates(true)
                        .build(),
                ),
                TlsMode::VerifyCa | TlsMode::VerifyFull => Tls::Enabled(TlsOptions::default()),
            });
            o
        }
        (None, None) => {
            return Err(TargetError::Misconfigured(
                "neither a URI nor a host".into(),
            ));
        }
    };
    let username = instance
        .username
        .clone()
        .or_else(|| options.credential.as_ref().and_then(|c| c.username.clone()));
    if let Some(username) = username {
        let source = options.credential.as_ref().and_then(|c| c.source.clone());
        options.credential = Some(
            Credential::builder()
                .username(username)
                .password(secret.map(|s| s.expose_secret().to_owned()))
                .source(source)
                .build(),
        );
    }
    options.app_name = Some(app_name.to_owned());
    options.server_selection_timeout = Some(CONNECT_TIMEOUT);
    options.connect_timeout = Some(CONNECT_TIMEOUT);
    Client::with_options(options).map_err(|e| TargetError::Misconfigured(describe(&e)))
}

/// MongoDB clients kept between executions (with `executor.target_idle` above 0, dropped after
/// `executor.target_idle_secs` without use). A client is the driver's connection pool and
/// server monitor and holds nothing of an execution (each has its own session, transaction and
/// cursors), so the executions on one instance with the same credentials share one rather than
/// each discovering the servers, connecting and authenticating anew. The client's application
/// name is `quorum:exec:<instance id>`.
#[derive(Debug)]
pub struct Clients {
    enabled: bool,
    max_idle: Duration,
    kept: std::sync::Mutex<std::collections::HashMap<IdleKey, (Client, Instant)>>,
}

impl Clients {
    pub fn new(enabled: bool, max_idle: Duration) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            enabled,
            max_idle,
            kept: std::sync::Mutex::default(),
        })
    }

    fn kept(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<IdleKey, (Client, Instant)>> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The client for `instance` with `secret`: a kept one, or a new one (then kept).
    pub async fn client(
        &self,
        instance: &Instance,
        secret: Option<&SecretString>,
    ) -> Result<Client, TargetError> {
        let app_name = format!("quorum:exec:{}", instance.id.0);
        if !self.enabled {
            return connect(instance, secret, &app_name).await;
        }
        let key = IdleKey::new(instance, secret, "");
        if let Some((client, used)) = self.kept().get_mut(&key) {
            *used = Instant::now();
            return Ok(client.clone());
        }
        let client = connect(instance, secret, &app_name).await?;
        self.kept().insert(key, (client.clone(), Instant::now()));
        Ok(client)
    }

    /// Drops the clients unused for `executor.target_idle_secs` (their connections close once
    /// no execution holds them).
    pub fn drop_idle(&self) {
        self.kept()
            .retain(|_, (_, used)| used.elapsed() < self.max_idle);
    }
}

/// The server's version, asked over a fresh connection.
pub async fn probe(
    instance: &Instance,
    secret: Option<&SecretString>,
) -> Result<String, TargetError> {
    let client = connect(instance, secret, "quorum:probe").await?;
    let info = client
        .database("admin")
        .run_command(doc! { "buildInfo": 1 })
        .await
        .map_err(|e| unavailable(&e))?;
    let version = info.get_str("version").unwrap_or("unknown version");
    Ok(format!("MongoDB {version}"))
}

/// The user databases a request may name.
pub async fn list_databases(
    instance: &Instance,
    secret: Option<&SecretString>,
) -> Result<Vec<String>, TargetError> {
    let client = connect(instance, secret, "quorum:sync").await?;
    let mut names = client
        .list_database_names()
        .authorized_databases(true)
        .await
        .map_err(|e| unavailable(&e))?;
    names.retain(|n| !SYSTEM_DATABASES.contains(&n.as_str()));
    names.sort();
    Ok(names)
}

/// A driver error as one line for people: the server's message and code name when there is one.
pub fn describe(e: &MongoError) -> String {
    let text = match &*e.kind {
        MongoErrorKind::Command(c) if c.code_name.is_empty() => c.message.clone(),
        MongoErrorKind::Command(c) => format!("{} ({})", c.message, c.code_name),
        MongoErrorKind::Write(WriteFailure::WriteError(w)) => match &w.code_name {
            Some(name) => format!("{} ({name})", w.message),
            None => format!("{} (code {})", w.message, w.code),
        },
        MongoErrorKind::InsertMany(m) => match m.write_errors.as_ref().and_then(|w| w.first()) {
            Some(w) => format!("document {}: {} (code {})", w.index, w.message, w.code),
            None => e.to_string(),
        },
        MongoErrorKind::ServerSelection { message, .. } => format!("no usable server: {message}"),
        MongoErrorKind::Io(io) => format!("network error: {io}"),
        MongoErrorKind::Authentication { message, .. } => {
            format!("authentication failed: {message}")
        }
        _ => e.to_string(),
    };
    clean(&text)
}

/// The server's error code name (or number), for `DatabaseError.code` in the script.
fn code_of(e: &MongoError) -> Option<String> {
    match &*e.kind {
        MongoErrorKind::Command(c) if !c.code_name.is_empty() => Some(c.code_name.clone()),
        MongoErrorKind::Command(c) => Some(c.code.to_string()),
        MongoErrorKind::Write(WriteFailure::WriteError(w)) => {
            Some(w.code_name.clone().unwrap_or_else(|| w.code.to_string()))
        }
        MongoErrorKind::InsertMany(m) => m
            .write_errors
            .as_ref()
            .and_then(|w| w.first())
            .map(|w| w.code.to_string()),
        _ => None,
    }
}

/// Canonical Extended JSON -> a value for a results table: ObjectIds, dates, decimals and binary
/// as strings, numbers as numbers (as strings past 2^53, so they stay exact).
pub fn relax(v: Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.into_iter().map(relax).collect()),
        Value::Object(o) => {
            if o.len() == 1
                && let Some((k, x)) = o.iter().next()
            {
                let text = x.as_str();
                match (k.as_str(), text) {
                    ("$oid" | "$numberDecimal" | "$symbol", Some(s)) => return json!(s),
                    ("$numberInt", Some(s)) => {
                        return s.parse::<i64>().map_or_else(|_| json!(s), Value::from);
                    }
                    ("$numberLong", Some(s)) => {
                        return match s.parse::<i64>() {
                            Ok(n) if n.unsigned_abs() <= (1 << 53) => Value::from(n),
                            _ => json!(s),
                        };
                    }
                    ("$numberDouble", Some(s)) => {
                        return s
                            .parse::<f64>()
                            .ok()
                            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
                            .unwrap_or_else(|| json!(s));
                    }
                    ("$date" | "$binary" | "$regularExpression" | "$timestamp", _) => {
                        if let Ok(b) = Bson::try_from(Value::Object(o.clone())) {
                            return display_bson(&b);
                        }
                    }
                    _ => {}
                }
            }
            Value::Object(o.into_iter().map(|(k, x)| (k, relax(x))).collect())
        }
        other => other,
    }
}

fn display_bson(b: &Bson) -> Value {
    match b {
        Bson::DateTime(d) => d
            .try_to_rfc3339_string()
            .map_or_else(|_| json!(d.timestamp_millis()), Value::from),
        Bson::Binary(bin) => {
            use base64::Engine as _;
            json!(base64::engine::general_purpose::STANDARD.encode(&bin.bytes))
        }
        Bson::RegularExpression(r) => json!(format!("/{}/{}", r.pattern, r.options)),
        Bson::Timestamp(t) => json!(format!("Timestamp({}, {})", t.time, t.increment)),
        other => other.clone().into_relaxed_extjson(),
    }
}

/// Why a call was not run, or how it failed.
enum Failure {
    /// The call is malformed: the script may catch this.
    Usage(String),
    Db(MongoError),
    Fatal(K, String),
}

impl From<MongoError> for Failure {
    fn from(e: MongoError) -> Self {
        Self::Db(e)
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

/// The first key anywhere in `v` that is one of `keys`.
fn find_key<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a str> {
    match v {
        Value::Object(o) => o.iter().find_map(|(k, x)| {
            keys.iter()
                .find(|f| **f == k)
                .map(|_| k.as_str())
                .or_else(|| find_key(x, keys))
        }),
        Value::Array(a) => a.iter().find_map(|x| find_key(x, keys)),
        _ => None,
    }
}

/// The reason a call may not run in this mode, before anything is sent.
fn admit(mode: Mode, method: &str, args: &[Value]) -> Result<(), Failure> {
    if let Some(k) = args.iter().find_map(|a| find_key(a, &SERVER_JAVASCRIPT)) {
        return Err(Failure::Fatal(
            K::ForbiddenStatement,
            format!(
                "{k} runs JavaScript on the database server, outside the sandbox's limits; it is not allowed"
            ),
        ));
    }
    if mode == Mode::Read {
        if WRITE_METHODS.contains(&method) {
            return Err(Failure::Fatal(
                K::ReadOnlyViolation,
                format!("{method} writes, which a read request may not do; nothing was sent"),
            ));
        }
        if let Some(k) = args.iter().find_map(|a| find_key(a, &WRITING_STAGES)) {
            return Err(Failure::Fatal(
                K::ReadOnlyViolation,
                format!("{k} writes, which a read request may not do; nothing was sent"),
            ));
        }
    }
    Ok(())
}

fn valid_collection(name: &str) -> Result<(), Failure> {
    if name.is_empty() || name.len() > 255 {
        return Err(usage("a collection name must have 1 to 255 characters"));
    }
    if name.contains(['\0', '$']) || name.starts_with("system.") || name.starts_with('.') {
        return Err(usage(format!(
            "{name:?} is not a collection a request may use"
        )));
    }
    Ok(())
}

/// The call's arguments, decoded from Extended JSON.
struct Args {
    method: String,
    values: Vec<Bson>,
}

impl Args {
    fn new(method: &str, raw: Vec<Value>) -> Result<Self, Failure> {
        let values = raw
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                Bson::try_from(v)
                    .map_err(|e| usage(format!("{method}: argument {} is not valid: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            method: method.to_owned(),
            values,
        })
    }

    fn at(&self, i: usize) -> Option<&Bson> {
        self.values.get(i).filter(|b| !matches!(b, Bson::Null))
    }

    /// A document argument; absent means `{}` when optional.
    fn doc(&self, i: usize, what: &str, required: bool) -> Result<Document, Failure> {
        match self.at(i) {
            Some(Bson::Document(d)) => Ok(d.clone()),
            None if !required => Ok(Document::new()),
            None => Err(usage(format!("{}: the {what} is required", self.method))),
            Some(_) => Err(usage(format!(
                "{}: the {what} must be an object",
                self.method
            ))),
        }
    }

    fn docs(&self, i: usize, what: &str) -> Result<Vec<Document>, Failure> {
        documents(&self.method, self.at(i), what)
    }

    /// The options object at `i`, refusing keys outside `allowed`.
    fn options(&self, i: usize, allowed: &[&str]) -> Result<Opts, Failure> {
        let d = self.doc(i, "options", false)?;
        if let Some(k) = d.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(usage(format!(
                "{}: unknown option {k:?} (allowed: {})",
                self.method,
                allowed.join(", ")
            )));
        }
        Ok(Opts {
            method: self.method.clone(),
            d,
        })
    }
}

/// An array of documents, or the reason it is not one.
fn documents(method: &str, value: Option<&Bson>, what: &str) -> Result<Vec<Document>, Failure> {
    let Some(Bson::Array(items)) = value else {
        return Err(usage(format!("{method}: the {what} must be an array")));
    };
    items
        .iter()
        .map(|b| match b {
            Bson::Document(d) => Ok(d.clone()),
            _ => Err(usage(format!(
                "{method}: each of the {what} must be an object"
            ))),
        })
        .collect()
}

struct Opts {
    method: String,
    d: Document,
}

impl Opts {
    fn doc(&self, k: &str) -> Result<Option<Document>, Failure> {
        match self.d.get(k) {
            None | Some(Bson::Null) => Ok(None),
            Some(Bson::Document(d)) => Ok(Some(d.clone())),
            Some(_) => Err(usage(format!(
                "{}: option {k} must be an object",
                self.method
            ))),
        }
    }

    fn count(&self, k: &str) -> Result<Option<u64>, Failure> {
        let n = match self.d.get(k) {
            None | Some(Bson::Null) => return Ok(None),
            Some(Bson::Int32(n)) => i64::from(*n),
            Some(Bson::Int64(n)) => *n,
            #[expect(
                clippy::cast_possible_truncation,
                reason = "checked to be a whole number in range first"
            )]
            Some(Bson::Double(f)) if f.fract() == 0.0 && f.abs() < 9e15 => *f as i64,
            Some(_) => {
                return Err(usage(format!(
                    "{}: option {k} must be a whole number",
                    self.method
                )));
            }
        };
        u64::try_from(n)
            .map(Some)
            .map_err(|_| usage(format!("{}: option {k} must not be negative", self.method)))
    }

    fn flag(&self, k: &str) -> Result<Option<bool>, Failure> {
        match self.d.get(k) {
            None | Some(Bson::Null) => Ok(None),
            Some(Bson::Boolean(b)) => Ok(Some(*b)),
            Some(_) => Err(usage(format!(
                "{}: option {k} must be true or false",
                self.method
            ))),
        }
    }
}

fn ejson(b: Bson) -> Value {
    b.into_canonical_extjson()
}

/// The wrapped handle of one execution on a MongoDB database.
#[derive(Debug)]
pub struct MongoHandle {
    db: Database,
    session: ClientSession,
    mode: Mode,
    limits: LimitsConfig,
    transaction: bool,
}

impl MongoHandle {
    /// Takes the instance's client (see [`Clients`]), starts this execution's session and, for a
    /// write request on a server that supports them, its transaction.
    pub async fn open(
        clients: &Clients,
        instance: &Instance,
        secret: Option<&SecretString>,
        database: &str,
        mode: Mode,
        limits: LimitsConfig,
    ) -> Result<Self, TargetError> {
        let client = clients.client(instance, secret).await?;
        let db = client.database(database);
        let hello = db
            .run_command(doc! { "hello": 1 })
            .await
            .map_err(|e| unavailable(&e))?;
        // Replica sets and sharded clusters run transactions; a standalone server does not.
        let supports = hello.contains_key("setName") || hello.get_str("msg") == Ok("isdbgrid");
        let mut session = client.start_session().await.map_err(|e| unavailable(&e))?;
        let transaction = mode == Mode::Write && supports;
        if transaction {
            session
                .start_transaction()
                .await
                .map_err(|e| unavailable(&e))?;
        }
        Ok(Self {
            db,
            session,
            mode,
            limits,
            transaction,
        })
    }

    /// Whether the writes of this execution commit or abort together.
    pub fn atomic(&self) -> bool {
        self.transaction
    }

    /// Commits or aborts the transaction, if one was started.
    pub async fn settle(mut self, commit: bool) -> Result<(), String> {
        if !self.transaction {
            return Ok(());
        }
        if commit {
            self.session.commit_transaction().await.map_err(|e| {
                format!(
                    "the transaction did not commit, so nothing was written: {}",
                    describe(&e)
                )
            })
        } else {
            // An abort that fails leaves the server to drop the transaction when it times out.
            let _ = self.session.abort_transaction().await;
            Ok(())
        }
    }

    fn max_time(&self) -> Duration {
        Duration::from_millis(u64::from(self.limits.db_call_ms))
    }

    /// Reads documents from a cursor within the row and byte limits.
    async fn collect(
        &mut self,
        mut cursor: mongodb::SessionCursor<Document>,
    ) -> Result<(Vec<Value>, bool), Failure> {
        let max_rows = self.limits.max_rows as usize;
        let mut docs = Vec::new();
        let mut bytes = 0u64;
        while let Some(doc) = cursor.next(&mut self.session).await {
            let v = ejson(Bson::Document(doc?));
            let size = v.to_string().len() as u64;
            if docs.len() >= max_rows || bytes + size > self.limits.max_result_bytes {
                return Ok((docs, true));
            }
            bytes += size;
            docs.push(v);
        }
        Ok((docs, false))
    }

    async fn dispatch(
        &mut self,
        coll: Collection<Document>,
        a: Args,
    ) -> Result<(Value, u64, bool), Failure> {
        let max_time = self.max_time();
        let cap = i64::from(self.limits.max_rows) + 1;
        match a.method.as_str() {
            "find" | "findOne" => {
                // findOne is a find of one document, as in mongosh.
                let one = a.method == "findOne";
                let filter = a.doc(0, "filter", false)?;
                let o = if one {
                    a.options(1, &["projection", "sort", "skip"])?
                } else {
                    a.options(1, &["projection", "sort", "limit", "skip", "batchSize"])?
                };
                let limit = if one {
                    1
                } else {
                    o.count("limit")?
                        .filter(|n| *n > 0)
                        .map_or(cap, |n| i64::try_from(n).unwrap_or(cap).min(cap))
                };
                let mut find = coll.find(filter).limit(limit).max_time(max_time);
                if let Some(p) = o.doc("projection")? {
                    find = find.projection(p);
                }
                if let Some(s) = o.doc("sort")? {
                    find = find.sort(s);
                }
                if let Some(n) = o.count("skip")? {
                    find = find.skip(n);
                }
                let cursor = find.session(&mut self.session).await?;
                let (docs, truncated) = self.collect(cursor).await?;
                let n = docs.len() as u64;
                if one {
                    return Ok((docs.into_iter().next().unwrap_or(Value::Null), n, false));
                }
                Ok((Value::Array(docs), n, truncated))
            }
            "aggregate" => {
                let mut pipeline = a.docs(0, "pipeline stages")?;
                let o = a.options(
                    1,
                    &[
                        "allowDiskUse",
                        "batchSize",
                        "sort",
                        "skip",
                        "limit",
                        "projection",
                    ],
                )?;
                // What the cursor's .sort() .skip() .limit() .project() asked for, in that order.
                if let Some(s) = o.doc("sort")? {
                    pipeline.push(doc! { "$sort": s });
                }
                if let Some(n) = o.count("skip")? {
                    pipeline.push(doc! { "$skip": i64::try_from(n).unwrap_or(i64::MAX) });
                }
                if let Some(n) = o.count("limit")?.filter(|n| *n > 0) {
                    pipeline.push(doc! { "$limit": i64::try_from(n).unwrap_or(i64::MAX) });
                }
                if let Some(p) = o.doc("projection")? {
                    pipeline.push(doc! { "$project": p });
                }
                let mut agg = coll.aggregate(pipeline).max_time(max_time);
                if let Some(b) = o.flag("allowDiskUse")? {
                    agg = agg.allow_disk_use(b);
                }
                let cursor = agg.session(&mut self.session).await?;
                let (docs, truncated) = self.collect(cursor).await?;
                let n = docs.len() as u64;
                Ok((Value::Array(docs), n, truncated))
            }
            "countDocuments" => {
                let filter = a.doc(0, "filter", false)?;
                let o = a.options(1, &["limit", "skip"])?;
                let mut count = coll.count_documents(filter).max_time(max_time);
                if let Some(n) = o.count("limit")?.filter(|n| *n > 0) {
                    count = count.limit(n);
                }
                if let Some(n) = o.count("skip")? {
                    count = count.skip(n);
                }
                let n = count.session(&mut self.session).await?;
                Ok((Value::from(n), 0, false))
            }
            "estimatedDocumentCount" => {
                a.options(0, &[])?;
                // The `count` command may not run inside a transaction, so this runs beside it.
                let n = coll.estimated_document_count().max_time(max_time).await?;
                Ok((Value::from(n), 0, false))
            }
            "distinct" => {
                let Some(Bson::String(field)) = a.at(0) else {
                    return Err(usage("distinct: the field name must be a string"));
                };
                let filter = a.doc(1, "filter", false)?;
                let values = coll
                    .distinct(field, filter)
                    .max_time(max_time)
                    .session(&mut self.session)
                    .await?;
                let n = values.len() as u64;
                Ok((
                    Value::Array(values.into_iter().map(ejson).collect()),
                    n,
                    false,
                ))
            }
            "insertOne" => {
                let d = a.doc(0, "document", true)?;
                a.options(1, &[])?;
                let r = coll.insert_one(d).session(&mut self.session).await?;
                let value = json!({"acknowledged": true, "insertedId": ejson(r.inserted_id)});
                Ok((value, 1, false))
            }
            "insertMany" => {
                let docs = a.docs(0, "documents")?;
                if docs.is_empty() {
                    return Err(usage("insertMany: the documents array is empty"));
                }
                let o = a.options(1, &["ordered"])?;
                let mut insert = coll.insert_many(docs);
                if let Some(b) = o.flag("ordered")? {
                    insert = insert.ordered(b);
                }
                let r = insert.session(&mut self.session).await?;
                let mut ids: Vec<(usize, Bson)> = r.inserted_ids.into_iter().collect();
                ids.sort_by_key(|(i, _)| *i);
                let n = ids.len() as u64;
                let ids: Map<String, Value> = ids
                    .into_iter()
                    .map(|(i, id)| (i.to_string(), ejson(id)))
                    .collect();
                let value = json!({"acknowledged": true, "insertedCount": n, "insertedIds": ids});
                Ok((value, n, false))
            }
            "updateOne" | "updateMany" | "replaceOne" => self.update(coll, &a).await,
            "deleteOne" | "deleteMany" => {
                let filter = a.doc(0, "filter", true)?;
                a.options(1, &[])?;
                let r = if a.method == "deleteOne" {
                    coll.delete_one(filter).session(&mut self.session).await?
                } else {
                    coll.delete_many(filter).session(&mut self.session).await?
                };
                let value = json!({"acknowledged": true, "deletedCount": r.deleted_count});
                Ok((value, r.deleted_count, false))
            }
            other => Err(usage(format!(
                "{other} is not a collection method here (find, findOne, aggregate, countDocuments, \
                 estimatedDocumentCount, distinct, insertOne, insertMany, updateOne, updateMany, \
                 replaceOne, deleteOne, deleteMany)"
            ))),
        }
    }

    async fn update(
        &mut self,
        coll: Collection<Document>,
        a: &Args,
    ) -> Result<(Value, u64, bool), Failure> {
        let filter = a.doc(0, "filter", true)?;
        let r = if a.method == "replaceOne" {
            let replacement = a.doc(1, "replacement document", true)?;
            if replacement.keys().any(|k| k.starts_with('$')) {
                return Err(usage(
                    "replaceOne: the replacement is a whole document, not update operators; use updateOne for $set and the like",
                ));
            }
            let o = a.options(2, &["upsert"])?;
            let mut replace = coll.replace_one(filter, replacement);
            if let Some(b) = o.flag("upsert")? {
                replace = replace.upsert(b);
            }
            replace.session(&mut self.session).await?
        } else {
            let update: mongodb::options::UpdateModifications = match a.at(1) {
                Some(Bson::Document(d)) => {
                    if !d.keys().all(|k| k.starts_with('$')) {
                        return Err(usage(format!(
                            "{}: the update must use operators such as $set; use replaceOne to replace a whole document",
                            a.method
                        )));
                    }
                    d.clone().into()
                }
                Some(Bson::Array(_)) => a.docs(1, "update pipeline stages")?.into(),
                _ => {
                    return Err(usage(format!(
                        "{}: the update must be an object of operators or a pipeline array",
                        a.method
                    )));
                }
            };
            let o = a.options(2, &["upsert", "arrayFilters"])?;
            let mut run = if a.method == "updateOne" {
                coll.update_one(filter, update)
            } else {
                coll.update_many(filter, update)
            };
            if let Some(b) = o.flag("upsert")? {
                run = run.upsert(b);
            }
            if let Some(filters) = o.d.get("arrayFilters") {
                run = run.array_filters(documents(&a.method, Some(filters), "arrayFilters")?);
            }
            run.session(&mut self.session).await?
        };
        let upserted = u64::from(r.upserted_id.is_some());
        let value = json!({
            "acknowledged": true,
            "matchedCount": r.matched_count,
            "modifiedCount": r.modified_count,
            "upsertedCount": upserted,
            "upsertedId": r.upserted_id.map_or(Value::Null, ejson),
        });
        Ok((value, r.modified_count + upserted, false))
    }

    fn failure(&self, e: &MongoError) -> Reply {
        let timed_out = matches!(&*e.kind, MongoErrorKind::Command(c) if c.code == 50);
        if timed_out {
            return Reply::Fatal {
                kind: K::Timeout,
                message: format!(
                    "a database call ran longer than {} ms and was stopped",
                    self.limits.db_call_ms
                ),
            };
        }
        let lost = matches!(
            &*e.kind,
            MongoErrorKind::Io(_)
                | MongoErrorKind::ServerSelection { .. }
                | MongoErrorKind::ConnectionPoolCleared { .. }
                | MongoErrorKind::Authentication { .. }
        );
        if lost {
            return Reply::Fatal {
                kind: K::DbError,
                message: format!("the connection to the database was lost: {}", describe(e)),
            };
        }
        Reply::Error {
            message: describe(e),
            code: code_of(e),
        }
    }
}

impl Handle for MongoHandle {
    /// MongoDB replies are method values (a find's documents come back whole).
    async fn call(&mut self, op: DbOp, _rows: &mut crate::sandbox::RowSink<'_>) -> Reply {
        let DbOp::Mongo {
            collection,
            method,
            args,
        } = op
        else {
            return Reply::Error {
                message: "this is a MongoDB instance: use db.collection(name) or db.<name> with find, aggregate, insertOne, …".into(),
                code: None,
            };
        };
        let checked = valid_collection(&collection)
            .and_then(|()| admit(self.mode, &method, &args))
            .and_then(|()| Args::new(&method, args));
        let result = match checked {
            Err(f) => Err(f),
            Ok(a) => {
                let coll = self.db.collection::<Document>(&collection);
                let timeout = self.max_time() + Duration::from_millis(500);
                match tokio::time::timeout(timeout, self.dispatch(coll, a)).await {
                    Ok(r) => r,
                    Err(_) => Err(Failure::Fatal(
                        K::Timeout,
                        format!(
                            "a database call ran longer than {} ms and was abandoned",
                            self.limits.db_call_ms
                        ),
                    )),
                }
            }
        };
        match result {
            Ok((value, rows, truncated)) => Reply::Ok {
                value,
                rows,
                truncated,
            },
            Err(Failure::Usage(message)) => Reply::Error {
                message,
                code: None,
            },
            Err(Failure::Fatal(kind, message)) => Reply::Fatal { kind, message },
            Err(Failure::Db(e)) => self.failure(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_requests_refuse_writes_and_writing_stages() {
        let write = admit(Mode::Read, "insertOne", &[json!({"a": 1})]);
        assert!(matches!(
            write,
            Err(Failure::Fatal(K::ReadOnlyViolation, _))
        ));
        let out = admit(
            Mode::Read,
            "aggregate",
            &[json!([{"$match": {}}, {"$out": "copy"}])],
        );
        assert!(matches!(out, Err(Failure::Fatal(K::ReadOnlyViolation, _))));
        let nested = admit(
            Mode::Read,
            "aggregate",
            &[json!([{"$facet": {"x": [{"$merge": {"into": "c"}}]}}])],
        );
        assert!(matches!(
            nested,
            Err(Failure::Fatal(K::ReadOnlyViolation, _))
        ));
        assert!(admit(Mode::Read, "find", &[json!({"status": "open"})]).is_ok());
        assert!(admit(Mode::Write, "insertOne", &[json!({"a": 1})]).is_ok());
    }

    #[test]
    fn server_side_javascript_is_refused_in_every_mode() {
        for mode in [Mode::Read, Mode::Write] {
            for args in [
                json!({"$where": "sleep(100000)"}),
                json!({"$expr": {"$function": {"body": "f", "args": [], "lang": "js"}}}),
                json!([{"$group": {"_id": 1, "x": {"$accumulator": {}}}}]),
            ] {
                let r = admit(mode, "find", &[args]);
                assert!(matches!(r, Err(Failure::Fatal(K::ForbiddenStatement, _))));
            }
        }
    }

    #[test]
    fn collection_names_are_checked() {
        assert!(valid_collection("orders").is_ok());
        for bad in ["", "system.users", "a$b", ".x"] {
            assert!(valid_collection(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn relaxed_values_for_display() {
        let v = json!({
            "_id": {"$oid": "5f0000000000000000000001"},
            "n": {"$numberInt": "7"},
            "big": {"$numberLong": "9007199254740993"},
            "small": {"$numberLong": "12"},
            "price": {"$numberDecimal": "19.99"},
            "at": {"$date": {"$numberLong": "0"}},
            "nested": [{"x": {"$numberDouble": "1.5"}}],
        });
        assert_eq!(
            relax(v),
            json!({
                "_id": "5f0000000000000000000001",
                "n": 7,
                "big": "9007199254740993",
                "small": 12,
                "price": "19.99",
                "at": "1970-01-01T00:00:00Z",
                "nested": [{"x": 1.5}],
            })
        );
    }

    #[test]
    fn option_keys_are_checked() {
        let a = Args::new(
            "find",
            vec![json!({}), json!({"limt": {"$numberInt": "5"}})],
        )
        .ok()
        .map(|a| a.options(1, &["limit"]).is_err());
        assert_eq!(a, Some(true));
        let a = Args::new(
            "find",
            vec![json!({}), json!({"limit": {"$numberInt": "-1"}})],
        )
        .ok()
        .and_then(|a| a.options(1, &["limit"]).ok())
        .map(|o| o.count("limit").is_err());
        assert_eq!(a, Some(true));
    }
}
