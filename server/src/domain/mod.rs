//! Business rules as pure code: no axum, no sqlx, time passed in. Handlers ask these functions
//! "may this actor do this to this resource" and the store persists the answer.

pub mod audit;
pub mod execution;
pub mod ids;
pub mod instance;
pub mod lockout;
pub mod org;
pub mod password;
pub mod slack;
pub mod sql;
pub mod text;
pub mod workflow;

pub use ids::{ExecutionId, InstanceId, PodId, RequestId, SessionId, UserId};
pub use org::{Actor, Permission, Role};
