//! The `quorum` subcommands other than `serve`: `migrate`, `check-config`, `user create`,
//! `audit verify`. Each returns what it has to say so the binary decides how to print it.

use secrecy::SecretString;
use serde_json::json;

use crate::auth::PasswordHasher;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::domain::Role;
use crate::domain::audit::{ChainFields, ChainVerifier, NewAuditEvent};
use crate::domain::password::check_new_password;
use crate::domain::text::{find_forbidden_in_line, normalize_email, valid_pod_name};
use crate::store::{NewUser, SharedStore};

pub async fn migrate(config: &Config, clock: SharedClock) -> anyhow::Result<String> {
    crate::open_store(config, clock).await?;
    Ok(format!(
        "migrations applied to {}",
        redact_url(&config.database_url())
    ))
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[derive(Debug)]
pub struct CreateUser {
    pub email: String,
    pub name: String,
    pub role: Role,
    pub pod: Option<String>,
    pub password: SecretString,
}

/// Creates a user (and their POD if it does not exist yet). Users created here are trusted
/// operators and need not change their password. A manager given `--pod` also manages it.
pub async fn create_user(
    config: &Config,
    store: &SharedStore,
    req: CreateUser,
) -> anyhow::Result<String> {
    use secrecy::ExposeSecret;
    let email = normalize_email(&req.email)
        .ok_or_else(|| anyhow::anyhow!("{:?} is not a valid ASCII email address", req.email))?;
    let name = req.name.trim().to_owned();
    anyhow::ensure!(
        !name.is_empty() && name.chars().count() <= 200,
        "--name must be 1 to 200 characters"
    );
    if let Some(bad) = find_forbidden_in_line(&name) {
        anyhow::bail!(
            "--name contains a control or invisible character ({})",
            bad.describe()
        );
    }
    check_new_password(
        req.password.expose_secret(),
        &email,
        config.auth.password_min_length,
    )
    .map_err(|p| anyhow::anyhow!("{}", p.message()))?;
    let source = json!({ "source": "cli" });
    let pod = match &req.pod {
        None => None,
        Some(name) => {
            anyhow::ensure!(
                valid_pod_name(name),
                "POD name {name:?} is not valid (ASCII letters, digits, space, - _ .)"
            );
            match store.find_pod_by_name(name).await? {
                Some(p) => Some(p),
                None => Some(
                    store
                        .create_pod(
                            name,
                            None,
                            NewAuditEvent::new("pod.created").details(source.clone()),
                        )
                        .await?,
                ),
            }
        }
    };
    let hasher = PasswordHasher::new(1)?;
    let new = NewUser {
        email,
        name,
        role: req.role,
        home_pod_id: pod.as_ref().map(|p| p.id),
        password_hash: hasher.hash(req.password).await?,
        must_change_password: false,
    };
    let event = NewAuditEvent::new("user.created")
        .details(json!({ "source": "cli", "role": req.role.as_str() }));
    let user = store.create_user(&new, event).await.map_err(|e| match e {
        crate::store::StoreError::Conflict(m) => anyhow::anyhow!("{m}"),
        other => other.into(),
    })?;
    if let (Some(pod), Role::Manager) = (&pod, req.role) {
        store
            .add_pod_manager(
                pod.id,
                user.id,
                NewAuditEvent::new("pod.managers_set").details(source),
            )
            .await?;
    }
    let pod_note = pod
        .map(|p| format!(" in POD {}", p.name))
        .unwrap_or_default();
    Ok(format!(
        "created {} {} ({}){pod_note}",
        user.role.as_str(),
        user.email,
        user.id
    ))
}

/// Re-encrypts every instance secret under a new master key, in one transaction.
///
/// With a generated key (`secrets.master_key` empty) the new key replaces `<data_dir>/master.key`;
/// it is first written beside it as `master.key.new`, so a crash after the store commits never
/// loses it. With a configured key the new one must come from `new_key_file`, and the operator
/// then sets it on every replica.
pub async fn rotate_keys(
    config: &Config,
    store: &SharedStore,
    new_key_file: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    use crate::secrets::SecretBox;
    let current = crate::secret_box(config)?;
    let generated = config.secrets.master_key.is_empty();
    let new_key = match new_key_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?,
        None if generated => SecretBox::generate_key(),
        None => {
            anyhow::bail!("secrets.master_key is configured: pass the new key with --new-key-file")
        }
    };
    let next = SecretBox::from_base64(&new_key).map_err(|e| anyhow::anyhow!("new key: {e}"))?;
    anyhow::ensure!(
        next.key_id() != current.key_id(),
        "the new key is the current key"
    );
    let mut resealed = Vec::new();
    for instance in store.list_instances(None, i64::MAX, 0).await?.items {
        if let Some(sealed) = &instance.secret {
            let secret = current.open(instance.id.0, sealed).map_err(|e| {
                anyhow::anyhow!(
                    "instance {} ({}): {e}; fix or clear its secret first",
                    instance.name,
                    instance.id
                )
            })?;
            resealed.push((instance.id, next.seal(instance.id.0, &secret)));
        }
    }
    let staged = config
        .data_dir
        .join(format!("{}.new", crate::MASTER_KEY_FILE));
    if generated {
        std::fs::write(&staged, &new_key)?;
    }
    let event = NewAuditEvent::new("keys.rotated").details(json!({
        "secrets": resealed.len(), "old_key_id": current.key_id(), "new_key_id": next.key_id()
    }));
    store.reseal_secrets(&resealed, event).await?;
    if generated {
        std::fs::rename(&staged, config.data_dir.join(crate::MASTER_KEY_FILE))?;
        Ok(format!(
            "re-encrypted {} secret(s) under key {}; {} replaced",
            resealed.len(),
            next.key_id(),
            crate::MASTER_KEY_FILE
        ))
    } else {
        Ok(format!(
            "re-encrypted {} secret(s) under key {}; now set secrets.master_key to the new key on every replica",
            resealed.len(),
            next.key_id()
        ))
    }
}

/// Outcome of `quorum audit verify`.
#[derive(Debug, PartialEq, Eq)]
pub enum AuditVerdict {
    Intact {
        events: i64,
    },
    Broken {
        seq: i64,
        id: uuid::Uuid,
        reason: &'static str,
        verified: i64,
    },
}

pub async fn verify_audit(store: &SharedStore) -> anyhow::Result<AuditVerdict> {
    let mut verifier = ChainVerifier::default();
    let mut after = 0;
    loop {
        let chunk = store.audit_after(after, 1000).await?;
        if chunk.is_empty() {
            return Ok(AuditVerdict::Intact {
                events: verifier.verified(),
            });
        }
        for e in &chunk {
            let fields = ChainFields {
                id: e.id,
                at: e.at,
                actor_id: e.actor_id,
                action: &e.action,
                target_type: e.target_type.as_deref(),
                target_id: e.target_id.as_deref(),
                ip: e.ip.as_deref(),
                user_agent: e.user_agent.as_deref(),
                details: &e.details_raw,
            };
            if let Err(b) = verifier.check(e.seq, &e.prev_hash, &e.hash, &fields) {
                return Ok(AuditVerdict::Broken {
                    seq: b.seq,
                    id: b.id,
                    reason: b.reason,
                    verified: verifier.verified(),
                });
            }
            after = e.seq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://q:s3cret@db:5432/quorum"),
            "postgres://q:***@db:5432/quorum"
        );
        assert_eq!(
            redact_url("sqlite://data/quorum.db"),
            "sqlite://data/quorum.db"
        );
        assert_eq!(
            redact_url("postgres://q@db/quorum"),
            "postgres://q@db/quorum"
        );
    }
}
