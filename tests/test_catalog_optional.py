"""The offer catalog is optional and found by one rule (issue 14, item 7).

* ``resolve_catalog_path``: ``--catalog`` / ``CVM_CATALOG`` > the dataset directory's
  ``catalog.yaml`` > the shipped catalog of the built-in dataset (by name, never for a
  directory, nor for a ``cvm synth`` directory); else none.
* ``cvm nbo init`` writes a commented starter catalog that loads, one cross-sell offer per
  category, and never overwrites without ``--force``.
* Without a catalog the service scores, ``/recommend`` refuses with 404 naming "no offer
  catalog" and logs no decision, ``/readyz`` is ready; a catalog added later is picked up.

On the tiny dataset (tests/conftest.py) at 2024-03-01 the cross-sell model (lookback 91
days) does not offer a category bought since 2023-12-01: A bought grocery (01-15) and dairy
(02-29), so only bakery is open to A; B bought grocery and bakery (02-01), so only dairy;
D's one purchase (bakery, 2022-12-01) is older, so all three are open to D.
"""

from __future__ import annotations

import shutil
import sys

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from cvm.cli import app
from scoring.catalog import (
    DATASET_CATALOG,
    NoCatalogError,
    default_catalog_path,
    load_catalog,
    parse_catalog,
    resolve_catalog_path,
)
from scoring.catalog_init import offer_ids, starter_catalog
from tests.conftest import AS_OF

CATEGORIES = ["grocery", "dairy", "bakery"]  # the tiny dataset's dataset.yaml categories
SYNTH_MARKER = "_synth.json"  # sources.synth.MARKER: a directory written by cvm synth


def _starter(categories: list[str]) -> dict:
    return yaml.safe_load(starter_catalog(categories, dataset="t", categories_from="a test"))


# ------------------------------------------------------------------ the resolution rule

def test_an_explicit_catalog_comes_first(tmp_path):
    data = tmp_path / "shop"
    data.mkdir()
    (data / DATASET_CATALOG).write_text("offers: []\n")
    explicit = tmp_path / "mine.yaml"
    assert resolve_catalog_path(str(data), explicit) == explicit
    assert resolve_catalog_path("completejourney", explicit) == explicit
    # given explicitly, a missing file is an error of the loader, never silently skipped
    missing = tmp_path / "missing.yaml"
    assert resolve_catalog_path(str(data), missing) == missing


def test_then_the_dataset_directorys_own_catalog(tmp_path):
    data = tmp_path / "shop"
    data.mkdir()
    assert resolve_catalog_path(str(data)) is None  # a plain directory of tables: no catalog
    (data / DATASET_CATALOG).write_text("offers: []\n")
    assert resolve_catalog_path(str(data)) == data / DATASET_CATALOG


def test_then_the_shipped_catalog_of_the_builtin_dataset_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no directory called completejourney here
    assert resolve_catalog_path("completejourney") == default_catalog_path("completejourney")
    assert default_catalog_path("completejourney").is_file()
    assert resolve_catalog_path("no-such-dataset") is None

    synth = tmp_path / "synth-80"
    synth.mkdir()
    (synth / SYNTH_MARKER).write_text("{}")
    # a synthetic directory's cross-sell targets depend on its size: no shipped catalog by default
    assert resolve_catalog_path(str(synth)) is None
    (synth / DATASET_CATALOG).write_text("offers: []\n")
    assert resolve_catalog_path(str(synth)) == synth / DATASET_CATALOG


def test_a_user_directory_named_completejourney_gets_no_shipped_catalog(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "completejourney").mkdir()
    assert resolve_catalog_path("completejourney") is None  # the directory, not the built-in
    assert resolve_catalog_path(str(tmp_path / "completejourney")) is None


# ------------------------------------------------------------------ the starter catalog

def test_the_starter_catalog_has_every_category_every_offer_type_and_comments():
    text = starter_catalog(CATEGORIES, dataset="tiny", categories_from="a test")
    catalog = parse_catalog(yaml.safe_load(text), "starter", CATEGORIES)
    xs = [o for o in catalog.offers if o.type == "cross_sell"]
    assert [o.target_category for o in xs] == CATEGORIES
    assert [o.id for o in xs] == ["xs-grocery", "xs-dairy", "xs-bakery"]
    assert {o.value.model for o in xs} == {"category_spend"}
    others = {o.type: o.value.model for o in catalog.offers if o.type != "cross_sell"}
    assert others == {"retention": "clv_share", "upsell": "basket_uplift", "loyalty": "clv_share"}
    assert catalog.channels == ["email", "app", "sms"]
    assert [(c.max_contacts, c.window_days) for c in catalog.contact_policy.caps] == [(3, 30), (12, 365)]
    assert "experiment:" in text and catalog.experiment.control_share == 0.05
    comments = [line for line in text.splitlines() if line.lstrip().startswith("#") or " # " in line]
    assert len(comments) > 30 and "cvm nbo init" in text


def test_any_category_name_survives_and_gets_a_valid_unique_id():
    odd = ["FROZEN GROCERY", "x: y # z", 'say "hi"', "Bébé & co", "a" * 100, "frozen-grocery", "---"]
    catalog = parse_catalog(_starter(odd), "starter", odd)
    assert [o.target_category for o in catalog.offers if o.type == "cross_sell"] == odd
    ids = offer_ids(odd)
    assert ids[:2] == ["xs-frozen-grocery", "xs-x-y-z"] and ids[5] == "xs-frozen-grocery-2"
    assert ids[6] == "xs-category" and len(ids[4]) == 64 and len(set(ids)) == len(ids)


def test_without_categories_the_starter_has_no_cross_sell_offer():
    catalog = parse_catalog(_starter([]), "starter", [])
    assert [o.id for o in catalog.offers] == ["ret-winback", "up-basket", "loy-vip"]


def test_nbo_init_writes_a_catalog_that_loads_and_refuses_to_overwrite(tiny_dataset, mlflow_home, tmp_path):
    home = ["--home", str(mlflow_home.root)]
    runner = CliRunner()
    out = tiny_dataset / DATASET_CATALOG
    r = runner.invoke(app, ["nbo", "init", "--dataset", str(tiny_dataset), *home])
    assert r.exit_code == 0, r.output
    assert "the dataset's main categories" in r.output  # no champion is registered in this home
    text = out.read_text()
    catalog = load_catalog(out, CATEGORIES)
    assert [o.target_category for o in catalog.offers if o.type == "cross_sell"] == CATEGORIES
    assert text.startswith("# Offer catalog of dataset 'tiny'")
    assert resolve_catalog_path(str(tiny_dataset)) == out  # found without --catalog from now on

    out.write_text(text + "# my edit\n")
    r = runner.invoke(app, ["nbo", "init", "--dataset", str(tiny_dataset), *home])
    assert r.exit_code == 2 and "exists" in r.output and "--force" in r.output
    assert out.read_text().endswith("# my edit\n")  # left as it was
    r = runner.invoke(app, ["nbo", "init", "--dataset", str(tiny_dataset), "--force", *home])
    assert r.exit_code == 0, r.output
    assert out.read_text() == text
    assert not [p.name for p in tiny_dataset.iterdir() if p.name.startswith(".")]  # no staged file left

    r = runner.invoke(app, ["nbo", "check", "--dataset", str(tiny_dataset), *home])
    assert r.exit_code == 0 and "valid" in r.output, r.output

    # the built-in dataset has no directory of its own: --out is required
    r = runner.invoke(app, ["nbo", "init", "--dataset", "completejourney", *home])
    assert r.exit_code == 2 and "--out" in r.output and "no directory" in r.output
    r = runner.invoke(app, ["nbo", "check", "--dataset", str(tmp_path / "empty"), *home])
    assert r.exit_code == 2 and "no offer catalog" in r.output


# ------------------------------------------------------------------ the engine without a catalog

def _cross_sell_model(snapshot: pd.DataFrame):
    """A real, tiny cross-sell TaskModel (3 trees, pinned seed, lookback 91 days)."""
    from training.encode import FeatureEncoder
    from training.model import TaskModel, cross_sell_context

    features = ["recency_days", "frequency", "xs_category", "xs_days_since", "xs_spend_share"]
    pairs = pd.concat([snapshot.assign(category=c) for c in CATEGORIES], ignore_index=True)
    design = cross_sell_context(pairs, CATEGORIES)
    encoder = FeatureEncoder(features).fit(design)
    y = (np.arange(len(design)) % 2).astype(float)
    booster = lgb.train({"objective": "binary", "num_leaves": 3, "min_data_in_leaf": 1, "seed": 0, "verbose": -1},
                        lgb.Dataset(encoder.transform(design), y), num_boost_round=3)
    return TaskModel("cross-sell", 28, features, encoder, booster, categories=CATEGORIES, lookback_days=91)


@pytest.fixture
def published(tiny_dataset, mlflow_home):
    """The tiny dataset's snapshot at AS_OF, published; a cross-sell champion for it."""
    from scoring.champions import Champion

    home = mlflow_home.root
    r = CliRunner().invoke(app, ["features", "build", "--dataset", str(tiny_dataset), "--as-of", AS_OF.isoformat(),
                                 "--publish", "--home", str(home)])
    assert r.exit_code == 0, r.output
    snapshot = pd.read_parquet(home / "features" / "tiny" / f"as_of={AS_OF}")
    champion = Champion("cross-sell", "cvm-cross-sell", "1", _cross_sell_model(snapshot).predictor(), "test")
    return home, champion


def test_the_engine_scores_without_a_catalog_and_recommend_refuses_logging_nothing(published, tmp_path):
    from features.online_store import SQLiteOnlineStore
    from scoring.decisions import SQLiteDecisionStore
    from serving.engine import build_state, recommend, score

    home, champion = published
    store = SQLiteOnlineStore(home / "online" / "tiny")
    try:
        state = build_state("tiny", {"cross-sell": champion}, store, None)
        assert state.catalog is None
        answers = score(state, ["A", "B", "D", "nobody"], reasons=False)
        assert [a["found"] for a in answers] == [True, True, True, False]
        assert [{c["category"] for c in a["cross_sell"]} for a in answers[:3]] == [
            {"bakery"}, {"dairy"}, {"grocery", "dairy", "bakery"}]
        assert "cold_start" in answers[3]

        decisions = SQLiteDecisionStore(tmp_path / "decisions.sqlite")
        with pytest.raises(NoCatalogError, match="no offer catalog configured for dataset 'tiny'.*cvm nbo init"):
            recommend(state, "D", decisions=decisions)
        assert decisions.count() == 0  # nothing was decided, nothing logged

        # the same state with a catalog decides, and logs that decision
        catalog = parse_catalog({**_starter(CATEGORIES), "experiment": {"control_share": 0.0,
                                                                        "exploration_share": 0.0}})
        with_catalog = build_state("tiny", {"cross-sell": champion}, store, catalog)
        answer = recommend(with_catalog, "D", decisions=decisions)
        assert answer["arm"] == "policy" and decisions.count() == 1
        decisions.close()
    finally:
        store.close()


class _Source:
    """Champions from memory instead of the registry."""

    def __init__(self, champion):
        self.champion = champion

    def versions(self) -> dict[str, str]:
        return {"cross-sell": self.champion.version}

    def load(self, task: str, version: str):
        return self.champion


def test_the_state_loader_serves_without_a_catalog_and_picks_one_up(published, tiny_dataset, monkeypatch):
    from serving.settings import ServiceSettings
    from serving.state import StateHolder

    home, champion = published
    settings = ServiceSettings(home=home, dataset=str(tiny_dataset), api_keys=("k" * 16,), reload_seconds=0,
                               tracking_uri="sqlite:///unused")
    holder = StateHolder(settings)
    monkeypatch.setattr(holder, "_source", lambda: _Source(champion))
    first = holder.load()
    assert first.changed and holder.state.catalog is None and holder.last_error is None
    assert not holder.load().changed  # nothing new: the state stays

    (tiny_dataset / DATASET_CATALOG).write_text(starter_catalog(CATEGORIES, dataset="tiny", categories_from="t"))
    again = holder.load()
    assert again.changed and holder.state.catalog is not None
    assert [o.id for o in holder.state.catalog.offers][:3] == ["xs-grocery", "xs-dairy", "xs-bakery"]


def test_in_a_bento_the_packed_catalog_or_none(tmp_path, monkeypatch):
    import importlib

    from serving.settings import ServiceSettings
    from serving.state import StateHolder

    packed = tmp_path / "snapshot-model"
    packed.mkdir()

    class Model:
        path = str(packed)

    # the module itself: `bentoml.models` is a lazy loader that replaces itself on first use
    monkeypatch.setattr(importlib.import_module("bentoml.models"), "get", lambda tag: Model())
    settings = ServiceSettings(home=tmp_path, api_keys=("k" * 16,), model_source="bentoml")
    # CVM_DATASET defaults to completejourney inside a Bento: its shipped catalog is not taken
    assert StateHolder(settings)._catalog_path() is None
    (packed / "catalog.yaml").write_text("x")
    assert StateHolder(settings)._catalog_path() == packed / "catalog.yaml"
    explicit = tmp_path / "mine.yaml"
    assert StateHolder(settings.model_copy(update={"catalog": explicit}))._catalog_path() == explicit


# ------------------------------------------------------------------ a real server without a catalog

@pytest.mark.server
def test_a_server_without_a_catalog_scores_and_refuses_recommend(served_home, tmp_path, monkeypatch):
    """`cvm serve` of a dataset directory without catalog.yaml (the synthetic dataset copied
    without its marker, so no shipped catalog applies) starts and is ready; /score works,
    /recommend is a 404 naming "no offer catalog" and logs nothing. `cvm nbo init` then
    writes the dataset's catalog, which the running service loads at its next check."""
    import os

    import httpx
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    from base.processes import free_port, start, wait_until
    from scoring.decisions import SQLiteDecisionStore
    from tests.serving_fixtures import ADMIN_KEY, API_KEY, Server, stop_server, wait_ready_or_fail
    from tests.serving_fixtures import AS_OF as SERVED_AS_OF

    data = tmp_path / "plain" / served_home.dataset.name  # same dataset.yaml name: the same online store
    shutil.copytree(served_home.dataset, data, ignore=shutil.ignore_patterns(SYNTH_MARKER, "truth"))
    assert resolve_catalog_path(str(data)) is None
    snap = served_home.home / "features" / served_home.name / f"as_of={SERVED_AS_OF}"
    known = str(pd.read_parquet(snap, columns=["customer_id"]).customer_id.iloc[0])
    decisions = tmp_path / "decisions.sqlite"  # not the shared home's log
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "CVM_NO_AUTH", "CVM_CATALOG")}
    env.update({"CVM_API_KEYS": API_KEY, "CVM_ADMIN_KEYS": ADMIN_KEY, "MLFLOW_DISABLE_TELEMETRY": "true",
                "BENTOML_HOME": str(served_home.home / "bentoml"), "CVM_DECISIONS_URL": f"sqlite:///{decisions}"})
    # tests.serving_fixtures.start_server without its --catalog
    cmd = [sys.executable, "-m", "cvm.cli", "serve", "--port", str(port), "--dataset", str(data),
           "--home", str(served_home.home), "--reload-seconds", "1"]
    log = tmp_path / "server.log"
    server = Server(f"http://127.0.0.1:{port}", start(cmd, env=env, log=log, die_with_parent=True), log)
    try:
        wait_ready_or_fail(server)
        with server.client() as c:
            assert c.get("/readyz").status_code == 200
            r = c.post("/score", json={"customer_ids": [known, "no-one"], "reasons": False})
            assert r.status_code == 200, r.text
            assert [x["found"] for x in r.json()["results"]] == [True, False]
            r = c.post("/recommend", json={"customer_id": known, "k": 3})
            assert r.status_code == 404, r.text
            assert "no offer catalog configured" in r.json()["error"] and "cvm nbo init" in r.json()["error"]
            assert r.headers["cache-control"] == "no-store" and r.json()["request_id"]
            assert c.get("/readyz").status_code == 200  # still ready: the service is healthy
        store = SQLiteDecisionStore(decisions)
        assert store.count() == 0  # the refusal decided nothing
        assert "no offer catalog" in server.log_text()

        # cvm nbo init writes the dataset's catalog from the champion's categories; the server loads it
        monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
        monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        r = CliRunner().invoke(app, ["nbo", "init", "--dataset", str(data), "--home", str(served_home.home)])
        assert r.exit_code == 0, r.output
        assert "cross-sell champion" in r.output
        loaded = load_catalog(data / DATASET_CATALOG, served_home.categories)
        assert sorted(o.target_category for o in loaded.offers if o.type == "cross_sell") == sorted(
            served_home.categories)
        with server.client() as c:
            wait_until(lambda: c.post("/recommend", json={"customer_id": known, "k": 3}).status_code == 200,
                       proc=server.proc, timeout=60, interval=0.5, what="the catalog to be loaded", log=log)
        assert store.count() >= 1
        store.close()
    except httpx.HTTPError:
        pytest.fail(server.log_text()[-3000:])
    finally:
        stop_server(server)
