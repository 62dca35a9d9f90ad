//! The audit log is append-only and hash-chained: each event's hash covers the previous event's
//! hash and every field of the event, so editing or deleting any stored row breaks the chain at
//! that row (Crosby & Wallach style). `verify_chain` reports the first broken link.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::UserId;

/// The `prev_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Everything a state change records, before the store gives it a place in the chain.
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub actor_id: Option<UserId>,
    pub action: &'static str,
    pub target_type: Option<&'static str>,
    pub target_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub details: serde_json::Value,
}

impl NewAuditEvent {
    pub fn new(action: &'static str) -> Self {
        Self {
            actor_id: None,
            action,
            target_type: None,
            target_id: None,
            ip: None,
            user_agent: None,
            details: serde_json::Value::Object(Default::default()),
        }
    }
    pub fn actor(mut self, actor: UserId) -> Self {
        self.actor_id = Some(actor);
        self
    }
    pub fn target(mut self, kind: &'static str, id: impl ToString) -> Self {
        self.target_type = Some(kind);
        self.target_id = Some(id.to_string());
        self
    }
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
    pub fn origin(mut self, ip: Option<String>, user_agent: Option<String>) -> Self {
        self.ip = ip;
        // User agents are attacker-chosen; keep them bounded.
        self.user_agent = user_agent.map(|ua| ua.chars().take(512).collect());
        self
    }
}

/// A stored event, as read back from the store.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEvent {
    /// Position in the chain (1-based, gap-free).
    pub seq: i64,
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// JSON object with action-specific details.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
    /// `details` exactly as stored; the chain hash covers these bytes.
    #[serde(skip)]
    pub details_raw: String,
}

/// Fields exactly as stored; `details` is the stored JSON text, hashed byte for byte.
#[derive(Debug, Clone, Copy)]
pub struct ChainFields<'a> {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub action: &'a str,
    pub target_type: Option<&'a str>,
    pub target_id: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub details: &'a str,
}

/// `sha256` over a JSON array of the previous hash and every field: unambiguous, since JSON
/// strings are length-delimited by their quotes and escapes.
pub fn chain_hash(prev_hash: &str, f: &ChainFields<'_>) -> String {
    let canonical = serde_json::json!([
        prev_hash,
        f.id.to_string(),
        f.at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        f.actor_id.map(|u| u.to_string()),
        f.action,
        f.target_type,
        f.target_id,
        f.ip,
        f.user_agent,
        f.details,
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    pub seq: i64,
    pub id: Uuid,
    pub reason: &'static str,
}

/// Incremental verifier: feed events in `seq` order.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_prev: String,
    expected_seq: i64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            expected_prev: GENESIS_HASH.to_owned(),
            expected_seq: 1,
        }
    }
}

impl ChainVerifier {
    pub fn check(
        &mut self,
        seq: i64,
        stored_prev: &str,
        stored_hash: &str,
        f: &ChainFields<'_>,
    ) -> Result<(), BrokenLink> {
        let broken = |reason| {
            Err(BrokenLink {
                seq,
                id: f.id,
                reason,
            })
        };
        if seq != self.expected_seq {
            return broken("an event is missing before this one");
        }
        if stored_prev != self.expected_prev {
            return broken("prev_hash does not match the previous event's hash");
        }
        if chain_hash(stored_prev, f) != stored_hash {
            return broken("the event's content does not match its hash");
        }
        self.expected_prev = stored_hash.to_owned();
        self.expected_seq += 1;
        Ok(())
    }

    pub fn verified(&self) -> i64 {
        self.expected_seq - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(details: &str) -> ChainFields<'_> {
        ChainFields {
            id: Uuid::nil(),
            at: DateTime::from_timestamp(1_800_000_000, 123_456_000).expect("time"),
            actor_id: None,
            action: "auth.login",
            target_type: Some("user"),
            target_id: Some("x"),
            ip: Some("127.0.0.1"),
            user_agent: None,
            details,
        }
    }

    #[test]
    fn chain_detects_edits_and_gaps() {
        let h1 = chain_hash(GENESIS_HASH, &fields("{}"));
        let h2 = chain_hash(&h1, &fields("{\"n\":2}"));
        let mut v = ChainVerifier::default();
        assert_eq!(v.check(1, GENESIS_HASH, &h1, &fields("{}")), Ok(()));
        assert_eq!(v.check(2, &h1, &h2, &fields("{\"n\":2}")), Ok(()));
        assert_eq!(v.verified(), 2);

        let mut v = ChainVerifier::default();
        assert!(
            v.check(1, GENESIS_HASH, &h1, &fields("{\"edited\":1}"))
                .is_err()
        );

        let mut v = ChainVerifier::default();
        let err = v
            .check(2, &h1, &h2, &fields("{\"n\":2}"))
            .expect_err("must fail");
        assert_eq!(err.seq, 2);
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let mut a = fields("{}");
        a.target_type = Some("us");
        a.target_id = Some("erx");
        assert_ne!(
            chain_hash(GENESIS_HASH, &a),
            chain_hash(GENESIS_HASH, &fields("{}"))
        );
    }
}
