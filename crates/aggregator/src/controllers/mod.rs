//! The controllers that keep live state in line with the APIServices and their backends:
//! [`availability`] (the `Available` condition and its metrics), [`discovery`] (backends'
//! resources in `/apis`) and [`openapi`] (the merged `/openapi/v3` index). Each is one task with
//! an explicit loop over a timetable; it runs bounded work concurrently and is the only writer
//! of what it publishes. Every replica of a several-replica setup runs all three.

pub mod availability;
pub mod discovery;
pub mod openapi;
mod schedule;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::proxying::ProxySetup;
use crate::server::Server;
use availability::{
    AvailabilityConfig, AvailabilityController, EngineProber, RecheckReceiver, StatusSink,
};
use discovery::{DiscoveryConfig, DiscoveryController, EngineFetcher};
use openapi::{EngineIndexFetcher, OpenApiConfig, OpenApiController};

/// The running controllers of one server.
#[derive(Debug)]
pub struct Controllers {
    tasks: Vec<JoinHandle<()>>,
}

impl Controllers {
    /// Spawns the three controllers for `server`, working through `proxy`'s engine, with
    /// upstream's timings. `rechecks` is the receiving end of the [`availability::Recheck`]
    /// given to the forwarder. Call inside the runtime, before [`Server::run`]; they stop when
    /// the server begins to shut down.
    pub fn spawn(server: &Server, proxy: &ProxySetup, rechecks: RecheckReceiver) -> Controllers {
        // A new service map or a rotated proxy client certificate can change every probe's
        // outcome (upstream re-syncs all APIServices on both): one counter for both.
        let (changes_tx, changes_rx) = watch::channel(0u64);
        let mut services = proxy.services.subscribe();
        let mut identity = proxy.identity.subscribe();
        // The cluster resolver's changes of Services/EndpointSlices APIServices refer to.
        let mut cluster = proxy.cluster.as_ref().map(|c| c.changes());
        let mut stop = server.shutdown_watch();
        let relay = tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = services.changed() => if r.is_err() { break },
                    r = identity.changed() => if r.is_err() { break },
                    r = async {
                        match cluster.as_mut() {
                            Some(c) => c.changed().await,
                            None => std::future::pending().await,
                        }
                    } => if r.is_err() { cluster = None; continue },
                    _ = stop.changed() => break,
                }
                changes_tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        });
        let availability = AvailabilityController {
            config: AvailabilityConfig::default(),
            prober: Arc::new(EngineProber(proxy.engine.clone())),
            sink: Arc::new(StatusSink {
                writer: server.status_writer(),
                metrics: server.metrics(),
            }),
            apiservices: server.apiservices(),
            resolver_changes: Some(changes_rx),
            rechecks: Some(rechecks),
            shutdown: server.shutdown_watch(),
        };
        let discovery = DiscoveryController {
            config: DiscoveryConfig::default(),
            fetcher: Arc::new(EngineFetcher {
                engine: proxy.engine.clone(),
                delegate: proxy.delegate.clone(),
            }),
            apiservices: server.apiservices(),
            publish: server.backend_discovery(),
            shutdown: server.shutdown_watch(),
        };
        let openapi = OpenApiController {
            config: OpenApiConfig::default(),
            fetcher: Arc::new(EngineIndexFetcher {
                engine: proxy.engine.clone(),
                delegate: proxy.delegate.clone(),
            }),
            own: server.own_openapi(),
            apiservices: server.apiservices(),
            publish: server.openapi_routes(),
            shutdown: server.shutdown_watch(),
        };
        Controllers {
            tasks: vec![
                relay,
                tokio::spawn(availability.run()),
                tokio::spawn(discovery.run()),
                tokio::spawn(openapi.run()),
            ],
        }
    }

    /// Waits up to `timeout` for the controllers to stop (after the server's shutdown began),
    /// then aborts what is left.
    pub async fn join(self, timeout: Duration) {
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(timeout, task).await.is_err() {
                abort.abort();
            }
        }
    }
}
