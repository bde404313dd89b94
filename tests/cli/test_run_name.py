"""Run names and config identity: the recipe plus what the command line changed; seeds are not part of either."""

from __future__ import annotations

from lightning_accelrl.run_name import MAX_NAME, config_id, overrides, run_name

RECIPE = {
    "seed_everything": 0,
    "trainer": {"max_epochs": -1, "logger": [{"init_args": {"name": "ppo-cartpole"}}], "devices": 1},
    "model": {"class_path": "lightning_accelrl.algos.PPO", "init_args": {"lr": 0.002, "hidden": [64, 64]}},
    "data": {"env": "CartPole-v1", "num_envs": 16, "seed": None, "env_kwargs": {}},
    "summary": {"target_return": 475},
    "ckpt_path": None,
}


def changed(**sections: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in RECIPE.items()}
    for section, values in sections.items():
        if isinstance(values, dict):
            out[section] = {**out[section], **values}
        else:
            out[section] = values
    return out


def test_overrides_name_the_run() -> None:
    cfg = changed(data={"env": "Acrobot-v1"})
    assert overrides(RECIPE, cfg) == ["data.env=Acrobot-v1"]
    assert run_name("ppo-cartpole", overrides(RECIPE, cfg)) == "ppo-cartpole+data.env=Acrobot-v1"
    assert run_name("ppo-cartpole", overrides(RECIPE, RECIPE)) == "ppo-cartpole"


def test_a_null_option_given_a_dict_is_named_by_its_keys_and_back() -> None:
    base = changed(data={"env_kwargs": None})
    cfg = changed(data={"env_kwargs": {"continuous": True}})
    assert overrides(base, cfg) == ["data.env_kwargs.continuous=true"]  # not also "data.env_kwargs=null"
    assert overrides(cfg, base) == ["data.env_kwargs=null"]


def test_model_options_lists_and_unsafe_characters() -> None:
    model = {"class_path": "lightning_accelrl.algos.PPO", "init_args": {"lr": 0.001, "hidden": [32]}}
    cfg = changed(model=model, data={"env": "ALE/Pong-v5"})
    assert overrides(RECIPE, cfg) == ["data.env=ALE/Pong-v5", "model.hidden=[32]", "model.lr=0.001"]
    assert (
        run_name("ppo", overrides(RECIPE, cfg)) == "ppo+data.env=ALE_Pong-v5+model.hidden=_32_+model.lr=0.001"
    )


def test_seeds_logging_and_resumption_are_not_part_of_the_identity() -> None:
    cfg = changed(
        seed_everything=7,
        data={"seed": 3},
        trainer={"logger": False, "enable_progress_bar": False, "log_every_n_steps": 5},
        summary={"target_return": 10},
        ckpt_path="runs/x/last.ckpt",
    )
    assert overrides(RECIPE, cfg) == []
    assert config_id(cfg) == config_id(RECIPE)
    resumed = changed(
        model={
            "class_path": "lightning_accelrl.algos.PPO",
            "init_args": {"lr": 0.002, "hidden": [64, 64], "env_spec": {"obs_shape": [4]}},
        }
    )
    assert overrides(RECIPE, resumed) == []  # the env spec a resumed run takes from its checkpoint
    assert config_id(changed(data={"num_envs": 8})) != config_id(RECIPE)
    assert config_id(changed(trainer={"devices": 2})) != config_id(RECIPE)


def test_long_override_lists_are_named_by_a_stable_hash() -> None:
    cfg = changed(data={f"option_{i}": i for i in range(40)})
    name = run_name("ppo-cartpole", overrides(RECIPE, cfg))
    assert (
        len(name) <= MAX_NAME and name.startswith("ppo-cartpole+") and len(name) == len("ppo-cartpole+") + 8
    )
    assert name == run_name("ppo-cartpole", overrides(RECIPE, cfg))  # deterministic: DDP ranks agree


def test_identity_is_independent_of_key_order() -> None:
    shuffled = {k: RECIPE[k] for k in reversed(list(RECIPE))}
    assert config_id(shuffled) == config_id(RECIPE)
