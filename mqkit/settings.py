"""Settings from code or the environment (``MQKIT_URL``, ``MQKIT_OPTIONS``...)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from mqkit.url import redact_options, redact_url


class Settings(BaseSettings):
    """How to reach the broker. The URL is a secret: it never shows in a repr or a log."""

    model_config = SettingsConfigDict(env_prefix="MQKIT_", extra="ignore")

    url: SecretStr = Field(default=SecretStr("memory://"))
    options: dict[str, Any] = Field(default_factory=dict)
    """Transport options, merged over the URL's query options (JSON in MQKIT_OPTIONS)."""
    shutdown_timeout: float = 30.0
    """Seconds to let in-flight handlers finish on shutdown before giving up on them."""

    @field_validator("url", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    def __repr_args__(self) -> Any:
        # Options may hold secrets (sasl.password, token...): show them redacted.
        for name, value in super().__repr_args__():
            yield name, redact_options(value) if name == "options" else value

    @property
    def safe_url(self) -> str:
        return redact_url(self.url.get_secret_value())
