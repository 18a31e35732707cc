"""A topology file read once is read again without PyYAML, and the cache never holds a filled ``${VAR}``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import supervisor as sv
from supervisor._spec.document_cache import MISS, cache_dir, cached_document, store_document

from ..helpers import PYTHON, ROOT

TOPOLOGY = """
name: cached
services:
  api:
    command: ["{python}", -c, "print('${HF_TOKEN}')"]
    env: {HF_TOKEN: "${HF_TOKEN}"}
    replicas: ${REPLICAS:-2}
"""


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def load_in_a_fresh_process(path: Path, env: dict[str, str]) -> dict[str, object]:
    code = (
        "import json, sys, supervisor as sv; t = sv.load(sys.argv[1]); s = t.services[0]; "
        "print(json.dumps({'yaml': 'yaml' in sys.modules, 'replicas': s.replicas, 'env': dict(s.env)}))"
    )
    done = subprocess.run([PYTHON, "-c", code, str(path)], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_the_second_load_of_a_file_skips_the_yaml_parser_and_gives_the_same_topology(
    tmp_path: Path, cache_home: Path
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY)
    env = {**os.environ, "HF_TOKEN": "hf_secret_abc123", "REPLICAS": "3"}
    first = load_in_a_fresh_process(path, env)
    second = load_in_a_fresh_process(path, env)
    assert first["yaml"] is True and second["yaml"] is False
    assert first == {**second, "yaml": True}
    assert second["replicas"] == 3 and second["env"] == {"HF_TOKEN": "hf_secret_abc123"}
    entries = list(cache_dir().glob("*.json"))
    assert len(entries) == 1 and oct(entries[0].stat().st_mode & 0o777) == "0o600"
    stored = entries[0].read_text()
    assert "hf_secret_abc123" not in stored and "${HF_TOKEN}" in stored  # the file as written, never filled


def test_a_changed_file_is_parsed_again(tmp_path: Path, cache_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY)
    assert sv.load(path).services[0].replicas == 2
    path.write_text(TOPOLOGY.replace("${REPLICAS:-2}", "${REPLICAS:-5}"))
    assert sv.load(path).services[0].replicas == 5
    assert len(list(cache_dir().glob("*.json"))) == 2


def test_an_entry_for_other_text_or_a_broken_one_is_a_miss(cache_home: Path) -> None:
    store_document("a: 1\n", {"a": 1})
    assert cached_document("a: 1\n") == {"a": 1}
    (entry,) = cache_dir().glob("*.json")
    data = json.loads(entry.read_text())
    entry.write_text(json.dumps({**data, "text": "a: 2\n"}))  # a crc32 collision: the text decides
    assert cached_document("a: 1\n") is MISS
    entry.write_text("{not json")
    assert cached_document("a: 1\n") is MISS


@pytest.mark.parametrize("document", [{"when": __import__("datetime").date(2024, 1, 1)}, {1: "x"}, {"x": {1, 2}},
                                      {"x": float("inf")}])  # fmt: skip
def test_a_document_json_cannot_hold_exactly_is_not_stored(cache_home: Path, document: object) -> None:
    store_document("x\n", document)
    assert cached_document("x\n") is MISS and not list(cache_dir().glob("*.json"))


def test_bad_yaml_is_still_reported_with_its_line(tmp_path: Path, cache_home: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nservices: {a: [\n")
    for _ in range(2):  # nothing is cached for a file that does not parse
        with pytest.raises(sv.ConfigError, match="line 3"):
            sv.load(path)
    assert not list(cache_dir().glob("*.json"))


@pytest.mark.parametrize(
    "text",
    ["0", "2", "-7", "10", "007", "+3", "1_000", "0x1f", "1.5", "true", "False", "TRUE", "yes", "on", "null", "Null",
     "~", "hf_secret_abc123", "Qwen3-0.6B", "a-b_c", "x:y", "{a: 1}", "[1, 2]", "", " 2", "2 ", ".inf", "=", "<<"],
)  # fmt: skip
def test_read_value_reads_a_plain_scalar_as_the_parser_does(text: str) -> None:
    """The fast path for whole numbers, true/false and plain words agrees with PyYAML on every sample."""
    from supervisor._spec.yamlfile import parse_yaml, read_value

    try:
        expected = parse_yaml(text, "--set") if text.strip() else text
    except sv.ConfigError:
        expected = text
    assert read_value(text) == expected and type(read_value(text)) is type(expected)
