//! A real etcd (Debian `etcd-server`) on free loopback ports: single member or a 3-member cluster.
