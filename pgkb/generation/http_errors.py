"""How a failing model endpoint is reported: the cause, the resource, and which Bedrock exception.

A server-side problem (unreachable, timed out, 5xx) is a BadGatewayException (502, retry later); a
problem the configuration has to fix (4xx, auth, a response that is not what the API promises) is a
DependencyFailedException (424). Both carry `resourceName`, which the server puts on the wire.
"""

from __future__ import annotations

from pgkb.errors import BadGatewayError, DependencyFailedError


def bad_gateway(resource: str, cause: str) -> BadGatewayError:
    err = BadGatewayError(f"The model endpoint {resource} failed: {cause}")
    err.resourceName = resource  # type: ignore[attr-defined]
    return err


def dependency_failed(resource: str, cause: str) -> DependencyFailedError:
    err = DependencyFailedError(f"The model endpoint {resource} failed: {cause}")
    err.resourceName = resource  # type: ignore[attr-defined]
    return err
