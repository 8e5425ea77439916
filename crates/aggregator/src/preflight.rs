//! Start-up checks that warn about setups which start fine but break aggregation later
//! (user-needs.md §1b): no proxy client certificate or service map, a proxy client certificate
//! without client-auth usage, expired or expiring within 30 days, not chaining to the
//! request-header CA or not in its allowed names, and the front-proxy CA reused as the client
//! CA. Warnings only: the server starts anyway.

use std::time::SystemTime;

use pki::check::{CheckInput, Problem, check};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::Config;

/// Every warning for `config`, in words an operator can act on. Files that cannot be read are
/// skipped here (validation reports them).
pub fn warnings(config: &Config) -> Vec<String> {
    warnings_at(config, SystemTime::now())
}

/// [`warnings`] at a given time (tests).
pub fn warnings_at(config: &Config, now: SystemTime) -> Vec<String> {
    let mut out = Vec::new();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).ok();
    let front_proxy_ca = config
        .request_header
        .as_ref()
        .and_then(|rh| read(&rh.client_ca_file));
    let client_ca = config.client_ca_file.as_deref().and_then(read);
    match (
        &config.proxy_client_cert_file,
        &config.proxy_client_key_file,
    ) {
        (Some(cert), Some(key)) => {
            if let (Some(cert_pem), Some(key_pem)) = (read(cert), read(key)) {
                out.extend(proxy_cert_warnings(
                    config,
                    &cert_pem,
                    &key_pem,
                    front_proxy_ca.as_deref(),
                    now,
                ));
            }
        }
        _ => out.push(
            "no --proxy-client-cert-file/--proxy-client-key-file: extension API servers receive \
             proxied requests without a client certificate and answer 401"
                .to_owned(),
        ),
    }
    if config.service_map.is_none() && crate::cluster::own_source(config).is_none() {
        out.push(
            "no --service-map: Services cannot be resolved, so every remote APIService is \
             unavailable (ServiceNotFound)"
                .to_owned(),
        );
    }
    if let (Some(fp), Some(client)) = (&front_proxy_ca, &client_ca)
        && let Some(cn) = shared_ca(fp, client)
    {
        out.push(
            Problem::CaIsAlsoClientCa { common_name: cn }.to_string()
                + " (every client certificate of the cluster can then assert identities)",
        );
    }
    out
}

fn proxy_cert_warnings(
    config: &Config,
    cert_pem: &str,
    key_pem: &str,
    front_proxy_ca: Option<&str>,
    now: SystemTime,
) -> Vec<String> {
    // kube-apiserver's setup: the request-header CA is the front-proxy CA that extension
    // servers trust, so the proxy certificate must chain to it and carry an allowed CN.
    // Without one, the CA bundle given to `check` is the certificate itself and only its own
    // properties (usage, validity, key) are reported.
    let (ca, allowed) = match (front_proxy_ca, &config.request_header) {
        (Some(ca), Some(rh)) => (ca, rh.allowed_names.as_slice()),
        _ => (cert_pem, &[][..]),
    };
    let mut input = CheckInput::new(ca, cert_pem);
    input.client_key_pem = Some(key_pem);
    input.allowed_names = allowed;
    input.now = now;
    match check(&input) {
        Ok(problems) => problems
            .into_iter()
            .filter(|p| {
                front_proxy_ca.is_some()
                    || !matches!(
                        p,
                        Problem::ChainDoesNotVerify { .. }
                            | Problem::Expired {
                                role: pki::check::Role::FrontProxyCa,
                                ..
                            }
                            | Problem::ExpiresSoon {
                                role: pki::check::Role::FrontProxyCa,
                                ..
                            }
                            | Problem::NotYetValid {
                                role: pki::check::Role::FrontProxyCa,
                                ..
                            }
                    )
            })
            .map(|p| match p {
                Problem::ChainDoesNotVerify { .. } => format!(
                    "{p} (extension servers trusting --requestheader-client-ca-file, as kube-apiserver publishes it, will refuse proxied requests)"
                ),
                p => p.to_string(),
            })
            .collect(),
        Err(e) => vec![format!("cannot check the proxy client certificate: {e}")],
    }
}

/// The CN of a certificate present in both bundles.
fn shared_ca(a: &str, b: &str) -> Option<String> {
    let parse = |pem: &str| -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .filter_map(Result::ok)
            .collect()
    };
    let theirs = parse(b);
    parse(a).into_iter().find(|c| theirs.contains(c)).map(|c| {
        x509_parser::parse_x509_certificate(c.as_ref())
            .ok()
            .and_then(|(_, x)| {
                x.subject()
                    .iter_common_name()
                    .next()
                    .and_then(|cn| cn.as_str().ok().map(str::to_owned))
            })
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RequestHeaderFlags;
    use pki::{CertRequest, CertificateAuthority, KeyAlgorithm, Usage};
    use std::time::Duration;

    fn ec(r: CertRequest) -> CertRequest {
        r.key(KeyAlgorithm::EcdsaP256)
    }

    #[test]
    fn warns_about_what_breaks_aggregation_later() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let w = |name: &str, text: &str| -> anyhow::Result<std::path::PathBuf> {
            let p = dir.path().join(name);
            std::fs::write(&p, text)?;
            Ok(p)
        };
        let front_proxy = CertificateAuthority::new_root_with(&ec(CertRequest::ca("fp-ca")))?;
        let client_ca = CertificateAuthority::new_root_with(&ec(CertRequest::ca("client-ca")))?;
        let none: &[&str] = &[];
        // Server-auth only, expiring in 10 days.
        let bad = front_proxy.issue(
            &ec(CertRequest::client("front-proxy-client", none))
                .usages(&[
                    Usage::from_cfssl("signing")?,
                    Usage::from_cfssl("server auth")?,
                ])
                .validity(Duration::from_secs(10 * 86_400)),
        )?;
        let good = front_proxy.issue(&ec(CertRequest::client("front-proxy-client", none)))?;

        let nothing = warnings(&Config::default());
        assert_eq!(nothing.len(), 2, "{nothing:?}");
        assert!(
            nothing[0].contains("--proxy-client-cert-file"),
            "{nothing:?}"
        );
        assert!(nothing[1].contains("--service-map"), "{nothing:?}");

        let mut config = Config {
            proxy_client_cert_file: Some(w("bad.pem", &bad.cert_pem)?),
            proxy_client_key_file: Some(w("bad-key.pem", &bad.key_pem)?),
            service_map: Some(w("map.yaml", "services: []")?),
            ..Config::default()
        };
        let found = warnings(&config);
        assert!(found.iter().any(|m| m.contains("client auth")), "{found:?}");
        assert!(found.iter().any(|m| m.contains("days left")), "{found:?}");
        assert!(!found.iter().any(|m| m.contains("chain")), "{found:?}");

        config.proxy_client_cert_file = Some(w("good.pem", &good.cert_pem)?);
        config.proxy_client_key_file = Some(w("good-key.pem", &good.key_pem)?);
        config.client_ca_file = Some(w("client-ca.pem", client_ca.cert_pem())?);
        config.request_header = Some(RequestHeaderFlags {
            client_ca_file: w("client-ca-as-rh.pem", client_ca.cert_pem())?,
            allowed_names: vec!["aggregator".into()],
            username_headers: vec![],
            uid_headers: vec![],
            group_headers: vec![],
            extra_headers_prefix: vec![],
        });
        let found = warnings(&config);
        assert!(
            found
                .iter()
                .any(|m| m.contains("does not chain to the front-proxy CA")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|m| m.contains("allowed-names")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|m| m.contains("both the front-proxy CA and the client CA")),
            "{found:?}"
        );

        if let Some(rh) = config.request_header.as_mut() {
            rh.client_ca_file = w("fp-ca.pem", front_proxy.cert_pem())?;
            rh.allowed_names = vec!["front-proxy-client".into()];
        }
        assert_eq!(warnings(&config), Vec::<String>::new());
        Ok(())
    }
}
