//! Slack: the worker that empties the outbox, and the Web API client it and the interactions
//! endpoint (`http/slack.rs`) use.
//!
//! Events reach the outbox in the transaction that records them (`store::insert_audit`), so a
//! Slack outage never blocks or fails a request and a restart loses nothing. The worker takes due
//! deliveries oldest first (one request's deliveries strictly in order), claims each with a lease
//! so replicas never send the same one, draws the message from the request as it stands, and
//! records the outcome: sent, skipped (nothing to do, e.g. no thread to update), retried later
//! (full-jitter backoff, `Retry-After`), or dead after `MAX_ATTEMPTS` with an audit event.

pub mod client;
pub mod render;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{Value, json};

use crate::config::SlackMode;
use crate::domain::audit::NewAuditEvent;
use crate::domain::slack::{
    Breaker, DeliveryKind, Event, MAX_ATTEMPTS, OUTBOX_ALERT, Pacer, retry_delay,
};
use crate::http::AppState;
use crate::store::{Delivery, DeliveryOutcome, StoreResult};
pub use client::{SlackClient, SlackError};
use render::Subject;

/// How often the worker looks for due deliveries.
const POLL: Duration = Duration::from_millis(200);
/// How long a claimed delivery is held before another replica may take it over.
const LEASE: Duration = Duration::from_secs(60);
/// Finished deliveries are kept this long for the admin view.
const KEEP_DAYS: i64 = 30;

/// What one attempt came to.
#[derive(Debug)]
enum Attempt {
    Sent {
        channel: String,
        ts: Option<String>,
    },
    Skipped(String),
    /// The channel had a message less than a second ago: not attempted, try at this time.
    Paced(DateTime<Utc>),
    Failed(SlackError),
}

/// The outbox worker of this process.
#[derive(Debug)]
pub struct Worker {
    state: AppState,
    client: SlackClient,
    pacer: Pacer,
    breaker: Breaker,
}

/// Starts the worker when Slack is configured. It stops between deliveries once `stop` turns
/// true, so a delivery in flight is always recorded.
pub fn spawn(
    state: &AppState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let client = state.slack.clone()?;
    let mut worker = Worker {
        state: state.clone(),
        client,
        pacer: Pacer::default(),
        breaker: Breaker::default(),
    };
    Some(tokio::spawn(async move {
        let mut passes: u64 = 0;
        while !*stop.borrow() {
            if passes.is_multiple_of(5) {
                worker.watch_outbox(passes).await;
            }
            passes += 1;
            if let Err(e) = worker.pass(&stop).await {
                tracing::warn!(error = %e, "Slack outbox pass failed");
            }
            tokio::select! {
                _ = stop.changed() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }))
}

impl Worker {
    /// Publishes the outbox size (warning above the alert threshold) and, hourly, prunes old
    /// finished deliveries.
    async fn watch_outbox(&self, passes: u64) {
        let store = &self.state.store;
        // Hourly, at one pass per `POLL`.
        if passes.is_multiple_of(5 * 60 * 60) {
            let before = self.state.clock.now() - chrono::Duration::days(KEEP_DAYS);
            if let Err(e) = store.prune_deliveries(before).await {
                tracing::warn!(error = %e, "pruning old Slack deliveries failed");
            }
        }
        match store.delivery_counts().await {
            Ok(counts) => {
                let pending: i64 = counts
                    .iter()
                    .filter(|(s, _)| s == "pending" || s == "sending")
                    .map(|(_, n)| n)
                    .sum();
                self.state
                    .metrics
                    .slack_outbox(pending, self.breaker.is_open());
                if pending > OUTBOX_ALERT {
                    tracing::warn!(
                        pending,
                        threshold = OUTBOX_ALERT,
                        "the Slack outbox is backing up"
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "counting Slack deliveries failed"),
        }
    }

    /// Sends what is due, stopping early when asked to.
    async fn pass(&mut self, stop: &tokio::sync::watch::Receiver<bool>) -> StoreResult<()> {
        let now = self.state.clock.now();
        let due = self.state.store.due_deliveries(now, 50).await?;
        // A request whose earlier delivery did not go this pass keeps its later ones waiting.
        let mut held: HashSet<crate::domain::RequestId> = HashSet::new();
        for d in due {
            if held.contains(&d.request_id) {
                continue;
            }
            let now = self.state.clock.now();
            if !self.breaker.allows(now) {
                break;
            }
            let lease_until = now + chrono::Duration::from_std(LEASE).unwrap_or_default();
            if !self
                .state
                .store
                .claim_delivery(d.id, now, lease_until)
                .await?
            {
                held.insert(d.request_id);
                continue;
            }
            let attempt = match self.attempt(&d).await {
                Ok(a) => a,
                Err(e) => Attempt::Failed(SlackError::Transient(format!("store: {e}"))),
            };
            if !self.settle(&d, attempt).await? {
                held.insert(d.request_id);
            }
            if *stop.borrow() {
                break;
            }
        }
        Ok(())
    }

    /// Records the attempt; returns whether the delivery is finished.
    async fn settle(&mut self, d: &Delivery, attempt: Attempt) -> StoreResult<bool> {
        let now = self.state.clock.now();
        let mut outcome = DeliveryOutcome {
            state: "pending",
            attempts: d.attempts,
            next_attempt_at: now,
            error: None,
            channel: None,
            ts: None,
            attempt: None,
        };
        let mut audit = None;
        let metric = match attempt {
            Attempt::Sent { channel, ts } => {
                self.breaker.success();
                outcome.state = "sent";
                outcome.attempts += 1;
                outcome.attempt = Some(json!({ "at": now, "error": null }));
                outcome.channel = Some(channel);
                outcome.ts = ts;
                "sent"
            }
            Attempt::Skipped(reason) => {
                outcome.state = "skipped";
                outcome.error = Some(reason);
                "skipped"
            }
            Attempt::Paced(at) => {
                outcome.next_attempt_at = at;
                self.state
                    .store
                    .settle_delivery(d.id, &outcome, None)
                    .await?;
                return Ok(false);
            }
            Attempt::Failed(error) => {
                let message = error.to_string();
                let (counts, retry_after) = match &error {
                    SlackError::Transient(_) => (!self.breaker.failure(d.id, now), None),
                    SlackError::RateLimited(after) => (true, Some(*after)),
                    SlackError::Refused(_) => (true, None),
                };
                if counts {
                    outcome.attempts += 1;
                }
                let attempts = u32::try_from(outcome.attempts).unwrap_or(u32::MAX);
                let give_up = matches!(error, SlackError::Refused(_)) || attempts >= MAX_ATTEMPTS;
                let unit: f64 = rand::thread_rng().r#gen();
                let wait = retry_delay(attempts.max(1), retry_after, unit);
                let retry_at =
                    (!give_up).then(|| now + chrono::Duration::from_std(wait).unwrap_or_default());
                outcome.error = Some(message.clone());
                outcome.attempt = Some(json!({
                    "at": now, "error": message, "retry_at": retry_at, "counted": counts,
                }));
                if let Some(at) = retry_at {
                    outcome.next_attempt_at = at;
                    "retried"
                } else {
                    outcome.state = "dead";
                    tracing::warn!(delivery = %d.id, request = %d.request_id, kind = d.kind.as_str(),
                        attempts, error = %message, "Slack notification failed for good");
                    audit = Some(
                        NewAuditEvent::new("slack.notification_failed")
                            .target("request", d.request_id)
                            .details(json!({
                                "delivery_id": d.id,
                                "kind": d.kind.as_str(),
                                "event": d.event.summary(),
                                "attempts": attempts,
                                "error": message,
                            })),
                    );
                    "dead"
                }
            }
        };
        self.state.metrics.slack_delivery(metric);
        let finished = outcome.state != "pending";
        self.state
            .store
            .settle_delivery(d.id, &outcome, audit)
            .await?;
        Ok(finished)
    }

    async fn attempt(&mut self, d: &Delivery) -> StoreResult<Attempt> {
        let portal = self.state.config.portal_url();
        let Some(s) = Subject::load(&self.state.store, d.request_id, &portal).await? else {
            return Ok(Attempt::Skipped("the request no longer exists".into()));
        };
        let webhook = self.client.mode() == SlackMode::Webhook;
        match d.kind {
            DeliveryKind::Post if webhook => self.post_webhook(d, &s).await,
            DeliveryKind::Post => self.post(d, &s).await,
            DeliveryKind::Update | DeliveryKind::Dm if webhook => Ok(Attempt::Skipped(
                "an incoming webhook can only post messages".into(),
            )),
            DeliveryKind::Update => self.update(d, &s).await,
            DeliveryKind::Dm => self.direct_message(d, &s).await,
        }
    }

    /// The user an event names, and the execution (with its displayed rows) it reports.
    async fn details(
        &self,
        event: &Event,
    ) -> StoreResult<(
        Option<crate::store::User>,
        Option<(
            crate::store::Execution,
            Option<crate::domain::execution::ResultSet>,
        )>,
    )> {
        let store = &self.state.store;
        let actor = match event {
            Event::Filed { editor: a, .. }
            | Event::Reviewed { reviewer: a, .. }
            | Event::Status { actor: a, .. } => *a,
            Event::Finished { .. } => None,
        };
        let actor = match actor {
            Some(id) => store.get_user(crate::domain::UserId(id)).await?,
            None => None,
        };
        let execution = match event {
            Event::Finished { execution, .. } => {
                match store
                    .get_execution(crate::domain::ExecutionId(*execution))
                    .await?
                {
                    Some(e) => {
                        let shown = crate::http::executions::shown_statement(&e);
                        let rows = store.execution_result(e.id, shown).await?;
                        Some((e, rows))
                    }
                    None => None,
                }
            }
            _ => None,
        };
        Ok((actor, execution))
    }

    /// The request's first message (`opens`), or the message for the delivery's event.
    async fn message(
        &self,
        d: &Delivery,
        s: &Subject,
        opens: bool,
        buttons: bool,
    ) -> StoreResult<crate::domain::slack::Message> {
        if opens {
            return Ok(render::root(s, buttons));
        }
        let (actor, execution) = self.details(&d.event).await?;
        Ok(render::event_message(
            s,
            &d.event,
            actor.as_ref(),
            execution.as_ref().map(|(e, r)| (e, r.as_ref())),
        ))
    }

    fn pace(&self, channel: &str) -> Option<Attempt> {
        let now = self.state.clock.now();
        let ready = self.pacer.ready_at(channel, now);
        (ready > now).then_some(Attempt::Paced(ready))
    }

    fn channel_for(&self, s: &Subject) -> String {
        s.pod
            .slack_channel
            .clone()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| self.state.config.slack.default_channel.clone())
    }

    async fn post(&mut self, d: &Delivery, s: &Subject) -> StoreResult<Attempt> {
        let store = &self.state.store;
        let thread = store.slack_thread(d.request_id).await?;
        let filed = matches!(d.event, Event::Filed { .. });
        // The request's first message; also for a revision when the first never made it.
        let opens_thread = thread.is_none() && filed;
        let channel = thread
            .as_ref()
            .map_or_else(|| self.channel_for(s), |(c, _)| c.clone());
        if let Some(wait) = self.pace(&channel) {
            return Ok(wait);
        }
        let message = self.message(d, s, opens_thread, true).await?;
        let mut body = json!({
            "channel": channel,
            "text": message.text,
            "blocks": message.blocks,
            "unfurl_links": false,
            "unfurl_media": false,
        });
        if let Some((_, ts)) = &thread {
            body["thread_ts"] = Value::String(ts.clone());
            // A new revision needs the channel's attention again, not only the thread's.
            body["reply_broadcast"] = Value::Bool(filed);
        }
        let now = self.state.clock.now();
        self.pacer.sent(&channel, now);
        let answer = match self.client.call("chat.postMessage", &body).await {
            Ok(a) => a,
            Err(e) => return Ok(Attempt::Failed(e)),
        };
        // Slack answers with the channel's id, which `chat.update` needs.
        let channel = answer["channel"].as_str().unwrap_or(&channel).to_owned();
        let ts = answer["ts"].as_str().map(str::to_owned);
        if opens_thread && let Some(ts) = &ts {
            store.set_slack_thread(d.request_id, &channel, ts).await?;
        }
        Ok(Attempt::Sent { channel, ts })
    }

    async fn post_webhook(&mut self, d: &Delivery, s: &Subject) -> StoreResult<Attempt> {
        if let Some(wait) = self.pace("webhook") {
            return Ok(wait);
        }
        let first = matches!(d.event, Event::Filed { revision: 1, .. });
        let message = self.message(d, s, first, false).await?.without_buttons();
        self.pacer.sent("webhook", self.state.clock.now());
        Ok(
            match self
                .client
                .webhook(&json!({ "text": message.text, "blocks": message.blocks }))
                .await
            {
                Ok(()) => Attempt::Sent {
                    channel: "webhook".into(),
                    ts: None,
                },
                Err(e) => Attempt::Failed(e),
            },
        )
    }

    async fn update(&mut self, d: &Delivery, s: &Subject) -> StoreResult<Attempt> {
        let store = &self.state.store;
        let Some((channel, ts)) = store.slack_thread(d.request_id).await? else {
            return Ok(Attempt::Skipped(
                "the request's first message was never posted".into(),
            ));
        };
        if store.later_update_pending(d.request_id, d.id).await? {
            return Ok(Attempt::Skipped(
                "a later update redraws the message".into(),
            ));
        }
        let message = render::root(s, true);
        let body =
            json!({ "channel": channel, "ts": ts, "text": message.text, "blocks": message.blocks });
        Ok(match self.client.call("chat.update", &body).await {
            Ok(_) => Attempt::Sent {
                channel,
                ts: Some(ts),
            },
            Err(e) => Attempt::Failed(e),
        })
    }

    async fn direct_message(&mut self, d: &Delivery, s: &Subject) -> StoreResult<Attempt> {
        let slack_user = match &s.author.slack_user_id {
            Some(id) => id.clone(),
            None => match slack_user_for_email(&self.client, &s.author.email).await {
                Ok(Some(id)) => {
                    self.state.store.set_slack_user_id(s.author.id, &id).await?;
                    id
                }
                Ok(None) => {
                    return Ok(Attempt::Skipped(
                        "the author has no Slack account under their email".into(),
                    ));
                }
                Err(e) => return Ok(Attempt::Failed(e)),
            },
        };
        if let Some(wait) = self.pace(&slack_user) {
            return Ok(wait);
        }
        let (actor, _) = self.details(&d.event).await?;
        let message = render::direct_message(s, &d.event, actor.as_ref());
        self.pacer.sent(&slack_user, self.state.clock.now());
        let body = json!({ "channel": slack_user, "text": message.text, "blocks": message.blocks });
        Ok(match self.client.call("chat.postMessage", &body).await {
            Ok(answer) => Attempt::Sent {
                channel: answer["channel"].as_str().unwrap_or(&slack_user).to_owned(),
                ts: answer["ts"].as_str().map(str::to_owned),
            },
            Err(e) => Attempt::Failed(e),
        })
    }
}

/// The Slack user with this email (`users.lookupByEmail`); None when there is none.
pub async fn slack_user_for_email(
    client: &SlackClient,
    email: &str,
) -> Result<Option<String>, SlackError> {
    match client
        .call_form("users.lookupByEmail", &[("email", email)])
        .await
    {
        Ok(answer) => Ok(answer["user"]["id"].as_str().map(str::to_owned)),
        Err(SlackError::Refused(e)) if e == "users_not_found" => Ok(None),
        Err(e) => Err(e),
    }
}
