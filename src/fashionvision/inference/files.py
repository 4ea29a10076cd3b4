"""``fashion-predict``'s work: images, folders, globs and videos in; pictures and JSON out.

For every input image it writes an annotated picture (boxes with class and score, or a
coloured mask with a legend) and a JSON file; a video gives one annotated video
(``<input name>.mp4``, OpenCV's mp4v codec, at the source frame rate divided by ``video_stride``)
and a JSON per predicted frame. The detector's items are ``class``, ``score`` and ``box``; the segmenter's are per-class pixel areas, mean probabilities and simplified
polygons (``cv2.findContours`` + ``cv2.approxPolyDP``). Unreadable files are reported with
their reason and skipped; the run goes on and ends with a count of both.

Output names keep each input's path relative to the source folder (for a glob: to the
matches' common folder), suffix included: ``a/0001.jpg`` gives ``a/0001.jpg.json`` and
``a/0001.jpg.jpg``, so that ``x.jpg`` and ``x.png``, or ``a/0001.jpg`` and ``b/0001.jpg``,
never write over each other's results.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from fashionvision.data.annotations import atomic_write_text
from fashionvision.data.image_io import IMAGE_SUFFIXES, ImageReadError, list_images, read_image, write_image
from fashionvision.errors import UserError
from fashionvision.output_guard import Input, check_output, unique_temporary, writable_target
from fashionvision.inference.predictor import Predictor

log = logging.getLogger("fashionvision")

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
#: polygons smaller than this many pixels are left out of the JSON (speckles)
MIN_POLYGON_AREA = 16.0


def detection_items(prediction: dict, class_names: list[str]) -> list[dict]:
    """The detector's boxes as JSON-able items, best score first."""
    boxes = np.asarray(prediction["boxes"], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(prediction["scores"], dtype=np.float64).reshape(-1)
    labels = np.asarray(prediction["labels"]).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    return [
        {
            "class": class_names[int(labels[i])],
            "class_id": int(labels[i]),
            "score": round(float(scores[i]), 4),
            "box": [round(float(v), 1) for v in boxes[i]],
        }
        for i in order
    ]


def mask_polygons(binary: np.ndarray, min_area: float = MIN_POLYGON_AREA) -> list[list[list[int]]]:
    """Outer contours of a binary mask as simplified ``[[x, y], ...]`` polygons."""
    contours, _ = cv2.findContours(binary.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        if cv2.contourArea(contour) < min_area:
            continue
        # tolerance grows with the outline's length: ~0.5 % keeps shapes, drops staircase points
        epsilon = max(1.0, 0.005 * cv2.arcLength(contour, True))
        simplified = cv2.approxPolyDP(contour, epsilon, True).reshape(-1, 2)
        if len(simplified) >= 3:
            polygons.append(simplified.astype(int).tolist())
    return polygons


def segmentation_items(prediction: dict, class_names: list[str], background: int = 0,
                       polygons: bool = True) -> list[dict]:
    """The segmenter's classes present (background excluded), largest area first."""
    mask = np.asarray(prediction["mask"])
    confidence = prediction.get("confidence")  # [h, w]: the probability of each pixel's class
    total = float(mask.size)
    counts = np.bincount(mask.ravel().astype(np.int64), minlength=len(class_names))
    items = []
    for cls in np.argsort(-counts, kind="stable"):
        cls = int(cls)
        if counts[cls] == 0 or cls == background or cls >= len(class_names):
            continue
        binary = mask == cls
        item = {
            "class": class_names[cls],
            "class_id": cls,
            "pixels": int(counts[cls]),
            "fraction": round(counts[cls] / total, 5),
            "score": round(float(np.asarray(confidence)[binary].mean()), 4) if confidence is not None else None,
        }
        if polygons:
            item["polygons"] = mask_polygons(binary)
        items.append(item)
    return items


def describe(predictor: Predictor, prediction: dict, polygons: bool = True) -> list[dict]:
    """JSON-able items of one prediction, for either kind (a segmenter's prediction holds a mask)."""
    if "mask" in prediction:
        return segmentation_items(prediction, predictor.class_names, polygons=polygons)
    return detection_items(prediction, predictor.class_names)


def draw(predictor: Predictor, image: np.ndarray, prediction: dict) -> np.ndarray:
    """The annotated picture, drawn by the task: boxes with class and score, or the mask with a legend."""
    return np.asarray(predictor.task.draw(image, prediction), dtype=np.uint8)


@dataclass
class Frame:
    """One unit of work: an image (or the reason it could not be read) and its output name."""

    name: str
    source: str
    image: np.ndarray | None = None
    error: str | None = None
    video: Path | None = None  # the video file a frame comes from
    fps: float = 0.0  # the frame rate of the predicted frames (source rate / stride)


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def list_sources(source: str) -> tuple[list[Path], Path | None]:
    """Files a source names, and the folder output names are relative to (None: flat names)."""
    path = Path(source)
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise UserError(f"folder '{source}' holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return files, path
    if path.is_file():
        return [path], None
    if _is_glob(source):
        files = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
        if not files:
            raise UserError(f"pattern '{source}' matches no files")
        # names relative to the matches' common folder: a/0001.jpg and b/0001.jpg stay apart
        return files, Path(os.path.commonpath([str(f.parent.absolute()) for f in files]))
    raise UserError(f"source '{source}' does not exist (give an image, a folder, a glob or a video)")


def check_output_folder(output: Path, files: list[Path], root: Path | None, extra: Sequence[Input] = ()) -> None:
    """Refuse an output folder that is a source folder or lies inside one.

    Annotated copies are named after their photo (``<stem>.jpg``): written into the photo's
    own folder they would replace the user's originals, and inside a source folder they would
    be read back as inputs by the next run. A folder source refuses itself and everything
    below it; a single file or a glob refuses the folder of each file it names (a subfolder
    such as ``photos/pred`` stays allowed there).
    """
    if root is not None:
        inputs = [Input(root, "source folder")]
    else:
        inputs = [Input(folder, "source folder", subfolders_ok=True) for folder in sorted({f.parent for f in files})]
    check_output(output, inputs + [Input(f, "source file") for f in files] + list(extra))


def model_inputs(model: str | os.PathLike) -> list[Input]:
    """The model file a prediction reads, and its run folder when it is one of our checkpoints."""
    from fashionvision.engine.checkpoint import checkpoint_inputs, resolve_checkpoint

    path = Path(str(model))
    if path.is_dir():  # a run folder: its best.pt (or last.pt)
        path = resolve_checkpoint(path)
    if not path.is_file():
        return []
    return checkpoint_inputs(path) if path.suffix == ".pt" else [Input(path, "model file")]


def _refuse_source_target(target: Path, sources: set[Path]) -> None:
    """Last line of defence: never open a source file for writing, whatever the naming does."""
    if target.resolve() in sources:
        raise UserError(f"refusing to write '{target}': it is one of the source files")


def iter_frames(files: list[Path], root: Path | None, video_stride: int = 1) -> Iterator[Frame]:
    """Read images and video frames lazily; unreadable ones come back with an ``error``."""
    for file in files:
        rel = file.absolute().relative_to(root.absolute()) if root is not None else Path(file.name)
        stem = rel.as_posix()  # the suffix stays: x.jpg and x.png are different inputs
        if file.suffix.lower() in VIDEO_SUFFIXES:
            yield from _video_frames(file, stem, max(1, int(video_stride)))
            continue
        try:
            yield Frame(stem, str(file), image=read_image(file))
        except ImageReadError as exc:
            yield Frame(stem, str(file), error=exc.reason)


def _video_frames(file: Path, stem: str, stride: int) -> Iterator[Frame]:
    capture = cv2.VideoCapture(str(file))
    if not capture.isOpened():
        yield Frame(stem, str(file), error="not a readable video (OpenCV could not open it)")
        return
    index = 0
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    fps = fps / stride if fps > 0 else 25.0 / stride
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                if index == 0:
                    yield Frame(stem, str(file), error="video has no readable frames")
                break
            if index % stride == 0:
                rgb = np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                yield Frame(f"{stem}_f{index:06d}", f"{file}#frame={index}", image=rgb, video=Path(stem), fps=fps)
            index += 1
    finally:
        capture.release()


def count_work(files: list[Path], video_stride: int) -> int:
    """How many frames the progress bar should expect (videos by their frame count)."""
    total = 0
    for file in files:
        if file.suffix.lower() in VIDEO_SUFFIXES:
            capture = cv2.VideoCapture(str(file))
            frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
            capture.release()
            total += max(1, -(-frames // max(1, video_stride)))
        else:
            total += 1
    return total


@dataclass
class PredictSummary:
    """What a ``fashion-predict`` run did."""

    output: str
    ok: int = 0
    skipped: list[dict] = field(default_factory=list)
    items: int = 0
    videos: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"predicted {self.ok} image(s), skipped {len(self.skipped)}, {self.items} item(s) found; "
                 f"results in {self.output}"]
        lines += [f"  annotated video {v}" for v in self.videos]
        lines += [f"  skipped {s['path']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines)


class VideoOut:
    """The annotated video of one source video, written beside the JSON files.

    Written under a temporary name and renamed when complete, so an interrupted run never
    leaves a truncated file under the final name. Frames are drawn pictures (RGB); one whose
    size differs from the first (a legend of another width) is resized to it.
    """

    FOURCC = "mp4v"

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = writable_target(path), fps
        self.tmp = unique_temporary(path)  # unique: never a name a link was planted at
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, picture: np.ndarray) -> None:
        h, w = picture.shape[:2]
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.size = (w - w % 2, h - h % 2)  # codecs want even sizes
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.FOURCC), self.fps, self.size)
            if not self.writer.isOpened():
                raise UserError(f"OpenCV cannot write an {self.FOURCC} video to '{self.tmp}'")
        if (w, h) != self.size:
            picture = cv2.resize(picture, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(cv2.cvtColor(np.ascontiguousarray(picture), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> Path | None:
        if self.writer is None:
            self.tmp.unlink(missing_ok=True)
            return None
        self.writer.release()
        self.writer = None
        os.replace(self.tmp, writable_target(self.path))
        return self.path

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        self.tmp.unlink(missing_ok=True)


class VideoSink:
    """One :class:`VideoOut` per source video: opened at its first frame, closed when another file starts."""

    def __init__(self, output: Path):
        self.output = output
        self.current: VideoOut | None = None
        self.written: list[str] = []

    def add(self, frame: Frame, picture: np.ndarray) -> None:
        path = self.output / f"{frame.video}.mp4"
        if self.current is None or self.current.path != path:
            self.finish()
            self.current = VideoOut(path, frame.fps)
        self.current.write(picture)

    def finish(self) -> None:
        if self.current is not None:
            done = self.current.close()
            if done is not None:
                self.written.append(str(done))
            self.current = None

    def abort(self) -> None:
        if self.current is not None:
            self.current.discard()
            self.current = None


def predict_source(predictor: Predictor, source: str, output: str | Path, conf: float | None = None,
                   iou: float | None = None, video_stride: int = 1, progress: bool = True,
                   save_images: bool = True, save_frames: bool = False) -> PredictSummary:
    """Predict every image/frame of ``source``; write ``<name>.jpg`` and ``<name>.json`` to ``output``.

    A video gives ``<video name>.mp4`` (annotated) and one JSON per predicted frame; its frames
    are also written as JPEGs only with ``save_frames``.
    """
    from fashionvision.progress import progress as _progress

    output = Path(output)
    files, root = list_sources(source)
    check_output_folder(output, files, root, model_inputs(predictor.source))
    sources = {f.resolve() for f in files}
    output.mkdir(parents=True, exist_ok=True)
    total = count_work(files, video_stride)
    summary = PredictSummary(str(output))
    bar = _progress(iter_frames(files, root, video_stride), total=total, desc="predict", unit="img",
                    enabled=progress and total > 1)
    videos = VideoSink(output)
    try:
        _predict_frames(predictor, bar, output, summary, conf, iou, save_images, save_frames, videos, sources)
        videos.finish()
    except BaseException:
        videos.abort()  # no truncated video under its final name
        raise
    summary.videos = videos.written
    _refuse_source_target(output / "summary.json", sources)
    atomic_write_text(output / "summary.json", json.dumps(
        {"ok": summary.ok, "skipped": summary.skipped, "items": summary.items, "source": source,
         "model": predictor.source, "videos": summary.videos}, indent=1) + "\n")
    return summary


def _predict_frames(predictor: Predictor, frames: Iterator[Frame], output: Path, summary: PredictSummary,
                    conf: float | None, iou: float | None, save_images: bool, save_frames: bool,
                    videos: VideoSink, sources: set[Path]) -> None:
    for frame in frames:
        if frame.video is None:
            videos.finish()  # a video before this file has ended
        if frame.error is not None:
            log.warning("skipped %s: %s", frame.source, frame.error)
            summary.skipped.append({"path": frame.source, "reason": frame.error})
            continue
        try:
            _predict_one(predictor, frame, output, summary, conf, iou, save_images, save_frames, videos, sources)
        except MemoryError:
            # one line naming the image, and on to the next: one huge photo must not end the whole run
            reason = f"out of memory predicting or drawing this {frame.image.shape[1]}x{frame.image.shape[0]} image"
            log.warning("skipped %s: %s", frame.source, reason)
            summary.skipped.append({"path": frame.source, "reason": reason})


def _predict_one(predictor: Predictor, frame: Frame, output: Path, summary: PredictSummary,
                 conf: float | None, iou: float | None, save_images: bool, save_frames: bool,
                 videos: VideoSink, sources: set[Path]) -> None:
    """Predict, describe and draw one frame; write its JSON (and picture)."""
    prediction = predictor(frame.image, conf=conf, iou=iou)
    items = describe(predictor, prediction)
    record = {
        "image": frame.source,
        "size": list(frame.image.shape[:2]),
        "model": predictor.source,
        "task": predictor.task.name,
        "items": items,
    }
    target = output / frame.name
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".json", ".jpg") if save_images else (".json",):  # checked before either is written
        _refuse_source_target(Path(f"{target}{suffix}"), sources)
        writable_target(Path(f"{target}{suffix}"), output)
    atomic_write_text(Path(f"{target}.json"), json.dumps(record, indent=1) + "\n", output)
    if save_images:
        picture = draw(predictor, frame.image, prediction)
        if frame.video is not None:
            _refuse_source_target(output / f"{frame.video}.mp4", sources)
            videos.add(frame, picture)
        if frame.video is None or save_frames:
            write_image(Path(f"{target}.jpg"), picture, output)
    summary.ok += 1
    summary.items += len(items)
