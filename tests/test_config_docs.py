"""The configuration's documentation has one source, tasks/config.py's field descriptions: the README's key table and
docs/configuration.md are written from them and must say what the code does."""

from __future__ import annotations

from tasks import config_docs
from tasks.config import RunConfig


def test_every_key_says_what_it_does():
    assert config_docs.undocumented() == [], "give these fields a description= in tasks/config.py"


def test_the_readme_table_and_the_full_list_are_written_from_the_descriptions():
    assert config_docs.stale() == [], "run `python -m tasks.config_docs` and commit what it rewrites"


def test_the_full_list_names_every_key_with_its_default():
    doc = config_docs.full_doc()
    defaults = RunConfig().as_dict()
    for section in ("data", "validate", "encode", "model", "train", "promote"):
        for key in defaults[section]:
            assert f"| `{section}.{key}` |" in doc
    assert "| `encode.num_words` | integer | `20000` | `3000` |" in doc  # the default, then the default preset's value


def test_check_names_a_file_out_of_date_and_how_to_fix_it(monkeypatch, capsys):
    monkeypatch.setattr(config_docs, "stale", lambda: ["README.md"])
    assert config_docs.main(["--check"]) == 1
    assert capsys.readouterr().out.strip() == (
        "README.md is out of date with tasks/config.py's descriptions: run `python -m tasks.config_docs` to rewrite them."
    )
