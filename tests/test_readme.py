import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_zoo_table_is_current():
    spec = importlib.util.spec_from_file_location("update_readme_zoo", ROOT / "scripts" / "update_readme_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # the same check as `python scripts/update_readme_zoo.py --check` (which once compared the shipped JSON
    # rows with tuples, and so failed on a current table)
    assert module.stale_parts((ROOT / "README.md").read_text(), module.counted_rows()) == [], "run `make zoo`"


def test_readme_names_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
