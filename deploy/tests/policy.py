#!/usr/bin/env python3
"""The deployment policy: every rule of issue 7's Build list, and issue 20's
Kafka security and egress, checked on rendered manifests (a `kubectl
kustomize` output file, with the Strimzi cluster the workloads use).

Usage: policy.py RENDERED.yaml [--sqi PATH] [--msk-iam DIR]

With --sqi, the processor's defaults (consumer group, topic, dead-letter
topic) are read from `sqi process --help`, so that a ConfigMap that leaves one
unset is still checked against what the binary will really use. --msk-iam
names the directory of the Kafka roles' MSK IAM policies (a broken fixture's
own, to show a wrong one fails).

Prints one line per violation and exits 1 if there is any.
"""

import argparse
import json
import os
import re
import subprocess
import sys

import yaml

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
ROLE_ARN = re.compile(r"^arn:aws:iam::\d{12}:role/[\w+=,.@/-]+$")
SECRETISH = re.compile(r"(PASSWORD|SECRET|TOKEN|PRIVATE_KEY|ACCESS_KEY)", re.I)
# librdkafka properties whose values are secrets (as sqi-kafka's own list).
SECRET_PROPERTY = re.compile(r"(password|secret|\.pem$|^ssl\.key)", re.I)
CRD_GROUPS = ("keda.sh/", "kafka.strimzi.io/", "monitoring.coreos.com/")
# The processor's own auto.offset.reset (processor/src/consumer.rs).
PROCESSOR_OFFSET_RESET = "earliest"
# The processor's writers get this long to finish on SIGTERM (consumer.rs `finish`).
PROCESSOR_WRITER_DEADLINE_S = 30
# The roles (`sqi <role>`) that talk to Kafka; the report and the batch read the lake only.
KAFKA_ROLES = ("ingest", "process")
# Where the namespace says why its Kafka traffic may be plaintext (dev only).
PLAINTEXT_ANNOTATION = "sqi-engine.io/kafka-plaintext"
# KEDA's operator reads the processor's lag from the brokers.
KEDA_NAMESPACE = "keda"
KEDA_OPERATOR = {"app": "keda-operator"}
# Each Kafka role's Amazon MSK IAM policy, named after its ServiceAccount.
MSK_IAM_POLICIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "iam", "msk")


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
    def __init__(self, manifests, binary_defaults, msk_iam=MSK_IAM_POLICIES):
        self.m = manifests
        self.defaults = binary_defaults
        self.msk_iam = msk_iam
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
                if "value" in var and looks_secret(var["name"]):
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
            # Its one Service is headless, for the ServiceMonitor; nothing calls it.
            for service in services:
                self.check(service, service["spec"].get("clusterIP") == "None",
                           "the processor serves only Prometheus: its Service must be headless")
                self.check(service, [p.get("targetPort") for p in service["spec"]["ports"]] == ["admin"],
                           "the processor's Service must expose only its admin port")
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
                    and "Ingress" in n["spec"].get("policyTypes", ["Ingress"])
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
        self.check_scaler_auth(so, triggers[0], env)
        topics = [t for t in self.m.of("KafkaTopic") if t["spec"].get("topicName", t["metadata"]["name"]) == topic]
        # Topics are Strimzi's only on a Strimzi cluster; MSK's are made outside (Terraform).
        if self.on_strimzi(brokers) and self.check(so, len(topics) == 1, f"no KafkaTopic for {topic!r}"):
            partitions = topics[0]["spec"].get("partitions")
            self.check(so, isinstance(partitions, int) and spec.get("maxReplicaCount", 100) <= partitions,
                       f"maxReplicaCount {spec.get('maxReplicaCount', 100)} exceeds the {partitions} partitions of {topic}")

    def check_scaler_auth(self, so, trigger, env):
        """KEDA reads the lag the way the processor connects: same TLS, same
        mechanism, the processor's own credentials."""
        meta = trigger["metadata"]
        protocol = env.get("SQI_KAFKA_SECURITY_PROTOCOL", "plaintext").lower().replace("-", "_")
        mechanism = env.get("SQI_KAFKA_SASL_MECHANISM", "").upper()
        if protocol != "sasl_ssl":
            self.check(so, meta.get("sasl", "none") == "none" and meta.get("tls", "disable") == "disable",
                       "the processor connects without SASL/TLS; the scaler must too")
            return
        self.check(so, meta.get("tls") == "enable", "the processor connects over TLS; the scaler needs tls: enable")
        ref = trigger.get("authenticationRef", {}).get("name")
        auth = self.m.get("TriggerAuthentication", ref) if ref else None
        if not self.check(so, auth is not None, f"authenticationRef {ref!r} is no TriggerAuthentication in the manifests"):
            return
        targets = {t["parameter"]: (t.get("name"), t.get("key")) for t in auth["spec"].get("secretTargetRef", [])}
        if mechanism == "SCRAM-SHA-512":
            user = env.get("SQI_KAFKA_USERNAME")
            _, cluster, _, _ = self.cluster_of(env.get("SQI_KAFKA_BROKERS", ""))
            self.check(so, meta.get("sasl") == "scram_sha512", "the processor uses SCRAM-SHA-512; the scaler needs sasl: scram_sha512")
            self.check(auth, targets.get("password") == (user, "password"),
                       f"password must come from the processor's KafkaUser Secret {user!r}, key `password`")
            self.check(auth, targets.get("ca") == (f"{cluster}-cluster-ca-cert", "ca.crt"),
                       f"ca must come from {cluster}-cluster-ca-cert, key `ca.crt`")
            by_env = [e for e in auth["spec"].get("env", []) if e.get("parameter") == "username"]
            self.check(auth, by_env and by_env[0].get("name") == "SQI_KAFKA_USERNAME",
                       "username must be the processor's SQI_KAFKA_USERNAME")
        elif mechanism == "AWS_MSK_IAM":
            self.check(so, meta.get("sasl") == "aws_msk_iam", "the processor uses MSK IAM; the scaler needs sasl: aws_msk_iam")
            self.check(so, meta.get("awsRegion") == env.get("SQI_KAFKA_MSK_REGION"),
                       f"awsRegion {meta.get('awsRegion')!r} is not the processor's SQI_KAFKA_MSK_REGION")
            self.check(auth, auth["spec"].get("podIdentity", {}).get("provider") == "aws",
                       "MSK IAM needs podIdentity provider aws")
            self.check(auth, not targets, "MSK IAM takes no secrets")

    def check_topics(self):
        env = self.role_env("processor")
        topic = env.get("SQI_TOPIC", self.defaults.get("SQI_TOPIC"))
        dlq = env.get("SQI_DLQ_TOPIC", self.defaults.get("SQI_DLQ_TOPIC"))
        brokers = env.get("SQI_KAFKA_BROKERS", self.defaults.get("SQI_KAFKA_BROKERS", ""))
        if not self.on_strimzi(brokers):
            self.check(None, not self.m.of("KafkaTopic"), "KafkaTopics, but SQI_KAFKA_BROKERS names no Strimzi cluster to make them")
            return
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

    # -- Kafka: who talks to it, how, and the network ------------------------

    def kafka_roles(self):
        """(owner, pod spec, pod labels, container, env) of every pod that talks to Kafka."""
        for owner, spec, labels in self.workloads():
            container = spec["containers"][0]
            if container.get("args", [None])[0] in KAFKA_ROLES:
                yield owner, spec, labels, container, self.env_of(container)

    def app_namespace(self):
        spaces = self.m.of("Namespace")
        return spaces[0]["metadata"]["name"] if spaces else None

    def mounted_secret(self, spec, container, path):
        """(Secret name, key) of the Secret file mounted at `path`, or None."""
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            root = mount["mountPath"].rstrip("/") + "/"
            if not path.startswith(root):
                continue
            secret = volumes.get(mount["name"], {}).get("secret")
            if secret is None:
                return None
            file = path[len(root):]
            items = secret.get("items")
            if items is None:
                return secret.get("secretName"), file
            for item in items:
                if item.get("path") == file:
                    return secret.get("secretName"), item.get("key")
            return None
        return None

    def cluster_of(self, brokers):
        """The Strimzi `Kafka` a bootstrap address names, with its listener
        port: (Kafka object or None, cluster name, namespace, port)."""
        host, _, port = brokers.split(",")[0].strip().rpartition(":")
        match = re.fullmatch(r"([a-z0-9-]+)-kafka-bootstrap\.([a-z0-9-]+)(\.svc.*)?", host)
        if not match:
            return None, None, None, int(port) if port.isdigit() else None
        name, namespace = match.group(1), match.group(2)
        kafka = next((k for k in self.m.of("Kafka") if k["metadata"]["name"] == name
                      and k["metadata"].get("namespace") == namespace), None)
        return kafka, name, namespace, int(port) if port.isdigit() else None

    def on_strimzi(self, brokers):
        """Whether the brokers are a Strimzi cluster's bootstrap Service."""
        return self.cluster_of(brokers or "")[1] is not None

    def check_kafka_clients(self):
        namespace = next(iter(self.m.of("Namespace")), None)
        plaintext_reason = (namespace or {}).get("metadata", {}).get("annotations", {}).get(PLAINTEXT_ANNOTATION)
        users_used = set()
        listeners_checked = set()
        for owner, spec, labels, container, env in self.kafka_roles():
            role = container["args"][0]
            protocol = env.get("SQI_KAFKA_SECURITY_PROTOCOL", "plaintext").lower().replace("-", "_")
            mechanism = env.get("SQI_KAFKA_SASL_MECHANISM", "").upper()
            if protocol not in ("ssl", "sasl_ssl"):
                self.check(owner, plaintext_reason,
                           f"connects to Kafka over {protocol.upper()}; production Kafka is SASL_SSL "
                           f"(a dev namespace says why not with the {PLAINTEXT_ANNOTATION} annotation)")
                continue
            self.check(owner, protocol == "sasl_ssl", f"{protocol.upper()} without SASL: the brokers cannot tell the roles apart")
            kafka, cluster, _, _ = self.cluster_of(env.get("SQI_KAFKA_BROKERS", self.defaults.get("SQI_KAFKA_BROKERS", "")))
            if mechanism == "SCRAM-SHA-512":
                user = env.get("SQI_KAFKA_USERNAME")
                users_used.add(user)
                found = self.m.get("KafkaUser", user) if user else None
                if self.check(owner, found is not None, f"SQI_KAFKA_USERNAME {user!r} is no KafkaUser in the manifests"):
                    self.check(found, found["metadata"].get("labels", {}).get("strimzi.io/cluster") == cluster,
                               f"strimzi.io/cluster must be {cluster!r}, the cluster SQI_KAFKA_BROKERS names")
                    self.check(found, found["spec"].get("authentication", {}).get("type") == "scram-sha-512",
                               "authentication must be scram-sha-512")
                    self.check_acls(found, role, env)
                password = env.get("SQI_KAFKA_PASSWORD_FILE", "")
                self.check(owner, self.mounted_secret(spec, container, password) == (user, "password"),
                           f"SQI_KAFKA_PASSWORD_FILE {password!r} must be key `password` of the KafkaUser's Secret {user!r}, mounted")
                ca = env.get("SQI_KAFKA_CA_FILE", "")
                self.check(owner, self.mounted_secret(spec, container, ca) == (f"{cluster}-cluster-ca-cert", "ca.crt"),
                           f"SQI_KAFKA_CA_FILE {ca!r} must be key `ca.crt` of the Secret {cluster}-cluster-ca-cert, mounted")
                self.check(owner, "SQI_KAFKA_MSK_REGION" not in env, "SQI_KAFKA_MSK_REGION is only for AWS_MSK_IAM")
                if self.check(owner, kafka is not None, f"no Strimzi Kafka {cluster!r} in the manifests to check its listener against") \
                        and cluster not in listeners_checked:
                    listeners_checked.add(cluster)
                    self.check_listener(kafka, env)
            elif mechanism == "AWS_MSK_IAM":
                self.check(owner, env.get("SQI_KAFKA_MSK_REGION"), "AWS_MSK_IAM needs SQI_KAFKA_MSK_REGION")
                self.check_msk_policy(owner, spec.get("serviceAccountName"), role, env)
                for key in ("SQI_KAFKA_USERNAME", "SQI_KAFKA_PASSWORD_FILE"):
                    self.check(owner, key not in env, f"AWS_MSK_IAM authenticates with the pod's IAM role; {key} must not be set")
            else:
                self.fail(owner, f"SQI_KAFKA_SASL_MECHANISM must be SCRAM-SHA-512 (Strimzi) or AWS_MSK_IAM (MSK), not {mechanism!r}")
        for user in self.m.of("KafkaUser"):
            self.check(user, user["metadata"]["name"] in users_used, "is no role's Kafka user: it would hold rights nobody needs")

    def check_acls(self, user, role, env):
        """A role's ACLs are exactly what it does: ingest writes the events
        topic; the processor reads it with its group and writes dead letters."""
        topic = env.get("SQI_TOPIC", self.defaults.get("SQI_TOPIC", "share-events"))
        group = env.get("SQI_GROUP_ID", self.defaults.get("SQI_GROUP_ID", "sqi-processor"))
        dlq = env.get("SQI_DLQ_TOPIC", self.defaults.get("SQI_DLQ_TOPIC", "share-events-dlq"))
        wanted = {"ingest": {("topic", topic, "Write")},
                  "process": {("topic", topic, "Read"), ("group", group, "Read"), ("topic", dlq, "Write")}}[role]
        authorization = user["spec"].get("authorization", {})
        if not self.check(user, authorization.get("type") == "simple", "needs simple authorization with ACLs"):
            return
        granted = set()
        for acl in authorization.get("acls", []):
            resource = acl.get("resource", {})
            self.check(user, acl.get("type", "allow") == "allow", "deny ACLs are not used; grant less instead")
            self.check(user, resource.get("patternType", "literal") == "literal" and resource.get("name") != "*",
                       f"ACL on {resource.get('type')} {resource.get('name')!r} must name one resource literally")
            for op in acl.get("operations", [acl.get("operation")]):
                granted.add((resource.get("type"), resource.get("name"), op))
        self.check(user, not granted - wanted, f"grants more than `sqi {role}` needs: {sorted(map(str, granted - wanted))}")
        self.check(user, not wanted - granted, f"`sqi {role}` needs {sorted(map(str, wanted - granted))}")

    def check_msk_policy(self, owner, account, role, env):
        """The role's MSK IAM policy (deploy/iam/msk/<account>.json) grants
        exactly what the role does on the cluster, as its ACLs would on Strimzi."""
        topic = env.get("SQI_TOPIC", self.defaults.get("SQI_TOPIC", "share-events"))
        group = env.get("SQI_GROUP_ID", self.defaults.get("SQI_GROUP_ID", "sqi-processor"))
        dlq = env.get("SQI_DLQ_TOPIC", self.defaults.get("SQI_DLQ_TOPIC", "share-events-dlq"))
        # Both roles produce idempotently (ingest's events, the processor's dead letters).
        cluster = {("cluster", None, "Connect"), ("cluster", None, "WriteDataIdempotently")}
        wanted = cluster | {
            "ingest": {("topic", topic, "DescribeTopic"), ("topic", topic, "WriteData")},
            "process": {("topic", topic, "DescribeTopic"), ("topic", topic, "ReadData"),
                        ("group", group, "DescribeGroup"), ("group", group, "AlterGroup"),
                        ("topic", dlq, "DescribeTopic"), ("topic", dlq, "WriteData")},
        }[role]
        path = os.path.join(self.msk_iam, f"{account}.json")
        try:
            with open(path) as f:
                document = json.load(f)
        except (OSError, ValueError) as error:
            self.fail(owner, f"AWS_MSK_IAM needs the role's MSK policy {path}: {error}")
            return
        granted = set()
        for statement in document.get("Statement", []):
            if statement.get("Effect") != "Allow":
                continue
            actions = statement.get("Action", [])
            resources = statement.get("Resource", [])
            for action in [actions] if isinstance(actions, str) else actions:
                for resource in [resources] if isinstance(resources, str) else resources:
                    match = re.fullmatch(r"arn:aws:kafka:[^:]+:[^:]+:(cluster|topic|group)/[^/]+/[^/]+(?:/(.+))?", resource)
                    if not self.check(owner, match and action.startswith("kafka-cluster:") and "*" not in action
                                      and "*" not in (match.group(2) or ""),
                                      f"{path}: {action} on {resource} names no single cluster, topic or group"):
                        continue
                    granted.add((match.group(1), match.group(2), action.partition(":")[2]))
        self.check(owner, not granted - wanted, f"{path} grants more than `sqi {role}` needs: {sorted(map(str, granted - wanted))}")
        self.check(owner, not wanted - granted, f"{path}: `sqi {role}` needs {sorted(map(str, wanted - granted))}")

    def check_listener(self, kafka, env):
        """The listener the clients use: TLS, SCRAM, and reachable only from our pods."""
        _, _, _, port = self.cluster_of(env.get("SQI_KAFKA_BROKERS", ""))
        spec = kafka["spec"]["kafka"]
        self.check(kafka, spec.get("authorization", {}).get("type") == "simple",
                   "needs authorization type simple, or the KafkaUsers' ACLs are not enforced")
        for listener in spec.get("listeners", []):
            where = f"listener {listener.get('name')}"
            self.check(kafka, listener.get("tls") is True, f"{where}: every listener must be TLS")
            self.check(kafka, listener.get("authentication", {}).get("type") == "scram-sha-512",
                       f"{where}: every listener must authenticate with scram-sha-512")
            self.check(kafka, listener.get("networkPolicyPeers"), f"{where}: needs networkPolicyPeers, or any pod in the cluster may connect")
        listeners = [listener for listener in spec.get("listeners", []) if listener.get("port") == port]
        self.check(kafka, listeners, f"no listener on port {port}, the port SQI_KAFKA_BROKERS names")
        namespace = self.app_namespace()
        entity = kafka["spec"].get("entityOperator", {})
        for operator in ("topicOperator", "userOperator"):
            self.check(kafka, entity.get(operator, {}).get("watchedNamespace") == namespace,
                       f"entityOperator.{operator}.watchedNamespace must be {namespace!r}, where the topics and users are")
        clients = [labels for _, _, labels, _, _ in self.kafka_roles()]
        for listener in listeners:
            peers = listener.get("networkPolicyPeers", [])
            for peer in peers:
                pod_selector, ns_selector = peer.get("podSelector"), peer.get("namespaceSelector")
                if not self.check(kafka, pod_selector and ns_selector and "ipBlock" not in peer,
                                  f"listener {listener['name']}: a peer must name both a namespace and its pods"):
                    continue
                ns = ns_selector.get("matchLabels", {}).get("kubernetes.io/metadata.name")
                ours = ns == namespace and any(selects(pod_selector, labels) for labels in clients)
                keda = ns == KEDA_NAMESPACE and pod_selector.get("matchLabels") == KEDA_OPERATOR
                self.check(kafka, ours or keda,
                           f"listener {listener['name']}: peer {peer} is neither a Kafka role's pods in {namespace!r} nor the KEDA operator")
            for labels in clients:
                self.check(kafka, any(p.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == namespace
                                      and selects(p.get("podSelector", {}), labels) for p in peers),
                           f"listener {listener['name']}: networkPolicyPeers do not admit the {labels.get('app.kubernetes.io/component')} pods")

    def check_egress(self):
        """Each role reaches DNS, the lake over HTTPS, Kafka if it is a
        Kafka role, and nothing else."""
        if not self.check(None, any(n["spec"].get("podSelector") in ({}, None) and "Egress" in n["spec"].get("policyTypes", [])
                                    and not n["spec"].get("egress") for n in self.m.of("NetworkPolicy")),
                          "needs a default-deny egress NetworkPolicy for the namespace"):
            return
        for owner, spec, labels in self.workloads():
            container = spec["containers"][0]
            role = container.get("args", ["?"])[0]
            env = self.env_of(container)
            brokers = env.get("SQI_KAFKA_BROKERS", self.defaults.get("SQI_KAFKA_BROKERS", ""))
            _, cluster, kafka_namespace, _ = self.cluster_of(brokers)
            ports = {int(b.rpartition(":")[2]) for b in brokers.split(",") if b.rpartition(":")[2].isdigit()}
            rules = [rule for n in self.m.of("NetworkPolicy") if "Egress" in n["spec"].get("policyTypes", [])
                     and selects(n["spec"].get("podSelector") or {}, labels) for rule in n["spec"].get("egress", [])]
            seen = set()
            for rule in rules:
                peers, rule_ports = rule.get("to", []), rule.get("ports", [])
                numbers = {p.get("port") for p in rule_ports}
                if not self.check(owner, peers and rule_ports, f"egress rule {rule} opens every destination or every port"):
                    continue
                if numbers == {53} and all(p.get("podSelector", {}).get("matchLabels") == {"k8s-app": "kube-dns"} for p in peers):
                    seen.add("dns")
                elif numbers == {443} and all("ipBlock" in p for p in peers) and {p.get("protocol", "TCP") for p in rule_ports} == {"TCP"}:
                    seen.add("https")
                elif role in KAFKA_ROLES and numbers <= ports and numbers:
                    for p in peers:
                        if "ipBlock" in p:
                            # Amazon MSK: brokers are addresses in the VPC, not pods.
                            self.check(owner, cluster is None, f"egress to Kafka at {p['ipBlock']} while SQI_KAFKA_BROKERS names the Strimzi cluster {cluster!r}")
                            continue
                        ns = p.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                        pods = p.get("podSelector", {}).get("matchLabels", {})
                        self.check(owner, ns == kafka_namespace and pods.get("strimzi.io/cluster") == cluster,
                                   f"egress on the Kafka port must go to the brokers of {cluster!r} in {kafka_namespace!r}, not {p}")
                    seen.add("kafka")
                else:
                    self.fail(owner, f"egress rule {rule} is none of DNS, HTTPS (the lake) or Kafka{' (on ' + str(sorted(ports)) + ')' if role in KAFKA_ROLES else ''}")
            wanted = {"dns", "https"} | ({"kafka"} if role in KAFKA_ROLES else set())
            self.check(owner, not wanted - seen,
                       f"`sqi {role}` cannot reach {', '.join(sorted(wanted - seen))}: no egress rule for it")

    # -- the rest ------------------------------------------------------------

    def check_namespace_and_secrets(self):
        for ns in self.m.of("Namespace"):
            self.check(ns, ns["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") == "restricted",
                       "must enforce the restricted Pod Security Standard")
        for s in self.m.of("Secret"):
            self.fail(s, "Secrets are referenced, never part of the manifests")
        for name, data in self.m.config_maps().items():
            for key, value in data.items():
                if looks_secret(key):
                    self.fail(None, f"ConfigMap {name}: {key} looks secret")
                elif key.endswith("_FILE") and not str(value).startswith("/"):
                    self.fail(None, f"ConfigMap {name}: {key} must be a path to a mounted file, not the secret itself")
                if key == "SQI_KAFKA_CONFIG":
                    for prop in str(value).split(";"):
                        if SECRET_PROPERTY.search(prop.partition("=")[0].strip()):
                            self.fail(None, f"ConfigMap {name}: SQI_KAFKA_CONFIG sets {prop.partition('=')[0].strip()}, a secret; "
                                            "mount the Secret and name it with SQI_KAFKA_PASSWORD_FILE")
        deny = [n for n in self.m.of("NetworkPolicy") if n["spec"]["podSelector"] in ({}, None)
                and "Ingress" in n["spec"].get("policyTypes", []) and not n["spec"].get("ingress")]
        self.check(None, len(deny) == 1, "needs a default-deny ingress NetworkPolicy for the namespace")
        processor = self.deployment("processor")
        if processor:
            labels = processor["spec"]["template"]["metadata"]["labels"]
            allowing = [n for n in self.m.of("NetworkPolicy") if n["spec"].get("ingress") and all(
                labels.get(k) == v for k, v in n["spec"]["podSelector"].get("matchLabels", {}).items())]
            # Prometheus, and nothing else, scrapes its admin port.
            for policy in allowing:
                for rule in policy["spec"]["ingress"]:
                    peers = rule.get("from", [])
                    only_prometheus = peers and all(
                        peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "monitoring"
                        and peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "prometheus"
                        for peer in peers)
                    self.check(policy, only_prometheus, "the processor must admit only Prometheus")
                    self.check(policy, [p.get("port") for p in rule.get("ports", [])] == ["admin"],
                               "the processor must admit Prometheus on its admin port only")

    def check_monitoring(self):
        monitors = self.m.of("ServiceMonitor")
        if not self.check(None, monitors, "needs a ServiceMonitor"):
            return
        for component in ("ingest", "report", "processor"):
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
        self.check_kafka_clients()
        self.check_egress()
        self.check_monitoring()
        for o in self.m.objects:
            group = o["apiVersion"].rpartition("/")[0]
            if "." in group and not group.endswith("k8s.io") and not o["apiVersion"].startswith(CRD_GROUPS):
                self.fail(o, f"{o['apiVersion']} is a custom resource no validator here knows")
        return self.violations


def looks_secret(name):
    """A variable that would hold a secret in the clear. `*_FILE` names a
    mounted file instead, which is how secrets reach the binary."""
    return SECRETISH.search(name) is not None and not name.endswith("_FILE")


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
    parser.add_argument("--msk-iam", default=MSK_IAM_POLICIES, help="the roles' MSK IAM policies (default deploy/iam/msk)")
    args = parser.parse_args()
    with open(args.rendered) as f:
        manifests = Manifests(yaml.safe_load_all(f))
    defaults = binary_defaults(args.sqi) if args.sqi else {}
    violations = Policy(manifests, defaults, args.msk_iam).run()
    for v in violations:
        print(f"POLICY {v}")
    print(f"policy: {len(violations)} violation(s) in {len(manifests.objects)} objects")
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()
