"""DREBIN benchmarks: (a) load time and peak memory of the release loader at the real release's scale; (b) attacked
malware per second of the feature-addition attack on DREBIN-215.

    python bench/drebin.py                               # synthetic release: 130,000 apps x ~40 features of 500,000
    python bench/drebin.py --apps 20000 --names 100000   # a quicker, smaller one
    python bench/drebin.py --folder PATH/drebin          # the real release (feature_vectors/ + sha256_family.csv)
    python bench/drebin.py --attack-csv ../shared/data/drebin215/drebin215.csv   # part (b) only

Part (a): writes a synthetic DREBIN-layout release (one ``prefix::value`` file per app, named by a SHA-256, and
``sha256_family.csv``) into a temporary folder, then loads it with ``load_drebin_folder`` in a fresh Python process
and prints the load time and that process's peak resident memory (VmHWM, else ``getrusage`` max RSS), with the
RSS it had after its imports, before loading, for reference. The files were just written, so they are read from
the page cache: a cold-cache read of the real release off a disk will be slower.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PREFIXES = ["api_call::android/telephony/Api{}/Class;->call", "permission::android.permission.PERM_{}",
            "intent::android.intent.action.ACTION_{}", "activity::com.example.app{}.MainActivity",
            "url::http://host{}.example.com/path", "call::method{}", "real_permission::android.permission.REAL_{}",
            "service_receiver::com.example.receiver{}.Receiver", "provider::com.example.provider{}",
            "feature::android.hardware.feature{}"]

# runs in a fresh process, so its peak RSS is the loading's (plus the interpreter and imports, printed apart)
# (Linux's VmHWM: getrusage's max RSS would also count the parent's RSS at the fork, as exec keeps it)
_CHILD = """
import json, resource, sys, time
from transferlab.datasets import load_drebin_folder

def peak_rss_kib():
    try:
        with open("/proc/self/status") as fh:
            return int(next(line for line in fh if line.startswith("VmHWM:")).split()[1])
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

before = peak_rss_kib()
start = time.perf_counter()
ds = load_drebin_folder(sys.argv[1])
seconds = time.perf_counter() - start
peak = peak_rss_kib()
print(json.dumps({"seconds": seconds, "rss_before_kib": before, "rss_peak_kib": peak, "shape": list(ds.X.shape),
                  "nnz": int(ds.X.nnz), "malware": int(ds.y.sum()), "description": ds.description}))
"""


def write_synthetic_release(folder: Path, n_apps: int, n_names: int, per_app: int = 40, n_malware: int = 5560,
                            seed: int = 0) -> None:
    """A DREBIN-layout release in ``folder``: ``n_apps`` files of about ``per_app`` features each (Poisson), drawn
    from ``n_names`` names with a mild power-law popularity (a few features are common, most are rare), and a
    ``sha256_family.csv`` naming ``n_malware`` of the apps."""
    rng = np.random.default_rng(seed)
    names = np.array([PREFIXES[i % len(PREFIXES)].format(i) for i in range(n_names)], dtype=object)
    weights = 1.0 / np.sqrt(np.arange(1, n_names + 1))
    sizes = np.maximum(rng.poisson(per_app, size=n_apps), 1)
    drawn = rng.choice(n_names, size=int(sizes.sum()), p=weights / weights.sum())
    bounds = np.r_[0, np.cumsum(sizes)]
    shas = [hashlib.sha256(f"synthetic-app-{i}".encode()).hexdigest() for i in range(n_apps)]
    features = folder / "feature_vectors"
    features.mkdir(parents=True, exist_ok=True)
    for i, sha in enumerate(shas):
        (features / sha).write_text("\n".join(names[drawn[bounds[i]:bounds[i + 1]]]) + "\n")
    malware = rng.choice(n_apps, size=min(n_malware, n_apps - 1), replace=False)
    rows = "".join(f"{shas[i]},Family{i % 179}\n" for i in np.sort(malware))
    (folder / "sha256_family.csv").write_text("sha256,family\n" + rows)


def measure_load(folder: Path) -> dict:
    """Load the release at ``folder`` in a fresh Python process: seconds, RSS before/peak (KiB), shape, nnz."""
    done = subprocess.run([sys.executable, "-c", _CHILD, str(folder)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"loading failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_load(args: argparse.Namespace) -> None:
    """Part (a): write (or take) a release, load it, print time and peak memory."""
    with tempfile.TemporaryDirectory(prefix="drebin-bench-") as tmp:
        if args.folder:
            folder = Path(args.folder)
        else:
            folder = Path(tmp)
            start = time.perf_counter()
            write_synthetic_release(folder, args.apps, args.names, args.per_app, args.malware, args.seed)
            print(f"wrote {args.apps:,} apps (~{args.per_app} features each, from {args.names:,} names) "
                  f"in {time.perf_counter() - start:.1f} s")
        for run in range(1, args.repeat + 1):
            r = measure_load(folder)
            print(f"load_drebin_folder, run {run}: {r['seconds']:.1f} s, peak RSS {r['rss_peak_kib'] / 2**20:.2f} GiB "
                  f"({r['rss_before_kib'] / 2**10:.0f} MiB after imports, before loading); X {r['shape'][0]:,} x "
                  f"{r['shape'][1]:,}, {r['nnz']:,} non-zeros, {r['malware']:,} malware")


def bench_attacks(csv_path: str, surrogates: list[str], eps_list: list[int], n_train: int) -> None:
    """Part (b): attacked malware per second of the greedy feature-addition attack (all malware test apps of a
    DREBIN-215-style CSV batched), white-box, one torch thread, for each surrogate and budget."""
    import torch

    from transferlab import attacks, datasets, models

    torch.set_num_threads(1)
    data = datasets.load("drebin-csv", path=csv_path)
    split = datasets.split(data, n_target=n_train, n_surrogate=10, n_test=len(data) - n_train - 10, seed=0)
    malware = split.test.y == 1
    X, y = split.test.X[malware].toarray(), split.test.y[malware]
    print(f"part (b): {data.description}; {n_train:,} training apps, {len(y):,} malware attacked, 1 torch thread")
    for name in surrogates:
        start = time.perf_counter()
        model = models.create(name).fit(split.target.X, split.target.y)
        train_s = time.perf_counter() - start
        cells = []
        for eps in eps_list:
            attack = attacks.FeatureAddition(eps=eps)
            start = time.perf_counter()
            result = attack.run(model, X, y)
            elapsed = time.perf_counter() - start
            cells.append(f"eps={eps}: {len(y) / elapsed:8.0f} malware/s, evasion {result.error:.2f}")
        print(f"{name:<10} trained in {train_s:5.1f} s; " + "; ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", type=int, default=130_000, help="apps in the synthetic release")
    parser.add_argument("--names", type=int, default=500_000, help="distinct feature names to draw from")
    parser.add_argument("--per-app", type=int, default=40, help="mean features per app")
    parser.add_argument("--malware", type=int, default=5_560, help="apps named malware (the release has 5,560)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", help="load this release instead of writing a synthetic one")
    parser.add_argument("--repeat", type=int, default=1, help="loads to time (each in a fresh process)")
    parser.add_argument("--attack-csv", help="part (b) only: attack throughput on this DREBIN-215-style CSV")
    parser.add_argument("--surrogates", default="svm_l,svm_rbf_h", help="part (b): models attacked (white-box)")
    parser.add_argument("--eps", default="5,10,30", help="part (b): budgets (added features)")
    parser.add_argument("--train", type=int, default=5000, help="part (b): training apps")
    args = parser.parse_args()
    if args.attack_csv:
        bench_attacks(args.attack_csv, args.surrogates.split(","), [int(e) for e in args.eps.split(",")], args.train)
    else:
        bench_load(args)


if __name__ == "__main__":
    main()
