//! Request extractors. Each maps its rejection to the error envelope with a specific code, so no
//! bad input reaches a handler and none produces a 5xx.
//!
//! - `JsonBody<T>`: `application/json` only, size-capped, no NUL characters anywhere, unknown
//!   fields and duplicate keys rejected (`deny_unknown_fields` on every input type), then
//!   `validator` rules.
//! - `QueryParams<T>`, `PathId<T>`: typed, with 400s that say what was wrong.
//! - `AuthUser` / `SignedIn` / `Require<P>`: who is calling and whether their role may do this
//!   kind of thing. Resource rules (which POD) are the domain's.

use std::marker::PhantomData;
use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use uuid::Uuid;
use validator::{Validate, ValidationErrors};

use super::AppState;
use super::error::ApiError;
use crate::auth::AccessClaims;
use crate::domain::{Actor, Permission};
use crate::store::{Session, User};

/// A validated JSON request body.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if mime != "application/json"
            && !(mime.starts_with("application/") && mime.ends_with("+json"))
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        if let Some(charset) = content_type.to_ascii_lowercase().split("charset=").nth(1)
            && !charset
                .trim()
                .trim_matches('"')
                .eq_ignore_ascii_case("utf-8")
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "JSON bodies must be UTF-8",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                payload_too_large()
            } else {
                ApiError::bad_request("body_unreadable", "the request body could not be read")
            }
        })?;
        Ok(JsonBody(parse_json(&bytes)?))
    }
}

pub fn payload_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the request body is larger than the server accepts",
    )
}

/// Parses and validates a JSON body (separate from the extractor so it is unit-testable).
pub fn parse_json<T: DeserializeOwned + Validate>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF])
        || bytes.starts_with(&[0xFE, 0xFF])
        || bytes.starts_with(&[0xFF, 0xFE])
    {
        return Err(ApiError::bad_request(
            "malformed_json",
            "the body starts with a byte-order mark; send plain UTF-8 JSON",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
    })?;
    if let Some(path) = find_nul(&value, &mut String::from("$")) {
        return Err(ApiError::unprocessable(
            "invalid_character",
            format!("{path} contains a NUL character (U+0000), which is not allowed"),
        )
        .with_details(serde_json::json!({ "field": path })));
    }
    let parsed: T = serde_json::from_slice(bytes).map_err(|e| {
        let text = e.to_string();
        let code = if text.starts_with("unknown field") {
            "unknown_field"
        } else if text.starts_with("missing field") {
            "missing_field"
        } else if text.starts_with("duplicate field") {
            "duplicate_field"
        } else {
            "invalid_body"
        };
        // serde's messages name the field and the expectation; the position is noise here.
        let message = text.split(" at line ").next().unwrap_or(&text).to_owned();
        ApiError::unprocessable(code, message)
    })?;
    parsed.validate().map_err(validation_error)?;
    Ok(parsed)
}

fn find_nul(value: &serde_json::Value, path: &mut String) -> Option<String> {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Some(path.clone()),
        serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = find_nul(v, path);
            path.truncate(len);
            found
        }),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            let len = path.len();
            path.push('.');
            path.push_str(k);
            let found = if k.contains('\0') {
                Some(path.clone())
            } else {
                find_nul(v, path)
            };
            path.truncate(len);
            found
        }),
        _ => None,
    }
}

/// `validator` errors as `{"fields": {"name": ["message", …]}}` with the first as the message.
pub fn validation_error(errors: ValidationErrors) -> ApiError {
    let mut fields = serde_json::Map::new();
    let mut first = None;
    let mut names: Vec<_> = errors.field_errors().into_iter().collect();
    names.sort_by_key(|(name, _)| name.to_string());
    for (name, errs) in names {
        let messages: Vec<String> = errs
            .iter()
            .map(|e| {
                e.message
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| format!("is invalid ({})", e.code))
            })
            .collect();
        if first.is_none() {
            first = messages.first().map(|m| format!("{name}: {m}"));
        }
        fields.insert(name.to_string(), messages.into());
    }
    ApiError::unprocessable(
        "validation_failed",
        first.unwrap_or_else(|| "the request is invalid".into()),
    )
    .with_details(serde_json::json!({ "fields": fields }))
}

/// Typed query parameters.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let value: T = serde_urlencoded::from_str(query).map_err(|e| {
            ApiError::bad_request("invalid_query", format!("invalid query parameters: {e}"))
        })?;
        value.validate().map_err(|e| {
            let mut err = validation_error(e);
            err.status = StatusCode::BAD_REQUEST;
            err.code = "invalid_query";
            err
        })?;
        Ok(QueryParams(value))
    }
}

/// A UUID path parameter in canonical hyphenated form (any case).
#[derive(Debug, Clone, Copy)]
pub struct PathId<T>(pub T);

impl<T, S> FromRequestParts<S> for PathId<T>
where
    T: From<Uuid> + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| {
                    ApiError::bad_request("invalid_id", "the id in the path is not a valid UUID")
                })?;
        parse_uuid(&raw).map(|u| PathId(T::from(u)))
    }
}

pub fn parse_uuid(raw: &str) -> Result<Uuid, ApiError> {
    if raw.len() != 36 {
        return Err(ApiError::bad_request(
            "invalid_id",
            "ids are UUIDs like 0190f5a4-7d3c-7b1e-9f00-2b6c1d8e4a10",
        ));
    }
    Uuid::try_parse(raw).map_err(|_| {
        ApiError::bad_request(
            "invalid_id",
            "ids are UUIDs like 0190f5a4-7d3c-7b1e-9f00-2b6c1d8e4a10",
        )
    })
}

/// The client's address as resolved by the client-IP middleware (trusted proxies honoured).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// Where a request came from, for audit events and sessions.
#[derive(Debug, Clone)]
pub struct ClientMeta {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for ClientMeta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let ip = parts.extensions.get::<ClientIp>().map(|c| c.0.to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| {
                s.chars()
                    .filter(|c| !c.is_control())
                    .take(512)
                    .collect::<String>()
            })
            .filter(|s| !s.is_empty());
        Ok(ClientMeta { ip, user_agent })
    }
}

/// A signed-in caller whose access token, session and account are all still valid, and who has
/// no pending forced password change.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user: User,
    pub session: Session,
    pub claims: AccessClaims,
}

impl AuthUser {
    /// The caller as the domain rules see them (loads the PODs they manage).
    pub async fn actor(&self, state: &AppState) -> Result<Actor, ApiError> {
        actor_of(state, &self.user).await
    }
}

/// A user as the domain rules see them, however they were authenticated (token, Slack).
pub async fn actor_of(state: &AppState, user: &crate::store::User) -> Result<Actor, ApiError> {
    Ok(Actor {
        id: user.id,
        role: user.role,
        home_pod: user.home_pod_id,
        managed_pods: state.store.managed_pods(user.id).await?,
    })
}

/// Like `AuthUser` but also admits a caller who must still change their password; only the
/// routes that let them do that (and sign out) take it.
#[derive(Debug, Clone)]
pub struct SignedIn(pub AuthUser);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(cached) = parts.extensions.get::<AuthUser>() {
            return Ok(SignedIn(cached.clone()));
        }
        let auth = authenticate(parts, state).await?;
        parts.extensions.insert(auth.clone());
        Ok(SignedIn(auth))
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let SignedIn(auth) = SignedIn::from_request_parts(parts, state).await?;
        if auth.user.must_change_password {
            return Err(ApiError::forbidden(
                "change your password before continuing (POST /api/v1/me/password)",
            )
            .with_code("password_change_required"));
        }
        Ok(auth)
    }
}

impl ApiError {
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<AuthUser, ApiError> {
    let fail = |reason: &'static str| {
        state.metrics.auth_failure(reason);
        ApiError::unauthorized()
    };
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Err(fail("missing"));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| fail("malformed"))?;
    let now = state.clock.now();
    let claims = state
        .tokens
        .verify(token, now)
        .map_err(|e| fail(e.reason()))?;
    let ctx = state
        .store
        .auth_context(claims.session_id(), claims.user_id(), claims.jti)
        .await?
        .ok_or_else(|| fail("session"))?;
    if ctx.jti_revoked {
        return Err(fail("revoked"));
    }
    if ctx.session.revoked_at.is_some() || ctx.session.expires_at <= now {
        return Err(fail("session"));
    }
    if ctx.user.disabled {
        return Err(fail("disabled"));
    }
    // Keep "last seen" roughly current without a write on every request.
    if now - ctx.session.last_seen_at > chrono::Duration::seconds(60) {
        let store = state.store.clone();
        let id = ctx.session.id;
        tokio::spawn(async move {
            if let Err(e) = store.touch_session(id).await {
                tracing::debug!(error = %e, "could not update session last_seen_at");
            }
        });
    }
    Ok(AuthUser {
        user: ctx.user,
        session: ctx.session,
        claims,
    })
}

/// Marker types naming a coarse permission, for `Require<P>`.
pub trait PermissionMarker: Send + Sync + 'static {
    const PERMISSION: Permission;
    const DESCRIPTION: &'static str;
}

#[derive(Debug)]
pub struct AdministerOrg;
impl PermissionMarker for AdministerOrg {
    const PERMISSION: Permission = Permission::AdministerOrg;
    const DESCRIPTION: &'static str = "managing users, PODs and instances needs the admin role";
}

#[derive(Debug)]
pub struct ReadAudit;
impl PermissionMarker for ReadAudit {
    const PERMISSION: Permission = Permission::ReadAudit;
    const DESCRIPTION: &'static str = "reading the audit log needs the admin role";
}

/// A caller whose role holds permission `P`; 403 otherwise.
#[derive(Debug)]
pub struct Require<P: PermissionMarker>(pub AuthUser, pub PhantomData<P>);

impl<P: PermissionMarker> FromRequestParts<AppState> for Require<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let auth = AuthUser::from_request_parts(parts, state).await?;
        if !P::PERMISSION.allows(auth.user.role) {
            return Err(ApiError::forbidden(P::DESCRIPTION));
        }
        Ok(Require(auth, PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, Validate)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[validate(length(min = 1, max = 5, message = "must be 1 to 5 characters"))]
        name: String,
        #[serde(default)]
        tags: Vec<String>,
    }

    fn code(body: &str) -> (StatusCode, &'static str) {
        let e = parse_json::<Sample>(body.as_bytes()).expect_err("should fail");
        (e.status, e.code)
    }

    #[test]
    fn bad_bodies_get_specific_codes() {
        assert_eq!(code("{"), (StatusCode::BAD_REQUEST, "malformed_json"));
        assert_eq!(
            code("\u{FEFF}{}"),
            (StatusCode::BAD_REQUEST, "malformed_json")
        );
        assert_eq!(
            code(&"[".repeat(100_000)),
            (StatusCode::BAD_REQUEST, "malformed_json")
        );
        assert_eq!(
            code(r#"{"name": 1e999999}"#),
            (StatusCode::BAD_REQUEST, "malformed_json")
        );
        assert_eq!(
            code(r#"{"name": "a\u0000b"}"#),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_character")
        );
        assert_eq!(
            code(r#"{"name": "ab", "tags": ["x\u0000"]}"#),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_character")
        );
        assert_eq!(
            code(r#"{"name": "ab", "status": "approved"}"#),
            (StatusCode::UNPROCESSABLE_ENTITY, "unknown_field")
        );
        assert_eq!(
            code(r#"{"tags": []}"#),
            (StatusCode::UNPROCESSABLE_ENTITY, "missing_field")
        );
        assert_eq!(
            code(r#"{"name": "a", "name": "b"}"#),
            (StatusCode::UNPROCESSABLE_ENTITY, "duplicate_field")
        );
        assert_eq!(
            code(r#"{"name": 5}"#),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
        );
        assert_eq!(
            code(r#"{"name": "toolong"}"#),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
        );
        let ok = parse_json::<Sample>(br#"{"name": "ok", "tags": ["a"]}"#).expect("valid");
        assert_eq!((ok.name.as_str(), ok.tags), ("ok", vec![String::from("a")]));
    }

    #[test]
    fn uuids_must_be_canonical() {
        assert!(parse_uuid("0190f5a4-7d3c-7b1e-9f00-2b6c1d8e4a10").is_ok());
        assert!(parse_uuid("0190F5A4-7D3C-7B1E-9F00-2B6C1D8E4A10").is_ok());
        for bad in [
            "",
            "not-a-uuid",
            "0190f5a47d3c7b1e9f002b6c1d8e4a10",
            "%00",
            "../../etc/passwd",
            &"a".repeat(10_000),
        ] {
            assert_eq!(parse_uuid(bad).expect_err(bad).code, "invalid_id");
        }
    }
}
