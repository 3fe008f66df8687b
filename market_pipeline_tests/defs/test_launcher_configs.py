"""The scaled-out instance configs in docs/examples/ load, and every key in them is one Dagster knows.

Each `docs/examples/dagster.<launcher>.yaml` is checked piece by piece with public APIs only:

- the whole file as Dagster loads `$DAGSTER_HOME/dagster.yaml` (`DagsterInstance.from_config`:
  every top-level block against the instance schema, the run launcher built from its block, which
  validates its `config` against the launcher's schema, the run coordinator from `concurrency`),
  with its PostgreSQL storage swapped for SQLite so that no server is needed, and the K8s launcher
  pointed at a stub kubeconfig instead of the in-cluster service account (no cluster here);
- that PostgreSQL storage block against `DagsterPostgresStorage.config_type()`, and the run
  launcher's `config` as written against the launcher class's `config_type()` (a one-op job whose
  op takes that schema, checked by `dagster.validate_run_config`);
- the free-form parts Dagster passes on unchecked: the Docker `container_kwargs` against docker-py's
  `containers.create` keywords, the Kubernetes objects against the Kubernetes API models.

A copy with one misspelled key in each of those places must fail, so the checks are not vacuous.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from market_pipeline_tests.support.project import REPO_ROOT

EXAMPLES = REPO_ROOT / "docs" / "examples"
DOCKER_YAML = EXAMPLES / "dagster.docker.yaml"
K8S_YAML = EXAMPLES / "dagster.k8s.yaml"
DISTRIBUTED_YAML = EXAMPLES / "dagster.distributed.yaml"  # what test_distributed_backfill.py runs (slow)

# Every value the files take from the environment, set so that config sources resolve.
INSTANCE_ENV = {
    "DAGSTER_PG_HOST": "db.internal",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USER": "dagster",
    "DAGSTER_PG_PASSWORD": "not-a-secret",
    "DAGSTER_PG_DB": "dagster",
}
# What a run needs to reach the bucket and the catalog (docs/operations.md, "Scaling out").
RUN_ENV_NAMES = {
    "PIPELINE_LAKE_URL",
    "PIPELINE_CATALOG_URL",
    "PGPASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
}
STUB_KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "stub", "cluster": {"server": "https://127.0.0.1:6443"}}],
    "users": [{"name": "stub", "user": {"token": "stub"}}],
    "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub"}}],
    "current-context": "stub",
}


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def validate_against(schema: Any, value: Mapping[str, Any]) -> None:
    """Dagster's own config validation of `value` against `schema` (raises DagsterInvalidConfigError)."""

    @dg.op(config_schema=schema)
    def config_holder() -> None: ...

    @dg.job
    def config_check() -> None:
        config_holder()

    dg.validate_run_config(config_check, {"ops": {"config_holder": {"config": dict(value)}}})


def load_instance(config: Mapping[str, Any], home: Path) -> dg.DagsterInstance:
    """The instance Dagster builds from `config` as $DAGSTER_HOME/dagster.yaml, on SQLite storage."""
    on_sqlite = {**config, "storage": {"sqlite": {"base_dir": str(home)}}}
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(on_sqlite))
    return dg.DagsterInstance.from_config(str(home))


def check_instance(config: Mapping[str, Any], home: Path) -> type:
    """Builds the instance with its launcher (run monitoring asks the launcher whether it can
    resume runs, which fails for a launcher that cannot when max_resume_run_attempts > 0)."""
    from dagster_postgres import DagsterPostgresStorage

    validate_against(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    with load_instance(config, home) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_launcher.supports_check_run_worker_health
        return type(instance.run_launcher)


def check_docker(config: Mapping[str, Any], home: Path) -> None:
    from dagster_docker import DockerRunLauncher
    from docker.models.containers import RUN_CREATE_KWARGS, RUN_HOST_CONFIG_KWARGS

    launcher_config = config["run_launcher"]["config"]
    validate_against(DockerRunLauncher.config_type(), launcher_config)
    unknown = set(launcher_config.get("container_kwargs", {})) - set(RUN_CREATE_KWARGS) - set(RUN_HOST_CONFIG_KWARGS)
    assert not unknown, f"not keywords of docker-py's containers.create: {sorted(unknown)}"
    assert check_instance(config, home) is DockerRunLauncher


def check_k8s(config: Mapping[str, Any], home: Path) -> None:
    import kubernetes.client as k8s
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.models import k8s_snake_case_dict

    launcher_config = config["run_launcher"]["config"]
    validate_against(K8sRunLauncher.config_type(), launcher_config)
    # Dagster passes the Kubernetes objects on unchecked until it creates a run's Job: check them
    # as it converts them then.
    for volume in launcher_config.get("volumes", []):
        k8s_snake_case_dict(k8s.V1Volume, volume)
    for mount in launcher_config.get("volume_mounts", []):
        k8s_snake_case_dict(k8s.V1VolumeMount, mount)
    if "resources" in launcher_config:
        k8s_snake_case_dict(k8s.V1ResourceRequirements, launcher_config["resources"])
    raw = launcher_config.get("run_k8s_config", {})
    models = {"container_config": k8s.V1Container, "pod_spec_config": k8s.V1PodSpec, "job_spec_config": k8s.V1JobSpec}
    for key, model in models.items():
        if key in raw:
            k8s_snake_case_dict(model, raw[key])
    # Outside a cluster the in-cluster config cannot load: the launcher reads a stub kubeconfig
    # (building the API client does not contact the server).
    home.mkdir(parents=True, exist_ok=True)
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(STUB_KUBECONFIG))
    off_cluster = copy.deepcopy(dict(config))
    off_cluster["run_launcher"]["config"].update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    assert check_instance(off_cluster, home) is K8sRunLauncher


CHECKS = {DOCKER_YAML: check_docker, K8S_YAML: check_k8s}


@pytest.fixture(autouse=True)
def _instance_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in INSTANCE_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("path", list(CHECKS), ids=lambda p: p.name)
def test_launcher_config_is_valid(path: Path, tmp_path: Path) -> None:
    config = load(path)
    CHECKS[path](config, tmp_path / "home")
    # Runs resume on another worker when theirs dies: these launchers can check worker health.
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_monitoring"]["max_resume_run_attempts"] > 0
    # No pool guards the warehouse with a DuckLake catalog: only the run limit spreads the runs.
    assert config["concurrency"]["runs"]["max_concurrent_runs"] > 1


def test_the_distributed_test_instance_is_valid_without_its_servers(tmp_path: Path) -> None:
    """The one-box recipe's instance file, checked in the fast suite too (its own test needs PostgreSQL):
    PostgreSQL storage as Dagster's schema wants it, the queue with at most 2 runs, the default launcher."""
    from dagster_postgres import DagsterPostgresStorage

    config = load(DISTRIBUTED_YAML)
    validate_against(DagsterPostgresStorage.config_type(), config["storage"]["postgres"])
    with load_instance(config, tmp_path / "home") as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2


def test_docker_runs_get_the_bucket_and_catalog_settings() -> None:
    listed = set(load(DOCKER_YAML)["run_launcher"]["config"]["env_vars"])
    assert RUN_ENV_NAMES | set(INSTANCE_ENV) <= listed


def test_the_recipe_points_at_these_files() -> None:
    recipe = (REPO_ROOT / "docs" / "operations.md").read_text()
    for path in CHECKS:
        assert f"docs/examples/{path.name}" in recipe


def _set(config: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    broken = copy.deepcopy(config)
    *parents, leaf = dotted.split(".")
    node = broken
    for key in parents:
        node = node[key]
    node[leaf] = value
    return broken


def _rename(config: dict[str, Any], dotted: str, new_leaf: str) -> dict[str, Any]:
    broken = copy.deepcopy(config)
    *parents, leaf = dotted.split(".")
    node = broken
    for key in parents:
        node = node[key][0] if isinstance(node[key], list) else node[key]
    node[new_leaf] = node.pop(leaf)
    return broken


MISSPELLED = [
    (DOCKER_YAML, "run_monitoring.max_resume_run_attempts", "max_resume_run_attemps"),
    (DOCKER_YAML, "concurrency.runs.max_concurrent_runs", "max_concurent_runs"),
    (DOCKER_YAML, "storage.postgres.postgres_db.hostname", "hostnme"),
    (DOCKER_YAML, "run_launcher.config.env_vars", "env_var"),
    (DOCKER_YAML, "run_launcher.config.container_kwargs.mem_limit", "mem_limt"),
    (K8S_YAML, "run_launcher.config.job_namespace", "namespace_job"),
    (K8S_YAML, "run_launcher.config.volumes.emptyDir", "emptydir"),
    (K8S_YAML, "run_launcher.config.resources.limits", "limit"),
    (K8S_YAML, "run_launcher.config.run_k8s_config.job_spec_config.ttlSecondsAfterFinished", "ttlSecondsAfterFinish"),
]


@pytest.mark.parametrize(("path", "dotted", "misspelling"), MISSPELLED, ids=[m[2] for m in MISSPELLED])
def test_a_misspelled_key_fails(path: Path, dotted: str, misspelling: str, tmp_path: Path) -> None:
    broken = _rename(load(path), dotted, misspelling)  # test_launcher_config_is_valid: the file passes
    with pytest.raises(Exception, match=misspelling):
        CHECKS[path](broken, tmp_path / "broken")


def test_a_wrong_launcher_class_fails(tmp_path: Path) -> None:
    broken = _set(load(DOCKER_YAML), "run_launcher.class", "DockerRunLaunch")
    with pytest.raises(Exception, match="DockerRunLaunch"):
        check_instance(broken, tmp_path / "home")
