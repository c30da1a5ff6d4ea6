#!/usr/bin/env python3
"""Renders charts/gpuplane with Helm's own engine and checks what comes out.

Run by ChartTests.swift in the tools environment scripts/install-deps makes
(/opt/gpuplane-venv: helm-python-sdk, which embeds Helm v4's Go SDK and renders offline;
kubernetes-validate; jsonschema; PyYAML). Standalone:

    /opt/gpuplane-venv/bin/python Tests/GPUPlaneChartTests/chart_check.py \
        --chart charts/gpuplane --out /tmp/chart-out

For the default values and every charts/gpuplane/ci/*.yaml it
- checks the values against values.schema.json with jsonschema (and Helm's own check),
- lints the chart (helm lint --strict for each Kubernetes version below),
- renders it and validates every document with kubernetes-validate, strictly (unknown fields
  are errors), for the oldest Kubernetes the chart claims (Chart.yaml kubeVersion) and the
  newest kubernetes-validate knows,
- checks what a reviewer would: replicas, probes on /healthz and /readyz, Services, PDBs and
  the NetworkPolicy selecting the pods they mean, volumes naming objects and keys that exist,
  every file the daemons' configuration names mounted, the etcd endpoints naming the bundled
  members, no token or key in a ConfigMap,
and writes what each daemon is started with (arguments, environment, configuration file,
catalog, admin tokens, secret key) to OUT/daemons.json, which ChartTests loads with the
daemons' own configuration code. Values that must be refused (in this file) are checked to be
refused by both jsonschema and Helm.

Exit status 0 when every check passes; each failure is printed with the values file it is
about, then the status is 1.
"""

from __future__ import annotations

import argparse
import base64
import copy
import importlib.metadata
import json
import os
import re
import sys
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

RELEASE = "gp"
NAMESPACE = "gpuplane"
OLDEST_KUBERNETES = "1.31.0"
# A resource quantity (the schemas only say string or integer): 250m, 1Gi, 2, 1e3, 0.5.
QUANTITY = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?")

failures: list[str] = []


def fail(where: str, message: str) -> None:
    failures.append(f"{where}: {message}")


def check(condition: bool, where: str, message: str) -> bool:
    if not condition:
        fail(where, message)
    return condition


def newest_kubernetes() -> str:
    """The newest Kubernetes version kubernetes-validate has schemas for, offline."""
    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    versions = []
    for entry in root.iterdir():
        match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)-local", entry.name)
        if match:
            versions.append(tuple(int(part) for part in match.groups()))
    if not versions:
        raise SystemExit(f"kubernetes-validate has no schemas under {root}")
    return ".".join(str(part) for part in max(versions))


# Values that must be refused, each with why.
BAD_VALUES = {
    "replicas as text": {"apiServer": {"replicas": "two"}},
    "an unknown key": {"apiServer": {"listenPort": 9090}},
    "external etcd without endpoints": {"etcd": {"bundled": {"enabled": False}}},
    "an etcd endpoint without a scheme": {
        "etcd": {"bundled": {"enabled": False}, "external": {"endpoints": ["etcd-0:2379"]}}
    },
    "a duration the scheduler cannot read": {"scheduler": {"leaseTTL": "soon"}},
    "a warm pool entry without a count": {"scheduler": {"warmPool": ["llama-3.1-8b"]}},
    "a bundled etcd of two members": {"etcd": {"bundled": {"replicas": 2}}},
    "an ingress without hosts": {"apiServer": {"ingress": {"enabled": True}}},
    "a header timeout over a day": {"apiServer": {"headerTimeout": 86401}},
    "an admin token with a blank": {"adminTokens": {"tokens": ["two words-0123456789"]}},
    "an empty image repository": {"image": {"repository": ""}},
    "a scheduler budget that blocks every eviction": {"scheduler": {"podDisruptionBudget": {"maxUnavailable": 0}}},
    "a scheduler metrics port beyond 65535": {"scheduler": {"metricsPort": 70000}},
    "scrape annotations as text": {"metrics": {"scrapeAnnotations": "yes"}},
}

# Values the schema cannot judge alone (they compare two keys) that the templates refuse.
REFUSED_BY_TEMPLATES = {
    "an api-server budget as large as its replicas": {"apiServer": {"replicas": 1}},
    "an etcd user without the Secret of its password": {
        "etcd": {"bundled": {"enabled": False}, "external": {"endpoints": ["https://etcd:2379"], "auth": {"username": "gpuplane"}}}},
}


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def documents(rendered: dict[str, str]) -> tuple[list[dict], str]:
    """Every non-empty YAML document of the templates, and NOTES.txt."""
    docs: list[dict] = []
    notes = ""
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                docs.append(doc)
    return docs, notes


def matches(selector: dict, labels: dict) -> bool:
    """Whether a matchLabels selector (or a Service selector) selects these labels."""
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc.get("kind") == kind]


def named(docs: list[dict], kind: str, name: str) -> dict | None:
    for doc in by_kind(docs, kind):
        if doc["metadata"]["name"] == name:
            return doc
    return None


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def component(workload: dict) -> str:
    return pod_labels(workload).get("app.kubernetes.io/component", "")


def parse_conf(text: str) -> dict[str, str]:
    """`key = value` lines as the daemons read them (blank and # lines skipped)."""
    entries: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, _, value = stripped.partition("=")
        entries[key.strip()] = value.strip()
    return entries


def mounted_file(pod_spec: dict, container: dict, path: str, docs: list[dict], secrets_outside: set[str]):
    """The (volume, key) a file path of the container comes from, checking the object holds it.

    Returns (volume, source kind, source name, key) or None when no mount covers the path.
    """
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        relative = path[len(prefix):]
        volume = volumes.get(mount["name"])
        if volume is None:
            return None
        for kind, field, name_field in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName")):
            if field in volume:
                source = volume[field]
                key = relative
                for item in source.get("items", []):
                    if item["path"] == relative:
                        key = item["key"]
                return (volume, kind, source[name_field], key)
        if "emptyDir" in volume:
            return (volume, "emptyDir", mount["name"], relative)
    return None


def secret_data(docs: list[dict], name: str) -> dict[str, str]:
    secret = named(docs, "Secret", name)
    if secret is None:
        return {}
    return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}


def check_values_file(
    chart, schema: dict, defaults: dict, label: str, overrides: dict, kube_versions: list[str], chart_dir: Path
) -> dict | None:
    where = label
    values = deep_merge(defaults, overrides)

    # The values against values.schema.json: jsonschema, then Helm's own check.
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    for error in validator.iter_errors(values):
        fail(where, f"values.schema.json refuses {'/'.join(map(str, error.path))}: {error.message}")
    try:
        chart.validate_schema(overrides)
    except helm.HelmError as error:
        fail(where, f"Helm refuses the values: {error}")

    for version in kube_versions:
        report = helm.lint(str(chart_dir), overrides, strict=True, kube_version="v" + version, namespace=NAMESPACE)
        for message in report.get("messages", []):
            if message.get("severity", 0) >= 2:
                fail(where, f"helm lint (Kubernetes {version}): {message.get('path')}: {message.get('error')}")
        for error in report.get("errors", []):
            fail(where, f"helm lint (Kubernetes {version}): {error}")

    try:
        rendered = chart.render(values=overrides, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except helm.HelmError as error:
        fail(where, f"the chart does not render: {error}")
        return None
    docs, notes = documents(rendered)

    # Every document, strictly, against each Kubernetes version.
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        check(doc.get("metadata", {}).get("labels", {}).get("app.kubernetes.io/instance") == RELEASE, where,
              f"{name} lacks the release's labels")
        for version in kube_versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                fail(where, f"{name} is not a valid Kubernetes {version} object: {error.message} at {list(error.path)}")
            except kubernetes_validate.SchemaNotFoundError as error:
                fail(where, f"{name}: Kubernetes {version} has no such kind ({error})")
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []) + \
                doc.get("spec", {}).get("template", {}).get("spec", {}).get("initContainers", []):
            for group in ("requests", "limits"):
                for resource, quantity in container.get("resources", {}).get(group, {}).items():
                    check(QUANTITY.fullmatch(str(quantity)) is not None, where,
                          f"{name}: {container['name']}'s {group}.{resource} {quantity!r} is not a Kubernetes quantity")
    names = [(doc["kind"], doc["metadata"]["name"]) for doc in docs]
    check(len(names) == len(set(names)), where, f"objects rendered twice: {sorted(names)}")

    deployments = {component(d): d for d in by_kind(docs, "Deployment")}
    api = deployments.get("api-server")
    scheduler = deployments.get("scheduler")
    if not (check(api is not None, where, "no api-server Deployment")
            and check(scheduler is not None, where, "no scheduler Deployment")):
        return None
    check(api["spec"]["replicas"] == values["apiServer"]["replicas"], where, "api-server replicas are not apiServer.replicas")
    check(scheduler["spec"]["replicas"] == values["scheduler"]["replicas"], where, "scheduler replicas are not scheduler.replicas")
    if not overrides.get("apiServer", {}).get("replicas"):
        check(api["spec"]["replicas"] == 2, where, "the api-server does not run 2 replicas by default")
    if not overrides.get("scheduler", {}).get("replicas"):
        check(scheduler["spec"]["replicas"] == 2, where, "the scheduler does not run 2 replicas by default")
    for workload in list(deployments.values()) + by_kind(docs, "StatefulSet"):
        check(matches(workload["spec"]["selector"]["matchLabels"], pod_labels(workload)), where,
              f"{workload['metadata']['name']}'s selector does not select its own pods")
        for other in list(deployments.values()) + by_kind(docs, "StatefulSet"):
            if other is not workload:
                check(not matches(workload["spec"]["selector"]["matchLabels"], pod_labels(other)), where,
                      f"{workload['metadata']['name']}'s selector also selects {other['metadata']['name']}'s pods")

    # The api-server: its port, probes on /healthz and /readyz, its Service and Ingress.
    api_pod = api["spec"]["template"]["spec"]
    api_container = next(c for c in api_pod["containers"] if c["name"] == "api-server")
    api_conf_path = api_container["args"][api_container["args"].index("--config") + 1]
    api_source = mounted_file(api_pod, api_container, api_conf_path, docs, set())
    api_conf_text = ""
    if check(api_source is not None and api_source[1] == "ConfigMap", where, f"{api_conf_path} is not mounted from a ConfigMap"):
        config_map = named(docs, "ConfigMap", api_source[2])
        if check(config_map is not None and api_source[3] in config_map.get("data", {}), where,
                 f"ConfigMap {api_source[2]} has no {api_source[3]}"):
            api_conf_text = config_map["data"][api_source[3]]
    api_conf = parse_conf(api_conf_text)
    ports = {port["name"]: port["containerPort"] for port in api_container.get("ports", [])}
    check(ports.get("http") == int(api_conf.get("port", "8080")), where, "the container port is not the api-server's port setting")
    check(api_conf.get("listen") == "0.0.0.0", where, "the api-server does not listen on the pod's addresses")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        http = api_container.get(probe, {}).get("httpGet", {})
        check(http.get("path") == path and http.get("port") in ("http", ports.get("http")), where,
              f"the api-server's {probe} is not GET {path} on its port")
    services = [s for s in by_kind(docs, "Service") if matches(s["spec"].get("selector", {}), pod_labels(api))]
    if check(len(services) == 1, where, f"{len(services)} Services select the api-server's pods, not 1"):
        service = services[0]
        check(service["metadata"]["name"] == f"{RELEASE}-gpuplane-api-server", where, "the api-server's Service has an unexpected name")
        check(not matches(service["spec"]["selector"], pod_labels(scheduler)), where, "the api-server's Service selects scheduler pods")
        for port in service["spec"]["ports"]:
            check(port["targetPort"] in ports or port["targetPort"] in ports.values(), where,
                  f"the Service's port {port['port']} targets {port['targetPort']}, which the container does not have")
        for ingress in by_kind(docs, "Ingress"):
            for rule in ingress["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    backend = path["backend"]["service"]
                    check(backend["name"] == service["metadata"]["name"], where, f"the Ingress routes to {backend['name']}")
                    check(backend["port"].get("name") in [p.get("name") for p in service["spec"]["ports"]], where,
                          "the Ingress names a port the Service does not have")
            for tls in ingress["spec"].get("tls", []):
                check(tls.get("secretName") == values["apiServer"]["ingress"]["tls"]["secretName"], where, "the Ingress's TLS Secret is not the values'")
    check(bool(by_kind(docs, "Ingress")) == values["apiServer"]["ingress"]["enabled"], where, "an Ingress without ingress.enabled, or none with it")

    # PodDisruptionBudgets: one per workload, selecting its pods and no other's.
    workloads = list(deployments.values()) + by_kind(docs, "StatefulSet")
    for workload in workloads:
        budgets = [p for p in by_kind(docs, "PodDisruptionBudget") if matches(p["spec"]["selector"]["matchLabels"], pod_labels(workload))]
        check(len(budgets) == 1, where, f"{len(budgets)} PodDisruptionBudgets select {workload['metadata']['name']}'s pods, not 1")
        for budget in budgets:
            others = [w["metadata"]["name"] for w in workloads if w is not workload and matches(budget["spec"]["selector"]["matchLabels"], pod_labels(w))]
            check(not others, where, f"PodDisruptionBudget {budget['metadata']['name']} also selects {others}")
            if "minAvailable" in budget["spec"]:
                check(budget["spec"]["minAvailable"] < workload["spec"]["replicas"], where,
                      f"PodDisruptionBudget {budget['metadata']['name']} would block every eviction")

    # Volumes name objects that are rendered (or existing Secrets the values name), and keys they hold.
    external = values["etcd"]["external"]
    existing = {values["adminTokens"]["existingSecret"], values["secretKey"]["existingSecret"], values["apiServer"]["tls"]["secretName"]} - {""}
    if not values["etcd"]["bundled"]["enabled"]:
        existing |= {external["tls"]["secretName"], external["auth"]["passwordSecretName"] if external["auth"]["username"] else ""} - {""}
    for workload in workloads:
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            if "configMap" in volume:
                config_map = named(docs, "ConfigMap", volume["configMap"]["name"])
                if check(config_map is not None, where, f"volume {volume['name']} names a ConfigMap not rendered"):
                    for item in volume["configMap"].get("items", []):
                        check(item["key"] in config_map.get("data", {}), where, f"ConfigMap {config_map['metadata']['name']} has no {item['key']}")
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                secret = named(docs, "Secret", name)
                if name in existing:
                    check(secret is None, where, f"the chart renders Secret {name} although the values say it exists")
                elif check(secret is not None, where, f"volume {volume['name']} names Secret {name}, neither rendered nor existing"):
                    for item in volume["secret"].get("items", []):
                        check(item["key"] in secret.get("data", {}), where, f"Secret {name} has no {item['key']}")

    # Every file the api-server's configuration names is mounted in its container.
    files = {}
    for key in ("admin-token-file", "secret-key-file", "catalog-file", "tls-cert-file", "tls-key-file",
                "etcd.ca-file", "etcd.cert-file", "etcd.key-file", "etcd.password-file"):
        if key in api_conf:
            source = mounted_file(api_pod, api_container, api_conf[key], docs, existing)
            if check(source is not None, where, f"{key} {api_conf[key]} is not mounted in the api-server's container"):
                files[key] = source
    check("catalog-file" in api_conf or not values["catalog"], where, "catalog is set but the api-server is not given it")
    # secret-key-file comes from the init container's copy of the Secret.
    secret_key_text = None
    if "secret-key-file" in files:
        volume, kind, _, key = files["secret-key-file"]
        if check(kind == "emptyDir" and volume["emptyDir"].get("medium") == "Memory", where,
                 "secret-key-file is not in a memory-backed volume of the pod"):
            init = next((c for c in api_pod.get("initContainers", []) if c["name"] == "secret-key"), None)
            if check(init is not None, where, "no init container copies the secret key"):
                script = init["command"][-1]
                check("umask 077" in script and api_conf["secret-key-file"] in script, where,
                      "the init container does not write secret-key-file readable by its owner alone")
                source_path = re.search(r"cat (\S+) >", script)
                if check(source_path is not None, where, "the init container's copy names no source"):
                    source = mounted_file(api_pod, init, source_path.group(1), docs, existing)
                    if check(source is not None and source[1] == "Secret", where, "the init container's source is not a Secret"):
                        check(source[2] == (values["secretKey"]["existingSecret"] or f"{RELEASE}-gpuplane-secret-key"), where,
                              "the secret key comes from another Secret than the values name")
                        if source[2] not in existing:
                            secret_key_text = secret_data(docs, source[2]).get(source[3])
                            check(bool(secret_key_text), where, "the secret key Secret is empty")
                            check(named(docs, "Secret", source[2])["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep",
                                  where, "the secret key Secret would be deleted with the release")
    admin_tokens_text = None
    if "admin-token-file" in files:
        volume, kind, name, key = files["admin-token-file"]
        if check(kind == "Secret", where, "admin-token-file is not mounted from a Secret"):
            check(name == (values["adminTokens"]["existingSecret"] or f"{RELEASE}-gpuplane-admin-tokens"), where,
                  "the admin tokens come from another Secret than the values name")
            if name not in existing:
                admin_tokens_text = secret_data(docs, name).get(key)
                if values["adminTokens"]["tokens"]:
                    check(admin_tokens_text.split() == values["adminTokens"]["tokens"], where, "the admin tokens are not the values'")
    catalog_text = None
    if "catalog-file" in files:
        _, kind, name, key = files["catalog-file"]
        if check(kind == "ConfigMap", where, "catalog-file is not mounted from a ConfigMap"):
            catalog_text = named(docs, "ConfigMap", name)["data"][key]

    # No ConfigMap holds a token or a key.
    secrets = [v for s in by_kind(docs, "Secret") for v in secret_data(docs, s["metadata"]["name"]).values()]
    secrets += values["adminTokens"]["tokens"]
    pieces = [piece for text in secrets for piece in text.split() if len(piece) >= 16]
    for config_map in by_kind(docs, "ConfigMap"):
        for key, text in config_map.get("data", {}).items():
            for piece in pieces:
                check(piece not in text, where, f"ConfigMap {config_map['metadata']['name']} ({key}) holds a secret")
    for doc in docs:
        if doc["kind"] != "Secret":
            text = json.dumps(doc)
            for piece in pieces:
                check(piece not in text, where, f"{doc['kind']} {doc['metadata']['name']} holds a secret")

    # The scheduler: its configuration, its identity per pod, its metrics port; no probe (its
    # /healthz says only that the process runs).
    scheduler_pod = scheduler["spec"]["template"]["spec"]
    scheduler_container = scheduler_pod["containers"][0]
    scheduler_conf_path = scheduler_container["args"][scheduler_container["args"].index("--config") + 1]
    scheduler_source = mounted_file(scheduler_pod, scheduler_container, scheduler_conf_path, docs, existing)
    scheduler_conf_text = ""
    if check(scheduler_source is not None and scheduler_source[1] == "ConfigMap", where, f"{scheduler_conf_path} is not mounted from a ConfigMap"):
        scheduler_conf_text = named(docs, "ConfigMap", scheduler_source[2])["data"][scheduler_source[3]]
    scheduler_conf = parse_conf(scheduler_conf_text)
    scheduler_ports = {port["name"]: port["containerPort"] for port in scheduler_container.get("ports", [])}
    check(scheduler_conf.get("listen") == "0.0.0.0", where, "the scheduler's /metrics does not listen on the pod's addresses")
    check(scheduler_ports.get("metrics") == int(scheduler_conf.get("port", "9448")) == values["scheduler"]["metricsPort"], where,
          f"the scheduler's metrics containerPort {scheduler_ports.get('metrics')} is not its port setting {scheduler_conf.get('port')} (scheduler.metricsPort)")
    check(not any(probe in scheduler_container for probe in ("startupProbe", "livenessProbe", "readinessProbe")), where,
          "the scheduler has a probe")
    # Prometheus: scrape annotations on both pods' metrics ports (HTTPS when the api-server has
    # TLS), or none; the schedulers' metrics Service when asked for.
    for workload, port, scheme in ((api, ports.get("http"), "https" if values["apiServer"]["tls"]["secretName"] else "http"),
                                   (scheduler, scheduler_ports.get("metrics"), "http")):
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        workload_name = workload["metadata"]["name"]
        check("checksum/config" in annotations, where, f"{workload_name}'s pods lost their configuration checksum")
        if values["metrics"]["scrapeAnnotations"]:
            check(annotations.get("prometheus.io/scrape") == "true" and annotations.get("prometheus.io/port") == str(port)
                  and annotations.get("prometheus.io/path") == "/metrics" and annotations.get("prometheus.io/scheme") == scheme, where,
                  f"{workload_name}'s scrape annotations do not name its metrics port {port} over {scheme}: {annotations}")
        else:
            check(not any(key.startswith("prometheus.io/") for key in annotations), where, f"{workload_name} has scrape annotations although metrics.scrapeAnnotations is off")
    metrics_services = [s for s in by_kind(docs, "Service") if matches(s["spec"].get("selector", {}), pod_labels(scheduler))]
    if values["metrics"]["schedulerService"]:
        if check(len(metrics_services) == 1, where, f"{len(metrics_services)} Services select the scheduler's pods, not 1"):
            service = metrics_services[0]
            check(service["spec"].get("clusterIP") == "None", where, "the schedulers' metrics Service is not headless")
            check(not matches(service["spec"]["selector"], pod_labels(api)), where, "the schedulers' metrics Service selects api-server pods")
            for port in service["spec"]["ports"]:
                check(port["targetPort"] in ("metrics", scheduler_ports.get("metrics")), where,
                      f"the schedulers' metrics Service targets {port['targetPort']}, not the metrics port")
    else:
        check(not metrics_services, where, "a Service selects the scheduler's pods although metrics.schedulerService is off")
    for key in ("etcd.ca-file", "etcd.cert-file", "etcd.key-file", "etcd.password-file"):
        check((key in scheduler_conf) == (key in api_conf), where, f"the scheduler and api-server disagree on {key}")
        if key in scheduler_conf:
            check(mounted_file(scheduler_pod, scheduler_container, scheduler_conf[key], docs, existing) is not None, where,
                  f"{key} {scheduler_conf[key]} is not mounted in the scheduler's container")
    # TLS as the values say: HTTPS probes with the api-server's Secret, etcd files with the external one.
    tls_secret = values["apiServer"]["tls"]["secretName"]
    check(("tls-cert-file" in api_conf) == bool(tls_secret), where, "tls-cert-file does not follow apiServer.tls.secretName")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        scheme = api_container.get(probe, {}).get("httpGet", {}).get("scheme", "HTTP")
        check(scheme == ("HTTPS" if tls_secret else "HTTP"), where, f"the api-server's {probe} uses {scheme}")
    if "catalog-file" in scheduler_conf:
        check(mounted_file(scheduler_pod, scheduler_container, scheduler_conf["catalog-file"], docs, existing) is not None, where,
              "the scheduler's catalog-file is not mounted")
    check(scheduler_conf.get("catalog-file") == api_conf.get("catalog-file"), where, "the scheduler and api-server are given different catalogs")
    environment = {}
    for variable in scheduler_container.get("env", []):
        if "value" in variable:
            environment[variable["name"]] = variable["value"]
        elif variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            environment[variable["name"]] = f"{scheduler['metadata']['name']}-5d8f7c9b4-x2x7q"
        else:
            fail(where, f"the scheduler's {variable['name']} comes from something this check does not follow")
    check(environment.get("GPUPLANE_IDENTITY", "").startswith(scheduler["metadata"]["name"]), where,
          "the scheduler replicas do not take their pod names as election identities")

    # etcd: the daemons' endpoints name the bundled members, which form one cluster.
    endpoints = [e.strip() for e in api_conf.get("etcd.endpoints", "").split(",") if e.strip()]
    check(endpoints == [e.strip() for e in scheduler_conf.get("etcd.endpoints", "").split(",") if e.strip()], where,
          "the api-server and scheduler are given different etcd endpoints")
    statefulsets = by_kind(docs, "StatefulSet")
    if values["etcd"]["bundled"]["enabled"]:
        if check(len(statefulsets) == 1, where, "no bundled etcd StatefulSet"):
            etcd = statefulsets[0]
            members = etcd["spec"]["replicas"]
            check(members == values["etcd"]["bundled"]["replicas"], where, "the etcd members are not etcd.bundled.replicas")
            headless = named(docs, "Service", etcd["spec"]["serviceName"])
            if check(headless is not None, where, "the StatefulSet's serviceName names no Service"):
                check(headless["spec"].get("clusterIP") == "None" and headless["spec"].get("publishNotReadyAddresses") is True, where,
                      "the members' Service is not headless with unready addresses published")
                check(matches(headless["spec"]["selector"], pod_labels(etcd)), where, "the members' Service does not select the members")
            expected = [f"http://{etcd['metadata']['name']}-{i}.{etcd['spec']['serviceName']}.{NAMESPACE}.svc:2379" for i in range(members)]
            check(endpoints == expected, where, f"etcd.endpoints {endpoints} are not the members {expected}")
            env = {v["name"]: v.get("value") for v in etcd["spec"]["template"]["spec"]["containers"][0]["env"]}
            peers = env.get("ETCD_INITIAL_CLUSTER", "").split(",")
            check(peers == [f"{etcd['metadata']['name']}-{i}=http://{etcd['metadata']['name']}-{i}.{etcd['spec']['serviceName']}.{NAMESPACE}.svc:2380" for i in range(members)],
                  where, f"ETCD_INITIAL_CLUSTER does not list the {members} members")
            check(etcd["spec"].get("podManagementPolicy") == "Parallel", where, "the members start one by one and cannot reach a first quorum")
            policies = [p for p in by_kind(docs, "NetworkPolicy") if matches(p["spec"]["podSelector"]["matchLabels"], pod_labels(etcd))]
            if values["etcd"]["bundled"]["networkPolicy"]["enabled"] and check(len(policies) == 1, where, "no NetworkPolicy guards etcd"):
                client_rule = next(r for r in policies[0]["spec"]["ingress"] if any(p["port"] == 2379 for p in r.get("ports", [])))
                for workload in (api, scheduler, etcd):
                    check(any(matches(peer["podSelector"]["matchLabels"], pod_labels(workload)) for peer in client_rule["from"]), where,
                          f"the NetworkPolicy keeps {workload['metadata']['name']} from etcd")
                check(all(peer.get("podSelector") for peer in client_rule["from"]), where, "the NetworkPolicy opens etcd's client port to more than the pods")
    else:
        check(not statefulsets, where, "a bundled etcd although etcd.bundled.enabled is false")
        check(endpoints == values["etcd"]["external"]["endpoints"], where, "etcd.endpoints are not etcd.external.endpoints")

    # NOTES.txt tells how to get a token and register a node.
    for needle in ("admin-tokens", "/v1/tokens", '"role": "node"', "node-token-file", "gpuplane-node-agent"):
        check(needle in notes, where, f"NOTES.txt does not mention {needle}")

    def started(container: dict, extra_env: dict) -> dict:
        return {"command": container["command"], "args": container["args"], "environment": extra_env}

    def pod(workload: dict) -> dict:
        """The pod as a kubelet would make it: its containers and each volume's files."""
        spec = workload["spec"]["template"]["spec"]
        volumes = {}
        for volume in spec.get("volumes", []):
            if "emptyDir" in volume:
                volumes[volume["name"]] = {"emptyDir": volume["emptyDir"]}
                continue
            kind, field, name_field = ("ConfigMap", "configMap", "name") if "configMap" in volume else ("Secret", "secret", "secretName")
            source = volume[field]
            name = source[name_field]
            if name in existing:
                data = None
            elif kind == "ConfigMap":
                data = named(docs, "ConfigMap", name)["data"]
            else:
                data = secret_data(docs, name)
            items = source.get("items") or [{"key": key, "path": key} for key in (data or {})]
            volumes[volume["name"]] = {
                "kind": kind, "name": name, "defaultMode": source.get("defaultMode", 0o644),
                "files": [{"path": item["path"], "key": item["key"], "content": None if data is None else data[item["key"]]} for item in items],
            }

        def container(c: dict) -> dict:
            env = {}
            for variable in c.get("env", []):
                if "value" in variable:
                    env[variable["name"]] = variable["value"]
                else:
                    env[variable["name"]] = {"fieldRef": variable["valueFrom"]["fieldRef"]["fieldPath"]}
            probes = {k: c[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe") if "httpGet" in c.get(k, {})}
            return {"name": c["name"], "command": c["command"], "args": c.get("args", []), "env": env,
                    "mounts": [{"name": m["name"], "path": m["mountPath"], "readOnly": m.get("readOnly", False)} for m in c.get("volumeMounts", [])],
                    "ports": {p["name"]: p["containerPort"] for p in c.get("ports", [])}, "probes": probes}

        for claim in workload["spec"].get("volumeClaimTemplates", []):
            volumes[claim["metadata"]["name"]] = {"emptyDir": {}, "claim": True}
        return {"name": workload["metadata"]["name"], "securityContext": spec.get("securityContext", {}),
                "replicas": workload["spec"]["replicas"],
                "initContainers": [container(c) for c in spec.get("initContainers", [])],
                "containers": [container(c) for c in spec["containers"]], "volumes": volumes}

    return {
        "values": label,
        "apiServer": {**started(api_container, {}), "configFile": api_conf_text, "configPath": api_conf_path},
        "scheduler": {**started(scheduler_container, environment), "configFile": scheduler_conf_text, "configPath": scheduler_conf_path},
        "catalog": catalog_text,
        "adminTokens": admin_tokens_text,
        "secretKey": secret_key_text,
        "pods": {"apiServer": pod(api), "scheduler": pod(scheduler), "etcd": pod(statefulsets[0]) if statefulsets else None},
        "etcdEndpoints": endpoints,
        # What pod_check.py must make for the Secrets the values say exist, and how to run etcd.
        "tls": {
            "apiServerSecret": values["apiServer"]["tls"]["secretName"],
            "etcdSecret": "" if values["etcd"]["bundled"]["enabled"] else external["tls"]["secretName"],
            "etcdUsername": "" if values["etcd"]["bundled"]["enabled"] else external["auth"]["username"],
            "etcdPasswordSecret": "" if values["etcd"]["bundled"]["enabled"] else external["auth"]["passwordSecretName"],
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chart", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    arguments = parser.parse_args()
    chart_dir = arguments.chart.resolve()
    chart = helm.Chart.load(str(chart_dir))
    schema = json.loads((chart_dir / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((chart_dir / "values.yaml").read_text())
    claimed = chart.metadata.get("kubeVersion", "")
    check(claimed.startswith(">=" + OLDEST_KUBERNETES), "Chart.yaml", f"kubeVersion {claimed!r} is not >={OLDEST_KUBERNETES}")
    kube_versions = [OLDEST_KUBERNETES, newest_kubernetes()]
    print(f"Helm {helm.helm_sdk_version()}; Kubernetes {', '.join(kube_versions)}; jsonschema {importlib.metadata.version('jsonschema')}, kubernetes-validate {importlib.metadata.version('kubernetes-validate')}")

    sets = [("values.yaml", {})]
    examples = sorted((chart_dir / "ci").glob("*.yaml"))
    check(len(examples) >= 3, "ci/", f"{len(examples)} example values files, expected at least 3")
    for path in examples:
        sets.append((f"ci/{path.name}", yaml.safe_load(path.read_text()) or {}))

    results = []
    for label, overrides in sets:
        before = len(failures)
        result = check_values_file(chart, schema, defaults, label, overrides, kube_versions, chart_dir)
        if result is not None:
            results.append(result)
        print(f"{label}: {'ok' if len(failures) == before else 'FAILED'}")

    # Values that must be refused, by jsonschema and by Helm (which refuses to render them).
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    for why, overrides in BAD_VALUES.items():
        where = f"bad values ({why})"
        check(not validator.is_valid(deep_merge(defaults, overrides)), where, "values.schema.json accepts them")
        try:
            chart.render(values=overrides, name=RELEASE, namespace=NAMESPACE)
            fail(where, "Helm renders them")
        except helm.HelmValuesError:
            pass
    for why, overrides in REFUSED_BY_TEMPLATES.items():
        try:
            chart.render(values=overrides, name=RELEASE, namespace=NAMESPACE)
            fail(f"bad values ({why})", "Helm renders them")
        except helm.HelmRenderError:
            pass
    print(f"{len(BAD_VALUES) + len(REFUSED_BY_TEMPLATES)} bad values files refused" if not any(f.startswith("bad values") for f in failures) else "bad values: FAILED")

    arguments.out.mkdir(parents=True, exist_ok=True)
    (arguments.out / "daemons.json").write_text(json.dumps(results, indent=2))
    for failure in failures:
        print("FAIL " + failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
