//! The signalling instance's Prometheus metrics. Labels are bounded (methods we know, status
//! classes), never users, Call-IDs or peer addresses.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::sip::Method;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabel {
    method: &'static str,
    class: &'static str,
}

/// What one instance counts.
pub struct Metrics {
    registry: Registry,
    requests: Family<MethodLabel, Counter>,
    responses: Family<ResponseLabel, Counter>,
    malformed: Counter,
    dropped: Counter,
    rate_limited: Counter,
    active_calls: Gauge<i64, AtomicI64>,
    draining: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("centrex_sip");
        let metrics = Self {
            requests: Family::default(),
            responses: Family::default(),
            malformed: Counter::default(),
            dropped: Counter::default(),
            rate_limited: Counter::default(),
            active_calls: Gauge::default(),
            draining: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "SIP requests received, by method",
            metrics.requests.clone(),
        );
        registry.register(
            "responses",
            "Answers sent to requests, by method and status class",
            metrics.responses.clone(),
        );
        registry.register(
            "malformed",
            "Messages that could not be parsed or validated",
            metrics.malformed.clone(),
        );
        registry.register(
            "overload_dropped",
            "Datagrams dropped because too many requests were in flight",
            metrics.dropped.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests dropped because their source exceeded its request rate",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "active_calls",
            "Calls this instance holds",
            metrics.active_calls.clone(),
        );
        registry.register(
            "draining",
            "1 while the instance drains",
            metrics.draining.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    pub fn request(&self, method: &Method) {
        self.requests
            .get_or_create(&MethodLabel {
                method: method_label(method),
            })
            .inc();
    }

    /// Counts the answer `response` (serialised) to a `method` request.
    pub fn response(&self, method: &Method, response: &[u8]) {
        self.responses
            .get_or_create(&ResponseLabel {
                method: method_label(method),
                class: status_class(response),
            })
            .inc();
    }

    pub fn malformed(&self) {
        self.malformed.inc();
    }

    pub fn overload_dropped(&self) {
        self.dropped.inc();
    }

    /// A request dropped because its source is over its rate.
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// The Prometheus text exposition, with the live gauges read now.
    pub fn render(&self, active_calls: usize, draining: bool) -> String {
        self.active_calls
            .set(i64::try_from(active_calls).unwrap_or(i64::MAX));
        self.draining.set(i64::from(draining));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn method_label(method: &Method) -> &'static str {
    match method {
        Method::Invite => "INVITE",
        Method::Ack => "ACK",
        Method::Bye => "BYE",
        Method::Cancel => "CANCEL",
        Method::Register => "REGISTER",
        Method::Options => "OPTIONS",
        Method::Update => "UPDATE",
        _ => "other",
    }
}

/// `1xx` … `6xx` from a serialised response's status line.
fn status_class(response: &[u8]) -> &'static str {
    match response.get(8) {
        Some(b'1') => "1xx",
        Some(b'2') => "2xx",
        Some(b'3') => "3xx",
        Some(b'4') => "4xx",
        Some(b'5') => "5xx",
        Some(b'6') => "6xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_answers_are_counted_by_method_and_class() {
        let metrics = Metrics::default();
        metrics.request(&Method::Register);
        metrics.response(&Method::Register, b"SIP/2.0 401 Unauthorized\r\n");
        metrics.response(&Method::Register, b"SIP/2.0 200 OK\r\n");
        let text = metrics.render(3, true);
        assert!(
            text.contains(r#"centrex_sip_requests_total{method="REGISTER"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"centrex_sip_responses_total{method="REGISTER",class="4xx"} 1"#),
            "{text}"
        );
        assert!(text.contains("centrex_sip_active_calls 3"), "{text}");
        assert!(text.contains("centrex_sip_rate_limited_total 0"), "{text}");
        assert!(text.contains("centrex_sip_draining 1"), "{text}");
    }
}
