//! Compatibility with the official Apache Flink StateFun Java SDK
//! (`org.apache.flink:statefun-sdk-java:3.3.0` from Maven Central, unchanged): the app of
//! `e2e/java` (the SDK's RequestReplyHandler behind the JDK's HTTP server) as a real JVM process,
//! driven through an in-process Spindle worker, outputs checked exactly. `e2e/java/build.sh`
//! builds the jar on first use (Java 17 and Maven); without them the test prints one `skip:`
//! line.

mod support;

use support::brokers::{Flavor, Kafka};
use support::sdk::{SdkProcess, SeenType, build, compat_scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_sdk_functions_run_unchanged() {
    if build("java").is_none() {
        return;
    }
    let dir = support::TempDir::new("java-fn");
    let tansu = Kafka::start(Flavor::Tansu, "java_sdk")
        .await
        .expect("tansu always starts");
    let function = SdkProcess::start(
        "java",
        &["java", "-jar", "target/statefun-java-app.jar"],
        &[],
        dir.path(),
        "StateFun Java SDK 3.3.0 app (JDK HttpServer)",
    );
    compat_scenario("java", &function, &tansu, SeenType::Long).await;
}
