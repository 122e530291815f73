//! The end-to-end suite: every test starts its own private redis-server, contacts-svc
//! and edge on free ports and talks to them over real HTTP and gRPC.

// This crate is test code throughout, helpers included.
#![allow(clippy::unwrap_used)]

mod auth;
mod batches;
mod cli;
mod cluster;
mod connections;
mod content;
mod convergence;
mod discovery;
mod erasure;
mod faults;
mod gohighlevel;
mod grpc;
mod hmac_senders;
mod http_surface;
mod identity;
mod migration;
mod new_sender;
mod observability;
mod replay;
mod replicas;
mod resilience;
mod shutdown;
mod standard_webhooks;
mod stripe;
mod tls;
