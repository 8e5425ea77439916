//! The `apiregistration.k8s.io/v1` `apiservices` REST API: create, get, list, watch, update,
//! patch (merge, JSON, strategic, apply), delete, deletecollection and the `/status`
//! subresource, with upstream's strategy, validation, Table output and `Status` errors.
//!
//! Status writes by controllers (availability) go through [`StatusWriter`], which applies the
//! same `/status` rules as a client's `PUT …/status`.

pub mod decode;
pub mod encode;
pub mod fields;
pub mod list;
pub mod strategy;
pub mod table;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use apimachinery::table::ListMeta;
use apimachinery::{GroupKind, GroupResource, Status};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIServiceCondition;
use proxy::body::Body;
use serde_json::Value;
use store::{APIService, Store};

use self::decode::FieldValidation;
use self::fields::Scope;
use self::list::{Continue, ListOptions};
use crate::metrics::Metrics;
use crate::request_info::{RequestInfo, parse_bool, query_pairs};
use crate::response;

/// `apiservices.apiregistration.k8s.io`.
pub const GR: GroupResource<'static> = GroupResource {
    group: "apiregistration.k8s.io",
    resource: "apiservices",
};
/// `APIService.apiregistration.k8s.io`.
pub const GK: GroupKind<'static> = GroupKind {
    group: "apiregistration.k8s.io",
    kind: "APIService",
};
const MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";
/// Patch bodies accepted (upstream lists strategic merge too; kubectl uses merge and apply).
pub const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// Maps a store error to the `Status` the API answers (the table agreed with the store).
pub fn store_error(e: store::Error, name: &str) -> Status {
    use store::Error as E;
    match e {
        E::NotFound { name: n } => Status::not_found(GR, if name.is_empty() { &n } else { name }),
        E::AlreadyExists { name: n } => Status::already_exists(GR, &n),
        E::Conflict { name: n, message } => {
            let why = if message.is_empty() {
                MODIFIED.to_owned()
            } else {
                message
            };
            Status::conflict(GR, &n, &why)
        }
        E::TooOld {
            requested,
            oldest_available,
        } => Status::expired(format!(
            "too old resource version: {requested} ({oldest_available})"
        )),
        E::TooNew { requested, current } => {
            let mut s = Status::timeout(
                format!("Timeout: Too large resource version: {requested}, current: {current}"),
                1,
            );
            if let Some(d) = s.details.as_mut() {
                d.causes.push(apimachinery::status::StatusCause {
                    reason: "ResourceVersionTooLarge".into(),
                    message: "Too large resource version".into(),
                    field: String::new(),
                });
            }
            s
        }
        E::InvalidResourceVersion(rv) => {
            Status::bad_request(format!("invalid resource version: {rv:?}"))
        }
        E::Unavailable(m) => Status::service_unavailable(format!("storage is unavailable: {m}")),
        other => Status::internal_error(&other.to_string()),
    }
}

/// Query parameters of writes.
#[derive(Debug, Clone, Default)]
struct WriteOptions {
    dry_run: bool,
    field_manager: Option<String>,
    field_validation: FieldValidation,
    force: Option<bool>,
    pretty: bool,
}

impl WriteOptions {
    fn parse(query: &str) -> Result<Self, Status> {
        let mut o = WriteOptions::default();
        for (k, v) in query_pairs(query) {
            match k.as_str() {
                "dryRun" => match v.as_str() {
                    "All" => o.dry_run = true,
                    "" => {}
                    other => {
                        return Err(Status::bad_request(format!(
                            "dryRun: Unsupported value: {other:?}: supported values: \"All\""
                        )));
                    }
                },
                "fieldManager" => {
                    if v.len() > 128 {
                        return Err(Status::bad_request(
                            "fieldManager: Too long: must have at most 128 bytes",
                        ));
                    }
                    if v.chars().any(|c| c.is_control()) {
                        return Err(Status::bad_request(format!(
                            "fieldManager: Invalid value: {v:?}: must only contain printable characters"
                        )));
                    }
                    o.field_manager = Some(v);
                }
                "fieldValidation" => o.field_validation = FieldValidation::parse(&v)?,
                "force" => {
                    o.force = Some(parse_bool(&v).ok_or_else(|| {
                        Status::bad_request(format!("force: invalid boolean {v:?}"))
                    })?)
                }
                "pretty" => o.pretty = parse_bool(&v).unwrap_or(false),
                _ => {}
            }
        }
        Ok(o)
    }

    fn manager(&self, req: &http::request::Parts) -> String {
        self.field_manager.clone().unwrap_or_else(|| {
            fields::manager_from_user_agent(
                req.headers
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok()),
            )
        })
    }
}

/// The registration API.
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    max_body: usize,
    min_request_timeout: Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

fn random_suffix(n: usize) -> String {
    // Upstream's generateName alphabet (no vowels, no confusable characters).
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = vec![0u8; n];
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

/// A random RFC 4122 version-4 UUID.
pub fn new_uid() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    // Every request gets one (its audit ID): written by hand, 36 bytes, one allocation.
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 15)]));
    }
    out
}

fn to_value(obj: &APIService) -> Result<Value, Status> {
    serde_json::to_value(obj).map_err(|e| Status::internal_error(&e.to_string()))
}

fn from_value(v: Value) -> Result<APIService, Status> {
    serde_json::from_value(v).map_err(|e| {
        Status::bad_request(format!(
            "APIService in version \"v1\" cannot be handled as a APIService: {e}"
        ))
    })
}

/// Objects equal apart from managedFields and resourceVersion (an update that changes nothing
/// is not written, so the resourceVersion stays — upstream does the same).
fn same_content(a: &APIService, b: &APIService) -> bool {
    let strip = |o: &APIService| {
        let mut o = o.clone();
        o.metadata.managed_fields = None;
        o.metadata.resource_version = None;
        o
    };
    strip(a) == strip(b)
}

impl Registry {
    /// A registry over `store`.
    pub fn new(
        store: Arc<dyn Store>,
        max_body: usize,
        min_request_timeout: Duration,
        shutdown: tokio::sync::watch::Receiver<bool>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Registry {
            store,
            max_body,
            min_request_timeout,
            shutdown,
            metrics,
        }
    }

    /// Serves a request under `/apis/apiregistration.k8s.io/v1/`.
    pub async fn serve(&self, req: Request<Body>, info: &RequestInfo) -> Response<Body> {
        match self.dispatch(req, info).await {
            Ok(r) => r,
            Err(s) => response::status(&s),
        }
    }

    async fn dispatch(
        &self,
        req: Request<Body>,
        info: &RequestInfo,
    ) -> Result<Response<Body>, Status> {
        if info.resource != "apiservices" || !info.namespace.is_empty() {
            return Err(Status::not_found_path());
        }
        enum Action {
            List(Option<String>, bool),
            Create,
            DeleteCollection,
            Get(String),
            Update(String, Scope),
            Patch(String, Scope),
            Delete(String),
        }
        let action = {
            let parts: Vec<&str> = info.parts.iter().map(String::as_str).collect();
            let method = req.method().clone();
            let read = method == Method::GET || method == Method::HEAD;
            let watch_path = info.verb == "watch" && req.uri().path().contains("/watch/");
            match parts.as_slice() {
                [_] if read => Action::List(None, watch_path),
                [_] if method == Method::POST => Action::Create,
                [_] if method == Method::DELETE => Action::DeleteCollection,
                [_, name] if read && info.verb == "watch" => {
                    Action::List(Some(name.to_string()), true)
                }
                [_, name] if read => Action::Get(name.to_string()),
                [_, name] if method == Method::PUT => Action::Update(name.to_string(), Scope::Main),
                [_, name] if method == Method::PATCH => {
                    Action::Patch(name.to_string(), Scope::Main)
                }
                [_, name] if method == Method::DELETE => Action::Delete(name.to_string()),
                [_, name, "status"] if read => Action::Get(name.to_string()),
                [_, name, "status"] if method == Method::PUT => {
                    Action::Update(name.to_string(), Scope::Status)
                }
                [_, name, "status"] if method == Method::PATCH => {
                    Action::Patch(name.to_string(), Scope::Status)
                }
                [_] | [_, _] | [_, _, "status"] => return Err(Status::method_not_allowed()),
                _ => return Err(Status::not_found_path()),
            }
        };
        match action {
            Action::List(name, force_watch) => self.list_or_watch(req, name, force_watch).await,
            Action::Create => self.create(req).await,
            Action::DeleteCollection => self.delete_collection(req).await,
            Action::Get(name) => self.get(req, &name).await,
            Action::Update(name, scope) => self.update(req, &name, scope).await,
            Action::Patch(name, scope) => self.patch(req, &name, scope).await,
            Action::Delete(name) => self.delete(req, &name).await,
        }
    }

    async fn read_body(&self, body: Body, headers: &http::HeaderMap) -> Result<Bytes, Status> {
        let limit = self.max_body;
        if let Some(len) = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > limit as u64
        {
            return Err(Status::request_entity_too_large(limit as u64));
        }
        // Collected by hand: `http_body_util::Limited` over a boxed body trips rustc's
        // higher-ranked Send check in async fns.
        let mut body = body;
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| Status::bad_request(format!("error reading the request body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(Status::request_entity_too_large(limit as u64));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    }

    async fn get(&self, req: Request<Body>, name: &str) -> Result<Response<Body>, Status> {
        let opts = ListOptions::parse(req.uri().query().unwrap_or_default())?;
        let output = encode::negotiate(accept(&req), false, false)?;
        let obj = self
            .store
            .get(name)
            .await
            .map_err(|e| store_error(e, name))?;
        Ok(encode::object(
            StatusCode::OK,
            &obj,
            output,
            opts.include_object,
            pretty(&req),
        ))
    }

    async fn list_or_watch(
        &self,
        req: Request<Body>,
        name: Option<String>,
        force_watch: bool,
    ) -> Result<Response<Body>, Status> {
        let query = req.uri().query().unwrap_or_default().to_owned();
        let mut opts = ListOptions::parse(&query)?;
        if force_watch {
            opts.watch = true;
        }
        if opts.watch {
            let output = encode::negotiate(accept(&req), true, true)?;
            let duration = opts.timeout.unwrap_or_else(|| {
                // Upstream: a random duration in [minRequestTimeout, 2*minRequestTimeout).
                let mut b = [0u8; 2];
                let _ = aws_lc_rs::rand::fill(&mut b);
                let frac = f64::from(u16::from_le_bytes(b)) / 65536.0;
                self.min_request_timeout.mul_f64(1.0 + frac)
            });
            let params = watch::WatchParams {
                opts,
                output,
                name,
                duration,
            };
            return watch::start(
                self.store.clone(),
                params,
                self.shutdown.clone(),
                self.metrics.clone(),
            )
            .await;
        }
        let output = encode::negotiate(accept(&req), true, false)?;
        let (result, after) = self.list_at(&opts).await?;
        let page = list::page(
            result.items,
            &opts,
            after.as_deref(),
            &result.resource_version,
        );
        let meta = ListMeta {
            resource_version: Some(result.resource_version),
            continue_: page.continue_token,
            remaining_item_count: page
                .remaining
                .filter(|_| opts.label_selector.is_empty() && opts.field_selector.is_empty()),
        };
        Ok(encode::list(
            &page.items,
            meta,
            output,
            opts.include_object,
            pretty(&req),
        ))
    }

    /// Reads the list `opts` asks for: latest, exact, not-older-than, or a continued page.
    async fn list_at(
        &self,
        opts: &ListOptions,
    ) -> Result<(store::ListResult, Option<String>), Status> {
        if let Some(token) = &opts.continue_token {
            if !opts.resource_version.is_empty() && opts.resource_version != "0" {
                return Err(Status::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let c = Continue::decode(token)?;
            let result = self.store.list(Some(&c.resource_version)).await.map_err(|e| match e {
                store::Error::TooOld { .. } => Status::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ),
                other => store_error(other, ""),
            })?;
            return Ok((result, Some(c.after)));
        }
        let rv = opts.resource_version.as_str();
        if opts.resource_version_match == "Exact" {
            let result = self
                .store
                .list(Some(rv))
                .await
                .map_err(|e| store_error(e, ""))?;
            return Ok((result, None));
        }
        let result = self
            .store
            .list(None)
            .await
            .map_err(|e| store_error(e, ""))?;
        if !rv.is_empty() && rv != "0" {
            // NotOlderThan: the latest list must not be older than the requested revision.
            let ord = self
                .store
                .compare_resource_versions(&result.resource_version, rv)
                .map_err(|e| store_error(e, ""))?;
            if ord == std::cmp::Ordering::Less {
                return Err(store_error(
                    store::Error::TooNew {
                        requested: rv.into(),
                        current: result.resource_version,
                    },
                    "",
                ));
            }
        }
        Ok((result, None))
    }

    async fn create(&self, req: Request<Body>) -> Result<Response<Body>, Status> {
        let (parts, body) = req.into_parts();
        let opts = WriteOptions::parse(parts.uri.query().unwrap_or_default())?;
        let output = encode::negotiate(header(&parts.headers, http::header::ACCEPT), false, false)?;
        let body = self.read_body(body, &parts.headers).await?;
        let parsed =
            decode::parse_object_body(header(&parts.headers, http::header::CONTENT_TYPE), &body)?;
        let warnings =
            decode::check_fields(&parsed.value, &parsed.duplicates, opts.field_validation)
                .map_err(decode::as_object_error)?;
        let obj = decode::to_apiservice(parsed.value)?;
        let created = self
            .create_object(obj, &opts.manager(&parts), opts.dry_run, None)
            .await?;
        let mut r = encode::object(
            StatusCode::CREATED,
            &created,
            output,
            Default::default(),
            opts.pretty,
        );
        response::add_warnings(&mut r, &warnings);
        Ok(r)
    }

    /// The create path shared by POST and apply-creates: system fields, defaults, strategy,
    /// validation, managed fields, store.
    async fn create_object(
        &self,
        mut obj: APIService,
        manager: &str,
        dry_run: bool,
        applied_fields: Option<Value>,
    ) -> Result<APIService, Status> {
        let now = strategy::now();
        if obj
            .metadata
            .resource_version
            .as_deref()
            .is_some_and(|r| !r.is_empty())
        {
            return Err(Status::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        if obj.metadata.name.as_deref().unwrap_or_default().is_empty()
            && let Some(g) = obj
                .metadata
                .generate_name
                .as_deref()
                .filter(|g| !g.is_empty())
        {
            obj.metadata.name = Some(format!("{g}{}", random_suffix(5)));
        }
        obj.metadata.uid = Some(new_uid());
        obj.metadata.creation_timestamp = Some(Time(now));
        obj.metadata.deletion_timestamp = None;
        obj.metadata.deletion_grace_period_seconds = None;
        obj.metadata.self_link = None;
        obj.metadata.generation = None;
        strategy::apply_defaults(&mut obj);
        strategy::prepare_for_create(&mut obj, now);
        let errs = strategy::validate(&obj);
        if !errs.is_empty() {
            return Err(Status::invalid(
                GK,
                obj.metadata.name.as_deref().unwrap_or_default(),
                &errs,
            ));
        }
        let mut v = to_value(&obj)?;
        match applied_fields.and_then(|a| a.pointer("/metadata/managedFields").cloned()) {
            Some(mf) => v["metadata"]["managedFields"] = mf,
            None => {
                if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("managedFields");
                }
                fields::record_update(None, &mut v, manager, Scope::Main, now);
            }
        }
        let obj = from_value(v)?;
        if dry_run {
            return Ok(obj);
        }
        self.store.create(obj).await.map_err(|e| store_error(e, ""))
    }

    async fn update(
        &self,
        req: Request<Body>,
        name: &str,
        scope: Scope,
    ) -> Result<Response<Body>, Status> {
        let (parts, body) = req.into_parts();
        let opts = WriteOptions::parse(parts.uri.query().unwrap_or_default())?;
        let output = encode::negotiate(header(&parts.headers, http::header::ACCEPT), false, false)?;
        let body = self.read_body(body, &parts.headers).await?;
        let parsed =
            decode::parse_object_body(header(&parts.headers, http::header::CONTENT_TYPE), &body)?;
        let warnings =
            decode::check_fields(&parsed.value, &parsed.duplicates, opts.field_validation)
                .map_err(decode::as_object_error)?;
        let new = decode::to_apiservice(parsed.value)?;
        let body_name = new.metadata.name.clone().unwrap_or_default();
        if body_name != name {
            return Err(Status::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let old = self
            .store
            .get(name)
            .await
            .map_err(|e| store_error(e, name))?;
        let (code, stored) = self
            .update_object(old, new, scope, &opts.manager(&parts), opts.dry_run, false)
            .await?;
        let mut r = encode::object(code, &stored, output, Default::default(), opts.pretty);
        response::add_warnings(&mut r, &warnings);
        Ok(r)
    }

    /// The update path shared by PUT, PATCH and status writers: system fields from the stored
    /// object, strategy, validation, managed fields, finalizer-driven deletion, store.
    async fn update_object(
        &self,
        old: APIService,
        mut new: APIService,
        scope: Scope,
        manager: &str,
        dry_run: bool,
        managed_fields_done: bool,
    ) -> Result<(StatusCode, APIService), Status> {
        let now = strategy::now();
        let name = old.metadata.name.clone().unwrap_or_default();
        if new.metadata.uid.as_deref().unwrap_or_default().is_empty() {
            new.metadata.uid = old.metadata.uid.clone();
        }
        if old.metadata.creation_timestamp.is_some() {
            new.metadata.creation_timestamp = old.metadata.creation_timestamp.clone();
        }
        if old.metadata.deletion_timestamp.is_some() {
            new.metadata.deletion_timestamp = old.metadata.deletion_timestamp.clone();
            new.metadata.deletion_grace_period_seconds = old.metadata.deletion_grace_period_seconds;
        }
        new.metadata.generation = old.metadata.generation;
        let errs = match scope {
            Scope::Main => {
                strategy::apply_defaults(&mut new);
                strategy::prepare_for_update(&mut new, &old);
                strategy::validate_update(&new, &old)
            }
            Scope::Status => {
                strategy::prepare_for_status_update(&mut new, &old);
                strategy::validate_status_update(&new, &old)
            }
        };
        if !errs.is_empty() {
            return Err(Status::invalid(GK, &name, &errs));
        }
        if new.metadata.resource_version != old.metadata.resource_version {
            return Err(Status::conflict(GR, &name, MODIFIED));
        }
        if !managed_fields_done {
            new.metadata.managed_fields = old.metadata.managed_fields.clone();
        }
        let owners_same =
            !managed_fields_done || new.metadata.managed_fields == old.metadata.managed_fields;
        if same_content(&new, &old) && owners_same {
            return Ok((StatusCode::OK, old));
        }
        if !managed_fields_done {
            let old_v = to_value(&old)?;
            let mut v = to_value(&new)?;
            fields::record_update(Some(&old_v), &mut v, manager, scope, now);
            new = from_value(v)?;
        }
        if dry_run {
            return Ok((StatusCode::OK, new));
        }
        // The last finalizer of an object being deleted is gone: the deletion completes.
        if new.metadata.deletion_timestamp.is_some()
            && new.metadata.finalizers.as_ref().is_none_or(Vec::is_empty)
        {
            let pre = store::Preconditions {
                resource_version: old.metadata.resource_version.clone(),
                uid: None,
            };
            let gone = self
                .store
                .delete(&name, Some(&pre))
                .await
                .map_err(|e| store_error(e, &name))?;
            return Ok((StatusCode::OK, gone));
        }
        let stored = self
            .store
            .update(new)
            .await
            .map_err(|e| store_error(e, &name))?;
        Ok((StatusCode::OK, stored))
    }

    async fn patch(
        &self,
        req: Request<Body>,
        name: &str,
        scope: Scope,
    ) -> Result<Response<Body>, Status> {
        let (parts, body) = req.into_parts();
        let opts = WriteOptions::parse(parts.uri.query().unwrap_or_default())?;
        let output = encode::negotiate(header(&parts.headers, http::header::ACCEPT), false, false)?;
        let ct = header(&parts.headers, http::header::CONTENT_TYPE)
            .and_then(apimachinery::negotiate::MediaType::parse)
            .map(|m| m.essence())
            .unwrap_or_default();
        if !PATCH_TYPES.contains(&ct.as_str()) {
            return Err(Status::unsupported_media_type(PATCH_TYPES));
        }
        let is_apply = ct == "application/apply-patch+yaml";
        let manager = opts.manager(&parts);
        if is_apply && opts.field_manager.as_deref().unwrap_or_default().is_empty() {
            return Err(Status::invalid(
                GroupKind {
                    group: "meta.k8s.io",
                    kind: "PatchOptions",
                },
                "",
                &[apimachinery::FieldError::required(
                    apimachinery::FieldPath::new("fieldManager"),
                    "is required for apply patch",
                )],
            ));
        }
        if !is_apply && opts.force.is_some() {
            return Err(Status::invalid(
                GroupKind {
                    group: "meta.k8s.io",
                    kind: "PatchOptions",
                },
                "",
                &[apimachinery::FieldError::forbidden(
                    apimachinery::FieldPath::new("force"),
                    "may not be specified for non-apply patch",
                )],
            ));
        }
        let body = self.read_body(body, &parts.headers).await?;
        let parsed = if is_apply {
            decode::parse_yaml(&body)
        } else {
            decode::parse_json(&body)
        }
        .map_err(|e| Status::bad_request(format!("error decoding patch: {e}")))?;
        let mut warnings =
            decode::check_fields(&Value::Null, &parsed.duplicates, opts.field_validation)?;
        let patch = parsed.value;
        let patch_rv = patch
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);

        // Retry on conflicts when the patch did not pin a resourceVersion (as upstream).
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = match self.store.get(name).await {
                Ok(c) => Some(c),
                Err(store::Error::NotFound { .. }) if is_apply && scope == Scope::Main => None,
                Err(e) => return Err(store_error(e, name)),
            };
            let Some(current) = current else {
                // Apply creates.
                if patch
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n != name)
                {
                    return Err(Status::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        patch
                            .pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                    )));
                }
                let mut cfg = patch.clone();
                if let Value::Object(m) = &mut cfg {
                    let meta = m
                        .entry("metadata")
                        .or_insert_with(|| Value::Object(Default::default()));
                    if let Value::Object(meta) = meta {
                        meta.insert("name".into(), Value::from(name));
                    }
                }
                warnings.extend(decode::check_fields(&cfg, &[], opts.field_validation)?);
                let applied = fields::apply(None, &cfg, &manager, scope, false, strategy::now())?;
                let obj = decode::to_apiservice(applied.clone())?;
                let created = self
                    .create_object(obj, &manager, opts.dry_run, Some(applied))
                    .await?;
                let mut r = encode::object(
                    StatusCode::CREATED,
                    &created,
                    output,
                    Default::default(),
                    opts.pretty,
                );
                response::add_warnings(&mut r, &warnings);
                return Ok(r);
            };
            let cur_value = to_value(&current)?;
            let mut patched = cur_value.clone();
            match ct.as_str() {
                "application/merge-patch+json" => fields::merge_patch(&mut patched, &patch),
                "application/strategic-merge-patch+json" => fields::strategic_merge_patch(&mut patched, &patch),
                "application/json-patch+json" => fields::json_patch(&mut patched, &patch).map_err(|e| {
                    Status::failure(apimachinery::Reason::Invalid, format!("the server rejected our request due to an error in our request: {e}"))
                })?,
                _ => {
                    patched = fields::apply(Some(&cur_value), &patch, &manager, scope, opts.force.unwrap_or(false), strategy::now())?;
                }
            }
            let field_warnings = decode::check_fields(&patched, &[], opts.field_validation)?;
            let mut new = decode::to_apiservice(patched)?;
            if new.metadata.name.as_deref() != Some(name) {
                return Err(Status::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    new.metadata.name.as_deref().unwrap_or_default()
                )));
            }
            match &patch_rv {
                Some(rv) if Some(rv) != current.metadata.resource_version.as_ref() => {
                    return Err(Status::conflict(GR, name, MODIFIED));
                }
                _ => new.metadata.resource_version = current.metadata.resource_version.clone(),
            }
            match self
                .update_object(current, new, scope, &manager, opts.dry_run, is_apply)
                .await
            {
                Ok((code, stored)) => {
                    let mut r =
                        encode::object(code, &stored, output, Default::default(), opts.pretty);
                    warnings.extend(field_warnings);
                    response::add_warnings(&mut r, &warnings);
                    return Ok(r);
                }
                Err(s)
                    if s.code == 409
                        && s.reason == "Conflict"
                        && patch_rv.is_none()
                        && attempt < 5 =>
                {
                    continue;
                }
                Err(s) => return Err(s),
            }
        }
    }

    async fn delete(&self, req: Request<Body>, name: &str) -> Result<Response<Body>, Status> {
        let (parts, body) = req.into_parts();
        let query = WriteOptions::parse(parts.uri.query().unwrap_or_default())?;
        let output = encode::negotiate(header(&parts.headers, http::header::ACCEPT), false, false)?;
        let body = self.read_body(body, &parts.headers).await?;
        let opts = DeleteOptions::parse(&body, query.dry_run)?;
        let current = self
            .store
            .get(name)
            .await
            .map_err(|e| store_error(e, name))?;
        if let Some(uid) = &opts.preconditions.uid
            && current.metadata.uid.as_ref() != Some(uid)
        {
            return Err(Status::conflict(
                GR,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    current.metadata.uid.as_deref().unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &opts.preconditions.resource_version
            && current.metadata.resource_version.as_ref() != Some(rv)
        {
            return Err(Status::conflict(
                GR,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    current
                        .metadata
                        .resource_version
                        .as_deref()
                        .unwrap_or_default()
                ),
            ));
        }
        // Finalizers keep the object: mark it deleted and let their owners finish (§ graceful
        // deletion). Without dependents there is nothing for foreground/orphan to wait for.
        if current
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| !f.is_empty())
        {
            if current.metadata.deletion_timestamp.is_some() || opts.dry_run {
                return Ok(encode::object(
                    StatusCode::OK,
                    &current,
                    output,
                    Default::default(),
                    query.pretty,
                ));
            }
            let mut marked = current.clone();
            marked.metadata.deletion_timestamp = Some(Time(strategy::now()));
            marked.metadata.deletion_grace_period_seconds = Some(0);
            let stored = self
                .store
                .update(marked)
                .await
                .map_err(|e| store_error(e, name))?;
            return Ok(encode::object(
                StatusCode::OK,
                &stored,
                output,
                Default::default(),
                query.pretty,
            ));
        }
        let gone = if opts.dry_run {
            current
        } else {
            let pre = store::Preconditions {
                resource_version: opts
                    .preconditions
                    .resource_version
                    .clone()
                    .or(current.metadata.resource_version.clone()),
                uid: opts.preconditions.uid.clone(),
            };
            self.store
                .delete(name, Some(&pre))
                .await
                .map_err(|e| store_error(e, name))?
        };
        let status = Status::success(Some(apimachinery::status::StatusDetails {
            name: name.into(),
            group: GR.group.into(),
            kind: GR.resource.into(),
            uid: gone.metadata.uid.clone().unwrap_or_default(),
            ..Default::default()
        }));
        Ok(response::json(StatusCode::OK, &status))
    }

    async fn delete_collection(&self, req: Request<Body>) -> Result<Response<Body>, Status> {
        let (parts, body) = req.into_parts();
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let wopts = WriteOptions::parse(&query)?;
        let lopts = ListOptions::parse(&query)?;
        let output = encode::negotiate(header(&parts.headers, http::header::ACCEPT), true, false)?;
        let body = self.read_body(body, &parts.headers).await?;
        let dopts = DeleteOptions::parse(&body, wopts.dry_run)?;
        let list = self
            .store
            .list(None)
            .await
            .map_err(|e| store_error(e, ""))?;
        let mut deleted = Vec::new();
        for obj in list.items.into_iter().filter(|o| lopts.matches(o)) {
            let name = obj.metadata.name.clone().unwrap_or_default();
            if dopts.dry_run {
                deleted.push(obj);
                continue;
            }
            if obj
                .metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| !f.is_empty())
            {
                if obj.metadata.deletion_timestamp.is_none() {
                    let mut marked = obj.clone();
                    marked.metadata.deletion_timestamp = Some(Time(strategy::now()));
                    marked.metadata.deletion_grace_period_seconds = Some(0);
                    match self.store.update(marked).await {
                        Ok(o) => deleted.push(o),
                        Err(store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(store_error(e, &name)),
                    }
                }
                continue;
            }
            match self.store.delete(&name, None).await {
                Ok(o) => deleted.push(o),
                Err(store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(e, &name)),
            }
        }
        let meta = ListMeta {
            resource_version: Some(list.resource_version),
            ..ListMeta::default()
        };
        Ok(encode::list(
            &deleted,
            meta,
            output,
            lopts.include_object,
            wopts.pretty,
        ))
    }

    /// A writer of `status.conditions` for controllers (e.g. availability).
    pub fn status_writer(&self) -> StatusWriter {
        StatusWriter {
            registry: self.clone(),
        }
    }
}

/// Writes APIService conditions the way `PUT …/status` does (strategy, validation, managed
/// fields as `manager`), skipping the write when nothing changes and retrying on conflicts.
/// The availability controller uses it.
#[derive(Debug, Clone)]
pub struct StatusWriter {
    registry: Registry,
}

/// What [`StatusWriter::update_condition`] did.
#[derive(Debug, Clone)]
pub struct ConditionUpdate {
    /// The condition of that type as stored just before (`None` when there was none).
    pub previous: Option<APIServiceCondition>,
    /// The stored object afterwards (the one read when nothing was written).
    pub object: APIService,
    /// Whether the condition was written (false when it already matched).
    pub written: bool,
}

impl StatusWriter {
    /// Sets `condition` on APIService `name` (lastTransitionTime kept unless the status
    /// flips). Returns the stored object, unchanged when the condition already matched.
    pub async fn set_condition(
        &self,
        name: &str,
        condition: APIServiceCondition,
        manager: &str,
    ) -> Result<APIService, Status> {
        match self
            .update_condition(name, condition, manager, |_| true)
            .await?
        {
            Some(update) => Ok(update.object),
            None => Err(Status::conflict(GR, name, MODIFIED)),
        }
    }

    /// Sets `condition` on APIService `name` if the stored object still satisfies `still_valid`
    /// (e.g. its spec is the one a probe ran against), comparing before writing and retrying on
    /// conflicts, so several replicas writing the same result write it once. `Ok(None)` when
    /// `still_valid` refused the stored object.
    pub async fn update_condition(
        &self,
        name: &str,
        condition: APIServiceCondition,
        manager: &str,
        still_valid: impl Fn(&APIService) -> bool + Send + Sync,
    ) -> Result<Option<ConditionUpdate>, Status> {
        for _ in 0..5 {
            let current = self
                .registry
                .store
                .get(name)
                .await
                .map_err(|e| store_error(e, name))?;
            if !still_valid(&current) {
                return Ok(None);
            }
            let previous = current
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == condition.type_))
                .cloned();
            let mut next = current.clone();
            let mut cond = condition.clone();
            if cond.last_transition_time.is_none() {
                cond.last_transition_time = Some(Time(strategy::now()));
            }
            if !strategy::set_condition(&mut next, cond) {
                return Ok(Some(ConditionUpdate {
                    previous,
                    object: current,
                    written: false,
                }));
            }
            match self
                .registry
                .update_object(current, next, Scope::Status, manager, false, false)
                .await
            {
                Ok((_, stored)) => {
                    return Ok(Some(ConditionUpdate {
                        previous,
                        object: stored,
                        written: true,
                    }));
                }
                Err(s) if s.code == 409 => continue,
                Err(s) => return Err(s),
            }
        }
        Err(Status::conflict(GR, name, MODIFIED))
    }
}

/// `DeleteOptions` from the body (kubectl sends `{"propagationPolicy":"Background"}`).
#[derive(Debug, Clone, Default)]
struct DeleteOptions {
    dry_run: bool,
    preconditions: store::Preconditions,
}

impl DeleteOptions {
    fn parse(body: &[u8], dry_run_query: bool) -> Result<Self, Status> {
        let mut o = DeleteOptions {
            dry_run: dry_run_query,
            ..DeleteOptions::default()
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(o);
        }
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| Status::bad_request(format!("error decoding DeleteOptions: {e}")))?;
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str)
            && !matches!(p, "Background" | "Foreground" | "Orphan")
        {
            return Err(Status::invalid(
                GroupKind {
                    group: "meta.k8s.io",
                    kind: "DeleteOptions",
                },
                "",
                &[apimachinery::FieldError::not_supported(
                    apimachinery::FieldPath::new("propagationPolicy"),
                    p,
                    &["Foreground", "Background", "Orphan", "nil"],
                )],
            ));
        }
        if let Some(Value::Array(d)) = v.get("dryRun") {
            o.dry_run |= d.iter().any(|x| x == "All");
        }
        if let Some(pre) = v.get("preconditions") {
            o.preconditions.uid = pre.get("uid").and_then(Value::as_str).map(str::to_owned);
            o.preconditions.resource_version = pre
                .get("resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
        Ok(o)
    }
}

fn header(h: &http::HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn accept(req: &Request<Body>) -> Option<&str> {
    header(req.headers(), http::header::ACCEPT)
}

fn pretty(req: &Request<Body>) -> bool {
    query_pairs(req.uri().query().unwrap_or_default())
        .iter()
        .any(|(k, v)| k == "pretty" && parse_bool(v).unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_look_like_uuids() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uid());
        assert_eq!(random_suffix(5).len(), 5);
    }

    #[test]
    fn store_errors_map_to_statuses() {
        let s = store_error(store::Error::NotFound { name: "x".into() }, "x");
        assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
        let s = store_error(store::Error::AlreadyExists { name: "x".into() }, "");
        assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
        let s = store_error(
            store::Error::Conflict {
                name: "x".into(),
                message: String::new(),
            },
            "x",
        );
        assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
        assert!(s.message.ends_with(MODIFIED));
        let s = store_error(
            store::Error::TooOld {
                requested: "1".into(),
                oldest_available: "5".into(),
            },
            "",
        );
        assert_eq!(
            (s.code, s.reason.as_str(), s.message.as_str()),
            (410, "Expired", "too old resource version: 1 (5)")
        );
        let s = store_error(
            store::Error::TooNew {
                requested: "9".into(),
                current: "5".into(),
            },
            "",
        );
        assert_eq!((s.code, s.reason.as_str()), (504, "Timeout"));
        assert_eq!(
            store_error(store::Error::InvalidResourceVersion("x".into()), "").code,
            400
        );
        assert_eq!(
            store_error(store::Error::Unavailable("down".into()), "").code,
            503
        );
        assert_eq!(
            store_error(store::Error::Internal("boom".into()), "").code,
            500
        );
    }

    #[test]
    fn delete_options() {
        let o = DeleteOptions::parse(b"{\"propagationPolicy\":\"Background\"}\n", false);
        assert!(o.is_ok_and(|o| !o.dry_run));
        let o = DeleteOptions::parse(br#"{"preconditions":{"uid":"u"},"dryRun":["All"]}"#, false);
        assert!(o.is_ok_and(|o| o.dry_run && o.preconditions.uid.as_deref() == Some("u")));
        assert!(
            DeleteOptions::parse(br#"{"propagationPolicy":"Later"}"#, false)
                .is_err_and(|s| s.code == 422)
        );
        assert!(DeleteOptions::parse(b"nope", false).is_err_and(|s| s.code == 400));
    }
}
