//! cfssl's file formats and its `gencert` / `cfssljson` semantics: the CSR JSON (`CN`, `names`,
//! `hosts`, `key`, `ca`), the signing config (`signing.default`, `signing.profiles`), the JSON
//! `gencert` prints, and the files `cfssljson -bare` writes. Rules follow cfssl's Go sources
//! (`csr/csr.go`, `config/config.go`, `initca/initca.go`, `signer/local/local.go`,
//! `cli/gencert`, `cmd/cfssljson`); where we are stricter, the error says what cfssl would have
//! done silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ca::{self, CertRequest, CertificateAuthority, Issued};
use crate::cert::CaConstraint;
use crate::duration::parse_go_duration;
use crate::error::{Error, Result};
use crate::json::{self, Obj};
use crate::key::{KeyAlgorithm, PrivateKey};
use crate::name::{NameEntry, Subject};
use crate::usage::Usage;

/// The `ca` object of a CSR JSON (`csr.CAConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaConfig {
    /// `expiry`: lifetime of a `-initca` root. By default 43800h (cfssl's 5 years).
    pub expiry: Option<Duration>,
    /// `backdate`. By default 5 minutes.
    pub backdate: Option<Duration>,
    /// `pathlen` (0 means "no limit" unless `pathlenzero`).
    pub pathlen: i64,
    /// `pathlenzero`: make `pathlen: 0` an explicit zero.
    pub pathlenzero: bool,
}

impl CaConfig {
    fn constraint(&self) -> CaConstraint {
        // initca.New: MaxPathLen = pathlen; MaxPathLenZero only counts when pathlen is 0.
        let max_path_len = match self.pathlen {
            n if n > 0 => u32::try_from(n).ok(),
            0 if self.pathlenzero => Some(0),
            _ => None,
        };
        CaConstraint { max_path_len }
    }
}

/// A cfssl CSR JSON document (`csr.CertificateRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrJson {
    /// `CN` and `names` (and `serialnumber`).
    pub subject: Subject,
    /// `hosts`.
    pub hosts: Vec<String>,
    /// `key`. By default ECDSA P-256, cfssl's default when `key` is absent.
    pub key: KeyAlgorithm,
    /// `ca`, if present. Its presence makes the CSR ask for CA:TRUE.
    pub ca: Option<CaConfig>,
}

impl CsrJson {
    /// Parses a CSR JSON document; `what` names it in errors (usually the file name).
    ///
    /// ```
    /// let csr = pki::CsrJson::parse("csr.json", r#"{"CN":"front-proxy-client","key":{"algo":"rsa","size":2048}}"#)?;
    /// assert_eq!(csr.subject.common_name, "front-proxy-client");
    /// let err = pki::CsrJson::parse("csr.json", r#"{"CN":"x","key":{"algo":"rsa","size":1024}}"#).unwrap_err();
    /// assert!(err.to_string().contains("key.size"));
    /// # Ok::<(), pki::Error>(())
    /// ```
    pub fn parse(what: &str, text: &str) -> Result<Self> {
        let value = json::parse(what, text)?;
        let root = Obj::root(what, &value)?;
        for field in ["extensions", "crl_url", "delegation_enabled"] {
            if root.has(field) {
                return Err(root.err(field, "not supported by kube-aggregator pki"));
            }
        }
        let mut subject = Subject::new(root.str("CN")?.unwrap_or_default());
        subject.serial_number = root.str("serialnumber")?.unwrap_or_default().to_string();
        for n in root.obj_array("names")? {
            if n.has("OID") {
                return Err(n.err(
                    "OID",
                    "custom subject OIDs are not supported by kube-aggregator pki",
                ));
            }
            subject.names.push(NameEntry {
                country: n.str("C")?.unwrap_or_default().to_string(),
                province: n.str("ST")?.unwrap_or_default().to_string(),
                locality: n.str("L")?.unwrap_or_default().to_string(),
                organization: n.str("O")?.unwrap_or_default().to_string(),
                organizational_unit: n.str("OU")?.unwrap_or_default().to_string(),
                email: n.str("E")?.unwrap_or_default().to_string(),
            });
        }
        let hosts = root.str_array("hosts")?;
        let key = match root.obj("key")? {
            None => KeyAlgorithm::EcdsaP256,
            Some(k) => {
                let algo = k
                    .str("algo")?
                    .ok_or_else(|| k.err("algo", "missing (\"rsa\" or \"ecdsa\")"))?;
                let size = k.int("size")?.ok_or_else(|| {
                    k.err(
                        "size",
                        "missing (rsa: 2048, 3072, 4096; ecdsa: 256, 384, 521)",
                    )
                })?;
                let size = u64::try_from(size)
                    .map_err(|_| k.err("size", format!("must be positive, got {size}")))?;
                match KeyAlgorithm::from_cfssl(algo, size) {
                    Ok(alg) => alg,
                    Err(Error::UnsupportedKey(m)) => {
                        let field = if matches!(algo, "rsa" | "ecdsa") {
                            "size"
                        } else {
                            "algo"
                        };
                        return Err(k.err(field, format!("unsupported {m}")));
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let ca = match root.obj("ca")? {
            None => None,
            Some(c) => Some(CaConfig {
                expiry: duration_field(&c, "expiry")?,
                backdate: duration_field(&c, "backdate")?,
                pathlen: c.int("pathlen")?.unwrap_or(0),
                pathlenzero: c.bool("pathlenzero")?.unwrap_or(false),
            }),
        };
        Ok(CsrJson {
            subject,
            hosts,
            key,
            ca,
        })
    }
}

fn duration_field(o: &Obj<'_>, key: &str) -> Result<Option<Duration>> {
    match o.str(key)? {
        None | Some("") => Ok(None),
        Some(s) => match parse_go_duration(s) {
            Ok(d) if d.is_zero() => Err(o.err(key, "must be longer than zero")),
            Ok(d) => Ok(Some(d)),
            Err(Error::Duration { message, .. }) => {
                Err(o.err(key, format!("invalid duration {s:?}: {message}")))
            }
            Err(e) => Err(e),
        },
    }
}

/// One signing profile (`config.SigningProfile`): what cfssl puts into certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// `usages`, mapped to KeyUsage / ExtendedKeyUsage.
    pub usages: Vec<Usage>,
    /// `expiry`. `None` only for a built-in default.
    pub expiry: Option<Duration>,
    /// `backdate`. By default 5 minutes.
    pub backdate: Option<Duration>,
    /// `ca_constraint` (or the older top-level `is_ca`): `Some` lets the profile issue CAs.
    pub ca: Option<CaConstraint>,
}

impl Profile {
    /// cfssl's built-in default (`config.DefaultConfig`): `signing`, `key encipherment`,
    /// `server auth`, `client auth`, 8760h.
    pub fn cfssl_default() -> Self {
        Profile {
            usages: vec![
                Usage::DigitalSignature,
                Usage::KeyEncipherment,
                Usage::ServerAuth,
                Usage::ClientAuth,
            ],
            expiry: Some(ca::DEFAULT_VALIDITY),
            backdate: None,
            ca: None,
        }
    }
}

/// Fields of a cfssl profile that change the certificate but that we do not implement; they are
/// rejected rather than silently ignored, so our certificate is never quietly different.
const UNSUPPORTED_PROFILE_FIELDS: &[&str] = &[
    "remote",
    "auth_remote",
    "auth_key",
    "not_before",
    "not_after",
    "ct_log_servers",
    "name_whitelist",
    "policies",
    "ocsp_url",
    "crl_url",
    "issuer_urls",
    "allowed_extensions",
    "ocsp_no_check",
    "cert_store",
];

/// A cfssl signing config (`-config ca-config.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningConfig {
    /// `signing.default`, or cfssl's built-in default when absent.
    pub default: Profile,
    /// `signing.profiles`.
    pub profiles: BTreeMap<String, Profile>,
    /// Where the config came from, for error messages.
    pub source: String,
}

impl SigningConfig {
    /// Parses a config document; `what` names it in errors (usually the file name).
    pub fn parse(what: &str, text: &str) -> Result<Self> {
        let value = json::parse(what, text)?;
        let root = Obj::root(what, &value)?;
        let signing = root.obj("signing")?.ok_or_else(|| {
            root.err(
                "signing",
                "missing (cfssl configs start with {\"signing\": {...}})",
            )
        })?;
        let default = match signing.obj("default")? {
            None => Profile::cfssl_default(),
            Some(d) => parse_profile(&d, true)?,
        };
        let mut profiles = BTreeMap::new();
        if let Some(p) = signing.obj("profiles")? {
            for (name, obj) in p.members()? {
                profiles.insert(name, parse_profile(&obj, false)?);
            }
        }
        Ok(SigningConfig {
            default,
            profiles,
            source: what.to_string(),
        })
    }

    /// The profile `name`, or the default profile for `None`. Unlike cfssl, an unknown name is
    /// an error that names the profile (cfssl silently signs with the default profile, or fails
    /// with "no key usage available", masked by cfssljson; user-needs.md §3).
    pub fn profile(&self, name: Option<&str>) -> Result<(&str, &Profile)> {
        match name {
            None | Some("") => Ok(("default", &self.default)),
            Some(n) => self
                .profiles
                .get_key_value(n)
                .map(|(k, p)| (k.as_str(), p))
                .ok_or_else(|| Error::UnknownProfile {
                    name: n.to_string(),
                    config: self.source.clone(),
                    defined: if self.profiles.is_empty() {
                        "none".to_string()
                    } else {
                        self.profiles
                            .keys()
                            .map(|k| format!("{k:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                }),
        }
    }
}

fn parse_profile(p: &Obj<'_>, is_default: bool) -> Result<Profile> {
    for field in UNSUPPORTED_PROFILE_FIELDS {
        if p.has(field) {
            return Err(p.err(
                field,
                "not supported by kube-aggregator pki (remove it, or use cfssl for this profile)",
            ));
        }
    }
    let mut usages = Vec::new();
    for (i, name) in p.str_array("usages")?.iter().enumerate() {
        let u =
            Usage::from_cfssl(name).map_err(|e| p.err(&format!("usages[{i}]"), e.to_string()))?;
        usages.push(u);
    }
    if !is_default && usages.is_empty() {
        // cfssl: "invalid local profile: no usages specified".
        return Err(p.err(
            "usages",
            "missing or empty (e.g. [\"signing\", \"key encipherment\", \"client auth\"])",
        ));
    }
    // cfssl (config.populate) requires an expiry in every profile it loads.
    let expiry = duration_field(p, "expiry")?;
    if expiry.is_none() {
        return Err(p.err("expiry", "missing (a Go duration such as \"8760h\")"));
    }
    let backdate = duration_field(p, "backdate")?;
    let mut ca = None;
    if p.bool("is_ca")? == Some(true) {
        ca = Some(CaConstraint::default());
    }
    if let Some(c) = p.obj("ca_constraint")? {
        if c.bool("is_ca")?.unwrap_or(false) {
            let len = c.int("max_path_len")?.unwrap_or(0);
            let zero = c.bool("max_path_len_zero")?.unwrap_or(false);
            let max_path_len = match len {
                n if n > 0 => {
                    Some(u32::try_from(n).map_err(|_| c.err("max_path_len", "too large"))?)
                }
                0 if zero => Some(0),
                _ => None,
            };
            ca = Some(CaConstraint { max_path_len });
        } else {
            ca = None;
        }
    }
    Ok(Profile {
        usages,
        expiry,
        backdate,
        ca,
    })
}

/// `cfssl gencert -initca CSR.json`: a self-signed root (or, with `existing_key`, a root
/// re-generated for that key, like `-initca -ca-key KEY`). Uses cfssl's CA policy: usages
/// `cert sign` + `crl sign`, expiry from `ca.expiry` or 43800h.
pub fn gencert_initca(csr: &CsrJson, existing_key: Option<PrivateKey>) -> Result<Issued> {
    let cfg = csr.ca.clone().unwrap_or_default();
    let req = CertRequest {
        subject: csr.subject.clone(),
        hosts: csr.hosts.clone(),
        key: csr.key,
        usages: Usage::CA.to_vec(),
        validity: cfg.expiry.unwrap_or(ca::DEFAULT_CA_VALIDITY),
        not_before: backdated(cfg.backdate)?,
        ca: Some(cfg.constraint()),
    };
    let with_key = existing_key.is_some();
    let root = match existing_key {
        Some(key) => CertificateAuthority::new_root_with_key(&req, key)?,
        None => CertificateAuthority::new_root_with(&req)?,
    };
    let mut issued = root.to_issued();
    if with_key {
        // cfssl prints no key when it reuses one.
        issued.key_pem.clear();
    }
    Ok(issued)
}

/// `cfssl gencert -ca CA -ca-key KEY [-config C] [-profile P] [-hostname h1,h2] CSR.json`.
pub fn gencert(
    ca: &CertificateAuthority,
    csr: &CsrJson,
    config: Option<&SigningConfig>,
    profile: Option<&str>,
    hostname: Option<&str>,
) -> Result<Issued> {
    let builtin = Profile::cfssl_default();
    let (name, p) = match config {
        Some(c) => c.profile(profile)?,
        None => match profile {
            Some(n) if !n.is_empty() => {
                return Err(Error::UnknownProfile {
                    name: n.to_string(),
                    config: "(no -config given)".to_string(),
                    defined: "none".to_string(),
                });
            }
            _ => ("default", &builtin),
        },
    };
    let default = config.map(|c| &c.default).unwrap_or(&builtin);
    if p.usages.is_empty() {
        return Err(Error::Profile {
            name: name.to_string(),
            message: "has no usages, so cfssl would refuse it with \"no key usage available\"; add \"usages\"".into(),
        });
    }
    if csr.ca.is_some() && p.ca.is_none() {
        return Err(Error::Request(format!(
            "the CSR asks for a CA certificate (it has a \"ca\" object) but profile {name:?} does not allow CAs (set \"ca_constraint\": {{\"is_ca\": true}})"
        )));
    }
    if p.ca.is_some() && ca.max_path_len() == Some(0) {
        return Err(Error::Request(format!(
            "profile {name:?} issues CA certificates but the signing CA has pathlen 0"
        )));
    }
    let hosts = match hostname {
        // cfssl's signer.SplitHosts: a plain split on commas.
        Some(h) if !h.is_empty() => h.split(',').map(str::to_string).collect(),
        _ => csr.hosts.clone(),
    };
    let validity = p.expiry.or(default.expiry).unwrap_or(ca::DEFAULT_VALIDITY);
    let req = CertRequest {
        subject: csr.subject.clone(),
        hosts,
        key: csr.key,
        usages: p.usages.clone(),
        validity,
        not_before: backdated(p.backdate)?,
        ca: p.ca,
    };
    ca.issue(&req)
}

/// `Some(now rounded to the minute - backdate)` when a non-default backdate is configured.
fn backdated(backdate: Option<Duration>) -> Result<Option<std::time::SystemTime>> {
    let Some(b) = backdate else { return Ok(None) };
    let now = jiff::Timestamp::now().as_second();
    let rounded = (now + 30).div_euclid(60) * 60;
    let too_long = || {
        Error::Request(format!(
            "backdate {} is too long",
            crate::duration::format_go_duration(b)
        ))
    };
    let secs = i64::try_from(b.as_secs()).map_err(|_| too_long())?;
    let t = jiff::Timestamp::from_second(rounded - secs).map_err(|_| too_long())?;
    Ok(Some(ca::to_system_time(t)))
}

/// The JSON `cfssl gencert` prints: `{"cert":…,"csr":…,"key":…}` on one line (keys sorted, as
/// Go marshals a map; empty members left out).
pub fn gencert_json(issued: &Issued) -> String {
    let mut out = BTreeMap::new();
    if !issued.cert_pem.is_empty() {
        out.insert("cert", issued.cert_pem.as_str());
    }
    if !issued.csr_pem.is_empty() {
        out.insert("csr", issued.csr_pem.as_str());
    }
    if !issued.key_pem.is_empty() {
        out.insert("key", issued.key_pem.as_str());
    }
    serde_json::to_string(&out).unwrap_or_default()
}

/// Reads what `cfssljson` reads: gencert's JSON (`bare`), or the cfssl API envelope
/// `{"success":…,"result":{…},"errors":[…]}`. Accepts cfssljson's alternative member names
/// (`certificate`, `private_key`, `certificate_request`).
pub fn parse_cfssljson_input(what: &str, text: &str, bare: bool) -> Result<Issued> {
    let value = json::parse(what, text)?;
    let root = Obj::root(what, &value)?;
    let result = if bare {
        root
    } else {
        if root.bool("success")? == Some(false) {
            let errors = root
                .obj_array("errors")
                .unwrap_or_default()
                .iter()
                .filter_map(|e| e.str("message").ok().flatten().map(str::to_string))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(root.err("success", format!("cfssl reported failure: {errors}")));
        }
        root.obj("result")?.ok_or_else(|| {
            root.err(
                "result",
                "missing; for gencert's output use -bare (cfssljson -bare NAME)",
            )
        })?
    };
    let pick = |a: &str, b: &str| -> Result<String> {
        Ok(match result.str(a)? {
            Some(s) => s.to_string(),
            None => result.str(b)?.unwrap_or_default().to_string(),
        })
    };
    let issued = Issued {
        cert_pem: pick("cert", "certificate")?,
        key_pem: pick("key", "private_key")?,
        csr_pem: pick("csr", "certificate_request")?,
    };
    if issued.cert_pem.is_empty() && issued.key_pem.is_empty() && issued.csr_pem.is_empty() {
        return Err(Error::field(
            what,
            "(document)",
            "has no \"cert\", \"key\" or \"csr\" member",
        ));
    }
    Ok(issued)
}

/// The files `cfssljson -bare NAME` writes: `NAME.pem` (0644), `NAME-key.pem` (0600),
/// `NAME.csr` (0644); empty members are skipped. `base` may include a directory. Each file is
/// written to a temporary name and renamed, so a failure never leaves half a key behind.
pub fn write_bare_files(base: &Path, issued: &Issued) -> Result<Vec<PathBuf>> {
    let name = base
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = base.parent().unwrap_or(Path::new(""));
    let mut written = Vec::new();
    for (suffix, contents, mode) in [
        (".pem", &issued.cert_pem, 0o644),
        ("-key.pem", &issued.key_pem, 0o600),
        (".csr", &issued.csr_pem, 0o644),
    ] {
        if contents.is_empty() {
            continue;
        }
        let path = dir.join(format!("{name}{suffix}"));
        write_file_atomic(&path, contents.as_bytes(), mode)?;
        written.push(path);
    }
    Ok(written)
}

/// Writes `contents` to `path` through a temporary file in the same directory and a rename,
/// with `mode` on Unix.
pub(crate) fn write_file_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(mode);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            // The umask may have narrowed the mode at creation; set it exactly.
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        }
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_CONFIG: &str = r#"{"signing":{"default":{"expiry":"87600h"},
        "profiles":{"kubernetes-front-proxy":{"usages":["signing","key encipherment","client auth"],"expiry":"876000h"}}}}"#;

    fn err_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn seed_config_parses() {
        let c =
            SigningConfig::parse("ca-config.json", SEED_CONFIG).unwrap_or_else(|e| panic!("{e}"));
        let (_, p) = c
            .profile(Some("kubernetes-front-proxy"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.usages,
            vec![
                Usage::DigitalSignature,
                Usage::KeyEncipherment,
                Usage::ClientAuth
            ]
        );
        assert_eq!(p.expiry, Some(Duration::from_secs(876_000 * 3600)));
        assert_eq!(c.default.expiry, Some(Duration::from_secs(87_600 * 3600)));
    }

    #[test]
    fn a_missing_profile_is_named() {
        let c =
            SigningConfig::parse("ca-config.json", SEED_CONFIG).unwrap_or_else(|e| panic!("{e}"));
        let msg = err_of(c.profile(Some("kubernetes")));
        assert_eq!(
            msg,
            "profile \"kubernetes\" is not defined in ca-config.json (defined: \"kubernetes-front-proxy\")"
        );
    }

    #[test]
    fn config_errors_name_the_field() {
        let cases = [
            (
                r#"{"signing":{"profiles":{"p":{"usages":["signing","client-auth"],"expiry":"1h"}}}}"#,
                "signing.profiles.p.usages[1]",
            ),
            (
                r#"{"signing":{"profiles":{"p":{"usages":["signing"],"expiry":"10d"}}}}"#,
                "signing.profiles.p.expiry",
            ),
            (
                r#"{"signing":{"profiles":{"p":{"usages":["signing"]}}}}"#,
                "signing.profiles.p.expiry",
            ),
            (
                r#"{"signing":{"profiles":{"p":{"expiry":"1h"}}}}"#,
                "signing.profiles.p.usages",
            ),
            (
                r#"{"signing":{"profiles":{"p":{"usages":"signing","expiry":"1h"}}}}"#,
                "signing.profiles.p.usages",
            ),
            (
                r#"{"signing":{"default":{"usages":["signing"]}}}"#,
                "signing.default.expiry",
            ),
            (
                r#"{"signing":{"profiles":{"p":{"usages":["signing"],"expiry":"1h","remote":"x"}}}}"#,
                "signing.profiles.p.remote",
            ),
            (r#"{"sign":{}}"#, "signing"),
        ];
        for (text, field) in cases {
            let msg = err_of(SigningConfig::parse("c.json", text));
            assert!(msg.contains(&format!("`{field}`")), "{text}: {msg}");
        }
    }

    #[test]
    fn csr_json_parses_cfssl_fields() {
        let csr = CsrJson::parse(
            "csr.json",
            r#"{"CN":"Kubernetes-front-proxy CA","key":{"algo":"rsa","size":2048},
                "names":[{"C":"CN","ST":"BeiJing","L":"BeiJing","O":"k8s","OU":"System"}],
                "ca":{"expiry":"876000h"}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(csr.key, KeyAlgorithm::Rsa2048);
        assert_eq!(csr.subject.names[0].organization, "k8s");
        assert_eq!(
            csr.ca.and_then(|c| c.expiry),
            Some(Duration::from_secs(876_000 * 3600))
        );
        let dflt = CsrJson::parse("c", r#"{"CN":"x"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dflt.key, KeyAlgorithm::EcdsaP256, "cfssl's default key");
    }

    #[test]
    fn csr_json_errors_name_the_field() {
        let cases = [
            (r#"{"CN":"x","key":{"algo":"dsa","size":2048}}"#, "key.algo"),
            (r#"{"CN":"x","key":{"algo":"rsa","size":1024}}"#, "key.size"),
            (
                r#"{"CN":"x","key":{"algo":"ecdsa","size":255}}"#,
                "key.size",
            ),
            (r#"{"CN":"x","key":{"algo":"rsa"}}"#, "key.size"),
            (r#"{"CN":"x","hosts":"a,b"}"#, "hosts"),
            (r#"{"CN":"x","names":[{"O":1}]}"#, "names[0].O"),
            (r#"{"CN":"x","ca":{"expiry":"100y"}}"#, "ca.expiry"),
            (r#"{"CN":7}"#, "CN"),
            (
                r#"{"CN":"x","names":[{"OID":{"1.2.3":"v"}}]}"#,
                "names[0].OID",
            ),
            (r#"{"CN":"x","extensions":[]}"#, "extensions"),
        ];
        for (text, field) in cases {
            let msg = err_of(CsrJson::parse("csr.json", text));
            assert!(msg.contains(&format!("`{field}`")), "{text}: {msg}");
        }
        let msg = err_of(CsrJson::parse("csr.json", r#"{"CN":"x",}"#));
        assert!(msg.starts_with("csr.json: invalid JSON"), "{msg}");
    }

    #[test]
    fn gencert_refuses_ca_requests_without_a_ca_profile() {
        let ca =
            CertificateAuthority::new_root_with(&CertRequest::ca("r").key(KeyAlgorithm::EcdsaP256))
                .unwrap_or_else(|e| panic!("{e}"));
        let csr = CsrJson::parse("c", r#"{"CN":"i","ca":{}}"#).unwrap_or_else(|e| panic!("{e}"));
        let msg = err_of(gencert(&ca, &csr, None, None, None));
        assert!(msg.contains("does not allow CAs"), "{msg}");
        let msg = err_of(gencert(&ca, &csr, None, Some("kubernetes"), None));
        assert!(msg.contains("no -config"), "{msg}");
    }

    #[test]
    fn cfssljson_input_variants() {
        let bare = r#"{"cert":"C","key":"K","csr":"R"}"#;
        let i = parse_cfssljson_input("stdin", bare, true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (i.cert_pem.as_str(), i.key_pem.as_str(), i.csr_pem.as_str()),
            ("C", "K", "R")
        );
        let wrapped = r#"{"success":true,"result":{"certificate":"C"},"errors":[]}"#;
        let i = parse_cfssljson_input("stdin", wrapped, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(i.cert_pem, "C");
        let failed =
            r#"{"success":false,"result":null,"errors":[{"code":5100,"message":"no key usage"}]}"#;
        assert!(err_of(parse_cfssljson_input("stdin", failed, false)).contains("no key usage"));
        assert!(err_of(parse_cfssljson_input("stdin", "", true)).contains("empty input"));
        assert!(err_of(parse_cfssljson_input("stdin", "{}", true)).contains("no \"cert\""));
    }

    #[test]
    fn bare_files_have_cfssljson_names_and_modes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let issued = Issued {
            cert_pem: "C".into(),
            key_pem: "K".into(),
            csr_pem: "R".into(),
        };
        let written = write_bare_files(&dir.path().join("front-proxy-ca"), &issued)
            .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<String> = written
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            names,
            vec![
                "front-proxy-ca.pem",
                "front-proxy-ca-key.pem",
                "front-proxy-ca.csr"
            ]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("front-proxy-ca-key.pem"))
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or_default();
            assert_eq!(mode, 0o600);
        }
    }
}
