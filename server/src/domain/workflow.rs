//! The request workflow as pure rules (design §4): who sees a request, who may review it, what a
//! decision does, when a request may be edited or cancelled, when it expires, and the content hash
//! an approval is bound to. The store persists what these decide, with conditional updates.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{Actor, InstanceId, PodId, Role, UserId};
use crate::config::{LimitsConfig, WorkflowConfig};

macro_rules! str_enum {
    ($t:ident { $($v:ident = $s:literal),* $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $t { $($v),* }
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$v),)* _ => None }
            }
        }
    };
}

str_enum!(Kind { Query = "query", Script = "script" });
str_enum!(Mode { Read = "read", Write = "write" });
str_enum!(Decision { Approve = "approve", Reject = "reject", RequestChanges = "request_changes" });
str_enum!(Status {
    Pending = "pending",
    ChangesRequested = "changes_requested",
    Approved = "approved",
    Rejected = "rejected",
    Cancelled = "cancelled",
    Expired = "expired",
    Running = "running",
    Succeeded = "succeeded",
    Failed = "failed",
    TimedOut = "timed_out",
    Interrupted = "interrupted",
});

impl Status {
    /// The author may still change the request (a new revision voids every approval).
    pub fn editable(self) -> bool {
        matches!(
            self,
            Status::Pending | Status::ChangesRequested | Status::Approved
        )
    }
    /// The author may still withdraw it.
    pub fn cancellable(self) -> bool {
        self.editable()
    }
    /// Nothing further will happen to it.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            Status::Pending | Status::ChangesRequested | Status::Approved | Status::Running
        )
    }
}

/// What an approval is bound to: `sha256` over a JSON array of everything that decides what runs.
pub fn revision_hash(
    kind: Kind,
    mode: Mode,
    content: &str,
    instance: InstanceId,
    database: &str,
    limits: &LimitsConfig,
) -> String {
    let canonical = serde_json::json!([
        "quorum-revision-v2",
        kind.as_str(),
        mode.as_str(),
        content,
        instance.0.to_string(),
        database,
        [
            limits.wall_ms,
            limits.db_call_ms,
            limits.memory_mb,
            limits.max_calls,
            limits.max_rows
        ],
        [limits.max_result_bytes, limits.max_log_bytes],
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// The facts about a request that the rules look at.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    pub author: UserId,
    pub last_editor: UserId,
    pub pod: PodId,
    pub status: Status,
    pub revision_hash: String,
}

/// Developers see their own requests and their home POD's; managers also those of the PODs they
/// manage; admins everything.
pub fn can_view(actor: &Actor, r: &RequestFacts) -> bool {
    actor.role == Role::Admin
        || r.author == actor.id
        || actor.home_pod == Some(r.pod)
        || (actor.role == Role::Manager && actor.managed_pods.contains(&r.pod))
}

/// Whether the actor reviews requests of this POD at all (admins: every POD).
pub fn is_reviewer_for(actor: &Actor, pod: PodId) -> bool {
    match actor.role {
        Role::Admin => true,
        Role::Manager => actor.managed_pods.contains(&pod),
        Role::Developer => false,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReviewRefusal {
    /// Looks absent to the actor (404): a manager of another POD, or not visible at all.
    NotFound,
    /// The actor wrote or last edited it (403).
    SelfReview,
    /// The actor's role does not review (403).
    NotAReviewer,
    /// Not awaiting review (409).
    NotPending(Status),
    /// The presented revision hash is not the current one (409).
    StaleRevision,
    /// The actor already reviewed this revision (409).
    AlreadyReviewed,
    /// Rejecting or requesting changes without saying why (422).
    CommentRequired,
    /// A review from Slack on an instance that forbids approving there (403).
    SlackForbidden,
}

pub fn check_review(
    actor: &Actor,
    r: &RequestFacts,
    presented_hash: &str,
    already_reviewed: bool,
) -> Result<(), ReviewRefusal> {
    if !is_reviewer_for(actor, r.pod) {
        // Someone who may see the request but does not review this POD is told so; anyone else
        // must not learn that it exists.
        return Err(if can_view(actor, r) {
            ReviewRefusal::NotAReviewer
        } else {
            ReviewRefusal::NotFound
        });
    }
    if actor.id == r.author || actor.id == r.last_editor {
        return Err(ReviewRefusal::SelfReview);
    }
    if r.status != Status::Pending {
        return Err(ReviewRefusal::NotPending(r.status));
    }
    if presented_hash != r.revision_hash {
        return Err(ReviewRefusal::StaleRevision);
    }
    if already_reviewed {
        return Err(ReviewRefusal::AlreadyReviewed);
    }
    Ok(())
}

/// A rejection or a request for changes must say why; an approval may stand alone.
pub fn check_decision(decision: Decision, comment: &str) -> Result<(), ReviewRefusal> {
    if decision != Decision::Approve && comment.trim().is_empty() {
        return Err(ReviewRefusal::CommentRequired);
    }
    Ok(())
}

/// Where a review decision is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewChannel {
    Portal,
    Slack,
}

impl ReviewChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewChannel::Portal => "portal",
            ReviewChannel::Slack => "slack",
        }
    }
}

/// Instances can forbid reviewing from Slack; the portal is always open.
pub fn check_channel(channel: ReviewChannel, slack_allowed: bool) -> Result<(), ReviewRefusal> {
    if channel == ReviewChannel::Slack && !slack_allowed {
        return Err(ReviewRefusal::SlackForbidden);
    }
    Ok(())
}

/// What only a request's author may do, each allowed in some statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorAction {
    Edit,
    Cancel,
    Run,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorRefusal {
    /// Someone other than the author (403).
    NotAuthor,
    /// The request is past the point where this is possible (409).
    WrongStatus(Status),
}

pub fn check_author_action(
    actor: &Actor,
    r: &RequestFacts,
    action: AuthorAction,
) -> Result<(), AuthorRefusal> {
    if actor.id != r.author {
        return Err(AuthorRefusal::NotAuthor);
    }
    let allowed = match action {
        AuthorAction::Edit => r.status.editable(),
        AuthorAction::Cancel => r.status.cancellable(),
        AuthorAction::Run => r.status == Status::Approved,
    };
    if allowed {
        Ok(())
    } else {
        Err(AuthorRefusal::WrongStatus(r.status))
    }
}

/// The status a decision leads to, given the distinct valid approvals counting this one.
pub fn after_decision(decision: Decision, approvals: u32, required: u8) -> Status {
    match decision {
        Decision::Reject => Status::Rejected,
        Decision::RequestChanges => Status::ChangesRequested,
        Decision::Approve if approvals >= u32::from(required) => Status::Approved,
        Decision::Approve => Status::Pending,
    }
}

/// When a request in `status`, last changed at `since`, expires (if it can).
pub fn expires_at(
    status: Status,
    since: DateTime<Utc>,
    policy: &WorkflowConfig,
) -> Option<DateTime<Utc>> {
    match status {
        Status::Pending | Status::ChangesRequested => {
            Some(since + Duration::seconds(policy.pending_ttl_secs))
        }
        Status::Approved => Some(since + Duration::seconds(policy.execution_window_secs)),
        _ => None,
    }
}

/// Approvals given before this instant no longer count.
pub fn approval_cutoff(now: DateTime<Utc>, policy: &WorkflowConfig) -> DateTime<Utc> {
    now - Duration::seconds(policy.approval_ttl_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(role: Role, home: Option<PodId>, managed: Vec<PodId>) -> Actor {
        Actor {
            id: UserId::new(),
            role,
            home_pod: home,
            managed_pods: managed,
        }
    }

    fn facts(author: UserId, pod: PodId) -> RequestFacts {
        RequestFacts {
            author,
            last_editor: author,
            pod,
            status: Status::Pending,
            revision_hash: "h".into(),
        }
    }

    #[test]
    fn review_rules_table() {
        let (a, b) = (PodId::new(), PodId::new());
        let dev = actor(Role::Developer, Some(a), vec![]);
        let manager = actor(Role::Manager, Some(a), vec![a]);
        let other_manager = actor(Role::Manager, Some(b), vec![b]);
        let admin = actor(Role::Admin, None, vec![]);
        let r = facts(dev.id, a);
        assert_eq!(check_review(&manager, &r, "h", false), Ok(()));
        assert_eq!(check_review(&admin, &r, "h", false), Ok(()));
        assert_eq!(
            check_review(&other_manager, &r, "h", false),
            Err(ReviewRefusal::NotFound)
        );
        assert_eq!(
            check_review(&dev, &r, "h", false),
            Err(ReviewRefusal::NotAReviewer)
        );
        assert_eq!(
            check_review(&manager, &r, "old", false),
            Err(ReviewRefusal::StaleRevision)
        );
        assert_eq!(
            check_review(&manager, &r, "h", true),
            Err(ReviewRefusal::AlreadyReviewed)
        );
        // Authors and last editors never review, admins included.
        let own = facts(admin.id, a);
        assert_eq!(
            check_review(&admin, &own, "h", false),
            Err(ReviewRefusal::SelfReview)
        );
        let edited = RequestFacts {
            last_editor: manager.id,
            ..facts(dev.id, a)
        };
        assert_eq!(
            check_review(&manager, &edited, "h", false),
            Err(ReviewRefusal::SelfReview)
        );
        let done = RequestFacts {
            status: Status::Rejected,
            ..facts(dev.id, a)
        };
        assert_eq!(
            check_review(&manager, &done, "h", false),
            Err(ReviewRefusal::NotPending(Status::Rejected))
        );
    }

    #[test]
    fn visibility_table() {
        let (a, b) = (PodId::new(), PodId::new());
        let author = actor(Role::Developer, Some(a), vec![]);
        let r = facts(author.id, a);
        assert!(can_view(&author, &r));
        assert!(
            can_view(&actor(Role::Developer, Some(a), vec![]), &r),
            "home POD, read-only"
        );
        assert!(!can_view(&actor(Role::Developer, Some(b), vec![]), &r));
        assert!(can_view(&actor(Role::Manager, Some(b), vec![a]), &r));
        assert!(!can_view(&actor(Role::Manager, Some(b), vec![b]), &r));
        assert!(can_view(&actor(Role::Admin, None, vec![]), &r));
    }

    #[test]
    fn author_actions_table() {
        let pod = PodId::new();
        let author = actor(Role::Developer, Some(pod), vec![]);
        let admin = actor(Role::Admin, None, vec![]);
        let at = |status| RequestFacts {
            status,
            ..facts(author.id, pod)
        };
        use AuthorAction::*;
        for (status, edit, cancel, run) in [
            (Status::Pending, true, true, false),
            (Status::ChangesRequested, true, true, false),
            (Status::Approved, true, true, true),
            (Status::Running, false, false, false),
            (Status::Succeeded, false, false, false),
            (Status::Rejected, false, false, false),
            (Status::Expired, false, false, false),
        ] {
            for (action, ok) in [(Edit, edit), (Cancel, cancel), (Run, run)] {
                let expected = if ok {
                    Ok(())
                } else {
                    Err(AuthorRefusal::WrongStatus(status))
                };
                assert_eq!(
                    check_author_action(&author, &at(status), action),
                    expected,
                    "{status:?} {action:?}"
                );
                assert_eq!(
                    check_author_action(&admin, &at(status), action),
                    Err(AuthorRefusal::NotAuthor)
                );
            }
        }
    }

    #[test]
    fn decisions_and_expiry() {
        assert_eq!(check_decision(Decision::Approve, ""), Ok(()));
        assert_eq!(
            check_decision(Decision::Reject, "  "),
            Err(ReviewRefusal::CommentRequired)
        );
        assert_eq!(
            check_decision(Decision::RequestChanges, "\n"),
            Err(ReviewRefusal::CommentRequired)
        );
        assert_eq!(check_decision(Decision::Reject, "wrong table"), Ok(()));
        assert_eq!(check_channel(ReviewChannel::Portal, false), Ok(()));
        assert_eq!(check_channel(ReviewChannel::Slack, true), Ok(()));
        assert_eq!(
            check_channel(ReviewChannel::Slack, false),
            Err(ReviewRefusal::SlackForbidden)
        );
        assert_eq!(after_decision(Decision::Approve, 1, 1), Status::Approved);
        assert_eq!(after_decision(Decision::Approve, 1, 2), Status::Pending);
        assert_eq!(after_decision(Decision::Approve, 2, 2), Status::Approved);
        assert_eq!(after_decision(Decision::Reject, 5, 1), Status::Rejected);
        assert_eq!(
            after_decision(Decision::RequestChanges, 0, 1),
            Status::ChangesRequested
        );
        let p = WorkflowConfig {
            pending_ttl_secs: 100,
            approval_ttl_secs: 50,
            execution_window_secs: 10,
        };
        let t = Utc::now();
        assert_eq!(
            expires_at(Status::Approved, t, &p),
            Some(t + Duration::seconds(10))
        );
        assert_eq!(
            expires_at(Status::Pending, t, &p),
            Some(t + Duration::seconds(100))
        );
        assert_eq!(expires_at(Status::Rejected, t, &p), None);
        assert!(
            Status::Approved.editable()
                && !Status::Running.editable()
                && !Status::Succeeded.editable()
        );
    }

    #[test]
    fn hash_covers_everything_that_decides_what_runs() {
        let l = LimitsConfig {
            wall_ms: 30_000,
            db_call_ms: 10_000,
            memory_mb: 128,
            max_calls: 1000,
            max_log_bytes: 1 << 20,
            max_rows: 10,
            max_result_bytes: 1024,
        };
        let i = InstanceId::new();
        let base = revision_hash(Kind::Query, Mode::Read, "SELECT 1", i, "main", &l);
        assert_eq!(
            base,
            revision_hash(Kind::Query, Mode::Read, "SELECT 1", i, "main", &l)
        );
        for other in [
            revision_hash(Kind::Script, Mode::Read, "SELECT 1", i, "main", &l),
            revision_hash(Kind::Query, Mode::Write, "SELECT 1", i, "main", &l),
            revision_hash(Kind::Query, Mode::Read, "SELECT 2", i, "main", &l),
            revision_hash(
                Kind::Query,
                Mode::Read,
                "SELECT 1",
                InstanceId::new(),
                "main",
                &l,
            ),
            revision_hash(Kind::Query, Mode::Read, "SELECT 1", i, "other", &l),
            revision_hash(
                Kind::Query,
                Mode::Read,
                "SELECT 1",
                i,
                "main",
                &LimitsConfig { max_rows: 11, ..l },
            ),
        ] {
            assert_ne!(base, other);
        }
    }
}
