"""The first start: `outbound-scim run` without its settings says what to set and how, reads .env, and
.env.example holds only real settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from service.errors import ConfigError
from service.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / ".env.example"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No OUTBOUND_SCIM_* variable from the caller's shell, and a working directory without .env."""
    for name in [n for n in os.environ if n.startswith("OUTBOUND_SCIM_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def run_with_empty_environment(cwd: Path) -> subprocess.CompletedProcess[str]:
    # nothing of the caller's environment but coverage's own variables, so the process is still measured
    env = {k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")}
    return subprocess.run(
        [sys.executable, "-m", "service", "run"], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_run_with_an_empty_environment_names_what_to_set_and_exits_2(tmp_path: Path) -> None:
    """Both required variables are named with how to make them; exit code 2; no traceback."""
    result = run_with_empty_environment(tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    message = result.stderr
    assert message.startswith("outbound-scim run: cannot start: 2 settings are missing or invalid.")
    assert "OUTBOUND_SCIM_TOKEN_KEY is missing" in message
    assert "make one with `outbound-scim gen-key`" in message
    assert "OUTBOUND_SCIM_ADMIN_TOKEN is missing" in message
    assert "any secret string" in message
    assert f"{tmp_path / '.env'} if it exists" in message
    assert "Traceback" not in message
    assert "ValidationError" not in message


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values come from ./.env; a variable set in the environment overrides the file."""
    key = Fernet.generate_key().decode()
    (tmp_path / ".env").write_text(
        f"# a comment\nOUTBOUND_SCIM_TOKEN_KEY={key}\nOUTBOUND_SCIM_ADMIN_TOKEN=from-file\nOUTBOUND_SCIM_API_PORT=9000\n"
    )
    monkeypatch.setenv("OUTBOUND_SCIM_API_PORT", "9100")
    settings = load_settings()
    assert settings.token_key.get_secret_value() == key
    assert settings.admin_token.get_secret_value() == "from-file"
    assert settings.api_port == 9100


def test_without_an_env_file_only_the_environment_counts(tmp_path: Path) -> None:
    """load_settings(env_file=None) ignores a .env in the working directory."""
    (tmp_path / ".env").write_text("OUTBOUND_SCIM_ADMIN_TOKEN=from-file\n")
    with pytest.raises(ConfigError, match="OUTBOUND_SCIM_ADMIN_TOKEN is missing"):
        load_settings(env_file=None)


def test_invalid_values_are_named_without_echoing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """A value that does not parse is named as its variable with the reason; the value is not printed."""
    monkeypatch.setenv("OUTBOUND_SCIM_TOKEN_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("OUTBOUND_SCIM_ADMIN_TOKEN", "secret-admin-token")
    monkeypatch.setenv("OUTBOUND_SCIM_API_PORT", "eighty")
    monkeypatch.setenv("OUTBOUND_SCIM_LOG_LEVEL", "LOUD")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert "2 settings are missing or invalid" in message
    assert "OUTBOUND_SCIM_API_PORT is invalid: Input should be a valid integer" in message
    assert "OUTBOUND_SCIM_LOG_LEVEL is invalid" in message
    assert "eighty" not in message
    assert "secret-admin-token" not in message


@pytest.mark.parametrize(
    ("token_key", "admin_token", "expected"),
    [
        ("not-a-fernet-key", "admin", "OUTBOUND_SCIM_TOKEN_KEY is invalid"),
        (" , ", "admin", "OUTBOUND_SCIM_TOKEN_KEY is empty"),
        ("VALID", "  ", "OUTBOUND_SCIM_ADMIN_TOKEN is empty"),
    ],
)
def test_unusable_secrets_are_refused(
    monkeypatch: pytest.MonkeyPatch, token_key: str, admin_token: str, expected: str
) -> None:
    """A token key that is not Fernet keys and an empty admin token are refused before anything starts."""
    monkeypatch.setenv("OUTBOUND_SCIM_TOKEN_KEY", Fernet.generate_key().decode() if token_key == "VALID" else token_key)
    monkeypatch.setenv("OUTBOUND_SCIM_ADMIN_TOKEN", admin_token)
    with pytest.raises(ConfigError, match=expected) as raised:
        load_settings()
    assert "not-a-fernet-key" not in str(raised.value)


def test_env_example_names_only_settings() -> None:
    """Every variable .env.example sets or shows (commented) is a setting."""
    names = re.findall(r"^#?\s*(OUTBOUND_SCIM_\w+)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE)
    fields = {f"OUTBOUND_SCIM_{name.upper()}" for name in Settings.model_fields}
    assert names
    assert set(names) <= fields, set(names) - fields
    required = {f"OUTBOUND_SCIM_{n.upper()}" for n, f in Settings.model_fields.items() if f.is_required()}
    assert required <= set(names)


def test_env_example_starts_once_its_secrets_are_filled(tmp_path: Path) -> None:
    """Copied as it is, it names the two secrets to fill in; filled in, it loads."""
    example = ENV_EXAMPLE.read_text()
    (tmp_path / ".env").write_text(example)
    (tmp_path / ".env.example").write_text(example)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert "OUTBOUND_SCIM_TOKEN_KEY is empty" in message
    assert "OUTBOUND_SCIM_ADMIN_TOKEN is empty" in message
    assert "cp .env.example .env" in message
    filled = example.replace(
        "OUTBOUND_SCIM_TOKEN_KEY=\n", f"OUTBOUND_SCIM_TOKEN_KEY={Fernet.generate_key().decode()}\n"
    )
    filled = filled.replace("OUTBOUND_SCIM_ADMIN_TOKEN=\n", "OUTBOUND_SCIM_ADMIN_TOKEN=local-admin\n")
    (tmp_path / ".env").write_text(filled)
    settings = load_settings()
    assert settings.api_host == "127.0.0.1"
    assert settings.allow_private_networks is True
