//! The end-to-end suite: every test starts its own private redis-server, contacts-svc
//! and edge on free ports and talks to them over real HTTP and gRPC.

// This crate is test code throughout, helpers included.
#![allow(clippy::unwrap_used)]

mod cli;
mod connections;
mod convergence;
mod gohighlevel;
mod grpc;
mod http_surface;
mod observability;
mod resilience;
mod stripe;
