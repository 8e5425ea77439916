//! A cfssl-compatible certificate authority for the front-proxy PKI: CSR and config JSON, keys,
//! signing, `-bare` files, inspection and checks. Never reads the environment, never spawns.
