"""The scoring service as other systems see it: a real ``cvm serve`` (BentoML) process over
HTTP, on a synthetic dataset with four trained champions."""

from __future__ import annotations

import gzip
import json
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from scoring.champions import RegistrySource
from tests.serving_fixtures import ADMIN_KEY, API_KEY, AS_OF, start_server, stop_server

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def snapshot(served_home) -> pd.DataFrame:
    return pd.read_parquet(served_home.home / "features" / served_home.name / f"as_of={AS_OF}")


def test_probes_and_openapi_are_public(server):
    for path in ("/readyz", "/livez", "/healthz"):
        assert httpx.get(server.url + path).status_code == 200, path
    spec = httpx.get(server.url + "/docs.json").json()
    for path in ("/score", "/recommend", "/admin/reload"):
        assert path in spec["paths"], sorted(spec["paths"])
    body = spec["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    text = str(spec)
    assert "customer_ids" in text and "maxItems" in text and "1000" in text, body
    assert "expected_value" in text and "churn_probability" in text  # responses are documented


@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"Authorization": "Bearer wrong-key-0123456789abcdef"}, 401),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
    ({"Authorization": f"Bearer {API_KEY}"}, 200),
])
def test_api_key_required(server, headers, status):
    r = httpx.post(server.url + "/score", json={"customer_ids": ["x"]}, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["x-request-id"]
    if status == 401:
        assert "key" in r.json()["error"].lower() or "authorization" in r.json()["error"].lower()
        assert r.headers["www-authenticate"] == "Bearer"


def test_key_in_query_string_is_refused(server):
    r = httpx.post(server.url + f"/score?api_key={API_KEY}", json={"customer_ids": ["x"]},
                   headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 401 and "URL" in r.json()["error"]


def test_admin_reload_needs_the_admin_key(server):
    with server.client() as c:
        assert c.post("/admin/reload", json={}).status_code == 403
    with server.client(ADMIN_KEY) as c:
        r = c.post("/admin/reload", json={})
    assert r.status_code == 200, r.text
    assert set(r.json()["model_versions"]) == {"churn", "next-purchase", "cross-sell", "clv"}


def test_score_matches_the_models_on_the_snapshot(server, served_home, snapshot, tmp_path):
    """Every score equals the champion TaskModel's own predict on the snapshot row."""
    import mlflow

    ids = snapshot.customer_id.iloc[:25].tolist()
    with server.client() as c:
        r = c.post("/score", json={"customer_ids": ids}, headers={"X-Request-ID": "abc-123"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["x-request-id"] == body["request_id"] == "abc-123"
    assert r.headers["x-model-versions"] == "churn=1,next-purchase=1,cross-sell=1,clv=1"
    assert body["as_of"] == AS_OF and body["model_versions"]["churn"] == "1"
    results = body["results"]
    assert [x["customer_id"] for x in results] == ids

    uri = f"sqlite:///{served_home.home / 'mlflow' / 'mlflow.db'}"
    rows = snapshot.iloc[:25].reset_index(drop=True)
    expected = {}
    for task in ("churn", "next-purchase", "cross-sell", "clv"):
        version = RegistrySource(uri).versions()[task]
        local = RegistrySource(uri).download(f"cvm-{task}", version, str(tmp_path / task))
        m = mlflow.pyfunc.load_model(local).unwrap_python_model().model
        expected[task] = m.predict(rows)
    for i, item in enumerate(results):
        assert item["found"] is True and item["rfm_segment"] == rows.rfm_segment[i]
        assert item["churn_probability"] == pytest.approx(expected["churn"].churn_probability[i], abs=1e-6)
        assert item["next_purchase_probability"] == pytest.approx(
            expected["next-purchase"].next_purchase_probability[i], abs=1e-6)
        assert item["expected_orders"] == pytest.approx(expected["next-purchase"].expected_orders[i], abs=1e-6)
        assert item["clv"] == pytest.approx(expected["clv"].clv[i], abs=1e-6)
        xs = expected["cross-sell"].drop(columns="customer_id").iloc[i].dropna().sort_values(ascending=False)
        assert [round(p, 6) for p in xs.iloc[:3]] == [x["probability"] for x in item["cross_sell"]]
        assert set(item["reasons"]) == {"churn", "next_purchase", "clv"}
        for reasons in item["reasons"].values():
            assert 1 <= len(reasons) <= 3
            contrib = [abs(r["contribution"]) for r in reasons]
            assert contrib == sorted(contrib, reverse=True)


def test_reasons_can_be_turned_off(server, snapshot):
    with server.client() as c:
        r = c.post("/score", json={"customer_ids": snapshot.customer_id.iloc[:3].tolist(), "reasons": False})
    assert r.status_code == 200
    assert all(x["reasons"] == {} for x in r.json()["results"])


def test_unknown_customer_gets_a_cold_start_answer(server):
    with server.client() as c:
        r = c.post("/score", json={"customer_ids": ["no-such-customer"]})
        rec = c.post("/recommend", json={"customer_id": "no-such-customer", "k": 3})
    assert r.status_code == 200, r.text
    item = r.json()["results"][0]
    assert item["found"] is False and item["rfm_segment"] is None and "prior" in item["cold_start"]
    for key in ("churn_probability", "next_purchase_probability", "clv"):
        assert item[key] is not None and np.isfinite(item[key])
    assert rec.status_code == 200, rec.text
    answer = rec.json()
    assert answer["found"] is False and "prior" in answer["cold_start"]
    assert "loy" not in [o["offer_id"] for o in answer["offers"]]  # known customers only


@pytest.mark.parametrize("body, field", [
    ({"customer_ids": [1, 2]}, "customer_ids"),
    ({"customer_ids": "abc"}, "customer_ids"),
    ({"customer_ids": []}, "customer_ids"),
    ({"customer_ids": [""]}, "customer_ids"),
    ({}, "customer_ids"),
    ({"customer_ids": ["1"], "reasons": "maybe"}, "reasons"),
])
def test_bad_score_input_is_a_4xx_naming_the_field(server, body, field):
    with server.client() as c:
        r = c.post("/score", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert field in r.text


def test_malformed_json_is_a_4xx(server):
    with server.client() as c:
        r = c.post("/score", content=b'{"customer_ids": ["1"', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "json" in r.text.lower()


# ------------------------------------------------------------------ bodies the API cannot read
# The API takes JSON objects. Content in a media type (or charset, or coding) it does not take
# is 415 Unsupported Media Type (RFC 9110 15.5.16); content it takes but that is malformed (not
# UTF-8, not JSON, JSON but not an object) is 400 Bad Request (RFC 9110 15.5.1). Neither is
# ever a 5xx, and the refusal names the problem without echoing the body.

PII = "mia.refused.2207@example.com"  # in every refused body: must come back in no answer and no log line
BODIES = {"/score": {"customer_ids": [PII]}, "/recommend": {"customer_id": PII}}
#: how to send a body the API cannot read -> what the 415's error names
UNREADABLE = {
    "multipart": (lambda b: {"files": {k: (None, json.dumps(v)) for k, v in b.items()}}, "'multipart/form-data'"),
    "form": (lambda b: {"data": {k: json.dumps(v) for k, v in b.items()}}, "'application/x-www-form-urlencoded'"),
    "text/plain": (lambda b: {"content": json.dumps(b), "headers": {"Content-Type": "text/plain"}}, "'text/plain'"),
    "no Content-Type": (lambda b: {"content": json.dumps(b).encode()}, "missing Content-Type"),
    "latin-1": (lambda b: {"content": json.dumps(b).encode("latin-1"),
                           "headers": {"Content-Type": "application/json; charset=latin-1"}}, "'latin-1'"),
    "gzip": (lambda b: {"content": gzip.compress(json.dumps(b).encode()),
                        "headers": {"Content-Type": "application/json", "Content-Encoding": "gzip"}}, "'gzip'"),
}


def _refusal(r: httpx.Response, status: int) -> str:
    """The middleware's refusal: ``status``, JSON ``{"error", "request_id"}`` (the id also in the
    header), nothing of the body in it. Returns the error."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "request_id"} and body["request_id"] == r.headers["x-request-id"], body
    assert PII not in r.text and "customer_id" not in r.text
    return body["error"]


@pytest.mark.parametrize("path", ["/score", "/recommend"])
def test_the_multipart_curl_is_a_415_naming_the_media_type(server, path):
    """``curl -X POST -H 'Content-Type: multipart/form-data' -d '{"customer_ids": ["1"]}'``:
    a multipart type without boundary around a JSON body. It was a 500 (BentoML parses
    multipart bodies as forms, and fails on the missing boundary)."""
    with server.client() as c:
        r = c.post(path, content=json.dumps(BODIES[path]).encode(), headers={"Content-Type": "multipart/form-data"})
    assert "'multipart/form-data'" in _refusal(r, 415)
    assert r.headers["accept"] == "application/json"  # what it takes instead (RFC 9110 12.5.1)


@pytest.mark.parametrize("how", list(UNREADABLE))
@pytest.mark.parametrize("path", ["/score", "/recommend"])
def test_a_body_in_a_format_the_api_does_not_take_is_a_415(server, path, how):
    send, named = UNREADABLE[how]
    with server.client() as c:
        r = c.post(path, **send(BODIES[path]))
    assert named in _refusal(r, 415)


def test_every_api_route_refuses_what_it_cannot_read(server):
    """Whatever the routes are (the OpenAPI document's POST operations, admin ones included)."""
    paths = [p for p, ops in httpx.get(server.url + "/docs.json").json()["paths"].items() if "post" in ops]
    assert {"/score", "/recommend", "/admin/reload"} <= set(paths)
    for path in paths:
        with server.client(ADMIN_KEY if path.startswith("/admin/") else API_KEY) as c:
            multipart = c.post(path, content=b'{"a": 1}', headers={"Content-Type": "multipart/form-data"})
            listed = c.post(path, content=b"[]", headers={"Content-Type": "application/json"})
        assert "multipart/form-data" in _refusal(multipart, 415), path
        assert "JSON object" in _refusal(listed, 400), path


@pytest.mark.parametrize("content, named", [
    (b'{"customer_ids": ["' + PII.encode() + b'"', "not valid JSON: EOF while parsing"),
    (b'{"customer_ids": ["' + PII.encode() + b'"]} and more', "not valid JSON: trailing characters"),
    (b"{'customer_ids': ['" + PII.encode() + b"']}", "not valid JSON"),
    (b"[" * 1000 + b"]" * 1000, "not valid JSON: recursion limit exceeded"),
    (b'{"customer_ids": ["\xff' + PII.encode() + b'"]}', "not valid UTF-8"),
])
@pytest.mark.parametrize("path", ["/score", "/recommend"])
def test_a_body_that_is_not_json_is_a_400(server, path, content, named):
    with server.client() as c:
        r = c.post(path, content=content, headers={"Content-Type": "application/json"})
    assert named in _refusal(r, 400)


@pytest.mark.parametrize("content, kind", [
    (b'[{"customer_ids": ["' + PII.encode() + b'"]}]', "an array"),
    (b'"' + PII.encode() + b'"', "a string"),
    (b"42", "a number"),
    (b"true", "a boolean"),
    (b"null", "null"),
])
@pytest.mark.parametrize("path", ["/score", "/recommend"])
def test_json_that_is_not_an_object_is_a_400(server, path, content, kind):
    with server.client() as c:
        r = c.post(path, content=content, headers={"Content-Type": "application/json"})
    assert f"must be a JSON object, not {kind}" in _refusal(r, 400)


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          'Application/JSON; charset="UTF-8"'])
def test_json_objects_are_still_served(server, content_type):
    body = {"customer_ids": ["fmt-check-1"], "reasons": False}
    with server.client() as c:
        scored = c.post("/score", content=json.dumps(body).encode(), headers={"Content-Type": content_type})
        rec = c.post("/recommend", content=json.dumps({"customer_id": "fmt-check-1", "k": 2}).encode(),
                     headers={"Content-Type": content_type})
    assert scored.status_code == 200, scored.text
    assert [x["customer_id"] for x in scored.json()["results"]] == ["fmt-check-1"]
    assert rec.status_code == 200, rec.text
    assert rec.json()["customer_id"] == "fmt-check-1"


def test_an_empty_body_needs_no_content_type(server):
    """No content, nothing to type: the admin reload takes no input; a score without its
    fields is the API's own 400 naming them (BentoML reads an empty body as {})."""
    with server.client(ADMIN_KEY) as c:
        reload = c.post("/admin/reload")
    with server.client() as c:
        score = c.post("/score")
    assert reload.status_code == 200, reload.text
    assert score.status_code == 400 and "customer_ids" in score.json()["error"], score.text
    assert score.json()["request_id"] == score.headers["x-request-id"]


def test_refused_bodies_are_not_logged(server):
    with server.client() as c:
        for path, body in BODIES.items():
            assert c.post(path, content=json.dumps(body).encode(),
                          headers={"Content-Type": "multipart/form-data"}).status_code == 415
            assert c.post(path, content=b"[" + json.dumps(body).encode(),
                          headers={"Content-Type": "application/json"}).status_code == 400
    time.sleep(0.5)
    log = server.log_text()
    assert "refused POST /score: 415 unsupported media type 'multipart/form-data'" in log
    assert PII not in log


def test_oversized_bodies_are_refused(server):
    big = b'{"customer_ids": ["' + b"x" * (2 << 20) + b'"]}'

    def chunks():
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    with server.client() as c:
        sized = c.post("/score", content=big, headers={"Content-Type": "application/json"})
        chunked = c.post("/score", content=chunks(), headers={"Content-Type": "application/json"})
        small_chunked = c.post("/score", content=iter([b'{"customer_ids": ', b'["a"]}']),
                               headers={"Content-Type": "application/json"})
    assert sized.status_code == 413 and "too large" in sized.json()["error"]
    assert chunked.status_code == 413
    assert small_chunked.status_code == 200, small_chunked.text


def test_the_1000_id_limit(server, snapshot):
    ids = (snapshot.customer_id.tolist() * 3)[:1000]
    with server.client() as c:
        ok = c.post("/score", json={"customer_ids": ids})
        too_many = c.post("/score", json={"customer_ids": ids + ["one-more"]})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 1000
    assert too_many.status_code == 400 and "1000" in too_many.text


@pytest.mark.parametrize("body, field", [
    ({"customer_id": "1", "k": 0}, "k"),
    ({"customer_id": "1", "k": "three"}, "k"),
    ({"customer_id": 5}, "customer_id"),
    ({"customer_id": "1", "channel": "carrier-pigeon"}, "channel"),
    ({"customer_id": "1", "exclude_offer_ids": "ret"}, "exclude_offer_ids"),
])
def test_bad_recommend_input_is_a_4xx_naming_the_field(server, body, field):
    with server.client() as c:
        r = c.post("/recommend", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert field in r.text


def test_recommend_ranks_by_expected_value_and_honours_filters(server, served_home, snapshot):
    catalog = yaml.safe_load(served_home.catalog.read_text())
    offers = {o["id"]: o for o in catalog["offers"]}
    seen_offers = 0
    arms = {"policy": 0, "exploration": 0, "control": 0}
    with server.client() as c:
        for cid in snapshot.customer_id.iloc[:40]:
            r = c.post("/recommend", json={"customer_id": cid, "k": 3})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["decision_id"] and body["arm"] in ("policy", "exploration", "control")
            assert 0 < body["pscore"] <= 1
            evs = [o["expected_value"] for o in body["offers"]]
            # exploration shows a random eligible offer first, then the policy's order
            ranked = evs if body["arm"] == "policy" else evs[1:]
            assert ranked == sorted(ranked, reverse=True) and len(evs) <= 3
            if body["arm"] == "control":  # held out: no offer, and the answer says why
                assert evs == [] and ("control group" in (body.get("control_group") or "")
                                      or body["no_offer_reasons"])
            arms[body["arm"]] += 1
            for o in body["offers"]:
                spec = offers[o["offer_id"]]
                lever = spec.get("lever", 1.0)
                assert o["expected_value"] == pytest.approx(o["propensity"] * o["value"] * lever - spec["cost"],
                                                            abs=1e-3)
                assert o["expected_value"] > 0 and o["reasons"]
            seen_offers += len(body["offers"])
            # each answer is a logged contact: release it (never shown) so the next call for this
            # customer is not held back by the offer's cooldown or the caps
            released = c.post("/outcomes", json={"outcomes": [{
                "outcome_id": f"release-{body['decision_id']}", "decision_id": body["decision_id"],
                "type": "not_shown", "timestamp": "2026-01-01T00:00:00Z"}]})
            assert released.status_code == 200 and released.json()["released"] == 1, released.text
            if body["offers"]:
                best = body["offers"][0]["offer_id"]
                again = c.post("/recommend", json={"customer_id": cid, "k": 3, "exclude_offer_ids": [best]}).json()
                assert best not in [o["offer_id"] for o in again["offers"]]
            sms = c.post("/recommend", json={"customer_id": cid, "k": 5, "channel": "sms"}).json()
            assert all("sms" in offers[o["offer_id"]]["channels"] for o in sms["offers"])
            assert all(o["channel"] == "sms" for o in sms["offers"])
    assert seen_offers > 0, "no customer got any offer: the catalog or the engine is broken"
    assert arms["policy"] > arms["exploration"] + arms["control"]


def test_metrics_endpoint_counts_customers(server):
    with server.client() as c:
        c.post("/score", json={"customer_ids": ["a-customer-nobody-has"]})
    text = httpx.get(server.url + "/metrics").text
    assert "cvm_customers_scored_total" in text
    assert "bentoml_service_request_total" in text or "bentoml_api_server_request_total" in text


def test_no_customer_identifiers_in_the_logs(server):
    email = "jane.doe.4471@example.com"
    with server.client() as c:
        assert c.post("/score", json={"customer_ids": [email, "+447700900123"]}).status_code == 200
        assert c.post("/recommend", json={"customer_id": email}).status_code == 200
    time.sleep(0.5)
    log = server.log_text()
    assert "request_id=" in log  # our log lines carry the request id
    assert email not in log and "447700900123" not in log


def test_hot_reload_under_concurrent_requests(served_home, snapshot, tmp_path):
    """Promoting a new champion while clients call the service: it switches within the
    polling interval, and no request fails meanwhile."""
    from training import registry

    srv = start_server(served_home, tmp_path / "reload.log", reload_seconds=1.0)
    client = MlflowClient(f"sqlite:///{served_home.home / 'mlflow' / 'mlflow.db'}")
    name = "cvm-churn"
    v1 = client.get_model_version(name, "1")
    failures: list[str] = []
    versions_seen: set[str] = set()
    stop = threading.Event()
    ids = snapshot.customer_id.iloc[:5].tolist()

    def hammer() -> None:
        with srv.client() as c:
            while not stop.is_set():
                try:
                    r = c.post("/score", json={"customer_ids": ids})
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                    else:
                        versions_seen.add(r.headers["x-model-versions"])
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    new = None
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)
        # the same artifacts as a new version (a models:/m-... source would make MLflow look the
        # logged model up through its process-wide tracking URI, not this client's)
        new = client.create_model_version(name, client.get_model_version_download_uri(name, "1"),
                                          run_id=v1.run_id, tags=v1.tags)
        registry.promote(client, "churn", str(new.version), reason="test")
        deadline = time.monotonic() + 20
        want = f"churn={new.version},"
        while time.monotonic() < deadline and not any(v.startswith(want) for v in versions_seen):
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        if new is not None:
            registry.rollback(client, "churn")
        stop_server(srv)
    assert not failures, failures[:5]
    assert any(v.startswith("churn=1,") for v in versions_seen)
    assert any(v.startswith(want) for v in versions_seen), versions_seen


def test_serve_refuses_a_bad_catalog_and_missing_keys(served_home, tmp_path, monkeypatch):
    from cvm.cli import app

    bad = yaml.safe_load(served_home.catalog.read_text())
    bad["offers"][0]["target_category"] = "NO SUCH CATEGORY"
    bad["offers"][1]["colour"] = "blue"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    monkeypatch.setenv("CVM_API_KEYS", API_KEY)
    r = CliRunner().invoke(app, ["nbo", "check", str(path), "--home", str(served_home.home)])
    assert r.exit_code == 2
    assert "colour" in r.output and "Extra inputs are not permitted" in r.output
    bad["offers"][1].pop("colour")
    path.write_text(yaml.safe_dump(bad))
    r = CliRunner().invoke(app, ["nbo", "check", str(path), "--home", str(served_home.home)])
    assert r.exit_code == 2 and "NO SUCH CATEGORY" in r.output and "xs-0" in r.output

    monkeypatch.delenv("CVM_API_KEYS")
    monkeypatch.delenv("CVM_API_KEYS_FILE", raising=False)
    r = CliRunner().invoke(app, ["serve", "--dataset", str(served_home.dataset), "--catalog",
                                 str(served_home.catalog), "--home", str(served_home.home)])
    assert r.exit_code == 2 and "CVM_API_KEYS" in r.output


def test_bento_serves_without_mlflow(served_home, tmp_path):
    """`cvm bento` packs champions, snapshot (with its contact history) and catalog; the built
    Bento serves with no MLflow registry reachable and an empty CVM_HOME, and applies the
    contact caps: a customer at the cap gets no offer, one without contacts gets offers."""
    import os
    import subprocess
    import sys

    from base.processes import free_port, start
    from features.snapshot import read_contacts
    from scoring.catalog import parse_catalog
    from scoring.contacts import ContactHistory
    from tests.serving_fixtures import REPO, Server, catalog_for, stop_server, wait_ready_or_fail

    # one contact in the 60 days before as_of reaches this catalog's cap
    capped = catalog_for(served_home.categories)
    capped["contact_policy"]["caps"] = [{"max_contacts": 1, "window_days": 60}]
    catalog = tmp_path / "capped.yaml"
    catalog.write_text(yaml.safe_dump(capped, sort_keys=False))
    snap_dir = served_home.home / "features" / served_home.name / f"as_of={AS_OF}"
    history = ContactHistory.from_frame(read_contacts(snap_dir), pd.Timestamp(AS_OF).date())
    ids = pd.read_parquet(snap_dir, columns=["customer_id"]).customer_id.astype(str).tolist()
    at_cap = history.state(ids, parse_catalog(capped)).total[:, 0] >= 1
    assert 0 < at_cap.sum() < len(ids)

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"BENTOML_HOME": str(tmp_path / "bentoml"), "MLFLOW_DISABLE_TELEMETRY": "true"})
    built = subprocess.run([sys.executable, "-m", "cvm.cli", "bento", "--dataset", str(served_home.dataset),
                            "--catalog", str(catalog), "--home", str(served_home.home)],
                           env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "packed cvm-churn:" in built.stdout and "packed cvm-online-snapshot:" in built.stdout

    port = free_port()
    empty = tmp_path / "empty-home"
    empty.mkdir()
    env.update({"CVM_HOME": str(empty), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "CVM_API_KEYS": API_KEY})
    log = tmp_path / "bento.log"
    proc = start([sys.executable, "-m", "bentoml", "serve", "cvm-scoring:latest", "--port", str(port)], env=env,
                 cwd=tmp_path, log=log)
    srv = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_ready_or_fail(srv)
        with srv.client() as c:
            r = c.post("/score", json={"customer_ids": ["no-one", "1"]})
            assert r.status_code == 200, r.text
            assert r.json()["model_versions"] == {"churn": "1", "next-purchase": "1", "cross-sell": "1", "clv": "1"}
            assert r.json()["as_of"] == AS_OF
            capped_answers = [c.post("/recommend", json={"customer_id": cid, "k": 3}).json()
                              for cid in np.asarray(ids)[at_cap][:5]]
            free = [c.post("/recommend", json={"customer_id": cid, "k": 3}).json()
                    for cid in np.asarray(ids)[~at_cap][:20]]
        for answer in capped_answers:
            assert answer["offers"] == [], answer
            assert "contact cap reached" in answer["no_offer_reasons"].values(), answer
        assert any(answer["offers"] for answer in free)
        assert not any("contact cap reached" in (a.get("no_offer_reasons") or {}).values() for a in free)
    finally:
        stop_server(srv)


def test_events_are_durable_idempotent_and_named_by_identifier(server, served_home):
    """POST /events: written before the answer, a replay is a duplicate, a bad event refuses the
    batch naming it, and an email (any spelling the resolver accepts) names its golden record."""
    import sqlite3

    profiles = sorted((served_home.home / "profiles" / served_home.name).glob("*/identifiers.parquet"))
    assert profiles, "identity resolution wrote no identifier index"
    index = pd.read_parquet(profiles[-1])
    email = index[index["id_type"] == "email"].iloc[0]
    batch = [
        {"event_id": "ev-1", "customer_id": "C-known", "type": "add_to_cart", "timestamp": "2025-07-01T10:00:00Z",
         "properties": {"category": "dairy"}},
        {"event_id": "ev-2", "identifier": {"type": "email", "value": f"  {email['value'].upper()} "},
         "type": "purchase", "timestamp": "2025-07-01T10:05:00+01:00", "properties": {"order_id": "o-9", "amount": 12.5}},
    ]
    db = served_home.home / "events" / served_home.name / "events.sqlite"
    with server.client() as c:
        r = c.post("/events", json={"events": batch})
        assert r.status_code == 200, r.text
        assert (r.json()["written"], r.json()["duplicates"]) == (2, 0)
        with sqlite3.connect(db) as con:  # on disk when the answer came
            rows = dict(con.execute("SELECT event_id, customer_id FROM events WHERE event_id LIKE 'ev-%'").fetchall())
        assert rows == {"ev-1": "C-known", "ev-2": email["customer_id"]}
        again = c.post("/events", json={"events": batch}).json()
        assert (again["written"], again["duplicates"]) == (0, 2)
        bad = c.post("/events", json={"events": [dict(batch[0], event_id="ev-3"),
                                                 dict(batch[1], event_id="ev-4", properties={"amount": 1.0})]})
        assert bad.status_code == 422
        assert "events[1] (event_id 'ev-4'): properties.order_id" in bad.json()["error"]
        too_many = c.post("/events", json={"events": [dict(batch[0], event_id=f"x{i}") for i in range(1001)]})
        assert too_many.status_code in (400, 422) and "1000" in too_many.text
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM events WHERE event_id IN ('ev-3', 'ev-4')").fetchone()[0] == 0
    assert email["value"] not in server.log_text()  # no identifier in the logs


def test_score_and_recommend_use_the_vector_fresh_to_the_last_event(server, served_home):
    """An acknowledged event is in the next /score of its customer: the vector as of the next
    morning (features.fresh), and the answer says so; a customer without events keeps the snapshot's."""
    snap = pd.read_parquet(served_home.home / "features" / served_home.name / f"as_of={AS_OF}",
                           columns=["customer_id", "orders_total"])
    cid, other = snap["customer_id"].iloc[-1], snap["customer_id"].iloc[-2]
    buy = {"event_id": "fresh-1", "customer_id": cid, "type": "purchase", "timestamp": f"{AS_OF}T09:30:00Z",
           "properties": {"order_id": "fresh-o1", "amount": 25.0}}
    with server.client() as c:
        assert c.post("/events", json={"events": [buy]}).status_code == 200
        results = c.post("/score", json={"customer_ids": [cid, other], "reasons": False}).json()["results"]
        fresh, stale = results[0]["freshness"], results[1]["freshness"]
        assert (fresh["source"], fresh["events_applied"], fresh["vector_as_of"]) == ("events", 1, "2025-07-02")
        assert fresh["snapshot_as_of"] == AS_OF and fresh["last_event_at"] == f"{AS_OF}T09:30:00Z"
        assert (stale["source"], stale["events_applied"], stale["vector_as_of"]) == ("snapshot", 0, AS_OF)
        view = dict(buy, event_id="fresh-2", type="view", timestamp=f"{AS_OF}T09:40:00Z", properties={})
        assert c.post("/events", json={"events": [view]}).status_code == 200
        again = c.post("/score", json={"customer_ids": [cid], "reasons": False}).json()["results"][0]
        assert again["freshness"]["events_applied"] == 2
        rec = c.post("/recommend", json={"customer_id": cid})
        assert rec.status_code == 200, rec.text  # the decision saw the fresh vector too
        assert rec.json()["freshness"]["events_applied"] == 2


def test_extreme_events_get_their_documented_answers(server):
    """A 1 MB property blob is refused before it is read (413: the 1 MiB body limit); a 20 KB one is a
    422 naming the event and its properties (16 KB at most); a timestamp beyond the allowed skew a 422
    naming it; nothing of any of these batches is written."""
    import datetime as dt

    ok = {"event_id": "x-ok", "customer_id": "C-1", "type": "view", "timestamp": "2025-07-01T10:00:00Z"}
    ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    with server.client() as c:
        huge = c.post("/events", json={"events": [dict(ok, event_id="x-huge", properties={"blob": "x" * (1 << 20)})]})
        assert huge.status_code == 413 and "too large" in huge.json()["error"]
        wide = c.post("/events", json={"events": [ok, dict(ok, event_id="x-wide", properties={"blob": "x" * 20_000})]})
        assert wide.status_code == 422 and "events[1] (event_id 'x-wide'): properties" in wide.json()["error"]
        late = c.post("/events", json={"events": [dict(ok, event_id="x-ahead", timestamp=ahead)]})
        assert late.status_code == 422 and "events[0] (event_id 'x-ahead'): timestamp" in late.json()["error"]
        again = c.post("/events", json={"events": [ok]}).json()
    assert again["written"] == 1  # x-ok was not written by the refused batch before
