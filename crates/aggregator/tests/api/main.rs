//! The server over real TLS sockets with a hyper client: the registration API, discovery,
//! OpenAPI, authentication and authorization, watches and limits. One test binary, one module
//! per concern.

mod auth;
mod discovery;
mod harness;
mod rest;
mod seams;
mod watch;
