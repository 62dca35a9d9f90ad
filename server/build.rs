//! Tells `http::frontend` where the built browser UI lives, as a path without `..`.
//!
//! rust-embed compares the files it serves against its folder path; when the folder did not
//! exist at compile time that path stays as written, and a `server/../frontend/dist` prefix would
//! then match nothing, so a debug build made before `npm run build` would never find the UI.
//! Release builds embed the files, so they are rebuilt whenever `frontend/dist` changes.
//!
//! Checkouts that share a target directory share this script's last run too (cargo fingerprints
//! workspace members by relative paths), so a debug build in one checkout would serve the UI
//! another checkout built. `cargo xtask` therefore names the folder in `QUORUM_UI_DIST`, and a
//! different value runs this script again.

use std::env;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest.parent().unwrap_or(&manifest);
    println!("cargo:rerun-if-env-changed=QUORUM_UI_DIST");
    let dist = env::var_os("QUORUM_UI_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("frontend").join("dist"));
    println!("cargo:rustc-env=QUORUM_FRONTEND_DIST={}", dist.display());
    println!("cargo:rerun-if-changed=build.rs");
    if env::var("PROFILE").as_deref() == Ok("release") {
        println!("cargo:rerun-if-changed={}", dist.display());
    }
}
