//! Tracing subscriber: text or JSON lines on stderr (coloured only when
//! stderr is a terminal), with a filter that can be changed while running
//! through the returned [`LogFilter`] handle.

use serde_json::Value as Json;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogFormat, TelemetryConfig};

/// Handle to change the log filter at runtime (`PUT /api/v1/admin/log-filter`).
#[derive(Clone)]
pub struct LogFilter(reload::Handle<EnvFilter, Registry>);

/// Why a filter change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Not EnvFilter syntax.
    #[error("invalid log filter: {0}")]
    Invalid(String),
    /// The subscriber it belonged to is gone.
    #[error("the log subscriber is gone")]
    Gone,
}

impl LogFilter {
    /// A reloadable filter layer and its handle; `init` installs the layer
    /// globally, tests may keep it to themselves.
    ///
    /// # Errors
    /// When `directives` is not valid EnvFilter syntax.
    pub fn new(
        directives: &str,
    ) -> Result<(Self, reload::Layer<EnvFilter, Registry>), FilterError> {
        let filter =
            EnvFilter::try_new(directives).map_err(|e| FilterError::Invalid(e.to_string()))?;
        let (layer, handle) = reload::Layer::new(filter);
        Ok((LogFilter(handle), layer))
    }

    /// Replaces the filter.
    ///
    /// # Errors
    /// [`FilterError::Invalid`] for bad syntax, [`FilterError::Gone`] when
    /// the subscriber was dropped.
    pub fn set(&self, directives: &str) -> Result<(), FilterError> {
        let filter =
            EnvFilter::try_new(directives).map_err(|e| FilterError::Invalid(e.to_string()))?;
        self.0.reload(filter).map_err(|_| FilterError::Gone)
    }
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The filter does not parse.
    #[error("--log / FLOWPILOT_LOG `{filter}`: {message}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// What is wrong with it.
        message: String,
    },
    /// A subscriber is installed already.
    #[error("{0}")]
    Installed(#[from] tracing_subscriber::util::TryInitError),
}

/// Installs the global subscriber.
///
/// # Errors
/// When the filter does not parse or a subscriber is already installed.
pub fn init(config: &TelemetryConfig) -> Result<LogFilter, Error> {
    let TelemetryConfig {
        log_filter,
        log_format,
    } = config;
    let (handle, filter) = LogFilter::new(log_filter).map_err(|e| Error::Filter {
        filter: log_filter.clone(),
        message: e.to_string(),
    })?;
    let registry = tracing_subscriber::registry().with(filter);
    // Colours only for a person at a terminal: escape codes in a log file or
    // a log pipeline are noise that breaks grep.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match log_format {
        LogFormat::Text => registry.with(fmt).try_init()?,
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(true);
            registry
                .with(
                    fmt.event_format(ListsAsArrays(json))
                        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new()),
                )
                .try_init()?
        }
    }
    Ok(handle)
}

/// Fields that hold lists (`queues = ?settings.queues`), and how each
/// starts in a JSON line while it is still a string.
const LIST_FIELDS: [(&str, &str); 2] = [
    ("queues", "\"queues\":\""),
    ("functions", "\"functions\":\""),
];

/// JSON lines with the [`LIST_FIELDS`] as arrays. `tracing` records a
/// list by its `Debug` text, which the JSON formatter writes as a string;
/// this parses that text back (a `Vec<String>`'s `Debug` is JSON) so a log
/// pipeline can filter on an element. Text that does not parse stays a
/// string.
struct ListsAsArrays<F>(F);

impl<S, N, F> FormatEvent<S, N> for ListsAsArrays<F>
where
    F: FormatEvent<S, N>,
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // Most lines hold none: pass them on without parsing them.
        if !LIST_FIELDS.iter().any(|(_, start)| line.contains(start)) {
            return writer.write_str(&line);
        }
        let Ok(Json::Object(mut fields)) = serde_json::from_str::<Json>(&line) else {
            return writer.write_str(&line);
        };
        for (name, _) in LIST_FIELDS {
            let list = match fields.get(name) {
                Some(Json::String(text)) => serde_json::from_str::<Json>(text).ok(),
                _ => None,
            };
            if let Some(list @ Json::Array(_)) = list {
                fields.insert(name.to_owned(), list);
            }
        }
        writeln!(writer, "{}", Json::Object(fields))
    }
}
