"""results/README.md is generated from run directories only, and reproducibly."""

import shutil
from pathlib import Path

from harness.report import reference

FIXTURES = Path(__file__).parent / "fixtures"


def test_reference_page_from_run_directories(tmp_path: Path) -> None:
    root = tmp_path / "reference"
    shutil.copytree(FIXTURES / "run", root / "bench-uvicorn")
    shutil.copytree(FIXTURES / "map", root / "map")
    page = tmp_path / "README.md"
    reference.write(root, page)
    text = page.read_text()
    assert (
        "The failure map puts the collapse of sync `dependency` with pool 1+1 and 4 tokens "
        "at: fine at 4, collapsed at 6 (predicted ~6)."
    ) in text
    assert (
        "In the seed-shaped run, sync `dependency` held up to 1 connections and collapsed at "
        "100 (0.0 req/s, 30 QueuePool timeouts in the server's log)."
    ) in text
    assert "async `dependency` served 1.70× to 1.70× the successful requests/s" in text
    assert "| sync dependency | 1+1 | 2 | 4 | 1 | ~6 | fine at 4, collapsed at 6 |" in text
    assert "](reference/map/charts/collapse-uvicorn.png)" in text
    assert (root / "map" / "charts" / "collapse-uvicorn.png").is_file()
    assert "## Seed-shaped tables" in text and "### uvicorn · list" in text
    reference.write(root, page)
    assert page.read_text() == text
