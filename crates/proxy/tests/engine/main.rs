//! The engine against real extension-server stand-ins over loopback TLS: one test binary, one
//! module per concern.

mod availability;
mod discovery;
mod forward;
mod routing;
mod support;
mod tls;
mod upgrade;
