#!/usr/bin/env python3
"""The deployment policy: every rule of issue 7's Build list, checked on
rendered manifests (a `kubectl kustomize` output file).

Usage: policy.py RENDERED.yaml [--sqi PATH]

With --sqi, the processor's defaults (consumer group, topic, dead-letter
topic) are read from `sqi process --help`, so that a ConfigMap that leaves one
unset is still checked against what the binary will really use.

Prints one line per violation and exits 1 if there is any.
"""

import argparse
import re
import subprocess
import sys

import yaml

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
ROLE_ARN = re.compile(r"^arn:aws:iam::\d{12}:role/[\w+=,.@/-]+$")
SECRETISH = re.compile(r"(PASSWORD|SECRET|TOKEN|PRIVATE_KEY|ACCESS_KEY)", re.I)
CRD_GROUPS = ("keda.sh/", "kafka.strimzi.io/", "monitoring.coreos.com/")
# The processor's own auto.offset.reset (processor/src/consumer.rs).
PROCESSOR_OFFSET_RESET = "earliest"
# The processor's writers get this long to finish on SIGTERM (consumer.rs `finish`).
PROCESSOR_WRITER_DEADLINE_S = 30


def parse_duration(text):
    """The binary's own duration syntax: 250ms, 2s, 5m, 1h or bare seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", text.strip())
    if not match:
        raise ValueError(f"`{text}` is not a duration")
    n, unit = int(match.group(1)), match.group(2) or "s"
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def parse_bytes(text):
    """A byte size as the binary (512MiB, 512Mi) or Kubernetes (512Mi, 1G) writes it."""
    match = re.fullmatch(r"(\d+)\s*(B|KiB|Ki|MiB|Mi|GiB|Gi|k|K|M|G)?", str(text).strip())
    if not match:
        raise ValueError(f"`{text}` is not a byte size")
    n, unit = int(match.group(1)), match.group(2) or "B"
    scale = {"B": 1, "KiB": 1 << 10, "Ki": 1 << 10, "MiB": 1 << 20, "Mi": 1 << 20, "GiB": 1 << 30, "Gi": 1 << 30,
             "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9}[unit]
    return n * scale


class Manifests:
    def __init__(self, documents):
        self.objects = [d for d in documents if d]

    def of(self, kind):
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind, name):
        for o in self.of(kind):
            if o["metadata"]["name"] == name:
                return o
        return None

    def config_maps(self):
        return {o["metadata"]["name"]: o.get("data", {}) for o in self.of("ConfigMap")}


class Policy:
    def __init__(self, manifests, binary_defaults):
        self.m = manifests
        self.defaults = binary_defaults
        self.violations = []

    def fail(self, obj, message):
        where = f"{obj['kind']}/{obj['metadata']['name']}" if obj else "manifests"
        self.violations.append(f"{where}: {message}")

    def check(self, obj, condition, message):
        if not condition:
            self.fail(obj, message)
        return condition

    # -- pod templates ------------------------------------------------------

    def workloads(self):
        """(owner object, pod spec, pod labels) for every pod template."""
        for d in self.m.of("Deployment"):
            t = d["spec"]["template"]
            yield d, t["spec"], t["metadata"].get("labels", {})
        for c in self.m.of("CronJob"):
            t = c["spec"]["jobTemplate"]["spec"]["template"]
            yield c, t["spec"], t["metadata"].get("labels", {})
        for j in self.m.of("Job"):
            t = j["spec"]["template"]
            yield j, t["spec"], t["metadata"].get("labels", {})

    def env_of(self, container):
        """The environment a container gets: envFrom ConfigMaps, then env."""
        maps = self.m.config_maps()
        env = {}
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref:
                env.update(maps.get(ref["name"], {}))
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = re.sub(
                    r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), var["value"]
                )
        return env

    def role_env(self, component):
        d = self.deployment(component)
        if not d:
            return {}
        return self.env_of(d["spec"]["template"]["spec"]["containers"][0])

    def deployment(self, component):
        for d in self.m.of("Deployment"):
            labels = d["spec"]["template"]["metadata"].get("labels", {})
            if labels.get("app.kubernetes.io/component") == component:
                return d
        return None

    def check_pod(self, owner, spec, labels):
        pod_sc = spec.get("securityContext", {})
        self.check(owner, pod_sc.get("runAsNonRoot") is True, "pod must set runAsNonRoot: true")
        uid = pod_sc.get("runAsUser")
        self.check(owner, isinstance(uid, int) and uid > 0, "pod must run as a numeric non-root runAsUser")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            who = f"container {c['name']}"
            sc = c.get("securityContext", {})
            self.check(owner, sc.get("readOnlyRootFilesystem") is True, f"{who}: readOnlyRootFilesystem must be true")
            self.check(owner, sc.get("allowPrivilegeEscalation") is False, f"{who}: allowPrivilegeEscalation must be false")
            self.check(owner, sc.get("privileged") is not True, f"{who}: must not be privileged")
            self.check(owner, "ALL" in sc.get("capabilities", {}).get("drop", []), f"{who}: must drop ALL capabilities")
            self.check(owner, not sc.get("capabilities", {}).get("add"), f"{who}: must add no capabilities")
            seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
            self.check(owner, seccomp.get("type") == "RuntimeDefault", f"{who}: seccompProfile must be RuntimeDefault")
            if "runAsUser" in sc:
                self.check(owner, sc["runAsUser"] != 0, f"{who}: runs as root")
            resources = c.get("resources", {})
            requests = resources.get("requests", {})
            self.check(owner, "cpu" in requests and "memory" in requests, f"{who}: needs cpu and memory requests")
            self.check(owner, "memory" in resources.get("limits", {}), f"{who}: needs a memory limit")
            self.check(owner, DIGEST.search(c.get("image", "")) is not None, f"{who}: image must be pinned by digest, got {c.get('image')}")
            tmp = [m for m in c.get("volumeMounts", []) if m.get("mountPath") == "/tmp"]
            self.check(
                owner,
                len(tmp) == 1 and "emptyDir" in volumes.get(tmp[0]["name"], {}),
                f"{who}: needs an emptyDir mounted at /tmp",
            )
            for var in c.get("env", []):
                if "value" in var and SECRETISH.search(var["name"]):
                    self.fail(owner, f"{who}: {var['name']} looks secret and is inlined; use secretKeyRef")
            for source in c.get("envFrom", []):
                ref = source.get("configMapRef")
                if ref:
                    self.check(owner, ref["name"] in self.m.config_maps(), f"{who}: envFrom ConfigMap {ref['name']} is not in the manifests")
        for v in volumes.values():
            if "configMap" in v:
                self.check(owner, v["configMap"]["name"] in self.m.config_maps(), f"volume {v['name']}: ConfigMap not in the manifests")
        account = spec.get("serviceAccountName")
        sa = self.m.get("ServiceAccount", account) if account else None
        if self.check(owner, sa is not None, f"serviceAccountName {account!r} is not a ServiceAccount in the manifests"):
            arn = sa["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "")
            self.check(sa, ROLE_ARN.match(arn) is not None, f"needs an IRSA eks.amazonaws.com/role-arn annotation, got {arn!r}")
        self.check(owner, "terminationGracePeriodSeconds" in spec, "must state terminationGracePeriodSeconds")

    # -- long-running Deployments -------------------------------------------

    def autoscalers_of(self, deployment):
        name = deployment["metadata"]["name"]
        hpas = [h for h in self.m.of("HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name
                and h["spec"]["scaleTargetRef"]["kind"] == "Deployment"]
        scaled = [s for s in self.m.of("ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == name
                  and s["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"]
        return hpas, scaled

    def check_deployment(self, d):
        spec = d["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"].get("labels", {})
        selector = spec["selector"].get("matchLabels", {})
        self.check(d, selector and all(labels.get(k) == v for k, v in selector.items()), "selector does not match the pod labels")
        self.check(d, spec.get("strategy", {}).get("type", "RollingUpdate") == "RollingUpdate", "must roll, not recreate")
        container = pod["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
        for kind, path in (("startupProbe", None), ("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
            probe = container.get(kind)
            if not self.check(d, probe and "httpGet" in probe, f"needs an httpGet {kind}"):
                continue
            get = probe["httpGet"]
            if path:
                self.check(d, get.get("path") == path, f"{kind} must probe {path}, probes {get.get('path')}")
            else:
                self.check(d, get.get("path") in ("/livez", "/readyz"), f"{kind} must probe /livez or /readyz")
            self.check(d, get.get("port") in ports, f"{kind} port {get.get('port')!r} is not a named container port")
        hpas, scaled = self.autoscalers_of(d)
        self.check(d, len(hpas) + len(scaled) == 1, f"needs exactly one autoscaler, has {len(hpas)} HPA and {len(scaled)} ScaledObject")
        self.check(d, "replicas" not in spec, "states spec.replicas although an autoscaler owns the count")
        pdbs = [p for p in self.m.of("PodDisruptionBudget")
                if all(labels.get(k) == v for k, v in p["spec"]["selector"].get("matchLabels", {}).items())]
        self.check(d, len(pdbs) == 1, f"needs exactly one PodDisruptionBudget selecting its pods, has {len(pdbs)}")
        for pdb in pdbs:
            self.check(pdb, pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow",
                       "unhealthyPodEvictionPolicy should be AlwaysAllow, so pods that never got ready do not block drains")
            others = [o for o in self.m.of("Deployment") if o is not d and all(
                o["spec"]["template"]["metadata"].get("labels", {}).get(k) == v
                for k, v in pdb["spec"]["selector"].get("matchLabels", {}).items())]
            self.check(pdb, not others, "selects the pods of more than one Deployment")
        for hpa in hpas:
            metrics = hpa["spec"].get("metrics", [])
            cpu = [x for x in metrics if x.get("type") == "Resource" and x["resource"]["name"] == "cpu"]
            self.check(hpa, cpu and cpu[0]["resource"]["target"]["type"] == "Utilization", "must scale on CPU utilization")
            self.check(hpa, "cpu" in container.get("resources", {}).get("requests", {}), "CPU utilization needs requests.cpu")
            self.check(hpa, hpa["spec"].get("minReplicas", 1) >= 2, "minReplicas must be at least 2")
            self.check(hpa, hpa["spec"]["maxReplicas"] >= hpa["spec"].get("minReplicas", 1), "maxReplicas below minReplicas")
            self.check(hpa, "stabilizationWindowSeconds" in hpa["spec"].get("behavior", {}).get("scaleDown", {}),
                       "needs a scale-down stabilization window")

    def check_roles(self):
        ingest, processor, report = (self.deployment(c) for c in ("ingest", "processor", "report"))
        for component, d in (("ingest", ingest), ("processor", processor), ("report", report)):
            self.check(None, d is not None, f"no Deployment for {component}")
        if ingest:
            hpas, scaled = self.autoscalers_of(ingest)
            self.check(ingest, len(hpas) == 1 and not scaled, "ingest scales with a CPU HPA")
            rolling = ingest["spec"].get("strategy", {}).get("rollingUpdate", {})
            self.check(ingest, rolling.get("maxUnavailable") in (0, "0", "0%"), "ingest must roll with maxUnavailable: 0")
            env = self.role_env("ingest")
            try:
                drain = parse_duration(env.get("SQI_SHUTDOWN_DRAIN_DELAY", "5s"))
                delivery = parse_duration(env.get("SQI_DELIVERY_TIMEOUT", "1500ms"))
                # A request in flight at SIGTERM may still be reading its body.
                body = parse_duration(env.get("SQI_BODY_READ_TIMEOUT", "10s"))
                grace = ingest["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
                self.check(ingest, grace > drain + body + 2 * delivery,
                           f"terminationGracePeriodSeconds {grace} must exceed the drain delay {drain}s "
                           f"plus a body read ({body}s), in-flight requests and the producer flush (2 x {delivery}s)")
            except ValueError as error:
                self.fail(ingest, str(error))
            # Ingest sizes librdkafka's queue, request bodies and connections
            # from SQI_MEMORY_LIMIT: it must be the container's real limit.
            limit = ingest["spec"]["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {}).get("memory")
            try:
                self.check(ingest, limit is not None and "SQI_MEMORY_LIMIT" in env
                           and parse_bytes(env["SQI_MEMORY_LIMIT"]) == parse_bytes(limit),
                           f"SQI_MEMORY_LIMIT ({env.get('SQI_MEMORY_LIMIT')}) must equal the container's memory limit ({limit})")
            except ValueError as error:
                self.fail(ingest, str(error))
            self.check_services_and_ingress(ingest, "ingest")
        if processor:
            hpas, scaled = self.autoscalers_of(processor)
            self.check(processor, len(scaled) == 1 and not hpas, "the processor is scaled by a KEDA ScaledObject only")
            grace = processor["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
            self.check(processor, grace > PROCESSOR_WRITER_DEADLINE_S + 10,
                       f"terminationGracePeriodSeconds {grace} must exceed the writers' {PROCESSOR_WRITER_DEADLINE_S}s shutdown deadline with room to commit")
            # The processor bounds what it buffers from SQI_MEMORY_BUDGET; a
            # budget above the container's limit bounds nothing before the OOM kill.
            penv = self.role_env("processor")
            plimit = processor["spec"]["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {}).get("memory")
            try:
                self.check(processor, plimit is not None and "SQI_MEMORY_BUDGET" in penv
                           and parse_bytes(penv["SQI_MEMORY_BUDGET"]) <= parse_bytes(plimit),
                           f"SQI_MEMORY_BUDGET ({penv.get('SQI_MEMORY_BUDGET')}) must be set and within the container's memory limit ({plimit})")
            except ValueError as error:
                self.fail(processor, str(error))
            services = [s for s in self.m.of("Service") if s["spec"].get("selector", {}).get("app.kubernetes.io/component") == "processor"]
            self.check(processor, not services, "the processor serves nothing and needs no Service")
            for so in scaled:
                self.check_scaled_object(so, processor)
        if report:
            hpas, _ = self.autoscalers_of(report)
            self.check(report, len(hpas) == 1, "report scales with an HPA")
            for hpa in hpas:
                self.check(hpa, hpa["spec"].get("minReplicas", 1) >= 2, "report needs at least 2 replicas")
            self.check_services_and_ingress(report, "report")

    def check_services_and_ingress(self, d, component):
        labels = d["spec"]["template"]["metadata"]["labels"]
        ports = {p["name"] for p in d["spec"]["template"]["spec"]["containers"][0].get("ports", [])}
        services = [s for s in self.m.of("Service") if s["spec"].get("selector")
                    and all(labels.get(k) == v for k, v in s["spec"]["selector"].items())]
        if not self.check(d, len(services) == 1, f"{component} needs exactly one Service, has {len(services)}"):
            return
        service = services[0]
        for p in service["spec"]["ports"]:
            self.check(service, p.get("targetPort") in ports, f"targetPort {p.get('targetPort')!r} is not a named container port")
        service_ports = {p.get("name") for p in service["spec"]["ports"]} | {p["port"] for p in service["spec"]["ports"]}
        ingresses = [i for i in self.m.of("Ingress") if any(
            path["backend"]["service"]["name"] == service["metadata"]["name"]
            for rule in i["spec"].get("rules", []) for path in rule.get("http", {}).get("paths", []))]
        self.check(d, len(ingresses) >= 1, f"{component} needs an Ingress")
        for ingress in ingresses:
            for rule in ingress["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    backend = path["backend"]["service"]
                    port = backend["port"].get("name", backend["port"].get("number"))
                    self.check(ingress, self.m.get("Service", backend["name"]) is not None, f"backend Service {backend['name']} missing")
                    self.check(ingress, port in service_ports, f"backend port {port!r} is not a port of {backend['name']}")
                    self.check(ingress, not path["path"].startswith(("/metrics", "/livez", "/readyz")) and path["path"] != "/",
                               f"routes {path['path']} publicly; only the API paths may be public")
        # Reachable from the ingress controller, and otherwise only by Prometheus.
        policies = [n for n in self.m.of("NetworkPolicy") if n["spec"]["podSelector"].get("matchLabels")
                    and all(labels.get(k) == v for k, v in n["spec"]["podSelector"]["matchLabels"].items())]
        if not self.check(d, len(policies) == 1, f"{component} needs its own NetworkPolicy, has {len(policies)}"):
            return
        policy = policies[0]
        peers = [peer for rule in policy["spec"].get("ingress", []) for peer in rule.get("from", [])]
        namespaces = {peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") for peer in peers}
        self.check(policy, "Ingress" in policy["spec"].get("policyTypes", []), "must restrict ingress")
        self.check(policy, namespaces and namespaces <= {"ingress-nginx", "monitoring"},
                   f"{component} must be reachable only from the ingress controller (and Prometheus), not {sorted(map(str, namespaces))}")
        self.check(policy, "ingress-nginx" in namespaces, f"{component} must be reachable from the ingress controller")
        for peer in peers:
            self.check(policy, "ipBlock" not in peer, "ipBlock peers bypass the ingress controller")
            self.check(policy, "podSelector" in peer, "a namespace peer must also name the pods, not the whole namespace")

    def check_scaled_object(self, so, processor):
        spec = so["spec"]
        env = self.role_env("processor")
        group = env.get("SQI_GROUP_ID", self.defaults.get("SQI_GROUP_ID"))
        topic = env.get("SQI_TOPIC", self.defaults.get("SQI_TOPIC"))
        brokers = env.get("SQI_KAFKA_BROKERS", self.defaults.get("SQI_KAFKA_BROKERS"))
        triggers = [t for t in spec.get("triggers", []) if t.get("type") == "kafka"]
        if not self.check(so, len(triggers) == 1 and len(spec["triggers"]) == 1, "needs exactly one kafka trigger"):
            return
        meta = triggers[0]["metadata"]
        self.check(so, group is not None, "the processor's consumer group is unknown: set SQI_GROUP_ID or pass --sqi")
        self.check(so, meta.get("consumerGroup") == group, f"consumerGroup {meta.get('consumerGroup')!r} is not the processor's group {group!r}")
        self.check(so, meta.get("topic") == topic, f"topic {meta.get('topic')!r} is not the processor's topic {topic!r}")
        self.check(so, meta.get("bootstrapServers") == brokers, f"bootstrapServers {meta.get('bootstrapServers')!r} is not the processor's {brokers!r}")
        self.check(so, isinstance(meta.get("lagThreshold"), str), "lagThreshold must be a quoted string")
        self.check(so, meta.get("offsetResetPolicy") == PROCESSOR_OFFSET_RESET, f"offsetResetPolicy must be {PROCESSOR_OFFSET_RESET}, as the consumer's")
        self.check(so, meta.get("allowIdleConsumers", "false") == "false", "idle consumers would exceed the partitions")
        self.check(so, spec.get("minReplicaCount", 0) >= 1, "minReplicaCount must be at least 1: hour markers need a live group")
        self.check(so, "fallback" in spec, "needs a fallback replica count for when the scaler fails")
        topics = [t for t in self.m.of("KafkaTopic") if t["spec"].get("topicName", t["metadata"]["name"]) == topic]
        if self.check(so, len(topics) == 1, f"no KafkaTopic for {topic!r}"):
            partitions = topics[0]["spec"].get("partitions")
            self.check(so, isinstance(partitions, int) and spec.get("maxReplicaCount", 100) <= partitions,
                       f"maxReplicaCount {spec.get('maxReplicaCount', 100)} exceeds the {partitions} partitions of {topic}")

    def check_topics(self):
        env = self.role_env("processor")
        topic = env.get("SQI_TOPIC", self.defaults.get("SQI_TOPIC"))
        dlq = env.get("SQI_DLQ_TOPIC", self.defaults.get("SQI_DLQ_TOPIC"))
        for name in (topic, dlq):
            found = [t for t in self.m.of("KafkaTopic") if t["spec"].get("topicName", t["metadata"]["name"]) == name]
            if not self.check(None, len(found) == 1, f"no Strimzi KafkaTopic for {name!r}"):
                continue
            t = found[0]
            self.check(t, isinstance(t["spec"].get("partitions"), int), "must state partitions")
            self.check(t, "retention.ms" in t["spec"].get("config", {}) or "retention.bytes" in t["spec"].get("config", {}),
                       "must state retention")
            self.check(t, "strimzi.io/cluster" in t["metadata"].get("labels", {}), "needs the strimzi.io/cluster label")

    # -- the batch -----------------------------------------------------------

    def check_cronjobs(self):
        cronjobs = self.m.of("CronJob")
        self.check(None, len(cronjobs) == 1, f"expected the batch CronJob, found {len(cronjobs)}")
        for c in cronjobs:
            spec = c["spec"]
            job = spec["jobTemplate"]["spec"]
            pod = job["template"]["spec"]
            self.check(c, spec.get("concurrencyPolicy") == "Forbid", "concurrencyPolicy must be Forbid")
            for field in ("timeZone", "startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
                self.check(c, field in spec, f"must state {field}")
            for field in ("activeDeadlineSeconds", "ttlSecondsAfterFinished"):
                self.check(c, field in job, f"the Job must state {field}")
            self.check(c, "backoffLimit" in job or "backoffLimitPerIndex" in job, "the Job must state backoffLimit")
            self.check(c, pod.get("restartPolicy") in ("Never", "OnFailure"), "restartPolicy must be Never or OnFailure")
            args = pod["containers"][0].get("args", [])
            if "yesterday" in args:
                # `yesterday` is read when each pod starts: the Job must be over before midnight.
                fields = spec["schedule"].split()
                if self.check(c, len(fields) == 5 and fields[0].isdigit() and fields[1].isdigit(),
                              "a `--date yesterday` job needs a fixed daily schedule"):
                    start = int(fields[1]) * 3600 + int(fields[0]) * 60
                    self.check(c, start + job.get("activeDeadlineSeconds", 86400) < 86400,
                               "activeDeadlineSeconds lets a retry run past midnight, where `yesterday` is another day")
                    self.check(c, spec.get("timeZone") in ("Etc/UTC", "UTC"), "`yesterday` is a UTC day: schedule in UTC")
            if job.get("completionMode") == "Indexed":
                n = job.get("completions")
                expected = ["--shard", f"$(JOB_COMPLETION_INDEX)/{n}"]
                given = [args[i:i + 2] for i in range(len(args) - 1) if args[i] == "--shard"]
                self.check(c, given == [expected], f"an Indexed batch of {n} must pass {' '.join(expected)}, got {args}")
                self.check(c, job.get("parallelism") == n, "parallelism must equal completions")

    # -- the rest ------------------------------------------------------------

    def check_namespace_and_secrets(self):
        for ns in self.m.of("Namespace"):
            self.check(ns, ns["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") == "restricted",
                       "must enforce the restricted Pod Security Standard")
        for s in self.m.of("Secret"):
            self.fail(s, "Secrets are referenced, never part of the manifests")
        for name, data in self.m.config_maps().items():
            for key in data:
                if SECRETISH.search(key):
                    self.fail(None, f"ConfigMap {name}: {key} looks secret")
        deny = [n for n in self.m.of("NetworkPolicy") if n["spec"]["podSelector"] in ({}, None)
                and "Ingress" in n["spec"].get("policyTypes", []) and not n["spec"].get("ingress")]
        self.check(None, len(deny) == 1, "needs a default-deny ingress NetworkPolicy for the namespace")
        processor = self.deployment("processor")
        if processor:
            labels = processor["spec"]["template"]["metadata"]["labels"]
            allowing = [n for n in self.m.of("NetworkPolicy") if n["spec"].get("ingress") and all(
                labels.get(k) == v for k, v in n["spec"]["podSelector"].get("matchLabels", {}).items())]
            self.check(processor, not allowing, "the processor must admit no ingress")

    def check_monitoring(self):
        monitors = self.m.of("ServiceMonitor")
        if not self.check(None, monitors, "needs a ServiceMonitor"):
            return
        for component in ("ingest", "report"):
            service = next((s for s in self.m.of("Service")
                            if s["spec"].get("selector", {}).get("app.kubernetes.io/component") == component), None)
            if not service:
                continue
            labels = service["metadata"].get("labels", {})
            ports = {p.get("name") for p in service["spec"]["ports"]}
            chosen = [m for m in monitors if selects(m["spec"]["selector"], labels)]
            if self.check(service, chosen, "no ServiceMonitor scrapes it"):
                for endpoint in chosen[0]["spec"]["endpoints"]:
                    self.check(chosen[0], endpoint.get("port") in ports, f"port {endpoint.get('port')!r} is not a port of {service['metadata']['name']}")
                    self.check(chosen[0], endpoint.get("path") == "/metrics", "the binary serves /metrics")
        rules = [r for p in self.m.of("PrometheusRule") for g in p["spec"]["groups"] for r in g["rules"] if "alert" in r]
        env = self.role_env("processor")
        dlq = env.get("SQI_DLQ_TOPIC", self.defaults.get("SQI_DLQ_TOPIC", "share-events-dlq"))
        group = env.get("SQI_GROUP_ID", self.defaults.get("SQI_GROUP_ID", "sqi-processor"))
        wanted = {
            "consumer lag": lambda e: "consumergroup_lag" in e and f'"{group}"' in e,
            "the ingest 503 rate": lambda e: "sqi_ingest_http_requests_total" in e and 'status="503"' in e,
            "dead-letter growth": lambda e: f'"{dlq}"' in e,
            "a batch not completing by its deadline": lambda e: 'cronjob="sqi-batch"' in e and "time()" in e,
        }
        for what, matches in wanted.items():
            self.check(None, any(matches(str(r["expr"])) for r in rules), f"no alert on {what}")
        for r in rules:
            self.check(None, "severity" in r.get("labels", {}) and "summary" in r.get("annotations", {}),
                       f"alert {r['alert']} needs a severity and a summary")

    def run(self):
        for owner, spec, labels in self.workloads():
            self.check_pod(owner, spec, labels)
        for d in self.m.of("Deployment"):
            self.check_deployment(d)
        self.check_roles()
        self.check_topics()
        self.check_cronjobs()
        self.check_namespace_and_secrets()
        self.check_monitoring()
        for o in self.m.objects:
            group = o["apiVersion"].rpartition("/")[0]
            if "." in group and not group.endswith("k8s.io") and not o["apiVersion"].startswith(CRD_GROUPS):
                self.fail(o, f"{o['apiVersion']} is a custom resource no validator here knows")
        return self.violations


def selects(selector, labels):
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and value not in expr.get("values", []):
            return False
        if op == "NotIn" and value in expr.get("values", []):
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


def binary_defaults(sqi):
    """`[env: NAME=…]`/`[default: …]` pairs from `sqi process --help`."""
    text = subprocess.run([sqi, "process", "--help"], capture_output=True, text=True, check=True).stdout
    defaults = {}
    for block in re.split(r"\n\s*\n|\n  -", text):
        env = re.search(r"\[env: (\w+)", block)
        default = re.search(r"\[default: ([^\]]+)\]", block)
        if env and default:
            defaults[env.group(1)] = default.group(1)
    return defaults


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered")
    parser.add_argument("--sqi", help="the sqi binary, to read the processor's defaults from")
    args = parser.parse_args()
    with open(args.rendered) as f:
        manifests = Manifests(yaml.safe_load_all(f))
    defaults = binary_defaults(args.sqi) if args.sqi else {}
    violations = Policy(manifests, defaults).run()
    for v in violations:
        print(f"POLICY {v}")
    print(f"policy: {len(violations)} violation(s) in {len(manifests.objects)} objects")
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
