"""Web app: animate a portrait in the browser (Gradio; `pip install -e '.[app]'`).

    python -m asrth_jax.app --checkpoint DIR --config configs/hdtf_512.py
    python -m asrth_jax.app --torch-checkpoint mix-train.pth.tar --config ... \\
        [--host 127.0.0.1 --port 7860]

Upload a portrait and a driving video (or a driving image), set the options that
`python -m asrth_jax.animate` has as flags, and press Animate. The work is the same
library call as the command line's (`animate.animate`); the model is loaded once per
process and requests queue one at a time, so two jitted batches never run at once.
Bad files give the command line's one-line error in the page. Listens on 127.0.0.1
unless `--host` says otherwise.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asrth_jax import animate

if TYPE_CHECKING:
    import gradio as gr

    from asrth_jax.inference import Animator

TITLE = "asrth_jax: one-shot talking head"


def _path(upload: Any) -> str | None:
    """The local path of a gr.File value (a path string, or an object with `.name`)."""
    if upload is None:
        return None
    return str(getattr(upload, "name", upload))


def _page_error(message: str) -> Exception:
    """A one-line error shown in the page until closed (no stack trace anywhere)."""
    import gradio as gr

    return gr.Error(message, duration=None, print_exception=False)


def make_handler(animator: Animator, image_size: int, workdir: Path):
    """The request handler: options from the controls -> animate.animate -> result files."""
    import gradio as gr

    def handle(portrait, driving, crop: bool, paste: bool, motion: str, adapt_scale: bool,
               best_frame: bool, side_by_side: bool, fix_angles: bool, yaw: float,
               pitch: float, roll: float, progress=gr.Progress()):  # noqa: B008 - Gradio API
        source, drive = _path(portrait), _path(driving)
        if source is None:
            raise _page_error("upload a portrait image first")
        if drive is None:
            raise _page_error("upload a driving video or image first")
        out_dir = Path(tempfile.mkdtemp(prefix="result_", dir=workdir))
        image_driver = animate.AnimateOptions(source, drive, "").image_driver
        opts = animate.AnimateOptions(
            source=source, driving=drive,
            out=str(out_dir / ("result.png" if image_driver else "result.mp4")),
            crop=bool(crop), paste_back=bool(paste), relative=motion != "absolute",
            adapt_scale=bool(adapt_scale), find_best_frame=bool(best_frame),
            yaw=float(yaw) if fix_angles else None, pitch=float(pitch) if fix_angles else None,
            roll=float(roll) if fix_angles else None, side_by_side=bool(side_by_side))

        def report(done: int, total: int) -> None:
            progress((done, total), desc="animating", unit="frames")

        try:
            result = animate.animate(opts, animator, image_size, report)
        except animate.AnimateError as err:
            raise _page_error(str(err)) from None
        except Exception as err:  # noqa: BLE001 - the page gets one line, the log the trace
            traceback.print_exc()
            first = (str(err).splitlines() or [""])[0]
            raise _page_error(f"animation failed: {type(err).__name__}: {first}") from None
        if result.fps is None:
            return (gr.update(value=None, visible=False),
                    gr.update(value=str(result.out), visible=True),
                    f"one image, {result.seconds:.1f} s")
        audio = ", with the driving audio" if result.with_audio else ""
        return (gr.update(value=str(result.out), visible=True),
                gr.update(value=None, visible=False),
                f"{result.frames} frames at {result.fps:g} fps{audio}, {result.seconds:.1f} s")

    return handle


def build_app(animator: Animator, image_size: int, workdir: Path) -> gr.Blocks:
    """The page: uploads, the animate options as controls, the result."""
    import gradio as gr

    # Uploads and results in Gradio's cache are deleted after a day (checked hourly).
    with gr.Blocks(title=TITLE, delete_cache=(3600, 86400)) as demo:
        gr.Markdown(f"## {TITLE}\nUpload a portrait and a driving video (or one driving "
                    "image), then press **Animate**.")
        with gr.Row():
            with gr.Column():
                portrait = gr.File(label="Portrait (image)", file_types=["image"],
                                   type="filepath", elem_id="portrait")
                driving = gr.File(label="Driving video or image", file_types=["video", "image"],
                                  type="filepath", elem_id="driving")
                with gr.Row():
                    crop = gr.Checkbox(label="Face crop", value=False, elem_id="crop")
                    paste = gr.Checkbox(label="Paste back into the portrait (needs crop)",
                                        value=False, elem_id="paste-back")
                motion = gr.Radio(["relative", "absolute"], value="relative", label="Motion")
                with gr.Row():
                    adapt_scale = gr.Checkbox(label="Adapt movement scale", value=False)
                    best_frame = gr.Checkbox(label="Find best frame", value=False)
                    side_by_side = gr.Checkbox(label="Side by side", value=False)
                fix_angles = gr.Checkbox(label="Fix head angles (free view)", value=False)
                yaw = gr.Slider(-90, 90, value=0, step=1, label="Yaw (degrees)")
                pitch = gr.Slider(-90, 90, value=0, step=1, label="Pitch (degrees)")
                roll = gr.Slider(-90, 90, value=0, step=1, label="Roll (degrees)")
                button = gr.Button("Animate", variant="primary", elem_id="animate")
            with gr.Column():
                video = gr.Video(label="Result", elem_id="result-video", interactive=False)
                image = gr.Image(label="Result image", elem_id="result-image", visible=False,
                                 interactive=False, type="filepath")
                status = gr.Markdown(elem_id="status")
        button.click(make_handler(animator, image_size, workdir),
                     inputs=[portrait, driving, crop, paste, motion, adapt_scale, best_frame,
                             side_by_side, fix_angles, yaw, pitch, roll],
                     outputs=[video, image, status], concurrency_limit=1)
    # One jitted batch at a time on the one model: requests wait in the queue.
    demo.queue(default_concurrency_limit=1)
    return demo


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m asrth_jax.app", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    animate.add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0 exposes the app to the network)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--batch-size", type=int, default=1, help="driving frames per step")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="compute dtype (parameters stay float32)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.batch_size < 1:
        raise SystemExit(f"error: --batch-size must be >= 1, got {args.batch_size}")
    if not 0 < args.port < 65536:
        raise SystemExit(f"error: --port must be in 1..65535, got {args.port}")
    # No usage reports leave the machine (set before gradio is imported).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise SystemExit("error: the web app needs gradio: pip install -e '.[app]'") from None
    from asrth_jax.config_lib import ConfigError, load_config_file

    try:
        config = load_config_file(args.config)
        animator = animate.load_animator(
            config, checkpoint=args.checkpoint, torch_checkpoint=args.torch_checkpoint,
            dtype=args.dtype, batch_size=args.batch_size, config_name=args.config)
    except (animate.AnimateError, ConfigError) as err:
        raise SystemExit(f"error: {err}") from None
    workdir = Path(tempfile.mkdtemp(prefix="asrth_app_"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    demo = build_app(animator, int(config.image_size), workdir)
    print(f"serving on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=False,
                    ssr_mode=False, allowed_paths=[str(workdir)], quiet=True,
                    footer_links=[])
    except OSError as err:
        raise SystemExit(f"error: cannot listen on {args.host}:{args.port} ({err}); "
                         "choose another --port") from None


if __name__ == "__main__":
    main()
