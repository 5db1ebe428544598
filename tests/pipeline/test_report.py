"""metrics.jsonl is rebuilt from committed metrics stages; the report's figures draw what the run's tables hold."""
from __future__ import annotations

import json
import math
from statistics import NormalDist

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import storage
from pipeline.records import commit_metrics, read_metrics
from pipeline.report import FIGURES, main
from pipeline.report.curves import sft, training
from pipeline.report.draw import lines, wilson
from pipeline.report.hist import advantages
from pipeline.report.outcomes import progress, success
from pipeline.report.sources import RoundMetrics, load, task_table
from storage.schemas import EVALUATION
from storage.shards import put_atomic
from storage.synthetic import synthetic_round

PICK, LOOK = "pick_and_place_simple-Mug-None-Desk-1/trial_a", "look_at_obj_in_light-Book-None-Lamp-2/trial_b"


def _metrics(r):
    return RoundMetrics(round=r, policy_version=r, success_rate=0.25 * r, eval_success_rate=0.5,
                        anchored_share=0.4, anchor_pure_share=0.75 if r else None,
                        stage_seconds={"collect": 6.0, "advantage": 1.0, "train": 3.0})


def test_metrics_are_committed_once_per_round(tmp_path):
    run = storage.open_run(str(tmp_path))
    for r in (0, 1):
        commit_metrics(run, _metrics(r), "cfg")
    commit_metrics(run, _metrics(1), "cfg")  # a resumed round commits again: no second line
    lines_ = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines_] == [0, 1]
    assert read_metrics(run) == [_metrics(0), _metrics(1)]


# -- a small run: round -1 (expert demonstrations, 3 SFT steps, held out), rounds 0 and 1 (round 1 held out) --

def _trajectories(run, r, tasks, won, lengths):
    steps, eps = synthetic_round(r, groups=1, group_size=len(tasks), min_len=10, max_len=10)
    ids = pl.DataFrame({"episode_id": range(len(tasks)), "t": tasks, "w": won, "n": lengths},
                       schema_overrides={"episode_id": pl.Int64, "n": pl.Int32})
    steps = steps.join(ids, on="episode_id").filter(pl.col("step") < pl.col("n")).with_columns(task_id="t")
    eps = eps.join(ids, on="episode_id").with_columns(task_id="t", won="w", length="n")
    run.begin(r, "trajectories")
    infos = [storage.write_shard(run, r, "steps", steps.drop("t", "w", "n"), "s"),
             storage.write_shard(run, r, "episodes", eps.drop("t", "w", "n"), "e")]
    run.commit(r, "trajectories", infos, "cfg", r)
    return steps


def _advantages(run, r, steps):
    size = pl.when(pl.col("step") == 0).then(1).otherwise(3)  # each episode's first step alone, the rest in 3s
    adv = steps.select("round", "episode_id", "step").with_columns(
        step_return=pl.lit(0.0), adv_episode=pl.when(pl.col("episode_id") % 2 == 0).then(1.0).otherwise(-1.0),
        adv_step=pl.when(size == 1).then(0.0).otherwise(0.5), anchor_group_size=size, anchor_id=pl.col("step"))
    run.begin(r, "advantages")
    info = storage.write_shard(run, r, "advantages", adv.with_columns(advantage=pl.col("adv_episode")), "a")
    run.commit(r, "advantages", [info], "cfg", r)


def _evaluation(run, r, won, lengths):
    tasks = [PICK] * 4 + [LOOK] * 4
    frame = pa.Table.from_pydict({"round": [r] * 8, "policy_version": [r + 1] * 8, "task_id": tasks,
                                  "episode_id": range(8), "won": [bool(w) for w in won], "score": [0.0] * 8,
                                  "length": lengths}, schema=EVALUATION)
    run.begin(r, "evaluation")
    run.commit(r, "evaluation", [storage.write_shard(run, r, "evaluation", frame, "ev")], "cfg", r + 1)


def _train_steps(run, r, losses):
    rows = "".join(json.dumps({"loss": v, "approx_kl": 0.01, "entropy": 1.0, "grad_norm": 2.0, "clip_frac": 0.1,
                               "lr": 1e-4}) + "\n" for v in losses)
    run.begin(r, "checkpoint")
    put_atomic(run.fs, f"{run.stage_dir(r, 'checkpoint')}/train_metrics.jsonl", rows.encode())
    run.commit(r, "checkpoint", [run.describe(r, "checkpoint", "train_metrics.jsonl")], "cfg", r + 1)


@pytest.fixture
def small_run(tmp_path):
    run = storage.open_run(str(tmp_path))
    _trajectories(run, -1, [PICK, PICK, LOOK, LOOK], [True, True, True, False], [3, 4, 5, 6])
    _train_steps(run, -1, [3.0, 2.0, 1.0])
    _evaluation(run, -1, [1, 1, 0, 0, 1, 0, 0, 0], [2, 4, 6, 8, 1, 1, 1, 1])
    commit_metrics(run, RoundMetrics(-1, -1, success_rate=0.75, eval_success_rate=0.375,
                                     stage_seconds={"demos": 2.0, "warm_start": 6.0, "evaluate": 4.0}), "cfg")
    plan = {0: ([PICK, PICK, PICK, LOOK], [True, False, True, False], [4, 6, 8, 10]),
            1: ([PICK, PICK, LOOK, LOOK], [True, True, True, False], [3, 5, 7, 9])}
    for r, episodes in plan.items():
        _advantages(run, r, _trajectories(run, r, *episodes))
        _train_steps(run, r, [0.5, 0.25])
        seconds = {"collect": 10.0, "advantage": 1.0, "train": 5.0}
        if r == 1:
            _evaluation(run, r, [1, 1, 1, 0, 1, 1, 0, 0], [2, 2, 2, 2, 3, 3, 3, 3])
            seconds["evaluate"] = 4.0
        commit_metrics(run, RoundMetrics(r, r, success_rate=0.5, anchored_share=0.8, stage_seconds=seconds), "cfg")
    return run


def test_wilson_interval_is_exact():
    z = NormalDist().inv_cdf(0.975)

    def textbook(k, n):  # (k + z^2/2 -+ z sqrt(k(n-k)/n + z^2/4)) / (n + z^2)
        mid, half = k + z * z / 2, z * math.sqrt(k * (n - k) / n + z * z / 4)
        return (mid - half) / (n + z * z), (mid + half) / (n + z * z)

    for k, n in ((5, 20), (0, 10), (10, 10), (3, 8), (64, 128)):
        assert np.allclose(wilson(k, n), textbook(k, n), rtol=0, atol=1e-12)
    assert tuple(round(v, 4) for v in wilson(5, 20)) == (0.1119, 0.4687)
    assert tuple(round(v, 4) for v in wilson(0, 10)) == (0.0, 0.2775)
    lo, hi = wilson([5, 10], [20, 10])  # vectorised
    assert np.round(lo, 4).tolist() == [0.1119, 0.7225] and np.round(hi, 4).tolist() == [0.4687, 1.0]


def _container(ax, label):
    (found,) = [c for c in ax.containers if c.get_label() == label]
    return found.lines[0]  # the data line of an errorbar


def test_held_out_only_at_evaluated_rounds_and_the_expert_apart_from_the_policy(small_run):
    data = load(small_run, hist_rounds=6)
    fig, drawn = success(data)
    (ax,) = fig.axes
    assert drawn["held_out"]["round"] == [-1, 1]  # round 0 was not evaluated: no point, nothing joined through it
    assert drawn["held_out"]["won"] == [3, 5] and drawn["held_out"]["n"] == [8, 8]
    held = _container(ax, "policy, held-out tasks")
    assert held.get_xdata().tolist() == [-0.5, 1.5] and held.get_linestyle() == "None"
    policy = _container(ax, "policy, training tasks (collect)")
    assert policy.get_xdata().tolist() == [0, 1] and policy.get_ydata().tolist() == [0.5, 0.75]
    expert = _container(ax, "expert demonstrations (warm-start data)")
    assert expert.get_xdata().tolist() == [-1] and expert.get_ydata().tolist() == [0.75]
    assert expert.get_linestyle() == "None" and expert.get_marker() != policy.get_marker()
    assert [round(v, 4) for v in drawn["held_out"]["lo"]] == [round(float(wilson(k, 8)[0]), 4) for k in (3, 5)]
    plt.close(fig)
    fig, drawn = progress(data)  # the same points against cumulative env steps (18, 28, 24 rows) and wall time
    assert drawn["env_steps"]["held_out"]["x"] == [18, 70] and drawn["env_steps"]["train"]["x"] == [46, 70]
    assert np.allclose(drawn["wall_time"]["train"]["x"], [28 / 60, 48 / 60])
    plt.close(fig)


def test_task_type_table_is_exact(small_run):
    got = task_table(small_run, [-1, 0, 1])
    look, pick = "look_at_obj_in_light", "pick_and_place_simple"
    assert got.rows() == [
        ("expert", -1, look, 2, 1, 0.5, 5.5), ("expert", -1, pick, 2, 2, 1.0, 3.5),
        ("train", 0, look, 1, 0, 0.0, 10.0), ("train", 0, pick, 3, 2, 2 / 3, 6.0),
        ("train", 1, look, 2, 1, 0.5, 8.0), ("train", 1, pick, 2, 2, 1.0, 4.0),
        ("held-out", -1, look, 4, 1, 0.25, 1.0), ("held-out", -1, pick, 4, 2, 0.5, 5.0),
        ("held-out", 1, look, 4, 2, 0.5, 3.0), ("held-out", 1, pick, 4, 3, 0.75, 2.0)]


def test_step_curves_are_rl_only_on_their_own_axis_and_sft_apart(small_run):
    data = load(small_run, hist_rounds=6)
    fig, drawn = training(data)
    assert {r: d["x"] for r, d in drawn["loss"].items()} == {0: [1, 2], 1: [3, 4]}  # the 3 SFT steps apart
    assert len(fig.axes[0].get_lines()) == 2 + 2  # a segment per round (none joins them), a line per boundary
    plt.close(fig)
    fig, drawn = sft(data)
    assert drawn["loss"] == {-1: {"x": [1, 2, 3], "y": [3.0, 2.0, 1.0]}}
    plt.close(fig)


def test_advantage_histograms_count_steps(small_run):
    fig, drawn = advantages(load(small_run, hist_rounds=6))
    assert sorted(drawn) == [0, 1]
    assert drawn[0]["anchor_group_size"] == {"edges": [0.5, 1.5, 2.5, 3.5], "counts": [4, 0, 24]}
    assert drawn[1]["anchor_group_size"]["counts"] == [4, 0, 20]
    assert sum(drawn[0]["adv_step"]["counts"]) == 24  # A_S of the steps in shared anchor groups only
    assert sum(drawn[1]["adv_episode"]["counts"]) == 24 and len(fig.axes) == 2 * 4
    plt.close(fig)


def _labels_of_every_figure(run):
    data = load(run, hist_rounds=6)
    for name, (build, _) in FIGURES.items():
        fig, _ = build(data)
        yield name, fig
        plt.close(fig)


@pytest.mark.parametrize("tables", [True, False])
def test_every_axis_is_labelled_legends_hide_nothing_and_anchored_share_is_in_one_figure(small_run, tmp_path_factory,
                                                                                         tables):
    run = small_run
    if not tables:  # metrics only: empty panels still name their axes
        run = storage.open_run(str(tmp_path_factory.mktemp("bare")))
        commit_metrics(run, _metrics(0), "cfg")
    showing = set()
    for name, fig in _labels_of_every_figure(run):
        fig.canvas.draw()
        panels = [ax.get_window_extent() for ax in fig.axes]
        for legend in [ax.get_legend() for ax in fig.axes if ax.get_legend()] + fig.legends:
            assert not any(legend.get_window_extent().overlaps(p) for p in panels), name  # outside every panel
        for ax in fig.axes:
            assert ax.get_xlabel() and ax.get_ylabel(), (name, ax.get_title())
            notes = [t.get_text() for t in ax.texts if t.get_position() == (0.5, 0.5)]
            assert not (notes and ax.has_data()), (name, ax.get_title(), notes)  # "not recorded" over a curve
            if any("anchored share" in t.lower() for t in (ax.get_title(), ax.get_ylabel())):
                showing.add(name)
    assert showing == {"anchors.png"}


def test_report_files_and_summary(small_run, capsys):
    assert main([small_run.root]) == 0
    names = [p.rsplit("/", 1)[1] for p in capsys.readouterr().out.split()]
    assert names == list(FIGURES) + ["summary.md"]
    for name in names[:-1]:
        assert (f := (small_run.root + "/report/" + name)) and open(f, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    text = open(small_run.root + "/report/summary.md").read()
    assert "2 round(s) committed.\n\nHeld-out success before training (baseline): 0.375 (3 of 8 episodes, " \
           "95% interval 0.1368-0.6943)\n" in text
    assert "| -1 | 0 | 8 | 3 | 0.375 | 0.1368-0.6943 |\n| 1 | 2 | 8 | 5 | 0.625 | 0.3057-0.8632 |\n" in text
    assert "| train | 0 | pick_and_place_simple | 3 | 2 | 0.6667 | 0.2077-0.9385 | 6 |" in text
    assert all(f"- `{name}`: " in text for name in names[:-1])
    assert "| -1 | 0.75 | 0.375 | 0 | 0 | 0 | - | - | - | - | - | - | - | 0 |" in text  # no advantages before round 0


def test_a_run_without_warm_start_has_no_sft_figure(tmp_path, capsys):
    run = storage.open_run(str(tmp_path))
    commit_metrics(run, _metrics(0), "cfg")
    assert main([str(tmp_path)]) == 0
    names = [p.rsplit("/", 1)[1] for p in capsys.readouterr().out.split()]
    assert "sft.png" not in names and names[-1] == "summary.md"
    summary = (tmp_path / "report/summary.md").read_text()
    assert "| 0 | 0 | 0.5 | 0 | 0 | 0 | 0.4 | - | - | - | - | - | - | 0.1 |" in summary


def test_no_line_hides_another_it_coincides_with():
    fig, ax = plt.subplots()
    same = [0.25, 0.5, None]
    lines(ax, [-1, 0, 1], {name: same for name in "abcd"})
    drawn = ax.get_lines()
    assert [line.get_xdata().tolist() for line in drawn] == [[-1, 0]] * 4
    assert len({(line.get_marker(), line.get_linestyle()) for line in drawn}) == 4
    sizes, widths = [line.get_markersize() for line in drawn], [line.get_linewidth() for line in drawn]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4  # each drawn inside the one before
    assert widths == sorted(widths, reverse=True) and len(set(widths)) == 4
    assert drawn[0].get_markerfacecolor() == "none"
    plt.close(fig)


def test_report_of_empty_run_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert "no committed round has metrics yet" in capsys.readouterr().err
