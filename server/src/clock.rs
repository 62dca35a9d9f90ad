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

/// The system clock shifted by an adjustable offset: lets tests of a running server move time
/// forward (expiry rules) without waiting.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: std::sync::atomic::AtomicI64,
}

impl OffsetClock {
    pub fn advance(&self, by: chrono::Duration) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        let offset = chrono::Duration::milliseconds(
            self.offset_ms.load(std::sync::atomic::Ordering::SeqCst),
        );
        (Utc::now() + offset).trunc_subsecs(6)
    }
}
