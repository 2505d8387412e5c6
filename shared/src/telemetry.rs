//! One telemetry init for every binary: JSON logs on Lambda (where
//! `AWS_LAMBDA_FUNCTION_NAME` is set), compact text elsewhere; `RUST_LOG`
//! filters, `info` by default.

use tracing_subscriber::EnvFilter;

pub fn init() {
    init_with_default("info");
}

/// [`init`] with another level when `RUST_LOG` is not set.
pub fn init_with_default(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let on_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colours only on a terminal, not in redirected logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    // try_init: a second init (tests, the local runner embedding functions) is a no-op.
    let _ = if on_lambda {
        builder
            .json()
            .with_current_span(true)
            .without_time()
            .try_init()
    } else {
        builder.compact().try_init()
    };
}
