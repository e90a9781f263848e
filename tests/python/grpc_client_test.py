"""Check the rtim gRPC API from a Python client built on grpcio.

The script compiles the repository's ``proto/`` files into Python stubs in a
temporary directory. It then calls running decisioning and ingestion services
the way a third-party client would: health checks, server reflection, an
authenticated ``Decide`` call, and two rejected calls whose error details are
read back with grpcio-status.

Requirements: the packages pinned in ``.ci/requirements.txt``. ``.ci/run``
installs them into a virtualenv and exports its interpreter as
``RTIM_PYTHON``.

Environment:

- ``RTIM_GRPC_DECISIONING``: ``host:port`` of the decisioning service.
- ``RTIM_GRPC_INGESTION``: ``host:port`` of the ingestion service.
- ``RTIM_API_KEY``: an API key whose tenant may call ``Decide``.
- ``RTIM_SHOPPER_ID``: the ``user_id`` of a shopper that exists in that tenant.

Usage::

    RTIM_GRPC_DECISIONING=127.0.0.1:50053 RTIM_GRPC_INGESTION=127.0.0.1:50051 \\
    RTIM_API_KEY=test-key RTIM_SHOPPER_ID=u-1 \\
        "$RTIM_PYTHON" tests/python/grpc_client_test.py

The script prints one line per check and closes with ``N passed, M failed``.
It exits 0 when every check passed, 1 when a check failed and 2 when the
environment is incomplete or the stubs cannot be generated.
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parents[2] / "proto"
DECISIONING_SERVICE = "rtim.decisioning.v1.DecisioningService"
HEALTH_SERVICE = "grpc.health.v1.Health"
# Deadline of each RPC. Calls also wait for the channel to connect within this
# time, so a server that is still starting does not fail the first check.
RPC_TIMEOUT_SECONDS = 10.0
REQUIRED_ENV = ("RTIM_GRPC_DECISIONING", "RTIM_GRPC_INGESTION", "RTIM_API_KEY", "RTIM_SHOPPER_ID")


class UsageError(Exception):
    """A problem with the environment or the protos, not with the server."""


def generate_stubs(proto_root: Path, output_dir: Path) -> None:
    """Compile every ``rtim/**/*.proto`` file under ``proto_root`` into ``output_dir``.

    Imports such as ``google/protobuf/struct.proto`` resolve against the
    well-known types that grpcio-tools ships in ``grpc_tools/_proto``.
    """
    proto_files = sorted(str(path) for path in (proto_root / "rtim").rglob("*.proto"))
    if not proto_files:
        raise UsageError(f"no .proto files found under {proto_root / 'rtim'}")

    well_known_types = importlib.resources.files("grpc_tools") / "_proto"
    arguments = [
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--proto_path={well_known_types}",
        f"--python_out={output_dir}",
        f"--grpc_python_out={output_dir}",
        *proto_files,
    ]
    exit_code = protoc.main(arguments)
    if exit_code != 0:
        raise UsageError(f"grpc_tools.protoc failed with exit code {exit_code} on {proto_root}")


def import_stubs(output_dir: Path) -> tuple:
    """Import the generated decisioning modules from ``output_dir``.

    The generated folders have no ``__init__.py``, so ``rtim`` loads as a
    namespace package.
    """
    sys.path.insert(0, str(output_dir))
    messages = importlib.import_module("rtim.decisioning.v1.decisioning_pb2")
    services = importlib.import_module("rtim.decisioning.v1.decisioning_pb2_grpc")
    return messages, services


def read_environment() -> dict[str, str]:
    """Return the required variables, or raise ``UsageError`` naming the missing ones."""
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        names = ", ".join(missing)
        raise UsageError(f"missing environment variables: {names}. Set them as the module docstring describes.")
    return {name: os.environ[name] for name in REQUIRED_ENV}


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def expect_rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    """Run ``call`` and return the ``grpc.RpcError`` it raises, or raise AssertionError if it succeeds."""
    try:
        response = call()
    except grpc.RpcError as error:
        return error
    raise AssertionError(f"expected an RPC error, got a response: {response!r}")


def list_services(channel: grpc.Channel) -> list[str]:
    """List the services that the server at ``channel`` exposes through reflection v1alpha."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    names = []
    for response in stub.ServerReflectionInfo(iter([request]), timeout=RPC_TIMEOUT_SECONDS, wait_for_ready=True):
        assert response.HasField("list_services_response"), f"unexpected reflection response: {response!r}"
        names.extend(service.name for service in response.list_services_response.service)
    return names


def bad_request_fields(error: grpc.RpcError) -> list[str]:
    """Return the field names of the ``BadRequest`` details in ``grpc-status-details-bin``."""
    status = rpc_status.from_call(error)
    assert status is not None, "the error carries no grpc-status-details-bin trailer"
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.extend(violation.field for violation in bad_request.field_violations)
    return fields


def build_checks(env: dict[str, str], channels: dict[str, grpc.Channel], messages, services) -> list:
    """Return the checks as ``(name, function)`` pairs, in the order they run."""
    decisioning = services.DecisioningServiceStub(channels["decisioning"])
    shopper_id = env["RTIM_SHOPPER_ID"]
    api_key = env["RTIM_API_KEY"]

    def health_serving(service: str) -> Callable[[], None]:
        def check() -> None:
            stub = health_pb2_grpc.HealthStub(channels[service])
            response = stub.Check(
                health_pb2.HealthCheckRequest(service=""), timeout=RPC_TIMEOUT_SECONDS, wait_for_ready=True
            )
            serving = health_pb2.HealthCheckResponse.SERVING
            assert response.status == serving, (
                f"{service} health is {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}, "
                "expected SERVING"
            )

        return check

    def reflection_lists_services() -> None:
        names = list_services(channels["decisioning"])
        assert DECISIONING_SERVICE in names, f"{DECISIONING_SERVICE} missing from reflection list {names}"
        assert HEALTH_SERVICE in names, f"{HEALTH_SERVICE} missing from reflection list {names}"

    def decide_returns_decision() -> None:
        request = messages.DecideRequest(placement="cart", user_id=shopper_id)
        response = decisioning.Decide(
            request, metadata=bearer(api_key), timeout=RPC_TIMEOUT_SECONDS, wait_for_ready=True
        )
        assert response.decision_id, f"Decide returned an empty decision_id for user_id {shopper_id!r}"

    def decide_wrong_key_unauthenticated() -> None:
        request = messages.DecideRequest(placement="cart", user_id=shopper_id)
        error = expect_rpc_error(
            lambda: decisioning.Decide(
                request, metadata=bearer(f"{api_key}-wrong"), timeout=RPC_TIMEOUT_SECONDS, wait_for_ready=True
            )
        )
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (
            f"expected UNAUTHENTICATED, got {error.code().name}: {error.details()}"
        )

    def decide_missing_placement_invalid() -> None:
        request = messages.DecideRequest(user_id=shopper_id)
        error = expect_rpc_error(
            lambda: decisioning.Decide(
                request, metadata=bearer(api_key), timeout=RPC_TIMEOUT_SECONDS, wait_for_ready=True
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (
            f"expected INVALID_ARGUMENT, got {error.code().name}: {error.details()}"
        )
        fields = bad_request_fields(error)
        assert "placement" in fields, f"BadRequest field violations {fields} do not name placement"

    return [
        ("health of decisioning is SERVING", health_serving("decisioning")),
        ("health of ingestion is SERVING", health_serving("ingestion")),
        ("reflection lists decisioning and health", reflection_lists_services),
        ("decide with valid key returns decision_id", decide_returns_decision),
        ("decide with wrong key is UNAUTHENTICATED", decide_wrong_key_unauthenticated),
        ("decide without placement is INVALID_ARGUMENT", decide_missing_placement_invalid),
    ]


def run_checks(checks: list) -> int:
    """Run every check and print one line for each, then a summary. Return the number of failures."""
    passed = 0
    failed = 0
    for name, check in checks:
        try:
            check()
        except AssertionError as error:
            failed += 1
            print(f"FAIL {name}: {error}", flush=True)
        except grpc.RpcError as error:
            failed += 1
            print(f"FAIL {name}: RPC failed with {error.code().name}: {error.details()}", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {name}: unexpected error", flush=True)
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {name}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return failed


def main() -> int:
    try:
        env = read_environment()
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="rtim-python-stubs-") as stub_dir:
        try:
            generate_stubs(PROTO_ROOT, Path(stub_dir))
        except UsageError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        messages, services = import_stubs(Path(stub_dir))

        with grpc.insecure_channel(env["RTIM_GRPC_DECISIONING"]) as decisioning:
            with grpc.insecure_channel(env["RTIM_GRPC_INGESTION"]) as ingestion:
                channels = {"decisioning": decisioning, "ingestion": ingestion}
                failures = run_checks(build_checks(env, channels, messages, services))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
