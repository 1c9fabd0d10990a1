//! Everything between the nodes of an Atoll cluster.
//!
//! Owns: membership over gossip (`membership`, with every gossiped key in
//! `keys` and the socket it runs on in `gossip`), the internal Flight service (`service`) and its one client
//! (`client`), the messages they carry (`messages`), replication of writes
//! from the coordinator's side (`replicate`) and the replica's
//! (`replica`), hinted and ownership handoff and catch-up (`handoff`),
//! cluster-wide table schemas (`schemas`) and table changes (`tables`),
//! the figures each node gossips about itself (`stats`), a node's notice
//! that it was frozen (`stall`), live subscriptions
//! on owners (`live`), the spread and
//! keeping of the cluster's API keys (`api_keys`) and of the dashboard's
//! saved views and boards (`saved`), the proofs that a
//! datagram or call comes from the cluster (`gossip`, `call_auth`, with the
//! replay memory of both in `replay`), and what Flight's client trusts
//! over TLS (`tls`).
//!
//! Must not know: HTTP (the doors live in `atoll-node`), SQL and DataFusion
//! (query fragments reach it as bytes and run behind
//! `service::FragmentRunner`), or how JSON events become Arrow (ingest
//! hands it batches already grouped by partition). Placement rules come
//! from `atoll-ring`, storage from `atoll-store`.

pub mod api_keys;
pub mod call_auth;
pub mod client;
pub mod error;
pub mod gossip;
pub mod handoff;
pub mod keys;
pub mod live;
pub mod membership;
pub mod messages;
mod replay;
pub mod replica;
pub mod replicate;
mod rounds;
pub mod saved;
pub mod schemas;
pub mod service;
pub mod stall;
pub mod stats;
pub mod tables;
pub mod tls;

pub use client::PeerClient;
pub use error::ClusterError;
pub use membership::{Member, Membership, MembershipConfig, MembershipError};
pub use replica::{Hints, LocalReplica};
pub use replicate::{Delivery, Replicator};
