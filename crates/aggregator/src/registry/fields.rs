//! Patches and field ownership: JSON merge patch (RFC 7386), JSON patch (RFC 6902), a
//! strategic merge patch reduced to what APIService needs, and `metadata.managedFields` with
//! server-side apply (`application/apply-patch+yaml`) as far as `kubectl apply --server-side`
//! needs it.
//!
//! Ownership is tracked per leaf field (lists are atomic, as APIService has no mergeable list a
//! client edits). Update operations give the manager the fields it changed and take them from
//! others; an apply owns exactly the fields of its configuration, removes the fields it owned
//! before and no longer applies (unless someone else owns them), and conflicts with other
//! managers that own a field it sets to a different value (409 unless `force=true`).

use std::collections::BTreeSet;

use apimachinery::Status;
use serde_json::{Map, Value};

/// A field path, e.g. `["spec", "versionPriority"]`.
pub type Path = Vec<String>;

/// Fields the system owns; never tracked.
const IGNORED_METADATA: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Which part of the object an operation may touch (upstream's reset fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource: everything but `status`.
    Main,
    /// `/status`: only `status`.
    Status,
}

impl Scope {
    fn subresource(self) -> Option<&'static str> {
        match self {
            Scope::Main => None,
            Scope::Status => Some("status"),
        }
    }

    fn tracks(self, top: &str) -> bool {
        match self {
            Scope::Main => !matches!(top, "apiVersion" | "kind" | "status"),
            Scope::Status => top == "status",
        }
    }
}

/// The leaf fields of `v` that `scope` tracks: scalars, arrays and empty objects.
pub fn leaves(v: &Value, scope: Scope) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    if let Value::Object(m) = v {
        for (k, child) in m {
            if !scope.tracks(k) {
                continue;
            }
            if k == "metadata" {
                if let Value::Object(meta) = child {
                    for (mk, mv) in meta {
                        if !IGNORED_METADATA.contains(&mk.as_str()) {
                            collect(mv, vec![k.clone(), mk.clone()], &mut out);
                        }
                    }
                }
                continue;
            }
            collect(child, vec![k.clone()], &mut out);
        }
    }
    out
}

fn collect(v: &Value, path: Path, out: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let mut p = path.clone();
                p.push(k.clone());
                collect(child, p, out);
            }
        }
        _ => {
            out.insert(path);
        }
    }
}

/// The value at `path`.
pub fn get<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(k))
}

fn set(v: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(m) = cur else { return };
        cur = m
            .entry(k.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    if let Value::Object(m) = cur {
        m.insert(last.clone(), value);
    }
}

fn remove(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        match cur.get_mut(k) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Value::Object(m) = cur {
        m.remove(last);
    }
}

/// `.spec.versionPriority`, as upstream prints field paths in conflicts.
pub fn display(path: &[String]) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

fn to_fields_v1(set: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for k in path {
            let entry = cur
                .entry(format!("f:{k}"))
                .or_insert_with(|| Value::Object(Map::new()));
            match entry {
                Value::Object(m) => cur = m,
                _ => break,
            }
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
        let Value::Object(m) = v else { return };
        let children: Vec<(&String, &Value)> =
            m.iter().filter(|(k, _)| k.starts_with("f:")).collect();
        if children.is_empty() {
            if !path.is_empty() {
                out.insert(path.clone());
            }
            return;
        }
        for (k, child) in children {
            path.push(k[2..].to_owned());
            walk(child, path, out);
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    subresource: Option<String>,
    time: Option<String>,
    fields: BTreeSet<Path>,
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    get(obj, &["metadata".into(), "managedFields".into()])
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|e| {
                    Some(Entry {
                        manager: e.get("manager")?.as_str()?.to_owned(),
                        operation: e.get("operation")?.as_str()?.to_owned(),
                        subresource: e
                            .get("subresource")
                            .and_then(Value::as_str)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned),
                        time: e.get("time").and_then(Value::as_str).map(str::to_owned),
                        fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut m = Map::new();
            m.insert("manager".into(), Value::from(e.manager.clone()));
            m.insert("operation".into(), Value::from(e.operation.clone()));
            m.insert(
                "apiVersion".into(),
                Value::from("apiregistration.k8s.io/v1"),
            );
            if let Some(t) = &e.time {
                m.insert("time".into(), Value::from(t.clone()));
            }
            m.insert("fieldsType".into(), Value::from("FieldsV1"));
            m.insert("fieldsV1".into(), to_fields_v1(&e.fields));
            if let Some(s) = &e.subresource {
                m.insert("subresource".into(), Value::from(s.clone()));
            }
            Value::Object(m)
        })
        .collect();
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn rfc3339(now: jiff::Timestamp) -> String {
    jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", now).unwrap_or_default()
}

/// Records an update operation (create, update, patch) by `manager` on `new` (whose
/// `managedFields` are replaced by those of `old`, updated).
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    scope: Scope,
    now: jiff::Timestamp,
) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let old_leaves = old.map(|o| leaves(o, scope)).unwrap_or_default();
    let new_leaves = leaves(new, scope);
    let changed: BTreeSet<Path> = new_leaves
        .iter()
        .filter(|p| old.and_then(|o| get(o, p)) != get(new, p))
        .cloned()
        .collect();
    let removed: BTreeSet<Path> = old_leaves.difference(&new_leaves).cloned().collect();
    let sub = scope.subresource().map(str::to_owned);
    for e in entries.iter_mut() {
        e.fields.retain(|p| !removed.contains(p));
        let me = e.manager == manager && e.operation == "Update" && e.subresource == sub;
        if !me {
            e.fields.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.manager == manager && e.operation == "Update" && e.subresource == sub)
        {
            Some(e) => {
                e.fields.extend(changed);
                e.time = Some(rfc3339(now));
            }
            None => entries.push(Entry {
                manager: manager.to_owned(),
                operation: "Update".into(),
                subresource: sub,
                time: Some(rfc3339(now)),
                fields: changed,
            }),
        }
    }
    write_entries(new, &entries);
}

/// Server-side apply of `config` by `manager` onto `current` (`None` when the object does not
/// exist yet). Returns the new object with its `managedFields`, or a 409 listing conflicts.
pub fn apply(
    current: Option<&Value>,
    config: &Value,
    manager: &str,
    scope: Scope,
    force: bool,
    now: jiff::Timestamp,
) -> Result<Value, Status> {
    let applied = leaves(config, scope);
    let sub = scope.subresource().map(str::to_owned);
    let is_me = |e: &Entry| e.manager == manager && e.operation == "Apply" && e.subresource == sub;
    let Some(current) = current else {
        let mut obj = config.clone();
        if scope == Scope::Main
            && let Value::Object(m) = &mut obj
        {
            m.remove("status");
        }
        let entries = vec![Entry {
            manager: manager.into(),
            operation: "Apply".into(),
            subresource: sub,
            time: Some(rfc3339(now)),
            fields: applied,
        }];
        write_entries(&mut obj, &entries);
        return Ok(obj);
    };
    let mut entries = read_entries(current);
    let differs = |p: &Path| get(current, p) != get(config, p);

    let mut conflicts: Vec<(String, String)> = Vec::new();
    for e in entries.iter().filter(|e| !is_me(e)) {
        for p in e.fields.intersection(&applied) {
            if differs(p) {
                conflicts.push((e.manager.clone(), display(p)));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(Status::apply_conflict(&conflicts));
    }

    let mut obj = current.clone();
    let previous: BTreeSet<Path> = entries
        .iter()
        .filter(|e| is_me(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    for p in previous.difference(&applied) {
        let owned_by_other = entries.iter().any(|e| !is_me(e) && e.fields.contains(p));
        if !owned_by_other {
            remove(&mut obj, p);
        }
    }
    for p in &applied {
        if let Some(v) = get(config, p) {
            set(&mut obj, p, v.clone());
        }
    }
    let taken: BTreeSet<Path> = applied.iter().filter(|p| differs(p)).cloned().collect();
    for e in entries.iter_mut().filter(|e| !is_me(e)) {
        e.fields.retain(|p| !taken.contains(p));
    }
    match entries.iter_mut().find(|e| is_me(e)) {
        Some(e) => {
            if e.fields != applied {
                e.time = Some(rfc3339(now));
            }
            e.fields = applied;
        }
        None => entries.push(Entry {
            manager: manager.into(),
            operation: "Apply".into(),
            subresource: sub,
            time: Some(rfc3339(now)),
            fields: applied,
        }),
    }
    write_entries(&mut obj, &entries);
    Ok(obj)
}

/// The default field manager of a request without `fieldManager`: the `User-Agent` up to the
/// first `/` (upstream's `prefixFromUserAgent`), at most 128 bytes.
pub fn manager_from_user_agent(ua: Option<&str>) -> String {
    let ua = ua.unwrap_or_default();
    let prefix = ua.split('/').next().unwrap_or_default();
    let mut s: String = prefix.chars().filter(|c| !c.is_control()).collect();
    while s.len() > 128 {
        s.pop();
    }
    s
}

/// Applies an RFC 7386 merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Applies an RFC 6902 JSON patch; `Err` is the message for a 422/400.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let p: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(target, &p).map_err(|e| e.to_string())
}

/// A strategic merge patch for APIService: a merge patch whose `$`-directives are dropped and
/// whose `status.conditions` merge by `type` (`patchMergeKey=type`).
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let mut patch = patch.clone();
    let conditions = get(&patch, &["status".into(), "conditions".into()])
        .and_then(Value::as_array)
        .cloned();
    strip_directives(&mut patch);
    if let Some(new_conds) = conditions {
        let mut merged: Vec<Value> = get(target, &["status".into(), "conditions".into()])
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for c in new_conds {
            let t = c.get("type").cloned();
            match merged.iter_mut().find(|m| m.get("type") == t.as_ref()) {
                Some(m) => json_patch::merge(m, &c),
                None => merged.push(c),
            }
        }
        if let Some(Value::Object(s)) = patch.get_mut("status") {
            s.insert("conditions".into(), Value::Array(merged));
        }
    }
    json_patch::merge(target, &patch);
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            for child in m.values_mut() {
                strip_directives(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(s).unwrap_or_default()
    }

    #[test]
    fn leaves_skip_system_fields() {
        let v = json!({"apiVersion":"x","kind":"APIService","metadata":{"name":"a","uid":"u","labels":{"k":"v"}},
            "spec":{"group":"g","service":{"name":"s"}},"status":{"conditions":[]}});
        let l: Vec<String> = leaves(&v, Scope::Main).iter().map(|p| display(p)).collect();
        assert_eq!(
            l,
            [".metadata.labels.k", ".spec.group", ".spec.service.name"]
        );
        let s: Vec<String> = leaves(&v, Scope::Status)
            .iter()
            .map(|p| display(p))
            .collect();
        assert_eq!(s, [".status.conditions"]);
    }

    #[test]
    fn updates_move_ownership() {
        let old = json!({"metadata":{"name":"a"},"spec":{"group":"g","versionPriority":1}});
        let mut created = old.clone();
        record_update(None, &mut created, "kubectl-create", Scope::Main, t(1));
        assert_eq!(
            created["metadata"]["managedFields"][0]["manager"],
            "kubectl-create"
        );
        assert_eq!(
            created["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:spec":{"f:group":{},"f:versionPriority":{}}})
        );

        let mut labelled = created.clone();
        labelled["metadata"]["labels"] = json!({"foo":"bar"});
        labelled["spec"]["versionPriority"] = json!(2);
        record_update(
            Some(&created),
            &mut labelled,
            "kubectl-label",
            Scope::Main,
            t(2),
        );
        let mf = labelled["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(mf.len(), 2);
        assert_eq!(mf[0]["fieldsV1"], json!({"f:spec":{"f:group":{}}}));
        assert_eq!(
            mf[1]["fieldsV1"],
            json!({"f:metadata":{"f:labels":{"f:foo":{}}},"f:spec":{"f:versionPriority":{}}})
        );
    }

    #[test]
    fn apply_creates_conflicts_forces_and_prunes() {
        let cfg1 = json!({"apiVersion":"apiregistration.k8s.io/v1","kind":"APIService","metadata":{"name":"v1.g","labels":{"a":"1"}},
            "spec":{"group":"g","version":"v1","groupPriorityMinimum":10,"versionPriority":5},"status":{"conditions":[]}});
        let created = apply(None, &cfg1, "kubectl", Scope::Main, false, t(1)).unwrap_or_default();
        assert!(
            created.get("status").is_none(),
            "status is reset on the main resource"
        );
        assert_eq!(
            created["metadata"]["managedFields"][0]["operation"],
            "Apply"
        );

        // Another manager changes versionPriority with an update.
        let mut edited = created.clone();
        edited["spec"]["versionPriority"] = json!(7);
        record_update(Some(&created), &mut edited, "editor", Scope::Main, t(2));

        // Re-applying the old value conflicts with the editor.
        let err = apply(Some(&edited), &cfg1, "kubectl", Scope::Main, false, t(3)).err();
        let err = err.unwrap_or_else(|| Status::bad_request("expected a conflict"));
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"editor\": .spec.versionPriority"
        );

        // Forcing takes the field; dropping the label from the config removes it.
        let mut cfg2 = cfg1.clone();
        cfg2["metadata"]["labels"] = json!({});
        cfg2["metadata"].as_object_mut().map(|m| m.remove("labels"));
        let forced =
            apply(Some(&edited), &cfg2, "kubectl", Scope::Main, true, t(4)).unwrap_or_default();
        assert_eq!(forced["spec"]["versionPriority"], 5);
        assert!(
            forced["metadata"]
                .get("labels")
                .is_none_or(|l| l.get("a").is_none()),
            "{forced}"
        );
        let managers: Vec<&str> = forced["metadata"]["managedFields"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["manager"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(managers, ["kubectl"], "the editor owned nothing else");

        // Applying the same config again is a no-op on values and owners.
        let same =
            apply(Some(&forced), &cfg2, "kubectl", Scope::Main, false, t(5)).unwrap_or_default();
        assert_eq!(same, forced);
    }

    #[test]
    fn patches() {
        let mut v = json!({"metadata":{"labels":{"a":"1","b":"2"}},"spec":{"group":"g"}});
        merge_patch(&mut v, &json!({"metadata":{"labels":{"a":null,"c":"3"}}}));
        assert_eq!(v["metadata"]["labels"], json!({"b":"2","c":"3"}));
        assert!(
            json_patch(
                &mut v,
                &json!([{"op":"replace","path":"/spec/group","value":"h"}])
            )
            .is_ok()
        );
        assert_eq!(v["spec"]["group"], "h");
        assert!(
            json_patch(
                &mut v,
                &json!([{"op":"test","path":"/spec/group","value":"x"}])
            )
            .is_err()
        );
        assert!(json_patch(&mut v, &json!({"op":"nope"})).is_err());

        let mut s = json!({"status":{"conditions":[{"type":"Available","status":"True"},{"type":"Other","status":"False"}]}});
        strategic_merge_patch(
            &mut s,
            &json!({"$retainKeys":["x"],"status":{"conditions":[{"type":"Available","status":"False"}]}}),
        );
        assert_eq!(
            s["status"]["conditions"],
            json!([{"type":"Available","status":"False"},{"type":"Other","status":"False"}])
        );
        assert_eq!(
            manager_from_user_agent(Some("kubectl/v1.32.4 (linux/amd64) kubernetes/4cb5f07")),
            "kubectl"
        );
        assert_eq!(manager_from_user_agent(None), "");
    }
}
