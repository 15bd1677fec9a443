"""Typed errors of the library: one home for what a user can get wrong.

Library code raises these (never `SystemExit`); only each CLI `main()` turns one into
`error: <message>` on stderr and a non-zero exit (`cli_args.fail`). Every message is
one line naming the problem and the fix. Each class also derives from the builtin its
callers catch (`ValueError`, ...), so existing `except ValueError` sites keep working.

`AsrthError` itself lives in `data_pipelines.errors` (data sits below this package and
never imports it) and is re-exported here, so `except errors.AsrthError` catches data
errors too. The errors of one module's own inputs subclass it there, beside the code
that raises them: `checkpoints` (DamagedCheckpointError, ModelMismatchError,
ResumeError, SaveError), `torch_files.TorchFileError`, `convert` (ConversionError, OutputError),
`media.MediaError`, `cli_args.OutputPathError`, `workdir.WorkdirError`,
`model_loading.ModelLoadError`, `animate.AnimateError`, `evaluate.EvaluateError`,
`data_pipelines.errors.DatasetNotFoundError`, `data_pipelines.prepare.PrepareError`,
`data_pipelines.face_mesh.FaceMeshUnavailableError`.
"""

from __future__ import annotations

from data_pipelines.errors import AsrthError as AsrthError  # re-exported: the one base
from data_pipelines.errors import ConfigError as ConfigError  # re-exported: data checks raise it


class CheckpointError(AsrthError):
    """A checkpoint that cannot be used as asked."""
