//! Logging setup: `RUST_LOG` filter (default `info`), text or JSON lines on stderr.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // aws_config's instance-metadata lookups warn at length (a kilobyte and more) on any
        // machine that is not an EC2 instance; `sts::sdk_config` says in one line what
        // happens instead.
        EnvFilter::new(
            "info,sqlx=warn,aws_config=warn,aws_config::imds=error,aws_smithy_runtime=warn",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
