"""``tokentrail.processor`` re-exports the supported Python API: every advertised name resolves to the object its
defining module holds, and the lazy table agrees with what type checkers are told."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import tokentrail.processor as processor


@pytest.mark.parametrize("name", sorted(processor._EXPORTS))
def test_every_exported_name_is_the_defining_modules_object(name: str) -> None:
    module = importlib.import_module(processor._EXPORTS[name])
    assert getattr(processor, name) is getattr(module, name)


def test_the_type_checking_imports_name_the_same_modules() -> None:
    tree = ast.parse(Path(processor.__file__).read_text())
    seen: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module
                seen.update({alias.name: stmt.module for alias in stmt.names})
    assert seen == processor._EXPORTS


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        processor.no_such_thing  # noqa: B018


def test_all_lists_the_error_root_and_every_export() -> None:
    assert sorted(processor.__all__) == sorted(["TokenTrailError", *processor._EXPORTS])
