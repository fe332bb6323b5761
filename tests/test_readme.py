"""README.md's generated tables are the files notebook 20 wrote (scripts/update_readme.py)."""
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("update_readme", REPO / "scripts" / "update_readme.py")
update_readme = importlib.util.module_from_spec(spec)
spec.loader.exec_module(update_readme)


def test_readme_tables_match_the_generated_files():
    assert update_readme.main(["--check"]) == 0, "run: python scripts/update_readme.py"


def test_render_fills_each_block_and_names_a_missing_file(tmp_path):
    (tmp_path / "figures" / "quick").mkdir(parents=True)
    (tmp_path / "figures" / "quick" / "t.md").write_text("| a |\n|---|\n| 1 |\n")
    text = "x\n<!-- generated:t -->\nold\n<!-- /generated:t -->\ny\n"
    assert update_readme.render(text, "quick", tmp_path) == "x\n<!-- generated:t -->\n| a |\n|---|\n| 1 |\n<!-- /generated:t -->\ny\n"
    with pytest.raises(SystemExit, match="figures/quick/u.md does not exist"):
        update_readme.render("<!-- generated:u -->\n<!-- /generated:u -->", "quick", tmp_path)


def test_a_block_that_names_its_profile_takes_that_profiles_file(tmp_path):
    for profile, row in (("quick", "1"), ("paper", "2")):
        (tmp_path / "figures" / profile).mkdir(parents=True)
        (tmp_path / "figures" / profile / "t.md").write_text(f"| a |\n|---|\n| {row} |\n")
    text = "<!-- generated:t@paper -->\nold\n<!-- /generated:t -->\n<!-- generated:t -->\nold\n<!-- /generated:t -->\n"
    assert update_readme.render(text, "quick", tmp_path) == (
        "<!-- generated:t@paper -->\n| a |\n|---|\n| 2 |\n<!-- /generated:t -->\n"
        "<!-- generated:t -->\n| a |\n|---|\n| 1 |\n<!-- /generated:t -->\n")
    with pytest.raises(SystemExit, match="figures/smoke/t.md does not exist; run notebook 20 for profile 'smoke'"):
        update_readme.render("<!-- generated:t@smoke -->\n<!-- /generated:t -->", "quick", tmp_path)
