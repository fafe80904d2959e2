"""The configuration sections about where a run reports to (MLflow tracking, failure alerts), not what it makes.

They change no step's output: no step's cache key or recorded configuration holds them (without_reporting).
The webhook URL may carry a secret (a Slack or Teams token in its path): it is never dumped, so a manifest,
a Prefect parameter, a log or MLflow's params show only that one is set.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field, SecretStr, field_serializer, field_validator

from tasks.config_section import Section

REPORTING_SECTIONS = ("track", "notify")
WEBHOOK_ENV = "RNNFLOW_NOTIFY_WEBHOOK"
REDACTED = "(set, not recorded)"  # what a dump shows for notify.webhook


class TrackConfig(Section):
    mlflow_uri: str | None = Field(
        default=None,
        description="MLflow server each run is logged to, model and champion alias included (the mlflow extra); "
        "null: MLFLOW_TRACKING_URI, else none",
    )
    experiment: str = Field(default="rnnflow", min_length=1, description="the MLflow experiment runs are logged in")

    def uri(self) -> str | None:
        return self.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


class NotifyConfig(Section):
    webhook: SecretStr | None = Field(
        default=None,
        description=f"URL a failed or crashed run POSTs a JSON alert to (or {WEBHOOK_ENV}); never recorded",
    )
    block: str | None = Field(
        default=None, min_length=1,
        description="a Prefect notification block ('slack-webhook/ops', type/name) a failed or crashed run notifies",
    )

    @field_validator("webhook", mode="before")
    @classmethod
    def _recorded_means_unset(cls, value: Any) -> Any:
        # A recorded configuration (a manifest) holds REDACTED: the URL itself comes from the environment then.
        return None if value in (REDACTED, "") else value

    @field_validator("webhook")
    @classmethod
    def _a_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("should be an http:// or https:// URL")  # the value itself stays out of the message
        return value

    @field_serializer("webhook")
    def _redact(self, value: SecretStr | None) -> str | None:
        return None if value is None else REDACTED

    def webhook_url(self) -> str | None:
        return self.webhook.get_secret_value() if self.webhook is not None else os.environ.get(WEBHOOK_ENV) or None


def without_reporting(config: dict[str, Any]) -> dict[str, Any]:
    """A whole configuration (as_dict) without the reporting sections: what a step that reads it all is made with."""
    return {name: value for name, value in config.items() if name not in REPORTING_SECTIONS}
