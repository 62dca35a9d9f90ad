//! Prometheus metrics in the text exposition format, kept in-process (one registry per app, so
//! several test servers in one process do not share counters).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

#[derive(Debug, Default)]
pub struct Metrics {
    /// (method, route, status) → latency series.
    http: Mutex<BTreeMap<(String, String, u16), Series>>,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// Slack delivery attempts by outcome (`sent`, `retried`, `dead`, `skipped`).
    slack_deliveries: Mutex<BTreeMap<&'static str, u64>>,
    /// Deliveries waiting in the outbox, as of the Slack worker's last look.
    slack_pending: std::sync::atomic::AtomicI64,
    slack_breaker_open: std::sync::atomic::AtomicBool,
}

/// Appends one gauge, with its help and type lines, in the text exposition format.
pub fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {value}");
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut map = self.http.lock().unwrap_or_else(|p| p.into_inner());
        let s = map
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default();
        s.count += 1;
        s.sum += secs;
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                s.buckets[i] += 1;
            }
        }
    }

    pub fn auth_failure(&self, reason: &'static str) {
        *self
            .auth_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    pub fn slack_delivery(&self, outcome: &'static str) {
        *self
            .slack_deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(outcome)
            .or_default() += 1;
    }

    pub fn slack_outbox(&self, pending: i64, breaker_open: bool) {
        use std::sync::atomic::Ordering;
        self.slack_pending.store(pending, Ordering::Relaxed);
        self.slack_breaker_open
            .store(breaker_open, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let http = self.http.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str(
            "# HELP quorum_http_requests_total HTTP requests by method, route and status.\n",
        );
        out.push_str("# TYPE quorum_http_requests_total counter\n");
        for ((m, r, st), s) in http.iter() {
            let _ = writeln!(
                out,
                "quorum_http_requests_total{{method=\"{m}\",route=\"{}\",status=\"{st}\"}} {}",
                escape(r),
                s.count
            );
        }
        out.push_str("# HELP quorum_http_request_duration_seconds HTTP request latency.\n");
        out.push_str("# TYPE quorum_http_request_duration_seconds histogram\n");
        for ((m, r, st), s) in http.iter() {
            let labels = format!("method=\"{m}\",route=\"{}\",status=\"{st}\"", escape(r));
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "quorum_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "quorum_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "quorum_http_request_duration_seconds_sum{{{labels}}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "quorum_http_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        drop(http);
        out.push_str(
            "# HELP quorum_auth_failures_total Refused sign-ins and access tokens, by reason.\n",
        );
        out.push_str("# TYPE quorum_auth_failures_total counter\n");
        for (reason, n) in self
            .auth_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(out, "quorum_auth_failures_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str("# HELP quorum_slack_deliveries_total Slack delivery attempts, by outcome.\n");
        out.push_str("# TYPE quorum_slack_deliveries_total counter\n");
        for (outcome, n) in self
            .slack_deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "quorum_slack_deliveries_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        gauge(
            &mut out,
            "quorum_slack_outbox_pending",
            "Slack deliveries waiting to be sent.",
            self.slack_pending
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let open = self
            .slack_breaker_open
            .load(std::sync::atomic::Ordering::Relaxed);
        gauge(
            &mut out,
            "quorum_slack_breaker_open",
            "1 while Slack looks down and deliveries wait.",
            u8::from(open),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.observe_request("GET", "/api/v1/me", 200, Duration::from_millis(3));
        m.observe_request("GET", "/api/v1/me", 200, Duration::from_millis(30));
        m.auth_failure("alg");
        let text = m.render();
        assert!(
            text.contains(
                "quorum_http_requests_total{method=\"GET\",route=\"/api/v1/me\",status=\"200\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("le=\"0.05\"} 2"), "{text}");
        assert!(
            text.contains("quorum_auth_failures_total{reason=\"alg\"} 1"),
            "{text}"
        );
    }
}
