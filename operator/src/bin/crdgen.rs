//! Prints the StatefulApplication CRD as YAML: `cargo run -p spindle-operator --bin crdgen > crds/statefulapplications.spindle.dev.yaml`.

fn main() {
    print!("{}", spindle_operator::crd::crd_yaml());
}
