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
import threading
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from asrth_jax import animate, cli_args, compile_cache, errors, media

if TYPE_CHECKING:
    import gradio as gr

    from asrth_jax.inference import Animator

TITLE = "asrth_jax: one-shot talking head"
DEFAULT_FRAME_LIMIT = 250  # 10 s at 25 fps: a CPU model takes minutes for it
MAX_FRAMES = 1500  # the most the frame limit may be set to (--max-frames)
MAX_PORTRAIT_SIDE = 2048  # paste-back's output bound (--max-portrait-side)
MAX_UPLOAD_MB = 200  # per file (--max-upload-mb)
# Started with no weights flags: the shipped real-face model, which beats the synthetic
# demo model on held-out real people (README, "Real faces").
_REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = (_REPO / "pretrained" / "real_64", _REPO / "configs" / "real_small.py")
PREVIEW_SIDE = 320
# The page's words for the options a message can name (no CLI flags, no server paths).
PAGE_WORDING = animate.Wording({
    "source": "the portrait", "driving": "the driving video or image",
    "out": "the result", "crop": "“Face crop”", "paste_back": "“Paste back into the portrait”",
    "center_crop_fallback": "“Centre crop when no face is found”",
    "max_frames": "the frame limit", "max_portrait_side": "the server's portrait size limit",
    "find_best_frame": "“Find best frame”", "adapt_scale": "“Adapt movement scale”",
    "fps": "the frame rate", "yaw": "yaw", "pitch": "pitch", "roll": "roll",
    "overwrite": "overwrite"}, show_paths=False)


class Stopped(Exception):
    """The page's Stop button was pressed while this request rendered."""

    def __init__(self, done: int, total: int):
        super().__init__(f"stopped after {done} of {total} frames")
        self.done, self.total = done, total


def _path(upload: Any) -> str | None:
    """The local path of a gr.File value (a path string, or an object with `.name`)."""
    if upload is None:
        return None
    return str(getattr(upload, "name", upload))


def _page_error(message: str) -> Exception:
    """A one-line error shown in the page until closed (no stack trace anywhere)."""
    import gradio as gr

    return gr.Error(message, duration=None, print_exception=False)


def _say(err: Exception, *paths: str | None) -> str:
    return PAGE_WORDING.say(str(err), *(p for p in paths if p))


def _preview(image: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """An upright uint8 thumbnail, the face box drawn where the crop will be cut."""
    import cv2

    small = media.shrink_to_side(media.to_uint8(image), PREVIEW_SIDE)
    if box is not None:
        scale = small.shape[1] / image.shape[1]
        left, top, right, bottom = (round(v * scale) for v in box)
        small = cv2.rectangle(np.ascontiguousarray(small), (left, top),
                              (right - 1, bottom - 1), (0, 255, 0), 2)
    return small


def describe_portrait(upload: Any, image_size: int) -> tuple[np.ndarray | None, str, bool, bool]:
    """What the page shows when a portrait arrives: (preview, one line, face crop on,
    paste-back on). Crop and paste-back are turned on for a portrait larger than the
    model's size; the preview shows the face box, or says that none was found."""
    path = _path(upload)
    if path is None:
        return None, "", False, False
    try:
        header = media.read_image_header(path)
        image = media.to_uint8(media.read_image(path, max_side=animate.DETECT_MAX_SIDE))
    except media.MediaError as err:
        return None, f"**{_say(err, path)}**", False, False
    larger = max(header.width, header.height) > image_size
    line = f"{header.width}x{header.height} portrait"
    if header.orientation != 1:
        line += " (turned upright as its camera recorded)"
    if not larger:
        return (_preview(image, None), f"{line}, not larger than the model's "
                f"{image_size}x{image_size}: used whole.", False, False)
    box = animate.detect_face_box(image[None], image.shape[:2])
    if box is None:
        return (_preview(image, None), f"{line}: **no face found.** Upload a portrait with "
                "a visible, upright face, or turn on “Centre crop when no face is found”.",
                True, True)
    return (_preview(image, box), f"{line}: the face (green box) is animated at "
            f"{image_size}x{image_size} and pasted back into the portrait.", True, True)


def describe_driving(upload: Any, frame_limit: float) -> tuple[np.ndarray | None, str]:
    """The driving upload's first frame and one line: frames, rate, size, what is used."""
    path = _path(upload)
    if path is None:
        return None, ""
    try:
        if media.is_image_file(path):
            image = media.read_image(path, max_side=PREVIEW_SIDE)
            return _preview(image, None), "a driving image: the result is one image."
        info = media.probe_video(path)
        first = next(media.iter_video_frames(path, 1))
    except media.MediaError as err:
        return None, f"**{_say(err, path)}**"
    frames = f"{info.num_frames} frames" if info.num_frames else "frames"
    line = f"{frames} at {info.fps:g} fps, {info.width}x{info.height}"
    if info.num_frames and info.num_frames > int(frame_limit):
        line += f"; the first {int(frame_limit)} will be used (the frame limit)"
    return _preview(first, None), line + "."


def make_handler(animator: Animator, image_size: int, workdir: Path, *,
                 max_portrait_side: int = MAX_PORTRAIT_SIDE):
    """The request handler: options from the controls -> animate.animate -> result files,
    and the Stop button's handler (it stops the same session's request at its next batch)."""
    import gradio as gr

    stops: dict[str, threading.Event] = {}

    def handle(portrait, driving, crop: bool, paste: bool, centre_crop: bool, motion: str,
               adapt_scale: bool, best_frame: bool, side_by_side: bool, fix_angles: bool,
               yaw: float, pitch: float, roll: float, frame_limit: float,
               request: gr.Request, progress=gr.Progress()):  # noqa: B008 - Gradio API
        source, drive = _path(portrait), _path(driving)
        if source is None:
            raise _page_error("upload a portrait image first")
        if drive is None:
            raise _page_error("upload a driving video or image first")
        stop = stops[request.session_hash] = threading.Event()
        out_dir = Path(tempfile.mkdtemp(prefix="result_", dir=workdir))
        image_driver = media.is_image_file(drive)
        opts = animate.AnimateOptions(
            source=source, driving=drive,
            out=str(out_dir / ("result.png" if image_driver else "result.mp4")),
            crop=bool(crop), paste_back=bool(paste),
            center_crop_fallback=bool(centre_crop), relative=motion != "absolute",
            adapt_scale=bool(adapt_scale), find_best_frame=bool(best_frame),
            yaw=float(yaw) if fix_angles else None, pitch=float(pitch) if fix_angles else None,
            roll=float(roll) if fix_angles else None, side_by_side=bool(side_by_side),
            max_frames=max(1, int(frame_limit)), max_portrait_side=max_portrait_side,
            wording=PAGE_WORDING)

        def report(done: int, total: int) -> None:
            if stop.is_set():
                raise Stopped(done, total)
            progress((done, total), desc="animating", unit="frames")

        try:
            result = animate.animate(opts, animator, image_size, report)
        except Stopped as halt:
            return (gr.update(value=None, visible=not image_driver),
                    gr.update(value=None, visible=image_driver),
                    f"Stopped after {halt.done} of {halt.total} frames; nothing was kept.")
        except errors.AsrthError as err:  # AnimateError, best frame, movement scale
            raise _page_error(_say(err, source, drive, out_dir)) from None
        except Exception as err:  # noqa: BLE001 - the page gets one line, the log the trace
            traceback.print_exc()
            raise _page_error(f"animation failed ({type(err).__name__}); the server's log "
                              "has the details") from None
        finally:
            stops.pop(request.session_hash, None)
        notes = "".join(f"\n- {note}" for note in result.notes)
        if result.fps is None:
            return (gr.update(value=None, visible=False),
                    gr.update(value=str(result.out), visible=True),
                    f"one image, {result.seconds:.1f} s{notes}")
        audio = ", with the driving audio" if result.with_audio else ""
        return (gr.update(value=str(result.out), visible=True),
                gr.update(value=None, visible=False),
                f"{result.frames} frames at {result.fps:g} fps{audio}, "
                f"{result.seconds:.1f} s{notes}")

    def stop_request(request: gr.Request) -> str:
        event = stops.get(request.session_hash)
        if event is None:
            return "Nothing is running."
        event.set()
        return "Stopping after the current batch…"

    # Gradio passes the request by the parameter's type; `from __future__ import
    # annotations` left it a string naming this function's local `gr`.
    handle.__annotations__["request"] = stop_request.__annotations__["request"] = gr.Request
    return handle, stop_request


def build_app(animator: Animator, image_size: int, workdir: Path, *,
              max_frames: int = MAX_FRAMES,
              max_portrait_side: int = MAX_PORTRAIT_SIDE) -> gr.Blocks:
    """The page: uploads with previews, the animate options as controls, the result."""
    import gradio as gr

    handle, stop_request = make_handler(animator, image_size, workdir,
                                        max_portrait_side=max_portrait_side)
    # Uploads and results in Gradio's cache are deleted after a day (checked hourly).
    with gr.Blocks(title=TITLE, delete_cache=(3600, 86400)) as demo:
        gr.Markdown(f"## {TITLE}\nUpload a portrait and a driving video (or one driving "
                    "image), then press **Animate**. The model works at "
                    f"{image_size}x{image_size} pixels.")
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    with gr.Column():
                        portrait = gr.File(label="Portrait (image)", file_types=["image"],
                                           type="filepath", elem_id="portrait")
                        portrait_view = gr.Image(label="Portrait as the model sees it",
                                                 interactive=False, elem_id="portrait-preview",
                                                 height=PREVIEW_SIDE // 2)
                        portrait_info = gr.Markdown(elem_id="portrait-info")
                    with gr.Column():
                        driving = gr.File(label="Driving video or image",
                                          file_types=["video", "image"], type="filepath",
                                          elem_id="driving")
                        driving_view = gr.Image(label="Driving: first frame",
                                                interactive=False, elem_id="driving-preview",
                                                height=PREVIEW_SIDE // 2)
                        driving_info = gr.Markdown(elem_id="driving-info")
                with gr.Row():
                    crop = gr.Checkbox(label="Face crop", value=False, elem_id="crop")
                    paste = gr.Checkbox(label="Paste back into the portrait (needs crop)",
                                        value=False, elem_id="paste-back")
                    centre_crop = gr.Checkbox(label="Centre crop when no face is found",
                                              value=False, elem_id="centre-crop")
                frame_limit = gr.Slider(1, max_frames, value=min(DEFAULT_FRAME_LIMIT, max_frames),
                                        step=1, label="Frame limit (driving frames used)",
                                        elem_id="frame-limit")
                motion = gr.Radio(["relative", "absolute"], value="relative", label="Motion")
                with gr.Row():
                    adapt_scale = gr.Checkbox(label="Adapt movement scale", value=False)
                    best_frame = gr.Checkbox(label="Find best frame", value=False)
                    side_by_side = gr.Checkbox(label="Side by side", value=False)
                fix_angles = gr.Checkbox(label="Fix head angles (free view)", value=False)
                yaw = gr.Slider(-90, 90, value=0, step=1, label="Yaw (degrees)")
                pitch = gr.Slider(-90, 90, value=0, step=1, label="Pitch (degrees)")
                roll = gr.Slider(-90, 90, value=0, step=1, label="Roll (degrees)")
                with gr.Row():
                    button = gr.Button("Animate", variant="primary", elem_id="animate")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
            with gr.Column():
                video = gr.Video(label="Result", elem_id="result-video", interactive=False)
                image = gr.Image(label="Result image", elem_id="result-image", visible=False,
                                 interactive=False, type="filepath")
                status = gr.Markdown(elem_id="status")
        portrait.change(lambda upload: describe_portrait(upload, image_size), inputs=portrait,
                        outputs=[portrait_view, portrait_info, crop, paste],
                        concurrency_limit=None)
        for trigger in (driving.change, frame_limit.release):
            trigger(describe_driving, inputs=[driving, frame_limit],
                    outputs=[driving_view, driving_info], concurrency_limit=None)
        button.click(handle,
                     inputs=[portrait, driving, crop, paste, centre_crop, motion, adapt_scale,
                             best_frame, side_by_side, fix_angles, yaw, pitch, roll,
                             frame_limit],
                     outputs=[video, image, status], concurrency_limit=1)
        # Its own queue slot: it runs while the one animation slot is busy.
        stop.click(stop_request, outputs=status, concurrency_limit=None)
    # One jitted batch at a time on the one model: requests wait in the queue.
    demo.queue(default_concurrency_limit=1)
    return demo


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m asrth_jax.app", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    animate.add_model_arguments(p, required=False)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0 exposes the app to the network)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--batch-size", type=int, default=1, help="driving frames per step")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="compute dtype (parameters stay float32)")
    p.add_argument("--max-frames", type=int, default=MAX_FRAMES,
                   help="the most driving frames one request may use (the page's frame "
                        f"limit starts at {DEFAULT_FRAME_LIMIT} or this, if lower)")
    p.add_argument("--max-portrait-side", type=int, default=MAX_PORTRAIT_SIDE,
                   help="portraits are shrunk to this longer side first (bounds paste-back)")
    p.add_argument("--max-upload-mb", type=int, default=MAX_UPLOAD_MB,
                   help="largest file one upload may be, in MB")
    args = p.parse_args(argv)
    given = args.checkpoint or args.torch_checkpoint
    if given and not args.config:
        raise cli_args.fail("--config names the config the weights were trained with")
    if not given:
        if args.config:
            raise cli_args.fail("--config goes with --checkpoint or --torch-checkpoint "
                                "(without them the app starts with its default model)")
        args.checkpoint, args.config = (str(path) for path in DEFAULT_MODEL)
        if not all(path.exists() for path in DEFAULT_MODEL):
            raise cli_args.fail(f"the default model {DEFAULT_MODEL[0]} is not here (a "
                                "checkout of the repository has it); pass --checkpoint DIR "
                                "--config FILE")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    compile_cache.enable_if(args.compile_cache)
    if args.batch_size < 1:
        raise cli_args.fail(f"--batch-size must be >= 1, got {args.batch_size}")
    if not 0 < args.port < 65536:
        raise cli_args.fail(f"--port must be in 1..65535, got {args.port}")
    for flag in ("max_frames", "max_portrait_side", "max_upload_mb"):
        if getattr(args, flag) < 1:
            raise cli_args.fail(f"--{flag.replace('_', '-')} must be >= 1, "
                                f"got {getattr(args, flag)}")
    # No usage reports leave the machine (set before gradio is imported).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise cli_args.fail("the web app needs gradio: pip install -e '.[app]'") from None
    from asrth_jax.config_lib import ConfigError, load_config_file

    try:
        config = load_config_file(args.config)
        animator = animate.load_animator(
            config, checkpoint=args.checkpoint, torch_checkpoint=args.torch_checkpoint,
            dtype=args.dtype, batch_size=args.batch_size, config_name=args.config)
    except (animate.AnimateError, ConfigError) as err:
        raise cli_args.fail(str(err)) from None
    workdir = Path(tempfile.mkdtemp(prefix="asrth_app_"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    demo = build_app(animator, int(config.image_size), workdir, max_frames=args.max_frames,
                     max_portrait_side=args.max_portrait_side)
    print(f"serving on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=False,
                    ssr_mode=False, allowed_paths=[str(workdir)], quiet=True,
                    footer_links=[], max_file_size=f"{args.max_upload_mb}mb")
    except OSError as err:
        raise cli_args.fail(f"cannot listen on {args.host}:{args.port} ({err}); "
                            "choose another --port") from None


if __name__ == "__main__":
    main()
