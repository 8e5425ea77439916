//! OpenAPI v3 for the registration API, generated here once at start-up: the `/openapi/v3`
//! index and `/openapi/v3/apis/apiregistration.k8s.io/v1` with what kubectl needs
//! (kubectl-wire.md §3.2: the GVK on the list GET and on the schemas, a PATCH that lists the
//! `fieldValidation` parameter and only merge/JSON/apply patch bodies, descriptions for
//! `kubectl explain`), served with kube-openapi's `?hash=` semantics.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use proxy::{OpenApiV3Index, OpenApiV3Path};
use serde_json::{Value, json};

const AGG: &str = "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1";
const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";
const GVK: fn(&str) -> Value =
    |kind| json!({"group": "apiregistration.k8s.io", "kind": kind, "version": "v1"});

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn all_of(name: &str, description: &str) -> Value {
    json!({"allOf": [r(name)], "description": description})
}

fn agg(n: &str) -> String {
    format!("{AGG}.{n}")
}

fn meta(n: &str) -> String {
    format!("{META}.{n}")
}

fn query(name: &str, description: &str, ty: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": ty, "uniqueItems": true}})
}

fn content(schema: &str) -> Value {
    json!({
        "application/json": {"schema": r(schema)},
        "application/yaml": {"schema": r(schema)}
    })
}

fn responses(schema: &str, codes: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for c in codes {
        m.insert((*c).into(), json!({"description": if *c == "201" { "Created" } else if *c == "202" { "Accepted" } else { "OK" }, "content": content(schema)}));
    }
    m.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(m)
}

fn op(id: &str, action: &str, kind: &str, params: Vec<Value>, resp: Value) -> Value {
    json!({
        "tags": ["apiregistration_v1"],
        "description": id,
        "operationId": id,
        "parameters": params,
        "responses": resp,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": GVK(kind)
    })
}

fn write_params() -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
            "string",
        ),
        query(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
            "string",
        ),
        query(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default. - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
            "string",
        ),
    ]
}

fn list_params() -> Vec<Value> {
    vec![
        query(
            "allowWatchBookmarks",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\".",
            "boolean",
        ),
        query(
            "continue",
            "The continue option should be set when retrieving more results from the server.",
            "string",
        ),
        query(
            "fieldSelector",
            "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
            "string",
        ),
        query(
            "labelSelector",
            "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
            "string",
        ),
        query(
            "limit",
            "limit is a maximum number of responses to return for a list call.",
            "integer",
        ),
        query(
            "resourceVersion",
            "resourceVersion sets a constraint on what resource versions a request may be served from.",
            "string",
        ),
        query(
            "resourceVersionMatch",
            "resourceVersionMatch determines how resourceVersion is applied to list calls.",
            "string",
        ),
        query(
            "sendInitialEvents",
            "`sendInitialEvents=true` may be set together with `watch=true`.",
            "boolean",
        ),
        query(
            "timeoutSeconds",
            "Timeout for the list/watch call.",
            "integer",
        ),
        query(
            "watch",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.",
            "boolean",
        ),
    ]
}

fn patch_op(id: &str) -> Value {
    let mut o = op(
        id,
        "patch",
        "APIService",
        {
            let mut p = write_params();
            p.push(query("force", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.", "boolean"));
            p
        },
        responses(&agg("APIService"), &["200", "201"]),
    );
    // Only these three: kubectl then uses a JSON merge patch for client-side apply.
    o["requestBody"] = json!({"required": true, "content": {
        "application/json-patch+json": {"schema": r(&meta("Patch"))},
        "application/merge-patch+json": {"schema": r(&meta("Patch"))},
        "application/apply-patch+yaml": {"schema": r(&meta("Patch"))}
    }});
    o
}

fn body_op(id: &str, action: &str, codes: &[&str]) -> Value {
    let mut o = op(
        id,
        action,
        "APIService",
        write_params(),
        responses(&agg("APIService"), codes),
    );
    o["requestBody"] =
        json!({"required": true, "content": {"*/*": {"schema": r(&agg("APIService"))}}});
    o
}

fn delete_op(id: &str, action: &str) -> Value {
    let mut params = vec![
        query(
            "dryRun",
            "When present, indicates that modifications should not be persisted.",
            "string",
        ),
        query(
            "gracePeriodSeconds",
            "The duration in seconds before the object should be deleted.",
            "integer",
        ),
        query(
            "propagationPolicy",
            "Whether and how garbage collection will be performed.",
            "string",
        ),
    ];
    if action == "deletecollection" {
        params.extend(list_params());
    }
    let mut o = op(
        id,
        action,
        "APIService",
        params,
        responses(&meta("Status"), &["200", "202"]),
    );
    o["requestBody"] = json!({"content": {"*/*": {"schema": r(&meta("DeleteOptions"))}}});
    o
}

fn pretty() -> Value {
    query(
        "pretty",
        "If 'true', then the output is pretty printed.",
        "string",
    )
}

fn name_param() -> Value {
    json!({"name": "name", "in": "path", "description": "name of the APIService", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

fn paths() -> Value {
    let list = op(
        "listApiregistrationV1APIService",
        "list",
        "APIService",
        list_params(),
        responses(&agg("APIServiceList"), &["200"]),
    );
    let watch_list = op(
        "watchApiregistrationV1APIServiceList",
        "watchlist",
        "APIService",
        list_params(),
        responses(&meta("WatchEvent"), &["200"]),
    );
    let watch_one = op(
        "watchApiregistrationV1APIService",
        "watch",
        "APIService",
        list_params(),
        responses(&meta("WatchEvent"), &["200"]),
    );
    json!({
        "/apis/apiregistration.k8s.io/v1/": {
            "get": {
                "tags": ["apiregistration_v1"],
                "description": "get available resources",
                "operationId": "getApiregistrationV1APIResources",
                "responses": responses(&meta("APIResourceList"), &["200"])
            }
        },
        "/apis/apiregistration.k8s.io/v1/apiservices": {
            "get": list,
            "post": body_op("createApiregistrationV1APIService", "post", &["200", "201", "202"]),
            "delete": delete_op("deleteApiregistrationV1CollectionAPIService", "deletecollection"),
            "parameters": [pretty()]
        },
        "/apis/apiregistration.k8s.io/v1/apiservices/{name}": {
            "get": op("readApiregistrationV1APIService", "get", "APIService", vec![], responses(&agg("APIService"), &["200"])),
            "put": body_op("replaceApiregistrationV1APIService", "put", &["200", "201"]),
            "patch": patch_op("patchApiregistrationV1APIService"),
            "delete": delete_op("deleteApiregistrationV1APIService", "delete"),
            "parameters": [name_param(), pretty()]
        },
        "/apis/apiregistration.k8s.io/v1/apiservices/{name}/status": {
            "get": op("readApiregistrationV1APIServiceStatus", "get", "APIService", vec![], responses(&agg("APIService"), &["200"])),
            "put": body_op("replaceApiregistrationV1APIServiceStatus", "put", &["200", "201"]),
            "patch": patch_op("patchApiregistrationV1APIServiceStatus"),
            "parameters": [name_param(), pretty()]
        },
        "/apis/apiregistration.k8s.io/v1/watch/apiservices": {
            "get": watch_list,
            "parameters": [pretty()]
        },
        "/apis/apiregistration.k8s.io/v1/watch/apiservices/{name}": {
            "get": watch_one,
            "parameters": [name_param(), pretty()]
        }
    })
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn schemas() -> Value {
    let mut s = serde_json::Map::new();
    let api_version = string(
        "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
    );
    let kind = string(
        "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
    );
    s.insert(agg("APIService"), json!({
        "description": "APIService represents a server for a particular GroupVersion. Name must be \"version.group\".",
        "type": "object",
        "properties": {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": all_of(&meta("ObjectMeta"), "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"),
            "spec": all_of(&agg("APIServiceSpec"), "Spec contains information for locating and communicating with a server"),
            "status": all_of(&agg("APIServiceStatus"), "Status contains derived information about an API server")
        },
        "x-kubernetes-group-version-kind": [GVK("APIService")]
    }));
    s.insert(agg("APIServiceList"), json!({
        "description": "APIServiceList is a list of APIService objects.",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": api_version,
            "kind": kind,
            "items": {"type": "array", "description": "Items is the list of APIService", "items": {"allOf": [r(&agg("APIService"))], "default": {}}},
            "metadata": all_of(&meta("ListMeta"), "Standard list metadata More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata")
        },
        "x-kubernetes-group-version-kind": [GVK("APIServiceList")]
    }));
    s.insert(agg("APIServiceSpec"), json!({
        "description": "APIServiceSpec contains information for locating and communicating with a server. Only https is supported, though you are able to disable certificate verification.",
        "type": "object",
        "required": ["groupPriorityMinimum", "versionPriority"],
        "properties": {
            "caBundle": {"type": "string", "format": "byte", "description": "CABundle is a PEM encoded CA bundle which will be used to validate an API server's serving certificate. If unspecified, system trust roots on the apiserver are used.", "x-kubernetes-list-type": "atomic"},
            "group": string("Group is the API group name this server hosts"),
            "groupPriorityMinimum": {"type": "integer", "format": "int32", "default": 0, "description": "GroupPriorityMinimum is the priority this group should have at least. Higher priority means that the group is preferred by clients over lower priority ones. Note that other versions of this group might specify even higher GroupPriorityMinimum values such that the whole group gets a higher priority. The primary sort is based on GroupPriorityMinimum, ordered highest number to lowest (20 before 10). The secondary sort is based on the alphabetical comparison of the name of the object.  (v1.bar before v1.foo) We'd recommend something like: *.k8s.io (except extensions) at 18000 and PaaSes (OpenShift, Deis) are recommended to be in the 2000s"},
            "insecureSkipTLSVerify": {"type": "boolean", "description": "InsecureSkipTLSVerify disables TLS certificate verification when communicating with this server. This is strongly discouraged.  You should use the CABundle instead."},
            "service": all_of(&agg("ServiceReference"), "Service is a reference to the service for this API server.  It must communicate on port 443. If the Service is nil, that means the handling for the API groupversion is handled locally on this server. The call will simply delegate to the normal handler chain to be fulfilled."),
            "version": string("Version is the API version this server hosts.  For example, \"v1\""),
            "versionPriority": {"type": "integer", "format": "int32", "default": 0, "description": "VersionPriority controls the ordering of this API version inside of its group.  Must be greater than zero. The primary sort is based on VersionPriority, ordered highest to lowest (20 before 10). Since it's inside of a group, the number can be small, probably in the 10s. In case of equal version priorities, the version string will be used to compute the order inside a group. If the version string is \"kube-like\", it will sort above non \"kube-like\" version strings, which are ordered lexicographically. \"Kube-like\" versions start with a \"v\", then are followed by a number (the major version), then optionally the string \"alpha\" or \"beta\" and another number (the minor version). These are sorted first by GA > beta > alpha (where GA is a version with no suffix such as beta or alpha), and then by comparing major version, then minor version. An example sorted list of versions: v10, v2, v1, v11beta2, v10beta3, v3beta1, v12alpha1, v11alpha2, foo1, foo10."}
        }
    }));
    s.insert(agg("ServiceReference"), json!({
        "description": "ServiceReference holds a reference to Service.legacy.k8s.io",
        "type": "object",
        "properties": {
            "name": string("Name is the name of the service"),
            "namespace": string("Namespace is the namespace of the service"),
            "port": {"type": "integer", "format": "int32", "description": "If specified, the port on the service that hosting webhook. Default to 443 for backward compatibility. `port` should be a valid port number (1-65535, inclusive)."}
        }
    }));
    s.insert(
        agg("APIServiceStatus"),
        json!({
            "description": "APIServiceStatus contains derived information about an API server",
            "type": "object",
            "properties": {
                "conditions": {
                    "type": "array",
                    "description": "Current service state of apiService.",
                    "items": {"allOf": [r(&agg("APIServiceCondition"))], "default": {}},
                    "x-kubernetes-list-map-keys": ["type"],
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-patch-merge-key": "type",
                    "x-kubernetes-patch-strategy": "merge"
                }
            }
        }),
    );
    s.insert(agg("APIServiceCondition"), json!({
        "description": "APIServiceCondition describes the state of an APIService at a particular point",
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "lastTransitionTime": all_of(&meta("Time"), "Last time the condition transitioned from one status to another."),
            "message": string("Human-readable message indicating details about last transition."),
            "reason": string("Unique, one-word, CamelCase reason for the condition's last transition."),
            "status": {"type": "string", "default": "", "description": "Status is the status of the condition. Can be True, False, Unknown."},
            "type": {"type": "string", "default": "", "description": "Type is the type of the condition."}
        }
    }));
    s.insert(meta("ObjectMeta"), json!({
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
        "type": "object",
        "properties": {
            "annotations": {"type": "object", "additionalProperties": {"type": "string", "default": ""}, "description": "Annotations is an unstructured key value map stored with a resource that may be set by external tools to store and retrieve arbitrary metadata. They are not queryable and should be preserved when modifying objects. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/annotations"},
            "creationTimestamp": all_of(&meta("Time"), "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC."),
            "deletionGracePeriodSeconds": {"type": "integer", "format": "int64", "description": "Number of seconds allowed for this object to gracefully terminate before it will be removed from the system. Only set when deletionTimestamp is also set. May only be shortened. Read-only."},
            "deletionTimestamp": all_of(&meta("Time"), "DeletionTimestamp is RFC 3339 date and time at which this resource will be deleted. This field is set by the server when a graceful deletion is requested by the user, and is not directly settable by a client."),
            "finalizers": {"type": "array", "items": {"type": "string", "default": ""}, "x-kubernetes-list-type": "set", "x-kubernetes-patch-strategy": "merge", "description": "Must be empty before the object is deleted from the registry. Each entry is an identifier for the responsible component that will remove the entry from the list."},
            "generateName": string("GenerateName is an optional prefix, used by the server, to generate a unique name ONLY IF the Name field has not been provided."),
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state. Populated by the system. Read-only."},
            "labels": {"type": "object", "additionalProperties": {"type": "string", "default": ""}, "description": "Map of string keys and values that can be used to organize and categorize (scope and select) objects. May match selectors of replication controllers and services. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels"},
            "managedFields": {"type": "array", "items": {"allOf": [r(&meta("ManagedFieldsEntry"))], "default": {}}, "x-kubernetes-list-type": "atomic", "description": "ManagedFields maps workflow-id and version to the set of fields that are managed by that workflow. This is mostly for internal housekeeping, and users typically shouldn't need to set or understand this field."},
            "name": string("Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"),
            "namespace": string("Namespace defines the space within which each name must be unique. An empty namespace is equivalent to the \"default\" namespace, but \"default\" is the canonical representation. Not all objects are required to be scoped to a namespace - the value of this field for those objects will be empty."),
            "ownerReferences": {"type": "array", "items": {"allOf": [r(&meta("OwnerReference"))], "default": {}}, "x-kubernetes-list-map-keys": ["uid"], "x-kubernetes-list-type": "map", "x-kubernetes-patch-merge-key": "uid", "x-kubernetes-patch-strategy": "merge", "description": "List of objects depended by this object."},
            "resourceVersion": string("An opaque value that represents the internal version of this object that can be used by clients to determine when objects have changed. May be used for optimistic concurrency, change detection, and the watch operation on a resource or set of resources. Clients must treat these values as opaque and passed unmodified back to the server."),
            "selfLink": string("Deprecated: selfLink is a legacy read-only field that is no longer populated by the system."),
            "uid": string("UID is the unique in time and space value for this object. It is typically generated by the server on successful creation of a resource and is not allowed to change on PUT operations.")
        }
    }));
    s.insert(meta("ListMeta"), json!({
        "description": "ListMeta describes metadata that synthetic resources must have, including lists and various status objects. A resource may have only one of {ObjectMeta, ListMeta}.",
        "type": "object",
        "properties": {
            "continue": string("continue may be set if the user set a limit on the number of items returned, and indicates that the server has more data available."),
            "remainingItemCount": {"type": "integer", "format": "int64", "description": "remainingItemCount is the number of subsequent items in the list which are not included in this list response."},
            "resourceVersion": string("String that identifies the server's internal version of this object that can be used by clients to determine when objects have changed."),
            "selfLink": string("Deprecated: selfLink is a legacy read-only field that is no longer populated by the system.")
        }
    }));
    s.insert(meta("ManagedFieldsEntry"), json!({
        "description": "ManagedFieldsEntry is a workflow-id, a FieldSet and the group version of the resource that the fieldset applies to.",
        "type": "object",
        "properties": {
            "apiVersion": string("APIVersion defines the version of this resource that this field set applies to."),
            "fieldsType": string("FieldsType is the discriminator for the different fields format and version. There is currently only one possible value: \"FieldsV1\""),
            "fieldsV1": all_of(&meta("FieldsV1"), "FieldsV1 holds the first JSON version format as described in the \"FieldsV1\" type."),
            "manager": string("Manager is an identifier of the workflow managing these fields."),
            "operation": string("Operation is the type of operation which lead to this ManagedFieldsEntry being created. The only valid values for this field are 'Apply' and 'Update'."),
            "subresource": string("Subresource is the name of the subresource used to update that object, or empty string if the object was updated through the main resource."),
            "time": all_of(&meta("Time"), "Time is the timestamp of when the ManagedFields entry was added.")
        }
    }));
    s.insert(meta("OwnerReference"), json!({
        "description": "OwnerReference contains enough information to let you identify an owning object.",
        "type": "object",
        "required": ["apiVersion", "kind", "name", "uid"],
        "properties": {
            "apiVersion": {"type": "string", "default": "", "description": "API version of the referent."},
            "blockOwnerDeletion": {"type": "boolean", "description": "If true, AND if the owner has the \"foregroundDeletion\" finalizer, then the owner cannot be deleted from the key-value store until this reference is removed."},
            "controller": {"type": "boolean", "description": "If true, this reference points to the managing controller."},
            "kind": {"type": "string", "default": "", "description": "Kind of the referent."},
            "name": {"type": "string", "default": "", "description": "Name of the referent."},
            "uid": {"type": "string", "default": "", "description": "UID of the referent."}
        },
        "x-kubernetes-map-type": "atomic"
    }));
    s.insert(meta("FieldsV1"), json!({"description": "FieldsV1 stores a set of fields in a data structure like a Trie, in JSON format.", "type": "object"}));
    s.insert(meta("Time"), json!({"description": "Time is a wrapper around time.Time which supports correct marshaling to YAML and JSON.  Wrappers are provided for many of the factory methods that the time package offers.", "type": "string", "format": "date-time"}));
    s.insert(meta("Patch"), json!({"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.", "type": "object"}));
    s.insert(meta("Preconditions"), json!({
        "description": "Preconditions must be fulfilled before an operation (update, delete, etc.) is carried out.",
        "type": "object",
        "properties": {
            "resourceVersion": string("Specifies the target ResourceVersion"),
            "uid": string("Specifies the target UID.")
        }
    }));
    s.insert(meta("DeleteOptions"), json!({
        "description": "DeleteOptions may be provided when deleting an API object.",
        "type": "object",
        "properties": {
            "apiVersion": api_version,
            "dryRun": {"type": "array", "items": {"type": "string", "default": ""}, "x-kubernetes-list-type": "atomic", "description": "When present, indicates that modifications should not be persisted."},
            "gracePeriodSeconds": {"type": "integer", "format": "int64", "description": "The duration in seconds before the object should be deleted."},
            "kind": kind,
            "orphanDependents": {"type": "boolean", "description": "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7."},
            "preconditions": all_of(&meta("Preconditions"), "Must be fulfilled before a deletion is carried out. If not possible, a 409 Conflict status will be returned."),
            "propagationPolicy": string("Whether and how garbage collection will be performed. Acceptable values are: 'Orphan', 'Background', 'Foreground'.")
        }
    }));
    s.insert(meta("StatusCause"), json!({
        "description": "StatusCause provides more information about an api.Status failure, including cases when multiple errors are encountered.",
        "type": "object",
        "properties": {
            "field": string("The field of the resource that has caused this error, as named by its JSON serialization."),
            "message": string("A human-readable description of the cause of the error."),
            "reason": string("A machine-readable description of the cause of the error.")
        }
    }));
    s.insert(meta("StatusDetails"), json!({
        "description": "StatusDetails is a set of additional properties that MAY be set by the server to provide additional information about a response.",
        "type": "object",
        "properties": {
            "causes": {"type": "array", "items": {"allOf": [r(&meta("StatusCause"))], "default": {}}, "x-kubernetes-list-type": "atomic", "description": "The Causes array includes more details associated with the StatusReason failure."},
            "group": string("The group attribute of the resource associated with the status StatusReason."),
            "kind": string("The kind attribute of the resource associated with the status StatusReason."),
            "name": string("The name attribute of the resource associated with the status StatusReason (when there is a single name which can be described)."),
            "retryAfterSeconds": {"type": "integer", "format": "int32", "description": "If specified, the time in seconds before the operation should be retried."},
            "uid": string("UID of the resource.")
        }
    }));
    s.insert(meta("Status"), json!({
        "description": "Status is a return value for calls that don't return other objects.",
        "type": "object",
        "properties": {
            "apiVersion": api_version,
            "code": {"type": "integer", "format": "int32", "description": "Suggested HTTP return code for this status, 0 if not set."},
            "details": all_of(&meta("StatusDetails"), "Extended data associated with the reason."),
            "kind": kind,
            "message": string("A human-readable description of the status of this operation."),
            "metadata": all_of(&meta("ListMeta"), "Standard list metadata."),
            "reason": string("A machine-readable description of why this operation is in the \"Failure\" status."),
            "status": string("Status of the operation. One of: \"Success\" or \"Failure\".")
        },
        "x-kubernetes-group-version-kind": [{"group": "", "kind": "Status", "version": "v1"}]
    }));
    s.insert(meta("WatchEvent"), json!({
        "description": "Event represents a single event to a watched resource.",
        "type": "object",
        "required": ["type", "object"],
        "properties": {
            "object": {"type": "object", "description": "Object is: * If Type is Added or Modified: the new state of the object. * If Type is Deleted: the state of the object immediately before deletion. * If Type is Error: *Status is recommended; other types may make sense depending on context."},
            "type": {"type": "string", "default": ""}
        }
    }));
    s.insert(meta("APIResource"), json!({
        "description": "APIResource specifies the name of a resource and whether it is namespaced.",
        "type": "object",
        "required": ["name", "singularName", "namespaced", "kind", "verbs"],
        "properties": {
            "categories": {"type": "array", "items": {"type": "string", "default": ""}},
            "group": {"type": "string"},
            "kind": {"type": "string", "default": ""},
            "name": {"type": "string", "default": ""},
            "namespaced": {"type": "boolean", "default": false},
            "shortNames": {"type": "array", "items": {"type": "string", "default": ""}},
            "singularName": {"type": "string", "default": ""},
            "storageVersionHash": {"type": "string"},
            "verbs": {"type": "array", "items": {"type": "string", "default": ""}},
            "version": {"type": "string"}
        }
    }));
    s.insert(meta("APIResourceList"), json!({
        "description": "APIResourceList is a list of APIResource, it is used to expose the name of the resources supported in a specific group and version, and if the resource is namespaced.",
        "type": "object",
        "required": ["groupVersion", "resources"],
        "properties": {
            "apiVersion": api_version,
            "groupVersion": {"type": "string", "default": ""},
            "kind": kind,
            "resources": {"type": "array", "items": {"allOf": [r(&meta("APIResource"))], "default": {}}}
        }
    }));
    Value::Object(s)
}

/// The `apiregistration.k8s.io/v1` OpenAPI v3 document.
pub fn apiregistration_v1() -> Value {
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::version::GIT_VERSION},
        "paths": paths(),
        "components": {"schemas": schemas()}
    })
}

/// The precomputed documents.
#[derive(Debug, Clone)]
pub struct OpenApi {
    /// `/openapi/v3` (the index).
    pub index: Bytes,
    /// `/openapi/v3/apis/apiregistration.k8s.io/v1`.
    pub group_version: Bytes,
    /// Its uppercase hex SHA-512 (`?hash=`).
    pub hash: String,
    /// Its quoted ETag.
    pub etag: String,
}

/// The path key of our document in the index.
pub const GV_PATH: &str = "apis/apiregistration.k8s.io/v1";

impl OpenApi {
    /// Builds the documents.
    pub fn build() -> OpenApi {
        let doc = serde_json::to_vec(&apiregistration_v1()).unwrap_or_default();
        let hash = apimachinery::etag::sha512_hex_upper(&doc);
        let index = json!({"paths": {GV_PATH: {"serverRelativeURL": format!("/openapi/v3/{GV_PATH}?hash={hash}")}}});
        OpenApi {
            index: Bytes::from(serde_json::to_vec(&index).unwrap_or_default()),
            etag: format!("\"{hash}\""),
            hash,
            group_version: Bytes::from(doc),
        }
    }
}

/// Who serves the document of one `/openapi/v3` index entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenApiOwner {
    /// This server (`apis/apiregistration.k8s.io/v1`).
    Local,
    /// The remote APIService of this name: its backend gets the request.
    ApiService(String),
    /// The delegate (`--delegate-url`).
    Delegate,
}

/// The merged `/openapi/v3` index and who owns each entry (upstream-behaviour.md §4.2),
/// recomputed when a source's index changes, never per request.
#[derive(Debug, Clone)]
pub struct OpenApiRoutes {
    /// The merged index (`{"paths": {...}}`), served as `/openapi/v3`.
    pub index: Bytes,
    /// Owner of each index key (`apis/<group>/<version>`, `api/v1`, …).
    pub owners: HashMap<String, OpenApiOwner>,
}

impl OpenApiRoutes {
    /// Only this server's own entry.
    pub fn local(own: &OpenApi) -> OpenApiRoutes {
        merge(own, &BTreeMap::new(), None)
    }
}

/// What one remote APIService contributes: the entry for its own group-version, taken from its
/// backend's index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEntry {
    /// The index key, `apis/<group>/<version>` (`api/<version>` for the core group).
    pub key: String,
    /// The backend's entry (its `?hash=` included).
    pub path: OpenApiV3Path,
}

/// Merges the indexes. Precedence, so that no source can take another's documents: our own
/// entry; then each remote APIService's own group-version only (upstream takes every path a
/// backend lists, so one backend could claim `version` or another group); then the delegate's
/// entries for whatever is left.
pub fn merge(
    own: &OpenApi,
    remote: &BTreeMap<String, RemoteEntry>,
    delegate: Option<&OpenApiV3Index>,
) -> OpenApiRoutes {
    let mut paths: BTreeMap<String, OpenApiV3Path> = BTreeMap::new();
    let mut owners = HashMap::new();
    paths.insert(
        GV_PATH.to_owned(),
        OpenApiV3Path {
            server_relative_url: format!("/openapi/v3/{GV_PATH}?hash={}", own.hash),
        },
    );
    owners.insert(GV_PATH.to_owned(), OpenApiOwner::Local);
    for (name, entry) in remote {
        if !owners.contains_key(&entry.key) {
            paths.insert(entry.key.clone(), entry.path.clone());
            owners.insert(entry.key.clone(), OpenApiOwner::ApiService(name.clone()));
        }
    }
    if let Some(delegate) = delegate {
        for (key, path) in &delegate.paths {
            if !owners.contains_key(key) {
                paths.insert(key.clone(), path.clone());
                owners.insert(key.clone(), OpenApiOwner::Delegate);
            }
        }
    }
    let index = OpenApiV3Index { paths };
    OpenApiRoutes {
        index: Bytes::from(serde_json::to_vec(&index).unwrap_or_default()),
        owners,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_index_keeps_each_source_to_its_own_entries() {
        let own = OpenApi::build();
        let entry = |key: &str, hash: &str| RemoteEntry {
            key: key.into(),
            path: OpenApiV3Path {
                server_relative_url: format!("/openapi/v3/{key}?hash={hash}"),
            },
        };
        let mut remote = BTreeMap::new();
        remote.insert(
            "v1beta1.metrics.k8s.io".to_owned(),
            entry("apis/metrics.k8s.io/v1beta1", "M"),
        );
        // A backend registered for our own group cannot replace our document.
        remote.insert(
            "v1.apiregistration.k8s.io".to_owned(),
            entry(GV_PATH, "EVIL"),
        );
        let mut delegate = OpenApiV3Index::default();
        for key in ["api/v1", "apis/apps/v1", "apis/metrics.k8s.io/v1beta1"] {
            delegate.paths.insert(
                key.into(),
                OpenApiV3Path {
                    server_relative_url: format!("/openapi/v3/{key}?hash=D"),
                },
            );
        }
        let routes = merge(&own, &remote, Some(&delegate));
        let index: Value = serde_json::from_slice(&routes.index).unwrap_or_default();
        assert_eq!(
            index["paths"][GV_PATH]["serverRelativeURL"],
            format!("/openapi/v3/{GV_PATH}?hash={}", own.hash)
        );
        assert_eq!(
            index["paths"]["apis/metrics.k8s.io/v1beta1"]["serverRelativeURL"],
            "/openapi/v3/apis/metrics.k8s.io/v1beta1?hash=M"
        );
        assert_eq!(
            index["paths"]["api/v1"]["serverRelativeURL"],
            "/openapi/v3/api/v1?hash=D"
        );
        assert_eq!(routes.owners[GV_PATH], OpenApiOwner::Local);
        assert_eq!(
            routes.owners["apis/metrics.k8s.io/v1beta1"],
            OpenApiOwner::ApiService("v1beta1.metrics.k8s.io".into())
        );
        assert_eq!(routes.owners["apis/apps/v1"], OpenApiOwner::Delegate);
        assert_eq!(routes.owners.len(), 4);
        // Without other sources the index is exactly our own.
        let local = OpenApiRoutes::local(&own);
        assert_eq!(
            serde_json::from_slice::<Value>(&local.index).unwrap_or_default(),
            serde_json::from_slice::<Value>(&own.index).unwrap_or_default()
        );
    }

    #[test]
    fn what_kubectl_needs_is_there() {
        let d = apiregistration_v1();
        let gvk = json!({"group": "apiregistration.k8s.io", "kind": "APIService", "version": "v1"});
        assert_eq!(
            d["paths"]["/apis/apiregistration.k8s.io/v1/apiservices"]["get"]["x-kubernetes-group-version-kind"],
            gvk
        );
        let patch = &d["paths"]["/apis/apiregistration.k8s.io/v1/apiservices/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"], gvk);
        assert!(patch["parameters"].as_array().is_some_and(|p| {
            p.iter()
                .any(|x| x["name"] == "fieldValidation" && x["in"] == "query")
        }));
        assert!(
            patch["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_none()
        );
        assert_eq!(
            d["components"]["schemas"][agg("APIService")]["x-kubernetes-group-version-kind"][0],
            gvk
        );
        // Every $ref resolves.
        let text = d.to_string();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(
                d["components"]["schemas"].get(name).is_some(),
                "dangling $ref {name}"
            );
        }
        let o = OpenApi::build();
        let idx: Value = serde_json::from_slice(&o.index).unwrap_or_default();
        assert_eq!(
            idx["paths"][GV_PATH]["serverRelativeURL"],
            format!("/openapi/v3/{GV_PATH}?hash={}", o.hash)
        );
    }
}
