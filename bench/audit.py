"""How well ``transferlab audit`` predicts a finished evasion run's measured transfer: per target, Spearman's ρ
between predicted and measured transfer rates across every surrogate–repetition pair, and the mean absolute error
of the predicted rate, at each budget (the README's audit table).

    transferlab run mnist89-evasion-quick --out runs/quick
    python bench/audit.py runs/quick                  # the prediction as the audit makes it
    python bench/audit.py runs/quick --box-ignored    # the earlier prediction: the threat model's box ignored

The predictions come from :func:`transferlab.audit.audit_run` at the surrogates' largest data fraction (the
fraction to audit is ``--fraction``); with ``--box-ignored`` the audit is handed the config's norm and loss only,
so its step moves every coordinate, as it did before the step followed the threat model. The printed rows are
Markdown, one per target: ``ρ / MAE`` per budget, "—" where a target has no gradient or ρ is undefined (a tie).
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats

import transferlab.audit as audit_module
from transferlab.experiments.config import parse_config
from transferlab.experiments.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a finished evasion run folder")
    parser.add_argument("--fraction", type=float, default=None, help="the surrogates' data fraction (default: the "
                                                                      "run's first)")
    parser.add_argument("--box-ignored", action="store_true",
                        help="predict with the config's norm and loss only (no box, no threat-model pieces)")
    args = parser.parse_args()
    if args.box_ignored:
        threat_model = audit_module._threat_model
        audit_module._threat_model = lambda config, test: {key: value for key, value in
                                                           threat_model(config, test).items()
                                                           if key in ("norm", "loss")}
    store = Store(f"{args.run}/store.sqlite", create=False)
    try:
        config = parse_config(store.config_data())
    finally:
        store.close()
    fraction = config.surrogate_fractions[0] if args.fraction is None else args.fraction
    budgets = [e for e in config.attack.eps if e > 0]
    print(f"run {args.run}: {config.name}, {config.repetitions} repetitions, fraction {fraction:g}; "
          f"{'box ignored' if args.box_ignored else 'the step follows the threat model'}")
    print("| target | " + " | ".join(f"ε = {e:g}: ρ / MAE" for e in budgets) + " |")
    print("|---|" + "---|" * len(budgets))
    for target in config.targets:
        rows = [row for repetition in range(config.repetitions)
                for row in audit_module.audit_run(args.run, target, repetition=repetition, fraction=fraction)]
        cells = []
        for e in budgets:
            at = [r for r in rows if r.budget == e and np.isfinite(r.measured) and np.isfinite(r.predicted)]
            if not at:
                cells.append("—")
                continue
            predicted, measured = np.array([r.predicted for r in at]), np.array([r.measured for r in at])
            rho = stats.spearmanr(predicted, measured).statistic if np.ptp(predicted) and np.ptp(measured) else None
            cells.append(f"{'—' if rho is None else f'{rho:.2f}'} / {np.mean(np.abs(predicted - measured)):.3f}")
        print(f"| `{target}` | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
