"""Atomic file writes and the one way tables and figures are saved."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never half.

    The bytes go to a temporary file in the same folder, are flushed to disk, then renamed over
    ``path`` (rename is atomic on POSIX within one file system).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; results and caches are shared files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """JSON with sorted keys and NaN allowed (Python's json writes it as ``NaN``)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    # numpy scalars/arrays, paths and dataclass-likes reach JSON through these.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON: {obj!r}")


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through :func:`atomic_write_bytes` (checkpoints, weights)."""
    import io as _io

    import torch

    buf = _io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def save_table(df, name: str, out_dir: str | Path, caption: str | None = None) -> tuple[Path, Path]:
    """Save a DataFrame as ``<name>.csv`` and ``<name>.md`` (a Markdown table) in ``out_dir``.

    ``caption`` (e.g. the dataset, hardware and profile the numbers come from) is written above
    the Markdown table and as a ``#`` comment line at the top of the CSV.
    """
    out_dir = Path(out_dir)
    csv_text = df.to_csv(index=False)
    if caption:
        csv_text = "".join(f"# {line}\n" for line in caption.splitlines()) + csv_text
    md_text = (f"{caption}\n\n" if caption else "") + df.to_markdown(index=False) + "\n"
    return (atomic_write_text(out_dir / f"{name}.csv", csv_text),
            atomic_write_text(out_dir / f"{name}.md", md_text))


def save_figure(fig, name: str, out_dir: str | Path) -> tuple[Path, Path]:
    """Save a matplotlib figure as ``<name>.png`` (150 dpi) and ``<name>.pdf`` in ``out_dir``."""
    import io as _io

    out_dir = Path(out_dir)
    paths = []
    for ext, kw in (("png", {"dpi": 150}), ("pdf", {})):
        buf = _io.BytesIO()
        # PDFs embed a creation date by default; drop it so a redraw of the same data is byte-stable.
        meta = {"CreationDate": None} if ext == "pdf" else {"Software": None}
        fig.savefig(buf, format=ext, bbox_inches="tight", metadata=meta, **kw)
        paths.append(atomic_write_bytes(out_dir / f"{name}.{ext}", buf.getvalue()))
    return paths[0], paths[1]
