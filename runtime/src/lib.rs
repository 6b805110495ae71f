//! Berth's production driver: the control plane (`berth serve`) and the agent (`berth agent`).
//!
//! Module map:
//! - [`control`]: the actor that owns the solver's `Controller`; persist-before-ack; replay.
//! - [`store`]: the `Store` trait and its SQLite implementation (WAL, `synchronous = FULL`).
//! - [`server`]: the axum HTTP API, bearer-token scopes, the OpenAPI document.
//! - [`api_types`]: the JSON DTOs and the one error format.
//! - [`extract`]: request extractors that refuse bad input in that format, with the field path.
//! - [`agent`]: the agent: registration, heartbeats, long-poll, Docker through bollard.
//! - [`docker`]: the container isolation settings and per-job networks.
//! - [`metrics`]: Prometheus text metrics.
//! - [`client`]: the HTTP client the CLI uses.
//! - [`serve`]: wiring: `berth serve [--local]`.
//! - [`cloud`]: the seam between the actor and a cloud driver (no SDK types).
//! - `ec2` (feature `ec2`): EC2 pools through aws-sdk-ec2: config, calls, driver task.
//!
//! This crate is the only one that knows HTTP, JSON DTOs, EC2 and Docker; every decision comes from
//! `berth_solver::controller`.

pub mod agent;
pub mod api_types;
pub mod client;
pub mod cloud;
pub mod control;
pub mod docker;
#[cfg(feature = "ec2")]
pub mod ec2;
pub mod extract;
pub mod metrics;
pub mod serve;
pub mod server;
pub mod store;
