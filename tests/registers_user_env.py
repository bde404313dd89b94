"""Registers ``LitChannelGrid-v0`` with Gymnasium on import: the module a ``"registers_user_env:LitChannelGrid-v0"``
id names (Gymnasium's ``module:EnvId`` form). Imported by nothing else, so the tests see the import happen."""

import gymnasium as gym

gym.register("LitChannelGrid-v0", entry_point="user_envs:LitChannelGrid")
