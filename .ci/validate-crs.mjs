// Validate Kubernetes custom resources against their CRDs' schemas (the chart's ServiceMonitor,
// PodMonitor, PrometheusRule and VerticalPodAutoscaler), as the API server would on apply:
// types, required fields, enums and patterns (durations, label names). Unknown fields are not
// refused, as the API server prunes them instead of refusing them.
//
//   node .ci/validate-crs.mjs <node_modules dir> < objects.json
//
// objects.json: a JSON array of resources. The models are the npm packages
// @kubernetes-models/prometheus-operator and @kubernetes-models/autoscaler, installed by
// .ci/bootstrap.sh into .ci/tools/npm/node_modules (tests/integration/test_chart.py runs this).
// Prints "valid <kind>/<name>" or "invalid <kind>/<name>: <reason>" per resource; exit 0 when
// every resource is valid, 1 when one is not, 2 on bad input or a kind without a model.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const MODELS = {
  "monitoring.coreos.com/v1 ServiceMonitor":
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js",
  "monitoring.coreos.com/v1 PodMonitor":
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor.js",
  "monitoring.coreos.com/v1 PrometheusRule":
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule.js",
  "autoscaling.k8s.io/v1 VerticalPodAutoscaler":
    "@kubernetes-models/autoscaler/autoscaling.k8s.io/v1/VerticalPodAutoscaler.js",
};

function fail(message) {
  console.error(message);
  process.exit(2);
}

const modules = process.argv[2];
if (!modules) fail("usage: node validate-crs.mjs <node_modules dir> < objects.json");
let objects;
try {
  objects = JSON.parse(readFileSync(0, "utf8"));
} catch (err) {
  fail(`stdin is not a JSON array of resources: ${err.message}`);
}
if (!Array.isArray(objects)) fail("stdin is not a JSON array of resources");

let invalid = 0;
for (const obj of objects) {
  const key = `${obj.apiVersion} ${obj.kind}`;
  const name = `${obj.kind}/${obj.metadata?.name ?? "?"}`;
  const file = MODELS[key];
  if (!file) fail(`no model for ${key} (${name}); known: ${Object.keys(MODELS).join(", ")}`);
  let model;
  try {
    model = await import(pathToFileURL(join(modules, file)).href);
  } catch (err) {
    fail(`cannot load the model of ${key} from ${modules}: ${err.message}`);
  }
  const Model = model[obj.kind];
  try {
    new Model(obj).validate();
    console.log(`valid ${name}`);
  } catch (err) {
    invalid += 1;
    console.log(`invalid ${name}: ${err.message}`);
  }
}
process.exit(invalid ? 1 : 0);
