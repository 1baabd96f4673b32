"""Simulation coverage benchmark: over many seeds of `cvm simulate`, how often does the
measured lift's 95 % interval contain the true lift? (Target: at least 18 of 20 seeds for
the policy vs the control group.)

    python benchmarks/bench_simulation.py                        # 20 seeds, 3,000 customers, 28 days
    python benchmarks/bench_simulation.py --quick                # 3 seeds, 600 customers, 7 days
    python benchmarks/bench_simulation.py --home /tmp/sim-home   # reuse the dataset, snapshot, champions

Setup, once, in a scratch home (--home, default a new temporary directory; each step is
skipped when its output is already there): a synthetic dataset (``sources.synth.generate``;
--data-dir to reuse one), its feature snapshot built and published at --as-of, and the four
champions trained with small budgets (``cvm features build --publish`` and ``cvm train all``
as subprocesses, with an experiments directory of ``experiments/synthetic.yaml`` plus small
per-task budgets, as ``tests/serving_fixtures.py`` does). The catalog is
``tests.serving_fixtures.catalog_for`` restricted to its cross-sell offers (the simulated
outcome is buying in an offered category: the other offer types have no simulated effect),
with ``experiment: {salt: bench, control_share: --control-share, exploration_share: 0.1}``.

Then, in this process, ``batch.simulation.run_simulation`` for seeds 0..--seeds-1 from the
snapshot's day (the seed draws the visits, the rejects and the conversions; the dataset,
the champions and, unless --salt-per-seed, the arms are the same in every run). Prints a
per-seed table and the coverage summary; ``--write FILE`` also writes it as Markdown with
the command line and the machine. Exits 0 whatever the coverage (it is a benchmark) and
says "target met" or "target NOT met".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from base.dates import partition_dir  # once the repo is on sys.path
from base.home import Home
from tests.serving_fixtures import SMALL_TRAIN
from training.tasks import TASKS

PY = sys.executable
COMPARISONS = ("conversion_rate.policy_vs_control", "conversion_rate.policy_vs_exploration")
SHORT = {"conversion_rate.policy_vs_control": "policy vs control",
         "conversion_rate.policy_vs_exploration": "policy vs exploration"}
#: share of the seeds whose policy-vs-control interval must contain the truth (18 of 20)
TARGET_SHARE = 0.9
EXPLORATION_SHARE = 0.1
PRODUCTION_CONTROL_SHARE = 0.05
QUICK = {"seeds": 3, "customers": 600, "days": 7}
DEFAULTS = {"seeds": 20, "customers": 3000, "days": 28}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cli_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "CVM_HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true",
           "MLFLOW_LOGGING_LEVEL": "WARNING"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def cvm(args: list[str], home: Path, what: str) -> float:
    """``python -m cvm.cli ARGS --home HOME``; exits with its stderr's tail if it fails."""
    t = time.perf_counter()
    r = subprocess.run([PY, "-m", "cvm.cli", *args, "--home", str(home)], cwd=REPO, env=cli_env(home),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    if r.returncode:
        sys.exit(f"{what} failed (exit {r.returncode}):\n{r.stderr[-4000:]}")
    return time.perf_counter() - t


def ensure_dataset(data_dir: Path, customers: int, seed: int) -> dict:
    """The synthetic dataset in ``data_dir`` (generated unless already there); its _synth.json."""
    from sources.synth.writer import GENERATOR_VERSION, MARKER

    marker = data_dir / MARKER
    if marker.is_file():
        meta = json.loads(marker.read_text())
        if meta.get("generator_version", 0) >= GENERATOR_VERSION:
            if (meta.get("persons"), meta.get("seed")) != (customers, seed):
                log(f"reusing {data_dir}: {meta.get('persons')} customers, seed {meta.get('seed')} "
                    f"(not --customers {customers}, --data-seed {seed})")
            else:
                log(f"reusing dataset {data_dir}")
            return meta
        log(f"{data_dir} predates the ground-truth responses: regenerating it")
    from sources.synth import generate

    log(f"generating {customers:,} synthetic customers (seed {seed}) into {data_dir} ...")
    t = time.perf_counter()
    generate(data_dir, customers=customers, seed=seed)
    log(f"  {time.perf_counter() - t:.1f} s")
    return json.loads(marker.read_text())


def ensure_home(home: Path, data_dir: Path, as_of: str, scratch: Path) -> dict[str, float]:
    """Snapshot built and published at ``as_of``, and a champion for every task (each step
    skipped when its output exists). Returns the seconds of the steps that ran."""
    from sources.dataset import resolve_dataset

    exp = scratch / "experiments"
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "synthetic.yaml").write_text((REPO / "experiments" / "synthetic.yaml").read_text())
    for task in TASKS:
        (exp / f"{task}.yaml").write_text("extends: synthetic.yaml\n" + SMALL_TRAIN)  # the tests' budgets
    h = Home(home)
    name = resolve_dataset(str(data_dir), h).name
    took = {}
    if partition_dir(h.features(name), date.fromisoformat(as_of)).exists():
        log(f"reusing the feature snapshot of {name} at {as_of}")
    else:
        log(f"building and publishing the feature snapshot of {name} at {as_of} ...")
        took["features build"] = cvm(["features", "build", "--dataset", str(data_dir), "--as-of", as_of,
                                      "--publish", "--config", str(exp / "synthetic.yaml")], home,
                                     "cvm features build")
        log(f"  {took['features build']:.1f} s")
    missing = missing_champions(h)
    if not missing:
        log("reusing the four champions in the home's registry")
    else:
        log(f"training the champions ({', '.join(missing)} missing; small budgets) ...")
        took["train all"] = cvm(["train", "all", "--dataset", str(data_dir), "--as-of", as_of,
                                 "--experiments", str(exp)], home, "cvm train all")
        log(f"  {took['train all']:.1f} s")
        still = missing_champions(h)
        if still:
            sys.exit(f"cvm train all left no champion for {', '.join(still)}")
    return took


def missing_champions(h: Home) -> list[str]:
    from scoring.champions import RegistrySource

    if not (h.root / "mlflow" / "mlflow.db").exists():
        return list(TASKS)
    versions = RegistrySource(h.default_mlflow_uri()).versions()
    return [t for t in TASKS if t not in versions]


def make_catalog(categories: list[str], salt: str, control_share: float):
    from scoring.catalog import parse_catalog
    from tests.serving_fixtures import catalog_for

    data = catalog_for(categories)
    # cross-sell offers only: the simulated outcome (buying in an offered category) is what they move
    data["offers"] = [o for o in data["offers"] if o["type"] == "cross_sell"]
    data["experiment"] = {"salt": salt, "control_share": control_share, "exploration_share": EXPLORATION_SHARE}
    return parse_catalog(data, "bench catalog", categories=categories)


def run_seeds(home: Path, data_dir: Path, args, scratch: Path) -> tuple[list[dict], int]:
    import pandas as pd

    from batch.simulation import run_simulation
    from scoring.champions import RegistrySource, categories_of
    from sources.dataset import resolve_dataset

    h = Home(home)
    dataset = resolve_dataset(str(data_dir), h)
    champions = RegistrySource(h.mlflow_tracking_uri()).champions()
    categories = categories_of(champions)
    snap = partition_dir(h.features(dataset.name), date.fromisoformat(args.as_of))
    rows_in_snapshot = len(pd.read_parquet(snap, columns=["customer_id"]))
    start = date.fromisoformat(args.as_of)
    rows = []
    for seed in range(args.seeds):
        salt = f"bench-{seed}" if args.salt_per_seed else "bench"
        catalog = make_catalog(categories, salt, args.control_share)
        t = time.perf_counter()
        res = run_simulation(h, dataset, start, args.days, catalog=catalog, champions=champions, seed=seed,
                             visit_rate=args.visit_rate, out=scratch / f"sim-{seed}")
        seconds = time.perf_counter() - t
        arms = json.loads((res.out / "simulation.json").read_text())["arms"]
        row = {"seed": seed, "customers": res.customers, "decisions": res.decisions, "arms": arms,
               "seconds": seconds, "measured": res.measured}
        rows.append(row)
        pc = res.measured[COMPARISONS[0]]
        log(f"seed {seed:>3}: {res.customers:,} customers, {res.decisions:,} decisions, arms {arms}; "
            f"policy vs control true {pc['true']:+.4f}, measured {fmt_interval(pc)}, "
            f"{'covered' if pc['covered'] else 'NOT covered'}, {pc['verdict']}; {seconds:.1f} s")
    return rows, rows_in_snapshot


def missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_interval(m: dict) -> str:
    if missing(m["estimate"]):
        return "-"
    if missing(m["low"]) or missing(m["high"]):
        return f"{m['estimate']:+.4f} [-]"
    return f"{m['estimate']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}]"


def width(m: dict) -> float | None:
    return None if missing(m["low"]) or missing(m["high"]) else m["high"] - m["low"]


def binom_at_least(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))


def render(rows: list[dict], args, setup: dict, meta: dict, snapshot_rows: int, data_dir: Path) -> tuple[str, bool]:
    n = len(rows)
    target = math.ceil(TARGET_SHARE * n - 1e-9)
    cmd = shlex.join([Path(PY).name, *sys.argv])
    out = [(f"Simulation coverage benchmark (`cvm simulate` over {n} seeds; {platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.release()})"),
           "", f"Command: `{cmd}`", "",
           (f"Dataset: synthetic, {meta.get('persons', '?'):,} customers (generator seed {meta.get('seed', '?')}, "
            f"`{data_dir.name}`), {snapshot_rows:,} customers in the snapshot at {args.as_of}; simulated "
            f"{args.days} days from {args.as_of}, visit rate {args.visit_rate:g}; catalog: the cross-sell offers "
            f"only; experiment control_share {args.control_share:g}, exploration_share {EXPLORATION_SHARE:g}, salt "
            f"{'bench-<seed>' if args.salt_per_seed else 'bench'}; champions trained with small budgets"
            + (f" (setup this run: {', '.join(f'{k} {v:.0f} s' for k, v in setup.items())})" if setup else
               " (setup reused)") + "."), "",
           ("| seed | customers | decisions | control | exploration | policy | true lift p-c | measured p-c "
            "[95 % CI] | covered | verdict p-c | true lift p-e | measured p-e [95 % CI] | covered | verdict p-e "
            "| seconds |"),
           "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | ---: | --- | --- | --- | ---: |"]
    for r in rows:
        a = r["arms"]
        cells = [str(r["seed"]), f"{r['customers']:,}", f"{r['decisions']:,}", f"{a.get('control', 0):,}",
                 f"{a.get('exploration', 0):,}", f"{a.get('policy', 0):,}"]
        for key in COMPARISONS:
            m = r["measured"][key]
            cells += [f"{m['true']:+.4f}", fmt_interval(m), "yes" if m["covered"] else "NO", m["verdict"]]
        cells.append(f"{r['seconds']:.1f}")
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    met = False
    for key in COMPARISONS:
        ms = [r["measured"][key] for r in rows]
        covered = sum(m["covered"] for m in ms)
        trues = [m["true"] for m in ms if not missing(m["true"])]
        widths = [w for w in (width(m) for m in ms) if w is not None]
        verdicts = statistics.multimode([m["verdict"] for m in ms]) if ms else []
        line = (f"- {SHORT[key]}: the 95 % interval contains the true lift in **{covered} of {n}** seeds; "
                f"mean true lift {statistics.fmean(trues):+.4f}" if trues else f"- {SHORT[key]}: no true lift")
        line += (f", mean interval width {statistics.fmean(widths):.4f} ({len(widths)} intervals)" if widths
                 else ", no interval")
        line += f"; most common verdict: {', '.join(verdicts)}"
        if key == COMPARISONS[0]:
            met = covered >= target
            line += (f" — target >= {target} of {n} ({TARGET_SHARE:.0%}; 18 of 20): "
                     f"**{'target met' if met else 'target NOT met'}**")
        out.append(line)
    secs = [r["seconds"] for r in rows]
    out.append(f"- median seconds per simulation run: {statistics.median(secs):.1f} "
               f"(min {min(secs):.1f}, max {max(secs):.1f})")
    out += ["", "Notes:", "",
            (f"- control_share {args.control_share:g} rather than the production default "
             f"{PRODUCTION_CONTROL_SHARE:g}: at a few thousand customers 5 % would leave too few control customers "
             f"(about {PRODUCTION_CONTROL_SHARE * snapshot_rows:,.0f} here) for a usable interval."),
            ("- true lift (batch/simulation.py): policy vs control, the mean over the policy arm's customers of "
             "P(convert | the offers shown) - P(convert | no offer); policy vs exploration, the policy arm's mean "
             "P(convert | shown) minus the exploration arm's; both exact from the generator's truth/response."),
            ("- the seed draws the daily visits, the rejects and the conversions; the dataset and the champions are "
             "the same in every run, and so are the arms unless --salt-per-seed (a customer's arm is a hash of its id, "
             "the salt and the 90-day period), so the seeds are not fully independent replicates of the "
             "arm assignment."),
            (f"- if every interval had exactly 95 % coverage and the seeds were independent, P(covered >= {target} of "
             f"{n}) = {binom_at_least(target, n, 0.95):.2f}.")]
    return "\n".join(out) + "\n", met


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=None, help=f"seeds 0..N-1 (default {DEFAULTS['seeds']})")
    ap.add_argument("--customers", type=int, default=None,
                    help=f"customers of the generated dataset (default {DEFAULTS['customers']})")
    ap.add_argument("--days", type=int, default=None, help=f"simulated days (default {DEFAULTS['days']})")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the generated dataset")
    ap.add_argument("--visit-rate", type=float, default=0.1, help="share of the customers decided each day")
    ap.add_argument("--control-share", type=float, default=0.2, help="the catalog's experiment control_share")
    ap.add_argument("--salt-per-seed", action="store_true",
                    help="a different experiment salt per seed (re-draws the arms); default the same salt")
    ap.add_argument("--as-of", default="2025-07-01", help="snapshot day, the champions' as_of, first simulated day")
    ap.add_argument("--home", type=Path, default=None, help="scratch CVM home (default a new temporary directory)")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="the synthetic dataset directory, reused if already generated "
                         "(default <home>/bench-simulation/synth-<customers>)")
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke run: {QUICK['seeds']} seeds, {QUICK['customers']} customers, {QUICK['days']} days")
    ap.add_argument("--write", type=Path, help="also write the table as Markdown to this file")
    args = ap.parse_args()
    for k, v in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    date.fromisoformat(args.as_of)
    if args.seeds < 1 or args.days < 1 or args.customers < 1:
        ap.error("--seeds, --days and --customers must be at least 1")
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the home's own registry, in this process too
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

    home = (args.home or Path(tempfile.mkdtemp(prefix="cvm-bench-sim-"))).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    scratch = home / "bench-simulation"
    scratch.mkdir(exist_ok=True)
    data_dir = (args.data_dir or scratch / f"synth-{args.customers}").expanduser().resolve()
    log(f"home {home}")
    meta = ensure_dataset(data_dir, args.customers, args.data_seed)
    setup = ensure_home(home, data_dir, args.as_of, scratch)
    rows, snapshot_rows = run_seeds(home, data_dir, args, scratch)
    text, met = render(rows, args, setup, meta, snapshot_rows, data_dir)
    print(text, end="")
    print("target met" if met else "target NOT met")
    if args.write:
        args.write.write_text(text)
        log(f"wrote {args.write}")


if __name__ == "__main__":
    main()
