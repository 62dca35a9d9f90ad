//! Access tokens: HS256 JWTs with the algorithm pinned and every registered claim required.
//! Keys come from configuration only (no `kid`, `jku` or `jwk` lookups). Expiry is checked
//! against the injected clock with a small leeway; revocation (by `jti` and by session) is checked
//! against the store by the request extractor.

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Role, SessionId, UserId};

/// The `typ` claim of an access token; anything else presented as one is refused.
pub const ACCESS_TYP: &str = "access";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: Uuid,
    /// The session (refresh-token family) this token was issued to.
    pub sid: Uuid,
    pub role: Role,
    pub typ: String,
}

impl AccessClaims {
    pub fn user_id(&self) -> UserId {
        UserId(self.sub)
    }
    pub fn session_id(&self) -> SessionId {
        SessionId(self.sid)
    }
    pub fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.exp, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// Why a token was refused; the reason labels the `auth_failures` metric, never the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("bad signature")]
    Signature,
    #[error("invalid claims")]
    Claims,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("wrong token type")]
    WrongType,
}

impl TokenError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Algorithm => "alg",
            Self::Signature => "signature",
            Self::Claims => "claims",
            Self::Expired => "expired",
            Self::NotYetValid => "nbf",
            Self::WrongType => "typ",
        }
    }
}

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
    leeway: i64,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    pub fn new(
        secret: &[u8],
        issuer: &str,
        audience: &str,
        ttl_secs: i64,
        leeway_secs: i64,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        // Time claims are checked below against the injected clock (same leeway).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl: Duration::seconds(ttl_secs),
            leeway: leeway_secs,
        }
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl.num_seconds()
    }

    pub fn issue(
        &self,
        user: UserId,
        session: SessionId,
        role: Role,
        now: DateTime<Utc>,
    ) -> anyhow::Result<(String, AccessClaims)> {
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user.0,
            exp: (now + self.ttl).timestamp(),
            nbf: now.timestamp(),
            iat: now.timestamp(),
            jti: Uuid::new_v4(),
            sid: session.0,
            role,
            typ: ACCESS_TYP.to_owned(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, claims))
    }

    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<AccessClaims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        if token.len() > 4096 || token.split('.').count() != 3 {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Algorithm);
        }
        // Header parameters that point at other keys are never honoured; a token carrying them
        // was not made by us.
        if header.jku.is_some()
            || header.jwk.is_some()
            || header.x5u.is_some()
            || header.kid.is_some()
        {
            return Err(TokenError::Malformed);
        }
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::Algorithm
                }
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                    TokenError::Malformed
                }
                _ => TokenError::Claims,
            })?;
        let claims = data.claims;
        let t = now.timestamp();
        if claims.exp < t - self.leeway {
            return Err(TokenError::Expired);
        }
        if claims.nbf > t + self.leeway {
            return Err(TokenError::NotYetValid);
        }
        if claims.typ != ACCESS_TYP {
            return Err(TokenError::WrongType);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keys() -> TokenKeys {
        TokenKeys::new(SECRET, "quorum", "quorum-api", 600, 30)
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000, 0).expect("time")
    }

    fn claims_json(overrides: serde_json::Value) -> serde_json::Value {
        let mut base = json!({
            "iss": "quorum", "aud": "quorum-api", "sub": Uuid::nil(), "exp": now().timestamp() + 600,
            "nbf": now().timestamp(), "iat": now().timestamp(), "jti": Uuid::nil(), "sid": Uuid::nil(),
            "role": "admin", "typ": "access"
        });
        for (k, v) in overrides.as_object().expect("object") {
            if v.is_null() {
                base.as_object_mut().expect("object").remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base
    }

    /// Builds a token by hand, signed with HS-`alg` over `key` (or unsigned).
    fn forge(header: serde_json::Value, claims: serde_json::Value, key: Option<&[u8]>) -> String {
        use hmac_sig::sign;
        let h = URL_SAFE_NO_PAD.encode(header.to_string());
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{h}.{c}");
        let sig = key
            .map(|k| sign(k, signing_input.as_bytes()))
            .unwrap_or_default();
        format!("{signing_input}.{sig}")
    }

    mod hmac_sig {
        use jsonwebtoken::{Algorithm, EncodingKey};
        pub fn sign(key: &[u8], input: &[u8]) -> String {
            jsonwebtoken::crypto::sign(input, &EncodingKey::from_secret(key), Algorithm::HS256)
                .expect("sign")
        }
    }

    #[test]
    fn issued_tokens_verify() {
        let k = keys();
        let (t, c) = k
            .issue(UserId::new(), SessionId::new(), Role::Developer, now())
            .expect("issue");
        assert_eq!(k.verify(&t, now()), Ok(c));
    }

    #[test]
    fn hostile_tokens_are_refused() {
        let k = keys();
        let hs = json!({"alg": "HS256", "typ": "JWT"});
        let good = claims_json(json!({}));
        let cases: Vec<(&str, String, TokenError)> = vec![
            (
                "alg none",
                forge(json!({"alg": "none"}), good.clone(), None),
                TokenError::Malformed,
            ),
            (
                "HS512",
                forge(json!({"alg": "HS512"}), good.clone(), Some(SECRET)),
                TokenError::Algorithm,
            ),
            (
                "empty signature",
                forge(hs.clone(), good.clone(), None),
                TokenError::Signature,
            ),
            (
                "other key",
                forge(
                    hs.clone(),
                    good.clone(),
                    Some(b"another-key-another-key-another-key"),
                ),
                TokenError::Signature,
            ),
            (
                "missing exp",
                forge(hs.clone(), claims_json(json!({"exp": null})), Some(SECRET)),
                TokenError::Claims,
            ),
            (
                "exp as string",
                forge(
                    hs.clone(),
                    claims_json(json!({"exp": "never"})),
                    Some(SECRET),
                ),
                TokenError::Claims,
            ),
            (
                "numeric string exp",
                forge(
                    hs.clone(),
                    claims_json(json!({"exp": "99999999999"})),
                    Some(SECRET),
                ),
                TokenError::Claims,
            ),
            (
                "missing nbf",
                forge(hs.clone(), claims_json(json!({"nbf": null})), Some(SECRET)),
                TokenError::Claims,
            ),
            (
                "missing jti",
                forge(hs.clone(), claims_json(json!({"jti": null})), Some(SECRET)),
                TokenError::Claims,
            ),
            (
                "missing iat",
                forge(hs.clone(), claims_json(json!({"iat": null})), Some(SECRET)),
                TokenError::Claims,
            ),
            (
                "expired",
                forge(
                    hs.clone(),
                    claims_json(json!({"exp": now().timestamp() - 31})),
                    Some(SECRET),
                ),
                TokenError::Expired,
            ),
            (
                "future nbf",
                forge(
                    hs.clone(),
                    claims_json(json!({"nbf": now().timestamp() + 31})),
                    Some(SECRET),
                ),
                TokenError::NotYetValid,
            ),
            (
                "wrong aud",
                forge(
                    hs.clone(),
                    claims_json(json!({"aud": "other"})),
                    Some(SECRET),
                ),
                TokenError::Claims,
            ),
            (
                "wrong iss",
                forge(
                    hs.clone(),
                    claims_json(json!({"iss": "evil"})),
                    Some(SECRET),
                ),
                TokenError::Claims,
            ),
            (
                "refresh typ",
                forge(
                    hs.clone(),
                    claims_json(json!({"typ": "refresh"})),
                    Some(SECRET),
                ),
                TokenError::WrongType,
            ),
            (
                "extra claim",
                forge(
                    hs.clone(),
                    claims_json(json!({"admin": true})),
                    Some(SECRET),
                ),
                TokenError::Claims,
            ),
            (
                "kid traversal",
                forge(
                    json!({"alg": "HS256", "kid": "../../../dev/null"}),
                    good.clone(),
                    Some(SECRET),
                ),
                TokenError::Malformed,
            ),
            (
                "jku",
                forge(
                    json!({"alg": "HS256", "jku": "http://attacker"}),
                    good.clone(),
                    Some(SECRET),
                ),
                TokenError::Malformed,
            ),
            ("garbage", "not.a.jwt".to_owned(), TokenError::Malformed),
            ("two parts", "abc.def".to_owned(), TokenError::Malformed),
        ];
        for (name, token, expected) in cases {
            assert_eq!(k.verify(&token, now()), Err(expected), "{name}");
        }
    }

    #[test]
    fn tampered_payload_fails_signature() {
        let k = keys();
        let (t, _) = k
            .issue(UserId::new(), SessionId::new(), Role::Developer, now())
            .expect("issue");
        let parts: Vec<&str> = t.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        claims["role"] = json!("admin");
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            parts[2]
        );
        assert_eq!(k.verify(&tampered, now()), Err(TokenError::Signature));
    }

    #[test]
    fn leeway_boundaries() {
        let k = keys();
        let hs = json!({"alg": "HS256", "typ": "JWT"});
        let at_edge = forge(
            hs.clone(),
            claims_json(json!({"exp": now().timestamp() - 30})),
            Some(SECRET),
        );
        assert!(k.verify(&at_edge, now()).is_ok());
        let nbf_edge = forge(
            hs,
            claims_json(json!({"nbf": now().timestamp() + 30})),
            Some(SECRET),
        );
        assert!(k.verify(&nbf_edge, now()).is_ok());
    }
}
