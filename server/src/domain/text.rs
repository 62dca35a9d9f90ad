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

/// Where a character sits in multi-line text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextPosition {
    pub ch: char,
    pub line: usize,
    pub column: usize,
}

impl TextPosition {
    pub fn describe(&self) -> String {
        let name = match self.ch {
            '\0' => "NUL",
            '\u{202A}' => "LEFT-TO-RIGHT EMBEDDING",
            '\u{202B}' => "RIGHT-TO-LEFT EMBEDDING",
            '\u{202C}' => "POP DIRECTIONAL FORMATTING",
            '\u{202D}' => "LEFT-TO-RIGHT OVERRIDE",
            '\u{202E}' => "RIGHT-TO-LEFT OVERRIDE",
            '\u{2066}' => "LEFT-TO-RIGHT ISOLATE",
            '\u{2067}' => "RIGHT-TO-LEFT ISOLATE",
            '\u{2068}' => "FIRST STRONG ISOLATE",
            '\u{2069}' => "POP DIRECTIONAL ISOLATE",
            '\u{200B}' => "ZERO WIDTH SPACE",
            '\u{200C}' => "ZERO WIDTH NON-JOINER",
            '\u{200D}' => "ZERO WIDTH JOINER",
            '\u{FEFF}' => "ZERO WIDTH NO-BREAK SPACE",
            _ => "invisible or control character",
        };
        format!(
            "U+{:04X} {name} at line {}, column {}",
            self.ch as u32, self.line, self.column
        )
    }
}

/// The first character in code or prose that could hide what the text does (Trojan Source):
/// bidi controls, zero-width characters, and control characters other than tab and newlines.
pub fn find_hidden_in_text(s: &str) -> Option<TextPosition> {
    let (mut line, mut column) = (1, 0);
    for ch in s.chars() {
        if ch == '\n' {
            line += 1;
            column = 0;
            continue;
        }
        column += 1;
        let allowed_control = ch == '\t' || ch == '\r';
        if (ch.is_control() && !allowed_control) || is_invisible_or_bidi(ch) {
            return Some(TextPosition { ch, line, column });
        }
    }
    None
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
    fn hidden_characters_in_code_are_located() {
        assert_eq!(find_hidden_in_text("SELECT 1;\n\tSELECT 2;\r\n"), None);
        let p = find_hidden_in_text("SELECT 1;\nSELECT '\u{202E}x';").expect("bidi");
        assert_eq!((p.line, p.column), (2, 9));
        assert_eq!(
            p.describe(),
            "U+202E RIGHT-TO-LEFT OVERRIDE at line 2, column 9"
        );
        assert!(find_hidden_in_text("a\u{200B}b").is_some());
        assert!(
            find_hidden_in_text("nul\0")
                .expect("nul")
                .describe()
                .contains("NUL")
        );
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
