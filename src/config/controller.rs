//! The controller's and the API's listeners and intervals.

use std::time::Duration;

use clap::Args;

use super::positive_duration;

/// The Kubernetes controller.
#[derive(Debug, Clone, Args)]
pub struct ControllerConfig {
    /// Watch only this namespace. Default: every namespace.
    #[arg(long, env = "FLOWPILOT_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Namespace of the leader-election Lease. Default `POD_NAMESPACE`
    /// (the Downward API), else `default`.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease. Default `flowpilot-controller`.
    #[arg(
        long,
        env = "FLOWPILOT_LEASE_NAME",
        default_value = "flowpilot-controller"
    )]
    pub lease_name: String,
    /// This replica's identity in the Lease. Default `POD_NAME` (the
    /// Downward API), else a random id.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration: a dead leader is replaced after this. Default 15s.
    #[arg(long, env = "FLOWPILOT_LEASE_DURATION", default_value = "15s", value_parser = positive_duration)]
    pub lease_duration: Duration,
    /// Image of `flowpilot worker` for pools that name none: the published
    /// image of this version.
    #[arg(
        long,
        env = "FLOWPILOT_WORKER_IMAGE",
        default_value = concat!("ghcr.io/flowpilot/flowpilot:v", env!("CARGO_PKG_VERSION"))
    )]
    pub worker_image: String,
    /// How often running executions' status is refreshed. Default 5s.
    #[arg(long, env = "FLOWPILOT_STATUS_INTERVAL", default_value = "5s", value_parser = positive_duration)]
    pub status_interval: Duration,
    /// How often pools are re-evaluated. Default 15s, as the HPA.
    #[arg(long, env = "FLOWPILOT_SCALE_INTERVAL", default_value = "15s", value_parser = positive_duration)]
    pub scale_interval: Duration,
    /// Address of `/healthz`, `/readyz` and `/metrics`. Default `0.0.0.0:8081`.
    #[arg(
        long = "admin-listen",
        env = "FLOWPILOT_ADMIN_LISTEN",
        default_value = "0.0.0.0:8081"
    )]
    pub admin_listen: std::net::SocketAddr,
}

/// The HTTP API.
#[derive(Debug, Clone, Args)]
pub struct ApiConfig {
    /// Address the API listens on. Default `0.0.0.0:8080`; `make dev` uses
    /// `127.0.0.1:8080`.
    #[arg(long, env = "FLOWPILOT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
}
