//! Prometheus metrics, all under `flowpilot_`. Each subsystem owns a struct
//! with `register(&Registry)`; labels are bounded (route templates, methods,
//! status classes), never ids.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// HTTP API request metrics.
pub struct ApiMetrics {
    requests: IntCounterVec,
    seconds: HistogramVec,
}

impl ApiMetrics {
    /// Creates and registers the API metrics.
    ///
    /// # Errors
    /// When a metric of the same name is registered already.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "flowpilot_api_requests_total",
                "HTTP API requests by route template, method and status class",
            ),
            &["route", "method", "status"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "flowpilot_api_request_seconds",
                "HTTP API request latency by route template",
            ),
            &["route", "method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(seconds.clone()))?;
        Ok(ApiMetrics { requests, seconds })
    }

    /// Records one request.
    pub fn observe(&self, method: &str, route: &str, status: u16, took: Duration) {
        let class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .with_label_values(&[route, method, class])
            .inc();
        self.seconds
            .with_label_values(&[route, method])
            .observe(took.as_secs_f64());
    }
}
