//! Starting the real `kube-aggregator` binary (`serve`, `metrics-server`, `up`) for end-to-end tests.
