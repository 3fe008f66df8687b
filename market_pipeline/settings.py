"""Pipeline settings: committed defaults in config.yaml, overlaid by the profile `PIPELINE_ENV` names
(its block under `profiles:` in the same file), then by the synthetic settings the demo saved in the
data dir (vendors/synthetic/saved_settings.py), then by `.env`, then by the environment.

Every setting has an environment name `PIPELINE_<FIELD>` (nested ones `PIPELINE_<GROUP>__<FIELD>`).
The names are a contract with operators; docs/configuration.md lists them all.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import os
import typing
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from pydantic_settings import (
    SettingsError as SourceParseError,
)

from market_pipeline.core.errors import ConfigurationError
from market_pipeline.core.instruments import Instrument, InstrumentSpec, check_instrument_key
from market_pipeline.core.lake.storage import lake_root
from market_pipeline.core.lake.warehouse import WarehouseTarget, parse_catalog_url
from market_pipeline.core.security.crypto import NEW_MASTER_KEY_ENV, MasterKeyError, parse_master_key
from market_pipeline.settings_sections import (
    SOURCES_EXAMPLE,
    AgreementSettings,
    AlertSettings,
    BarSettings,
    BookSettings,
    CheckSettings,
    CliSettings,
    MetricsSettings,
    ScheduleSettings,
    SourcePair,
    UiSettings,
    split_list,
)
from market_pipeline.vendors.registry import get_vendor, vendor_configs
from market_pipeline.vendors.synthetic.saved_settings import SavedSyntheticSettings

DEFAULT_CONFIG_FILE = Path(__file__).with_name("config.yaml")
CONFIG_FILE_ENV = "PIPELINE_CONFIG_FILE"
PROFILE_ENV = "PIPELINE_ENV"
PROFILES = ("dev", "staging", "prod")
Profile = Literal["dev", "staging", "prod"]
DEFAULT_PROFILE: Profile = "dev"


class PipelineSettings(*vendor_configs(), BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PIPELINE_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    env: Profile = DEFAULT_PROFILE  # the config.yaml profile overlaid on its base (PIPELINE_ENV)
    data_dir: Path = Path("./data")
    # The lake on S3 (s3://bucket/prefix) instead of $PIPELINE_DATA_DIR/lake (core/lake/storage.py).
    lake_url: str | None = None
    # The warehouse as a DuckLake with a PostgreSQL catalog (ducklake:postgres:<libpq string>) instead of
    # $PIPELINE_DATA_DIR/warehouse.duckdb: many processes can write it (core/lake/warehouse.py). A secret
    # like the master key (it may hold the password): shown only through WarehouseTarget.describe.
    catalog_url: SecretStr | None = None
    # Each run's steps use `<data_dir>/runs/<run_id>/` as their data dir (scratch no other run reads),
    # as run workers in containers each have their own disk; needs PIPELINE_LAKE_URL and PIPELINE_CATALOG_URL.
    scratch_per_run: bool = False
    # Keep a successful run's scratch (runs/<run_id>/, the S3 vendor's downloads of its days) instead of
    # removing it when the run ends (core/lake/scratch.py); a failed run's is always kept.
    keep_scratch: bool = False
    # With PIPELINE_LAKE_URL: the disk a run's copies of lake objects may take for its later steps
    # (core/lake/local_copies.py); beyond it a step's copies are its own, removed when it ends.
    lake_copies_max_gb: float = Field(default=10.0, ge=0)
    source: str = "synthetic"  # a name in vendors.registry.VENDORS
    # EXCHANGE:SYMBOL -> {primary, reference}; instruments not listed: PIPELINE_SOURCE, no reference.
    # One JSON object in the environment (decoded here: no PIPELINE_SOURCES__* names).
    sources: Annotated[dict[str, SourcePair], NoDecode] = Field(default_factory=dict)
    start_date: dt.date = dt.date(2024, 1, 1)
    instruments: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["BINANCE:BTC-USDT", "BINANCE_FUTURES:BTC-USDT-PERP"]
    )
    instrument_specs: dict[str, InstrumentSpec] = Field(default_factory=dict)
    default_instrument: InstrumentSpec = InstrumentSpec(tick_size=Decimal("0.01"), lot_size=Decimal("0.00001"))
    partition_tolerance_minutes: int = Field(60, ge=0)
    # Processes per step for the per-instrument-day loops (raw import, book rebuild); None: one per two
    # usable cores (parallel.worker_count), 1: serial in the step's own process.
    workers: int | None = Field(None, ge=1)
    # Days per run of a backfill (UI, sensors): None: the whole range in one run (BackfillPolicy.single_run()),
    # N: runs of at most N days (BackfillPolicy.multi_run(N)), which Dagster can run side by side.
    backfill_days_per_run: int | None = Field(None, ge=1)
    # How a launched run executes its steps: a process per step (Dagster's default), or all in the run's
    # own process, as `market-pipeline run` does (no process start-up per step; one run, one process).
    run_executor: Literal["multiprocess", "in_process"] = "multiprocess"

    alert_webhook_url: str | None = None
    alert_webhook_token: SecretStr | None = None
    master_key: SecretStr | None = None
    # Parquet modular encryption of every file under lake/ with a key derived from master_key.
    lake_encryption: Literal["off", "on"] = "off"

    book: BookSettings = Field(default_factory=BookSettings)
    checks: CheckSettings = Field(default_factory=CheckSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    cli: CliSettings = Field(default_factory=CliSettings)
    bars: BarSettings = Field(default_factory=BarSettings)
    ui: UiSettings = Field(default_factory=UiSettings)
    agreement: AgreementSettings = Field(default_factory=AgreementSettings)
    # How log records are written to the console: text lines, or one JSON object per line.
    log_format: Literal["text", "json"] = "text"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = Path(os.environ.get(CONFIG_FILE_ENV) or DEFAULT_CONFIG_FILE)
        if not config_file.is_file():
            raise SettingsError([f"{CONFIG_FILE_ENV}: config file not found: {config_file}"])
        # The profile is chosen by the sources above the YAML, in their order of precedence.
        chosen = next((v for v in (s().get("env") for s in (init_settings, env_settings, dotenv_settings)) if v), None)
        config = ProfiledYamlSource(settings_cls, config_file, chosen)
        # The synthetic settings the demo saved in the data dir the sources above choose.
        data_dir = next(
            (v for v in (s().get("data_dir") for s in (init_settings, env_settings, dotenv_settings, config)) if v),
            cls.model_fields["data_dir"].default,
        )
        # Earlier sources win: explicit arguments, then the environment, then .env, then the data
        # dir's saved synthetic settings, then the YAML (its profile block over its base).
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            SavedSyntheticSettings(settings_cls, Path(data_dir)),
            config,
        )

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        get_vendor(value)  # ValueError naming the known sources
        return value

    @field_validator("sources", mode="before")
    @classmethod
    def _decode_sources(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg}); e.g. {SOURCES_EXAMPLE}") from None
        return value

    @field_validator("instruments", mode="before")
    @classmethod
    def _split_instruments(cls, value: object) -> object:
        return split_list(value)

    @field_validator("instruments")
    @classmethod
    def _check_instruments(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one instrument is required, e.g. BINANCE:BTC-USDT")
        for item in value:
            check_instrument_key(item)
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate instruments in {value}")
        return value

    @field_validator("instrument_specs")
    @classmethod
    def _check_spec_keys(cls, value: dict[str, InstrumentSpec]) -> dict[str, InstrumentSpec]:
        for item in value:
            check_instrument_key(item)
        return value

    @field_validator("alert_webhook_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            # No echo of the value: URLs can carry credentials.
            raise ValueError("must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _check_lake_encryption_key(self) -> PipelineSettings:
        if self.lake_encryption == "on":
            try:
                parse_master_key(self.master_key.get_secret_value() if self.master_key else None)
            except MasterKeyError as exc:
                raise ValueError(f"PIPELINE_LAKE_ENCRYPTION=on needs a valid PIPELINE_MASTER_KEY: {exc}") from None
        return self

    @model_validator(mode="after")
    def _check_sources(self) -> PipelineSettings:
        problems = []
        for key, pair in self.sources.items():
            where = f"PIPELINE_SOURCES: {key}"
            if key not in self.instruments:
                problems.append(f"{where} is not in PIPELINE_INSTRUMENTS")
            if pair.reference == pair.primary:
                problems.append(f"{where}: the reference source is the primary one")
        if not problems:
            problems = self.source_problems(lambda vendor: vendor.problems)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def source_problems(self, check: typing.Callable[[Any], typing.Callable[[Any], list[str]]]) -> list[str]:
        """`check(vendor)(settings)` of every source in use (each primary and reference), each vendor
        seeing only the instruments it serves, its problems named by the setting that selects it."""
        problems = []
        for name in sorted(self.primary_sources | self.reference_sources):
            primary = [k for k in self.instruments if self.primary_source(k) == name]
            referenced = [k for k in self.instruments if self.reference_source(k) == name]
            found = check(get_vendor(name))(SettingsView(self, instruments=primary + referenced))
            if name != self.source or referenced or len(primary) < len(self.instruments):
                roles = [f"primary of {', '.join(primary)}"] * bool(primary)
                roles += [f"reference of {', '.join(referenced)}"] * bool(referenced)
                found = [f"PIPELINE_SOURCES {name} ({'; '.join(roles)}): {p}" for p in found]
            problems += found
        return problems

    def primary_source(self, instrument_key: str) -> str:
        """The source whose books `instrument_key` publishes: its `PIPELINE_SOURCES` primary, else
        PIPELINE_SOURCE."""
        pair = self.sources.get(instrument_key)
        return pair.primary if pair else self.source

    @property
    def primary_sources(self) -> set[str]:
        """The primary source of every configured instrument (PIPELINE_SOURCE alone unless
        PIPELINE_SOURCES gives an instrument another)."""
        return {self.primary_source(key) for key in self.instruments}

    def reference_source(self, instrument_key: str) -> str | None:
        """The source `instrument_key`'s days are cross-checked against, if any (`PIPELINE_SOURCES`)."""
        pair = self.sources.get(instrument_key)
        return pair.reference if pair else None

    @property
    def reference_sources(self) -> set[str]:
        return {pair.reference for pair in self.sources.values() if pair.reference}

    @cached_property
    def universe(self) -> tuple[Instrument, ...]:
        """The configured instruments with their tick and lot sizes."""
        result = []
        for item in self.instruments:
            exchange, _, symbol = item.partition(":")
            spec = self.instrument_specs.get(item, self.default_instrument)
            result.append(Instrument(exchange=exchange, symbol=symbol, spec=spec))
        return tuple(result)

    @field_validator("lake_url")
    @classmethod
    def _check_lake_url(cls, value: str | None) -> str | None:
        if value:
            lake_root(value, Path())  # RemoteLakeError (a ValueError) names the expected form
        return value or None

    @property
    def lake_dir(self) -> Path:
        """$PIPELINE_DATA_DIR/lake, or the remote lake (a `upath.UPath`, same path API) of PIPELINE_LAKE_URL."""
        return lake_root(self.lake_url, self.data_dir / "lake")  # type: ignore[return-value]

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @field_validator("catalog_url")
    @classmethod
    def _check_catalog_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        parse_catalog_url(value.get_secret_value())  # CatalogUrlError (a ValueError) names the form, not the value
        return value

    @property
    def warehouse(self) -> WarehouseTarget:
        """The warehouse: the file warehouse_path, or the DuckLake of PIPELINE_CATALOG_URL."""
        catalog_url = self.catalog_url.get_secret_value() if self.catalog_url else None
        return WarehouseTarget.build(self.data_dir, catalog_url, self.lake_dir)

    @property
    def shared_dir(self) -> Path:
        """What readers and later runs need besides the lake's tables (`reports/`) lives under this: the
        data dir, or with a remote lake the lake root (a run's data dir may be its own scratch then)."""
        return self.lake_dir if self.lake_url else self.data_dir.resolve()

    @model_validator(mode="after")
    def _check_scratch_per_run(self) -> PipelineSettings:
        if self.scratch_per_run and not (self.lake_url and self.catalog_url):
            # A local lake or warehouse file under a run's own data dir would be lost to every other run.
            raise ValueError("PIPELINE_SCRATCH_PER_RUN=true needs PIPELINE_LAKE_URL and PIPELINE_CATALOG_URL")
        return self

    def run_scratch(self, run_id: str) -> PipelineSettings:
        """The settings a step of run `run_id` works with: with PIPELINE_SCRATCH_PER_RUN its data dir is
        `<data_dir>/runs/<run_id>/` (vendor caches, uploads, spills, audit and metrics files), else these."""
        if not self.scratch_per_run:
            return self
        return self.model_copy(update={"data_dir": self.data_dir / "runs" / run_id})


class SettingsView:
    """The settings with some attributes replaced, read duck-typed by the vendors and the importer:
    the instruments one vendor serves (its problems), or another lake (a reference source's area)."""

    def __init__(self, settings: PipelineSettings, **replaced: object) -> None:
        self._settings = settings
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> object:
        return getattr(self._settings, name)


class ProfiledYamlSource(YamlConfigSettingsSource):
    """The YAML config file with the block `profiles.<profile>` deep-merged over the rest.

    The profile is `chosen` (from a source above this one), else the file's own `env` key, else
    `dev`. Mappings merge key by key; any other value (a list, a scalar, null) replaces the base's.
    """

    def __init__(self, settings_cls: type[BaseSettings], yaml_file: Path, chosen: object) -> None:
        self.chosen = chosen
        super().__init__(settings_cls, yaml_file=yaml_file)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        data = dict(super()._read_file(file_path))
        profiles = data.pop("profiles", None) or {}
        where = f"{file_path} (PIPELINE_CONFIG_FILE)"
        if not isinstance(profiles, dict):
            raise SettingsError([f"{where}: `profiles` must map profile names to settings"])
        unknown = sorted(str(name) for name in profiles if name not in PROFILES)
        if unknown:
            raise SettingsError([f"{where}: unknown profile(s) {', '.join(unknown)} under `profiles` ({_KNOWN})"])
        name = self.chosen if self.chosen is not None else data.get("env", DEFAULT_PROFILE)
        if name not in PROFILES:
            raise SettingsError([f"{PROFILE_ENV}: unknown profile {name!r} ({_KNOWN})"])
        overlay = profiles.get(name) or {}
        if not isinstance(overlay, dict) or "env" in overlay:
            raise SettingsError([f"{where}: profiles.{name} must be a mapping of settings (without `env`)"])
        return _deep_merge(data, overlay)


_KNOWN = "known: " + ", ".join(PROFILES)


def _deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class SettingsError(ConfigurationError):
    """Invalid configuration; `problems` names each bad setting by its environment variable."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


def _env_name(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    if not parts:
        return "configuration"
    head, *rest = parts
    return "PIPELINE_" + "__".join([head.upper(), *[p.upper() for p in rest]])


def _describe_source_error(exc: Exception) -> str:
    text = str(exc)
    start = text.find('field "')
    if start >= 0:
        field_name = text[start + 7 : text.find('"', start + 7)]
        return f"{_env_name((field_name,))}: cannot parse the value ({text})"
    return f"configuration: {text}"


ENV_PREFIX = "PIPELINE_"
# PIPELINE_* variables read outside the settings model.
OTHER_VARIABLES = frozenset({CONFIG_FILE_ENV, NEW_MASTER_KEY_ENV})


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings group a field holds (through `X | None` and `Annotated`), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) is dict:
        return None
    return next((m for m in map(_model_of, typing.get_args(annotation)) if m is not None), None)


def variable_names(model: type[BaseModel] = None, prefix: str = ENV_PREFIX) -> tuple[set[str], set[str]]:
    """(every environment name of a setting, prefixes under which any name is one: dict settings)."""
    names, open_prefixes = set(), set()
    for field, info in (model or PipelineSettings).model_fields.items():
        name = prefix + field.upper()
        names.add(name)
        group = _model_of(info.annotation)
        if group is not None:
            inner, inner_open = variable_names(group, name + "__")
            names |= inner
            open_prefixes |= inner_open
        elif typing.get_origin(info.annotation) is dict and NoDecode not in info.metadata:
            open_prefixes.add(name + "__")  # a NoDecode dict is one JSON value: no nested names
    return names, open_prefixes


def unknown_variables(names: typing.Iterable[str]) -> list[str]:
    """A problem for every PIPELINE_* name that no setting reads, with the closest known name.

    pydantic-settings ignores such names, so a misspelled or removed setting (the flat
    PIPELINE_S3_BUCKET for PIPELINE_S3__BUCKET) would silently leave its default in force.
    """
    known, open_prefixes = variable_names()
    known |= OTHER_VARIABLES
    problems = []
    for name in sorted({n.upper() for n in names if n.upper().startswith(ENV_PREFIX)}):
        if name in known or any(name.startswith(p) for p in open_prefixes):
            continue
        closest = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f"; did you mean {closest[0]}?" if closest else ""
        problems.append(f"{name}: no such setting, it would be ignored{hint} (docs/configuration.md lists them)")
    return problems


def _dotenv_names(path: Path = Path(".env")) -> list[str]:
    from dotenv import dotenv_values  # python-dotenv: what pydantic-settings reads .env with

    return list(dotenv_values(path)) if path.is_file() else []


def load_settings(**overrides: object) -> PipelineSettings:
    """Load and validate settings; raises SettingsError naming every bad setting, and every
    PIPELINE_* variable (environment or `.env`) that is not one."""
    unknown = unknown_variables([*os.environ, *_dotenv_names()])
    try:
        settings = PipelineSettings(**overrides)
    except SourceParseError as exc:
        # pydantic-settings could not decode a value (e.g. malformed JSON in a nested variable).
        raise SettingsError([_describe_source_error(exc), *unknown]) from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            if not error["loc"] and error["type"] == "value_error":
                # A whole-settings check (a vendor's required setting): its message names the
                # variables itself, e.g. "PIPELINE_SOURCE=tardis needs PIPELINE_TARDIS_DIR".
                problems.extend(str(error["ctx"]["error"]).split("; "))
                continue
            name = _env_name(error["loc"])
            if error["type"] == "extra_forbidden" and any(p.startswith(f"{name}:") for p in unknown):
                continue  # a misspelled field of a group: named below, with the closest setting
            # Never echo the rejected value: it may be a secret.
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError(problems + unknown) from None
    if unknown:
        raise SettingsError(unknown)
    return settings
