"""The deployment files agree with the code: .env.example, compose.yaml (+ compose.cpu.yaml), the Dockerfile.

Docker cannot run here, so these checks read the files:
* the settings the code reads (recorded while `EngineSettings.from_env` and `BotSettings.from_env` run) are exactly
  the names in .env.example, each with the code's default and a line of explanation, and nothing else in
  bot/ or nst_engine/ reads a variable by name;
* compose.yaml hands every setting to the service that reads it, keeps the engine unpublished on an internal
  network with a GPU reservation, has health checks (the same as the Dockerfile's) and waits for a healthy engine;
* the Dockerfile has a bot target without torch that installs what bot/ imports, an engine target that checks the
  weights and fetches the presets, non-root users, health checks, and no secrets.
"""
from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shlex
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bot.settings import BotSettings, SettingsError
from nst_engine.service.settings import EngineSettings

REPO = Path(__file__).resolve().parents[1]
CODE_PACKAGES = ("bot", "nst_engine")
# Settings compose.yaml fixes inside the containers (paths, listening address) instead of taking them from .env.
FIXED_IN_COMPOSE = {
    "engine": {"ENGINE_HOST", "ENGINE_PORT", "ENGINE_PRESETS_DIR"},
    "bot": {"BOT_DB_PATH", "BOT_HEALTH_FILE"},
}
# The only lines of .env.example that are not commented out: the two secrets the admin must fill in.
REQUIRED_SECRETS = {"DISCORD_TOKEN", "ENGINE_TOKEN"}
ENV_GROUPS = ("Discord", "Engine", "Limits", "Presets", "Logging")


# -- what the code reads ----------------------------------------------------------------------------------------


class _RecordingEnviron(Mapping[str, str]):
    """An environment that records every name looked up in it; iterating it (reading by pattern) is an error."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return self.values.get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return key in self.values

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("settings must read their variables by name, not by scanning the environment")

    def __len__(self) -> int:
        return len(self.values)


def engine_setting_names() -> set[str]:
    environ = _RecordingEnviron({})
    EngineSettings.from_env(environ)
    return environ.read


def bot_setting_names() -> set[str]:
    environ = _RecordingEnviron({"DISCORD_TOKEN": "x"})
    BotSettings.from_env(environ)
    return environ.read


def _bot_from(values: Mapping[str, str]) -> BotSettings:
    return BotSettings.from_env({"DISCORD_TOKEN": "token-for-the-test", **values})


# Modules that only give a library's own environment variable a default before the library loads.
ENVIRON_WRITERS = {"nst_engine/__init__.py"}  # OMP_WAIT_POLICY, before torch loads OpenMP


def test_settings_are_read_by_name_in_the_settings_modules_only() -> None:
    """Every other module gets its settings passed down; so the two from_env calls see every name read."""
    offenders = []
    for package in CODE_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if path.name == "settings.py" or str(path.relative_to(REPO)) in ENVIRON_WRITERS:
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if _reads_environ_by_name(node):
                    offenders.append(f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}")
    assert offenders == [], "environment variables read outside settings.py (add them to the settings class)"


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ")


def _reads_environ_by_name(node: ast.AST) -> bool:
    if isinstance(node, ast.Call):
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr == "getenv") or (
                isinstance(func, ast.Name) and func.id == "getenv"):
            return True
        if isinstance(func, ast.Attribute) and func.attr in ("get", "pop", "setdefault") and _is_environ(func.value):
            return True
    if isinstance(node, ast.Subscript) and _is_environ(node.value) and isinstance(node.ctx, ast.Load):
        return True
    return isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators)


# -- .env.example -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvLine:
    name: str
    value: str
    commented: bool
    comment_above: str


_ENV_SETTING = re.compile(r"^(# )?([A-Z][A-Z0-9_]*)=(.*)$")


def env_example() -> list[EnvLine]:
    lines = (REPO / ".env.example").read_text(encoding="utf-8").splitlines()
    found = []
    for i, line in enumerate(lines):
        match = _ENV_SETTING.match(line)
        if match:
            above = lines[i - 1] if i else ""
            found.append(EnvLine(match.group(2), match.group(3), match.group(1) is not None, above))
    return found


def test_env_example_names_exactly_the_settings_the_code_reads() -> None:
    names = [line.name for line in env_example()]
    assert len(names) == len(set(names)), "a setting is listed twice in .env.example"
    code = engine_setting_names() | bot_setting_names()
    assert sorted(code - set(names)) == [], "read by the code but missing from .env.example"
    assert sorted(set(names) - code) == [], "in .env.example but read by no code"


def test_env_example_shows_each_default_with_one_line_of_explanation() -> None:
    engine, bot = engine_setting_names(), bot_setting_names()
    default_bot = _bot_from({})
    for line in env_example():
        assert line.comment_above.startswith("# ") and not _ENV_SETTING.match(line.comment_above), (
            f"{line.name}: needs one comment line of explanation right above it")
        if line.name in REQUIRED_SECRETS:
            assert not line.commented and line.value == "", f"{line.name}: an empty, uncommented line to fill in"
            continue
        assert line.commented, f"{line.name}: optional settings are commented out, showing the default"
        if line.name in engine:
            assert EngineSettings.from_env({line.name: line.value}) == EngineSettings(), (
                f"{line.name}={line.value} is not the engine's default")
        if line.name in bot:
            assert _bot_from({line.name: line.value}) == default_bot, (
                f"{line.name}={line.value} is not the bot's default")


def test_env_example_is_grouped() -> None:
    headings = re.findall(r"^# =+ (.+?) =+$", (REPO / ".env.example").read_text(encoding="utf-8"), re.MULTILINE)
    for group in ENV_GROUPS:
        assert any(h.startswith(group) for h in headings), f"no '{group}' group in .env.example ({headings})"


def test_the_bot_reads_dot_env_the_same_way() -> None:
    """Without Docker the bot reads .env: a copy of .env.example gives the defaults and no settings error."""
    from bot.settings import read_env_file

    values = read_env_file(REPO / ".env.example")
    assert set(values) == REQUIRED_SECRETS and set(values.values()) == {""}
    with pytest.raises(SettingsError, match="DISCORD_TOKEN"):
        BotSettings.from_env(values)


# -- compose ------------------------------------------------------------------------------------------------


class _ComposeLoader(yaml.SafeLoader):
    """YAML as docker compose reads it, including its merge tags (`!reset`, `!override`)."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return {"!tag": node.tag, "value": loader.construct_mapping(node, deep=True)}
    if isinstance(node, yaml.SequenceNode):
        return {"!tag": node.tag, "value": loader.construct_sequence(node, deep=True)}
    return {"!tag": node.tag, "value": loader.construct_scalar(node)}  # type: ignore[arg-type]


_ComposeLoader.add_constructor("!reset", _tagged)
_ComposeLoader.add_constructor("!override", _tagged)


def compose(name: str = "compose.yaml") -> dict[str, Any]:
    data = yaml.load((REPO / name).read_text(encoding="utf-8"), Loader=_ComposeLoader)  # a SafeLoader
    assert isinstance(data, dict)
    return data


def _service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping, one setting per line"
    return {k: str(v) for k, v in env.items()}


_PASS_THROUGH = re.compile(r"^\$\{([A-Z][A-Z0-9_]*)(?::?-[^}]*)?\}$")


def test_compose_has_the_two_services_with_restart_policies() -> None:
    services = compose()["services"]
    assert set(services) == {"engine", "bot"}
    for name, service in services.items():
        assert re.fullmatch(r"always|unless-stopped|on-failure(:\d+)?", service.get("restart", "")), (
            f"{name}: no restart policy")
        assert service["build"]["target"] == name
    # A start-up mistake (bad token, intent off) exits non-zero: the bot must not restart in a loop for it.
    assert re.fullmatch(r"on-failure:\d+", services["bot"]["restart"])


def test_compose_hands_every_setting_to_the_service_that_reads_it() -> None:
    for name, expected in (("engine", engine_setting_names()), ("bot", bot_setting_names())):
        env = _environment(_service(name))
        assert sorted(expected - set(env)) == [], f"{name}: settings that compose.yaml does not pass"
        assert sorted(set(env) - expected) == [], f"{name}: variables the {name} does not read"
        for var, value in env.items():
            if var in FIXED_IN_COMPOSE[name]:
                assert "$" not in value, f"{name}: {var} is fixed inside the container"
            else:
                match = _PASS_THROUGH.match(value)
                assert match and match.group(1) == var, f"{name}: {var} should be passed as ${{{var}:-}}, not {value!r}"
    engine_env, bot_env = _environment(_service("engine")), _environment(_service("bot"))
    assert engine_env["ENGINE_TOKEN"] == bot_env["ENGINE_TOKEN"] == "${ENGINE_TOKEN:-}"
    # What the containers get with only the two tokens in .env is valid, and the bot's engine is this engine.
    tokens = {"ENGINE_TOKEN": "x" * 32, "DISCORD_TOKEN": "token-for-the-test"}
    engine = EngineSettings.from_env({k: _interpolate(v, tokens) for k, v in engine_env.items()})
    bot = BotSettings.from_env({k: _interpolate(v, tokens) for k, v in bot_env.items()})
    assert bot.engine_url == f"http://engine:{engine.port}"
    assert bot.engine_token == engine.token


def _interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's `${NAME:-default}` (and `${NAME}`) against `env`."""
    def one(match: re.Match[str]) -> str:
        return env.get(match.group(1)) or (match.group(2) or "")

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}", one, value)


def test_every_variable_compose_interpolates_is_in_env_example() -> None:
    documented = {line.name for line in env_example()}
    for name in ("compose.yaml", "compose.cpu.yaml", "compose.broker.yaml"):
        lines = (REPO / name).read_text(encoding="utf-8").splitlines()
        text = "\n".join(line for line in lines if not line.lstrip().startswith("#")).replace("$$", "")
        used = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))
        assert sorted(used - documented) == [], f"{name} uses variables that .env.example does not list"


def test_the_engine_is_not_published_and_reserves_the_gpu() -> None:
    data = compose()
    engine = data["services"]["engine"]
    assert "ports" not in engine and engine.get("network_mode") is None, "the engine must not be published"
    internal = {name for name, net in data["networks"].items() if (net or {}).get("internal") is True}
    assert engine["networks"] and set(engine["networks"]) <= internal, "the engine belongs on internal networks only"
    assert set(data["services"]["bot"]["networks"]) & internal, "the bot must share a network with the engine"
    devices = engine["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d.get("capabilities", []) and d.get("driver") == "nvidia" for d in devices)


def test_the_cpu_override_drops_the_gpu_reservation() -> None:
    engine = compose("compose.cpu.yaml")["services"]["engine"]
    assert engine["deploy"]["resources"]["reservations"]["devices"] == {"!tag": "!reset", "value": []}
    assert engine["environment"]["ENGINE_DEVICE"] == "cpu"


def test_the_broker_override_runs_workers_behind_an_authenticated_jetstream() -> None:
    data = compose("compose.broker.yaml")
    nats, engine, bot = data["services"]["nats"], data["services"]["engine"], data["services"]["bot"]
    command = " ".join(nats["command"])
    assert "--jetstream" in command and "--store_dir /data" in command and "--auth ${ENGINE_BROKER_TOKEN:?" in command
    assert any(v.endswith(":/data") and v.split(":")[0] in data["volumes"] for v in nats["volumes"])
    assert nats["healthcheck"]["test"][0] == "CMD" and "js-enabled-only" in " ".join(nats["healthcheck"]["test"])
    assert engine["command"] == ["python", "-m", "nst_engine", "work"]
    assert bot["depends_on"] == {"!tag": "!override", "value": {"nats": {"condition": "service_healthy"}}}
    # What the containers get, base file and override together, with only the tokens in .env, is valid.
    tokens = {"ENGINE_TOKEN": "x" * 32, "DISCORD_TOKEN": "token-for-the-test", "ENGINE_BROKER_TOKEN": "y" * 32}
    engine_env = {**_environment(_service("engine")), **engine["environment"]}
    bot_env = {**_environment(_service("bot")), **bot["environment"]}
    worker = EngineSettings.from_env({k: _interpolate(v, tokens) for k, v in engine_env.items()})
    settings = BotSettings.from_env({k: _interpolate(v, tokens) for k, v in bot_env.items()})
    assert worker.broker_url == settings.engine_broker_url == "nats://nats:4222"
    assert worker.broker_token == settings.engine_broker_token == "y" * 32
    assert settings.engine_url is None and not settings.embedded_engine


def test_the_bot_waits_for_a_healthy_engine() -> None:
    assert _service("bot")["depends_on"]["engine"]["condition"] == "service_healthy"


def test_volumes_hold_the_presets_and_the_bots_database() -> None:
    data = compose()
    for service, path in (("engine", _environment(_service("engine"))["ENGINE_PRESETS_DIR"]),
                          ("bot", str(PurePosixPath(_environment(_service("bot"))["BOT_DB_PATH"]).parent))):
        mounts = dict(reversed(v.split(":")[:2]) for v in data["services"][service]["volumes"])
        assert path in mounts, f"{service}: nothing mounted at {path}"
        assert mounts[path] in data["volumes"], f"{service}: {path} should be a named volume"


def test_compose_health_checks_are_the_dockerfiles() -> None:
    dockerfile = Dockerfile.read()
    for name, probe in (("engine", "/readyz"), ("bot", "BOT_HEALTH_FILE")):
        test = _service(name)["healthcheck"]["test"]
        assert test == dockerfile.healthcheck(name), f"{name}: compose.yaml and the Dockerfile check differently"
        assert test[0] == "CMD" and probe in " ".join(test)
    assert "BOT_HEALTH_FILE" in bot_setting_names(), "the bot's health check reads a file the bot must keep fresh"


def test_fixed_values_match_the_images() -> None:
    dockerfile = Dockerfile.read()
    for name, fixed in FIXED_IN_COMPOSE.items():
        env = _environment(_service(name))
        image_env = dockerfile.env(name)
        for var in fixed:
            assert image_env.get(var) == env[var], f"{name}: {var} differs between the Dockerfile and compose.yaml"


# -- Dockerfile ---------------------------------------------------------------------------------------------


@dataclass
class Dockerfile:
    stages: dict[str, tuple[str, list[tuple[str, str]]]]
    """stage name -> (base, [(INSTRUCTION, arguments)])"""

    @classmethod
    def read(cls) -> Dockerfile:
        text = (REPO / "Dockerfile").read_text(encoding="utf-8")
        logical: list[str] = []
        buffer = ""
        for raw in text.splitlines():
            if raw.lstrip().startswith("#"):
                continue
            if raw.rstrip().endswith("\\"):
                buffer += raw.rstrip()[:-1] + " "
                continue
            line = (buffer + raw).strip()
            buffer = ""
            if line:
                logical.append(line)
        stages: dict[str, tuple[str, list[tuple[str, str]]]] = {}
        current: list[tuple[str, str]] | None = None
        for line in logical:
            keyword, _, args = line.partition(" ")
            keyword = keyword.upper()
            if keyword == "FROM":
                match = re.fullmatch(r"(?:--\S+\s+)*(\S+)\s+AS\s+(\S+)", args.strip(), re.IGNORECASE)
                assert match, f"every stage is named: {line}"
                current = []
                stages[match.group(2)] = (match.group(1), current)
            elif current is not None:
                current.append((keyword, args.strip()))
        return cls(stages)

    def chain(self, target: str) -> list[tuple[str, str]]:
        """The instructions that make up `target`, its parent stages first."""
        base, own = self.stages[target]
        return (self.chain(base) if base in self.stages else []) + own

    def own(self, target: str) -> list[tuple[str, str]]:
        return self.stages[target][1]

    def healthcheck(self, target: str) -> list[str]:
        checks = [args for kw, args in self.chain(target) if kw == "HEALTHCHECK"]
        assert checks, f"{target}: no HEALTHCHECK"
        match = re.search(r"\bCMD\s+(\[.*\])\s*$", checks[-1])
        assert match, f"{target}: HEALTHCHECK CMD in exec form"
        return ["CMD", *json.loads(match.group(1))]

    def env(self, target: str) -> dict[str, str]:
        values: dict[str, str] = {}
        for kw, args in self.chain(target):
            if kw == "ENV":
                for pair in shlex.split(args):
                    key, _, value = pair.partition("=")
                    values[key] = value
        return values


def test_dockerfile_targets_run_as_non_root_with_health_checks() -> None:
    dockerfile = Dockerfile.read()
    for target, entry in (("bot", "bot"), ("engine", "nst_engine")):
        chain = dockerfile.chain(target)
        users = [args for kw, args in chain if kw == "USER"]
        assert users, f"{target}: no USER"
        assert users[-1].split(":")[0] not in ("root", "0"), f"{target}: runs as root"
        assert any(kw == "HEALTHCHECK" for kw, _ in dockerfile.own(target)), f"{target}: no HEALTHCHECK"
        cmd = [args for kw, args in chain if kw == "CMD"]
        assert cmd and json.loads(cmd[-1])[:3] == ["python", "-m", entry]


def test_dockerfile_has_no_secrets() -> None:
    dockerfile = Dockerfile.read()
    secret = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|PRIVATE_KEY", re.IGNORECASE)
    for name, (_, instructions) in dockerfile.stages.items():
        for kw, args in instructions:
            if kw in ("ENV", "ARG", "LABEL"):
                assert not secret.search(args), f"stage {name}: a secret-looking {kw}: {args}"
            if kw in ("COPY", "ADD"):
                assert ".env" not in args.split() and not args.startswith(". "), f"stage {name}: copies {args}"
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if p.strip() and not p.startswith("#")]
    assert patterns[0] == "*", ".dockerignore starts from nothing and lists what the build needs"
    assert "**/.env" in patterns and not any(p.startswith("!") and ".env" in p for p in patterns)


def _pinned_dependencies() -> dict[str, Requirement]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    reqs = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    return {canonicalize_name(r.name): r for r in reqs}


def _with_dependencies(names: set[str]) -> set[str]:
    """`names` and everything they require (from the installed metadata), for this Python, without extras."""
    environment = {"python_version": f"{sys.version_info.major}.{sys.version_info.minor}", "extra": ""}
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for raw in importlib.metadata.requires(name) or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate(environment):
                todo.append(req.name)
    return seen


def _bot_image_packages(dockerfile: Dockerfile) -> set[str]:
    installs = [args for kw, args in dockerfile.chain("bot") if kw == "RUN" and "pip install" in args]
    assert len(installs) == 1, "the bot image installs its packages in one pip install"
    words = shlex.split(installs[0].split("pip install", 1)[1])
    assert "--constraint" in words, "the bot's packages are pinned by pyproject.toml (a constraints file)"
    packages = {canonicalize_name(w) for i, w in enumerate(words)
                if not w.startswith("-") and words[i - 1] != "--constraint"}
    pinned = _pinned_dependencies()
    for name in packages:
        assert name in pinned and str(pinned[name].specifier).startswith("=="), f"{name} is not pinned in pyproject"
    return packages


def test_the_bot_image_has_what_bot_imports_and_no_torch() -> None:
    dockerfile = Dockerfile.read()
    chain_text = " ".join(args for _, args in dockerfile.chain("bot"))
    assert "torch" not in chain_text and "nst_engine" not in chain_text
    available = _with_dependencies(_bot_image_packages(dockerfile))
    assert "torch" not in available
    modules_to_dists = importlib.metadata.packages_distributions()
    missing = set()
    for path in (REPO / "bot").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module.split(".")[0]]
            else:
                continue
            for module in modules:
                if module in sys.stdlib_module_names or module == "bot":
                    continue
                dists = {canonicalize_name(d) for d in modules_to_dists.get(module, [module])}
                if not dists & available:
                    missing.add(f"{module} ({path.relative_to(REPO)})")
    assert sorted(missing) == [], "bot/ imports modules that the slim bot image does not install"


def test_the_engine_image_checks_its_weights_and_fetches_the_presets() -> None:
    runs = [args for kw, args in Dockerfile.read().chain("engine") if kw == "RUN"]
    assert any("load_caffe_weights" in r for r in runs), "the build should prove the VGG19 weights load"
    assert any("nst_engine fetch-presets" in r and "presets/manifest.json" in r for r in runs)
    copies = [args for kw, args in Dockerfile.read().chain("engine") if kw == "COPY"]
    assert any(c.split()[0] == "presets/" for c in copies), "the manifest (and local preset files) come from presets/"
    args = [a for kw, a in Dockerfile.read().chain("engine") if kw == "ARG"]
    assert "PRESETS=download" in args, "downloading stays the default; context and none are for offline builds"
    assert any('"$PRESETS"' in r and "context)" in r and "none)" in r for r in runs)


def test_the_gpu_stack_asks_for_the_gpu_and_the_cpu_stack_for_the_cpu() -> None:
    """`auto` would fall back to the CPU without a word; the GPU stack must fail at start instead."""
    engine_env = _environment(_service("engine"))
    assert _interpolate(engine_env["ENGINE_DEVICE"], {}) == "cuda", "compose.yaml: ENGINE_DEVICE defaults to cuda"
    assert _interpolate(engine_env["ENGINE_DEVICE"], {"ENGINE_DEVICE": "cuda:1"}) == "cuda:1"
    assert Dockerfile.read().env("engine")["ENGINE_DEVICE"] == "cuda", "a plain `docker run --gpus all` too"
    assert compose("compose.cpu.yaml")["services"]["engine"]["environment"]["ENGINE_DEVICE"] == "cpu"


def test_the_engine_image_grows_its_allocator_in_place() -> None:
    conf = Dockerfile.read().env("engine").get("PYTORCH_ALLOC_CONF", "")
    assert "expandable_segments:True" in conf.split(","), "every job has a new size: expandable segments"


def test_the_engine_image_carries_what_torch_compile_builds_with() -> None:
    """ENGINE_COMPILE=true: triton compiles a C launcher against Python.h at first use; inductor on the CPU, C++."""
    chain = Dockerfile.read().chain("engine")
    runs = [args for kw, args in chain if kw == "RUN"]
    installs = [r for r in runs if "apt-get install" in r]
    assert installs and re.search(r"\bg\+\+", installs[0]), "the engine image needs gcc/g++"
    assert any("Python.h" in r and "gcc" in r and "-shared" in r for r in runs), (
        "the build should prove a C extension builds against Python's headers")
    heavy = next(i for i, (kw, args) in enumerate(chain) if kw == "RUN" and "--requirement" in args)
    assert chain.index(("RUN", installs[0])) < heavy, "the compiler layer goes before the big torch layer"


# -- the admin's guide ----------------------------------------------------------------------------------------


def test_the_self_hosting_guide_documents_every_setting() -> None:
    guide = (REPO / "docs" / "self-hosting.md").read_text(encoding="utf-8")
    missing = sorted(n for n in engine_setting_names() | bot_setting_names() if f"`{n}`" not in guide)
    assert missing == [], "settings missing from the configuration table in docs/self-hosting.md"
