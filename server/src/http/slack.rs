//! Slack: the interactivity endpoint (Approve / Reject buttons and the reason modal) and the
//! admin view of deliveries.
//!
//! Interactions are authenticated by Slack's request signature, not a token. The Slack user is
//! mapped to a portal user by the email Slack verified, and the decision goes through exactly the
//! path a browser's does (`requests::decide`): POD, self-review, stale revision and expiry rules
//! all apply. Refusals come back as an ephemeral message only the clicker sees.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;
use validator::Validate;

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorEnvelope};
use super::extract::{AdministerOrg, ClientMeta, PathId, QueryParams, Require, actor_of};
use super::requests::{ReviewBody, check_reviewer, decide, reviewable_request};
use super::views::paging;
use crate::domain::audit::NewAuditEvent;
use crate::domain::slack::{
    ButtonValue, DELIVERY_STATES, SignatureError, escape, verify_signature,
};
use crate::domain::workflow::{Decision, ReviewChannel};
use crate::domain::{Actor, RequestId};
use crate::notify::SlackError;
use crate::store::Delivery;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(slack_interaction))
        .routes(routes!(list_deliveries))
        .routes(routes!(retry_delivery))
}

/// The longest reason the reject modal accepts (the portal's review comments allow 5000).
const REASON_MAX: usize = 3000;

#[derive(Debug, Deserialize)]
struct InteractionForm {
    payload: String,
}

/// Receive a button click or modal submission from Slack (signed with the app's signing secret).
#[utoipa::path(post, path = "/api/v1/slack/interactions", tag = "slack",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`payload=<JSON>` as Slack sends it"),
    responses(
        (status = 200, description = "Handled; refusals are sent to the clicker as an ephemeral message, or as modal errors"),
        (status = 400, description = "Not an interaction payload", body = ErrorEnvelope),
        (status = 401, description = "Missing, stale or wrong signature", body = ErrorEnvelope),
        (status = 404, description = "Interactivity is not configured", body = ErrorEnvelope),
    ))]
pub async fn slack_interaction(
    State(state): State<AppState>,
    meta: ClientMeta,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let secret = &state.config.slack.signing_secret;
    let Some(client) = state.slack.clone().filter(|_| !secret.is_empty()) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "slack_not_configured",
            "approving from Slack is not configured (slack.signing_secret and slack.bot_token)",
        ));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    verify_signature(
        secret.expose().as_bytes(),
        header("x-slack-request-timestamp"),
        header("x-slack-signature"),
        &body,
        state.clock.now(),
    )
    .map_err(|e| {
        state.metrics.auth_failure("slack_signature");
        let (code, message) = match e {
            SignatureError::Missing => (
                "missing_signature",
                "X-Slack-Signature and X-Slack-Request-Timestamp are required",
            ),
            SignatureError::Stale => (
                "stale_signature",
                "the request timestamp is more than five minutes away from now",
            ),
            SignatureError::Mismatch => (
                "invalid_signature",
                "the signature does not match the body under the signing secret",
            ),
        };
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    })?;
    let bad = |m: &str| ApiError::bad_request("invalid_interaction", m.to_owned());
    let form: InteractionForm =
        serde_urlencoded::from_bytes(&body).map_err(|_| bad("the body must be payload=<JSON>"))?;
    let payload: Value =
        serde_json::from_str(&form.payload).map_err(|_| bad("the payload is not JSON"))?;
    let slack_user = payload["user"]["id"]
        .as_str()
        .ok_or_else(|| bad("the payload names no user"))?
        .to_owned();
    let meta = ClientMeta {
        user_agent: Some(format!("slack:{slack_user}")),
        ..meta
    };
    let ctx = Interaction {
        state: &state,
        client: &client,
        slack_user,
        meta,
    };
    match payload["type"].as_str() {
        Some("block_actions") => ctx.button(&payload).await,
        Some("view_submission") if payload["view"]["callback_id"] == "reject" => {
            ctx.reject_submitted(&payload).await
        }
        // Other interactions (link buttons, closed modals) need nothing from us.
        _ => Ok(StatusCode::OK.into_response()),
    }
}

struct Interaction<'a> {
    state: &'a AppState,
    client: &'a crate::notify::SlackClient,
    slack_user: String,
    meta: ClientMeta,
}

/// Where the reject modal came from, carried in its `private_metadata`.
#[derive(Debug, Serialize, Deserialize)]
struct RejectContext {
    #[serde(flatten)]
    button: ButtonValue,
    channel: Option<String>,
}

impl Interaction<'_> {
    /// The portal user behind the Slack user: known from an earlier mapping, or looked up by the
    /// email Slack confirmed. Err carries the message for the person.
    async fn actor(&self) -> ApiResult<Result<Actor, String>> {
        let store = &self.state.store;
        let user = match store.user_by_slack_id(&self.slack_user).await? {
            Some(u) => u,
            None => {
                let answer = match self
                    .client
                    .call_form("users.info", &[("user", &self.slack_user)])
                    .await
                {
                    Ok(a) => a,
                    Err(e) => {
                        return Ok(Err(format!(
                            "Quorum could not look up your Slack account ({e}); try again, or use the portal."
                        )));
                    }
                };
                let profile = &answer["user"];
                let email = profile["profile"]["email"].as_str().unwrap_or_default();
                if email.is_empty() || profile["is_email_confirmed"] == Value::Bool(false) {
                    return Ok(Err(
                        "Your Slack account has no confirmed email, so Quorum cannot tell who you are. Use the portal."
                            .into(),
                    ));
                }
                let found = match crate::domain::text::normalize_email(email) {
                    Some(e) => store.user_by_email(&e).await?,
                    None => None,
                };
                let Some(user) = found else {
                    return Ok(Err(format!(
                        "No Quorum account uses your Slack email ({email}). Ask an admin to add you."
                    )));
                };
                store.set_slack_user_id(user.id, &self.slack_user).await?;
                user
            }
        };
        if user.disabled {
            return Ok(Err("Your Quorum account is disabled.".into()));
        }
        if user.must_change_password {
            return Ok(Err(
                "Sign in to the portal and set a new password before reviewing.".into(),
            ));
        }
        Ok(Ok(actor_of(self.state, &user).await?))
    }

    /// Tells only the clicker why nothing happened.
    async fn ephemeral(&self, channel: Option<&str>, text: &str) {
        let Some(channel) = channel else {
            return;
        };
        let body = json!({ "channel": channel, "user": self.slack_user, "text": escape(text) });
        if let Err(e) = self.client.call("chat.postEphemeral", &body).await {
            tracing::warn!(error = %e, "could not tell a Slack user why their click was refused");
        }
    }

    /// A refusal from the workflow, worded for Slack.
    fn refusal(&self, e: &ApiError, request: Uuid) -> String {
        let link = format!("{}/requests/{request}", self.state.config.portal_url());
        match e.code {
            "stale_revision" => format!(
                "This message shows an older revision: the request changed since. Review the current one: {link}"
            ),
            "not_found" => "You cannot see this request in Quorum.".to_owned(),
            _ => format!("Not done: {}.", e.message),
        }
    }

    async fn button(&self, payload: &Value) -> ApiResult<Response> {
        let action = &payload["actions"][0];
        let decision = match action["action_id"].as_str() {
            Some("approve") => Decision::Approve,
            Some("reject") => Decision::Reject,
            _ => return Ok(StatusCode::OK.into_response()),
        };
        let value: ButtonValue = action["value"]
            .as_str()
            .and_then(|v| serde_json::from_str(v).ok())
            .ok_or_else(|| {
                ApiError::bad_request("invalid_interaction", "the button carries no request")
            })?;
        let channel = payload["channel"]["id"]
            .as_str()
            .or_else(|| payload["container"]["channel_id"].as_str());
        let actor = match self.actor().await? {
            Ok(a) => a,
            Err(message) => {
                self.ephemeral(channel, &message).await;
                return Ok(StatusCode::OK.into_response());
            }
        };
        let body = ReviewBody {
            decision,
            comment: String::new(),
            revision_hash: value.hash.clone(),
        };
        if decision == Decision::Approve {
            if let Err(e) = decide(
                self.state,
                &actor,
                RequestId(value.request),
                body,
                self.meta.clone(),
                ReviewChannel::Slack,
            )
            .await
            {
                if e.status.is_server_error() {
                    return Err(e);
                }
                self.ephemeral(channel, &self.refusal(&e, value.request))
                    .await;
            }
            return Ok(StatusCode::OK.into_response());
        }
        // Reject: everything but the reason is checked before asking for it.
        let r = reviewable_request(self.state, &actor, RequestId(value.request)).await;
        let checked = match r {
            Ok(r) => {
                let probe = ReviewBody {
                    comment: "(the reason comes from the modal)".into(),
                    ..body
                };
                check_reviewer(
                    self.state,
                    &actor,
                    &r,
                    &probe,
                    &self.meta,
                    ReviewChannel::Slack,
                )
                .await
                .map(|_| ())
            }
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            if e.status.is_server_error() {
                return Err(e);
            }
            self.ephemeral(channel, &self.refusal(&e, value.request))
                .await;
            return Ok(StatusCode::OK.into_response());
        }
        let metadata = serde_json::to_string(&RejectContext {
            button: value,
            channel: channel.map(str::to_owned),
        })
        .unwrap_or_default();
        let view = json!({
            "type": "modal",
            "callback_id": "reject",
            "private_metadata": metadata,
            "title": { "type": "plain_text", "text": "Reject request" },
            "submit": { "type": "plain_text", "text": "Reject" },
            "close": { "type": "plain_text", "text": "Cancel" },
            "blocks": [{
                "type": "input",
                "block_id": "reason",
                "label": { "type": "plain_text", "text": "Why? The author sees this." },
                "element": {
                    "type": "plain_text_input",
                    "action_id": "reason",
                    "multiline": true,
                    "min_length": 1,
                    "max_length": REASON_MAX,
                },
            }],
        });
        let trigger = payload["trigger_id"].as_str().unwrap_or_default();
        match self
            .client
            .call(
                "views.open",
                &json!({ "trigger_id": trigger, "view": view }),
            )
            .await
        {
            Ok(_) => {}
            Err(SlackError::Refused(e)) if e == "expired_trigger_id" => {
                self.ephemeral(
                    channel,
                    "Slack took too long to open the form; click Reject again.",
                )
                .await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not open the reject form in Slack");
                self.ephemeral(
                    channel,
                    "Slack could not open the form; reject in the portal.",
                )
                .await;
            }
        }
        Ok(StatusCode::OK.into_response())
    }

    async fn reject_submitted(&self, payload: &Value) -> ApiResult<Response> {
        let modal_error = |message: String| {
            axum::Json(json!({ "response_action": "errors", "errors": { "reason": message } }))
                .into_response()
        };
        let Some(context) = payload["view"]["private_metadata"]
            .as_str()
            .and_then(|m| serde_json::from_str::<RejectContext>(m).ok())
        else {
            return Err(ApiError::bad_request(
                "invalid_interaction",
                "the form does not say which request it rejects",
            ));
        };
        let reason = payload["view"]["state"]["values"]["reason"]["reason"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if reason.chars().count() > REASON_MAX {
            return Ok(modal_error(format!(
                "Keep it under {REASON_MAX} characters."
            )));
        }
        let actor = match self.actor().await? {
            Ok(a) => a,
            Err(message) => return Ok(modal_error(message)),
        };
        let body = ReviewBody {
            decision: Decision::Reject,
            comment: reason,
            revision_hash: context.button.hash.clone(),
        };
        match decide(
            self.state,
            &actor,
            RequestId(context.button.request),
            body,
            self.meta.clone(),
            ReviewChannel::Slack,
        )
        .await
        {
            Ok(_) => Ok(StatusCode::OK.into_response()),
            Err(e) if e.status.is_server_error() => Err(e),
            Err(e) => Ok(modal_error(self.refusal(&e, context.button.request))),
        }
    }
}

/// One Slack delivery, as admins see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    pub request_id: Uuid,
    /// `post`, `update` or `dm`.
    pub kind: &'static str,
    /// What happened, e.g. "review: approve".
    pub event: String,
    /// `pending`, `sending`, `sent`, `skipped` or `dead`.
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    /// Every attempt: `{at, error, retry_at, counted}`.
    #[schema(value_type = Vec<Object>)]
    pub history: Value,
    pub channel: Option<String>,
    pub dedupe_key: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id,
            request_id: d.request_id.0,
            kind: d.kind.as_str(),
            event: d.event.summary(),
            state: d.state,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_error: d.last_error,
            history: d.history,
            channel: d.channel,
            dedupe_key: d.dedupe_key,
            created_at: d.created_at,
            finished_at: d.finished_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// `off`, `bot` or `webhook`.
    pub mode: &'static str,
    /// Deliveries per state, over the whole outbox.
    pub counts: BTreeMap<String, i64>,
    pub items: Vec<DeliveryView>,
    pub total: i64,
    pub page: u32,
    pub per_page: u32,
}

#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// `pending`, `sending`, `sent`, `skipped` or `dead` (the dead letters).
    pub state: Option<String>,
    pub request: Option<Uuid>,
    #[validate(range(min = 1, max = 100_000))]
    pub page: Option<u32>,
    #[validate(range(min = 1, max = 100))]
    pub per_page: Option<u32>,
}

/// Slack deliveries, newest first, with counts per state (admins).
#[utoipa::path(get, path = "/api/v1/slack/deliveries", tag = "slack", security(("bearer" = [])), params(DeliveryQuery),
    responses((status = 200, body = DeliveryPage), (status = 400, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    _admin: Require<AdministerOrg>,
    QueryParams(q): QueryParams<DeliveryQuery>,
) -> ApiResult<axum::Json<DeliveryPage>> {
    if let Some(s) = &q.state
        && !DELIVERY_STATES.contains(&s.as_str())
    {
        return Err(ApiError::bad_request(
            "invalid_state",
            format!("state must be one of {}", DELIVERY_STATES.join(", ")),
        ));
    }
    let (page, per_page, limit, offset) = paging(q.page, q.per_page);
    let found = state
        .store
        .list_deliveries(q.state.as_deref(), q.request.map(RequestId), limit, offset)
        .await?;
    let counts = state.store.delivery_counts().await?.into_iter().collect();
    Ok(axum::Json(DeliveryPage {
        mode: state.config.slack.mode().as_str(),
        counts,
        items: found.items.into_iter().map(Into::into).collect(),
        total: found.total,
        page,
        per_page,
    }))
}

/// Put a dead delivery back in the queue with fresh attempts (admins).
#[utoipa::path(post, path = "/api/v1/slack/deliveries/{id}/retry", tag = "slack", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = DeliveryView),
        (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "Only dead deliveries are retried", body = ErrorEnvelope),
    ))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    meta: ClientMeta,
    admin: Require<AdministerOrg>,
    PathId(id): PathId<Uuid>,
) -> ApiResult<axum::Json<DeliveryView>> {
    let Some(d) = state.store.get_delivery(id).await? else {
        return Err(ApiError::not_found("delivery"));
    };
    let event = NewAuditEvent::new("slack.delivery_retried")
        .actor(admin.0.user.id)
        .origin(meta.ip, meta.user_agent)
        .target("request", d.request_id)
        .details(json!({ "delivery_id": id, "kind": d.kind.as_str(), "event": d.event.summary() }));
    if !state.store.retry_delivery(id, event).await? {
        return Err(ApiError::conflict(
            "not_dead",
            format!(
                "the delivery is {}; only dead deliveries are retried",
                d.state
            ),
        ));
    }
    let d = state
        .store
        .get_delivery(id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    Ok(axum::Json(d.into()))
}
