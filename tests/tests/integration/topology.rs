//! The templates against the code: the queue topology declared once in
//! `printworks::topology` is the one `infra/template.yaml` and
//! `infra/plant.yaml` deploy (names, topic filters, visibility timeouts,
//! receive limits, dead-letter queues, consumers and their batch sizes),
//! and every environment variable a function's configuration requires is
//! set on that function in the template (and every variable the template
//! sets is one the function reads).

use printworks::config::{ConfigError, Vars};
use printworks::topology::{self, QueueSpec};
use printworks_tests::repo_root;
use serde_norway::Value;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

fn template(name: &str) -> Value {
    let path = repo_root().join("infra").join(name);
    serde_norway::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(tag, value)` of a CloudFormation short form such as `!GetAtt X.Arn`.
fn tagged(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(t) => Some((t.tag.to_string(), &t.value)),
        _ => None,
    }
}

/// The logical id a `!GetAtt <id>.Arn` points at.
fn get_att_arn(value: &Value) -> String {
    let (tag, inner) = tagged(value).unwrap_or_else(|| panic!("not a !GetAtt: {value:?}"));
    assert_eq!(tag, "!GetAtt", "{value:?}");
    let target = inner.as_str().expect("!GetAtt X.Arn");
    target
        .strip_suffix(".Arn")
        .unwrap_or_else(|| panic!("{target} is not an ARN"))
        .to_string()
}

fn resource<'a>(template: &'a Value, id: &str) -> &'a Value {
    let r = &template["Resources"][id];
    assert!(!r.is_null(), "the template has no resource {id}");
    r
}

fn check_queue(template: &Value, spec: &QueueSpec) {
    let queue = resource(template, spec.resource);
    assert_eq!(
        queue["Type"].as_str(),
        Some("AWS::SQS::Queue"),
        "{}",
        spec.resource
    );
    let props = &queue["Properties"];
    assert_eq!(
        props["VisibilityTimeout"].as_u64(),
        Some(spec.visibility_timeout.as_secs()),
        "{}: VisibilityTimeout",
        spec.resource
    );
    assert_eq!(
        props["RedrivePolicy"]["maxReceiveCount"].as_u64(),
        Some(u64::from(spec.max_receive_count)),
        "{}: maxReceiveCount",
        spec.resource
    );
    assert_eq!(
        get_att_arn(&props["RedrivePolicy"]["deadLetterTargetArn"]),
        spec.dead_letter_resource,
        "{}: its dead-letter queue",
        spec.resource
    );
    assert_eq!(
        resource(template, spec.dead_letter_resource)["Type"].as_str(),
        Some("AWS::SQS::Queue")
    );
}

#[test]
fn the_stack_deploys_the_declared_queue_topology() {
    let t = template("template.yaml");
    for spec in &topology::STACK_QUEUES {
        check_queue(&t, spec);
        if let Some(sub) = spec.subscription {
            let props = &resource(&t, sub.resource)["Properties"];
            assert_eq!(
                get_att_arn(&props["Endpoint"]),
                spec.resource,
                "{}",
                sub.resource
            );
            assert_eq!(props["RawMessageDelivery"].as_bool(), Some(true));
            let filtered: Vec<&str> = props["FilterPolicy"]["type"]
                .as_sequence()
                .unwrap_or_else(|| panic!("{} filters on type", sub.resource))
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let declared: Vec<&str> = sub.events.iter().map(|e| e.as_str()).collect();
            assert_eq!(filtered, declared, "{}: the filter policy", sub.resource);
        }
        if let Some(consumer) = spec.consumer {
            let events = resource(&t, consumer.function)["Properties"]["Events"]
                .as_mapping()
                .unwrap_or_else(|| panic!("{} has events", consumer.function));
            let sqs: Vec<&Value> = events
                .values()
                .filter(|e| e["Type"].as_str() == Some("SQS"))
                .collect();
            assert_eq!(sqs.len(), 1, "{} reads one queue", consumer.function);
            assert_eq!(get_att_arn(&sqs[0]["Properties"]["Queue"]), spec.resource);
            assert_eq!(
                sqs[0]["Properties"]["BatchSize"].as_u64(),
                Some(u64::from(consumer.batch_size)),
                "{}: BatchSize",
                consumer.function
            );
            assert_eq!(
                sqs[0]["Properties"]["FunctionResponseTypes"][0].as_str(),
                Some("ReportBatchItemFailures")
            );
        }
    }
    // No queue or subscription in the template that the code does not know.
    let declared: BTreeSet<&str> = topology::STACK_QUEUES
        .iter()
        .flat_map(|s| [s.resource, s.dead_letter_resource])
        .collect();
    let subscriptions: BTreeSet<&str> = topology::STACK_QUEUES
        .iter()
        .filter_map(|s| s.subscription.map(|sub| sub.resource))
        .collect();
    for (id, r) in t["Resources"].as_mapping().unwrap() {
        let id = id.as_str().unwrap();
        match r["Type"].as_str() {
            Some("AWS::SQS::Queue") if r["Properties"]["RedrivePolicy"].is_mapping() => {
                assert!(declared.contains(id), "{id} is not in printworks::topology")
            }
            Some("AWS::SNS::Subscription")
                if r["Properties"]["Protocol"].as_str() == Some("sqs") =>
            {
                assert!(
                    subscriptions.contains(id),
                    "{id} is not in printworks::topology"
                )
            }
            _ => {}
        }
    }
}

#[test]
fn each_plant_stack_deploys_the_declared_job_queue() {
    let t = template("plant.yaml");
    check_queue(&t, &topology::PLANT_JOBS);
    let (tag, name) =
        tagged(&resource(&t, topology::PLANT_JOBS.resource)["Properties"]["QueueName"])
            .expect("a !Sub name");
    assert_eq!(tag, "!Sub");
    assert_eq!(
        name.as_str(),
        Some(
            topology::PLANT_JOBS
                .name
                .replace("{plant}", "${PlantId}")
                .as_str()
        )
    );
    // Dispatch addresses the same name.
    let main = template("template.yaml");
    let (_, url) = tagged(
        &resource(&main, "DispatchFunction")["Properties"]["Environment"]["Variables"]
            ["PLANT_QUEUE_URL_TEMPLATE"],
    )
    .expect("a !Sub URL");
    assert!(
        url.as_str()
            .unwrap()
            .ends_with(&format!("/{}", topology::PLANT_JOBS.name)),
        "{url:?}"
    );
}

/// A function's environment as the template sets it, with each intrinsic
/// resolved to a value of the right shape: `!Ref` of a parameter to its
/// default, of a resource to a name; `!Sub` to its text (a queue's
/// `${Ref}` to a URL); `!If` to its
/// first branch; `!GetAtt` to an ARN. `AWS::NoValue` leaves it unset.
fn environment(template: &Value, function: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let vars = &resource(template, function)["Properties"]["Environment"]["Variables"];
    for (name, value) in vars
        .as_mapping()
        .unwrap_or_else(|| panic!("{function} has variables"))
    {
        if let Some(v) = resolve(template, value) {
            env.insert(name.as_str().unwrap().to_string(), v);
        }
    }
    env
}

fn resolve(template: &Value, value: &Value) -> Option<String> {
    let Some((tag, inner)) = tagged(value) else {
        if let Some(n) = value.as_u64() {
            return Some(n.to_string());
        }
        return Some(
            value
                .as_str()
                .unwrap_or_else(|| panic!("cannot resolve {value:?}"))
                .to_string(),
        );
    };
    match tag.as_str() {
        "!Ref" => {
            let name = inner.as_str().unwrap();
            if name == "AWS::NoValue" {
                return None;
            }
            let param = &template["Parameters"][name];
            if param.is_null() {
                assert!(
                    !template["Resources"][name].is_null(),
                    "!Ref {name}: no such resource"
                );
                Some(format!("ref-{}", name.to_lowercase()))
            } else {
                Some(param["Default"].as_str().unwrap_or("value").to_string())
            }
        }
        "!Sub" => {
            let mut text = inner
                .as_str()
                .map_or_else(|| inner[0].as_str().unwrap().to_string(), str::to_string);
            // A queue's `${Ref}` is its URL.
            for (id, r) in template["Resources"].as_mapping().unwrap() {
                let id = id.as_str().unwrap();
                if r["Type"].as_str() == Some("AWS::SQS::Queue") {
                    text = text.replace(
                        &format!("${{{id}}}"),
                        &format!("https://sqs.eu-central-1.amazonaws.com/123456789012/{id}"),
                    );
                }
            }
            Some(text)
        }
        "!If" => resolve(template, &inner[1]),
        "!GetAtt" => Some(format!("arn:aws:x:::{}", inner.as_str().unwrap())),
        other => panic!("cannot resolve {other}"),
    }
}

type Load = fn(&Vars<&dyn Fn(&str) -> Option<String>>) -> Result<(), ConfigError>;

/// Each function's resource in the template, and what its `main.rs` reads
/// at a cold start.
fn functions() -> Vec<(&'static str, Load)> {
    vec![
        ("OrderApiFunction", |v| {
            order_api::Config::from_vars(v)?;
            order_api::Resources::from_vars(v).map(drop)
        }),
        ("OpsApiFunction", |v| {
            ops_api::Config::from_vars(v)?;
            ops_api::Resources::from_vars(v).map(drop)
        }),
        ("EventsPublisherFunction", |v| {
            events_publisher::Resources::from_vars(v).map(drop)
        }),
        ("RenderFunction", |v| {
            render::Config::from_vars(v)?;
            render::Resources::from_vars(v).map(drop)
        }),
        ("DispatchFunction", |v| {
            dispatch::Config::from_vars(v)?;
            dispatch::Resources::from_vars(v).map(drop)
        }),
        ("ProductionEventsFunction", |v| {
            production_events::Resources::from_vars(v).map(drop)
        }),
        ("PaymentWebhookFunction", |v| {
            payment_webhook::Resources::from_vars(v).map(drop)
        }),
        ("NotifyFunction", |v| {
            notify::Config::from_vars(v)?;
            notify::Resources::from_vars(v).map(drop)
        }),
        ("ReconcilerFunction", |v| {
            reconciler::Config::from_vars(v)?;
            reconciler::Resources::from_vars(v).map(drop)
        }),
        ("StatsFunction", |v| {
            stats::Resources::from_vars(v).map(drop)
        }),
    ]
}

/// Operators look at and redrive the dead letters of every queue of the
/// stack: the operator API is given each one's dead-letter queue, and may
/// receive, delete and move on it and send to the queue it serves.
#[test]
fn the_operator_api_knows_every_dead_letter_queue_of_the_stack() {
    let t = template("template.yaml");
    let raw = resource(&t, "OpsApiFunction")["Properties"]["Environment"]["Variables"]
        ["DEAD_LETTER_QUEUES"]
        .clone();
    let (tag, value) = tagged(&raw).expect("a !Sub");
    assert_eq!(tag, "!Sub");
    let value = value.as_str().unwrap().to_string();
    let statements = policy_statements(&t, "OpsApiFunction");
    let resources_of = |sid: &str| -> Vec<String> {
        let s = statements
            .iter()
            .find(|s| s["Sid"].as_str() == Some(sid))
            .unwrap_or_else(|| panic!("no statement {sid}"));
        s["Resource"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter_map(|r| tagged(r).and_then(|(_, v)| v.as_str().map(str::to_string)))
            .collect()
    };
    let (dlqs, sources) = (
        resources_of("DeadLetterQueues"),
        resources_of("RedriveToSourceQueues"),
    );
    for spec in topology::STACK_QUEUES {
        assert!(
            value.contains(&format!("{}=${{{}}}", spec.name, spec.dead_letter_resource)),
            "{} is not in DEAD_LETTER_QUEUES: {value}",
            spec.name
        );
        assert!(
            dlqs.contains(&format!("{}.Arn", spec.dead_letter_resource)),
            "{dlqs:?}"
        );
        assert!(
            sources.contains(&format!("{}.Arn", spec.resource)),
            "{sources:?}"
        );
    }
    assert_eq!(value.matches('=').count(), topology::STACK_QUEUES.len());
}

/// The reconciler refreshes jobs before their links expire: it must know
/// dispatch's link lifetime, and may query the `idle` index the stores
/// keep (`DynamoStore`'s `ReconcileStore`); events-publisher deletes the
/// outbox items it published.
#[test]
fn the_reconciler_knows_dispatchs_link_lifetime_and_may_read_its_index() {
    let t = template("template.yaml");
    let ttl = |f: &str| environment(&t, f).get("JOB_URL_TTL_SECS").cloned();
    assert!(ttl("DispatchFunction").is_some());
    assert_eq!(ttl("ReconcilerFunction"), ttl("DispatchFunction"));
    let table = resource(&t, "OrdersTable");
    let index = table["Properties"]["GlobalSecondaryIndexes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|i| i["IndexName"].as_str() == Some(printworks::adapters::aws::dynamodb::IDLE_INDEX))
        .expect("the idle index");
    assert_eq!(
        index["Projection"]["ProjectionType"].as_str(),
        Some("KEYS_ONLY")
    );
    let statements = policy_statements(&t, "ReconcilerFunction");
    assert!(statements.iter().any(|s| {
        s["Action"]
            .as_sequence()
            .is_some_and(|a| a.iter().any(|a| a.as_str() == Some("dynamodb:Query")))
            && tagged(&s["Resource"]).is_some_and(|(tag, v)| {
                tag == "!Sub" && v.as_str() == Some("${OrdersTable.Arn}/index/idle")
            })
    }));
    let publisher = orders_table_actions(&t, "EventsPublisherFunction").unwrap();
    assert!(
        publisher.contains("dynamodb:BatchWriteItem"),
        "{publisher:?}"
    );
}

#[test]
fn every_variable_a_function_requires_is_set_on_it_in_the_template() {
    let t = template("template.yaml");
    let mut seen = BTreeSet::new();
    for (function, load) in functions() {
        let env = environment(&t, function);
        let read = RefCell::new(BTreeSet::new());
        let lookup = |name: &str| {
            read.borrow_mut().insert(name.to_string());
            env.get(name).cloned()
        };
        let vars = Vars(&lookup as &dyn Fn(&str) -> Option<String>);
        if let Err(e) = load(&vars) {
            panic!(
                "{function}: its configuration fails on the template's environment {env:?}: {e}"
            );
        }
        // Every variable the template sets is read (RUST_LOG by tracing).
        let read = read.into_inner();
        for name in env.keys().filter(|n| *n != "RUST_LOG") {
            assert!(
                read.contains(name),
                "{function} sets {name}, which nothing reads"
            );
        }
        // Without them, the configuration names the first one missing.
        for required in env.keys().filter(|n| *n != "RUST_LOG") {
            let without = |name: &str| {
                if name == required {
                    None
                } else {
                    env.get(name).cloned()
                }
            };
            let vars = Vars(&without as &dyn Fn(&str) -> Option<String>);
            if let Err(ConfigError::Missing(name)) = load(&vars) {
                assert_eq!(name, required, "{function}");
            }
        }
        seen.insert(function);
    }
    // Every function of the template is checked.
    for (id, r) in t["Resources"].as_mapping().unwrap() {
        if r["Type"].as_str() == Some("AWS::Serverless::Function") {
            assert!(seen.contains(id.as_str().unwrap()), "{id:?} is not checked");
        }
    }
}

/// Every statement of `function`'s inline policies.
fn policy_statements<'a>(template: &'a Value, function: &str) -> Vec<&'a Value> {
    resource(template, function)["Properties"]["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| p["Statement"].as_sequence())
        .flatten()
        .collect()
}

/// The orders table statement of `function`'s policy: its actions.
fn orders_table_actions(template: &Value, function: &str) -> Option<BTreeSet<String>> {
    policy_statements(template, function)
        .into_iter()
        .filter(|s| {
            tagged(&s["Resource"])
                .is_some_and(|(tag, v)| tag == "!GetAtt" && v.as_str() == Some("OrdersTable.Arn"))
        })
        .map(|s| {
            s["Action"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect()
        })
        .next()
}

/// An order is read with one `Query` of its partition (the order, its
/// production record, its jobs: `DynamoStore::get`), so every function
/// that reads orders must be allowed `dynamodb:Query`, not only
/// `GetItem`: without it the read is refused on AWS (emulators do not
/// enforce IAM, so only this test sees it).
#[test]
fn every_function_that_reads_orders_may_query_their_partition() {
    let t = template("template.yaml");
    let mut readers = 0;
    for (function, _) in functions() {
        let Some(actions) = orders_table_actions(&t, function) else {
            continue;
        };
        if actions.contains("dynamodb:GetItem") {
            readers += 1;
            assert!(
                actions.contains("dynamodb:Query"),
                "{function} reads the orders table without dynamodb:Query: {actions:?}"
            );
        }
    }
    assert!(readers >= 6, "only {readers} functions read orders");
}

/// Every write of an order is one transaction that may also put or delete
/// the order's marker in the index of orders that need a person
/// (`ATTENTION`) and check that no production record is stored apart
/// (`conditional_order_put`): a function that writes orders needs
/// `DeleteItem` and `ConditionCheckItem` beside `PutItem`.
#[test]
fn every_function_that_writes_orders_may_delete_and_check_in_its_transactions() {
    let t = template("template.yaml");
    let mut writers = 0;
    for (function, _) in functions() {
        let Some(actions) = orders_table_actions(&t, function) else {
            continue;
        };
        // The statistics projection writes its own items (an event's mark,
        // the counters), never an order: it may not delete or check.
        if function == "StatsFunction" {
            assert!(
                !actions.contains("dynamodb:DeleteItem") && !actions.contains("dynamodb:GetItem"),
                "{function}: {actions:?}"
            );
            continue;
        }
        if actions.contains("dynamodb:PutItem") {
            writers += 1;
            for needed in ["dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"] {
                assert!(
                    actions.contains(needed),
                    "{function} writes orders without {needed}: {actions:?}"
                );
            }
        }
    }
    assert!(writers >= 6, "only {writers} functions write orders");
}
