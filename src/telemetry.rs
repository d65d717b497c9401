//! Tracing subscriber: text or JSON lines on stderr, with a filter that can
//! be changed while running through the returned [`LogFilter`] handle.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogFormat, TelemetryConfig};

/// Handle to change the log filter at runtime (e.g. from an admin endpoint).
#[derive(Clone)]
pub struct LogFilter(reload::Handle<EnvFilter, Registry>);

impl LogFilter {
    /// Replaces the filter.
    ///
    /// # Errors
    /// When `directives` is not valid EnvFilter syntax.
    pub fn set(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

/// Installs the global subscriber.
///
/// # Errors
/// When the filter does not parse or a subscriber is already installed.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<LogFilter> {
    let TelemetryConfig {
        log_filter,
        log_format,
    } = config;
    let filter = EnvFilter::try_new(log_filter)
        .map_err(|e| anyhow::anyhow!("--log / FLOWPILOT_LOG `{log_filter}`: {e}"))?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match log_format {
        LogFormat::Text => registry.with(fmt).try_init()?,
        LogFormat::Json => registry
            .with(fmt.json().flatten_event(true).with_current_span(true))
            .try_init()?,
    }
    Ok(LogFilter(handle))
}
