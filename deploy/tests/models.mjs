// Validates rendered manifests (a JSON array on stdin) with kubernetes-models:
// required fields, types and enums for built-in kinds (which kubernetes-validate
// does not check for enums), and the KEDA, Strimzi and Prometheus Operator
// objects, which have no schema in kubernetes-validate at all. An object of a
// kind no package here knows is an error, never a silent pass.
import { readFileSync } from "node:fs";

const PACKAGES = {
  "keda.sh": "@kubernetes-models/keda",
  "kafka.strimzi.io": "@kubernetes-models/strimzi-kafka-operator",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};

function modulePath(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "") return `kubernetes-models/${version}/${kind}`;
  const thirdParty = PACKAGES[group];
  if (thirdParty) return `${thirdParty}/${group}/${version}/${kind}`;
  return `kubernetes-models/${group}/${version}/${kind}`;
}

const objects = JSON.parse(readFileSync(0, "utf8"));
let failures = 0;
for (const object of objects) {
  const name = `${object.kind}/${object.metadata?.name}`;
  let Model;
  try {
    const module = await import(modulePath(object.apiVersion, object.kind));
    Model = module[object.kind];
  } catch {
    Model = undefined;
  }
  if (!Model) {
    console.log(`ERROR ${name}: no schema for ${object.apiVersion} ${object.kind}`);
    failures++;
    continue;
  }
  try {
    new Model(object).validate();
  } catch (error) {
    console.log(`ERROR ${name}: ${error.message}`);
    failures++;
  }
}
console.log(`kubernetes-models: ${objects.length - failures}/${objects.length} objects valid`);
process.exit(failures === 0 ? 0 : 1);
