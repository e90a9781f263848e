"""The Dockerfile's dependency layer stays in step with the Cargo workspace."""

from __future__ import annotations

import re
import tomllib

import manifests

DOCKERFILE = manifests.ROOT / "Dockerfile"


def workspace_members() -> set[str]:
    cargo = tomllib.loads((manifests.ROOT / "Cargo.toml").read_text())
    return {member for member in cargo["workspace"]["members"] if member != "."}


def test_dependency_layer_copies_every_member_manifest():
    text = DOCKERFILE.read_text()
    copied = set(re.findall(r"^COPY (\S+)/Cargo\.toml", text, flags=re.MULTILINE))
    assert copied == workspace_members()


def test_dependency_layer_creates_every_placeholder_crate():
    text = DOCKERFILE.read_text()
    loop = re.search(r"for crate in (.*?); do", text, flags=re.DOTALL)
    assert loop, "no placeholder loop in the Dockerfile"
    placeholders = set(loop.group(1).replace("\\", " ").split())
    assert placeholders == workspace_members()


def test_runtime_user_is_numeric_non_root():
    text = DOCKERFILE.read_text()
    runtime = text[text.rindex("FROM ") :]
    user = re.search(r"^USER (\d+)(?::(\d+))?$", runtime, flags=re.MULTILINE)
    assert user and int(user.group(1)) != 0, "runtime stage sets no numeric non-root USER"
    assert 'ENTRYPOINT ["rtim"]' in runtime
    assert 'CMD ["serve"]' in runtime
