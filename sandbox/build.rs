//! Builds the QuickJS guest (`sandbox/guest`, a workspace of its own) for `wasm32-wasip1` and
//! hands its path to the sandbox binary, which embeds it.
//!
//! The guest needs a C toolchain for WebAssembly (Debian: `clang llvm lld wasi-libc
//! libclang-rt-14-dev-wasm32`, which `cargo xtask` installs) and the `wasm32-wasip1` Rust target.

use std::env;
use std::path::PathBuf;
use std::process::Command;

#[path = "build_support.rs"]
mod build_support;
use build_support::guest_target_dir;

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let guest = manifest_dir.join("guest");
    // Relative to this package, so a second checkout sharing the target directory is not
    // mistaken for this one.
    for path in ["Cargo.toml", "Cargo.lock", "src", "vendor"] {
        println!("cargo:rerun-if-changed=guest/{path}");
    }
    println!("cargo:rerun-if-env-changed=QUORUM_GUEST_WASM");

    // An already-built module (for packaging) skips the nested build.
    if let Some(prebuilt) = env::var_os("QUORUM_GUEST_WASM") {
        println!(
            "cargo:rustc-env=QUORUM_GUEST_WASM={}",
            PathBuf::from(prebuilt).display()
        );
        return;
    }

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = guest_target_dir(&out_dir, &manifest_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--locked",
        "--target",
        "wasm32-wasip1",
        "--manifest-path",
    ])
    .arg(guest.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(&target_dir)
    .env("RQUICKJS_SYS_NO_WASI_SDK", "1")
    .env("CC_wasm32_wasip1", "clang")
    .env("AR_wasm32_wasip1", "llvm-ar")
    .env(
        "CFLAGS_wasm32_wasip1",
        "-nostdlibinc -isystem /usr/include/wasm32-wasi",
    )
    // The outer build's flags are for the host, not for the guest.
    .env_remove("CARGO_ENCODED_RUSTFLAGS")
    .env_remove("RUSTFLAGS")
    .env_remove("CARGO_TARGET_DIR")
    .env_remove("CARGO_BUILD_TARGET")
    .env_remove("RUSTC_WORKSPACE_WRAPPER");
    let status = cmd.status().expect("run cargo to build the guest");
    if !status.success() {
        panic!(
            "building the sandbox guest (sandbox/guest) for wasm32-wasip1 failed. It needs \
             `rustup target add wasm32-wasip1` and Debian's `clang llvm lld wasi-libc \
             libclang-rt-14-dev-wasm32`; `cargo xtask test` and `cargo xtask run` install them."
        );
    }
    let wasm = target_dir.join("wasm32-wasip1/release/quorum-guest.wasm");
    println!("cargo:rustc-env=QUORUM_GUEST_WASM={}", wasm.display());
}
