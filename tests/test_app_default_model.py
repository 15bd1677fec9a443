"""The web app starts with the shipped real-face model when no weights are given."""

import pytest

from asrth_jax import animate, app
from asrth_jax.config_lib import load_config_file


def test_no_weights_flags_start_the_shipped_real_face_model():
    args = app._parse([])
    assert args.checkpoint.endswith("pretrained/real_64")
    assert args.config.endswith("configs/real_small.py")
    config = load_config_file(args.config)
    animator = animate.load_animator(config, checkpoint=args.checkpoint, torch_checkpoint=None,
                                     dtype="float32", batch_size=1, config_name=args.config)
    assert animator is not None


def test_given_weights_need_their_config_and_a_lone_config_is_refused(capsys):
    assert app._parse(["--checkpoint", "w", "--config", "c.py"]).checkpoint == "w"
    for argv, needle in ((["--checkpoint", "w"], "--config names the config"),
                         (["--config", "c.py"], "goes with --checkpoint")):
        with pytest.raises(SystemExit) as exc:  # cli_args.fail: the line, exit status 1
            app._parse(argv)
        assert str(exc.value.code).startswith("error: ") and needle in str(exc.value.code)
