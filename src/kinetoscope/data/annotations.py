"""Annotation files of the datasets the five papers report on, read as they are distributed.

``load_annotations(path, root=None, format="auto")`` returns :class:`Annotations`: a list of
``(video path, label index)`` and the class names in a stable order (index = label). Formats:

==============  =====================================================================================
``kinetics``    Kinetics-400/600/700 CSV ``label,youtube_id,time_start,time_end,split``; files
                ``{youtube_id}_{start:06d}_{end:06d}.mp4`` in ``root/<label>/`` or ``root/``
``ssv2``        Something-Something v2 JSON (``id``, ``template``) + ``labels.json`` beside it;
                template brackets stripped; files ``root/{id}.webm``
``ssv1``        Something-Something v1 ``id;label`` CSV; frame folders ``root/{id}/``
``diving48``    Diving48 JSON (``vid_name``, ``label``); files ``root/{vid_name}.mp4``
``mit``         Moments in Time CSV ``class/file.mp4,label,...`` (no header)
``ucf101``      UCF101 ``trainlist0N.txt`` (``Class/v_x.avi 1``, 1-based) or ``testlist0N.txt``
                (``Class/v_x.avi``); ``classInd.txt`` beside it when present
``hmdb51``      HMDB51 split folder (``<class>_test_split<N>.txt``, ``name.avi 1|2|0``); choose
                ``split`` and ``subset``
``list``        mmaction list ``path label`` or ``path num_frames label`` (``delimiter``, default
                whitespace; paths may contain spaces)
``folder``      a class-per-folder tree ``root/<class>/<video>``
``images``      a class-per-folder tree of images ``root/<class>/**/<image>`` (torchvision's
                ``ImageFolder`` layout), for image pretraining; detected when the class folders hold
                image files
``csv``         ``path,label`` with a header (label a name or an index)
==============  =====================================================================================

Class order: names sorted alphabetically (Kinetics' convention), integer labels as given, or the
order of a names file (``labels.json``, ``classInd.txt``) when the dataset ships one. Pass
``classes=`` (e.g. the list saved with a training run) to make a validation split use the training
split's order; ``save_classes`` / ``load_classes`` write and read it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # as ImageFolder
FORMATS = ("kinetics", "ssv2", "ssv1", "diving48", "mit", "ucf101", "hmdb51", "list", "folder", "images", "csv")


@dataclass
class Annotations:
    samples: list[tuple[str, int]]
    classes: list[str]
    format: str = ""
    skipped: list[str] = field(default_factory=list)  # rows without a usable label (e.g. test splits)

    def __len__(self) -> int:
        return len(self.samples)


def save_classes(classes: list[str], path: str | Path) -> None:
    Path(path).write_text(json.dumps(list(classes), indent=1))


def load_classes(path: str | Path) -> list[str]:
    return list(json.loads(Path(path).read_text()))


def detect_format(path: str | Path) -> str:
    """Guess the annotation format from the file (see the module docstring)."""
    p = Path(path)
    if p.is_dir():
        if any(p.glob("*_test_split*.txt")):
            return "hmdb51"
        return "images" if _holds_images(p) else "folder"
    if p.suffix.lower() == ".json":
        data = _read_json(p)
        first = data[0] if isinstance(data, list) and data else {}
        if isinstance(first, dict) and "vid_name" in first:
            return "diving48"
        if isinstance(first, dict) and "id" in first:
            return "ssv2"
        raise ValueError(f"{p}: JSON annotations of an unknown layout; pass format= explicitly ({', '.join(FORMATS)})")
    lines = [ln for ln in _read_text(p).splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{p}: annotation file is empty")
    head = lines[0].strip()
    low = head.lower().replace(" ", "")
    if "youtube_id" in low:
        return "kinetics"
    if low.startswith("path,label") or low in ("path,label", "video,label", "filename,label"):
        return "csv"
    if re.fullmatch(r"\d+;.+", head):
        return "ssv1"
    if re.fullmatch(r"[^/\s]+/v_\S+_g\d+_c\d+\.avi(\s+\d+)?", head):
        return "ucf101"
    first_field = head.split(",")[0]
    if "," in head and first_field.lower().endswith(VIDEO_EXTENSIONS) and "/" in first_field:
        return "mit"
    return "list"


def load_annotations(
    path: str | Path,
    root: str | Path | None = None,
    format: str = "auto",
    classes: list[str] | None = None,
    delimiter: str | None = None,
    split: int = 1,
    subset: str = "train",
    labels_file: str | Path | None = None,
) -> Annotations:
    """Read an annotation file (or folder) into :class:`Annotations` with paths joined to ``root``."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"annotation file not found: {p}")
    if p.is_file():
        _read_text(p)  # a binary file is named with its first undecodable line, before any reader runs
    fmt = detect_format(p) if format == "auto" else format
    if fmt not in FORMATS:
        raise ValueError(f"unknown annotation format {format!r}; choose 'auto' or one of {', '.join(FORMATS)}")
    base = Path(root) if root is not None else (p if p.is_dir() else p.parent)
    reader = {
        "kinetics": _kinetics,
        "ssv2": _ssv2,
        "ssv1": _ssv1,
        "diving48": _diving48,
        "mit": _mit,
        "ucf101": _ucf101,
        "hmdb51": _hmdb51,
        "list": _list,
        "folder": _folder,
        "images": _images,
        "csv": _csv,
    }[fmt]
    rows, names, skipped = reader(p, base, delimiter=delimiter, split=split, subset=subset, labels_file=labels_file)
    ann = _index(rows, names, classes)
    ann.format, ann.skipped = fmt, skipped
    return ann


def _index(rows: list[tuple[str, str | int]], names: list[str] | None, classes: list[str] | None) -> Annotations:
    """Map labels (names or ints) to indices in a stable order."""
    if classes is not None:
        names = list(classes)
    elif names is None:
        labels = {lab for _, lab in rows}
        if all(isinstance(lab, int) for lab in labels):
            names = [str(i) for i in range(max(labels) + 1)] if labels else []
        else:
            names = sorted(str(lab) for lab in labels)
    lookup = {n: i for i, n in enumerate(names)}
    samples = []
    for path, lab in rows:
        if isinstance(lab, int) and not (classes is not None and str(lab) in lookup):
            if not 0 <= lab < len(names):
                raise ValueError(f"label {lab} of {path} is outside the {len(names)} classes")
            samples.append((path, lab))
            continue
        if str(lab) not in lookup:
            raise ValueError(f"label {lab!r} of {path} is not among the given classes ({len(names)} known)")
        samples.append((path, lookup[str(lab)]))
    return Annotations(samples, names)


def _maybe_int(s: str) -> str | int:
    s = s.strip()
    return int(s) if re.fullmatch(r"-?\d+", s) else s


def _read_text(p: Path) -> str:
    """The file as text; a binary or non-UTF-8 file is a one-line error naming the file and line."""
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(f"{p}:{line}: not a text annotation file (byte {err.start} is not UTF-8)") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise ValueError(f"{p}:{line}: not a text annotation file (NUL byte)")
    return text


def _read_json(p: Path):
    try:
        return json.loads(_read_text(p))
    except json.JSONDecodeError as err:
        raise ValueError(f"{p}:{err.lineno}: invalid JSON ({err.msg})") from None


def _label(p: Path, line: int, value: str | None) -> str:
    """A non-empty label, else a one-line error naming file and line."""
    label = (value or "").strip()
    if not label:
        raise ValueError(f"{p}:{line}: empty label")
    return label


def _csv_rows(p: Path, min_fields: int, expected: str):
    """``(line number, row)`` of a CSV, each with at least ``min_fields`` fields, blank lines skipped."""
    reader = csv.reader(io.StringIO(_read_text(p), newline=""))
    for row in reader:
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) < min_fields:
            raise ValueError(f"{p}:{reader.line_num}: expected {expected}, got {len(row)} field(s): {','.join(row)!r}")
        yield reader.line_num, row


# ----------------------------------------------------------------------------------------- readers
def _kinetics(p: Path, base: Path, **_) -> tuple[list, None, list]:
    rows, skipped = [], []
    reader = csv.DictReader(io.StringIO(_read_text(p), newline=""))
    missing = {"youtube_id", "time_start", "time_end"} - set(reader.fieldnames or [])
    if missing:
        raise ValueError(f"{p}:1: Kinetics header lacks {sorted(missing)}")
    for row in reader:
        n = reader.line_num
        try:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
        except (TypeError, ValueError):
            raise ValueError(f"{p}:{n}: time_start/time_end must be numbers, got {row.get('time_start')!r}, "
                             f"{row.get('time_end')!r}") from None  # fmt: skip
        name = f"{row['youtube_id']}_{start:06d}_{end:06d}.mp4"
        label = (row.get("label") or "").strip()
        if not label:  # the test split ships without labels
            skipped.append(name)
            continue
        in_class = base / label / name
        rows.append((str(in_class if in_class.exists() or (base / label).is_dir() else base / name), label))
    return rows, None, skipped


def _strip_brackets(template: str) -> str:
    return template.replace("[", "").replace("]", "")


def _ssv2(p: Path, base: Path, labels_file=None, **_) -> tuple[list, list | None, list]:
    data = _read_json(p)
    labels_path = Path(labels_file) if labels_file else p.parent / "labels.json"
    names = None
    if labels_path.exists():
        mapping = _read_json(labels_path)  # {"Approaching something with your camera": "0", ...}
        names = [n for n, _ in sorted(mapping.items(), key=lambda kv: int(kv[1]))]
    rows, skipped = [], []
    for k, item in enumerate(data):
        if not isinstance(item, dict) or "id" not in item:
            raise ValueError(f"{p}: entry {k} has no 'id'")
        label = item.get("template") or item.get("label")
        if label is None:
            skipped.append(str(item["id"]))
            continue
        rows.append((str(base / f"{item['id']}.webm"), _strip_brackets(label)))
    return rows, names, skipped


def _ssv1(p: Path, base: Path, **_) -> tuple[list, None, list]:
    rows = []
    for n, line in enumerate(_read_text(p).splitlines(), 1):
        if line.strip():
            vid, sep, label = line.strip().partition(";")
            if not sep:
                raise ValueError(f"{p}:{n}: expected 'id;label', got {line.strip()!r}")
            rows.append((str(base / vid), _label(p, n, label)))
    return rows, None, []


def _diving48(p: Path, base: Path, labels_file=None, **_) -> tuple[list, list | None, list]:
    rows = []
    for k, d in enumerate(_read_json(p)):
        try:
            rows.append((str(base / f"{d['vid_name']}.mp4"), int(d["label"])))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{p}: entry {k} needs 'vid_name' and an integer 'label', got {d!r}") from None
    names = None
    vocab = Path(labels_file) if labels_file else p.parent / "Diving48_vocab.json"
    if vocab.exists():
        names = ["_".join(v) if isinstance(v, list) else str(v) for v in _read_json(vocab)]
    return rows, names, []


def _mit(p: Path, base: Path, **_) -> tuple[list, None, list]:
    return [(str(base / row[0]), _label(p, n, row[1])) for n, row in _csv_rows(p, 2, "'path,label,...'")], None, []


def _ucf101(p: Path, base: Path, labels_file=None, **_) -> tuple[list, list | None, list]:
    ind = Path(labels_file) if labels_file else p.parent / "classInd.txt"
    names = None
    if ind.exists():
        pairs = [ln.split() for ln in _read_text(ind).splitlines() if ln.strip()]
        names = [n for _, n in sorted(pairs, key=lambda kv: int(kv[0]))]
    rows = []
    for line in _read_text(p).splitlines():
        if not line.strip():
            continue
        parts = line.strip().rsplit(maxsplit=1)
        rel = parts[0] if len(parts) == 2 and parts[1].isdigit() else line.strip()
        rows.append((str(base / rel), rel.split("/")[0]))  # the class is the folder in the path
    return rows, names, []


def _hmdb51(p: Path, base: Path, split: int = 1, subset: str = "train", **_) -> tuple[list, None, list]:
    code = {"train": "1", "test": "2", "unused": "0"}.get(subset)
    if code is None:
        raise ValueError(f"subset must be 'train', 'test' or 'unused', got {subset!r}")
    files = sorted(p.glob(f"*_test_split{split}.txt"))
    if not files:
        raise FileNotFoundError(f"{p}: no HMDB51 split files '*_test_split{split}.txt'")
    rows = []
    for f in files:
        label = f.name[: -len(f"_test_split{split}.txt")]
        for line in _read_text(f).splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[-1] == code:
                rows.append((str(base / label / " ".join(parts[:-1])), label))
    return rows, None, []


def _list(p: Path, base: Path, delimiter: str | None = None, **_) -> tuple[list, None, list]:
    rows = []
    for n, line in enumerate(_read_text(p).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        three = line.rsplit(delimiter, 2)
        if len(three) == 3 and three[1].strip().isdigit() and re.fullmatch(r"-?\d+", three[2].strip()):
            rel, label = three[0], three[2]  # "path num_frames label" (rawframes)
        else:
            two = line.rsplit(delimiter, 1)
            if len(two) != 2:
                raise ValueError(f"{p}:{n}: expected 'path label', got {line!r}")
            rel, label = two
        rows.append((str(base / rel.strip()), _maybe_int(_label(p, n, label))))
    return rows, None, []


SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing"}
ANNOTATION_SUFFIXES = (".csv", ".txt", ".json", ".list")


def _class_folders(p: Path) -> tuple[list[Path], list[str]]:
    """The class folders of a class-per-folder tree and its annotation files; a dataset root (split
    folders such as ``train/`` and ``val/``) is an error naming what to pass instead."""
    subdirs = sorted(d for d in p.iterdir() if d.is_dir())
    lists = sorted(f.name for f in p.iterdir() if f.is_file() and f.suffix.lower() in ANNOTATION_SUFFIXES)
    splits = [d.name for d in subdirs if d.name.lower() in SPLIT_NAMES]
    if splits:  # e.g. data/synth with train/, val/, train.csv, val.csv: its "classes" would be the splits
        hint = f"an annotation file such as {p / lists[0]}" if lists else f"a split folder such as {p / splits[0]}"
        raise ValueError(
            f"{p} looks like a dataset root (folders {', '.join(d.name for d in subdirs[:4]) or '-'}"
            f"{'; files ' + ', '.join(lists[:4]) if lists else ''}), not a class-per-folder tree; pass {hint}"
        )
    return subdirs, lists


def _holds_images(p: Path) -> bool:
    """Whether the class folders of ``p`` hold image files (an ``ImageFolder`` tree) rather than videos or
    frame folders: the first file that decides it is looked at, nothing more."""
    for class_dir in sorted(d for d in p.iterdir() if d.is_dir()):
        for entry in os.scandir(class_dir):
            name = entry.name.lower()
            if entry.is_file() and name.endswith(VIDEO_EXTENSIONS):
                return False
            if entry.is_file() and name.endswith(IMAGE_EXTENSIONS):
                return True
    return False


def _folder(p: Path, base: Path, **_) -> tuple[list, None, list]:
    subdirs, lists = _class_folders(p)
    rows = []
    for class_dir in subdirs:
        for f in sorted(class_dir.iterdir()):
            if f.suffix.lower() in VIDEO_EXTENSIONS or f.is_dir():
                rows.append((str(f), class_dir.name))
    if not rows:
        hint = f"; to read an annotation file pass it, e.g. {p / lists[0]}" if lists else ""
        raise ValueError(f"{p}: no class folders with videos ({', '.join(VIDEO_EXTENSIONS)}) found{hint}")
    return rows, None, []


def _images(p: Path, base: Path, **_) -> tuple[list, list, list]:
    """torchvision's ``ImageFolder``: every image under ``root/<class>/`` (sub-folders included, links
    followed), classes the sorted folder names; a class folder without images is an error, as there."""
    if not p.is_dir():
        raise ValueError(f"{p}: the 'images' format reads a class-per-folder tree of images, not a file")
    class_dirs, _ = _class_folders(p)
    rows, empty = [], []
    for class_dir in class_dirs:
        found = [
            Path(folder) / name
            for folder, _, names in sorted(os.walk(class_dir, followlinks=True))  # ImageFolder's order
            for name in sorted(names)
            if name.lower().endswith(IMAGE_EXTENSIONS)
        ]
        rows += [(str(f), class_dir.name) for f in found]
        empty += [] if found else [class_dir.name]
    if not class_dirs:
        raise ValueError(f"{p}: no class folders; the 'images' format reads ROOT/<class>/<image> (ImageFolder)")
    if empty:
        raise ValueError(f"{p}: class folders with no images ({', '.join(IMAGE_EXTENSIONS)}): {', '.join(empty[:5])}"
                         f"{', ...' if len(empty) > 5 else ''}; add images or remove them")  # fmt: skip
    return rows, [d.name for d in class_dirs], []


def _csv(p: Path, base: Path, **_) -> tuple[list, None, list]:
    rows = []
    for k, (n, row) in enumerate(_csv_rows(p, 2, "'path,label'")):
        if k == 0:  # the header
            continue
        if not row[0].strip():
            raise ValueError(f"{p}:{n}: empty path")
        rows.append((str(base / row[0].strip()), _maybe_int(_label(p, n, row[1]))))
    return rows, None, []
