//! A sample `metrics.k8s.io/v1beta1` extension API server built on the `front-proxy` crate.
