"""Secret redaction as a pure function: names, values, URL passwords and secret flags, one table each."""

from __future__ import annotations

import pytest

from supervisor._redact import REDACTED, Redactor, is_secret_name

R = REDACTED


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("HF_TOKEN", True),
        ("HUGGING_FACE_HUB_TOKEN", True),
        ("OPENAI_KEY", True),
        ("OPENAI_API_KEY", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("DB_PASS", True),
        ("DB_PASSWORD", True),
        ("MYSQL_PASSWD", True),
        ("AUTH_HEADER", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("GITHUB_PAT", True),
        ("hf_token", True),
        ("--api-key", True),
        ("--hf-token", True),
        ("--token", True),
        ("--password", True),
        ("SSHKEY", True),
        ("MODE", False),
        ("PATH", False),
        ("PWD", False),
        ("SSH_AUTH_SOCK", False),
        ("TOKENIZERS_PARALLELISM", False),
        ("--tokenizer", False),
        ("--max-num-batched-tokens", False),
        ("--max-tokens", False),
        ("CUDA_VISIBLE_DEVICES", False),
        ("AUTHOR", False),
        ("PASSTHROUGH", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    """Names that hold secrets are recognised by their parts; look-alikes are not."""
    assert is_secret_name(name) is secret


ENV = {
    "HF_TOKEN": "hf_abcdefghijklmnop",
    "OPENAI_KEY": "sk-0123456789",
    "DB_PASS": "hunter22",
    "FLAG_KEY": "1",
    "DATABASE_URL": "postgres://user:s3cretpw@db.example:5432/app",
    "MODE": "fast",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("--hf-token hf_abcdefghijklmnop", f"--hf-token {R}"),
        ("token=hf_abcdefghijklmnop;key=sk-0123456789", f"token={R};key={R}"),
        ("Namespace(api_key='sk-0123456789', mode='fast')", f"Namespace(api_key='{R}', mode='fast')"),
        ("login as hunter22 failed", f"login as {R} failed"),
        (
            "connecting to postgres://user:s3cretpw@db.example:5432/app",
            f"connecting to postgres://user:{R}@db.example:5432/app",
        ),
        ("http://u:pw@127.0.0.1:80/x and https://a:b@h/", f"http://u:{R}@127.0.0.1:80/x and https://a:{R}@h/"),
        ("no password: http://user@h/ and http://h:80/x", "no password: http://user@h/ and http://h:80/x"),
        ("port 1 of 1", "port 1 of 1"),  # FLAG_KEY=1 is too short to replace by value
        ("mode fast", "mode fast"),
    ],
)
def test_text_redacts_values_and_url_passwords(text: str, expected: str) -> None:
    """Every value of a secret variable and every URL password is replaced, nothing else."""
    assert Redactor.from_environments(ENV).text(text) == expected


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["vllm", "--hf-token", "hf_abcdefghijklmnop", "--port", "80"], ["vllm", "--hf-token", R, "--port", "80"]),
        (["x", "--api-key", "anything-else"], ["x", "--api-key", R]),
        (["x", "--api-key=abc", "--token=t"], ["x", f"--api-key={R}", f"--token={R}"]),
        (["x", "--password", "--port", "1"], ["x", "--password", "--port", "1"]),
        (
            ["x", "--max-num-batched-tokens", "8192", "--tokenizer", "gpt2"],
            ["x", "--max-num-batched-tokens", "8192", "--tokenizer", "gpt2"],
        ),
        (["x", "--model=hf_abcdefghijklmnop"], ["x", f"--model={R}"]),
        (["x", "--db", "postgres://u:pw@h/db"], ["x", "--db", f"postgres://u:{R}@h/db"]),
        (["x", "--api-key"], ["x", "--api-key"]),
    ],
)
def test_argv_redacts_secret_flags_and_values(argv: list[str], expected: list[str]) -> None:
    """A secret flag hides its value (separate or after ``=``); known values are hidden anywhere."""
    assert Redactor.from_environments(ENV).argv(argv) == expected


def test_env_redacts_by_name_and_by_value() -> None:
    """Secret names lose their value whatever its length; URL passwords and known values go too."""
    env = {**ENV, "ECHO": "hf_abcdefghijklmnop", "PATH": "/usr/bin"}
    assert Redactor.from_environments(ENV).env(env) == {
        "HF_TOKEN": R,
        "OPENAI_KEY": R,
        "DB_PASS": R,
        "FLAG_KEY": R,
        "DATABASE_URL": f"postgres://user:{R}@db.example:5432/app",
        "MODE": "fast",
        "ECHO": R,
        "PATH": "/usr/bin",
    }


def test_data_redacts_nested_strings_and_combines() -> None:
    """JSON-like data is redacted all the way down; two redactors combine their secrets."""
    both = Redactor.from_environments({"A_TOKEN": "aaaaaaaa"}) | Redactor.from_environments({"B_SECRET": "bbbbbbbb"})
    data = {"x": ["aaaaaaaa", {"y": "bbbbbbbb and aaaaaaaa"}], "n": 3, "none": None}
    assert both.data(data) == {"x": [R, {"y": f"{R} and {R}"}], "n": 3, "none": None}


def test_longer_secret_wins_over_its_prefix() -> None:
    """A secret that contains another is replaced whole, not in pieces."""
    redactor = Redactor.from_environments({"A_TOKEN": "abcdefgh", "B_TOKEN": "abcdefghijkl"})
    assert redactor.text("abcdefghijkl abcdefgh") == f"{R} {R}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgres://user:PW/x@host/db", f"postgres://user:{R}@host/db"),
        ("postgres://u:p@ssword99@host/db", f"postgres://u:{R}@host/db"),
        ("postgres://u:a/b@c:d@host:5432/db?x=1", f"postgres://u:{R}@host:5432/db?x=1"),
        ("db='postgres://u:p@ss/w@h/db', next='x@y'", f"db='postgres://u:{R}@h/db', next='x@y'"),
        ("at postgres://u:p/w@h/db, then http://a:b@c/", f"at postgres://u:{R}@h/db, then http://a:{R}@c/"),
        ("http://127.0.0.1:8000/@user and http://h:80?q=a@b", "http://127.0.0.1:8000/@user and http://h:80?q=a@b"),
        ("https://medium.com/@user x://a:b", "https://medium.com/@user x://a:b"),
        ("postgres://u:12345@h/db", f"postgres://u:{R}@h/db"),
    ],
)
def test_url_password_with_slash_or_at_is_hidden_whole(text: str, expected: str) -> None:
    """A password with unencoded ``/`` or ``@`` runs to the last ``@`` of its word, so no part of it
    shows; a port followed by a path is not a password, and a word without ``user:...@`` is left alone."""
    assert Redactor().text(text) == expected


def test_url_password_with_slash_or_at_is_hidden_in_env_argv_and_by_value() -> None:
    """The manifest's env and argv hide such a password whole, and a log line quoting the bare password
    loses it too (it is known by value)."""
    env = {"DATABASE_URL": "postgres://user:PW/xyzabc@host/db", "CACHE_URL": "redis://u:p@ssword99@cache:6379/0"}
    redactor = Redactor.from_environments(env)
    assert redactor.env(env) == {
        "DATABASE_URL": f"postgres://user:{R}@host/db",
        "CACHE_URL": f"redis://u:{R}@cache:6379/0",
    }
    argv = ["app", "--db", env["DATABASE_URL"], f"--cache={env['CACHE_URL']}"]
    assert redactor.argv(argv) == ["app", "--db", f"postgres://user:{R}@host/db", f"--cache=redis://u:{R}@cache:6379/0"]
    assert redactor.text("auth failed for PW/xyzabc and p@ssword99") == f"auth failed for {R} and {R}"
