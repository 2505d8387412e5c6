use printworks_tests::openapi;
use std::collections::BTreeSet;

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

#[test]
fn the_router_serves_exactly_the_paths_of_the_spec() {
    let spec = openapi();
    let mut in_spec = BTreeSet::new();
    for (path, operations) in spec["paths"].as_object().expect("paths") {
        for method in operations.as_object().expect("operations").keys() {
            if METHODS.contains(&method.as_str()) {
                in_spec.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let mut served: BTreeSet<(String, String)> = order_api::routes()
        .iter()
        .map(|(method, path, _)| (method.to_string(), path.to_string()))
        .collect();
    served.extend(
        payment_webhook::routes()
            .iter()
            .map(|(method, path, _)| (method.to_string(), path.to_string())),
    );
    assert_eq!(served, in_spec);
    assert_eq!(served.len(), 6);
}

fn validator(spec: &serde_json::Value, schema: &serde_json::Value) -> jsonschema::Validator {
    // OpenAPI 3.0 schemas are a draft-4 dialect; $refs point into components.
    let mut root = schema.clone();
    root["components"] = spec["components"].clone();
    jsonschema::draft4::new(&root).expect("schema compiles")
}

#[test]
fn every_request_body_has_a_complete_example_that_validates() {
    let spec = openapi();
    let mut checked = 0;
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let Some(body) = operation.get("requestBody") else {
                continue;
            };
            let media = &body["content"]["application/json"];
            let example = media
                .get("example")
                .unwrap_or_else(|| panic!("{method} {path}: request body without an example"));
            let v = validator(&spec, &media["schema"]);
            let errors: Vec<String> = v
                .iter_errors(example)
                .map(|e| format!("{}: {e}", e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{method} {path}: example does not validate: {errors:?}"
            );
            // The schema is not vacuous: an unknown field is refused.
            let mut extra = example.clone();
            extra["unexpected_field"] = serde_json::json!(1);
            assert!(
                !v.is_valid(&extra),
                "{method} {path}: schema accepts unknown fields"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 3, "uploads, orders and cancel have request bodies");
}

#[test]
fn the_order_example_is_complete_and_schema_errors_are_caught() {
    let spec = openapi();
    let example = printworks_tests::request_example(&spec, "/v1/orders");
    let v = validator(
        &spec,
        &spec["paths"]["/v1/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"],
    );
    for field in ["locale", "currency", "customer", "shipping", "items"] {
        let mut missing = example.clone();
        missing.as_object_mut().unwrap().remove(field);
        assert!(!v.is_valid(&missing), "{field} is required");
    }
    let mut too_many = example.clone();
    too_many["items"][0]["quantity"] = serde_json::json!(101);
    assert!(!v.is_valid(&too_many));
}
