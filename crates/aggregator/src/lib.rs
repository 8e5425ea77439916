//! The aggregation server: registration API, discovery, OpenAPI, proxy, availability,
//! authentication and authorization, reloadable TLS. Wiring holds no protocol logic.
