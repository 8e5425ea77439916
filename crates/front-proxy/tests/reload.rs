//! CA reload without a restart: from the file and from ConfigMap updates. A failed reload keeps
//! the last good configuration.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use front_proxy::reload::{ReloadOutcome, ReloadingAuthenticator};
use front_proxy::test_util::{TestCa, TestCert};
use front_proxy::{Authenticator, ConfigError, HeaderNames, Refusal, UserInfo};
use http::Request;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn accepts(auth: &Authenticator, cert: &TestCert) -> bool {
    let Ok(mut request) = cert.proxied_request(Request::new(()), &UserInfo::new("alice")) else {
        return false;
    };
    auth.authenticate(&cert.chain, request.headers_mut())
        .is_ok()
}

fn write(path: &Path, contents: &str) -> std::io::Result<()> {
    // Like kubelet and `kubectl cp`: a new file renamed into place.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(tmp, path)
}

#[tokio::test]
async fn ca_file_changes_are_picked_up_and_failures_keep_the_last_good_bundle() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("front-proxy-ca.crt");
    let first = TestCa::new("front-proxy-ca-1")?;
    let second = TestCa::new("front-proxy-ca-2")?;
    let first_proxy = first.client_cert("front-proxy-client")?;
    let second_proxy = second.client_cert("front-proxy-client")?;
    write(&path, first.ca_pem())?;

    let (auth, mut reloader) = ReloadingAuthenticator::watch_ca_file(
        &path,
        vec!["front-proxy-client".into()],
        HeaderNames::default(),
    )?;
    assert!(accepts(&auth.current(), &first_proxy));
    assert!(!accepts(&auth.current(), &second_proxy));
    assert!(matches!(reloader.check().await, ReloadOutcome::Unchanged));

    // Rotation.
    write(&path, second.ca_pem())?;
    assert!(matches!(reloader.check().await, ReloadOutcome::Reloaded));
    assert!(accepts(&auth.current(), &second_proxy));
    assert!(!accepts(&auth.current(), &first_proxy));
    assert_eq!(
        auth.current().config().allowed_names,
        ["front-proxy-client"]
    );

    // A half-written or wrong file: reported once, and the last good bundle stays.
    write(
        &path,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )?;
    assert!(matches!(
        reloader.check().await,
        ReloadOutcome::Failed(ConfigError::CaCertificate { .. })
    ));
    assert!(matches!(reloader.check().await, ReloadOutcome::Unchanged));
    assert!(accepts(&auth.current(), &second_proxy));

    // The file disappears: same.
    std::fs::remove_file(&path)?;
    assert!(matches!(
        reloader.check().await,
        ReloadOutcome::Failed(ConfigError::ReadCaFile { .. })
    ));
    assert!(matches!(reloader.check().await, ReloadOutcome::Unchanged));
    assert!(accepts(&auth.current(), &second_proxy));

    // And comes back: published again even though it equals an earlier good bundle.
    write(&path, first.ca_pem())?;
    assert!(matches!(reloader.check().await, ReloadOutcome::Reloaded));
    assert!(accepts(&auth.current(), &first_proxy));
    Ok(())
}

#[tokio::test]
async fn watch_ca_file_needs_a_loadable_file_at_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    let missing = ReloadingAuthenticator::watch_ca_file(
        dir.path().join("nope"),
        vec![],
        HeaderNames::default(),
    );
    assert!(matches!(missing, Err(ConfigError::ReadCaFile { .. })));
    let empty = dir.path().join("empty.crt");
    std::fs::write(&empty, "")?;
    let empty = ReloadingAuthenticator::watch_ca_file(&empty, vec![], HeaderNames::default());
    assert!(matches!(empty, Err(ConfigError::NoCaCertificates)));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn run_polls_the_file_and_stops_when_nobody_reads() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("front-proxy-ca.crt");
    let first = TestCa::new("front-proxy-ca-1")?;
    let second = TestCa::new("front-proxy-ca-2")?;
    write(&path, first.ca_pem())?;
    let (mut auth, reloader) =
        ReloadingAuthenticator::watch_ca_file(&path, vec![], HeaderNames::default())?;
    let (report_tx, mut report_rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(
        reloader
            .interval(Duration::from_secs(10))
            .run(move |outcome| {
                let _ = report_tx.send(outcome.to_string());
            }),
    );

    write(&path, second.ca_pem())?;
    // Paused time advances to the next tick by itself once everything waits.
    assert!(auth.changed().await);
    assert!(accepts(&auth.current(), &second.client_cert("p")?));
    assert_eq!(
        report_rx.recv().await.as_deref(),
        Some("reloaded the requestheader client CA bundle")
    );

    write(&path, "garbage")?;
    let report = report_rx.recv().await.ok_or("no report")?;
    assert!(
        report.starts_with("keeping the previous requestheader client CA bundle"),
        "{report}"
    );
    assert!(accepts(&auth.current(), &second.client_cert("p")?));

    drop(auth);
    tokio::time::timeout(Duration::from_secs(60), task).await??;
    Ok(())
}

fn configmap(ca: &TestCa, username_headers: &str) -> BTreeMap<String, String> {
    [
        ("requestheader-client-ca-file", ca.ca_pem()),
        ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
        ("requestheader-username-headers", username_headers),
        ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
        (
            "requestheader-extra-headers-prefix",
            r#"["X-Remote-Extra-"]"#,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[tokio::test]
async fn configmap_updates_change_the_ca_and_the_header_names() -> TestResult {
    let first = TestCa::new("front-proxy-ca-1")?;
    let second = TestCa::new("front-proxy-ca-2")?;
    let (mut auth, updater) =
        ReloadingAuthenticator::from_configmap(&configmap(&first, r#"["X-Remote-User"]"#))?;
    let proxy = first.client_cert("front-proxy-client")?;
    assert!(accepts(&auth.current(), &proxy));

    // Same data again: nothing published.
    assert!(!updater.apply_configmap(&configmap(&first, r#"["X-Remote-User"]"#))?);

    // A broken update is refused and changes nothing.
    let err = updater
        .apply_configmap(&configmap(&second, r#"["X-Remote-User""#))
        .unwrap_err();
    assert!(matches!(
        err,
        ConfigError::InvalidJson {
            key: "requestheader-username-headers",
            ..
        }
    ));
    assert!(accepts(&auth.current(), &proxy));

    // New header names take effect without a restart: X-Remote-User is no longer read.
    assert!(updater.apply_configmap(&configmap(&first, r#"["X-Other-User"]"#))?);
    assert!(auth.changed().await);
    let mut request = proxy.proxied_request(Request::new(()), &UserInfo::new("alice"))?;
    let refusal = auth
        .current()
        .authenticate(&proxy.chain, request.headers_mut())
        .unwrap_err();
    assert_eq!(refusal, Refusal::MissingUsername);

    // CA rotation through the ConfigMap.
    assert!(updater.apply_configmap(&configmap(&second, r#"["X-Remote-User"]"#))?);
    assert!(!accepts(&auth.current(), &proxy));
    assert!(accepts(
        &auth.current(),
        &second.client_cert("front-proxy-client")?
    ));
    Ok(())
}
