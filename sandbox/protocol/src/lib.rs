//! The frames exchanged between the portal's executor and a `quorum-sandbox` child.
//!
//! Each frame is a 4-byte big-endian length followed by that many bytes of JSON. The length is
//! checked against the reader's cap before anything is allocated, and every frame type rejects
//! unknown fields, so a confused or hostile peer gets an error rather than a guess.
//!
//! ```text
//! child  → parent   Ready                         (once, after start-up and self-restriction)
//! parent → child    Job                           (once)
//! child  → parent   DbCall | Log                  (any number; each DbCall waits for its DbReply)
//! parent → child    DbRows*                       (rows of that call in batches, as they are read)
//! parent → child    DbReply                       (one per DbCall, same id, after its batches)
//! child  → parent   Outcome                       (once, then the child exits)
//! ```

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Bumped on any incompatible change; both sides refuse a peer speaking another version.
pub const VERSION: u32 = 4;

/// The largest frame either side will ever accept, whatever the limits of a job say.
pub const ABSOLUTE_MAX_FRAME: usize = 512 * 1024 * 1024;

/// Bytes of a single log line kept; longer lines are cut and marked.
pub const MAX_LOG_LINE: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the cap of {cap} bytes")]
    TooLarge { len: usize, cap: usize },
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

/// The database engine a job talks to; decides the shape of `db`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    Postgres,
    Sqlite,
    Mongodb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Read,
    Write,
}

/// `script`: a JavaScript body (top-level `await` and `return` allowed). `expression`: a single
/// mongosh-style expression such as `db.orders.find({})`, whose value is the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Script,
    Expression,
}

/// The limits the child enforces itself; the parent enforces them again on its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobLimits {
    pub wall_ms: u64,
    pub memory_mb: u32,
    pub max_calls: u32,
    /// Largest serialized argument of one `db.*` call.
    pub max_call_bytes: u64,
    pub max_log_bytes: u64,
    pub max_result_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub v: u32,
    pub engine: Engine,
    pub mode: Mode,
    pub kind: SourceKind,
    pub source: String,
    pub limits: JobLimits,
    /// Only parse the source and report syntax errors; run nothing.
    #[serde(default)]
    pub check_only: bool,
}

/// The protections the child managed to put in place before accepting a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Protections {
    /// The seccomp filter denying sockets, exec, fork and file opens is installed.
    pub seccomp: bool,
    /// Landlock's answer: `full`, `partial`, or `unsupported` when the kernel lacks it.
    pub landlock: String,
    /// `PR_SET_NO_NEW_PRIVS` is set.
    pub no_new_privs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Log,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// Why an execution failed, as design §5 names the kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Syntax,
    Script,
    DbError,
    Timeout,
    MemoryLimit,
    StackOverflow,
    OutputLimit,
    CallLimit,
    ReadOnlyViolation,
    ForbiddenStatement,
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Syntax => "syntax",
            Self::Script => "script",
            Self::DbError => "db_error",
            Self::Timeout => "timeout",
            Self::MemoryLimit => "memory_limit",
            Self::StackOverflow => "stack_overflow",
            Self::OutputLimit => "output_limit",
            Self::CallLimit => "call_limit",
            Self::ReadOnlyViolation => "read_only_violation",
            Self::ForbiddenStatement => "forbidden_statement",
            Self::Internal => "internal",
        }
    }
}

/// A failure with the script position it happened at, where one is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// The script's returned value as JSON (`null` when it returned nothing or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// The log was cut at `max_log_bytes`.
    pub logs_truncated: bool,
    /// Peak guest linear memory, in bytes.
    pub peak_memory_bytes: u64,
    /// CPU time the child process used (user and system, all its threads), in milliseconds,
    /// from the job's arrival until this outcome.
    pub cpu_ms: f64,
}

/// A database call from the script. SQL engines only ever send `Query`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum DbOp {
    Query {
        sql: String,
        #[serde(default)]
        params: Vec<serde_json::Value>,
    },
    Mongo {
        collection: String,
        method: String,
        #[serde(default)]
        args: Vec<serde_json::Value>,
    },
}

/// Frames the child sends. Externally tagged (`{"db_call": {…}}`): raw JSON values cannot pass
/// through serde's buffering of internally tagged enums.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FromChild {
    Ready {
        v: u32,
        protections: Protections,
    },
    DbCall {
        id: u32,
        /// The guest's serialized [`DbOp`], passed on unparsed by the child.
        call: Box<RawValue>,
    },
    Log {
        level: LogLevel,
        message: String,
        /// Milliseconds since the job started.
        at_ms: u64,
    },
    Outcome(Outcome),
}

/// Frames the parent sends.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToChild {
    Job(Job),
    /// A batch of the rows of call `id`, sent while the rest are still being read so that the
    /// guest decodes one batch while the portal fetches the next. `rows` is a JSON array: the
    /// column names, then each row as an array of its values in that order
    /// (`[["id","name"],[1,"a"],[2,"b"]]`), which the guest makes into the objects
    /// `{"id":1,"name":"a"}` would parse to (a later column of the same name wins). The batches of
    /// a call, in order, are its rows, and its `DbReply` then carries `"rows": []`. A call that fails after some batches were sent ends in an error reply, and
    /// the guest drops them.
    DbRows {
        id: u32,
        rows: Box<RawValue>,
    },
    DbReply {
        id: u32,
        /// `{"ok": value}` or `{"error": {"kind": …, "message": …}}`, handed to the guest as is.
        reply: Box<RawValue>,
        /// Set when the call broke a limit the script must not survive (call timeout, read-only
        /// violation): the child stops the script with this failure instead of replying.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fatal: Option<Failure>,
    },
}

impl ToChild {
    /// What the frame is, in a few words, for an error that names an unexpected one (its
    /// `Debug` form would carry a whole batch of rows or a script's source).
    pub fn summary(&self) -> String {
        match self {
            ToChild::Job(_) => "a job".to_owned(),
            ToChild::DbRows { id, .. } => format!("rows for call {id}"),
            ToChild::DbReply { id, .. } => format!("the reply to call {id}"),
        }
    }
}

/// Serializes `frame` with its length prefix.
pub fn encode<T: Serialize>(frame: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; 4];
    serde_json::to_writer(&mut out, frame)?;
    let len = out.len() - 4;
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        cap: u32::MAX as usize,
    })?;
    out[..4].copy_from_slice(&prefix.to_be_bytes());
    Ok(out)
}

/// A `DbRows` frame, length prefix included, built around `rows` (the JSON array text of a
/// batch) without copying it through a `RawValue`: the sender wrote that text itself with
/// `serde_json`, so it is valid JSON, and the batch is the bulk of a large reply.
pub fn encode_db_rows(id: u32, rows: &[u8]) -> Result<Vec<u8>, FrameError> {
    let head = format!(r#"{{"db_rows":{{"id":{id},"rows":"#);
    let len = head.len() + rows.len() + 2;
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        cap: u32::MAX as usize,
    })?;
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&prefix.to_be_bytes());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(rows);
    out.extend_from_slice(b"}}");
    Ok(out)
}

/// The call id and the rows of a `DbRows` frame body laid out exactly as [`encode_db_rows`]
/// writes it, taken apart without parsing the rows: a child reads every batch of a large result
/// this way, and parsing each one as JSON here, only for the guest to parse it again, took about
/// 3 ms of the child's 40-odd on 100 000 rows. The rows are checked to be UTF-8 and to look
/// like an array; the guest's reader hands anything that is not JSON to `JSON.parse`, which
/// throws a `SyntaxError`. `None` for any other body, which [`decode`] then reads like every
/// other frame.
pub fn decode_db_rows(body: &[u8]) -> Option<(u32, &[u8])> {
    let rest = body.strip_prefix(br#"{"db_rows":{"id":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let (number, rest) = rest.split_at(digits);
    // JSON has no leading zeros, and a u32 has at most ten digits.
    if digits == 0 || digits > 10 || (digits > 1 && number[0] == b'0') {
        return None;
    }
    let id = std::str::from_utf8(number).ok()?.parse().ok()?;
    let rows = rest.strip_prefix(br#","rows":"#)?.strip_suffix(b"}}")?;
    if rows.first() != Some(&b'[') || rows.last() != Some(&b']') {
        return None;
    }
    std::str::from_utf8(rows).ok()?;
    Some((id, rows))
}

/// Checks a length prefix against a cap before anything is allocated for the body.
pub fn check_len(prefix: [u8; 4], cap: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    let cap = cap.min(ABSOLUTE_MAX_FRAME);
    if len > cap {
        return Err(FrameError::TooLarge { len, cap });
    }
    Ok(len)
}

pub fn write_frame<W: Write, T: Serialize>(w: &mut W, frame: &T) -> Result<(), FrameError> {
    w.write_all(&encode(frame)?)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame body; `Ok(None)` on a clean end of stream before a new frame.
pub fn read_frame<R: Read>(r: &mut R, cap: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; 4];
    match r.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = check_len(prefix, cap)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    Ok(serde_json::from_slice(body)?)
}

/// What the guest hands its host through the `quorum` imports, as bytes it wrote into its own
/// memory. The host decodes them with these functions and nothing else, so that the fuzz target
/// (`sandbox/protocol/fuzz`) exercises exactly what a hostile guest can reach.
pub mod guest {
    use serde::Deserialize;
    use serde_json::value::RawValue;

    use super::{Failure, FrameError};

    /// The argument of `db_call`: one JSON value in UTF-8, passed on to the executor unparsed.
    /// `None` for anything else (the guest is told its call was not valid JSON).
    pub fn call(bytes: Vec<u8>) -> Option<Box<RawValue>> {
        String::from_utf8(bytes)
            .ok()
            .and_then(|s| RawValue::from_string(s).ok())
    }

    /// The argument of `finish`: the script's value, or how it failed.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Finished {
        #[serde(default)]
        pub value: Option<Box<RawValue>>,
        #[serde(default)]
        pub error: Option<Failure>,
    }

    pub fn finished(bytes: &[u8]) -> Result<Finished, FrameError> {
        super::decode(bytes)
    }
}

/// The control channel of a template child (`quorum-sandbox template`), a fork server: it loads
/// the guest, confines itself and starts QuickJS once, then forks one job child per request.
///
/// The channel is a Unix stream socket on the template's stdin. Fixed-size little-endian
/// messages, no JSON:
///
/// ```text
/// template → parent  GREETING                      (once, when QuickJS is up and it can fork)
/// parent → template  ForkRequest + SCM_RIGHTS [stdin, stdout, stderr of the new child]
/// template → parent  reply: the child's pid, or a negated errno
/// ```
///
/// The new child then speaks the frames above on the three descriptors it was given, starting
/// with `Ready`, exactly as a child started on its own does.
pub mod template {
    /// Sent once by the template when it is ready to fork: a tag and [`super::VERSION`].
    pub const GREETING: [u8; 8] = greeting();

    const fn greeting() -> [u8; 8] {
        let v = super::VERSION.to_le_bytes();
        [b'Q', b'T', b'P', b'L', v[0], v[1], v[2], v[3]]
    }

    /// One job child, with the rlimits it sets on itself before it says `Ready` (the template's
    /// own are higher, since one template serves every job's limits).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ForkRequest {
        /// `RLIMIT_DATA`, bytes.
        pub data_bytes: u64,
        /// `RLIMIT_CPU`, seconds.
        pub cpu_secs: u64,
    }

    impl ForkRequest {
        pub const LEN: usize = 16;

        pub fn encode(&self) -> [u8; Self::LEN] {
            let mut out = [0u8; Self::LEN];
            out[..8].copy_from_slice(&self.data_bytes.to_le_bytes());
            out[8..].copy_from_slice(&self.cpu_secs.to_le_bytes());
            out
        }

        pub fn decode(bytes: [u8; Self::LEN]) -> Self {
            let (data, cpu) = bytes.split_at(8);
            let word = |b: &[u8]| {
                let mut w = [0u8; 8];
                w.copy_from_slice(b);
                u64::from_le_bytes(w)
            };
            Self {
                data_bytes: word(data),
                cpu_secs: word(cpu),
            }
        }
    }

    /// The reply to a [`ForkRequest`]: the new child's pid, or the errno that stopped the fork.
    pub fn encode_reply(reply: Result<u32, i32>) -> [u8; 4] {
        let n: i32 = match reply {
            Ok(pid) => i32::try_from(pid).unwrap_or(i32::MAX),
            Err(errno) => -errno.saturating_abs().max(1),
        };
        n.to_le_bytes()
    }

    /// `Ok(pid)`, or `Err(errno)` (positive); a pid of 0 or 1 is never a forked child, and
    /// neither is a "negated errno" that has no positive counterpart: both read as `EPROTO`.
    pub fn decode_reply(bytes: [u8; 4]) -> Result<u32, i32> {
        const EPROTO: i32 = 71;
        let n = i32::from_le_bytes(bytes);
        match u32::try_from(n) {
            Ok(pid) if pid > 1 => Ok(pid),
            Ok(_) => Err(EPROTO),
            Err(_) => Err(n.checked_neg().unwrap_or(EPROTO)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> JobLimits {
        JobLimits {
            wall_ms: 1000,
            memory_mb: 64,
            max_calls: 10,
            max_call_bytes: 1024,
            max_log_bytes: 1024,
            max_result_bytes: 1024,
        }
    }

    #[test]
    fn frames_round_trip() -> Result<(), FrameError> {
        let job = ToChild::Job(Job {
            v: VERSION,
            engine: Engine::Postgres,
            mode: Mode::Read,
            kind: SourceKind::Script,
            source: "return 1".into(),
            limits: limits(),
            check_only: false,
        });
        let bytes = encode(&job)?;
        let body =
            read_frame(&mut &bytes[..], 1 << 20)?.ok_or(FrameError::TooLarge { len: 0, cap: 0 })?;
        match decode::<ToChild>(&body)? {
            ToChild::Job(j) => assert_eq!(j.source, "return 1"),
            other => panic!("unexpected {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn oversized_frames_are_refused_before_allocation() {
        let prefix = (u32::MAX).to_be_bytes();
        let mut input = prefix.to_vec();
        input.extend_from_slice(b"{}");
        match read_frame(&mut &input[..], 1024) {
            Err(FrameError::TooLarge { len, cap: 1024 }) => assert_eq!(len, u32::MAX as usize),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn unknown_fields_and_types_are_rejected() {
        let extra = br#"{"log":{"level":"log","message":"x","at_ms":1,"sneaky":true}}"#;
        assert!(decode::<FromChild>(extra).is_err());
        let fine = br#"{"log":{"level":"log","message":"x","at_ms":1}}"#;
        assert!(decode::<FromChild>(fine).is_ok());
        let unknown = br#"{"shell":{"cmd":"id"}}"#;
        assert!(decode::<FromChild>(unknown).is_err());
        let op = br#"{"op":"query","sql":"SELECT 1","params":[],"as_root":true}"#;
        assert!(serde_json::from_slice::<DbOp>(op).is_err());
        let ok = br#"{"op":"query","sql":"SELECT $1","params":[1]}"#;
        assert!(serde_json::from_slice::<DbOp>(ok).is_ok());
    }

    #[test]
    fn raw_values_pass_through_unparsed() -> Result<(), FrameError> {
        let reply = ToChild::DbReply {
            id: 7,
            reply: RawValue::from_string(r#"{"ok":{"rows":[{"a":1}]}}"#.to_owned())?,
            fatal: None,
        };
        let bytes = encode(&reply)?;
        match decode::<ToChild>(&bytes[4..])? {
            ToChild::DbReply {
                id: 7,
                reply,
                fatal: None,
            } => {
                assert_eq!(reply.get(), r#"{"ok":{"rows":[{"a":1}]}}"#)
            }
            other => panic!("unexpected {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn row_batches_encode_as_serde_would() -> Result<(), FrameError> {
        let rows = br#"[["n"],[1],["two"]]"#;
        let bytes = encode_db_rows(9, rows)?;
        let expected = encode(&ToChild::DbRows {
            id: 9,
            rows: RawValue::from_string(String::from_utf8_lossy(rows).into_owned())?,
        })?;
        assert_eq!(bytes, expected);
        match decode::<ToChild>(&bytes[4..])? {
            ToChild::DbRows { id: 9, rows: got } => assert_eq!(got.get().as_bytes(), rows),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(decode_db_rows(&bytes[4..]), Some((9, &rows[..])));
        // An error naming the frame names it without its rows.
        assert_eq!(decode::<ToChild>(&bytes[4..])?.summary(), "rows for call 9");
        Ok(())
    }

    #[test]
    fn row_batches_are_taken_apart_only_in_the_encoders_layout() -> Result<(), FrameError> {
        let max = encode_db_rows(u32::MAX, b"[]")?;
        assert_eq!(decode_db_rows(&max[4..]), Some((u32::MAX, &b"[]"[..])));
        // Anything else is left to `decode`: other frames, other layouts, ids out of range,
        // rows that are not an array or not UTF-8.
        for body in [
            &br#"{"db_reply":{"id":1,"reply":{"ok":null}}}"#[..],
            br#"{"db_rows":{"rows":[],"id":1}}"#,
            br#"{"db_rows": {"id":1,"rows":[]}}"#,
            br#"{"db_rows":{"id":01,"rows":[]}}"#,
            br#"{"db_rows":{"id":,"rows":[]}}"#,
            br#"{"db_rows":{"id":4294967296,"rows":[]}}"#,
            br#"{"db_rows":{"id":1,"rows":{}}}"#,
            br#"{"db_rows":{"id":1,"rows":[]}} "#,
            br#"{"db_rows":{"id":1,"rows":[]"#,
            b"{\"db_rows\":{\"id\":1,\"rows\":[\"\xff\"]}}",
        ] {
            assert_eq!(
                decode_db_rows(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        Ok(())
    }

    #[test]
    fn clean_end_of_stream_is_none() -> Result<(), FrameError> {
        assert!(read_frame(&mut &b""[..], 10)?.is_none());
        Ok(())
    }

    #[test]
    fn template_messages_round_trip() {
        use super::template::{ForkRequest, decode_reply, encode_reply};
        let r = ForkRequest {
            data_bytes: 576 << 20,
            cpu_secs: 32,
        };
        assert_eq!(ForkRequest::decode(r.encode()), r);
        assert_eq!(decode_reply(encode_reply(Ok(4242))), Ok(4242));
        assert_eq!(decode_reply(encode_reply(Err(11))), Err(11));
        assert_eq!(decode_reply(0i32.to_le_bytes()), Err(71));
        // Found by the fuzz target: i32::MIN has no positive counterpart.
        assert_eq!(decode_reply(i32::MIN.to_le_bytes()), Err(71));
        assert_eq!(decode_reply(encode_reply(Err(i32::MIN))), Err(i32::MAX));
        assert_eq!(&super::template::GREETING[..4], b"QTPL");
    }
}
