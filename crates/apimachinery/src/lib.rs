//! Kubernetes API conventions as data and pure functions — no sockets, clocks or tasks.
//!
//! What is here, each as upstream (v1.32) writes it, so the server, the proxy and the sample
//! metrics server answer alike:
//!
//! - [`status`]: the `Status` body with one builder per reason, and [`field`] errors formatted
//!   as `field.Error`;
//! - [`validation`]: DNS names, qualified names, label values and `ObjectMeta` rules with
//!   upstream's messages;
//! - [`discovery`]: legacy (`APIGroupList`, `APIResourceList`, …) and aggregated
//!   (`apidiscovery.k8s.io/v2`, v2beta1) documents and the group/version order of
//!   upstream-behaviour.md §3.3, using [`version`]'s kube-aware comparison;
//! - [`negotiate`]: `Accept` / `Content-Type` negotiation (`as=Table`, `as=APIGroupDiscoveryList`);
//! - [`table`]: `Table` and `PartialObjectMetadata`; [`duration`]: the Age cell;
//! - [`watch`]: watch-event framing; [`etag`]: SHA-512 entity tags;
//! - [`selector`]: label and field selectors.

pub mod discovery;
pub mod duration;
pub mod etag;
pub mod field;
pub mod negotiate;
pub mod review;
pub mod selector;
pub mod status;
pub mod table;
pub mod ttl_cache;
pub mod validation;
pub mod version;
pub mod watch;

pub use field::{FieldError, FieldPath};
pub use status::{GroupKind, GroupResource, Reason, Status};
