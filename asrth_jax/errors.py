"""Typed errors of the library: one home for what a user can get wrong.

Library code raises these (never `SystemExit`); only each CLI `main()` turns one into
`error: <message>` on stderr and a non-zero exit (`cli_args.fail`). Every message is
one line naming the problem and the fix. Each class also derives from the builtin its
callers catch (`ValueError`, ...), so existing `except ValueError` sites keep working.

`AsrthError`, `ConfigError` and the exit rule `fail` live in `data_pipelines.errors`
(data sits below this package and never imports it) and are re-exported here and in
`cli_args`, so `except errors.AsrthError` catches data errors too and the data checks
raise the same ConfigError. A training config has one check, `config_lib.validate`,
which raises only ConfigError. The errors of one module's own inputs subclass the root
beside the code that raises them: `checkpoints` (CheckpointNotFoundError,
DamagedCheckpointError, ModelMismatchError, ResumeError, SaveError),
`torch_files.TorchFileError`, `convert` (ConversionError, OutputError),
`media.MediaError`, `cli_args.OutputPathError`, `workdir.WorkdirError`,
`model_loading.ModelLoadError`, `animate.AnimateError`, `evaluate.EvaluateError`,
`train.StopTraining`, `memory_fit.StepTooLarge`, `benchmark.BenchmarkError`,
`benchmark_suite.PreflightError`, `profile_summary.NoTraceError`,
`data_pipelines.errors` (DataError, DatasetNotFoundError),
`data_pipelines.degradation.DegradationConfigError` (a ConfigError),
`models.vgg` (WeightsError, WeightsNotFoundError; HopeNet's too),
`data_pipelines.folders.ManifestError`, `data_pipelines.prepare.PrepareError`,
`data_pipelines.face_mesh.FaceMeshUnavailableError`.
A builtin `ValueError`/`RuntimeError` left in the library is a programming error (an
internal invariant): no `main()` catches it, so it stays a traceback.
"""

from __future__ import annotations

from data_pipelines.errors import AsrthError as AsrthError  # re-exported: the one base
from data_pipelines.errors import ConfigError as ConfigError  # re-exported: data checks raise it


class CheckpointError(AsrthError):
    """A checkpoint that cannot be used as asked."""
