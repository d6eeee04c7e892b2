//! Compatibility with the official Apache Flink StateFun Go SDK
//! (`github.com/apache/flink-statefun/statefun-sdk-go/v3` v3.3.0 from the Go module proxy,
//! unchanged): the app of `e2e/go` (the SDK's handler behind net/http) as a real process, driven
//! through an in-process Spindle worker, outputs checked exactly. `e2e/go/build.sh` builds it on
//! first use; without `go` the test prints one `skip:` line.

mod support;

use support::brokers::{Flavor, Kafka};
use support::sdk::{SdkProcess, SeenType, build, compat_scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_sdk_functions_run_unchanged() {
    if build("go").is_none() {
        return;
    }
    let dir = support::TempDir::new("go-fn");
    let tansu = Kafka::start(Flavor::Tansu, "go_sdk")
        .await
        .expect("tansu always starts");
    let function = SdkProcess::start(
        "go",
        &["target/statefun-go-app"],
        &[],
        dir.path(),
        "StateFun Go SDK v3.3.0 app (net/http)",
    );
    compat_scenario("go", &function, &tansu, SeenType::Long).await;
}
