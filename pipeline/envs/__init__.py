"""ALFWorld environments on the real text engine: games, env, parallel pool, prompts.

>>> from pipeline.envs import AlfworldEnv, EnvPool, build_prompt, parse_action, collect_games
"""
from pipeline.envs.alfworld import (AlfworldEnv, AlfworldEnvConfig, GameFileError, ResetResult, StepResult,
                                    read_game_file, task_sentence)
from pipeline.envs.alfworld_gen import GenConfig, generate_games
from pipeline.envs.data import AlfworldDataConfig, collect_games, task_id
from pipeline.envs.pool import EnvPool, PoolConfig
from pipeline.envs.prompts import (PromptConfig, build_prompt, chat_prompt, format_response, parse_action,
                                   register_template)
from pipeline.envs.tasks import TASK_TYPES

__all__ = ["AlfworldDataConfig", "AlfworldEnv", "AlfworldEnvConfig", "EnvPool", "GameFileError", "GenConfig",
           "PoolConfig", "PromptConfig", "ResetResult", "StepResult", "TASK_TYPES", "build_prompt",
           "chat_prompt", "collect_games", "format_response", "generate_games", "parse_action", "read_game_file",
           "register_template", "task_id", "task_sentence"]
