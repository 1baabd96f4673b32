"""No email or phone number from the input ever reaches a log or the terminal: the
identity-heavy synthetic data through `cvm -v` features build, profiles build and
profiles evaluate; the terminal output and every log record (INFO and up) are searched."""

from __future__ import annotations

import logging

import pandas as pd
from typer.testing import CliRunner

from cvm.cli import app


def test_emails_and_phones_never_reach_the_logs(tmp_path, caplog):
    from sources.synth import generate

    data = tmp_path / "syn"
    generate(data, 400, seed=11)
    identities = pd.read_parquet(data / "identities")
    secrets = identities.loc[identities["id_type"].isin(["email", "phone"]), "value"].dropna().astype(str)
    secrets = {s for s in secrets if len(s) >= 6}
    assert len(secrets) > 200  # the input is full of them
    home = tmp_path / "home"
    outputs = []
    with caplog.at_level(logging.DEBUG):
        for args in (["features", "build", "--as-of", "2025-03-01"], ["profiles", "build"],
                     ["profiles", "evaluate"]):
            r = CliRunner().invoke(app, ["-v", *args, "--dataset", str(data), "--home", str(home)])
            assert r.exit_code == 0, r.output
            outputs.append(r.output)
    text = "\n".join(outputs) + "\n" + "\n".join(rec.getMessage() for rec in caplog.records)
    assert len(caplog.records) > 0
    leaked = sorted(s for s in secrets if s in text)
    assert not leaked, f"{len(leaked)} identifiers in the logs, e.g. {leaked[:3]}"
