//! EC2 pools (feature `ec2`): the cloud driver that carries out the controller's
//! `ProvisionInstances` / `TerminateInstance` through aws-sdk-ec2 and reports back.
//!
//! - [`config`]: the pools file (`pools.toml`), field-path errors, requirements → types, the
//!   catalogue with DescribeInstanceTypes' specs.
//! - [`client`]: [`Ec2Pools`], the EC2 calls (CreateFleet instant per type and zone,
//!   TerminateInstances, DescribeInstances by tag, DescribeInstanceTypes,
//!   DescribeSpotInstanceRequests for interruption notices, DescribeSpotPriceHistory), tags
//!   and client tokens.
//! - [`error`]: EC2 error codes → `LaunchErrorKind`; throttling back-off with seeded jitter.
//! - [`driver`]: the task between the control actor and [`Ec2Pools`]: executes commands in
//!   order, recovers in-flight requests after a restart, runs the reconcile loop.
//!
//! No decision is made here: which type, zone, how many, which instance to terminate all
//! come from `berth_solver::controller`.

pub mod client;
pub mod config;
pub mod driver;
pub mod error;

pub use client::{CloudInstance, Ec2Pools, ProvisionOutcome, SpotPrice, SpotStatus};
pub use config::{ConfigError, Ec2Config, Ec2PoolConfig, Requirements, SpecSource, TypeSpec};
pub use error::CloudError;
