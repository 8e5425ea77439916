//! Issue 5 end to end: the real `kube-aggregator serve` proxying to extension-server stand-ins
//! (`testkit::backend`) on loopback. The stand-ins verify the front-proxy client certificate as
//! k8s.io/apiserver does (CA, allowed names, client-auth usage) and echo the identity they got.
//!
//! Shown here: certificate, token and impersonated users (extras whose keys need escaping);
//! spoofed `X-Remote-*`, `Impersonate-*` and `Authorization` never arriving; a backend with the
//! wrong CA refused and reported by reason; a watch streaming event by event; a WebSocket-style
//! upgrade round trip; a redirect answered 502; OpenAPI v3 merged and proxied; `kubectl get
//! --raw` and `kubectl api-resources`; a killed backend flipping `Available` to False with the
//! cause and back to True when it returns, while another group's discovery stays `Current`; a
//! hanging backend not delaying others; the delegate receiving the identity; bad proxy flags
//! exiting 64.
//!
//! Test PKI comes from the `pki` crate (the same code as `kube-aggregator pki`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use pki::{CertRequest, CertificateAuthority, Issued, KeyAlgorithm};
use serde_json::Value;
use testkit::backend::{
    Backend, BackendConfig, BlackHole, GroupVersion, Resource, echo_round_trip,
};
use testkit::kubectl::{Kubectl, base64};
use testkit::process::wait_for;
use testkit::server::{Aggregator, HttpResponse, HttpsConn, Options, VIEWER_TOKEN, https_request};
use testkit::tools::Cmd;

const KA: &str = env!("CARGO_BIN_EXE_kube-aggregator");
const NS: &str = "wardle";
const PROXY_CN: &str = "front-proxy-client";
const FLUNDERS: &str = "/apis/wardle.example.com/v1alpha1/namespaces/default/flunders";
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn ec(r: CertRequest) -> CertRequest {
    r.key(KeyAlgorithm::EcdsaP256)
}

/// The PKI of a cluster: a front-proxy CA and the proxy's client certificate, a CA for
/// serving certificates, and an unrelated CA.
struct Certs {
    front_proxy_ca: CertificateAuthority,
    proxy_client: Issued,
    serving_ca: CertificateAuthority,
    other_ca: CertificateAuthority,
}

impl Certs {
    fn new() -> Result<Certs> {
        let front_proxy_ca =
            CertificateAuthority::new_root_with(&ec(CertRequest::ca("front-proxy-ca")))?;
        let none: &[&str] = &[];
        let proxy_client = front_proxy_ca.issue(&ec(CertRequest::client(PROXY_CN, none)))?;
        Ok(Certs {
            front_proxy_ca,
            proxy_client,
            serving_ca: CertificateAuthority::new_root_with(&ec(CertRequest::ca("serving-ca")))?,
            other_ca: CertificateAuthority::new_root_with(&ec(CertRequest::ca("other-ca")))?,
        })
    }

    /// A stand-in for Service `<service>.wardle`, its serving certificate (SANs
    /// `<service>.wardle.svc` and 127.0.0.1) signed by `ca`.
    fn backend(
        &self,
        service: &str,
        ca: &CertificateAuthority,
        group_versions: Vec<GroupVersion>,
    ) -> Result<Backend> {
        Backend::start(self.backend_config(service, ca, group_versions)?)
    }

    /// The configuration of [`Certs::backend`], to adjust before starting.
    fn backend_config(
        &self,
        service: &str,
        ca: &CertificateAuthority,
        group_versions: Vec<GroupVersion>,
    ) -> Result<BackendConfig> {
        let dns = format!("{service}.{NS}.svc");
        let serving = ca.issue(&ec(CertRequest::server(&dns, &[dns.as_str(), "127.0.0.1"])))?;
        Ok(BackendConfig {
            name: service.into(),
            serving_cert_pem: serving.cert_pem,
            serving_key_pem: serving.key_pem,
            front_proxy_ca_pem: self.front_proxy_ca.cert_pem().into(),
            allowed_names: vec![PROXY_CN.into()],
            group_versions,
        })
    }
}

fn flunders() -> GroupVersion {
    GroupVersion::new(
        "wardle.example.com",
        "v1alpha1",
        vec![Resource::namespaced("flunders", "Flunder")],
    )
}

/// Who makes a request.
#[derive(Clone, Copy)]
enum Who<'a> {
    /// `admin` by client certificate (group `system:masters`).
    Admin,
    /// A bearer token.
    Token(&'a str),
}

/// A running aggregator with the proxy wired to stand-ins through a service map.
struct World {
    _work: tempfile::TempDir,
    agg: Aggregator,
    admin: Kubectl,
    serving_ca_pem: String,
}

impl World {
    /// Writes the proxy certificate and a service map (`service` → address, port 443) and
    /// starts the server with `extra` flags.
    fn start(certs: &Certs, services: &[(&str, SocketAddr)], extra: &[String]) -> Result<World> {
        let work = tempfile::tempdir()?;
        let write = |name: &str, text: &str| -> Result<PathBuf> {
            let p = work.path().join(name);
            std::fs::write(&p, text)?;
            Ok(p)
        };
        let cert = write("front-proxy-client.pem", &certs.proxy_client.cert_pem)?;
        let key = write("front-proxy-client-key.pem", &certs.proxy_client.key_pem)?;
        let mut map = String::from(if services.is_empty() {
            "services: []\n"
        } else {
            "services:\n"
        });
        for (name, addr) in services {
            map.push_str(&format!(
                "  - namespace: {NS}\n    name: {name}\n    port: 443\n    addresses: [\"{addr}\"]\n"
            ));
        }
        let map = write("services.yaml", &map)?;
        let mut extra_args = vec![
            format!("--proxy-client-cert-file={}", cert.display()),
            format!("--proxy-client-key-file={}", key.display()),
            format!("--service-map={}", map.display()),
        ];
        extra_args.extend(extra.iter().cloned());
        let agg = Aggregator::start(
            Path::new(KA),
            work.path(),
            &Options {
                store: format!("embedded:{}", work.path().join("data").display()),
                extra_args,
            },
        )?;
        let admin = Kubectl::new(agg.admin_kubeconfig())?;
        Ok(World {
            _work: work,
            agg,
            admin,
            serving_ca_pem: certs.serving_ca.cert_pem().into(),
        })
    }

    /// Registers `<version>.<group>`: remote behind `service` (caBundle: the serving CA), or
    /// local without one.
    fn register(&self, group: &str, version: &str, service: Option<&str>) -> Result<()> {
        let mut yaml = format!(
            "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: {version}.{group}\nspec:\n  group: {group}\n  version: {version}\n  groupPriorityMinimum: 1000\n  versionPriority: 15\n"
        );
        if let Some(service) = service {
            yaml.push_str(&format!(
                "  service:\n    namespace: {NS}\n    name: {service}\n    port: 443\n  caBundle: {}\n",
                base64(self.serving_ca_pem.as_bytes())
            ));
        }
        self.admin.ok_stdin(["apply", "-f", "-"], &yaml)?;
        Ok(())
    }

    fn request(&self, who: Who<'_>, path: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
        match who {
            Who::Admin => self.agg.request_as_admin("GET", path, headers, b""),
            Who::Token(token) => {
                let auth = format!("Bearer {token}");
                let mut all = vec![("Authorization", auth.as_str())];
                all.extend_from_slice(headers);
                https_request(
                    self.agg.addr,
                    &self.agg.ca_pem,
                    None,
                    "GET",
                    path,
                    &all,
                    b"",
                )
            }
        }
    }

    /// GET that must answer 200 with JSON.
    fn echo(&self, who: Who<'_>, path: &str, headers: &[(&str, &str)]) -> Result<Value> {
        let r = self.request(who, path, headers)?;
        ensure!(
            r.status == 200,
            "{path}: {} {}\n{}",
            r.status,
            r.body_text(),
            self.log()
        );
        r.json()
    }

    /// The `Available` condition once its status is `status`.
    fn wait_available(&self, name: &str, status: &str, timeout: Duration) -> Result<Value> {
        let path = format!("/apis/apiregistration.k8s.io/v1/apiservices/{name}");
        let mut last = Value::Null;
        wait_for(&format!("{name} Available={status}"), timeout, || {
            let obj = self.agg.request_as_admin("GET", &path, &[], b"")?.json()?;
            let cond = obj["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Available"))
                .cloned()
                .unwrap_or_default();
            last = cond.clone();
            Ok((cond["status"] == status).then_some(cond))
        })
        .with_context(|| format!("last condition: {last}\n{}", self.log()))
    }

    /// The aggregated `/apis` document.
    fn discovery(&self) -> Result<Value> {
        let r = self.request(Who::Admin, "/apis", &[("Accept", AGGREGATED)])?;
        ensure!(r.status == 200, "/apis: {}", r.status);
        r.json()
    }

    fn log(&self) -> String {
        self.agg.child.log()
    }

    fn metrics(&self) -> Result<String> {
        Ok(self.request(Who::Admin, "/metrics", &[])?.body_text())
    }
}

/// A group-version's entry in aggregated discovery: freshness and resource names.
fn entry(doc: &Value, group: &str, version: &str) -> Option<(String, Vec<String>)> {
    let v = doc["items"]
        .as_array()?
        .iter()
        .find(|g| g["metadata"]["name"] == group)?["versions"]
        .as_array()?
        .iter()
        .find(|v| v["version"] == version)?
        .clone();
    let resources = v["resources"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|x| x["resource"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Some((
        v["freshness"].as_str().unwrap_or_default().to_owned(),
        resources,
    ))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads chunks until the collected text contains `needle`.
fn read_until(conn: &mut HttpsConn, buf: &mut String, needle: &str) -> Result<()> {
    while !buf.contains(needle) {
        let chunk = conn
            .read_chunk()?
            .with_context(|| format!("the stream ended before {needle:?}: {buf}"))?;
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
    Ok(())
}

#[test]
fn identities_streams_and_refusals() -> Result<()> {
    let certs = Certs::new()?;
    let wardle = certs.backend("api", &certs.serving_ca, vec![flunders()])?;
    // Signed by a CA the APIService's caBundle does not contain.
    let badca = certs.backend(
        "badca",
        &certs.other_ca,
        vec![GroupVersion::new(
            "badca.example.com",
            "v1",
            vec![Resource::namespaced("bads", "Bad")],
        )],
    )?;
    // Trusts the front-proxy CA but allows another CN only.
    let mut strict = certs.backend_config(
        "strict",
        &certs.serving_ca,
        vec![GroupVersion::new("strict.example.com", "v1", vec![])],
    )?;
    strict.allowed_names = vec!["someone-else".into()];
    let strict = Backend::start(strict)?;
    let w = World::start(
        &certs,
        &[
            ("api", wardle.addr),
            ("badca", badca.addr),
            ("strict", strict.addr),
        ],
        &[],
    )?;
    w.register("wardle.example.com", "v1alpha1", Some("api"))?;
    w.register("badca.example.com", "v1", Some("badca"))?;
    w.register("strict.example.com", "v1", Some("strict"))?;

    let ok = w.wait_available(
        "v1alpha1.wardle.example.com",
        "True",
        Duration::from_secs(15),
    )?;
    ensure!(ok["reason"] == "Passed", "{ok}");
    let bad = w.wait_available("v1.badca.example.com", "False", Duration::from_secs(15))?;
    ensure!(bad["reason"] == "FailedDiscoveryCheck", "{bad}");
    let message = bad["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("x509: certificate signed by unknown authority")
            && message.contains("caBundle"),
        "the cause is named: {message}"
    );
    let refused = w.wait_available("v1.strict.example.com", "False", Duration::from_secs(15))?;
    let message = refused["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("401") && message.contains("front-proxy client certificate"),
        "{message}"
    );
    let probes = strict.seen();
    ensure!(
        !probes.is_empty()
            && probes.iter().all(|s| s
                .user
                .as_ref()
                .is_err_and(|e| e.contains("not in the allowed list"))),
        "the stand-in refused the CN as k8s.io/apiserver does: {probes:?}"
    );

    // A certificate user, with spoofed identity headers that must not arrive.
    let spoofed = [
        ("X-Remote-User", "mallory"),
        ("X-Remote-Group", "system:masters"),
        ("X-Remote-Extra-Scopes", "everything"),
        ("X-Remote-Uid", "0"),
    ];
    let got = w.echo(Who::Admin, FLUNDERS, &spoofed)?;
    ensure!(got["backend"] == "api" && got["path"] == FLUNDERS, "{got}");
    ensure!(got["user"]["name"] == "admin", "{got}");
    ensure!(
        strings(&got["user"]["groups"]) == ["system:masters", "system:authenticated"],
        "{got}"
    );
    ensure!(got["user"]["extra"] == serde_json::json!({}), "{got}");
    ensure!(
        strings(&got["headers"]["x-remote-user"]) == ["admin"],
        "{got}"
    );
    ensure!(got["headers"].get("x-remote-uid").is_none(), "{got}");
    ensure!(
        got["headers"].get("x-remote-extra-scopes").is_none(),
        "{got}"
    );
    ensure!(
        strings(&got["headers"]["x-forwarded-for"]) == ["127.0.0.1"],
        "{got}"
    );
    ensure!(got["headers"].get("audit-id").is_some(), "{got}");
    ensure!(
        strings(&got["headers"]["x-forwarded-proto"]) == ["https"],
        "{got}"
    );
    ensure!(
        strings(&got["headers"]["x-forwarded-host"]) == [wardle.addr.to_string()],
        "{got}"
    );
    // The backend offers HTTP/2 and the proxy uses it, whatever the client spoke.
    ensure!(got["httpVersion"] == "HTTP/2.0", "{got}");

    // A token user: its Authorization header never reaches the backend; the UID does.
    let got = w.echo(
        Who::Token(VIEWER_TOKEN),
        FLUNDERS,
        &[("X-Remote-User", "mallory")],
    )?;
    ensure!(
        got["user"]["name"] == "viewer" && got["user"]["uid"] == "uid-viewer",
        "{got}"
    );
    ensure!(
        strings(&got["user"]["groups"]) == ["viewers", "system:authenticated"],
        "{got}"
    );
    ensure!(got["headers"].get("authorization").is_none(), "{got}");

    // An impersonated user with extras whose keys need escaping.
    let got = w.echo(
        Who::Admin,
        FLUNDERS,
        &[
            ("Impersonate-User", "system:serviceaccount:default:web"),
            ("Impersonate-Group", "dev"),
            (
                "Impersonate-Extra-authentication.kubernetes.io%2Fpod-name",
                "web-0",
            ),
            ("Impersonate-Extra-Scopes", "view"),
            ("Impersonate-Extra-Scopes", "edit"),
        ],
    )?;
    ensure!(
        got["user"]["name"] == "system:serviceaccount:default:web",
        "{got}"
    );
    ensure!(
        strings(&got["user"]["groups"]) == ["dev", "system:authenticated"],
        "{got}"
    );
    ensure!(
        strings(&got["user"]["extra"]["authentication.kubernetes.io/pod-name"]) == ["web-0"],
        "{got}"
    );
    ensure!(
        strings(&got["user"]["extra"]["scopes"]) == ["view", "edit"],
        "{got}"
    );
    ensure!(
        strings(&got["headers"]["x-remote-extra-authentication.kubernetes.io%2fpod-name"])
            == ["web-0"],
        "escaped as §5.5: {got}"
    );
    let leaked: Vec<&String> = got["headers"]
        .as_object()
        .map(|h| h.keys().filter(|k| k.starts_with("impersonate-")).collect())
        .unwrap_or_default();
    ensure!(
        leaked.is_empty(),
        "Impersonate-* reached the backend: {leaked:?}"
    );
    // Whatever reached the backend came with the verified front-proxy certificate only.
    ensure!(
        wardle.seen().iter().all(|s| s.user.is_ok()),
        "every request authenticated at the backend"
    );

    // The backend with the wrong CA: refused at the TLS handshake, requests answered 503.
    let r = w.request(
        Who::Admin,
        "/apis/badca.example.com/v1/namespaces/default/bads",
        &[],
    )?;
    ensure!(
        r.status == 503 && r.body_text() == "service unavailable\n",
        "{}",
        r.body_text()
    );
    ensure!(
        badca.seen().is_empty(),
        "no request completed on the wrong-CA backend"
    );

    // A watch streams through event by event: the second event is only produced after the
    // first one has been read through the proxy.
    let mut conn = HttpsConn::connect(w.agg.addr, &w.agg.ca_pem, None)?;
    let auth = format!("Bearer {VIEWER_TOKEN}");
    let (status, headers) = conn.request_head(
        "GET",
        &format!("{FLUNDERS}?watch=true"),
        &[("Authorization", &auth)],
    )?;
    ensure!(status == 200, "watch: {status} {headers:?}");
    let mut events = String::new();
    read_until(&mut conn, &mut events, "\"ADDED\"")?;
    ensure!(!events.contains("MODIFIED"), "{events}");
    wardle.release_watch();
    read_until(&mut conn, &mut events, "\"MODIFIED\"")?;
    ensure!(
        conn.read_chunk()?.is_none(),
        "the watch ends when the backend ends it"
    );

    // A WebSocket-style upgrade is tunnelled both ways.
    let (cert, key) = w.agg.admin_identity()?;
    let mut conn = HttpsConn::connect(w.agg.addr, &w.agg.ca_pem, Some((&cert, &key)))?;
    let (status, headers) = conn.request_head(
        "GET",
        &format!("{FLUNDERS}/one/exec?command=sh"),
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("X-Remote-User", "mallory"),
        ],
    )?;
    ensure!(status == 101, "upgrade: {status} {headers:?}");
    let echo_user = headers
        .iter()
        .find(|(k, _)| k == "x-echo-user")
        .map(|(_, v)| v.as_str());
    ensure!(echo_user == Some("admin"), "{headers:?}");
    let back = echo_round_trip(conn.stream(), b"hello through the tunnel")?;
    ensure!(back == b"hello through the tunnel", "{back:?}");
    let back = echo_round_trip(conn.stream(), b"and back again")?;
    ensure!(back == b"and back again", "{back:?}");

    // A backend redirect is not followed by clients: 502.
    let r = w.request(Who::Admin, &format!("{FLUNDERS}/redirect"), &[])?;
    ensure!(r.status == 502, "{} {}", r.status, r.body_text());
    ensure!(
        r.body_text() == "the backend attempted to redirect this request, which is not permitted",
        "{}",
        r.body_text()
    );

    // Nobody serves this group and there is no delegate: 404 Status.
    let r = w.request(Who::Admin, "/apis/nothing.example.com/v1/things", &[])?;
    ensure!(
        r.status == 404 && r.json()?["kind"] == "Status",
        "{}",
        r.body_text()
    );

    // kubectl through the proxy.
    let raw = w.admin.ok(["get", "--raw", FLUNDERS])?;
    let got: Value = serde_json::from_str(&raw.stdout)?;
    ensure!(
        got["user"]["name"] == "admin" && got["path"] == FLUNDERS,
        "{raw}"
    );
    let listed = w
        .admin
        .ok(["api-resources", "--api-group=wardle.example.com"])?;
    let line = listed
        .stdout
        .lines()
        .find(|l| l.starts_with("flunders"))
        .with_context(|| format!("api-resources lists flunders: {listed}"))?;
    ensure!(
        line.split_whitespace().collect::<Vec<_>>()
            == ["flunders", "wardle.example.com/v1alpha1", "true", "Flunder"],
        "{listed}"
    );

    // OpenAPI v3: the backend's entry is in the index and its document is proxied with the
    // query.
    let url = wait_for(
        "the backend's OpenAPI v3 entry",
        Duration::from_secs(10),
        || {
            let index = w.request(Who::Admin, "/openapi/v3", &[])?.json()?;
            Ok(
                index["paths"]["apis/wardle.example.com/v1alpha1"]["serverRelativeURL"]
                    .as_str()
                    .map(str::to_owned),
            )
        },
    )?;
    ensure!(
        url == "/openapi/v3/apis/wardle.example.com/v1alpha1?hash=API",
        "{url}"
    );
    let doc = w.echo(Who::Admin, &url, &[])?;
    ensure!(
        doc["info"]["title"] == "api" && doc["x-query"] == "hash=API",
        "{doc}"
    );

    // Metrics and the access log.
    let metrics = w.metrics()?;
    ensure!(
        metrics.contains("aggregator_unavailable_apiservice{name=\"v1.badca.example.com\"} 1")
            && metrics.contains(
                "aggregator_unavailable_apiservice{name=\"v1alpha1.wardle.example.com\"} 0"
            ),
        "{metrics}"
    );
    let log = w.log();
    ensure!(
        log.lines().any(|l| l.contains("access")
            && l.contains("user=admin")
            && l.contains("v1alpha1.wardle.example.com")
            && l.contains(&wardle.addr.to_string())
            && l.contains("status=200")),
        "one access line per proxied request:\n{log}"
    );
    Ok(())
}

#[test]
fn availability_follows_the_backend_and_others_stay_fast() -> Result<()> {
    let certs = Certs::new()?;
    let mut wardle = certs.backend("api", &certs.serving_ca, vec![flunders()])?;
    let toys = certs.backend(
        "toys",
        &certs.serving_ca,
        vec![
            GroupVersion::new(
                "toys.example.com",
                "v1",
                vec![Resource::namespaced("toys", "Toy")],
            ),
            GroupVersion::new(
                "toys.example.com",
                "v2",
                vec![Resource::namespaced("toys", "Toy")],
            ),
        ],
    )?;
    let hole = BlackHole::start()?;
    let w = World::start(
        &certs,
        &[
            ("api", wardle.addr),
            ("toys", toys.addr),
            ("slow", hole.addr),
        ],
        // The HTTP/1.1 pool instead of negotiated HTTP/2: the rest must behave the same.
        &["--proxy-backend-http2=false".to_string()],
    )?;
    w.register("wardle.example.com", "v1alpha1", Some("api"))?;
    w.register("toys.example.com", "v1", Some("toys"))?;
    w.wait_available(
        "v1alpha1.wardle.example.com",
        "True",
        Duration::from_secs(15),
    )?;
    let got = w.echo(Who::Admin, FLUNDERS, &[])?;
    ensure!(got["httpVersion"] == "HTTP/1.1", "{got}");
    ensure!(got["user"]["name"] == "admin", "{got}");
    w.wait_available("v1.toys.example.com", "True", Duration::from_secs(15))?;

    // A backend that accepts connections but never answers does not hold up another one
    // registered right after it.
    w.register("slow.example.com", "v1", Some("slow"))?;
    let registered = Instant::now();
    w.register("toys.example.com", "v2", Some("toys"))?;
    wait_for("toys v2 Current in /apis", Duration::from_secs(10), || {
        Ok(
            (entry(&w.discovery()?, "toys.example.com", "v2").map(|e| e.0)
                == Some("Current".into()))
            .then_some(()),
        )
    })?;
    ensure!(
        registered.elapsed() < Duration::from_secs(4),
        "toys v2 waited for the hanging backend: {:?}",
        registered.elapsed()
    );
    let doc = w.discovery()?;
    ensure!(
        entry(&doc, "wardle.example.com", "v1alpha1")
            == Some(("Current".into(), vec!["flunders".into()])),
        "{doc}"
    );

    // Kill the backend: the next request fails with the cause, the condition follows.
    wardle.stop();
    let r = w.request(Who::Admin, FLUNDERS, &[])?;
    ensure!(r.status == 503, "{} {}", r.status, r.body_text());
    let text = r.body_text();
    ensure!(
        text.starts_with("error trying to reach service: ") || text == "service unavailable\n",
        "{text}"
    );
    let down = w.wait_available(
        "v1alpha1.wardle.example.com",
        "False",
        Duration::from_secs(15),
    )?;
    ensure!(down["reason"] == "FailedDiscoveryCheck", "{down}");
    let message = down["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("connect: connection refused")
            && message.contains(&format!(
                "https://{}/apis/wardle.example.com/v1alpha1",
                wardle.addr
            )),
        "{message}"
    );
    // Unavailable: answered without contacting the backend.
    let r = w.request(Who::Admin, FLUNDERS, &[])?;
    ensure!(
        r.status == 503 && r.body_text() == "service unavailable\n",
        "{}",
        r.body_text()
    );
    // Discovery: the dead group is Stale with its last resources, the others stay Current and
    // /apis answers at once.
    let asked = Instant::now();
    let doc = wait_for("wardle Stale", Duration::from_secs(10), || {
        let doc = w.discovery()?;
        Ok(
            (entry(&doc, "wardle.example.com", "v1alpha1").map(|e| e.0) == Some("Stale".into()))
                .then_some(doc),
        )
    })?;
    ensure!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    ensure!(
        entry(&doc, "wardle.example.com", "v1alpha1").map(|e| e.1) == Some(vec!["flunders".into()]),
        "{doc}"
    );
    for v in ["v1", "v2"] {
        ensure!(
            entry(&doc, "toys.example.com", v).map(|e| e.0) == Some("Current".into()),
            "{doc}"
        );
    }
    let r = w
        .admin
        .ok(["get", "apiservice", "v1alpha1.wardle.example.com"])?;
    ensure!(r.stdout.contains("False (FailedDiscoveryCheck)"), "{r}");
    let metrics = w.metrics()?;
    ensure!(
        metrics.contains("aggregator_unavailable_apiservice{name=\"v1alpha1.wardle.example.com\"} 1")
            && metrics.contains("aggregator_unavailable_apiservice_total{name=\"v1alpha1.wardle.example.com\",reason=\"FailedDiscoveryCheck\"} 1"),
        "{metrics}"
    );

    // The backend returns on the same port: Available again, discovery Current, requests flow.
    wardle.restart()?;
    let up = w.wait_available(
        "v1alpha1.wardle.example.com",
        "True",
        Duration::from_secs(20),
    )?;
    ensure!(up["reason"] == "Passed", "{up}");
    ensure!(
        up["lastTransitionTime"] != down["lastTransitionTime"]
            || down["lastTransitionTime"].is_null(),
        "{up} {down}"
    );
    wait_for("wardle Current again", Duration::from_secs(10), || {
        Ok(
            (entry(&w.discovery()?, "wardle.example.com", "v1alpha1").map(|e| e.0)
                == Some("Current".into()))
            .then_some(()),
        )
    })?;
    let got = w.echo(Who::Admin, FLUNDERS, &[])?;
    ensure!(got["user"]["name"] == "admin", "{got}");

    // The hanging backend is reported once its probes time out.
    let slow = w.wait_available("v1.slow.example.com", "False", Duration::from_secs(20))?;
    ensure!(
        slow["reason"] == "FailedDiscoveryCheck"
            && slow["message"].as_str().unwrap_or_default().contains("5s"),
        "{slow}"
    );
    Ok(())
}

#[test]
fn the_delegate_gets_the_identity_and_local_discovery() -> Result<()> {
    let certs = Certs::new()?;
    let delegate = certs.backend(
        "kube-apiserver",
        &certs.serving_ca,
        vec![GroupVersion::new(
            "local.example.com",
            "v1",
            vec![Resource::namespaced("things", "Thing")],
        )],
    )?;
    let ca = tempfile::NamedTempFile::new()?;
    std::fs::write(ca.path(), certs.serving_ca.cert_pem())?;
    let w = World::start(
        &certs,
        &[],
        &[
            format!("--delegate-url=https://{}", delegate.addr),
            format!("--delegate-ca-file={}", ca.path().display()),
        ],
    )?;
    w.register("local.example.com", "v1", None)?;

    // The legacy API and unowned groups go to the delegate with the caller's identity and
    // without the caller's credentials.
    for path in ["/api/v1/namespaces", "/apis/unowned.example.com/v1/widgets"] {
        let got = w.echo(
            Who::Token(VIEWER_TOKEN),
            path,
            &[
                ("X-Remote-User", "mallory"),
                ("X-Remote-Group", "system:masters"),
            ],
        )?;
        ensure!(
            got["backend"] == "kube-apiserver" && got["path"] == path,
            "{got}"
        );
        ensure!(got["user"]["name"] == "viewer", "{got}");
        ensure!(
            strings(&got["user"]["groups"]) == ["viewers", "system:authenticated"],
            "{got}"
        );
        ensure!(
            strings(&got["headers"]["x-remote-user"]) == ["viewer"],
            "{got}"
        );
        ensure!(got["headers"].get("authorization").is_none(), "{got}");
    }
    // A local APIService goes to the delegate.
    let got = w.echo(
        Who::Admin,
        "/apis/local.example.com/v1/namespaces/default/things",
        &[],
    )?;
    ensure!(
        got["backend"] == "kube-apiserver" && got["user"]["name"] == "admin",
        "{got}"
    );
    ensure!(
        delegate.seen().iter().all(|s| s.user.is_ok()),
        "the delegate accepted the front-proxy certificate every time"
    );

    // Local discovery comes from the delegate.
    wait_for("local.example.com Current", Duration::from_secs(10), || {
        Ok((entry(&w.discovery()?, "local.example.com", "v1")
            == Some(("Current".into(), vec!["things".into()])))
        .then_some(()))
    })?;
    // So do the delegate's OpenAPI v3 entries.
    let url = wait_for(
        "the delegate's OpenAPI v3 entry",
        Duration::from_secs(10),
        || {
            let index = w.request(Who::Admin, "/openapi/v3", &[])?.json()?;
            Ok(
                index["paths"]["apis/local.example.com/v1"]["serverRelativeURL"]
                    .as_str()
                    .map(str::to_owned),
            )
        },
    )?;
    let doc = w.echo(Who::Admin, &url, &[])?;
    ensure!(doc["info"]["title"] == "kube-apiserver", "{doc}");
    Ok(())
}

#[test]
fn bad_proxy_flags_exit_64_with_one_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::write(
        d.join("map.yaml"),
        "services:\n  - namespace: a\n    name: b\n    addresses: [\"nohost\"]\n",
    )?;
    std::fs::write(d.join("ca.pem"), "not a certificate\n")?;
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![format!("--service-map={}", d.join("map.yaml").display())],
            "map.yaml",
        ),
        (
            vec![format!(
                "--service-map={}",
                d.join("missing.yaml").display()
            )],
            "missing.yaml",
        ),
        (
            vec![
                "--proxy-client-cert-file=/nonexistent/proxy.pem".into(),
                "--proxy-client-key-file=/nonexistent/proxy-key.pem".into(),
            ],
            "/nonexistent/proxy.pem",
        ),
        (
            vec![format!("--delegate-ca-file={}", d.join("ca.pem").display())],
            "--delegate-ca-file requires --delegate-url",
        ),
        (
            vec!["--delegate-url=https://127.0.0.1:1/prefix".into()],
            "--delegate-url",
        ),
    ];
    for (args, needle) in cases {
        let ran = Cmd::new(KA)
            .arg("serve")
            .arg("--secure-port=0")
            .args(&args)
            .cwd(d)
            .run()?;
        ensure!(ran.code == Some(64), "{args:?}: expected exit 64: {ran}");
        let lines: Vec<&str> = ran.stderr.lines().collect();
        ensure!(
            lines.len() == 1
                && lines[0].starts_with("kube-aggregator serve: ")
                && lines[0].contains(needle),
            "{args:?}: {ran}"
        );
    }
    ensure!(!d.join("data").exists(), "nothing was started or created");
    Ok(())
}
