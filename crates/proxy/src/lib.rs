//! Forwards requests to extension API servers: service resolution, backend TLS, identity headers,
//! streaming, upgrades, availability probes and discovery fetches. Knows nothing about how
//! APIServices are stored or served; the `aggregator` crate wires it in.

pub mod body;
