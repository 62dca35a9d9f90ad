//! Time comes from an injected clock so expiry rules are testable. Instants are truncated to
//! microseconds, the precision PostgreSQL stores, so values round-trip exactly through both stores.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}

pub type SharedClock = Arc<dyn Clock>;
