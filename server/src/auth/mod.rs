//! Authentication primitives: password hashing, access tokens (JWT), refresh tokens. The HTTP
//! flows that use them are in `http/auth.rs`; the lockout rules in `domain/lockout.rs`.

pub mod password;
pub mod refresh;
pub mod token;

pub use password::PasswordHasher;
pub use token::{AccessClaims, TokenError, TokenKeys};
