import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_zoo_table_is_current():
    spec = importlib.util.spec_from_file_location("update_readme_zoo", ROOT / "scripts" / "update_readme_zoo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (ROOT / "README.md").read_text()
    rows = module.counted_rows()
    assert module.render(text, rows) == text, "README model-zoo table is stale: run `make zoo`"
    from kinetoscope.profiling import shipped_zoo

    # the shipped rows went through JSON (tuples come back as lists), so compare them as JSON
    stale = "the zoo table `kinetoscope models` ships is stale: run `make zoo`"
    assert shipped_zoo() == json.loads(json.dumps(rows)), stale


def test_readme_names_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text
