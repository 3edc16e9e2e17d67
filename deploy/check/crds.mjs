// Validates CRD objects (KEDA ScaledObject, prometheus-operator ServiceMonitor and
// PrometheusRule) against their published schemas. Reads a JSON array of documents on
// stdin; prints one line per document; exits 1 when any is invalid.
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1";
import { ServiceMonitor, PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import { readFileSync } from "node:fs";

const kinds = { ScaledObject, ServiceMonitor, PrometheusRule };
const docs = JSON.parse(readFileSync(0, "utf8"));
let bad = 0;
for (const doc of docs) {
  const Model = kinds[doc.kind];
  const name = `${doc.kind}/${doc.metadata?.name}`;
  if (!Model) {
    console.log(`INVALID ${name}: no schema for this kind`);
    bad++;
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`ok ${name}`);
  } catch (e) {
    console.log(`INVALID ${name}: ${e.message}`);
    bad++;
  }
}
process.exit(bad ? 1 : 0);
