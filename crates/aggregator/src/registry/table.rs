//! The APIService table (upstream-behaviour.md §1.7): NAME, SERVICE, AVAILABLE, AGE.

use apimachinery::duration::age;
use apimachinery::table::{
    IncludeObject, ListMeta, PartialObjectMetadata, Table, TableColumnDefinition, TableRow,
    age_column, name_column,
};
use store::APIService;

use super::strategy::available_condition;

/// The four columns in upstream's order.
pub fn columns() -> Vec<TableColumnDefinition> {
    vec![
        name_column(),
        TableColumnDefinition {
            name: "Service".into(),
            type_: "string".into(),
            format: String::new(),
            description: "The reference to the service that hosts this API endpoint.".into(),
            priority: 0,
        },
        TableColumnDefinition {
            name: "Available".into(),
            type_: "string".into(),
            format: String::new(),
            description: "Whether this service is available.".into(),
            priority: 0,
        },
        age_column(),
    ]
}

/// `Local` or `<namespace>/<name>`.
pub fn service_cell(obj: &APIService) -> String {
    match &super::strategy::spec(obj).service {
        None => "Local".into(),
        Some(s) => format!(
            "{}/{}",
            s.namespace.as_deref().unwrap_or_default(),
            s.name.as_deref().unwrap_or_default()
        ),
    }
}

/// `Unknown` without a condition, `True`, `<Status> (<Reason>)`, or just the status.
pub fn available_cell(obj: &APIService) -> String {
    match available_condition(obj) {
        None => "Unknown".into(),
        Some(c) if c.status == "True" => "True".into(),
        Some(c) => match c.reason.as_deref().filter(|r| !r.is_empty()) {
            Some(r) => format!("{} ({r})", c.status),
            None => c.status.clone(),
        },
    }
}

/// One row.
pub fn row(obj: &APIService, include: IncludeObject, now: jiff::Timestamp) -> TableRow {
    let created = obj.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let object = match include {
        IncludeObject::None => None,
        IncludeObject::Metadata => {
            serde_json::to_value(PartialObjectMetadata::new(obj.metadata.clone())).ok()
        }
        IncludeObject::Object => serde_json::to_value(obj).ok(),
    };
    TableRow {
        cells: vec![
            obj.metadata.name.clone().unwrap_or_default().into(),
            service_cell(obj).into(),
            available_cell(obj).into(),
            age(created, now).into(),
        ],
        object,
    }
}

/// A table of `objs` (`version` is `v1` or `v1beta1`); `with_columns` false sends
/// `columnDefinitions: []` (watch events after the first).
pub fn table<'a>(
    version: &str,
    objs: impl IntoIterator<Item = &'a APIService>,
    meta: ListMeta,
    include: IncludeObject,
    with_columns: bool,
    now: jiff::Timestamp,
) -> Table {
    Table::new(
        version,
        meta,
        if with_columns { columns() } else { Vec::new() },
        objs.into_iter().map(|o| row(o, include, now)).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{
        APIServiceCondition, APIServiceStatus, ServiceReference,
    };

    #[test]
    fn cells() {
        let now = jiff::Timestamp::from_second(10_000).unwrap_or_default();
        let mut obj = APIService {
            metadata: ObjectMeta {
                name: Some("v1beta1.metrics.k8s.io".into()),
                creation_timestamp: jiff::Timestamp::from_second(10_000 - 3600).ok().map(Time),
                ..ObjectMeta::default()
            },
            ..APIService::default()
        };
        assert_eq!(
            row(&obj, IncludeObject::None, now).cells,
            vec!["v1beta1.metrics.k8s.io", "Local", "Unknown", "60m"]
        );
        obj.spec.get_or_insert_default().service = Some(ServiceReference {
            namespace: Some("kube-system".into()),
            name: Some("metrics-server".into()),
            port: Some(443),
        });
        obj.status = Some(APIServiceStatus {
            conditions: Some(vec![APIServiceCondition {
                type_: "Available".into(),
                status: "False".into(),
                reason: Some("MissingEndpoints".into()),
                ..Default::default()
            }]),
        });
        let r = row(&obj, IncludeObject::Metadata, now);
        assert_eq!(r.cells[1], "kube-system/metrics-server");
        assert_eq!(r.cells[2], "False (MissingEndpoints)");
        let o = r.object.unwrap_or_default();
        assert_eq!(o["kind"], "PartialObjectMetadata");
        assert_eq!(o["metadata"]["name"], "v1beta1.metrics.k8s.io");
        let t = table(
            "v1",
            [&obj],
            ListMeta::default(),
            IncludeObject::None,
            true,
            now,
        );
        let names: Vec<&str> = t
            .column_definitions
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["Name", "Service", "Available", "Age"]);
    }
}
