//! Serves the example functions: `PORT=8000 HOST=127.0.0.1 greeter`.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    spindle_example_greeter::run().await
}
