//! A local stand-in for the Slack Web API and an incoming webhook, started by the tests (Slack
//! itself cannot be reached from here). It checks what Slack checks — the bot token, the method,
//! the JSON shape, Block Kit's limits (`invalid_blocks`, `msg_too_long`, `msg_blocks_too_long`),
//! channels and message timestamps — answers as Slack does, records everything it received, and
//! can be told to fail (HTTP 5xx, `429` with `Retry-After`, a Slack error).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const TOKEN: &str = "xoxb-quorum-tests";
pub const SIGNING_SECRET: &str = "3f1c8a0b9d2e4f60718293a4b5c6d7e8";

/// Channels the workspace has: name → id.
const CHANNELS: &[(&str, &str)] = &[
    ("#payments-approvals", "C0PAYMENTS"),
    ("#growth-approvals", "C0GROWTH"),
    ("#quorum", "C0DEFAULT"),
];

/// What the stand-in should answer instead of handling the next call.
#[derive(Debug, Clone)]
pub enum Fail {
    Status(u16),
    RateLimited(u64),
}

#[derive(Debug, Clone)]
pub struct Message {
    pub channel: String,
    pub ts: String,
    pub text: String,
    pub blocks: Value,
    pub thread_ts: Option<String>,
    pub broadcast: bool,
    /// Edits received through chat.update, in order.
    pub updates: Vec<Value>,
}

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
    /// None when it succeeded; the error Slack would have answered otherwise.
    pub error: Option<String>,
    pub at: std::time::Instant,
}

#[derive(Debug, Default)]
struct Inner {
    users: HashMap<String, String>,
    messages: Vec<Message>,
    calls: Vec<Call>,
    ephemerals: Vec<Value>,
    views: Vec<Value>,
    webhook: Vec<Value>,
    failures: VecDeque<Fail>,
    /// Fail every call with this status until cleared.
    down: Option<u16>,
    next_ts: u64,
}

#[derive(Debug, Clone)]
pub struct SlackStandIn {
    pub api_base: String,
    pub webhook_url: String,
    inner: Arc<Mutex<Inner>>,
}

type Shared = Arc<Mutex<Inner>>;

fn ok(body: Value) -> Response {
    let mut body = body;
    body["ok"] = Value::Bool(true);
    axum::Json(body).into_response()
}

fn slack_error(error: &str) -> Response {
    axum::Json(json!({ "ok": false, "error": error })).into_response()
}

fn failure_response(f: &Fail) -> Response {
    match f {
        Fail::Status(code) => (
            StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "upstream trouble",
        )
            .into_response(),
        Fail::RateLimited(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            axum::Json(json!({ "ok": false, "error": "ratelimited" })),
        )
            .into_response(),
    }
}

fn text_len(v: &Value) -> usize {
    v["text"].as_str().map_or(0, |t| t.chars().count())
}

fn text_object(v: &Value, max: usize, plain_only: bool) -> Result<usize, String> {
    let kind = v["type"].as_str().unwrap_or_default();
    if kind != "plain_text" && (plain_only || kind != "mrkdwn") {
        return Err(format!("invalid text object type {kind:?}"));
    }
    let n = text_len(v);
    if n == 0 || n > max {
        return Err(format!("text must be 1 to {max} characters (got {n})"));
    }
    Ok(n)
}

/// Block Kit validation as Slack does it; Ok(total characters of text).
pub fn validate_blocks(blocks: &Value) -> Result<usize, String> {
    let Some(blocks) = blocks.as_array() else {
        return Err("blocks must be an array".into());
    };
    if blocks.len() > 50 {
        return Err("no more than 50 items allowed [json-pointer:/blocks]".into());
    }
    let mut ids = HashSet::new();
    let mut total = 0;
    for (i, b) in blocks.iter().enumerate() {
        let at = |m: String| format!("{m} [json-pointer:/blocks/{i}]");
        if let Some(id) = b["block_id"].as_str()
            && (id.is_empty() || id.len() > 255 || !ids.insert(id.to_owned()))
        {
            return Err(at("block_id must be unique and 1-255 characters".into()));
        }
        match b["type"].as_str().unwrap_or_default() {
            "section" => {
                if b.get("text").is_none() && b.get("fields").is_none() {
                    return Err(at("section needs text or fields".into()));
                }
                if let Some(t) = b.get("text") {
                    total += text_object(t, 3000, false).map_err(at)?;
                }
                if let Some(fields) = b.get("fields") {
                    let fields = fields
                        .as_array()
                        .ok_or_else(|| at("fields must be an array".into()))?;
                    if fields.is_empty() || fields.len() > 10 {
                        return Err(at("fields must hold 1 to 10 items".into()));
                    }
                    for f in fields {
                        total += text_object(f, 2000, false).map_err(at)?;
                    }
                }
            }
            "header" => total += text_object(&b["text"], 150, true).map_err(at)?,
            "divider" => {}
            "context" => {
                let elements = b["elements"]
                    .as_array()
                    .ok_or_else(|| at("elements required".into()))?;
                if elements.is_empty() || elements.len() > 10 {
                    return Err(at("context holds 1 to 10 elements".into()));
                }
                for e in elements {
                    total += text_object(e, 3000, false).map_err(at)?;
                }
            }
            "actions" => {
                let elements = b["elements"]
                    .as_array()
                    .ok_or_else(|| at("elements required".into()))?;
                if elements.is_empty() || elements.len() > 25 {
                    return Err(at("actions holds 1 to 25 elements".into()));
                }
                for e in elements {
                    if e["type"] != "button" {
                        return Err(at("only buttons are expected".into()));
                    }
                    total += text_object(&e["text"], 75, true).map_err(at)?;
                    if e["action_id"].as_str().is_some_and(|a| a.len() > 255)
                        || e["value"].as_str().is_some_and(|v| v.len() > 2000)
                        || e["url"].as_str().is_some_and(|u| u.len() > 3000)
                    {
                        return Err(at("button action_id, value or url too long".into()));
                    }
                    if let Some(style) = e.get("style")
                        && style != "primary"
                        && style != "danger"
                    {
                        return Err(at("style must be primary or danger".into()));
                    }
                }
            }
            "input" => {
                total += text_object(&b["label"], 2000, true).map_err(at)?;
                if !b["element"].is_object() {
                    return Err(at("input needs an element".into()));
                }
            }
            other => return Err(at(format!("unsupported block type {other:?}"))),
        }
    }
    Ok(total)
}

fn check_message(body: &Value) -> Result<(), &'static str> {
    let text = body["text"].as_str().unwrap_or_default();
    if text.is_empty() && body.get("blocks").is_none() {
        return Err("no_text");
    }
    if text.chars().count() > 40_000 {
        return Err("msg_too_long");
    }
    if let Some(blocks) = body.get("blocks") {
        match validate_blocks(blocks) {
            Ok(total) if total > 12_000 => return Err("msg_blocks_too_long"),
            Ok(_) => {}
            Err(_) => return Err("invalid_blocks"),
        }
    }
    Ok(())
}

fn channel_id(channel: &str) -> Option<String> {
    if let Some((_, id)) = CHANNELS
        .iter()
        .find(|(name, id)| *name == channel || *id == channel)
    {
        return Some((*id).to_owned());
    }
    // A user id as channel: the app's direct-message channel with them.
    channel
        .strip_prefix('U')
        .map(|rest| format!("D{rest}"))
        .or_else(|| channel.starts_with('D').then(|| channel.to_owned()))
}

async fn api(
    State(inner): State<Shared>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = inner.lock().expect("stand-in lock");
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = if content_type.starts_with("application/json") {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return slack_error("invalid_json"),
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    } else {
        return slack_error("invalid_form_data");
    };
    let record = |s: &mut Inner, error: Option<&str>| {
        s.calls.push(Call {
            method: method.clone(),
            body: body.clone(),
            error: error.map(str::to_owned),
            at: std::time::Instant::now(),
        });
    };
    if let Some(code) = s.down {
        record(&mut s, Some(&format!("HTTP {code}")));
        return failure_response(&Fail::Status(code));
    }
    if let Some(f) = s.failures.pop_front() {
        record(&mut s, Some(&format!("{f:?}")));
        return failure_response(&f);
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth.is_empty() {
        record(&mut s, Some("not_authed"));
        return slack_error("not_authed");
    }
    if auth != format!("Bearer {TOKEN}") {
        record(&mut s, Some("invalid_auth"));
        return slack_error("invalid_auth");
    }
    let json_method = matches!(
        method.as_str(),
        "chat.postMessage" | "chat.update" | "chat.postEphemeral" | "views.open"
    );
    if json_method != content_type.starts_with("application/json") {
        record(&mut s, Some("invalid_arguments"));
        return slack_error("invalid_arguments");
    }
    let result = handle(&mut s, &method, &body);
    match &result {
        Ok(_) => record(&mut s, None),
        Err(e) => record(&mut s, Some(e)),
    }
    match result {
        Ok(v) => ok(v),
        Err(e) => slack_error(e),
    }
}

fn handle(s: &mut Inner, method: &str, body: &Value) -> Result<Value, &'static str> {
    let str_of = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
    match method {
        "chat.postMessage" => {
            let channel = channel_id(&str_of("channel")).ok_or("channel_not_found")?;
            check_message(body)?;
            let thread_ts = body["thread_ts"].as_str().map(str::to_owned);
            if let Some(t) = &thread_ts
                && !s
                    .messages
                    .iter()
                    .any(|m| m.channel == channel && &m.ts == t)
            {
                return Err("thread_not_found");
            }
            s.next_ts += 1;
            let ts = format!("1700000000.{:06}", s.next_ts);
            s.messages.push(Message {
                channel: channel.clone(),
                ts: ts.clone(),
                text: str_of("text"),
                blocks: body["blocks"].clone(),
                thread_ts,
                broadcast: body["reply_broadcast"] == true,
                updates: Vec::new(),
            });
            Ok(json!({ "channel": channel, "ts": ts }))
        }
        "chat.update" => {
            let channel = str_of("channel");
            // chat.update takes channel ids only.
            if !channel.starts_with('C') && !channel.starts_with('D') {
                return Err("channel_not_found");
            }
            check_message(body)?;
            let ts = str_of("ts");
            let m = s
                .messages
                .iter_mut()
                .find(|m| m.channel == channel && m.ts == ts)
                .ok_or("message_not_found")?;
            m.updates.push(body.clone());
            m.text = str_of("text");
            m.blocks = body["blocks"].clone();
            Ok(json!({ "channel": channel, "ts": ts }))
        }
        "chat.postEphemeral" => {
            channel_id(&str_of("channel")).ok_or("channel_not_found")?;
            if str_of("user").is_empty() {
                return Err("user_not_in_channel");
            }
            check_message(body)?;
            s.ephemerals.push(body.clone());
            Ok(json!({ "message_ts": "1700000000.999999" }))
        }
        "views.open" => {
            if str_of("trigger_id").is_empty() {
                return Err("invalid_trigger_id");
            }
            let view = &body["view"];
            if view["type"] != "modal"
                || text_len(&view["title"]) > 24
                || text_len(&view["title"]) == 0
            {
                return Err("invalid_arguments");
            }
            validate_blocks(&view["blocks"]).map_err(|_| "invalid_blocks")?;
            s.views.push(view.clone());
            Ok(json!({ "view": { "id": "V0001" } }))
        }
        "users.lookupByEmail" => {
            let email = str_of("email");
            let (id, _) = s
                .users
                .iter()
                .find(|(_, e)| **e == email)
                .ok_or("users_not_found")?;
            Ok(json!({ "user": { "id": id } }))
        }
        "users.info" => {
            let id = str_of("user");
            let email = s.users.get(&id).ok_or("user_not_found")?;
            Ok(
                json!({ "user": { "id": id, "is_email_confirmed": true, "profile": { "email": email } } }),
            )
        }
        _ => Err("unknown_method"),
    }
}

async fn webhook(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut s = inner.lock().expect("stand-in lock");
    if let Some(code) = s.down {
        return failure_response(&Fail::Status(code));
    }
    if let Some(f) = s.failures.pop_front() {
        return failure_response(&f);
    }
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    let Some(body) = json
        .then(|| serde_json::from_slice::<Value>(&body).ok())
        .flatten()
    else {
        return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
    };
    if body.get("blocks").is_some_and(|b| {
        b.as_array().is_some_and(|b| {
            b.iter().any(|b| {
                b["type"] == "actions"
                    && b["elements"].as_array().is_some_and(|e| {
                        e.iter()
                            .any(|e| e.get("action_id").is_some() && e.get("url").is_none())
                    })
            })
        })
    }) {
        // Interactive buttons need an app; a webhook message cannot carry them.
        return (StatusCode::BAD_REQUEST, "invalid_blocks").into_response();
    }
    if let Err(e) = check_message(&body) {
        return (StatusCode::BAD_REQUEST, e).into_response();
    }
    s.webhook.push(body);
    (StatusCode::OK, "ok").into_response()
}

impl SlackStandIn {
    pub async fn start() -> SlackStandIn {
        let inner: Shared = Arc::default();
        let app = Router::new()
            .route("/api/{method}", axum::routing::post(api))
            .route(
                "/services/T0QUORUM/B0QUORUM/hook",
                axum::routing::post(webhook),
            )
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Slack stand-in");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SlackStandIn {
            api_base: format!("http://{addr}/api"),
            webhook_url: format!("http://{addr}/services/T0QUORUM/B0QUORUM/hook"),
            inner,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("stand-in lock")
    }

    /// A Slack user with this email (so `users.info` and `users.lookupByEmail` find them).
    pub fn add_user(&self, id: &str, email: &str) {
        self.lock().users.insert(id.to_owned(), email.to_owned());
    }

    pub fn fail_next(&self, failures: impl IntoIterator<Item = Fail>) {
        self.lock().failures.extend(failures);
    }

    /// Every call fails with this HTTP status until `recover`.
    pub fn go_down(&self, status: u16) {
        self.lock().down = Some(status);
    }

    pub fn recover(&self) {
        self.lock().down = None;
    }

    pub fn messages(&self) -> Vec<Message> {
        self.lock().messages.clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn ephemerals(&self) -> Vec<Value> {
        self.lock().ephemerals.clone()
    }

    pub fn views(&self) -> Vec<Value> {
        self.lock().views.clone()
    }

    pub fn webhook_messages(&self) -> Vec<Value> {
        self.lock().webhook.clone()
    }

    /// Waits until `check` holds for the stand-in's state (10 s at most).
    pub async fn wait_for<T>(&self, what: &str, check: impl Fn(&SlackStandIn) -> Option<T>) -> T {
        for _ in 0..200 {
            if let Some(v) = check(self) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the Slack stand-in never saw {what}; calls: {:#?}",
            self.calls()
                .iter()
                .map(|c| (c.method.clone(), c.error.clone()))
                .collect::<Vec<_>>()
        );
    }

    /// The request's first message (the one its thread hangs from), found by the request id in
    /// its context line.
    pub fn root_of(&self, request: &str) -> Option<Message> {
        self.messages().into_iter().find(|m| {
            m.channel.starts_with('C')
                && m.thread_ts.is_none()
                && m.blocks.to_string().contains(request)
        })
    }

    pub fn thread(&self, root: &Message) -> Vec<Message> {
        self.messages()
            .into_iter()
            .filter(|m| m.thread_ts.as_deref() == Some(root.ts.as_str()))
            .collect()
    }
}

/// Signs an interaction body as Slack does (`v0=` HMAC-SHA256 of `v0:{ts}:{body}`).
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// The form body Slack posts for an interaction.
pub fn form_body(payload: &Value) -> String {
    serde_urlencoded::to_string([("payload", payload.to_string())]).expect("form")
}
