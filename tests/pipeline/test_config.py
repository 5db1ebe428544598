"""Config loading: YAML + dotted overrides into nested typed dataclasses, refusing bad keys and values."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from pipeline.config import ConfigError, apply_overrides, config_hash, from_dict, load, to_dict


@dataclass(frozen=True)
class Inner:
    gamma: float = 0.95  # discount
    norm: Literal["std", "mean"] = "std"  # normalisation
    columns: tuple[str, ...] = ()  # anchor columns

    def __post_init__(self):
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"Inner.gamma must be in [0, 1], got {self.gamma}")


@dataclass(frozen=True)
class Outer:
    rounds: int = 2  # rounds to run
    model: str | None = None  # base model path
    verbose: bool = False  # chatty logs
    inner: Inner = field(default_factory=Inner)  # a nested section


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rounds: 3\ninner:\n  gamma: 0.5\n  columns: [url, cart]\n")
    cfg = load(Outer, path, ["inner.norm=mean", "model=/m", "verbose=true", "inner.gamma=1e-0"])
    assert cfg == Outer(rounds=3, model="/m", verbose=True,
                        inner=Inner(gamma=1.0, norm="mean", columns=("url", "cart")))
    assert to_dict(cfg) == {"rounds": 3, "model": "/m", "verbose": True,
                            "inner": {"gamma": 1.0, "norm": "mean", "columns": ["url", "cart"]}}
    assert load(Outer, None) == Outer()


@pytest.mark.parametrize("overrides, message", [
    (["inner.gamma_typo=1"],
     r"inner.gamma_typo: unknown key \(did you mean 'gamma'\?\); expected one of \['gamma', 'norm', 'columns'\]"),
    (["inner.xyz=1"], r"inner.xyz: unknown key; expected one of \['gamma', 'norm', 'columns'\]"),
    (["rounds=two"], "rounds: expected int, got 'two'"),
    (["rounds=true"], "rounds: expected int, got True"),
    (["inner.norm=max"], r"inner.norm: expected one of \['std', 'mean'\], got 'max'"),
    (["inner.gamma=-1"], r"^inner.gamma must be in \[0, 1\], got -1.0$"),
    (["inner=3"], "inner: expected a mapping of Inner fields, got 3"),
    (["rounds"], "override 'rounds': expected key.path=value"),
    (["inner.columns=url"], "inner.columns: expected a list, got 'url'"),
])
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load(Outer, None, overrides)


def test_unreadable_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read config"):
        load(Outer, tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping at the top level"):
        load(Outer, tmp_path / "list.yaml")


def test_hash_is_stable_and_value_sensitive():
    assert config_hash(Outer()) == config_hash(from_dict(Outer, {}))
    assert config_hash(Outer()) != config_hash(Outer(rounds=3))
    assert len(config_hash(Outer())) == 16


def test_overrides_do_not_mutate_input():
    base = {"inner": {"gamma": 0.5}}
    assert apply_overrides(base, ["inner.gamma=0.1"]) == {"inner": {"gamma": 0.1}}
    assert base == {"inner": {"gamma": 0.5}}


def test_extends_overlays_a_parent_file(tmp_path):
    (tmp_path / "base.yaml").write_text("rounds: 5\ninner:\n  gamma: 0.5\n  norm: mean\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("extends: ../base.yaml\ninner:\n  gamma: 0.25\n")
    cfg = load(Outer, tmp_path / "sub" / "child.yaml")
    assert cfg == Outer(rounds=5, inner=Inner(gamma=0.25, norm="mean"))


def test_warm_start_section_present_empty_or_disabled(tmp_path):
    from pipeline.run_config import RunConfig, WarmStartConfig

    assert load(RunConfig, None).warm_start is None
    (tmp_path / "empty.yaml").write_text("warm_start:\n")
    assert load(RunConfig, tmp_path / "empty.yaml").warm_start is None
    on = load(RunConfig, None, ["warm_start.tasks=4", "warm_start.epsilon=0.2"])
    assert on.warm_start == WarmStartConfig(tasks=4, epsilon=0.2) and on.warm_start.enabled
    assert not load(RunConfig, None, ["warm_start.enabled=false"]).warm_start.enabled
    assert load(RunConfig, None).evaluation.before_training


@pytest.mark.parametrize("override, message", [
    ("warm_start.expert=oracle", r"^warm_start.expert must be one of \('handcoded', 'planner'\), got 'oracle'$"),
    ("warm_start.epsilon=2", r"^warm_start.epsilon must be in \[0, 1\], got 2.0$"),
    ("warm_start.micro_batch_size=5", "^warm_start.mini_batch_size must be a multiple of micro_batch_size"),
    ("warm_start.tasks=0", "^warm_start.tasks, group_size and epochs must be >= 1, got 0, 1, 3$"),
    ("trainer.optimizer_state=forget", r"^trainer.optimizer_state='forget': expected one of \['keep', 'reset'\]$"),
    ("trainer.num_threads=-1", "^trainer.num_threads=-1: expected >= 0$"),
])
def test_learning_sections_name_the_bad_key(override, message):
    from pipeline.run_config import RunConfig

    with pytest.raises(ConfigError, match=message):
        load(RunConfig, None, [override])


def test_every_manifest_hash_resolves_in_the_saved_config(tmp_path):
    """The driver's saved config resolves each stage's section hash and the metrics' whole hash to its values."""
    import storage
    from pipeline.config import hash_index
    from pipeline.driver import STAGE_SECTIONS
    from pipeline.run_config import RunConfig
    from pipeline.records import METRICS_STAGE

    cfg = load(RunConfig, None, ["trainer.lr=3e-5", f"run_dir={tmp_path}"])
    run = storage.open_run(str(tmp_path))
    path = storage.save_config(run, to_dict(cfg), hash_index(cfg))
    assert path == f"{tmp_path}/configs/{config_hash(cfg)}.yaml"
    assert storage.save_config(run, to_dict(cfg), hash_index(cfg)) is None  # same config: nothing new written
    recorded = {stage: (section, config_hash(getattr(cfg, section))) for stage, section in STAGE_SECTIONS.items()}
    recorded[METRICS_STAGE] = (None, config_hash(cfg))
    for stage, (section, h) in recorded.items():
        [(found, found_section, values)] = storage.find_config(run, h)
        assert (found, found_section) == (path, section), stage
        assert values == (to_dict(cfg) if section is None else to_dict(getattr(cfg, section)))
    assert storage.find_config(run, config_hash(cfg.trainer))[0][2]["lr"] == 3e-5


def test_warm_start_stage_hashes_resolve_in_the_saved_config(tmp_path):
    """Round -1's demonstrations and SFT run with settings derived from the config: their hashes resolve too."""
    import storage
    from pipeline.driver import save_resolved_config
    from pipeline.run_config import RunConfig
    from pipeline.stages.warm_start import demo_rollout, sft_trainer

    cfg = load(RunConfig, "configs/smoke.yaml", ["warm_start.tasks=4", "warm_start.lr=0.002", f"run_dir={tmp_path}"])
    run = storage.open_run(str(tmp_path))
    assert save_resolved_config(run, cfg) == f"{tmp_path}/configs/{config_hash(cfg)}.yaml"
    for section, values in (("warm_start.rollout", demo_rollout(cfg.rollout, cfg.warm_start)),
                            ("warm_start.trainer", sft_trainer(cfg.trainer, cfg.warm_start))):
        (found,) = storage.find_config(run, config_hash(values))
        assert found[1:] == (section, to_dict(values))
    assert storage.find_config(run, config_hash(sft_trainer(cfg.trainer, cfg.warm_start)))[0][2]["lr"] == 0.002


def test_the_cluster_recipe_on_8_gpus():
    from pipeline.run_config import RunConfig

    cfg = load(RunConfig, "configs/alfworld_qwen2.5_1.5b.yaml")
    assert cfg.evaluation.tasks * cfg.evaluation.group_size == 128  # held-out episodes (verl-agent's size)
    assert cfg.rollout.policy.max_model_len - cfg.rollout.sampling.max_new_tokens == 2048  # the prompt filter
    assert cfg.rollout.policy.vllm_args == {"tensor_parallel_size": 1} and cfg.trainer.max_seq_len == 2560
    assert (cfg.trainer.keep_checkpoints, cfg.trainer.keep_every) == (3, 10)
    assert cfg.cluster.train_ranks == "auto" and cfg.trainer.mini_batch_size % (cfg.trainer.micro_batch_size * 8) == 0


@pytest.mark.parametrize("override, message", [
    ("trainer.lr=inf", "trainer.lr: expected a finite number, got inf"),
    ("trainer.lr=nan", "trainer.lr: expected a finite number, got nan"),
    ("advantage.gamma=-.inf", "advantage.gamma: expected a finite number, got -inf"),
    ("rollout.sampling.temperature=.nan", "rollout.sampling.temperature: expected a finite number, got nan"),
    ("trainer.betas=[0.9, .inf]", "trainer.betas[1]: expected a finite number, got inf"),
    ("rollout.resources={GPU: .inf}", "rollout.resources.GPU: expected a finite number, got inf"),
    ("warm_start.lr=inf", "warm_start.lr: expected a finite number, got inf"),
], ids=["inf", "nan", "-inf", "nested", "tuple", "dict", "optional-section"])
def test_non_finite_numbers_are_refused_naming_the_key(override, message):
    from pipeline.run_config import RunConfig

    with pytest.raises(ConfigError) as caught:
        load(RunConfig, None, [override])
    assert str(caught.value) == message


def test_the_trainer_loader_refuses_non_finite_numbers(tmp_path, capsys):
    from trainer.__main__ import main, parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config(None, ["clip_ratio_c=inf"])
    assert str(caught.value) == "trainer.clip_ratio_c: expected a finite number, got inf"
    args = ["--policy", str(tmp_path), "--data", "x.parquet", "--out", str(tmp_path / "o"), "--set", "lr=nan"]
    assert main(args) == 2
    assert capsys.readouterr().err == "config error: trainer.lr: expected a finite number, got nan\n"


@pytest.mark.parametrize("estimator", ["gigpo", "grpo", "step_only", "rloo"])
def test_one_episode_per_group_is_refused_with_a_group_relative_estimator(estimator):
    from pipeline.run_config import RunConfig

    with pytest.raises(ConfigError) as caught:
        load(RunConfig, None, ["rollout.group_size=1", f"advantage.estimator={estimator}"])
    assert str(caught.value) == (f"rollout.group_size must be >= 2 with advantage.estimator={estimator!r} (its "
                                 "advantages compare the episodes of one task), got 1")
    assert load(RunConfig, None, ["rollout.group_size=2", f"advantage.estimator={estimator}"]).rollout.group_size == 2
    sft = load(RunConfig, None, ["rollout.group_size=1", "trainer.loss=sft", "trainer.kl_coef=0"])
    assert sft.rollout.group_size == 1  # SFT on the round's steps reads no advantages


def test_ppo_needs_no_groups_and_turns_on_the_trainers_critic():
    from pipeline.run_config import RunConfig
    from trainer.config import CriticConfig

    cfg = load(RunConfig, None, ["rollout.group_size=1", "advantage.estimator=ppo"])
    assert cfg.rollout.group_size == 1 and cfg.trainer.critic == CriticConfig()
    tuned = load(RunConfig, None, ["advantage.estimator=ppo", "trainer.critic.lam=0.95"])
    assert tuned.trainer.critic == CriticConfig(lam=0.95)
    with pytest.raises(ConfigError) as caught:
        load(RunConfig, None, ["advantage.estimator=grpo", "trainer.critic.lam=0.95"])
    assert str(caught.value) == ("trainer.critic trains a value head that only a critic estimator (e.g. "
                                 "advantage.estimator='ppo') uses, got advantage.estimator='grpo'; remove the "
                                 "trainer.critic section")


def test_a_trainer_temperature_other_than_the_rollouts_is_refused():
    from pipeline.run_config import RunConfig

    with pytest.raises(ConfigError) as caught:
        load(RunConfig, None, ["rollout.sampling.temperature=0.7"])
    assert str(caught.value) == ("trainer.temperature must equal rollout.sampling.temperature (the PPO ratio's "
                                 "log-probs are those of the distribution the rollout sampled), got 1.0 and 0.7")
    both = load(RunConfig, None, ["rollout.sampling.temperature=0.7", "trainer.temperature=0.7"])
    assert (both.trainer.temperature, both.rollout.sampling.temperature) == (0.7, 0.7)
