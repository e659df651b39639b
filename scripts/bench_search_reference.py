"""The reference for `gpl bench search`: a Python GP-based optimiser on the same problems,
budgets and seeds, printing the same lines.

    python scripts/bench_search_reference.py [--library optuna|botorch|random] [--seeds 10]

optuna: Optuna's GPSampler (optuna >= 4; deterministic_objective=True, as both problems are
noise-free, unless --fitted-noise; gpl's `--fitted-noise` is the same switch). botorch: BoTorch's standard loop (SingleTaskGP with its default kernel and priors,
analytic LogExpectedImprovement, optimize_acqf) in float64. Both start with as many random
(optuna) or scrambled-Sobol (botorch) points as gpl's design: max(d + 1, 5).
Needs numpy, scipy, torch and optuna or botorch.
"""
import argparse
import math
import statistics
import time

import numpy as np

BRANIN_MIN = 0.397887357729738
HARTMANN6_MIN = -3.322368011391339


def branin(x):
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5.0 / math.pi
    r, s, t = 6.0, 10.0, 1.0 / (8 * math.pi)
    return a * (x[1] - b * x[0] ** 2 + c * x[0] - r) ** 2 + s * (1 - t) * math.cos(x[0]) + s


ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
P = np.array(
    [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ]
)


def hartmann6(x):
    x = np.asarray(x)
    return float(-(ALPHA * np.exp(-(A * (x - P) ** 2).sum(axis=1))).sum())


PROBLEMS = [
    ("branin", branin, [(-5.0, 10.0), (0.0, 15.0)], BRANIN_MIN, 30),
    ("hartmann6", hartmann6, [(0.0, 1.0)] * 6, HARTMANN6_MIN, 50),
]


def init_for(d):
    return max(d + 1, 5)


def run_optuna(f, bounds, budget, seed, fitted_noise=False):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.GPSampler(
        seed=seed,
        n_startup_trials=init_for(len(bounds)),
        deterministic_objective=not fitted_noise,
    )
    study = optuna.create_study(direction="minimize", sampler=sampler)

    def objective(trial):
        x = [trial.suggest_float(f"x{i + 1}", lo, hi) for i, (lo, hi) in enumerate(bounds)]
        return f(x)

    study.optimize(objective, n_trials=budget)
    return study.best_value


def run_botorch(f, bounds, budget, seed):
    import torch
    from botorch.acquisition.analytic import LogExpectedImprovement
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Standardize
    from botorch.optim import optimize_acqf
    from gpytorch.mlls import ExactMarginalLogLikelihood

    torch.manual_seed(seed)
    d = len(bounds)
    lo = torch.tensor([b[0] for b in bounds], dtype=torch.float64)
    hi = torch.tensor([b[1] for b in bounds], dtype=torch.float64)

    def value(u):
        return f((lo + u * (hi - lo)).tolist())

    sobol = torch.quasirandom.SobolEngine(d, scramble=True, seed=seed)
    X = sobol.draw(init_for(d)).to(torch.float64)
    Y = torch.tensor([[-value(u)] for u in X], dtype=torch.float64)
    unit = torch.stack([torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)])
    while len(X) < budget:
        model = SingleTaskGP(X, Y, outcome_transform=Standardize(m=1))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        acqf = LogExpectedImprovement(model, best_f=Y.max())
        cand, _ = optimize_acqf(acqf, bounds=unit, q=1, num_restarts=10, raw_samples=512)
        X = torch.cat([X, cand])
        Y = torch.cat([Y, torch.tensor([[-value(cand[0])]], dtype=torch.float64)])
    return float(-Y.max())


def run_random(f, bounds, budget, seed):
    rng = np.random.default_rng(seed)
    lo, hi = np.array(bounds).T
    return min(f(lo + rng.random(len(bounds)) * (hi - lo)) for _ in range(budget))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--library", choices=["optuna", "botorch", "random"], default="optuna")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fitted-noise", action="store_true", help="optuna: fit the noise")
    args = ap.parse_args()
    if args.library != "random":
        import torch

        torch.set_num_threads(args.threads)
    run = {
        "optuna": lambda *a: run_optuna(*a, fitted_noise=args.fitted_noise),
        "botorch": run_botorch,
        "random": run_random,
    }[args.library]
    for name, f, bounds, minimum, budget in PROBLEMS:
        regrets, start = [], time.perf_counter()
        for seed in range(args.seeds):
            regrets.append(run(f, bounds, budget, seed) - minimum)
        per = 1e3 * (time.perf_counter() - start) / (args.seeds * budget)
        print(
            f"search bench: {name} {args.library} median regret "
            f"{statistics.median(regrets):.4f} over {args.seeds} seeds (budget {budget}); "
            f"{per:.1f} ms per proposal",
            flush=True,
        )


if __name__ == "__main__":
    main()
