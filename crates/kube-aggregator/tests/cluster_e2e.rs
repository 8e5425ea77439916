//! Issue 8 end to end: the real `kube-aggregator serve` in front of a **kube-apiserver
//! stand-in** (`testkit::kube_apiserver_standin`; kube-apiserver cannot run here) that serves
//! Services and EndpointSlices with watch, TokenReview, SubjectAccessReview, `/api`, `apps/v1`
//! and the trust ConfigMap, and authenticates proxied requests by request-header as
//! kube-apiserver does. Extension servers are `testkit::backend` stand-ins.
//!
//! Shown: kubectl sees core, built-in and aggregated groups in one discovery and `kubectl get
//! pods` reaches the delegate as the caller; a service-account token is authenticated by
//! TokenReview and authorized by SubjectAccessReview (and refused when RBAC says no, 401 for an
//! unknown token); endpoint routing spreads requests over every ready endpoint; an
//! EndpointSlice change moves traffic; a removed Service flips `Available` to False with
//! `ServiceNotFound` and back; the trust ConfigMap is checked at start-up.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use front_proxy::UserInfo;
use pki::{CertRequest, CertificateAuthority, Issued, KeyAlgorithm};
use serde_json::Value;
use testkit::backend::{Backend, BackendConfig, GroupVersion, Resource};
use testkit::kube_apiserver_standin::{
    Identity, KubeApiserverStandin, Rule, StandinConfig, service, slice,
};
use testkit::kubectl::{Kubectl, base64};
use testkit::process::wait_for;
use testkit::server::{Aggregator, HttpResponse, Options, https_request};

const KA: &str = env!("CARGO_BIN_EXE_kube-aggregator");
const NS: &str = "wardle";
const PROXY_CN: &str = "front-proxy-client";
const GROUP: &str = "wardle.example.com";
const APISERVICE: &str = "v1alpha1.wardle.example.com";
const FLUNDERS: &str = "/apis/wardle.example.com/v1alpha1/namespaces/default/flunders";
const OWN_TOKEN: &str = "aggregator-own-token";
const SA_TOKEN: &str = "sa-reader-token";
const SA_USER: &str = "system:serviceaccount:wardle:reader";
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn ec(r: CertRequest) -> CertRequest {
    r.key(KeyAlgorithm::EcdsaP256)
}

struct Certs {
    front_proxy_ca: CertificateAuthority,
    proxy_client: Issued,
    serving_ca: CertificateAuthority,
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
        })
    }

    fn backend(&self, name: &str) -> Result<Backend> {
        let dns = format!("api.{NS}.svc");
        let serving = self
            .serving_ca
            .issue(&ec(CertRequest::server(&dns, &[dns.as_str(), "127.0.0.1"])))?;
        Backend::start(BackendConfig {
            name: name.into(),
            serving_cert_pem: serving.cert_pem,
            serving_key_pem: serving.key_pem,
            front_proxy_ca_pem: self.front_proxy_ca.cert_pem().into(),
            allowed_names: vec![PROXY_CN.into()],
            group_versions: vec![GroupVersion::new(
                GROUP,
                "v1alpha1",
                vec![Resource::namespaced("flunders", "Flunder")],
            )],
        })
    }

    fn standin(&self) -> Result<KubeApiserverStandin> {
        let serving = self
            .serving_ca
            .issue(&ec(CertRequest::server("kube-apiserver", &["127.0.0.1"])))?;
        KubeApiserverStandin::start(StandinConfig {
            serving_cert_pem: serving.cert_pem,
            serving_key_pem: serving.key_pem,
            front_proxy_ca_pem: self.front_proxy_ca.cert_pem().into(),
            allowed_names: vec![PROXY_CN.into()],
            own_token: OWN_TOKEN.into(),
        })
    }
}

struct World {
    _work: tempfile::TempDir,
    agg: Aggregator,
    admin: Kubectl,
}

impl World {
    fn start(certs: &Certs, standin: &KubeApiserverStandin, extra: &[&str]) -> Result<World> {
        let work = tempfile::tempdir()?;
        let write = |name: &str, text: &str| -> Result<PathBuf> {
            let p = work.path().join(name);
            std::fs::write(&p, text)?;
            Ok(p)
        };
        let kubeconfig = write(
            "cluster.kubeconfig",
            &standin.kubeconfig(certs.serving_ca.cert_pem()),
        )?;
        let cert = write("front-proxy-client.pem", &certs.proxy_client.cert_pem)?;
        let key = write("front-proxy-client-key.pem", &certs.proxy_client.key_pem)?;
        let fp_ca = write("front-proxy-ca.pem", certs.front_proxy_ca.cert_pem())?;
        let k = kubeconfig.display().to_string();
        let mut extra_args = vec![
            format!("--proxy-client-cert-file={}", cert.display()),
            format!("--proxy-client-key-file={}", key.display()),
            format!("--requestheader-client-ca-file={}", fp_ca.display()),
            format!("--requestheader-allowed-names={PROXY_CN}"),
            format!("--delegate-kubeconfig={k}"),
            format!("--authentication-kubeconfig={k}"),
            format!("--authorization-kubeconfig={k}"),
        ];
        extra_args.extend(extra.iter().map(|s| s.to_string()));
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
        })
    }

    fn register(&self, certs: &Certs, port: u16) -> Result<()> {
        let yaml = format!(
            "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: {APISERVICE}\nspec:\n  group: {GROUP}\n  version: v1alpha1\n  groupPriorityMinimum: 1000\n  versionPriority: 15\n  service:\n    namespace: {NS}\n    name: api\n    port: {port}\n  caBundle: {}\n",
            base64(certs.serving_ca.cert_pem().as_bytes())
        );
        self.admin.ok_stdin(["apply", "-f", "-"], &yaml)?;
        Ok(())
    }

    fn token(&self, token: &str, method: &str, path: &str) -> Result<HttpResponse> {
        let auth = format!("Bearer {token}");
        https_request(
            self.agg.addr,
            &self.agg.ca_pem,
            None,
            method,
            path,
            &[("Authorization", auth.as_str())],
            b"",
        )
    }

    fn condition(&self) -> Result<Value> {
        let path = format!("/apis/apiregistration.k8s.io/v1/apiservices/{APISERVICE}");
        let obj = self.agg.request_as_admin("GET", &path, &[], b"")?.json()?;
        Ok(obj["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Available"))
            .cloned()
            .unwrap_or_default())
    }

    fn wait_condition(&self, status: &str, reason: &str) -> Result<Value> {
        let mut last = Value::Null;
        wait_for(
            &format!("{APISERVICE} Available={status} ({reason})"),
            Duration::from_secs(20),
            || {
                let c = self.condition()?;
                last = c.clone();
                Ok((c["status"] == status && c["reason"] == reason).then_some(c))
            },
        )
        .with_context(|| format!("last condition: {last}\n{}", self.agg.child.log()))
    }

    /// The backend that answered a list of flunders as admin.
    fn served_by(&self) -> Result<String> {
        let r = self.agg.request_as_admin("GET", FLUNDERS, &[], b"")?;
        ensure!(
            r.status == 200,
            "{FLUNDERS}: {} {}",
            r.status,
            r.body_text()
        );
        Ok(r.json()?["backend"].as_str().unwrap_or_default().to_owned())
    }
}

#[test]
fn in_front_of_a_kube_apiserver_standin() -> Result<()> {
    let certs = Certs::new()?;
    let a = certs.backend("backend-a")?;
    let b = certs.backend("backend-b")?;
    let (pa, pb) = (a.addr.port(), b.addr.port());
    let standin = certs.standin()?;
    // Service wardle/api: port 443 named https; one slice per backend (ports differ, so each
    // backend has its own slice, as during a rolling update).
    standin.apply_service(service(NS, "api", "127.0.0.1", 443, "https"));
    standin.apply_slice(slice(
        NS,
        "api-a",
        "api",
        "https",
        pa,
        &[("127.0.0.1", true)],
    ));
    standin.add_token(
        SA_TOKEN,
        UserInfo {
            name: SA_USER.into(),
            uid: "sa-uid".into(),
            groups: vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:wardle".into(),
            ],
            extra: Default::default(),
        },
    );
    standin.allow(Rule {
        user: SA_USER.into(),
        verb: "list".into(),
        resource: "flunders".into(),
    });

    let w = World::start(&certs, &standin, &["--enable-aggregator-routing"])?;
    w.register(&certs, 443)?;
    w.wait_condition("True", "Passed")?;
    ensure!(w.served_by()? == "backend-a");

    // The trust ConfigMap is checked at start-up: the stand-in has none yet.
    ensure!(
        w.agg
            .child
            .log()
            .contains("extension-apiserver-authentication does not exist"),
        "no ConfigMap warning:\n{}",
        w.agg.child.log()
    );

    // One discovery: core (delegated /api), built-in apps, aggregated wardle, our own group.
    let resources = w.admin.ok(["api-resources", "-o", "name"])?.stdout;
    for r in [
        "pods",
        "deployments.apps",
        "flunders.wardle.example.com",
        "apiservices.apiregistration.k8s.io",
    ] {
        ensure!(
            resources.lines().any(|l| l == r),
            "{r} missing from api-resources:\n{resources}"
        );
    }
    let doc = w
        .agg
        .request_as_admin("GET", "/apis", &[("Accept", AGGREGATED)], b"")?
        .json()?;
    let groups: Vec<&str> = doc["items"]
        .as_array()
        .map(|g| {
            g.iter()
                .filter_map(|g| g["metadata"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        groups[0] == "apiregistration.k8s.io" && groups[1] == "apps",
        "order: {groups:?}"
    );
    ensure!(
        groups.contains(&GROUP) && groups.contains(&"discovery.k8s.io"),
        "{groups:?}"
    );

    // kubectl get pods goes through to the delegate as the caller, under the proxy certificate.
    let pods = w
        .admin
        .ok(["get", "pods", "-n", "default", "-o", "name"])?
        .stdout;
    ensure!(pods.contains("standin-pod"), "{pods}");
    let seen = standin.seen();
    let pod_list = seen
        .iter()
        .rfind(|s| s.path == "/api/v1/namespaces/default/pods")
        .context("the stand-in saw no pod list")?;
    match &pod_list.identity {
        Ok(Identity::Proxied(u)) => ensure!(
            u.groups.iter().any(|g| g == "system:masters"),
            "proxied as {u:?}"
        ),
        other => {
            anyhow::bail!("the pod list was not proxied with the front-proxy identity: {other:?}")
        }
    }
    // The aggregator's own calls use its kubeconfig token, never the front-proxy identity.
    ensure!(
        seen.iter()
            .any(|s| s.path == "/api/v1/services" && s.identity == Ok(Identity::Own))
    );
    ensure!(
        seen.iter()
            .any(|s| s.path == "/apis/discovery.k8s.io/v1/endpointslices"
                && s.query.contains("watch=true"))
    );

    // A service-account token: TokenReview authenticates, SubjectAccessReview authorizes.
    let r = w.token(SA_TOKEN, "GET", FLUNDERS)?;
    ensure!(r.status == 200, "SA list: {} {}", r.status, r.body_text());
    let echoed = r.json()?;
    ensure!(echoed["user"]["name"] == SA_USER, "{echoed}");
    ensure!(echoed["user"]["uid"] == "sa-uid", "{echoed}");
    let headers = echoed["headers"].to_string().to_ascii_lowercase();
    ensure!(
        !headers.contains("bearer"),
        "the token reached the backend: {headers}"
    );
    let sar = standin
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with("/subjectaccessreviews"))
        .find(|s| s.body.contains("flunders"))
        .context("no SubjectAccessReview for flunders")?;
    let spec: Value = serde_json::from_str(&sar.body)?;
    ensure!(
        spec["spec"]["user"] == SA_USER && spec["spec"]["resourceAttributes"]["verb"] == "list",
        "{spec}"
    );
    ensure!(
        spec["spec"]["groups"]
            .to_string()
            .contains("system:authenticated"),
        "{spec}"
    );
    // RBAC says no to deleting; unknown tokens are 401.
    let r = w.token(SA_TOKEN, "DELETE", &format!("{FLUNDERS}/x"))?;
    ensure!(r.status == 403, "delete: {} {}", r.status, r.body_text());
    ensure!(
        r.body_text().contains("stand-in: no rule"),
        "{}",
        r.body_text()
    );
    let r = w.token("nobody-knows-me", "GET", FLUNDERS)?;
    ensure!(r.status == 401, "unknown token: {}", r.status);
    ensure!(w.token(SA_TOKEN, "GET", "/version")?.status == 200);

    // Endpoint routing spreads requests over every ready endpoint.
    standin.apply_slice(slice(
        NS,
        "api-b",
        "api",
        "https",
        pb,
        &[("127.0.0.1", true)],
    ));
    let seen: BTreeSet<String> = wait_for("both backends serve", Duration::from_secs(10), || {
        let got: BTreeSet<String> = (0..8).map(|_| w.served_by()).collect::<Result<_>>()?;
        Ok((got.len() == 2).then_some(got))
    })?;
    ensure!(seen.contains("backend-a") && seen.contains("backend-b"));

    // An EndpointSlice change moves traffic: backend A's endpoint goes unready.
    standin.apply_slice(slice(
        NS,
        "api-a",
        "api",
        "https",
        pa,
        &[("127.0.0.1", false)],
    ));
    wait_for("traffic only to backend-b", Duration::from_secs(10), || {
        let got: BTreeSet<String> = (0..6).map(|_| w.served_by()).collect::<Result<_>>()?;
        Ok((got.len() == 1 && got.contains("backend-b")).then_some(()))
    })?;
    // No ready endpoint at all: MissingEndpoints, with the EndpointSlice wording.
    standin.delete_slice(NS, "api-b");
    let c = w.wait_condition("False", "MissingEndpoints")?;
    ensure!(
        c["message"]
            == "endpointslices for service/api in \"wardle\" have no addresses with port name \"https\"",
        "{c}"
    );

    // A removed Service flips Available with ServiceNotFound (after a 410 relist, too).
    standin.apply_slice(slice(
        NS,
        "api-a",
        "api",
        "https",
        pa,
        &[("127.0.0.1", true)],
    ));
    w.wait_condition("True", "Passed")?;
    standin.compact();
    standin.delete_service(NS, "api");
    let c = w.wait_condition("False", "ServiceNotFound")?;
    ensure!(
        c["message"] == "service/api in \"wardle\" is not present",
        "{c}"
    );
    let r = w.agg.request_as_admin("GET", FLUNDERS, &[], b"")?;
    ensure!(r.status == 503, "unavailable APIService: {}", r.status);
    standin.apply_service(service(NS, "api", "127.0.0.1", 443, "https"));
    w.wait_condition("True", "Passed")?;
    Ok(())
}

#[test]
fn cluster_ip_routing_and_the_published_configmap() -> Result<()> {
    let certs = Certs::new()?;
    let a = certs.backend("backend-a")?;
    let standin = certs.standin()?;
    // ClusterIP routing dials clusterIP:port, so the Service port is the backend's port here.
    let port = a.addr.port();
    standin.apply_service(service(NS, "api", "127.0.0.1", port, "https"));
    // The slice's endpoint is not dialled in ClusterIP mode, but must be ready (upstream check).
    standin.apply_slice(slice(
        NS,
        "api-1",
        "api",
        "https",
        1,
        &[("127.0.0.2", true)],
    ));

    let w = World::start(&certs, &standin, &["--publish-authentication-configmap"])?;
    w.register(&certs, port)?;
    w.wait_condition("True", "Passed")?;
    ensure!(w.served_by()? == "backend-a");

    // Published as kube-apiserver would: our CA and names, lists as JSON-array strings.
    let cm = wait_for("the published ConfigMap", Duration::from_secs(10), || {
        Ok(standin.configmap())
    })?;
    let data = &cm["data"];
    ensure!(
        data["requestheader-client-ca-file"]
            .as_str()
            .is_some_and(|ca| ca.contains("BEGIN CERTIFICATE")),
        "{cm}"
    );
    ensure!(
        data["requestheader-allowed-names"] == "[\"front-proxy-client\"]",
        "{cm}"
    );
    ensure!(
        data["requestheader-username-headers"] == "[\"X-Remote-User\"]",
        "{cm}"
    );
    ensure!(
        data["requestheader-group-headers"] == "[\"X-Remote-Group\"]",
        "{cm}"
    );
    ensure!(
        data["requestheader-extra-headers-prefix"] == "[\"X-Remote-Extra-\"]",
        "{cm}"
    );
    ensure!(data.get("client-ca-file").is_none(), "{cm}");

    // The APIService port no longer on the Service: ServicePortError.
    standin.apply_service(service(NS, "api", "127.0.0.1", 8443, "https"));
    let c = w.wait_condition("False", "ServicePortError")?;
    ensure!(
        c["message"] == format!("service/api in \"wardle\" is not listening on port {port}"),
        "{c}"
    );
    // Back, but without endpoint slices: EndpointsNotFound.
    standin.apply_service(service(NS, "api", "127.0.0.1", port, "https"));
    standin.delete_slice(NS, "api-1");
    let c = w.wait_condition("False", "EndpointsNotFound")?;
    ensure!(
        c["message"] == "cannot find endpointslices for service/api in \"wardle\"",
        "{c}"
    );
    Ok(())
}
