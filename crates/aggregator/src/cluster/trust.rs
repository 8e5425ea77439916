//! The `kube-system/extension-apiserver-authentication` ConfigMap (upstream-behaviour.md §6.3):
//! where extension API servers learn which CA signs the front-proxy client certificate and which
//! headers carry the identity.
//!
//! - **Check** (default, when a kubeconfig is configured): read it at start-up and warn, in
//!   words an operator can act on, when its `requestheader-client-ca-file` does not verify our
//!   proxy client certificate or its `requestheader-allowed-names` leave out our CN — the most
//!   common reason extension servers answer 401 (user-needs.md §1b).
//! - **Publish** (`--publish-authentication-configmap`): merge our front-proxy CA
//!   (`--requestheader-client-ca-file`), allowed names and header names into it as
//!   kube-apiserver's controller does — lists unioned in order, CA bundles concatenated with
//!   duplicates and certificates expired for more than 5 minutes dropped — creating it (and
//!   leaving the namespace to exist) when missing; conflicts are retried. `client-ca-file` is
//!   left alone: our client CA is ours, not the cluster's.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::Config;
use crate::error::Error;

/// The ConfigMap's namespace.
pub const NAMESPACE: &str = "kube-system";
/// The ConfigMap's name.
pub const NAME: &str = "extension-apiserver-authentication";

/// The keys kube-apiserver writes for request-header authentication.
pub const KEY_CA: &str = "requestheader-client-ca-file";
/// Allowed CNs.
pub const KEY_ALLOWED: &str = "requestheader-allowed-names";
/// Username headers.
pub const KEY_USERNAME: &str = "requestheader-username-headers";
/// UID headers.
pub const KEY_UID: &str = "requestheader-uid-headers";
/// Group headers.
pub const KEY_GROUP: &str = "requestheader-group-headers";
/// Extra-header prefixes.
pub const KEY_EXTRA: &str = "requestheader-extra-headers-prefix";

/// What we contribute: our front-proxy CA and the names our proxy writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ours {
    /// The front-proxy CA bundle (PEM).
    pub ca_pem: String,
    /// `--requestheader-allowed-names`.
    pub allowed_names: Vec<String>,
    /// Header names, as the proxy writes them (first of each list).
    pub username: Vec<String>,
    /// UID header names.
    pub uid: Vec<String>,
    /// Group header names.
    pub group: Vec<String>,
    /// Extra prefixes.
    pub extra: Vec<String>,
}

/// Canonical header names (`X-Remote-User`, as kube-apiserver publishes them).
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

impl Ours {
    /// From the configuration (`None` without `--requestheader-client-ca-file`).
    pub fn from_config(config: &Config) -> Result<Option<Ours>, Error> {
        let Some(rh) = &config.request_header else {
            return Ok(None);
        };
        let ca_pem = std::fs::read_to_string(&rh.client_ca_file)
            .map_err(|e| Error::read(&rh.client_ca_file, e))?;
        let names = config.proxy_header_names()?;
        let list = |v: &[http::HeaderName]| v.iter().map(|h| canonical(h.as_str())).collect();
        Ok(Some(Ours {
            ca_pem,
            allowed_names: rh.allowed_names.clone(),
            username: list(&names.username),
            uid: list(&names.uid),
            group: list(&names.group),
            extra: names.extra_prefixes.clone(),
        }))
    }
}

fn strings(data: &BTreeMap<String, String>, key: &str) -> Vec<String> {
    data.get(key)
        .filter(|s| !s.is_empty())
        .and_then(|s| serde_json::from_str::<Option<Vec<String>>>(s).ok())
        .flatten()
        .unwrap_or_default()
}

fn union(existing: Vec<String>, ours: &[String]) -> Vec<String> {
    let mut out = existing;
    for v in ours {
        if !out.contains(v) {
            out.push(v.clone());
        }
    }
    out
}

/// Concatenates PEM bundles, dropping duplicates and certificates expired more than 5 minutes
/// before `now`; unparsable blocks of the existing bundle are kept as they are.
pub fn merge_bundles(existing: &str, ours: &str, now: SystemTime) -> String {
    let slack = Duration::from_secs(300);
    let cutoff = now
        .checked_sub(slack)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut out = String::new();
    for bundle in [existing, ours] {
        for cert in CertificateDer::pem_slice_iter(bundle.as_bytes()).flatten() {
            if seen.iter().any(|s| s.as_slice() == cert.as_ref()) {
                continue;
            }
            let expired = x509_parser::parse_x509_certificate(cert.as_ref())
                .map(|(_, c)| c.validity().not_after.timestamp() < cutoff)
                .unwrap_or(false);
            if expired {
                continue;
            }
            seen.push(cert.as_ref().to_vec());
            out.push_str(&pem_encode(cert.as_ref()));
        }
    }
    out
}

fn pem_encode(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

/// The ConfigMap data after merging ours into `existing` (kube-apiserver's rules).
pub fn merge(
    existing: &BTreeMap<String, String>,
    ours: &Ours,
    now: SystemTime,
) -> BTreeMap<String, String> {
    let mut data = existing.clone();
    let ca = merge_bundles(
        existing.get(KEY_CA).map(String::as_str).unwrap_or_default(),
        &ours.ca_pem,
        now,
    );
    data.insert(KEY_CA.into(), ca);
    for (key, mine) in [
        (KEY_ALLOWED, &ours.allowed_names),
        (KEY_USERNAME, &ours.username),
        (KEY_UID, &ours.uid),
        (KEY_GROUP, &ours.group),
        (KEY_EXTRA, &ours.extra),
    ] {
        let merged = union(strings(existing, key), mine);
        data.insert(
            key.into(),
            serde_json::to_string(&merged).unwrap_or_else(|_| "[]".into()),
        );
    }
    data
}

/// What is wrong with the ConfigMap for our proxy client certificate, as warnings.
pub fn check(
    data: Option<&BTreeMap<String, String>>,
    proxy_cert_pem: &str,
    now: SystemTime,
) -> Vec<String> {
    let at = format!("{NAMESPACE}/{NAME}");
    let Some(data) = data else {
        return vec![format!(
            "the ConfigMap {at} does not exist: extension API servers cannot learn the front-proxy CA and will refuse proxied requests (401); create it with --publish-authentication-configmap or configure kube-apiserver's --requestheader-* flags"
        )];
    };
    let Some(ca) = data.get(KEY_CA).filter(|c| !c.trim().is_empty()) else {
        return vec![format!(
            "the ConfigMap {at} has no {KEY_CA}: kube-apiserver runs without --requestheader-client-ca-file, so extension API servers reading it refuse proxied requests (401); set kube-apiserver's --requestheader-* flags or use --publish-authentication-configmap"
        )];
    };
    let allowed = strings(data, KEY_ALLOWED);
    let mut input = pki::check::CheckInput::new(ca, proxy_cert_pem);
    input.allowed_names = &allowed;
    input.now = now;
    let mut out = Vec::new();
    match pki::check::check(&input) {
        Ok(problems) => {
            for p in problems {
                match p {
                    pki::check::Problem::ChainDoesNotVerify { .. } => out.push(format!(
                        "the {KEY_CA} of ConfigMap {at} does not contain the CA of our proxy client certificate ({p}): extension API servers will answer 401; add our front-proxy CA to kube-apiserver's --requestheader-client-ca-file or use --publish-authentication-configmap"
                    )),
                    pki::check::Problem::CommonNameNotAllowed { .. } => out.push(format!(
                        "the {KEY_ALLOWED} of ConfigMap {at} do not allow our proxy client certificate ({p}): extension API servers will answer 401; add its CN to kube-apiserver's --requestheader-allowed-names"
                    )),
                    _ => {}
                }
            }
        }
        Err(e) => out.push(format!("cannot check ConfigMap {at}: {e}")),
    }
    for (key, standard) in [
        (KEY_USERNAME, "X-Remote-User"),
        (KEY_GROUP, "X-Remote-Group"),
        (KEY_EXTRA, "X-Remote-Extra-"),
    ] {
        let names = strings(data, key);
        if !names.iter().any(|n| n.eq_ignore_ascii_case(standard)) {
            out.push(format!(
                "the {key} of ConfigMap {at} ({names:?}) lack {standard}: extension servers reading it will not see the identity our proxy sends"
            ));
        }
    }
    out
}

/// Reads the ConfigMap and logs [`check`]'s warnings (check mode), or merges ours into it
/// (publish mode; retried on conflicts). Errors are returned for the caller to log.
pub async fn sync(client: kube::Client, config: &Config) -> Result<Vec<String>, String> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, NAMESPACE);
    if config.cluster.publish_authentication_configmap {
        let ours = Ours::from_config(config)
            .map_err(|e| e.to_string())?
            .ok_or("--publish-authentication-configmap needs --requestheader-client-ca-file")?;
        for _ in 0..5 {
            let existing = api
                .get_opt(NAME)
                .await
                .map_err(|e| format!("reading {NAMESPACE}/{NAME}: {e}"))?;
            let result = match existing {
                None => {
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(NAME.into()),
                            namespace: Some(NAMESPACE.into()),
                            ..ObjectMeta::default()
                        },
                        data: Some(merge(&BTreeMap::new(), &ours, SystemTime::now())),
                        ..ConfigMap::default()
                    };
                    api.create(&kube::api::PostParams::default(), &cm)
                        .await
                        .map(|_| ())
                }
                Some(mut cm) => {
                    let data = cm.data.clone().unwrap_or_default();
                    let merged = merge(&data, &ours, SystemTime::now());
                    if merged == data {
                        return Ok(Vec::new());
                    }
                    cm.data = Some(merged);
                    api.replace(NAME, &kube::api::PostParams::default(), &cm)
                        .await
                        .map(|_| ())
                }
            };
            match result {
                Ok(()) => {
                    tracing::info!(
                        "published the front-proxy CA and header names in {NAMESPACE}/{NAME}"
                    );
                    return Ok(Vec::new());
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(format!("writing {NAMESPACE}/{NAME}: {e}")),
            }
        }
        return Err(format!(
            "writing {NAMESPACE}/{NAME}: conflicts, gave up after 5 tries"
        ));
    }
    let Some(cert) = &config.proxy_client_cert_file else {
        return Ok(Vec::new());
    };
    let cert_pem =
        std::fs::read_to_string(cert).map_err(|e| format!("reading {}: {e}", cert.display()))?;
    let existing = api
        .get_opt(NAME)
        .await
        .map_err(|e| format!("reading {NAMESPACE}/{NAME}: {e}"))?;
    Ok(check(
        existing.as_ref().and_then(|c| c.data.as_ref()),
        &cert_pem,
        SystemTime::now(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pki::{CertRequest, CertificateAuthority, KeyAlgorithm};

    fn ca(cn: &str) -> CertificateAuthority {
        match CertificateAuthority::new_root_with(&CertRequest::ca(cn).key(KeyAlgorithm::EcdsaP256))
        {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn ours(ca_pem: &str) -> Ours {
        Ours {
            ca_pem: ca_pem.into(),
            allowed_names: vec!["front-proxy-client".into()],
            username: vec!["X-Remote-User".into()],
            uid: vec!["X-Remote-Uid".into()],
            group: vec!["X-Remote-Group".into()],
            extra: vec!["X-Remote-Extra-".into()],
        }
    }

    #[test]
    fn merging_unions_lists_and_bundles() {
        let theirs = ca("kube-front-proxy-ca");
        let mine = ca("front-proxy-ca");
        let existing: BTreeMap<String, String> = [
            (KEY_CA, theirs.cert_pem().to_string()),
            (KEY_ALLOWED, r#"["kube-apiserver-proxy"]"#.to_string()),
            (KEY_USERNAME, r#"["X-Remote-User"]"#.to_string()),
            (KEY_UID, String::new()),
            ("client-ca-file", "keep".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let merged = merge(&existing, &ours(mine.cert_pem()), SystemTime::now());
        assert_eq!(
            merged[KEY_ALLOWED],
            r#"["kube-apiserver-proxy","front-proxy-client"]"#
        );
        assert_eq!(merged[KEY_USERNAME], r#"["X-Remote-User"]"#);
        assert_eq!(merged[KEY_UID], r#"["X-Remote-Uid"]"#);
        assert_eq!(merged[KEY_GROUP], r#"["X-Remote-Group"]"#);
        assert_eq!(merged["client-ca-file"], "keep");
        assert_eq!(
            CertificateDer::pem_slice_iter(merged[KEY_CA].as_bytes()).count(),
            2
        );
        // Idempotent.
        assert_eq!(
            merge(&merged, &ours(mine.cert_pem()), SystemTime::now()),
            merged
        );
        // Certificates long expired are dropped from the bundle.
        let later = SystemTime::now() + Duration::from_secs(3600 * 24 * 365 * 200);
        let bundle = merge_bundles(theirs.cert_pem(), "", later);
        assert!(bundle.is_empty());
    }

    #[test]
    fn checking_names_the_problem() -> Result<(), pki::Error> {
        let fp = ca("front-proxy-ca");
        let client = fp.issue(
            &CertRequest::client("front-proxy-client", &[] as &[&str]).key(KeyAlgorithm::EcdsaP256),
        )?;
        let now = SystemTime::now();
        let good = merge(&BTreeMap::new(), &ours(fp.cert_pem()), now);
        assert_eq!(
            check(Some(&good), &client.cert_pem, now),
            Vec::<String>::new()
        );

        let other = merge(&BTreeMap::new(), &ours(ca("cluster-ca").cert_pem()), now);
        let w = check(Some(&other), &client.cert_pem, now);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("does not contain the CA of our proxy client certificate"));

        let mut names = good.clone();
        names.insert(KEY_ALLOWED.into(), r#"["someone-else"]"#.into());
        let w = check(Some(&names), &client.cert_pem, now);
        assert!(
            w.iter()
                .any(|w| w.contains("do not allow our proxy client certificate")),
            "{w:?}"
        );
        let mut any = good.clone();
        any.insert(KEY_ALLOWED.into(), "[]".into());
        assert!(
            check(Some(&any), &client.cert_pem, now).is_empty(),
            "empty allows any CN"
        );

        let mut headers = good.clone();
        headers.insert(KEY_USERNAME.into(), r#"["X-Custom-User"]"#.into());
        assert!(check(Some(&headers), &client.cert_pem, now)[0].contains("lack X-Remote-User"));

        assert!(check(None, &client.cert_pem, now)[0].contains("does not exist"));
        let mut no_ca = good;
        no_ca.remove(KEY_CA);
        assert!(
            check(Some(&no_ca), &client.cert_pem, now)[0]
                .contains("has no requestheader-client-ca-file")
        );
        Ok(())
    }
}
