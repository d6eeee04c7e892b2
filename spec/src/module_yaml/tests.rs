//! Modules written the way the StateFun 3.x documentation and playground write them, and one
//! test per refusal: each error names the document and the field.

use super::*;
use crate::StartupPosition;

/// The playground's greeter (statefun-playground, python/greeter/module.yaml), async transport.
const GREETER: &str = r#"
kind: io.statefun.endpoints.v2/http
spec:
  functions: greeter.fns/*
  urlPathTemplate: http://greeter-functions:1108/
  transport:
    type: io.statefun.transports.v1/async
    call: 2m
    connect: 20s
---
kind: io.statefun.playground.v1/ingress
spec:
  port: 8090
---
kind: io.statefun.playground.v1/egress
spec:
  port: 8091
  topics:
    - greetings
"#;

/// A shopping cart: the v1 endpoint with timeouts, a Kafka ingress from a date, a Kafka egress.
const SHOP: &str = r#"
# comments before the first document are fine
kind: io.statefun.endpoints.v1/http
spec:
  functions: com.example/*
  urlPathTemplate: https://bar.foo.com:8080/{function.name}
  maxNumBatchRequests: 500
  timeouts:
    call: 1 min
    read: 10 sec
---
kind: io.statefun.kafka.v1/ingress
spec:
  id: com.example/add-to-cart
  address: kafka:9092,kafka2:9092
  consumerGroupId: shopping-cart
  startupPosition:
    type: date
    date: 2020-02-01 04:15:00.00 Z
  properties:
    - max.poll.records: 100
  topics:
    - topic: add-to-cart
      valueType: com.example/AddToCart
      targets:
        - com.example/user-shopping-cart
---
kind: io.statefun.kafka.v1/egress
spec:
  id: com.example/receipts
  address: kafka:9092
  deliverySemantic:
    type: exactly-once
    transactionTimeout: 15min
"#;

fn err(module: &str) -> String {
    import(module, "module.yaml", "x").unwrap_err().to_string()
}

fn assert_starts(e: &str, prefix: &str) {
    assert!(e.starts_with(prefix), "expected `{prefix}…`, got:\n{e}");
}

#[test]
fn the_playground_greeter_becomes_an_application() {
    assert!(is_module(GREETER));
    let i = import(GREETER, "module.yaml", "greeter").unwrap();
    let f = &i.app.spec.functions[0];
    assert_eq!(
        (f.typename.as_str(), f.endpoint.as_str()),
        ("greeter.fns/*", "http://greeter-functions:1108/")
    );
    assert_eq!(f.call_timeout, None, "retried like StateFun's restart, not set aside");
    assert_eq!(i.app.spec.ingresses[0].http.as_ref().unwrap().port, 8090);
    assert_eq!(i.app.spec.egresses[0].typename, "io.statefun.playground/egress");
    assert!(i.app.spec.egresses[0].file.is_some());
    let notes = i.notes.join("\n");
    assert!(notes.contains("not mapped: call 2m, connect 20s"), "{notes}");
    let yaml = to_yaml(&i, "module.yaml");
    assert!(
        yaml.starts_with("# Imported from the StateFun module module.yaml"),
        "{yaml}"
    );
    // What `spindle import` prints is itself a valid application.
    let again = crate::from_yaml_str(&yaml, "imported").unwrap();
    assert_eq!(again, i.app);
}

#[test]
fn kafka_ingress_and_egress_map_with_their_positions_and_semantics() {
    let i = import(SHOP, "module.yaml", "shop").unwrap();
    let spec = &i.app.spec;
    assert_eq!(spec.functions[0].max_batch_size, 500);
    assert_eq!(spec.functions[0].endpoint, "https://bar.foo.com:8080/{function.name}");
    let k = spec.ingresses[0].kafka.as_ref().unwrap();
    assert_eq!(spec.ingresses[0].name, "com-example-add-to-cart");
    assert_eq!(k.brokers, ["kafka:9092", "kafka2:9092"]);
    assert_eq!(k.consumer_group_id.as_deref(), Some("shopping-cart"));
    assert_eq!(k.startup_position, StartupPosition::Timestamp);
    assert_eq!(k.startup_timestamp.as_deref(), Some("2020-02-01T04:15:00.000Z"));
    assert_eq!(k.topics[0].topic, "add-to-cart");
    assert_eq!(k.topics[0].value_type, "com.example/AddToCart");
    assert_eq!(k.topics[0].targets, ["com.example/user-shopping-cart"]);
    assert_eq!(spec.egresses[0].typename, "com.example/receipts");
    assert_eq!(spec.egresses[0].kafka.as_ref().unwrap().brokers, ["kafka:9092"]);
    let egress = spec.egresses[0].kafka.as_ref().unwrap();
    assert!(egress.exactly_once());
    assert_eq!(egress.transaction_timeout(), std::time::Duration::from_secs(900));
    let notes = i.notes.join("\n");
    assert!(notes.contains("document 3 (io.statefun.kafka.v1/egress): egress com.example/receipts → spec.egresses[0]; deliverySemantic exactly-once → "), "{notes}");
    assert!(notes.contains("properties not mapped: max.poll.records"), "{notes}");
    assert!(notes.contains("not mapped: call 1m, read 10s"), "{notes}");
}

#[test]
fn every_startup_position_and_delivery_semantic() {
    let ingress = |position: &str| {
        format!(
            "{}---\nkind: io.statefun.kafka.v1/ingress\nspec:\n  id: a/b\n  address: k:9092\n{position}  topics: [{{topic: t, valueType: a/T, targets: [greeter.fns/f]}}]\n",
            GREETER
        )
    };
    let position = |m: &str| {
        let i = import(m, "m", "x").unwrap();
        i.app.spec.ingresses[1].kafka.clone().unwrap().startup_position
    };
    // StateFun 3.x's binder default (RoutableKafkaIngressSpec): latest.
    assert_eq!(position(&ingress("")), StartupPosition::Latest);
    for (ty, want) in [
        ("earliest", StartupPosition::Earliest),
        ("latest", StartupPosition::Latest),
        ("group-offsets", StartupPosition::GroupOffsets),
    ] {
        assert_eq!(
            position(&ingress(&format!("  startupPosition: {{type: {ty}}}\n"))),
            want,
            "{ty}"
        );
    }
    let egress = |semantic: &str| {
        format!("{GREETER}---\nkind: io.statefun.kafka.v1/egress\nspec:\n  id: a/out\n  address: k:9092\n{semantic}")
    };
    for (semantic, says) in [
        ("", "deliverySemantic at-least-once → "),
        (
            "  deliverySemantic: {type: none}\n",
            "deliverySemantic none → behaves as at-least-once",
        ),
        (
            "  deliverySemantic: {type: at-least-once}\n",
            "deliverySemantic at-least-once → ",
        ),
    ] {
        let i = import(&egress(semantic), "m", "x").unwrap();
        assert!(i.notes.iter().any(|n| n.contains(says)), "{semantic}: {:?}", i.notes);
    }
}

#[test]
fn the_old_single_document_form_is_read() {
    let legacy = r#"
version: "3.0"
module:
  meta:
    type: remote
  spec:
    endpoints:
      - endpoint:
          meta:
            kind: http
          spec:
            functions: example/*
            urlPathTemplate: http://functions:8000/statefun
    ingresses:
      - ingress:
          meta:
            type: io.statefun.kafka/ingress
            id: example/names
          spec:
            address: kafka:9092
            consumerGroupId: my-group-id
            topics:
              - topic: names
                valueType: example/GreetRequest
                targets:
                  - example/person
    egresses:
      - egress:
          meta:
            type: io.statefun.kafka/egress
            id: example/greets
          spec:
            address: kafka:9092
            deliverySemantic:
              type: exactly-once
              transactionTimeoutMillis: 100000
"#;
    assert!(is_module(legacy));
    let i = import(legacy, "m.yaml", "old").unwrap();
    assert_eq!(i.app.spec.functions[0].typename, "example/*");
    let k = i.app.spec.ingresses[0].kafka.as_ref().unwrap();
    assert_eq!(i.app.spec.ingresses[0].name, "example-names");
    assert_eq!(k.startup_position, StartupPosition::Latest);
    assert_eq!(i.app.spec.egresses[0].typename, "example/greets");
    let egress = i.app.spec.egresses[0].kafka.as_ref().unwrap();
    assert_eq!(egress.transaction_timeout(), std::time::Duration::from_secs(100));

    let kinesis = legacy.replace("io.statefun.kafka/ingress", "io.statefun.kinesis/ingress");
    assert_starts(
        &err(&kinesis),
        "module.yaml document 1: module.spec.ingresses[0].ingress.meta.type `io.statefun.kinesis/ingress` is not supported: Spindle has no AWS Kinesis connector",
    );
    let grpc = legacy.replace("kind: http", "kind: grpc");
    assert_starts(
        &err(&grpc),
        "module.yaml document 1: module.spec.endpoints[0].endpoint.meta.kind `grpc` is not supported",
    );
    let no_id = legacy.replace("            id: example/greets\n", "");
    assert_starts(
        &err(&no_id),
        "module.yaml document 1: module.spec.egresses[0].egress.meta.id is missing",
    );
}

#[test]
fn unsupported_kinds_name_the_document() {
    for kind in ["io.statefun.kinesis.v1/ingress", "io.statefun.kinesis.v1/egress"] {
        let m = format!("{GREETER}---\nkind: {kind}\nspec: {{id: a/b}}\n");
        assert_starts(
            &err(&m),
            &format!("module.yaml document 4: kind {kind} is not supported: Spindle has no AWS Kinesis connector"),
        );
    }
    let unknown = format!("{GREETER}---\nkind: com.acme.v1/ingress\nspec: {{}}\n");
    assert_starts(
        &err(&unknown),
        "module.yaml document 4: kind com.acme.v1/ingress is not supported: Spindle reads io.statefun.endpoints.v1/http",
    );
    assert!(!is_module(
        "apiVersion: spindle.dev/v1alpha1\nkind: StatefulApplication\n"
    ));
    assert!(!is_module("not: [a module"));
}

#[test]
fn document_shape_errors() {
    assert_starts(
        &err("kind: io.statefun.endpoints.v2/http\nspec: [1\n"),
        "module.yaml document 1: not YAML: ",
    );
    let second_bad = format!("{GREETER}---\nkind: [\n");
    assert!(is_module(&second_bad), "the first document decides");
    assert_starts(&err(&second_bad), "module.yaml document 4: not YAML: ");
    assert_starts(
        &err(&format!("{GREETER}---\nspec: {{}}\n")),
        "module.yaml document 4: kind is missing",
    );
    assert_starts(
        &err(&format!("{GREETER}---\nkind: 3\n")),
        "module.yaml document 4: kind: expected a string, found `3`",
    );
    assert_starts(
        &err(&format!("{GREETER}---\nkind: io.statefun.kafka.v1/egress\n")),
        "module.yaml document 4: kind io.statefun.kafka.v1/egress: spec is missing",
    );
    assert_starts(
        &err(&format!("{GREETER}---\n- a\n")),
        "module.yaml document 4: expected a mapping with `kind` and `spec`",
    );
    assert_starts(
        &err(&format!("{GREETER}---\nkind: io.statefun.kafka.v1/egress\nspec: 5\n")),
        "module.yaml document 4: kind io.statefun.kafka.v1/egress: spec: expected a mapping, found `5`",
    );
    assert_starts(
        &err("kind: io.statefun.playground.v1/ingress\nspec: {}\n"),
        "module.yaml document 1: the module declares no function endpoint",
    );
}

#[test]
fn endpoint_errors_name_the_field() {
    let ep = |spec: &str| format!("---\n---\nkind: io.statefun.endpoints.v2/http\nspec:\n{spec}");
    let base = "  functions: a/*\n  urlPathTemplate: http://f:1/\n";
    for (spec, want) in [
        (
            "  urlPathTemplate: http://f:1/\n".to_string(),
            "spec.functions is missing",
        ),
        ("  functions: a/*\n".to_string(), "spec.urlPathTemplate is missing"),
        (
            "  functions: [a]\n  urlPathTemplate: http://f:1/\n".to_string(),
            "spec.functions: expected a string, found",
        ),
        (
            "  functions: a/*\n  urlPathTemplate: http+unix:///uds.sock/p\n".to_string(),
            "spec.urlPathTemplate `http+unix:///uds.sock/p`: UNIX domain sockets are not supported",
        ),
        (
            format!("{base}  maxNumBatchRequests: 0\n"),
            "spec.maxNumBatchRequests: expected a positive number, found `0`",
        ),
        (
            format!("{base}  transport: {{type: io.statefun.transports.v1/grpc}}\n"),
            "spec.transport.type `io.statefun.transports.v1/grpc` is not a StateFun transport",
        ),
        (
            format!("{base}  transport: {{timeouts: {{call: soon}}}}\n"),
            "spec.transport.timeouts.call: `soon` is not a duration",
        ),
        (
            format!("{base}  transport: {{type: io.statefun.transports.v1/async, connect: 5 weeks}}\n"),
            "spec.transport.connect: `5 weeks` is not a duration",
        ),
        (
            format!("{base}  transport: {{trust_cacerts: classpath:ca.pem}}\n"),
            "spec.transport.trust_cacerts `classpath:ca.pem`: classpath resources exist only inside StateFun's JVM",
        ),
        (
            format!("{base}  transport: {{client_key: k.pem, client_key_password: /tmp/p}}\n"),
            "spec.transport.client_key_password is not supported",
        ),
    ] {
        let e = err(&ep(&spec));
        // An empty document first: the number is the document's place in the file.
        assert_starts(
            &e,
            &format!("module.yaml document 2: kind io.statefun.endpoints.v2/http: {want}"),
        );
    }
    let v1 = "kind: io.statefun.endpoints.v1/http\nspec:\n  functions: a/*\n  urlPathTemplate: http://f:1/\n  timeouts: {read: 1 parsec}\n";
    assert_starts(
        &err(v1),
        "module.yaml document 1: kind io.statefun.endpoints.v1/http: spec.timeouts.read: `1 parsec` is not a duration",
    );
}

#[test]
fn tls_files_map_and_need_https() {
    let m = "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: a/*\n  urlPathTemplate: https://f:1/\n  transport: {type: io.statefun.transports.v1/async, trust_cacerts: file:/etc/ca.pem, client_cert: c.pem, client_key: k.pem}\n";
    let i = import(m, "m", "x").unwrap();
    let tls = i.app.spec.functions[0].tls.clone().unwrap();
    assert_eq!(tls.ca_file.as_deref(), Some("/etc/ca.pem"));
    assert_eq!(
        (tls.cert_file.as_deref(), tls.key_file.as_deref()),
        (Some("c.pem"), Some("k.pem"))
    );
    // Spindle's own validation, traced back to the document that wrote the endpoint.
    let plain = m.replace("https://", "http://");
    assert_starts(
        &err(&format!("---\n{plain}")),
        "module.yaml document 1: kind io.statefun.endpoints.v2/http (as spec.functions[0]): spec.functions[0].tls: TLS settings need an `https://` endpoint",
    );
}

#[test]
fn kafka_errors_name_the_field() {
    let ing = |spec: &str| format!("{GREETER}---\nkind: io.statefun.kafka.v1/ingress\nspec:\n{spec}");
    let topics = "  topics: [{topic: t, valueType: a/T, targets: [greeter.fns/f]}]\n";
    let base = format!("  id: a/in\n  address: k:9092\n{topics}");
    for (spec, want) in [
        (format!("  address: k:9092\n{topics}"), "spec.id is missing".to_string()),
        (format!("  id: a/in\n{topics}"), "spec.address is missing".into()),
        (format!("  id: a/in\n  address: ' , '\n{topics}"), "spec.address: names no broker".into()),
        ("  id: a/in\n  address: k:9092\n".into(), "spec.topics: expected a list of topics".into()),
        ("  id: a/in\n  address: k:9092\n  topics: [{valueType: a/T, targets: [a/f]}]\n".into(), "spec.topics[0].topic is missing".into()),
        ("  id: a/in\n  address: k:9092\n  topics: [{topic: t, targets: [a/f]}]\n".into(), "spec.topics[0].valueType is missing".into()),
        ("  id: a/in\n  address: k:9092\n  topics: [{topic: t, valueType: a/T}]\n".into(), "spec.topics[0].targets: expected a list of function types".into()),
        ("  id: a/in\n  address: k:9092\n  topics: [{topic: t, valueType: a/T, targets: [[x]]}]\n".into(), "spec.topics[0].targets[0]: expected a function type".into()),
        (format!("{base}  startupPosition: {{}}\n"), "spec.startupPosition.type is missing".into()),
        (format!("{base}  startupPosition: {{type: specific-offsets, offsets: [{{t/0: 91}}]}}\n"), "spec.startupPosition.type `specific-offsets` is not supported".into()),
        (format!("{base}  startupPosition: {{type: newest}}\n"), "spec.startupPosition.type `newest` is not a startup position".into()),
        (format!("{base}  startupPosition: {{type: date}}\n"), "spec.startupPosition.date is missing".into()),
        (format!("{base}  startupPosition: {{type: date, date: yesterday}}\n"), "spec.startupPosition.date: `yesterday` is not a date like".into()),
        (format!("{base}  autoOffsetResetPosition: none\n"), "spec.autoOffsetResetPosition `none` is not a position".into()),
        (format!("{base}  properties: {{a: b}}\n"), "spec.properties: expected a list of `- key: value`".into()),
        (format!("{base}  properties: [{{security.protocol: SASL_SSL}}]\n"), "spec.properties[0] `security.protocol` is not supported: Kafka client security properties are not translated".into()),
    ] {
        assert_starts(&err(&ing(&spec)), &format!("module.yaml document 4: kind io.statefun.kafka.v1/ingress: {want}"));
    }
    // PLAINTEXT is what Spindle speaks without `tls`: accepted.
    assert!(
        import(
            &ing(&format!("{base}  properties: [{{security.protocol: PLAINTEXT}}]\n")),
            "m",
            "x"
        )
        .is_ok()
    );
    // A bad target type is Spindle's validation, traced back to its document.
    let bad_target = ing("  id: a/in\n  address: k:9092\n  topics: [{topic: t, valueType: a/T, targets: [nons]}]\n");
    assert_starts(
        &err(&bad_target),
        "module.yaml document 4: kind io.statefun.kafka.v1/ingress (as spec.ingresses[1]): spec.ingresses[1].kafka.topics[0].targets[0]",
    );

    let eg = |spec: &str| format!("{GREETER}---\nkind: io.statefun.kafka.v1/egress\nspec:\n{spec}");
    for (spec, want) in [
        ("  address: k:9092\n", "spec.id is missing"),
        ("  id: a/out\n", "spec.address is missing"),
        (
            "  id: a/out\n  address: k:9092\n  deliverySemantic: {type: twice}\n",
            "spec.deliverySemantic.type `twice` is not a delivery semantic",
        ),
        (
            "  id: a/out\n  address: k:9092\n  deliverySemantic: {}\n",
            "spec.deliverySemantic.type is missing",
        ),
        (
            "  id: a/out\n  address: k:9092\n  properties: [{sasl.mechanism: PLAIN}]\n",
            "spec.properties[0] `sasl.mechanism` is not supported",
        ),
    ] {
        assert_starts(
            &err(&eg(spec)),
            &format!("module.yaml document 4: kind io.statefun.kafka.v1/egress: {want}"),
        );
    }
    assert_starts(
        &err(&eg("  id: noslash\n  address: k:9092\n")),
        "module.yaml document 4: kind io.statefun.kafka.v1/egress (as spec.egresses[1]): spec.egresses[1].typename",
    );
}

#[test]
fn playground_errors_name_the_field() {
    let ep = "kind: io.statefun.endpoints.v2/http\nspec: {functions: a/*, urlPathTemplate: 'http://f:1/'}\n";
    assert_starts(
        &err(&format!(
            "{ep}---\nkind: io.statefun.playground.v1/ingress\nspec: {{port: 70000}}\n"
        )),
        "module.yaml document 2: kind io.statefun.playground.v1/ingress: spec.port: expected a port, found `70000`",
    );
    assert_starts(
        &err(&format!(
            "{ep}---\nkind: io.statefun.playground.v1/egress\nspec: {{port: x}}\n"
        )),
        "module.yaml document 2: kind io.statefun.playground.v1/egress: spec.port: expected a port, found `x`",
    );
    // Two playground ingresses on one port: Spindle's validation names the second.
    let twice = format!(
        "{ep}---\nkind: io.statefun.playground.v1/ingress\nspec: {{}}\n---\nkind: io.statefun.playground.v1/ingress\nspec: {{}}\n"
    );
    assert_starts(
        &err(&twice),
        "module.yaml document 3: kind io.statefun.playground.v1/ingress (as spec.ingresses[1]): spec.ingresses[1].name: `playground-8090` is declared twice",
    );
}

#[test]
fn names_from_directories() {
    assert_eq!(name_from_dir("Shopping_Cart"), "shopping-cart");
    assert_eq!(name_from_dir("--"), "statefun-module");
    assert_eq!(name_from_dir(&"x".repeat(64)), "statefun-module");
}
