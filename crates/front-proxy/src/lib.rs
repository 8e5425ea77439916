//! The Kubernetes requestheader (front-proxy) contract, both sides: a proxy writes `X-Remote-*`
//! headers; an extension API server authenticates proxied requests from them.
