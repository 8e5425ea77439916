//! Kubernetes API conventions as data and pure functions: `Status`, `Table`, list/watch framing,
//! discovery documents (legacy and `apidiscovery.k8s.io/v2`), version ordering and content
//! negotiation. No sockets, clocks or tasks.
