//! The AWS SDK setup shared by the STS and CloudWatch clients: region, the credential chain,
//! the endpoint (a local emulator in development and tests), retries and timeouts.

use std::time::Duration;

use aws_config::default_provider::region::DefaultRegionChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

use crate::config::Config;

/// The AWS configuration of the instance (region, credentials chain, endpoint, retries,
/// timeouts), shared by the STS and CloudWatch clients.
/// The region when none is configured anywhere.
const DEFAULT_REGION: &str = "us-east-1";

pub async fn sdk_config(config: &Config) -> SdkConfig {
    let region = match config.aws_region.clone() {
        Some(region) => aws_config::Region::new(region),
        // The standard chain (AWS_REGION, the profile, instance metadata). Its own warnings
        // are filtered (see `telemetry`); this one line says what happens instead.
        None => match DefaultRegionChain::builder().build().region().await {
            Some(region) => region,
            None => {
                tracing::info!(
                    "no AWS region found (LANYARD_AWS_REGION, AWS_REGION, the AWS profile, \
                     instance metadata); using {DEFAULT_REGION}"
                );
                aws_config::Region::new(DEFAULT_REGION)
            }
        },
    };
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(12))
                .build(),
        );
    if let Some(url) = &config.aws_endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}
