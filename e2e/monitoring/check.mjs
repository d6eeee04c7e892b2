// Reads {"exprs": [PromQL…], "objects": [Kubernetes object…]} on stdin and prints, as JSON,
// for each expression the metric names it selects (from Prometheus's own PromQL grammar,
// @prometheus-io/lezer-promql) or where it does not parse, and for each Prometheus Operator
// object (PodMonitor, ServiceMonitor, PrometheusRule) whether it validates against the
// schema the operator publishes (@kubernetes-models/prometheus-operator).
import { parser } from "@prometheus-io/lezer-promql";
import * as v1 from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const input = JSON.parse(await new Promise((resolve) => {
  let text = "";
  process.stdin.on("data", (c) => (text += c));
  process.stdin.on("end", () => resolve(text));
}));

const exprs = input.exprs.map((expr) => {
  const tree = parser.parse(expr);
  const metrics = [];
  let error = null;
  tree.iterate({
    enter(node) {
      if (node.type.isError && error === null) {
        error = `does not parse at ${node.from}: …${expr.slice(Math.max(0, node.from - 20), node.from + 20)}…`;
      }
      if (node.name === "VectorSelector") {
        const id = node.node.getChild("Identifier");
        if (id) metrics.push(expr.slice(id.from, id.to));
      }
    },
  });
  return { expr, error, metrics: [...new Set(metrics)] };
});

const objects = input.objects.map((o) => {
  const Model = v1[o.kind];
  if (!Model) return { kind: o.kind, name: o.metadata?.name, error: `no schema for kind ${o.kind}` };
  try {
    new Model(o).validate();
    return { kind: o.kind, name: o.metadata?.name, error: null };
  } catch (e) {
    return { kind: o.kind, name: o.metadata?.name, error: String(e.message) };
  }
});

console.log(JSON.stringify({ exprs, objects }));
