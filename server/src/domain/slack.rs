//! Slack rules as pure code: which deliveries an audited event causes, escaping and Slack's size
//! limits, retry timing, per-channel pacing, the outage breaker and request signatures. The worker
//! (`notify/`) and the interactions endpoint apply them; nothing here does I/O.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::audit::NewAuditEvent;

/// Attempts before a delivery is dead-lettered (security matrix N1).
pub const MAX_ATTEMPTS: u32 = 5;
/// Slack's limits for a message (Block Kit reference).
pub const MAX_BLOCKS: usize = 50;
pub const MAX_SECTION_CHARS: usize = 3000;
pub const MAX_HEADER_CHARS: usize = 150;
/// Our own ceiling for all the text of one message, well under what Slack renders in full.
pub const MAX_MESSAGE_CHARS: usize = 12_000;
/// Messages posted to one channel at most this often (Slack's chat.postMessage guidance).
pub const CHANNEL_INTERVAL: Duration = Duration::from_secs(1);
/// The states a delivery moves through: `pending` → `sending` (leased by a worker) → `sent`,
/// `skipped` (nothing to do in webhook mode) or `dead` (attempts used up; an admin may retry).
pub const DELIVERY_STATES: [&str; 5] = ["pending", "sending", "sent", "skipped", "dead"];
/// Pending deliveries above this are logged as a warning on every pass of the worker.
pub const OUTBOX_ALERT: i64 = 1000;

/// What happened to a request, as the outbox stores it; messages are drawn from it (and the
/// request as it stands) when they are sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A request was filed (revision 1) or revised.
    Filed { revision: i32, editor: Option<Uuid> },
    /// Someone approved, rejected or asked for changes.
    Reviewed {
        reviewer: Option<Uuid>,
        decision: String,
        comment: String,
        status: String,
        approvals: i64,
        required: i64,
        via: Option<String>,
    },
    /// The request was cancelled or expired, or its execution started.
    Status { status: String, actor: Option<Uuid> },
    /// An execution ended (or was settled after its process died).
    Finished { execution: Uuid, status: String },
}

impl Event {
    /// A line for the admin view of deliveries.
    pub fn summary(&self) -> String {
        match self {
            Event::Filed { revision: 1, .. } => "request filed".into(),
            Event::Filed { revision, .. } => format!("revision {revision}"),
            Event::Reviewed { decision, .. } => format!("review: {decision}"),
            Event::Status { status, .. } => format!("status: {status}"),
            Event::Finished { status, .. } => format!("execution {status}"),
        }
    }
}

/// How one event reaches Slack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryKind {
    /// A message: the request's first message, or a reply in its thread.
    Post,
    /// The request's first message, redrawn with the current status and buttons.
    Update,
    /// A direct message to the request's author.
    Dm,
}

impl DeliveryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryKind::Post => "post",
            DeliveryKind::Update => "update",
            DeliveryKind::Dm => "dm",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "post" => Some(DeliveryKind::Post),
            "update" => Some(DeliveryKind::Update),
            "dm" => Some(DeliveryKind::Dm),
            _ => None,
        }
    }
}

/// A row to add to the outbox in the transaction that records the event.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    pub dedupe_key: String,
    pub request: Uuid,
    pub kind: DeliveryKind,
    pub event: Event,
}

fn text_of(details: &Value, key: &str) -> String {
    details
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn uuid_of(details: &Value, key: &str) -> Option<Uuid> {
    details
        .get(key)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// The deliveries an audited event causes (none for events Slack does not hear about).
/// `event_id` is the audit event's id: the dedupe key of deliveries that have no better one.
pub fn deliveries_for(event: &NewAuditEvent, event_id: Uuid) -> Vec<NewDelivery> {
    use DeliveryKind::{Dm, Post, Update};
    let Some(request) = (event.target_type == Some("request"))
        .then(|| event.target_id.as_deref().and_then(|t| t.parse().ok()))
        .flatten()
    else {
        return Vec::new();
    };
    let d = &event.details;
    let actor = event.actor_id.map(|a| a.0);
    let (what, kinds, key): (Event, &[DeliveryKind], String) = match event.action {
        "request.created" => (
            Event::Filed {
                revision: 1,
                editor: actor,
            },
            &[Post],
            format!("request:{request}:revision:1"),
        ),
        "request.revised" => {
            let revision = d
                .get("revision")
                .and_then(Value::as_i64)
                .and_then(|r| i32::try_from(r).ok())
                .unwrap_or(0);
            (
                Event::Filed {
                    revision,
                    editor: actor,
                },
                &[Post, Update],
                format!("request:{request}:revision:{revision}"),
            )
        }
        "request.reviewed" => (
            Event::Reviewed {
                reviewer: actor,
                decision: text_of(d, "decision"),
                comment: text_of(d, "comment"),
                status: text_of(d, "status"),
                approvals: d.get("approvals").and_then(Value::as_i64).unwrap_or(0),
                required: d.get("required").and_then(Value::as_i64).unwrap_or(1),
                via: d.get("via").and_then(Value::as_str).map(str::to_owned),
            },
            &[Post, Update, Dm],
            format!("review:{event_id}"),
        ),
        "request.cancelled" | "request.expired" => (
            Event::Status {
                status: text_of(d, "status"),
                actor,
            },
            &[Post, Update],
            format!("status:{event_id}"),
        ),
        "execution.started" => (
            Event::Status {
                status: "running".into(),
                actor,
            },
            &[Update],
            format!("status:{event_id}"),
        ),
        "execution.finished" | "execution.reconciled" => {
            let Some(execution) = uuid_of(d, "execution_id") else {
                return Vec::new();
            };
            (
                Event::Finished {
                    execution,
                    status: text_of(d, "status"),
                },
                &[Post, Update, Dm],
                format!("execution:{execution}"),
            )
        }
        _ => return Vec::new(),
    };
    kinds
        .iter()
        .map(|&kind| NewDelivery {
            dedupe_key: format!("{key}:{}", kind.as_str()),
            request,
            kind,
            event: what.clone(),
        })
        .collect()
}

/// Escapes the three characters Slack treats as control characters in message text, so user
/// content cannot ping (`<!channel>`, `<@U123>`) or disguise a link (`<https://evil|Approve>`).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Escaped text inside a code block: also breaks runs of three backticks, which would end it.
pub fn escape_code(text: &str) -> String {
    escape(text).replace("```", "`\u{200b}``")
}

/// The first `max` characters of `text`, and whether anything was cut.
pub fn cut(text: &str, max: usize) -> (&str, bool) {
    match text.char_indices().nth(max) {
        Some((i, _)) => (&text[..i], true),
        None => (text, false),
    }
}

/// A `<url|label>` link with the label escaped; `url` is ours (the portal's base and an id).
pub fn link(url: &str, label: &str) -> String {
    format!("<{url}|{}>", escape(label).replace('|', "¦"))
}

/// A section of mrkdwn text, cut to Slack's limit with a pointer to the portal when too long.
/// `text` must already be escaped.
pub fn section(text: &str, more: &str) -> Value {
    let text = fit_text(text, MAX_SECTION_CHARS, more);
    json!({ "type": "section", "text": { "type": "mrkdwn", "text": text } })
}

/// `text` cut so that it and the `more` note fit in `max` characters. Cuts never split an
/// escape (`&lt;`) or leave a code block open.
pub fn fit_text(text: &str, max: usize, more: &str) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let room = max.saturating_sub(more.chars().count() + 8);
    let (mut head, _) = cut(text, room);
    if let Some(amp) = head.rfind('&')
        && !head[amp..].contains(';')
    {
        head = &head[..amp];
    }
    let mut out = head.to_owned();
    if out.matches("```").count() % 2 == 1 {
        out.push_str("\n```");
    }
    out.push_str("\n…\n");
    out.push_str(more);
    out
}

/// Plain text (headers, button labels): Slack shows it as is, so only the length matters.
pub fn plain(text: &str, max: usize) -> Value {
    let (head, was_cut) = cut(text, max.saturating_sub(1));
    let text = if was_cut {
        format!("{head}…")
    } else {
        head.to_owned()
    };
    json!({ "type": "plain_text", "text": text, "emoji": true })
}

fn block_chars(block: &Value) -> usize {
    fn walk(v: &Value, n: &mut usize) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("text", Value::String(s)) => *n += s.chars().count(),
                        _ => walk(v, n),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, n)),
            _ => {}
        }
    }
    let mut n = 0;
    walk(block, &mut n);
    n
}

/// A message: blocks and the plain-text fallback shown in notifications.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub text: String,
    pub blocks: Vec<Value>,
}

impl Message {
    /// Keeps the message within Slack's limits: at most 50 blocks and `MAX_MESSAGE_CHARS` of text
    /// in all, dropping blocks from the end and ending with `more` (a link to the portal) when
    /// anything was dropped. Sections are already cut by `section`.
    pub fn fitted(mut self, more: &str) -> Message {
        let (text, _) = cut(&self.text, MAX_SECTION_CHARS);
        self.text = text.to_owned();
        let note = json!({ "type": "context", "elements": [{ "type": "mrkdwn", "text": more }] });
        let budget = MAX_MESSAGE_CHARS.saturating_sub(block_chars(&note));
        let mut used = 0;
        let mut kept = Vec::new();
        let mut dropped = false;
        for b in self.blocks {
            let n = block_chars(&b);
            if kept.len() + 1 >= MAX_BLOCKS || used + n > budget {
                dropped = true;
                break;
            }
            used += n;
            kept.push(b);
        }
        if dropped {
            kept.push(note);
        }
        self.blocks = kept;
        self
    }

    /// The same message without interactive elements (incoming webhooks cannot carry them).
    pub fn without_buttons(mut self) -> Message {
        self.blocks.retain(|b| b["type"] != "actions");
        self
    }
}

/// When to try a failed delivery again: full jitter (`random(0, min(cap, base·2^(n-1)))`, AWS
/// "Exponential Backoff and Jitter") after the `attempt`-th failure, and never before a
/// `Retry-After` Slack asked for. `unit` is a random number in [0, 1).
pub fn retry_delay(attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
    let window = backoff_window(attempt);
    let jittered = window.mul_f64(unit.clamp(0.0, 1.0));
    match retry_after {
        // Spread clients told to come back at the same moment over the next second.
        Some(after) => after + Duration::from_secs(1).mul_f64(unit.clamp(0.0, 1.0)),
        None => jittered,
    }
}

/// The upper bound of the delay after the `attempt`-th failure: 2 s, 4 s, 8 s … capped at 5 min.
pub fn backoff_window(attempt: u32) -> Duration {
    const BASE: Duration = Duration::from_secs(2);
    const CAP: Duration = Duration::from_secs(300);
    BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(CAP)
}

/// Paces messages per channel: one per `CHANNEL_INTERVAL` at most.
#[derive(Debug, Default)]
pub struct Pacer {
    last: HashMap<String, DateTime<Utc>>,
}

impl Pacer {
    /// When a message to `channel` may go, given the time now.
    pub fn ready_at(&self, channel: &str, now: DateTime<Utc>) -> DateTime<Utc> {
        let interval = chrono::Duration::from_std(CHANNEL_INTERVAL).unwrap_or_default();
        self.last
            .get(channel)
            .map_or(now, |last| (*last + interval).max(now))
    }

    /// Records a message sent to `channel` at `at`.
    pub fn sent(&mut self, channel: &str, at: DateTime<Utc>) {
        self.last.insert(channel.to_owned(), at);
    }
}

/// Tells a Slack outage from one message that keeps failing. While Slack is down every delivery
/// fails; burning their attempts would dead-letter everything an hour-long outage queued. Three
/// transient failures in a row, over at least two deliveries, open the breaker: deliveries then
/// wait, and one delivery at a time probes (its failure costing no attempt) at growing intervals
/// until one succeeds.
#[derive(Debug, Default)]
pub struct Breaker {
    failures: u32,
    failing: HashSet<Uuid>,
    open_until: Option<DateTime<Utc>>,
    probes: u32,
}

impl Breaker {
    const OPEN_AFTER: u32 = 3;

    pub fn is_open(&self) -> bool {
        self.open_until.is_some()
    }

    /// Whether a delivery may be tried now: always when closed; when open, once the probe
    /// interval has passed.
    pub fn allows(&self, now: DateTime<Utc>) -> bool {
        self.open_until.is_none_or(|until| now >= until)
    }

    pub fn success(&mut self) {
        *self = Breaker::default();
    }

    /// Records a transient failure of `delivery`; returns true when it happened while the breaker
    /// was open (a probe, which costs the delivery no attempt).
    pub fn failure(&mut self, delivery: Uuid, now: DateTime<Utc>) -> bool {
        let probing = self.is_open();
        self.failures += 1;
        self.failing.insert(delivery);
        if probing || (self.failures >= Self::OPEN_AFTER && self.failing.len() >= 2) {
            self.probes = if probing { self.probes + 1 } else { 0 };
            let wait = Duration::from_secs(15)
                .saturating_mul(1u32 << self.probes.min(5))
                .min(Duration::from_secs(300));
            self.open_until = Some(now + chrono::Duration::from_std(wait).unwrap_or_default());
        }
        probing
    }
}

/// Why an interaction was refused before reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    Stale,
    Mismatch,
}

/// Verifies `X-Slack-Signature` (`v0=` hex HMAC-SHA256 of `v0:{timestamp}:{body}` under the
/// signing secret) in constant time, and that the timestamp is within five minutes of `now`.
pub fn verify_signature(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    use hmac::{Hmac, Mac};
    use subtle::ConstantTimeEq;
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    let at: i64 = timestamp.parse().map_err(|_| SignatureError::Missing)?;
    if (now.timestamp() - at).abs() > 5 * 60 {
        return Err(SignatureError::Stale);
    }
    let Some(given) = signature
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return Err(SignatureError::Mismatch);
    };
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    if bool::from(expected[..].ct_eq(&given)) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// What an Approve / Reject button carries: the request and the exact revision shown, so a click
/// on an outdated message cannot approve a later revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ButtonValue {
    pub request: Uuid,
    pub revision: i32,
    pub hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("time")
    }

    #[test]
    fn escaping_defuses_mentions_and_links() {
        assert_eq!(escape("<!channel>"), "&lt;!channel&gt;");
        assert_eq!(escape("<@U123>"), "&lt;@U123&gt;");
        assert_eq!(
            escape("<https://evil|Approve> & co"),
            "&lt;https://evil|Approve&gt; &amp; co"
        );
        assert_eq!(escape_code("a```b"), "a`\u{200b}``b");
        assert_eq!(
            link("https://p/r/1", "a|<b>"),
            "<https://p/r/1|a¦&lt;b&gt;>"
        );
    }

    #[test]
    fn cuts_keep_escapes_whole_and_code_blocks_closed() {
        let long = format!("```{}", "&lt;".repeat(2000));
        let out = fit_text(&long, 3000, "see the portal");
        assert!(out.chars().count() <= 3000, "{}", out.chars().count());
        assert!(out.ends_with("see the portal"));
        assert_eq!(out.matches("```").count(), 2);
        let body = out.trim_end_matches("see the portal");
        assert!(!body.contains("&l\n") && !body.contains("&\n"), "{body}");
        assert_eq!(fit_text("short", 3000, "x"), "short");
        assert_eq!(cut("héllo", 2), ("hé", true));
    }

    #[test]
    fn oversized_messages_fit_slacks_limits() {
        let blocks: Vec<Value> = (0..500)
            .map(|i| section(&format!("{i} {}", "x".repeat(5000)), "more"))
            .collect();
        let m = Message {
            text: "y".repeat(10_000),
            blocks,
        }
        .fitted("<https://portal/r|see the portal>");
        assert!(m.blocks.len() <= MAX_BLOCKS);
        assert!(m.text.chars().count() <= MAX_SECTION_CHARS);
        let total: usize = m.blocks.iter().map(block_chars).sum();
        assert!(total <= MAX_MESSAGE_CHARS, "{total}");
        for b in &m.blocks {
            if b["type"] == "section" {
                let n = b["text"]["text"].as_str().map_or(0, |t| t.chars().count());
                assert!(n <= MAX_SECTION_CHARS, "{n}");
            }
        }
        let last = m.blocks.last().expect("blocks");
        assert_eq!(
            last["elements"][0]["text"],
            "<https://portal/r|see the portal>"
        );
        let few = Message {
            text: "t".into(),
            blocks: vec![section("a", "m")],
        }
        .fitted("more");
        assert_eq!(few.blocks.len(), 1, "nothing dropped, no note");
    }

    #[test]
    fn retry_delays_follow_full_jitter_and_retry_after() {
        assert_eq!(backoff_window(1), Duration::from_secs(2));
        assert_eq!(backoff_window(4), Duration::from_secs(16));
        assert_eq!(backoff_window(40), Duration::from_secs(300));
        for attempt in 1..=5 {
            for unit in [0.0, 0.3, 0.999] {
                let d = retry_delay(attempt, None, unit);
                assert!(d <= backoff_window(attempt));
            }
        }
        assert_eq!(retry_delay(3, None, 0.5), Duration::from_secs(4));
        let d = retry_delay(1, Some(Duration::from_secs(7)), 0.5);
        assert!(d >= Duration::from_secs(7) && d <= Duration::from_secs(8));
    }

    #[test]
    fn pacer_spaces_a_burst_one_second_apart_per_channel() {
        // 200 notifications arriving within a minute: each channel sees at most one per second.
        let mut pacer = Pacer::default();
        let mut sent: HashMap<&str, Vec<DateTime<Utc>>> = HashMap::new();
        for i in 0..200 {
            let channel = if i % 4 == 0 { "#other" } else { "#payments" };
            let arrives = at(i * 60 / 200);
            let when = pacer.ready_at(channel, arrives);
            assert!(when >= arrives);
            pacer.sent(channel, when);
            sent.entry(channel).or_default().push(when);
        }
        for times in sent.values() {
            for w in times.windows(2) {
                assert!(w[1] - w[0] >= chrono::Duration::seconds(1));
            }
        }
        assert_eq!(pacer.ready_at("#new", at(5)), at(5));
    }

    #[test]
    fn breaker_opens_on_an_outage_not_on_one_bad_message() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut one = Breaker::default();
        for i in 0..5 {
            assert!(
                !one.failure(a, at(i)),
                "one message failing is not an outage"
            );
        }
        assert!(!one.is_open());

        let mut outage = Breaker::default();
        assert!(!outage.failure(a, at(0)));
        assert!(!outage.failure(b, at(1)));
        assert!(
            !outage.failure(a, at(2)),
            "the failure that opens it still counts"
        );
        assert!(outage.is_open());
        assert!(!outage.allows(at(3)));
        assert!(outage.allows(at(2 + 15)));
        assert!(outage.failure(b, at(17)), "a failed probe costs no attempt");
        assert!(!outage.allows(at(17 + 29)));
        assert!(outage.allows(at(17 + 30)));
        outage.success();
        assert!(!outage.is_open() && outage.allows(at(18)));
    }

    #[test]
    fn signatures_are_checked_in_full() {
        use hmac::{Hmac, Mac};
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"payload=%7B%22type%22%3A%22block_actions%22%7D";
        let now = at(0);
        let ts = now.timestamp().to_string();
        let sign = |ts: &str, body: &[u8]| {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("key");
            mac.update(format!("v0:{ts}:").as_bytes());
            mac.update(body);
            format!("v0={}", hex::encode(mac.finalize().into_bytes()))
        };
        let good = sign(&ts, body);
        assert_eq!(
            verify_signature(secret, Some(&ts), Some(&good), body, now),
            Ok(())
        );
        assert_eq!(
            verify_signature(secret, Some(&ts), Some(&good), b"payload=x", now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"another secret", Some(&ts), Some(&good), body, now),
            Err(SignatureError::Mismatch)
        );
        let old = (now.timestamp() - 301).to_string();
        assert_eq!(
            verify_signature(secret, Some(&old), Some(&sign(&old, body)), body, now),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_signature(secret, None, Some(&good), body, now),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(secret, Some(&ts), Some("v1=00"), body, now),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn audited_events_map_to_deliveries() {
        let request = Uuid::new_v4();
        let event = |action| NewAuditEvent::new(action).target("request", request);
        let id = Uuid::new_v4();
        let kinds = |e: &NewAuditEvent| {
            deliveries_for(e, id)
                .iter()
                .map(|d| d.kind.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(&event("request.created")), ["post"]);
        assert_eq!(
            kinds(&event("request.revised").details(json!({"revision": 2}))),
            ["post", "update"]
        );
        assert_eq!(kinds(&event("request.reviewed")), ["post", "update", "dm"]);
        assert_eq!(kinds(&event("execution.started")), ["update"]);
        let execution = Uuid::new_v4();
        let finished = event("execution.finished")
            .details(json!({"execution_id": execution, "status": "succeeded"}));
        let d = deliveries_for(&finished, id);
        assert_eq!(d[0].dedupe_key, format!("execution:{execution}:post"));
        assert_eq!(
            d[0].event,
            Event::Finished {
                execution,
                status: "succeeded".into()
            }
        );
        assert!(kinds(&event("request.review_refused")).is_empty());
        assert!(
            kinds(&NewAuditEvent::new("user.created").target("user", UserId(request))).is_empty()
        );
        assert_eq!(
            deliveries_for(&event("request.created").actor(UserId(id)), id)[0].event,
            Event::Filed {
                revision: 1,
                editor: Some(id)
            }
        );
    }
}
