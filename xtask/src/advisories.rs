//! Security advisories (security matrix S15): `cargo deny check advisories`, offline, against a
//! copy of RustSec's database staged where cargo-deny looks for it, and the rules for the ignore
//! list in `deny.toml` (each entry has a reason and an expiry date).
//!
//! RustSec publishes its database on GitHub only. When `QUORUM_ADVISORY_DB` names a git checkout
//! of it (`git clone https://github.com/RustSec/advisory-db` wherever GitHub is reachable), every
//! dependency is checked against it and any advisory not ignored fails the run. Without one, the
//! run says so. Either way a synthetic advisory against a crate the portal uses shows that the
//! check, as configured, fails the run.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Result, cargo, root, status, target_dir};

/// The directory cargo-deny opens for `https://github.com/RustSec/advisory-db` (its default
/// database) under the configured `db-path`.
const RUSTSEC_DIR: &str = "advisory-db-3157b0e258782691";

/// The manifests whose dependency graphs are checked.
pub const MANIFESTS: [&str; 3] = [
    "Cargo.toml",
    "sandbox/guest/Cargo.toml",
    "sandbox/protocol/fuzz/Cargo.toml",
];

/// The synthetic advisory of the self-check: every `serde` release is affected.
const SYNTHETIC_ID: &str = "RUSTSEC-2099-0001";

pub fn check() -> Result<()> {
    let text = fs::read_to_string(root().join("deny.toml"))
        .map_err(|e| format!("cannot read deny.toml: {e}"))?;
    let ignores = ignore_entries(&text)?;
    let today = today();
    for entry in &ignores {
        if entry.until < today {
            return Err(format!(
                "deny.toml ignores {} until {}, which has passed: upgrade the crate or review the advisory and set a new date",
                entry.id,
                format_date(entry.until)
            ));
        }
    }
    eprintln!(
        "    advisory ignores: {} in deny.toml, each with a reason and a date not yet passed",
        ignores.len()
    );

    self_check(&text)?;

    let Some(db) = env::var_os("QUORUM_ADVISORY_DB").map(PathBuf::from) else {
        eprintln!(
            "    advisories: NOT checked against RustSec's database: QUORUM_ADVISORY_DB is not set; set it to a git \
             checkout of https://github.com/RustSec/advisory-db (published on GitHub only) to check them"
        );
        return Ok(());
    };
    let dbs = target_dir().join("advisory-dbs");
    stage_checkout(&db, &dbs.join(RUSTSEC_DIR))?;
    let config = config_with_db_path(&text, &dbs)?;
    for manifest in MANIFESTS {
        status(
            deny_advisories(&config, manifest),
            &format!("cargo deny check advisories ({manifest})"),
        )?;
    }
    Ok(())
}

/// A database holding one advisory against `serde`, in RustSec's layout: the check must fail.
fn self_check(text: &str) -> Result<()> {
    let dbs = target_dir().join("advisory-selftest");
    let db = dbs.join(RUSTSEC_DIR);
    if dbs.exists() {
        fs::remove_dir_all(&dbs).map_err(|e| format!("cannot clear {}: {e}", dbs.display()))?;
    }
    let dir = db.join("crates").join("serde");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let advisory = format!(
        "```toml\n[advisory]\nid = \"{SYNTHETIC_ID}\"\npackage = \"serde\"\ndate = \"2099-01-01\"\n\
         url = \"https://example.invalid/{SYNTHETIC_ID}\"\ncategories = [\"memory-corruption\"]\n\n\
         [versions]\npatched = [\">= 999.0.0\"]\n```\n\n\
         # A synthetic advisory\n\nWritten by `cargo xtask test` to show the advisory check fails the run.\n"
    );
    fs::write(dir.join(format!("{SYNTHETIC_ID}.md")), advisory)
        .map_err(|e| format!("cannot write the synthetic advisory: {e}"))?;
    git(&db, &["init", "--quiet"])?;
    git(&db, &["add", "--all"])?;
    git(
        &db,
        &[
            "-c",
            "user.name=xtask",
            "-c",
            "user.email=xtask@localhost",
            "commit",
            "--quiet",
            "--message",
            "synthetic advisory",
        ],
    )?;
    let config = config_with_db_path(text, &dbs)?;
    let out = deny_advisories(&config, "Cargo.toml")
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cargo deny: cannot start: {e}"))?;
    let said = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || !said.contains(SYNTHETIC_ID) {
        return Err(format!(
            "the advisory check did not fail on a synthetic advisory against serde ({}):\n{said}",
            out.status
        ));
    }
    eprintln!("    advisories: a synthetic advisory against serde fails the check, as it must");
    Ok(())
}

fn deny_advisories(config: &Path, manifest: &str) -> Command {
    let mut deny = cargo();
    deny.arg("deny")
        .arg("--offline")
        .arg("--config")
        .arg(config)
        .args(["--manifest-path", manifest, "check", "advisories"]);
    deny
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(dir).args(args);
    quietly(cmd, &format!("git {} in {}", args.join(" "), dir.display()))
}

/// Runs `cmd`, saying nothing unless it fails.
fn quietly(mut cmd: Command, what: &str) -> Result<()> {
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{what} failed ({s})")),
        Err(e) => Err(format!("{what}: cannot start: {e}")),
    }
}

/// Copies the checkout at `from` (with its history, so its age is its own) to `to`.
fn stage_checkout(from: &Path, to: &Path) -> Result<()> {
    if !from.join(".git").exists() || !from.join("crates").is_dir() {
        return Err(format!(
            "QUORUM_ADVISORY_DB={} is not a git checkout of RustSec's advisory-db (no .git or crates/)",
            from.display()
        ));
    }
    if to.exists() {
        fs::remove_dir_all(to).map_err(|e| format!("cannot clear {}: {e}", to.display()))?;
    }
    let mut clone = Command::new("git");
    clone
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(from)
        .arg(to);
    quietly(clone, &format!("copying {}", from.display()))
}

/// `deny.toml` with `db-path` set, written beside the databases.
fn config_with_db_path(text: &str, dbs: &Path) -> Result<PathBuf> {
    let dbs_text = dbs
        .to_str()
        .filter(|s| !s.contains(['"', '\\', '$', '~']))
        .ok_or_else(|| format!("{} cannot be written in deny.toml", dbs.display()))?;
    let with = text.replacen(
        "\n[advisories]\n",
        &format!("\n[advisories]\ndb-path = \"{dbs_text}\"\n"),
        1,
    );
    if with == text {
        return Err("deny.toml has no [advisories] section".into());
    }
    fs::create_dir_all(dbs).map_err(|e| format!("cannot create {}: {e}", dbs.display()))?;
    let path = dbs.join("deny.toml");
    fs::write(&path, with).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// An advisory `deny.toml` lets pass, and until when.
#[derive(Debug, PartialEq, Eq)]
struct Ignore {
    id: String,
    until: (i64, u32, u32),
}

/// The `ignore` list of `[advisories]`: one entry per line, each
/// `{ id = "RUSTSEC-YYYY-NNNN", reason = "until YYYY-MM-DD: why it may pass" }`.
fn ignore_entries(text: &str) -> Result<Vec<Ignore>> {
    let form = r#"one per line as { id = "RUSTSEC-YYYY-NNNN", reason = "until YYYY-MM-DD: why it may pass" }"#;
    let mut section = "";
    let mut in_list = false;
    let mut found = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split_once('#').map_or(raw, |(code, _)| code).trim();
        if line.is_empty() {
            continue;
        }
        if in_list {
            if line.starts_with(']') {
                in_list = false;
                continue;
            }
            let entry = parse_ignore(line).ok_or_else(|| {
                format!(
                    "deny.toml line {}: advisory ignores are {form}, not {line}",
                    n + 1
                )
            })?;
            found.push(entry);
        } else if line.starts_with('[') {
            section = line;
        } else if section == "[advisories]" && line.starts_with("ignore") {
            let rest = line.trim_start_matches("ignore").trim_start();
            match rest {
                "= [" => in_list = true,
                "= []" => {}
                _ => {
                    return Err(format!(
                        "deny.toml line {}: write the advisory ignores as a list, {form}",
                        n + 1
                    ));
                }
            }
        }
    }
    if in_list {
        return Err("deny.toml: the advisory ignore list is not closed".into());
    }
    Ok(found)
}

fn parse_ignore(line: &str) -> Option<Ignore> {
    let body = line
        .strip_suffix(',')
        .unwrap_or(line)
        .trim()
        .strip_prefix('{')?
        .strip_suffix('}')?;
    let (id_part, reason_part) = body.split_once(',')?;
    let id = quoted_value(id_part, "id")?;
    let reason = quoted_value(reason_part, "reason")?;
    // RUSTSEC-YYYY-NNNN
    let valid_id = id.len() == 17
        && id.starts_with("RUSTSEC-")
        && id.bytes().enumerate().skip(8).all(|(i, b)| {
            if i == 12 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let (date, why) = reason.strip_prefix("until ")?.split_once(':')?;
    if !valid_id || why.trim().is_empty() {
        return None;
    }
    Some(Ignore {
        id: id.to_owned(),
        until: parse_date(date)?,
    })
}

/// `key = "value"` (no quotes or escapes inside the value).
fn quoted_value<'a>(part: &'a str, key: &str) -> Option<&'a str> {
    let value = part
        .trim()
        .strip_prefix(key)?
        .trim_start()
        .strip_prefix('=')?;
    let inner = value.trim().strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains(['"', '\\'])).then_some(inner)
}

fn parse_date(s: &str) -> Option<(i64, u32, u32)> {
    let mut parts = s.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let date = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    (date.1 >= 1 && date.1 <= 12 && date.2 >= 1 && date.2 <= days_in_month(date.0, date.1))
        .then_some(date)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn format_date((y, m, d): (i64, u32, u32)) -> String {
    format!("{y:04}-{m:02}-{d:02}")
}

/// Today's date in UTC.
fn today() -> (i64, u32, u32) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil_from_days(i64::try_from(secs / 86_400).unwrap_or(i64::MAX))
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // Both are in range by construction (1..=12 and 1..=31).
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_come_from_days_since_the_epoch() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn ignores_need_an_id_a_date_and_a_reason() {
        let text = "[advisories]\nignore = [\n    # a comment\n    { id = \"RUSTSEC-2024-0012\", reason = \"until 2027-01-31: not reachable: we never call it\" },\n]\n\n[bans]\nignore = [\"whatever\"]\n";
        assert_eq!(
            ignore_entries(text),
            Ok(vec![Ignore {
                id: "RUSTSEC-2024-0012".into(),
                until: (2027, 1, 31)
            }])
        );
        assert_eq!(ignore_entries("[advisories]\nignore = []\n"), Ok(vec![]));
        for bad in [
            "{ id = \"RUSTSEC-2024-0012\" },",
            "\"RUSTSEC-2024-0012\",",
            "{ id = \"RUSTSEC-2024-0012\", reason = \"not reachable\" },",
            "{ id = \"RUSTSEC-2024-0012\", reason = \"until 2027-02-30: not reachable\" },",
            "{ id = \"RUSTSEC-2024-0012\", reason = \"until 2027-01-31:  \" },",
            "{ id = \"RUSTSEC-24-12\", reason = \"until 2027-01-31: not reachable\" },",
        ] {
            let text = format!("[advisories]\nignore = [\n{bad}\n]\n");
            assert!(ignore_entries(&text).is_err(), "{bad} was accepted");
        }
        assert!(ignore_entries("[advisories]\nignore = [\n").is_err());
        assert!(ignore_entries("[advisories]\nignore = [\"RUSTSEC-2024-0012\"]\n").is_err());
    }

    #[test]
    fn the_database_path_goes_into_the_advisories_section() {
        let dir = target_dir().join("advisory-config-test");
        let path =
            config_with_db_path("[graph]\n\n[advisories]\nignore = []\n", &dir).expect("written");
        let written = fs::read_to_string(path).expect("readable");
        assert_eq!(
            written,
            format!(
                "[graph]\n\n[advisories]\ndb-path = \"{}\"\nignore = []\n",
                dir.display()
            )
        );
        assert!(config_with_db_path("[graph]\n", &dir).is_err());
    }
}
