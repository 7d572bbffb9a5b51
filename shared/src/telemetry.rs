//! Logging set-up shared by every service.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: JSON lines when `VOIDRUNNER_LOG_FORMAT=json`, human-readable
/// otherwise; the level comes from `RUST_LOG` (default `info`). Calling it twice is harmless.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
