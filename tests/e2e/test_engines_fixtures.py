"""The engine fixtures skip with the reason locally, and fail under CI=true, where the engines must run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .. import engines


@pytest.fixture
def no_engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("TOPOVISOR_DYNAMO_ENV", "TOPOVISOR_LLAMA_SERVER", "CI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TOPOVISOR_ENGINES_DIR", str(tmp_path / "engines"))
    return tmp_path / "engines"


def test_missing_engines_skip_locally_with_the_reason(no_engines: Path) -> None:
    with pytest.raises(pytest.skip.Exception, match=r"no Dynamo 1\.6\.1 venv at .*engines/dynamo-1\.6\.1"):
        engines.find_dynamo_env()
    with pytest.raises(pytest.skip.Exception, match=r"no llama-server at .*llama-server-vulkan.*install-engines"):
        engines.find_llama_server()


def test_missing_engines_fail_under_ci(no_engines: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but no Dynamo"):
        engines.find_dynamo_env()
    monkeypatch.setenv("TOPOVISOR_LLAMA_SERVER", "no-such-llama-server")
    with pytest.raises(pytest.fail.Exception, match="CI=true but TOPOVISOR_LLAMA_SERVER=no-such-llama-server"):
        engines.find_llama_server()


def test_a_half_installed_venv_does_not_count(no_engines: Path) -> None:
    """install-engines writes its marker last: a venv without it was interrupted and is not used."""
    python = no_engines / "dynamo-1.6.1" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    with pytest.raises(pytest.skip.Exception):
        engines.find_dynamo_env()
    (no_engines / "dynamo-1.6.1" / ".installed").write_text("ai-dynamo==1.6.1\n")
    assert engines.find_dynamo_env() == no_engines / "dynamo-1.6.1"


def test_generated_mocker_model_is_what_dynamo_reads(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer

    model = engines.write_mocker_model(tmp_path / "m")
    assert sorted(p.name for p in model.iterdir()) == [
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    ]  # fmt: skip
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == 4096  # the mocker emits ids up to ~2000
    assert tokenizer.decode(tokenizer.encode("w1 w4000").ids) == "w1 w4000"
    assert "chat_template" in json.loads((model / "tokenizer_config.json").read_text())


def test_generated_gguf_has_llama_cpp_required_metadata(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    path = engines.write_tiny_gguf(tmp_path / "tiny.gguf")
    reader = gguf.GGUFReader(str(path))
    keys = set(reader.fields)
    for key in ("general.architecture", "llama.context_length", "llama.embedding_length", "llama.block_count",
                "llama.feed_forward_length", "llama.attention.head_count",
                "llama.attention.layer_norm_rms_epsilon", "tokenizer.ggml.model", "tokenizer.ggml.tokens",
                "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.chat_template"):  # fmt: skip
        assert key in keys, key
    assert len(reader.tensors) == 3 + 2 * 9
    assert path.stat().st_size < 1_000_000
