//! Checks on user-supplied text: control and invisible characters, email and name normalisation.

use unicode_normalization::UnicodeNormalization;

/// A character that must not appear in names and other single-line text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForbiddenChar {
    pub ch: char,
    /// 1-based character position.
    pub position: usize,
}

impl ForbiddenChar {
    pub fn describe(&self) -> String {
        format!("U+{:04X} at character {}", self.ch as u32, self.position)
    }
}

/// Bidirectional controls and zero-width characters (Trojan Source, CVE-2021-42574).
pub fn is_invisible_or_bidi(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{061C}' | '\u{180E}')
}

/// Finds the first control, bidi or invisible character in single-line text.
pub fn find_forbidden_in_line(s: &str) -> Option<ForbiddenChar> {
    s.chars()
        .enumerate()
        .find(|(_, c)| c.is_control() || is_invisible_or_bidi(*c))
        .map(|(i, ch)| ForbiddenChar {
            ch,
            position: i + 1,
        })
}

/// Canonical form of an email for storage and lookup: trimmed, NFKC, lowercase. Only ASCII
/// addresses are accepted, which rules out homoglyph look-alikes (`аdmin` with a Cyrillic а).
pub fn normalize_email(raw: &str) -> Option<String> {
    let e: String = raw.trim().nfkc().collect::<String>().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    let ok_local = !local.is_empty()
        && local.len() <= 64
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._%+-'".contains(c))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let ok_domain = domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    (ok_local && ok_domain).then_some(e)
}

/// POD names: short ASCII identifiers people type in Slack and the CLI.
pub fn valid_pod_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || " _.-".contains(c))
}

/// Uniqueness key for POD names: case-insensitive, spaces and separators folded.
pub fn pod_name_key(name: &str) -> String {
    name.to_ascii_lowercase().replace([' ', '_', '.'], "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            normalize_email("  Dana.Dev@Example.COM "),
            Some("dana.dev@example.com".into())
        );
        assert_eq!(
            normalize_email("ａdmin@example.com"),
            Some("admin@example.com".into())
        );
        assert_eq!(normalize_email("\u{0430}dmin@example.com"), None);
        for bad in [
            "",
            "no-at",
            "@example.com",
            "a@b",
            "a@-b.com",
            "a..b@example.com",
            "a b@example.com",
        ] {
            assert_eq!(normalize_email(bad), None, "{bad}");
        }
    }

    #[test]
    fn forbidden_characters() {
        assert_eq!(find_forbidden_in_line("plain name"), None);
        let f = find_forbidden_in_line("ab\u{202E}c").expect("bidi");
        assert_eq!(f.describe(), "U+202E at character 3");
        assert!(find_forbidden_in_line("line\nbreak").is_some());
        assert!(find_forbidden_in_line("nul\0").is_some());
        assert!(find_forbidden_in_line("zero\u{200B}width").is_some());
    }

    #[test]
    fn pod_names() {
        assert!(valid_pod_name("payments"));
        assert!(valid_pod_name("Data Platform-2"));
        assert!(!valid_pod_name("-lead"));
        assert!(!valid_pod_name("pаyments"));
        assert!(!valid_pod_name(""));
        assert_eq!(pod_name_key("Data Platform"), pod_name_key("data-platform"));
    }
}
