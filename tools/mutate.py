#!/usr/bin/env python
"""Hand-written mutation testing for the modules where a silent bug costs most (issue 28).

First each module's tests are run unmutated: they must pass (else nothing can be judged). Each
mutation is ``(id, file, exact original snippet, replacement)``: a one- or two-line bug a
developer could plausibly write. For each one the script copies ``src/`` and ``tests/`` into a
temporary folder (never touching the real tree), applies the mutation there, runs the test
files relevant to that module (``-x``, default markers: the slow tests are not run) and calls
the mutant *killed* when the tests fail, *survived* when they pass. A snippet that is not in
the file exactly once, or whose file no longer exists, is reported as *stale* (the code
changed since the mutation was written), not as a failure and never as a crash. A mutation
names its file relative to ``src/mirrorflow`` (``report/claims/kinds.py`` inside a package). Mutations known to be equivalent (no behaviour can tell them from
the original) are listed with the reason and not run. The last line printed is the JSON
summary; the score is ``killed / (killed + survived)``.

    python tools/mutate.py                     # every mutation (about half an hour on 2 cores)
    python tools/mutate.py --module claims     # the mutations of one module
    python tools/mutate.py --only E1 --only E2 # some mutations
    python tools/mutate.py --list              # the mutations and whether each still applies
    python tools/mutate.py --json out.json     # also write the summary to a file

docs/testing.md has the measured score and the survivors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str  # relative to src/mirrorflow/ (a module or a file inside a package)
    find: str  # exact original snippet (must occur exactly once)
    replace: str
    what: str  # the bug, in words
    equivalent: str = ""  # why no test can kill it (then it is listed, not run)


#: the test files run against each module's mutants (default markers: no slow tests)
TESTS = {
    "schedules/scheduler.py": ["tests/test_scheduler.py", "tests/test_scheduler_pitfalls.py",
                               "tests/test_group_state.py", "tests/test_fused_scaler.py"],
    "schedules/training.py": ["tests/test_training_schedules.py", "tests/test_scheduler.py"],
    "sweep/store.py": ["tests/test_store.py", "tests/test_store_migration.py",
                       "tests/test_reliability_inputs.py::test_a_stored_result_is_never_replaced_by_a_later_write",
                       "tests/test_reliability_inputs.py::test_a_stored_diverged_row_is_never_replaced_either",
                       "tests/test_sweep_execute.py::test_a_resume_never_runs_a_diverged_run_again"],
    "sweep/execute.py": ["tests/test_sweep_execute.py"],
    "sweep/task.py": ["tests/test_sweep_execute.py"],
    "report/claims": ["tests/test_claims.py", "tests/test_claims_calibration.py",
                      "tests/test_claims_chance.py", "tests/test_schedule_options.py"],
    "dynamics/simulate.py": ["tests/test_dynamics.py", "tests/test_native.py"],
    "dynamics/_chunks.py": ["tests/test_dynamics.py", "tests/test_native.py"],
}
#: packages whose files share one test selection (``TESTS["report/claims"]``) and one
#: ``--module`` name
PACKAGES = ("claims",)
#: helper files measured with the module that drives them (``--module simulate`` includes the
#: chunk driver that simulate.py and matrix.py share since the merge of issue 27's refactor)
MODULE_OF = {"dynamics/_chunks.py": "simulate", "sweep/task.py": "execute"}
#: per-module pytest ``-k`` (tests left out because they take minutes, not because they fail)
DESELECT = {"sweep/execute.py": "not dask and not cli", "sweep/task.py": "not dask and not cli"}

S, T, D, E, M = ("schedules/scheduler.py", "schedules/training.py", "sweep/store.py",
                 "sweep/execute.py", "dynamics/simulate.py")
CP, CK, CS = "report/claims/pairing.py", "report/claims/kinds.py", "report/claims/statistics.py"
MC = "dynamics/_chunks.py"
ET = "sweep/task.py"  # task execution, split out of sweep/execute.py (issue 26)

MUTATIONS: list[Mutation] = [
    # -- schedules/scheduler.py -------------------------------------------------------------
    Mutation("S1", S, "            GroupState(g).write(b, a, step, counted, self.schedule.describe())",
             "            GroupState(g).write(b, a, step, 0, self.schedule.describe())",
             "load_state_dict drops counted_from (issue 28, survivor 2)"),
    Mutation("S2", S, "            st.add(inc)\n", "            st.integrated = inc\n",
             "a holds the last step's decay instead of the sum"),
    Mutation("S3", S, 'st.group["weight_decay"] = f * st.base', 'st.group["weight_decay"] = f',
             "the factor is written as the decay, the base decay forgotten"),
    Mutation("S4", S, 'pending.append(float("nan") if lr is None else lr * g["weight_decay"])',
             'pending.append(float("nan") if lr is None else lr * g[_BASE])',
             "a counts the base decay, not the scheduled one"),
    Mutation("S5", S, "counted_from = step if (step > 0 and integrated is None) else 0",
             "counted_from = 0", "a start at step N claims an exact a"),
    Mutation("S6", S, "if not (f >= 0.0 and f < math.inf):", "if not (f >= 0.0):",
             "an infinite factor is accepted"),
    Mutation("S7", S, "                if g[\"weight_decay\"] != self._written[i]:\n"
                      "                    self._external(i, g)",
             "                if False:\n                    self._external(i, g)",
             "an external write to weight_decay is silently overwritten"),
    Mutation("S8", S, "st.write(base, 0.0, step, 0, self.schedule.describe())",
             "st.write(base, 0.0, 0, 0, self.schedule.describe())",
             "a group added mid-run starts its step count at 0"),
    Mutation("S9", S, "st.write(src.base, src.integrated, step, counted, self.schedule.describe())",
             "st.write(src.base, src.integrated, 0, counted, self.schedule.describe())",
             "a plain checkpoint loaded after the scheduler restarts the schedule at step 0"),
    Mutation("S10", S, "if sched is not None and sched != self.schedule.describe():",
             "if False:", "a state_dict of another schedule is loaded silently"),
    Mutation("S11", S, "    return bool(found.item() != 0)", "    return False",
             "found_inf ignored: a step a GradScaler makes a fused optimizer skip counts"),
    Mutation("S12", S, "            self._pending = None\n            return\n",
             "            self._pending = [0.0] * len(self._decay)\n            return\n",
             "a skipped step adds nothing to a but still advances the step count"),
    Mutation("S13", S, "    if not isinstance(found, torch.Tensor):\n        return False\n"
                       "    return bool(found.item() != 0)",
             "    if not isinstance(found, torch.Tensor):\n        return False\n"
                       "    return bool(found.item() == 0)",
             "found_inf read the wrong way round: clean steps skipped, overflowed ones counted"),
    # -- schedules/training.py ----------------------------------------------------------------
    Mutation("T1", T, "return 1.0 if step < self.at_step else 0.0",
             "return 1.0 if step <= self.at_step else 0.0", "switch-off one step late"),
    Mutation("T2", T, "return left / increment if self.exact else 1.0",
             "return left / increment if self.exact else 0.0",
             "inexact budget stops one step early"),
    Mutation("T3", T, "left = self.target_a - integrated",
             "left = self.target_a - integrated - increment",
             "budget counts the coming step twice"),
    Mutation("T4", T, "if step <= self.start_step:\n            return 0.0",
             "if step < self.start_step:\n            return 0.0",
             "ramp progress branch at the start step",
             equivalent="at step == start_step the formula gives (0)/(end-start) = 0.0 "
                        "exactly, the same value the branch returns"),
    Mutation("T5", T, "return min(1.0, (step - self.start_step) / (self.end_step - self.start_step))",
             "return (step - self.start_step) / (self.end_step - self.start_step)",
             "ramp progress not capped at 1 (linear goes negative after its end)"),
    Mutation("T6", T, "0.5 * (1.0 + math.cos(math.pi * p))", "0.5 * (1.0 - math.cos(math.pi * p))",
             "cosine ramps up instead of down"),
    Mutation("T7", T, "            i += 1\n        return self.values[i]",
             "            i += 1\n        return self.values[max(i - 1, 0)]",
             "piecewise uses the previous segment's value"),
    Mutation("T8", T, "return self.start + (1.0 - self.start) * step / self.steps_resolved",
             "return self.start + (1.0 - self.start) * (step + 1) / self.steps_resolved",
             "warmup one step ahead"),
    Mutation("T9", T, "return round(frac * total_steps)", "return int(frac * total_steps)",
             "a fraction of training truncated instead of rounded"),
    Mutation("T10", T, "return self.bound[i].factor(step - start, integrated, increment)",
             "return self.bound[i].factor(step, integrated, increment)",
             "a sequential segment sees the global step, not its own"),
    # -- sweep/store.py -------------------------------------------------------------------------
    Mutation("D1", D, "if old is not None and old[0] in FINAL:",
             'if old is not None and old[0] == "done":',
             "a stored diverged row is replaced (issue 28, survivor 3)"),
    Mutation("D2", D, 'FINAL = ("done", "diverged")', 'FINAL = ("done",)',
             "diverged is not a result (store and resume)"),
    Mutation("D3", D, "                os.replace(tmp, self.curves_dir / curves_file)\n"
                      "                tmp = None\n",
             "                tmp = None\n",
             "the curves file is not renamed into place after the commit (left as a temporary "
             "file)"),
    Mutation("D4", D, "part = tuple(ids[i:i + 500])", "part = tuple(ids[i:i + 499])",
             "statuses() skips one id in every 500"),
    Mutation("D5", D, 'q + " ORDER BY rowid"', 'q + " ORDER BY id"',
             "records() not in insertion order"),
    Mutation("D6", D, 'q = f"SELECT id FROM runs WHERE status IN',
             'q = f"SELECT id FROM runs WHERE status NOT IN', "ids() inverts its filter"),
    Mutation("D7", D, 'q += " WHERE experiment = ?"', 'q += " WHERE experiment != ?"',
             "records(experiment) returns the other experiments"),
    Mutation("D8", D, "if record.status not in STATUSES:", "if False:",
             "an unknown status reaches the database unchecked"),
    Mutation("D9", D, "            if arr.dtype == object:  # keep the file pickle-free\n"
                      "                continue\n",
             "", "object arrays written into the curves file (pickle)"),
    # -- sweep/execute.py -----------------------------------------------------------------------
    Mutation("E1", E, 'skip_statuses = FINAL if retry_failed else (*FINAL, "failed")',
             'skip_statuses = ("done",) if retry_failed else ("done", "failed")',
             "resume re-runs diverged runs (issue 28, survivor 5)"),
    Mutation("E2", E, 'skip_statuses = FINAL if retry_failed else (*FINAL, "failed")',
             "skip_statuses = FINAL", "failed runs rerun without --retry-failed"),
    Mutation("E3", E, "return [r for r in task if now.get(r.run_id) not in FINAL]",
             "return list(task)", "runs stored meanwhile by another sweep run again"),
    Mutation("E4", ET, "bad = sorted(k for k, v in summary.items() if _non_finite(v))",
             "bad = []", "non-finite metrics count as done"),
    Mutation("E5", E, 'counts[o.status if written else "kept"] += 1', "counts[o.status] += 1",
             "a result kept from another sweep is counted as this sweep's"),
    Mutation("E6", ET, "        if len(configs) > 1:\n", "        if len(configs) > 2:\n",
             "a failing batch of two is not retried run by run"),
    Mutation("E7", E, 'stored_failed = 0 if retry_failed else sum(s == "failed" for s in stored.values())',
             "stored_failed = 0", "stored failed runs are not reported"),
    Mutation("E8", E, "for i in range(0, len(g), batch)]", "for i in range(0, len(g) - 1, batch)]",
             "the last run of a group of one is dropped from the tasks"),
    Mutation("E9", E, "skipped=len(spec.runs) - len(todo)", "skipped=len(todo)",
             "the summary's skipped count is the runs to do"),
    Mutation("E10", ET, 'if summary.get("status") != "diverged" and not bad:', "if not bad:",
             "a run that reports status 'diverged' is done"),
    Mutation("E11", E, "return self.failed == self.lost == self.stored_failed == 0",
             "return self.failed == self.lost == 0",
             "a sweep with stored failed runs is called complete"),
    # -- report/claims/ (pairing.py, kinds.py, statistics.py) -------------------------------
    Mutation("C1", CP, "            runs = [r for r in g[key] if r.version == v]",
             "            runs = list(g[key])",
             "pairing ignores the mirrorflow version (issue 28, survivor 4)"),
    Mutation("C2", CP, 'if any(s != "done" for s in stats):', "if False:",
             "pairs with diverged/failed runs are used"),
    Mutation("C3", CP, 'excluded["failed" if "failed" in stats else "diverged"] += 1',
             'excluded["diverged"] += 1', "failed pairs counted as diverged"),
    Mutation("C4", CP, "if not all(key in g for g in by_arm.values()):",
             "if not any(key in g for g in by_arm.values()):", "incomplete pairs kept"),
    Mutation("C5", CP, 'drop = set(unused_options(config.get("schedule"))) | set(RETIRED_FIELDS)',
             'drop = set(RETIRED_FIELDS)',
             "runs split by a field their own schedule ignores (e.g. the wd of 'none')"),
    Mutation("C6", CK, "    if n < rule.min_pairs:\n        if effect.power_seeds != -1:",
             "    if n <= rule.min_pairs:\n        if effect.power_seeds != -1:",
             "exactly min_pairs pairs cannot decide"),
    Mutation("C7", CS, "k, n = int(np.sum(d > 0)), int(np.sum(d != 0))",
             "k, n = int(np.sum(d >= 0)), int(np.sum(d != 0))", "sign test counts ties as wins"),
    Mutation("C8", CK, "return None if np.any(x <= 0) else np.log(x)", "return np.log(x)",
             "log ratio of non-positive metrics taken"),
    Mutation("C9", CK, "if any(not _is_number(v) or not math.isfinite(v) for v in vals):",
             "if any(not _is_number(v) for v in vals):", "non-finite metric values used"),
    Mutation("C10", CP, "drop |= set(unused_options(sched))",
             "drop |= set()", "fields an arm's schedule ignores split pairs"),
    Mutation("C11", CK, "d = tb - tw if self.higher_is_better else tw - tb", "d = tw - tb",
             "higher-is-better comparisons get the wrong sign"),
    Mutation("C12", CP, "            if len(runs) != 1:\n                unresolved = True",
             "            if not runs:\n                unresolved = True",
             "pairing chooses among several candidates by insertion order again (issue 21's "
             "rule: left out)"),
    Mutation("C13", CP, "    return max(versions, key=_version_key)", "    return max(versions)",
             "the newest version found by comparing release numbers as text (0.9 > 0.10)"),
    Mutation("C14", CP, "                runs = [r for r in runs if arm_of[label].preferred(r.config)]\n",
             "", "an arm's declared setting (prefer) not used to choose among candidates"),
    Mutation("C15", CP, "if learned is not None and any(learned(r) is False for r in chosen.values()):",
             "if False:", "runs at chance level enter geometry tests (issue 22, item 5)"),
    Mutation("C16", CK, 'is_geometry_metric(getattr(test, "metric", "")) else None)',
             "True else None)", "runs at chance level left out of loss tests too (issue 22, "
             "item 5: a run at chance is a legitimate loss outcome)"),
    # -- the calibrated decision rule (report/claims/statistics.py, kinds.py) -----------------
    Mutation("K1", CS, "return one_sided(d - delta, rule)[0], one_sided(d, rule)[1]",
             "return one_sided(d - delta, rule)[1], one_sided(d, rule)[1]",
             "Compare's supported side tests 'less' (one-sided test's side flipped)"),
    Mutation("K2", CS, "return one_sided(d - delta, rule)[0], one_sided(d, rule)[1]",
             "return one_sided(d, rule)[0], one_sided(d, rule)[1]",
             "Compare ignores the smallest effect of interest (tests > 0, not > delta)"),
    Mutation("K3", CS, 'order = np.argsort(p, kind="stable")', 'order = np.argsort(-p, kind="stable")',
             "Holm's step-down starts at the largest p-value"),
    Mutation("K4", CS, "        if not p[i] <= alpha / (m - rank):\n            break\n",
             "        if not p[i] <= alpha / (m - rank):\n            continue\n",
             "Holm's step-down does not stop at the first hypothesis it keeps"),
    Mutation("K5", CS, "b = mx * my - t2 * c[0, 1]", "b = mx * my + t2 * c[0, 1]",
             "Fieller's interval with the covariance term's sign flipped"),
    Mutation("K6", CS, "return np.maximum(tg, fg * k), np.maximum(tl, fl * k)",
             "return np.minimum(tg, fg * k), np.minimum(tl, fl * k)",
             "a decision needs only one of the t and sign-flip tests, not both"),
    Mutation("K7", CS, "return np.maximum(p_gap, g), np.maximum(p_gap, le), p_gap",
             "return g, le, p_gap", "Nearer decides without the gate 'decay moves the metric'"),
    Mutation("K8", CS, "ge, le = (means >= o - t).sum(axis=1), (means <= o + t).sum(axis=1)",
             "ge, le = (means > o + t).sum(axis=1), (means < o - t).sum(axis=1)",
             "sign-flip p-value leaves out the observed pattern and ties (anti-conservative)"),
    Mutation("K9", CS, 's = d.std(axis=-1, ddof=1) if n > 1 else np.zeros_like(m)',
             's = d.std(axis=-1, ddof=0) if n > 1 else np.zeros_like(m)',
             "t test with the biased (ddof=0) standard deviation"),
    Mutation("K10", CS, "return float(stats.t.ppf(1.0 - rule.alpha_side, max(n - 1, 1)))",
             "return float(stats.t.ppf(1.0 - rule.alpha_side / 2, max(n - 1, 1)))",
             "interval half-width from alpha_side halved again (a 97.5% interval shown as 95%)"),
    Mutation("K11", CK, "    if p_sup <= rule.alpha_side:\n        verdict = SUPPORTED",
             "    if p_sup <= rule.alpha_signflip:\n        verdict = SUPPORTED",
             "Compare supported at the sign-flip level (5%), not alpha_side (2.5%)"),
    # -- dynamics/simulate.py -------------------------------------------------------------------
    Mutation("M1", M, "alpha_t = torch.as_tensor(alphas, **f64) * active.T",
             "alpha_t = torch.as_tensor(alphas, **f64)",
             "a stopped run's integrated decay keeps growing (issue 28, survivor 1)"),
    Mutation("M2", M, "changed[1:] = np.any(alphas[1:] != alphas[:-1], axis=1)",
             "changed[1:] = False", "torch path ignores a decay change inside a chunk"),
    Mutation("M3", MC, "mid = (np.arange(k, k_end) + 0.5) * step", "mid = np.arange(k, k_end) * step",
             "decay taken at the step's start, not its midpoint"),
    Mutation("M4", M, "crit = np.where(decay_ends, res, vel)", "crit = np.where(decay_ends, vel, res)",
             "stopping rules swapped"),
    Mutation("M5", M, "done = act & finite & (crit <= tol) & (k * step >= settle)",
             "done = act & finite & (crit <= tol)", "a run stops before its schedule settled"),
    Mutation("M6", M, "steps_taken += c.steps * active.squeeze(1).cpu().numpy().astype(np.int64)",
             "steps_taken += c.steps", "a stopped run's step count keeps growing"),
    Mutation("M7", M, "torch.addcmul(c, ge, g, value=-1.0, out=t)",
             "torch.addcmul(c, ge, g, value=1.0, out=t)", "torch path steps up the gradient"),
    Mutation("M8", M, "newly_div = act & (~finite | ~(res <= res_limit))", "newly_div = act & ~finite",
             "finite blow-ups not caught as diverged"),
    Mutation("M9", M, "                u, v = _from_pq(param.name, p, q, v)\n"
                      "                if not has_q:  # x = u² ignores v, which only decays\n"
                      "                    v = v * (1.0 - eta.T * alpha_t).prod(0).unsqueeze(1)\n",
             "                u, v = _from_pq(param.name, p, q, v)\n",
             "torch path forgets to decay v for u2"),
    Mutation("M10", MC, "while self.recorded < len(snaps) and snaps[self.recorded] <= k:",
             "while self.recorded < len(snaps) and snaps[self.recorded] < k:",
             "a snapshot recorded one chunk late"),
    Mutation("M11", M, "1.0 - eta_np * alphas * (eta_np > 0),  # frozen: c = 1",
             "1.0 - eta_np * alphas,  # frozen: c = 1",
             "kernel shrink factor without the frozen-run mask",
             equivalent="a frozen run has eta = 0, so 1 - 0·alpha = 1 already: the mask "
                        "only guards against alpha = inf, which schedules refuse"),
    Mutation("M12", MC, "total = int(np.ceil(t_max / step - 1e-9))",
             "total = int(t_max / step)", "t_max/step rounded down (a step short)"),
]


def _module_of(m: Mutation) -> str:
    """``--module`` name: the file's stem, or the package's name for a file inside
    ``report/claims/`` (so ``--module claims`` selects every file of the package)."""
    if m.file in MODULE_OF:
        return MODULE_OF[m.file]
    parts = m.file.split("/")
    if len(parts) >= 3 and parts[-2] in PACKAGES:
        return parts[-2]
    return parts[-1].removesuffix(".py")


def _tests_of(file: str) -> list[str]:
    """The test files run against a mutant of ``file`` (its package's when it has none)."""
    if file in TESTS:
        return TESTS[file]
    pkg = file.rsplit("/", 1)[0]
    return TESTS[pkg]


def _read(path: Path) -> str | None:
    """The text of ``path``, or None when it is gone (a file renamed, split or removed)."""
    try:
        return path.read_text()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def check(m: Mutation, root: Path = ROOT) -> str:
    """``"ok"`` when the snippet is in the file exactly once, else ``"stale"`` (also when the
    file no longer exists: the code moved since the mutation was written)."""
    text = _read(root / "src" / "mirrorflow" / m.file)
    return "ok" if text is not None and text.count(m.find) == 1 else "stale"


def _copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in ("src", "tests"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)


def _pytest(file: str, work: Path, timeout: float) -> subprocess.CompletedProcess:
    """The tests of module ``file`` run in the copy ``work`` (its ``src`` first on the path)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
           *_tests_of(file)]
    if file in DESELECT:
        cmd += ["-k", DESELECT[file]]
    env = dict(os.environ, PYTHONPATH=str(work / "src"), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                          timeout=timeout)


def baseline(files: list[str], work: Path, timeout: float) -> list[str]:
    """The modules whose tests fail WITHOUT a mutation (then no mutant of them can be judged)."""
    bad = []
    for f in files:
        proc = _pytest(f, work, timeout)
        print(json.dumps({"baseline": f, "passed": proc.returncode == 0}), flush=True)
        if proc.returncode != 0:
            bad.append(f)
    return bad


def run_one(m: Mutation, work: Path, timeout: float) -> dict:
    """Apply ``m`` to the copy in ``work``, run its tests, restore the file."""
    path = work / "src" / "mirrorflow" / m.file
    original = _read(path)
    if original is None or original.count(m.find) != 1:
        why = "file missing" if original is None else "snippet not found exactly once"
        return {"id": m.id, "file": m.file, "result": "stale", "what": m.what, "why": why}
    path.write_text(original.replace(m.find, m.replace))
    t0 = time.perf_counter()
    try:
        proc = _pytest(m.file, work, timeout)
        result = "survived" if proc.returncode == 0 else "killed"
        tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
        first_fail = next((ln for ln in proc.stdout.splitlines() if ln.startswith("FAILED")),
                          tail[0] if tail else "")
    except subprocess.TimeoutExpired:
        result, first_fail = "killed", f"timeout after {timeout:g} s"
    finally:
        path.write_text(original)
    return {"id": m.id, "file": m.file, "result": result, "what": m.what,
            "by": first_fail if result == "killed" else "",
            "seconds": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--module", action="append", default=[],
                    help="scheduler, training, store, execute, claims, simulate")
    ap.add_argument("--only", action="append", default=[], help="a mutation id (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the mutations; run nothing")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the unmutated run of each module's tests (they must pass)")
    ap.add_argument("--baseline-only", action="store_true",
                    help="only run each selected module's tests unmutated")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS
              if (not args.module or _module_of(m) in args.module)
              and (not args.only or m.id in args.only)]
    if not chosen:
        ap.error("no mutation selected")
    if args.list:
        for m in chosen:
            state = "equivalent" if m.equivalent else check(m)
            print(f"{m.id:4} {m.file:24} {state:10} {m.what}")
        return 0
    results, equivalent = [], []
    with tempfile.TemporaryDirectory(prefix="mirrorflow-mutate-") as tmp:
        work = Path(tmp)
        _copy_tree(work)
        if not args.no_baseline:
            # one baseline per test selection (the files of a package share theirs); a
            # module whose file is gone has only stale mutants and needs none
            targets = {}
            for m in chosen:
                if not m.equivalent and check(m, work) == "ok":
                    targets.setdefault(tuple(_tests_of(m.file)), m.file)
            failing = baseline(sorted(targets.values()), work, args.timeout)
            if failing:
                print(json.dumps({"error": "tests fail without any mutation",
                                  "modules": failing}))
                return 1
            if args.baseline_only:
                return 0
        for m in chosen:
            if m.equivalent:
                equivalent.append({"id": m.id, "file": m.file, "what": m.what,
                                   "why": m.equivalent})
                continue
            r = run_one(m, work, args.timeout)
            results.append(r)
            print(json.dumps(r), flush=True)
    killed = [r["id"] for r in results if r["result"] == "killed"]
    survived = [r["id"] for r in results if r["result"] == "survived"]
    stale = [r["id"] for r in results if r["result"] == "stale"]
    judged = len(killed) + len(survived)
    summary = {"killed": len(killed), "survived": len(survived), "stale": stale,
               "survivors": survived, "equivalent": equivalent,
               "score": round(len(killed) / judged, 4) if judged else None,
               "by_module": {f: {"killed": sum(r["result"] == "killed" for r in results
                                               if r["file"] == f),
                                 "survived": sum(r["result"] == "survived" for r in results
                                                 if r["file"] == f)}
                             for f in sorted({r["file"] for r in results})}}
    text = json.dumps(summary)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "results": results}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
