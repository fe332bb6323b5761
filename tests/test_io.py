import json
import os

import pandas as pd
import pytest

from greenlib import io


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a" / "x.json"
    io.atomic_write_json(p, {"b": 1, "a": float("nan")})
    io.atomic_write_json(p, {"c": 2})
    assert json.loads(p.read_text()) == {"c": 2}
    assert os.listdir(p.parent) == ["x.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    p = tmp_path / "x.json"
    io.atomic_write_json(p, {"ok": 1})
    with pytest.raises(TypeError):
        io.atomic_write_json(p, {"bad": object()})
    assert json.loads(p.read_text()) == {"ok": 1}
    assert os.listdir(tmp_path) == ["x.json"]


def test_save_table_writes_csv_and_markdown_with_caption(tmp_path):
    df = pd.DataFrame({"model": ["vgg16"], "tec_wh": [1.5]})
    csv, md = io.save_table(df, "t", tmp_path, caption="synthetic data, CPU, smoke")
    assert csv.read_text().startswith("# synthetic data, CPU, smoke\n")
    assert pd.read_csv(csv, comment="#").equals(df)
    assert "| vgg16 " in md.read_text() and "synthetic data" in md.read_text()


def test_save_figure_writes_png_and_pdf(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4])
    png, pdf = io.save_figure(fig, "f", tmp_path)
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
    plt.close(fig)
