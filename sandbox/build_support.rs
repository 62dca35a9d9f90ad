//! What the build script decides, kept apart so the sandbox's unit tests can check it
//! (`build.rs` and `src/main.rs` both include this file).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

/// Where the guest is built: one directory per checkout beside the outer build's profile
/// directories (`<target>/quorum-guest/<checkout>`), so `cargo clippy`, `cargo build` and the
/// test build, each of which runs the build script with an `OUT_DIR` of its own, share one guest
/// build instead of each compiling QuickJS with LTO (40 s on 2 cores). Keyed by the checkout,
/// so two checkouts sharing a target directory never take each other's guest. `OUT_DIR` itself
/// when it is not laid out as `<target>/<profile>/build/<package>/out`.
pub fn guest_target_dir(out_dir: &Path, manifest_dir: &Path) -> PathBuf {
    let mut up = out_dir.ancestors();
    let (Some(build), Some(target)) = (up.nth(2), up.nth(1)) else {
        return out_dir.join("guest-target");
    };
    if build.file_name().is_none_or(|n| n != "build") {
        return out_dir.join("guest-target");
    }
    let mut h = DefaultHasher::new();
    manifest_dir.hash(&mut h);
    target
        .join("quorum-guest")
        .join(format!("{:016x}", h.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_of_one_checkout_share_a_guest_directory_and_checkouts_do_not() {
        let checkout = Path::new("/src/quorum/sandbox");
        let debug = guest_target_dir(
            Path::new("/t/debug/build/quorum-sandbox-0123/out"),
            checkout,
        );
        let clippy = guest_target_dir(
            Path::new("/t/debug/build/quorum-sandbox-4567/out"),
            checkout,
        );
        let release = guest_target_dir(
            Path::new("/t/release/build/quorum-sandbox-89ab/out"),
            checkout,
        );
        assert_eq!(debug, clippy);
        assert_eq!(debug, release);
        assert_eq!(debug.parent(), Some(Path::new("/t/quorum-guest")));
        let other = guest_target_dir(
            Path::new("/t/debug/build/quorum-sandbox-0123/out"),
            Path::new("/src/quorum-2/sandbox"),
        );
        assert_ne!(debug, other);
        assert_eq!(other.parent(), Some(Path::new("/t/quorum-guest")));
    }

    #[test]
    fn an_unusual_layout_builds_inside_out_dir() {
        let checkout = Path::new("/src/quorum/sandbox");
        for out in [
            "/elsewhere/out",
            "/t/debug/deps/quorum-sandbox-0123/out",
            "out",
        ] {
            assert_eq!(
                guest_target_dir(Path::new(out), checkout),
                Path::new(out).join("guest-target")
            );
        }
    }
}
