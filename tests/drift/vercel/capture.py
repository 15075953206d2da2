"""Capture REAL Vercel AI SDK (JavaScript, npm ``ai``) spans against the fake provider, as OTLP/JSON fixtures.

Four setups, each run by a pinned npm project in this folder with a ``capture.mjs``:

* ``v6``: ``ai@6`` with ``experimental_telemetry`` (metadata ``userId`` and ``tags``);
* ``v7-otel``: ``ai@7`` with its recommended ``OpenTelemetry`` integration from ``@ai-sdk/otel`` (GenAI-convention
  ``invoke_agent`` / ``step`` / ``chat`` spans), ``usage: true`` and ``runtimeContext: true`` (the attribution is on
  the ``step`` and ``invoke_agent`` spans only);
* ``v7-enrich``: the same integration with an ``enrichSpan`` hook writing ``user.id`` and ``tokentrail.tags`` on
  every span, and no runtime context (the attribution is on the ``chat`` spans themselves);
* ``v7-legacy``: ``ai@7`` with ``LegacyOpenTelemetry`` from ``@ai-sdk/otel`` (``ai.*`` spans, attribution as
  ``ai.settings.context.*``).

Each script makes six real calls (OpenAI Chat Completions, OpenAI Responses and Anthropic Messages, each with
``generateText`` and ``streamText``) and writes the finished spans as one ExportTraceServiceRequest in OTLP/JSON, as
an OTLP/HTTP JSON exporter sends it. This driver starts the fake provider in-process, installs Node 22 (the npm
package ``node``, in ``node22/``) and each project with ``npm ci`` when ``node_modules`` is missing, runs the scripts,
and writes per setup:

* ``<name>.otlp.json``: a JSON list holding that one request (the golden fixtures' format: a list of requests);
* ``<name>.calls.json``: the package versions, and per LLM call what the fake actually served (API, model,
  streamed, response id, the exact usage it sent, and the tokens normalized: input inclusive of cache, cache read,
  cache write, output, reasoning).

Needs network access to the npm registry only for the installs. Run from the repository root (``make drift`` runs
it and checks the result with ``tests/processor/normalize/test_vercel_drift.py``)::

    .venv/bin/python -m tests.drift.vercel.capture --out DIR   # fresh captures into DIR (default below)
    .venv/bin/python -m tests.drift.vercel.capture --latest    # the same with the newest release of each major
    .venv/bin/python -m tests.drift.vercel.capture --golden    # re-capture the golden fixtures (review the diff)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tokentrail.processor.demo.fake_provider import FakeCall, FakeProvider

from tests.helpers.golden import GOLDEN_DIR, NODE_CAPTURED, write_fixture

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = Path("/tmp/vercel-drift/out")
NODE_DIR = HERE / "node22"
NODE_BIN = NODE_DIR / "node_modules" / "node" / "bin" / "node"
# setup -> (its npm project folder, the capture script's variant argument, the fixture's name)
SETUPS: dict[str, tuple[str, str | None, str]] = {
    "v6": ("v6", None, "vercel-ai-v6"),
    "v7-otel": ("v7-otel", None, "vercel-ai-v7-otel"),
    "v7-enrich": ("v7-otel", "enrich", "vercel-ai-v7-enrich"),
    "v7-legacy": ("v7-legacy", None, "vercel-ai-v7-legacy"),
}
assert sorted(name for _, _, name in SETUPS.values()) == sorted(NODE_CAPTURED)
CALLS_PER_SETUP = 6


def _npm_ci(folder: Path) -> None:
    if (folder / "node_modules").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed to install the capture projects (the npm registry must be reachable)")
    print(f"npm ci in {folder}", file=sys.stderr)
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=folder, check=True)


def _node() -> Path:
    _npm_ci(NODE_DIR)
    if not NODE_BIN.is_file():
        raise SystemExit(f"{NODE_BIN} is missing after npm ci: the `node` package's install script did not run")
    version = subprocess.run([str(NODE_BIN), "--version"], capture_output=True, text=True, check=True).stdout
    if int(version.strip().lstrip("v").split(".")[0]) < 22:
        raise SystemExit(f"{NODE_BIN} is {version.strip()}, the AI SDK v7 needs Node >= 22")
    return NODE_BIN


def _tokens(call: FakeCall) -> dict[str, int] | None:
    """The usage the fake sent, normalized: input INCLUSIVE of cache reads and writes."""
    usage = call.usage
    if usage is None:
        return None
    if call.api == "chat":
        return {
            "input": usage["prompt_tokens"],
            "cache_read": usage.get("prompt_tokens_details", {}).get("cached_tokens", 0),
            "cache_write": 0,  # Chat Completions has no cache-write count
            "output": usage["completion_tokens"],
            "reasoning": usage.get("completion_tokens_details", {}).get("reasoning_tokens", 0),
        }
    if call.api == "responses":
        return {
            "input": usage["input_tokens"],
            "cache_read": usage.get("input_tokens_details", {}).get("cached_tokens", 0),
            "cache_write": usage.get("input_tokens_details", {}).get("cache_write_tokens", 0),
            "output": usage["output_tokens"],
            "reasoning": usage.get("output_tokens_details", {}).get("reasoning_tokens", 0),
        }
    if call.api == "messages":
        read = usage.get("cache_read_input_tokens", 0)
        write = usage.get("cache_creation_input_tokens", 0)
        return {
            "input": usage["input_tokens"] + read + write,  # Anthropic reports input EXCLUSIVE of cache
            "cache_read": read,
            "cache_write": write,
            "output": usage["output_tokens"],
            "reasoning": 0,  # Messages reports no reasoning count
        }
    raise ValueError(f"unexpected API {call.api!r}")


def _expected(calls: list[FakeCall]) -> list[dict[str, Any]]:
    return [
        {
            "api": call.api,
            "path": call.path,
            "model": call.model,
            "streamed": call.stream,
            "include_usage": call.include_usage,
            "status": call.status,
            "response_id": call.response_id,
            "tokens": _tokens(call),
            "usage_sent": call.usage,
        }
        for call in calls
    ]


def _latest(project: str, into: Path) -> Path:
    """A copy of ``project`` with every dependency at the newest release of its pinned major version (``npm
    install`` with ``^`` ranges): what an application installing the same majors today gets."""
    folder = into / project
    if folder.is_dir():
        return folder
    folder.mkdir(parents=True)
    shutil.copy(HERE / project / "capture.mjs", folder)
    shutil.copy(HERE / "calls.mjs", into)  # what every capture script imports from its parent folder
    manifest = json.loads((HERE / project / "package.json").read_text())
    manifest["dependencies"] = {name: f"^{version}" for name, version in manifest["dependencies"].items()}
    (folder / "package.json").write_text(json.dumps(manifest, indent=1) + "\n")
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is needed to install the capture projects (the npm registry must be reachable)")
    subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=folder, check=True)
    return folder


def capture(
    setup: str, fake: FakeProvider, node: Path, out_dir: Path, golden: bool, latest: Path | None = None
) -> None:
    project, variant, name = SETUPS[setup]
    if latest is not None:
        folder = _latest(project, latest)
    else:
        folder = HERE / project
        _npm_ci(folder)
    fake.reset()
    with tempfile.TemporaryDirectory(prefix="vercel-drift-") as tmp:
        raw = Path(tmp) / "request.json"
        result = subprocess.run(
            [str(node), "capture.mjs", fake.openai_base_url, fake.anthropic_base_url, str(raw), *([variant] if variant else [])],
            cwd=folder,
            env={**os.environ, "NODE_OPTIONS": ""},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise SystemExit(f"{setup}: capture.mjs failed ({result.returncode}):\n{result.stderr}{result.stdout}")
        request = json.loads(raw.read_text())
    calls = list(fake.calls)
    if len(calls) != CALLS_PER_SETUP or any(c.status != 200 or c.usage is None for c in calls):
        raise SystemExit(f"{setup}: expected {CALLS_PER_SETUP} successful calls with usage, the fake saw {calls!r}")
    spans = sum(len(s["spans"]) for rs in request["resourceSpans"] for s in rs["scopeSpans"])
    expected = {"setup": setup, "versions": _versions(folder), "calls": _expected(calls)}
    if golden:
        # The golden fixture (spans and the records they normalize to) and the calls behind it (test_vercel_drift).
        write_fixture(name, [request])
        otlp_path, expected_path = GOLDEN_DIR / f"{name}.otlp.json", GOLDEN_DIR / f"{name}.calls.json"
    else:
        otlp_path, expected_path = out_dir / f"{name}.otlp.json", out_dir / f"{name}.calls.json"
        otlp_path.write_text(json.dumps([request], indent=1) + "\n")
    expected_path.write_text(json.dumps(expected, indent=1) + "\n")
    print(f"{setup}: {spans} spans -> {otlp_path}; {len(calls)} calls -> {expected_path}", file=sys.stderr)


def _versions(folder: Path) -> dict[str, str]:
    """The installed versions of the project's direct dependencies (what the fixture was captured with)."""
    wanted = json.loads((folder / "package.json").read_text()).get("dependencies", {})
    return {
        name: json.loads((folder / "node_modules" / name / "package.json").read_text())["version"]
        for name in sorted(wanted)
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--golden", action="store_true", help=f"write the fixtures into {GOLDEN_DIR}")
    parser.add_argument(
        "--latest", action="store_true", help="the newest release of each pinned major version, not the pins"
    )
    parser.add_argument("setups", nargs="*", metavar="SETUP", help=f"of {', '.join(SETUPS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = set(args.setups) - set(SETUPS)
    if unknown:
        parser.error(f"unknown setup(s): {', '.join(sorted(unknown))}")
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.golden and args.latest:
        parser.error("--golden records the pinned versions: not with --latest")
    node = _node()
    with FakeProvider() as fake, tempfile.TemporaryDirectory(prefix="vercel-latest-") as tmp:
        for setup in args.setups or list(SETUPS):
            capture(setup, fake, node, out_dir, args.golden, Path(tmp) if args.latest else None)


if __name__ == "__main__":
    main()
