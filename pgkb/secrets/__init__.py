"""Credentials for the databases knowledge bases live in: env, pgkb's local store, Secrets Manager."""

from pgkb.secrets.credentials import DbCredentials, parse_secret_ref, secret_arn
from pgkb.secrets.resolve import SecretResolver, env_var_for
from pgkb.secrets.store import LocalSecretStore

__all__ = ["DbCredentials", "LocalSecretStore", "SecretResolver", "env_var_for", "parse_secret_ref", "secret_arn"]
