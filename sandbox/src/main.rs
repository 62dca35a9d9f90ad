//! `quorum-sandbox`: one script, one process.
//!
//! - `quorum-sandbox precompile --cache-dir DIR` compiles the embedded QuickJS guest once per
//!   wasmtime version, engine configuration and guest hash, and prints the path of the result.
//! - `quorum-sandbox run --module FILE` is the child the executor starts for one execution: it
//!   loads the precompiled guest, restricts itself (no new privileges, seccomp, Landlock), says
//!   `Ready`, reads one `Job` from stdin, runs it with every `db.*` call brokered over
//!   stdin/stdout, writes the `Outcome`, and exits.
//! - `quorum-sandbox template --module FILE` does the same start-up once and then forks a child
//!   per request on its control socket (its stdin); each child carries on as `run` would after
//!   start-up (see `template.rs`).
//!
//! The child never opens a file or a socket after start-up; it holds no credentials.

mod engine;
mod host;
mod restrict;
mod template;

#[cfg(test)]
#[path = "../build_support.rs"]
mod build_support;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};

fn usage() -> anyhow::Error {
    anyhow::anyhow!(
        "usage: quorum-sandbox precompile --cache-dir DIR\n       quorum-sandbox run --module FILE\n       quorum-sandbox template --module FILE"
    )
}

fn flag(args: &[String], name: &str) -> anyhow::Result<PathBuf> {
    match args {
        [f, value] if f == name => Ok(PathBuf::from(value)),
        _ => Err(usage()),
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        return Err(usage());
    };
    match command.as_str() {
        "precompile" => {
            let dir = flag(rest, "--cache-dir")?;
            let path = engine::precompile(&dir).context("precompiling the guest")?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", path.display())?;
            Ok(())
        }
        "run" => {
            let module = flag(rest, "--module")?;
            host::run_child(&module)
        }
        "template" => {
            let module = flag(rest, "--module")?;
            host::run_template(&module)
        }
        "--version" => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "quorum-sandbox {}", env!("CARGO_PKG_VERSION"))?;
            Ok(())
        }
        other => bail!("unknown command {other:?}\n{}", usage()),
    }
}
