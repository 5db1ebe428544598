"""The round driver's config: one dataclass per concern, loaded from YAML + dotted overrides.

>>> cfg = RunConfig()
>>> cfg.rollout.group_size, cfg.advantage.estimator, cfg.trainer.zero_stage, cfg.warm_start
(8, 'gigpo', 0, None)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from pipeline.advantage.config import AdvantageConfig
from pipeline.advantage.estimators import ESTIMATOR_SPECS, EstimatorSpec
from pipeline.envs.data import SPLITS
from pipeline.envs.tasks import TASK_TYPES, check_task_types
from pipeline.rollout.config import RolloutConfig
from pipeline.runtime.trackers import LoggingConfig
from pipeline.validators import above, choice, in_range, must
from trainer.config import LR_DECAYS, CriticConfig, TrainerConfig


@dataclass(frozen=True)
class GamesConfig:
    """Which ALFWorld games are played: a real data directory, or households generated offline."""

    data_dir: str | None = None  # ALFWorld data root holding json_2.1.1/ ($ALFWORLD_DATA expands); None: generate
    train_split: str = "train"  # split the collect tasks come from
    eval_split: str = "valid_seen"  # held-out split of the evaluation
    generate_train: int = 16  # games generated for the train split (data_dir None)
    generate_eval: int = 6  # games generated for the held-out split (data_dir None)
    max_receptacles: int = 25  # largest generated household (3-25)
    task_types: tuple[str, ...] = TASK_TYPES  # task types of generated games (cycled through)
    seed: int = 0  # generation seed; also picks each round's tasks

    def __post_init__(self) -> None:
        for name in ("train_split", "eval_split"):
            choice(self, name, SPLITS)
        if self.generate_train < 1 or self.generate_eval < 0:
            raise ValueError("GamesConfig.generate_train must be >= 1 and generate_eval >= 0")
        check_task_types(self.task_types, "GamesConfig.task_types")
        in_range(self, "max_receptacles", 3, 25)


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation after each round's training (and of the starting policy before round 0)."""

    tasks: int = 4  # held-out tasks per round (0 disables evaluation)
    temperature: float = 0.4  # sampling temperature (low: close to greedy, log-probs stay defined)
    group_size: int = 1  # episodes per held-out task
    before_training: bool = True  # also evaluate the starting policy (warm start or base) before round 0
    every: int = 1  # evaluate after every k-th round, and always after the last one (0: the last one only)

    def __post_init__(self) -> None:
        if self.tasks < 0 or self.group_size < 1 or not self.temperature > 0 or self.every < 0:
            raise ValueError("EvalConfig needs tasks >= 0, group_size >= 1, temperature > 0 and every >= 0, got "
                             f"{self.tasks}, {self.group_size}, {self.temperature}, {self.every}")

    def after(self, round: int, rounds: int) -> bool:
        """Whether round ``round`` of ``rounds`` is evaluated.

        >>> [EvalConfig(every=2).after(r, 5) for r in range(5)]
        [False, True, False, True, True]
        """
        return round == rounds - 1 or (self.every > 0 and (round + 1) % self.every == 0)


EXPERTS = ("handcoded", "planner")


@dataclass(frozen=True)
class WarmStartConfig:
    """Round -1: ALFWorld's expert plays train games, base_model is fine-tuned (SFT) on its steps."""

    enabled: bool = True  # false (or no warm_start section): round 0 starts from base_model
    tasks: int = 16  # train games the expert plays (a seeded draw, as a round's tasks)
    group_size: int = 1  # episodes per game (they differ only with epsilon > 0)
    expert: str = "handcoded"  # handcoded (searches the room as an agent must) | planner (knows where things are)
    epsilon: float = 0.0  # share of turns whose env step plays a random shown action; the label stays the expert's
    epochs: int = 3  # SFT passes over the demonstration steps
    lr: float = 1e-4  # SFT learning rate (the trainer section's other optimizer settings apply)
    lr_decay: str = "none"  # none | linear: down to 0 at the last SFT step
    mini_batch_size: int = 32  # demonstration steps per SFT optimizer step
    micro_batch_size: int = 8  # steps per forward/backward on one rank

    def __post_init__(self) -> None:
        if self.tasks < 1 or self.group_size < 1 or self.epochs < 1:
            raise ValueError(f"WarmStartConfig.tasks, group_size and epochs must be >= 1, got {self.tasks}, "
                             f"{self.group_size}, {self.epochs}")
        choice(self, "expert", EXPERTS)
        in_range(self, "epsilon", 0, 1)
        above(self, "lr", 0)
        choice(self, "lr_decay", LR_DECAYS)
        if min(self.micro_batch_size, self.mini_batch_size) < 1 or self.mini_batch_size % self.micro_batch_size:
            raise ValueError(f"WarmStartConfig.mini_batch_size must be a multiple of micro_batch_size >= 1, got "
                             f"{self.mini_batch_size} and {self.micro_batch_size}")


@dataclass(frozen=True)
class ForkConfig:
    """Where a forked run starts (``pipeline.stages.fork``): round ``round`` of the run at ``run``."""

    run: str  # the source run directory (local or shared filesystem)
    round: int | None = None  # its round whose committed checkpoint this run starts from (None: its newest)


@dataclass(frozen=True)
class ClusterConfig:
    """Where the round's tasks run."""

    scheduler: str | None = None  # scheduler address; None: $DASK_SCHEDULER_ADDRESS, else a LocalCluster
    n_workers: int = 2  # LocalCluster worker processes
    threads_per_worker: int = 1  # LocalCluster threads per worker
    # training processes, one per worker; auto: workers offering train_resources (1 if none)
    train_ranks: int | str = "auto"
    train_resources: dict = field(default_factory=dict)  # Dask resources per training task, e.g. {"GPU": 1}

    def __post_init__(self) -> None:
        if self.n_workers < 1 or self.threads_per_worker < 1:
            raise ValueError("ClusterConfig.n_workers and threads_per_worker must be >= 1")
        ranks = self.train_ranks
        must(self, "train_ranks", ranks == "auto" or (isinstance(ranks, int) and ranks >= 1),
             "'auto' or an integer >= 1", repr(ranks))


@dataclass(frozen=True)
class TinyModelConfig:
    """The random-init model built into ``RUN/base_model`` when ``base_model`` is ``tiny``."""

    tokenizer: str = "bpe"  # bpe (byte-level BPE) | word (one token per ALFWorld word: short sequences)
    hidden_size: int = 64  # model width (num_attention_heads x a head_dim >= 32)
    intermediate_size: int = 128  # MLP width
    num_hidden_layers: int = 2  # transformer blocks
    num_attention_heads: int = 2  # query heads
    num_key_value_heads: int = 1  # key/value heads (divides num_attention_heads)
    tie_word_embeddings: bool = False  # share input embedding and output head

    def __post_init__(self) -> None:
        must(self, "tokenizer", self.tokenizer in ("bpe", "word"), "bpe or word", repr(self.tokenizer))
        if self.num_attention_heads < 1 or self.num_attention_heads % max(self.num_key_value_heads, 1) \
                or self.hidden_size % self.num_attention_heads or self.hidden_size // self.num_attention_heads < 32:
            raise ValueError("TinyModelConfig needs hidden_size = num_attention_heads x a head_dim >= 32 and "
                             f"num_key_value_heads dividing num_attention_heads, got {self.hidden_size}, "
                             f"{self.num_attention_heads}, {self.num_key_value_heads}")
        if self.num_hidden_layers < 1 or self.intermediate_size < 1:
            raise ValueError("TinyModelConfig.num_hidden_layers and intermediate_size must be >= 1")


@dataclass(frozen=True)
class RunConfig:
    """A GiGPO run: where it lives, what it plays, and each stage's settings."""

    run_dir: str = "runs/local"  # run directory: a local or shared POSIX path (NFS/Lustre), not an object store
    rounds: int = 2  # total rounds of the run; a rerun finishes the missing ones (0: warm start and baseline only)
    overlap: int = 0  # 1: round r+1 is collected with round r-1's checkpoint while round r trains | 0: in turn
    tasks_per_round: int = 16  # episode groups collected per round (paper: 16)
    base_model: str = "tiny"  # round 0's model: a HF checkpoint folder, a hub id (org/name), or "tiny" (built in RUN)
    base_model_revision: str = "main"  # branch, tag or commit of a hub base_model (pinned in RUN/base_model.json)
    tiny_model: TinyModelConfig = field(default_factory=TinyModelConfig)  # its shape, when base_model is tiny
    games: GamesConfig = field(default_factory=GamesConfig)  # what is played
    warm_start: WarmStartConfig | None = None  # expert demonstrations + SFT before round 0 (None: none)
    fork: ForkConfig | None = None  # start from a round of another run instead (None: no fork)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)  # collect stage
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)  # advantage stage
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # train stage
    evaluation: EvalConfig = field(default_factory=EvalConfig)  # evaluate stage
    cluster: ClusterConfig = field(default_factory=ClusterConfig)  # Dask placement
    logging: LoggingConfig = field(default_factory=LoggingConfig)  # experiment trackers (TensorBoard, Weights & Biases)

    def __post_init__(self) -> None:
        if self.rounds < 0 or self.tasks_per_round < 1:
            raise ValueError(f"RunConfig.rounds must be >= 0 and tasks_per_round >= 1, got {self.rounds}, "
                             f"{self.tasks_per_round}")
        choice(self, "overlap", (0, 1))
        if self.overlap and self.trainer.old_logprobs != "rollout":
            raise ValueError("RunConfig.overlap=1 trains on rows sampled by the policy before the one it starts "
                             "from, so the PPO ratio needs the sampler's log-probs: set trainer.old_logprobs=rollout, "
                             f"got {self.trainer.old_logprobs!r}")
        if self.fork is not None and self.warm_start is not None and self.warm_start.enabled:
            raise ValueError("RunConfig.fork: a forked run starts from the source's checkpoint, so it has no warm "
                             "start; remove the warm_start section or set warm_start.enabled=false")
        spec = ESTIMATOR_SPECS.get(self.advantage.estimator, EstimatorSpec())
        if spec.critic and self.trainer.critic is None:  # the estimator's advantages need the trainer's critic
            object.__setattr__(self, "trainer", dataclasses.replace(self.trainer, critic=CriticConfig()))
        if not spec.critic and self.trainer.critic is not None:
            raise ValueError(f"RunConfig.trainer.critic trains a value head that only a critic estimator (e.g. "
                             f"advantage.estimator='ppo') uses, got advantage.estimator={self.advantage.estimator!r}; "
                             "remove the trainer.critic section")
        if self.trainer.loss == "ppo" and self.trainer.temperature != self.rollout.sampling.temperature:
            raise ValueError(f"RunConfig.trainer.temperature must equal rollout.sampling.temperature (the PPO ratio's "
                             f"log-probs are those of the distribution the rollout sampled), got "
                             f"{self.trainer.temperature} and {self.rollout.sampling.temperature}")
        if self.trainer.loss == "ppo" and self.rollout.group_size < 2 and spec.groups:
            raise ValueError(f"RunConfig.rollout.group_size must be >= 2 with advantage.estimator="
                             f"{self.advantage.estimator!r} (its advantages compare the episodes of one task), "
                             f"got {self.rollout.group_size}")
