"""Resolve a secret reference to database credentials.

Order: the environment (`PGKB_SECRET_<NAME>`, the RDS-credentials JSON), pgkb's local store, then
AWS Secrets Manager for ARNs (boto3; `PGKB_SECRETSMANAGER_ENDPOINT_URL` points it elsewhere, e.g.
moto). Values are cached per process; `refresh=True` re-reads them (a rotated password).
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

from pgkb import config
from pgkb.errors import DependencyFailedError, NotFoundError, ValidationError
from pgkb.secrets.credentials import DbCredentials, parse_secret_ref, secret_arn
from pgkb.secrets.store import LocalSecretStore

log = logging.getLogger(__name__)

ENV_PREFIX = "PGKB_SECRET_"
ENDPOINT_ENV = "PGKB_SECRETSMANAGER_ENDPOINT_URL"


def env_var_for(name: str) -> str:
    """`PGKB_SECRET_<NAME>`: the secret's name upper-cased, other characters as underscores."""
    return ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


class SecretResolver:
    """Thread-safe, cached resolution of secret references for one pgkb process."""

    def __init__(self, data_dir: Path | str, region: str, account: str) -> None:
        self.store = LocalSecretStore(data_dir)
        self.region = region
        self.account = account
        self._cache: dict[str, DbCredentials] = {}
        self._lock = threading.Lock()

    def canonical(self, ref: str) -> str:
        """An ARN for any reference: bare names are secrets in pgkb's own account."""
        name, region, _ = parse_secret_ref(ref)
        return ref if region else secret_arn(name, self.region, self.account)

    def resolve(self, ref: str, *, refresh: bool = False) -> DbCredentials:
        arn = self.canonical(ref)
        with self._lock:
            if not refresh and arn in self._cache:
                return self._cache[arn]
        creds = self._read(arn)
        with self._lock:
            self._cache[arn] = creds
        return creds

    def _read(self, arn: str) -> DbCredentials:
        name, region, account = parse_secret_ref(arn)
        env = config.env_value(env_var_for(name))
        if env:
            return DbCredentials.from_json(env, arn)
        local = self.store.get(name)
        if local is not None and account in (None, self.account):
            return DbCredentials.from_dict(local, arn)
        # pgkb's own placeholder account has no Secrets Manager behind it.
        if account == self.account and set(account) == {"0"} and not config.current().secretsmanager_endpoint_url:
            raise NotFoundError(
                f"secret {arn} not found: store it with `pgkb secrets put {name}` or set {env_var_for(name)}"
            )
        return DbCredentials.from_json(_secrets_manager_value(arn, region or self.region), arn)

    def put_local(self, name: str, creds: DbCredentials) -> str:
        """Store credentials in the local store; returns the secret's ARN."""
        parse_secret_ref(name)
        self.store.put(name, creds.to_dict())
        arn = secret_arn(name, self.region, self.account)
        with self._lock:
            self._cache.pop(arn, None)
        return arn


class _RedactSecretPayloads(logging.Filter):
    """botocore logs request params and response bodies at DEBUG: drop the ones carrying a secret value."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot be formatted says nothing useful either
            text = str(record.msg)
        if "SecretString" in text or "SecretBinary" in text:
            record.msg, record.args = "(Secrets Manager payload redacted by pgkb)", None
        return True


_redactor = _RedactSecretPayloads()


def _quiet_botocore() -> None:
    for name in ("botocore.endpoint", "botocore.parsers", "botocore.hooks", "botocore.auth"):
        lg = logging.getLogger(name)
        if _redactor not in lg.filters:
            lg.addFilter(_redactor)


def _secrets_manager_value(arn: str, region: str) -> str:
    import boto3
    import botocore.exceptions

    _quiet_botocore()
    kwargs: dict[str, Any] = {"region_name": region}
    if config.current().secretsmanager_endpoint_url:
        kwargs["endpoint_url"] = config.current().secretsmanager_endpoint_url
    try:
        client = boto3.client("secretsmanager", **kwargs)
        resp = client.get_secret_value(SecretId=arn)
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            raise NotFoundError(f"secret {arn} not found in Secrets Manager") from None
        if code in ("AccessDeniedException", "UnrecognizedClientException"):
            raise ValidationError(f"Secrets Manager refused access to {arn} ({code})") from None
        raise DependencyFailedError(f"Secrets Manager failed to return {arn} ({code or 'error'})") from None
    except botocore.exceptions.NoCredentialsError:
        raise DependencyFailedError(f"no AWS credentials to read {arn} from Secrets Manager") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise DependencyFailedError(f"Secrets Manager unreachable for {arn}: {type(exc).__name__}") from None
    value = resp.get("SecretString")
    if value is None:
        raise ValidationError(f"secret {arn} has no SecretString (binary secrets are not RDS credentials)")
    return str(value)


def put_secrets_manager(name: str, creds: DbCredentials, region: str) -> str:
    """Create (or update) secret `name` in AWS Secrets Manager with the RDS-credentials JSON; returns its ARN."""
    import json

    import boto3
    import botocore.exceptions

    parse_secret_ref(name)
    _quiet_botocore()
    kwargs: dict[str, Any] = {"region_name": region}
    if config.current().secretsmanager_endpoint_url:
        kwargs["endpoint_url"] = config.current().secretsmanager_endpoint_url
    value = json.dumps(creds.to_dict())
    try:
        client = boto3.client("secretsmanager", **kwargs)
        try:
            resp = client.create_secret(Name=name, SecretString=value, Description="pgkb: database credentials")
        except client.exceptions.ResourceExistsException:
            resp = client.put_secret_value(SecretId=name, SecretString=value)
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise DependencyFailedError(f"Secrets Manager refused to store secret {name} ({code})") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise DependencyFailedError(f"Secrets Manager unreachable to store secret {name}: {type(exc).__name__}") from None
    return str(resp["ARN"])
