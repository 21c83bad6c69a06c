"""The production stack, docker-compose.yml: what it gives steward is what the settings
know and accept, steward's URLs name the stack's own services, images are pinned, and
secrets come from `.env`. (No Docker here: the file is read, not run.)"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices

from bot.settings import Settings, load_settings
from memory.database_url import DatabaseURL
from memory.longterm.weaviate import WeaviateAddress

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"

# Compose interpolation: $$ is a literal $; ${NAME}, ${NAME:-default}, ${NAME-default},
# ${NAME:?error}, ${NAME?error} and $NAME take the value from .env or the shell.
VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")
# What the operator puts in .env for a variable without a default: fits in a URL's
# password and is a valid Weaviate key.
SECRET = "0123456789abcdef"

# Settings the stack leaves to steward's defaults on purpose.
LEFT_OUT = {
    "STEWARD_PROCESSES_DIR": "processes/ in the steward-data volume",
    "STEWARD_HOOKS_FILE": "hooks.yaml in the steward-data volume",
    "STEWARD_WEAVIATE_VECTORIZER": "the stack's Weaviate has no vectorizer module",
}


def interpolate(raw: str) -> str:
    """The value Compose gives when no variable is set, except that required ones (no
    default) hold SECRET, as they do once the operator has filled in .env."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("op") in ("-", ":-"):
            return match.group("arg")
        return SECRET

    return VARIABLE.sub(one, raw)


def variables(raw: str | None) -> set[str]:
    found = VARIABLE.finditer(raw or "")
    return {m.group("name") or m.group("bare") for m in found if m.group(0) != "$$"}


def environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    """A service's environment; None for a name without a value (passed through from
    .env or the shell when set there, unset in the container otherwise)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {k: v if sep else None for k, sep, v in (item.partition("=") for item in env)}
    return {k: None if v is None else str(v) for k, v in env.items()}


def setting_names() -> set[str]:
    names: set[str] = set()
    for field in Settings.model_fields.values():
        assert isinstance(field.validation_alias, AliasChoices)
        names.update(str(choice) for choice in field.validation_alias.choices)
    return names


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(parsed, dict)
    return parsed


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


@pytest.fixture(scope="module")
def steward_env(services: dict[str, Any]) -> dict[str, str | None]:
    return environment(services["steward"])


def test_steward_is_built_from_this_repository_and_runs_the_product(
    services: dict[str, Any],
) -> None:
    steward = services["steward"]
    build = steward["build"]
    assert (build if isinstance(build, str) else build["context"]) == "."
    assert steward["command"] in ("run", ["run"])


def test_every_variable_set_on_steward_is_a_setting(steward_env: dict[str, str | None]) -> None:
    unknown = set(steward_env) - setting_names()
    assert not unknown, f"steward reads none of {sorted(unknown)}"


def test_every_setting_reaches_steward_or_is_left_out_on_purpose(
    steward_env: dict[str, str | None],
) -> None:
    assert set(LEFT_OUT) <= setting_names() - set(steward_env)
    missing = setting_names() - set(steward_env) - set(LEFT_OUT)
    assert not missing, (
        f"docker-compose.yml does not pass {sorted(missing)} to steward: list each under "
        "steward's environment (without a value to take it from .env), or in LEFT_OUT here"
    )


def test_the_values_the_stack_gives_steward_are_valid(
    steward_env: dict[str, str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, raw in steward_env.items():
        if raw is None:  # not in .env: unset in the container too
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, interpolate(raw))
    settings = load_settings()
    assert settings.home == Path("/data")
    assert not settings.database.is_sqlite
    assert settings.redis_url and settings.weaviate_url and settings.weaviate_api_key
    assert (settings.http_host, settings.http_port) == ("0.0.0.0", 8080)
    assert settings.telegram_api_url == "https://api.telegram.org"  # defaults still apply


def test_steward_reaches_the_stacks_own_services(
    services: dict[str, Any], steward_env: dict[str, str | None]
) -> None:
    def setting(name: str) -> str:
        raw = steward_env[name]
        assert raw is not None, f"{name} is wired by the stack, not passed through"
        return interpolate(raw)

    database = DatabaseURL.parse(setting("STEWARD_DATABASE_URL")).url
    postgres = environment(services["postgres"])
    assert (database.host, database.port or 5432) == ("postgres", 5432)
    assert database.username == postgres["POSTGRES_USER"]
    assert database.database == postgres["POSTGRES_DB"]
    password_from = variables(postgres["POSTGRES_PASSWORD"])
    assert variables(steward_env["STEWARD_DATABASE_URL"]) == password_from

    redis = urlsplit(setting("STEWARD_REDIS_URL"))
    assert (redis.scheme, redis.hostname, redis.port or 6379) == ("redis", "redis", 6379)

    address = WeaviateAddress.parse(setting("STEWARD_WEAVIATE_URL"))
    assert (address.host, address.grpc_host, address.secure) == ("weaviate", "weaviate", False)
    exposed = {str(port) for port in services["weaviate"]["expose"]}
    assert {str(address.port), str(address.grpc_port)} <= exposed

    weaviate = environment(services["weaviate"])
    assert weaviate["AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED"] == "false"
    assert weaviate["AUTHENTICATION_APIKEY_ENABLED"] == "true"
    key = variables(steward_env["STEWARD_WEAVIATE_API_KEY"])
    assert key == variables(weaviate["AUTHENTICATION_APIKEY_ALLOWED_KEYS"])


def test_secrets_come_from_dot_env(
    services: dict[str, Any], steward_env: dict[str, str | None]
) -> None:
    secrets = [
        steward_env["STEWARD_WEAVIATE_API_KEY"],
        environment(services["postgres"])["POSTGRES_PASSWORD"],
        environment(services["weaviate"])["AUTHENTICATION_APIKEY_ALLOWED_KEYS"],
    ]
    for raw in secrets:
        assert raw is not None and interpolate(raw) == SECRET, f"{raw!r} is not one variable"


def test_images_are_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if "image" not in service:
            assert "build" in service, f"{name} has neither an image nor a build"
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag and "$" not in image, f"{name}: {image} has no tag"
        assert tag != "latest" and not tag.startswith("latest-"), f"{name}: {image} floats"


def test_weaviate_is_pinned_to_a_release_with_rbac(services: dict[str, Any]) -> None:
    tag = services["weaviate"]["image"].rpartition(":")[2]
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"Weaviate {tag} is not an x.y.z release"
    assert tuple(int(part) for part in tag.split(".")) >= (1, 29, 0), "RBAC needs 1.29"


def test_steward_starts_once_what_it_needs_is_healthy(services: dict[str, Any]) -> None:
    depends = services["steward"]["depends_on"]
    assert set(depends) == {"postgres", "redis", "weaviate"}
    for name, condition in depends.items():
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
        assert condition == {"condition": "service_healthy"}, name


def test_state_lives_in_named_volumes(
    compose: dict[str, Any], services: dict[str, Any], steward_env: dict[str, str | None]
) -> None:
    declared = set(compose["volumes"])

    def mounts(name: str) -> dict[str, str]:
        pairs = (str(v).split(":")[:2] for v in services[name]["volumes"])
        return {target: source for source, target in pairs}

    homes = {
        "steward": steward_env["STEWARD_HOME"],
        "postgres": "/var/lib/postgresql/data",
        "redis": "/data",
        "weaviate": environment(services["weaviate"])["PERSISTENCE_DATA_PATH"],
    }
    for name, path in homes.items():
        assert path in mounts(name), f"{name} keeps {path} in its container"
        assert mounts(name)[path] in declared, f"{name}'s {path} is not a named volume"
    assert "--appendonly" in services["redis"]["command"]


def test_the_readmes_docker_runs_have_something_to_serve() -> None:
    """Its PostgreSQL example had no channel and no terminal: steward said it had nothing
    to serve and exited 2."""
    readme = (COMPOSE.parent / "README.md").read_text()
    commands = re.findall(r"^docker run (?:.*\\\n)*.*$", readme, flags=re.MULTILINE)
    assert commands
    for command in commands:
        channel = "TELEGRAM_BOT_TOKEN" in command or "SLACK_BOT_TOKEN" in command
        assert channel or " -it " in command, command
