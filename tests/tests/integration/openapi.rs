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
        ops_api::routes()
            .iter()
            .map(|(method, path, _)| (method.to_string(), path.to_string())),
    );
    served.extend(
        payment_webhook::routes()
            .iter()
            .map(|(method, path, _)| (method.to_string(), path.to_string())),
    );
    assert_eq!(served, in_spec);
    assert_eq!(served.len(), 25);
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
    assert_eq!(
        checked, 10,
        "uploads, orders, an order's change, a photo's replacement, cancel, the four operator actions and the operators' search have request bodies"
    );
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

/// The spec's patterns for free text, phone numbers and photo URLs say
/// exactly what the server accepts (schemathesis holds the server to them
/// both ways: schema-valid must not be refused for them, schema-invalid
/// must be refused). Tricky inputs through both, the answers compared.
#[test]
fn the_text_phone_and_url_patterns_are_the_servers_rules() {
    use printworks::domain::catalog::Catalog;
    use printworks::domain::order::{Order, OrderRequest};
    let spec = openapi();
    let schemas = &spec["components"]["schemas"];
    let request = &schemas["OrderRequest"]["properties"];
    let image = &schemas["ImageRequest"]["properties"];
    let tenant = printworks_local::seed::demo_tenants()
        .into_iter()
        .find(|t| t.id.as_str() == "demo-brand")
        .expect("demo-brand");
    let example = printworks_tests::request_example(&spec, "/v1/orders");
    let long = |n: usize| "a".repeat(n);
    let texts = [
        "Erika".to_string(),
        " Erika Mustermann ".into(),
        String::new(),
        " ".into(),
        "\t".into(),
        "Erika\n".into(),
        "\tErika".into(),
        "\u{a0}".into(),
        "\u{3000}x".into(),
        "\u{2028}".into(),
        "\u{85}x".into(),
        "x\u{7f}".into(),
        "x\u{9f}".into(),
        "\u{feff}".into(),
        "Köln 北京 🙂".into(),
        long(100),
        long(101),
        format!("{} ", long(100)),
    ];
    let phones = [
        "+4922112345678",
        "+49 221 123-45",
        " +49 221",
        "+12345",
        "+123456",
        "+123456789012345",
        "+1234567890123456",
        "4922112345",
        "+49+221123",
        "+49\u{a0}22112345",
        "+٤٩٢٢١١٢٣٤",
    ];
    let urls = [
        "https://images.example.com/a.jpg".to_string(),
        "https://".into(),
        "https:///a.jpg".into(),
        "https://u@h.example/a.jpg".into(),
        "https://h.example/a@b.jpg".into(),
        "https://h.example?x=1".into(),
        "https://h.example/a b.jpg".into(),
        "https://h.example/\u{3000}".into(),
        "https://h.example/\u{1}".into(),
        "http://h.example/a.jpg".into(),
        format!("https://h.example/{}", long(2048 - 18)),
        format!("https://h.example/{}", long(2048 - 17)),
    ];
    let mut cases: Vec<(String, &serde_json::Value, serde_json::Value, String)> = Vec::new();
    for text in &texts {
        for (path, field, at) in [
            (
                "customer.name",
                &request["customer"]["properties"]["name"],
                "/customer/name",
            ),
            (
                "shipping.address.line2",
                &schemas["Address"]["properties"]["line2"],
                "/shipping/address/line2",
            ),
            ("reference", &request["reference"], "/reference"),
        ] {
            let mut body = example.clone();
            let (parent, key) = at.rsplit_once('/').unwrap();
            let parent = if parent.is_empty() {
                &mut body
            } else {
                body.pointer_mut(parent).unwrap()
            };
            parent[key] = text.clone().into();
            cases.push((path.into(), field, body, text.clone()));
        }
    }
    for phone in phones {
        let mut body = example.clone();
        body["customer"]["phone"] = phone.into();
        cases.push((
            "customer.phone".into(),
            &request["customer"]["properties"]["phone"],
            body,
            phone.into(),
        ));
    }
    for url in &urls {
        let mut body = example.clone();
        body["items"][1]["images"][0] = serde_json::json!({ "url": url });
        cases.push((
            "items[1].images[0].url".into(),
            &image["url"],
            body,
            url.clone(),
        ));
    }
    for (field, schema, body, value) in cases {
        let in_spec = validator(&spec, schema).is_valid(&serde_json::Value::String(value.clone()));
        let request: OrderRequest = serde_json::from_value(body).unwrap();
        let refused_by_server = match Order::place(
            Catalog::builtin(),
            &tenant,
            &request,
            time::OffsetDateTime::now_utc(),
        ) {
            Ok(_) => false,
            Err(errors) => {
                let others: Vec<_> = errors.iter().filter(|e| e.field != field).collect();
                assert!(
                    others.is_empty(),
                    "{field} = {value:?}: other fields refused too: {others:?}"
                );
                true
            }
        };
        assert_eq!(
            in_spec, !refused_by_server,
            "{field} = {value:?}: spec says {in_spec}, server refused: {refused_by_server}"
        );
    }
}
