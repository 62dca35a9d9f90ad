//! Password policy (NIST 800-63B style: length, not composition rules) and generated passwords.

use rand::Rng;

/// Longest password accepted, in bytes; Argon2 cost does not depend on it, but bodies stay sane.
pub const MAX_PASSWORD_BYTES: usize = 256;

const COMMON: &[&str] = &[
    "password", "123456", "qwerty", "letmein", "welcome", "admin", "iloveyou", "monkey",
    "football", "dragon", "passw0rd", "changeme", "abc123", "111111", "quorum",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordProblem {
    TooShort { min: usize },
    TooLong { max: usize },
    ContainsEmail,
    TooCommon,
    SameAsCurrent,
}

impl PasswordProblem {
    pub fn message(&self) -> String {
        match self {
            Self::TooShort { min } => {
                format!("the password must be at least {min} characters long")
            }
            Self::TooLong { max } => format!("the password must be at most {max} bytes long"),
            Self::ContainsEmail => "the password must not contain your email address".into(),
            Self::TooCommon => {
                "the password is too common; choose a longer, less predictable one".into()
            }
            Self::SameAsCurrent => "the new password must differ from the current one".into(),
        }
    }
}

pub fn check_new_password(
    password: &str,
    email: &str,
    min_len: usize,
) -> Result<(), PasswordProblem> {
    if password.chars().count() < min_len {
        return Err(PasswordProblem::TooShort { min: min_len });
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordProblem::TooLong {
            max: MAX_PASSWORD_BYTES,
        });
    }
    let lower = password.to_lowercase();
    let local = email.split('@').next().unwrap_or_default();
    if lower.contains(&email.to_lowercase()) || (local.len() >= 4 && lower.contains(local)) {
        return Err(PasswordProblem::ContainsEmail);
    }
    let stripped: String = lower.chars().filter(|c| c.is_alphanumeric()).collect();
    let distinct = {
        let mut chars: Vec<char> = lower.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        chars.len()
    };
    let repeated_common = COMMON.iter().any(|c| {
        !stripped.is_empty()
            && stripped
                .replace(c, "")
                .chars()
                .all(|ch| ch.is_ascii_digit())
    });
    if distinct < 4 || repeated_common {
        return Err(PasswordProblem::TooCommon);
    }
    Ok(())
}

/// A random password for a new account or a reset, given to the admin once.
pub fn generate() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    let chunk = |rng: &mut rand::rngs::ThreadRng| -> String {
        (0..5)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect()
    };
    format!(
        "{}-{}-{}-{}",
        chunk(&mut rng),
        chunk(&mut rng),
        chunk(&mut rng),
        chunk(&mut rng)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        let email = "dana.dev@example.com";
        assert_eq!(
            check_new_password("short", email, 12),
            Err(PasswordProblem::TooShort { min: 12 })
        );
        assert_eq!(
            check_new_password("dana.dev@example.com!!", email, 12),
            Err(PasswordProblem::ContainsEmail)
        );
        assert_eq!(
            check_new_password("xx-dana.dev-xx", email, 12),
            Err(PasswordProblem::ContainsEmail)
        );
        assert_eq!(
            check_new_password("password123456", email, 12),
            Err(PasswordProblem::TooCommon)
        );
        assert_eq!(
            check_new_password("aaaaaaaaaaaaaaa", email, 12),
            Err(PasswordProblem::TooCommon)
        );
        assert!(check_new_password(&"x".repeat(300), email, 12).is_err());
        assert_eq!(
            check_new_password("correct horse battery", email, 12),
            Ok(())
        );
        // Length counts characters, not bytes.
        assert_eq!(check_new_password("ключ-от-сейфа", email, 12), Ok(()));
    }

    #[test]
    fn generated_passwords_pass_the_policy_and_differ() {
        let a = generate();
        assert_eq!(a.len(), 23);
        assert_eq!(check_new_password(&a, "x@example.com", 12), Ok(()));
        assert_ne!(a, generate());
    }
}
